// Settings: the own account (password, API tokens), users and roles, every token, syslog/CEF
// forwarding and retention (a form generated from the settings endpoint's schema), the audit log.

import { h, replace, text, fmtTime } from "../dom.js";
import * as api from "../api.js";
import { card, dataTable, pageHeader, notAvailable, dialog, showSecret, toast, tabs, errorBox, loading } from "../components.js";
import { can, session } from "../session.js";

const SETTINGS_GET = ["settings_get", "settings_read"];
const SETTINGS_SET = ["settings_update", "settings_set", "settings_put"];

function tokensTable(all) {
  const table = dataTable({
    columns: [
      { key: "name", label: "Name", render: (t) => h("strong", null, t.name) },
      all ? { key: "username", label: "User", render: (t) => t.username } : null,
      { key: "scopes", label: "Scopes", render: (t) => h("span", { class: "chips" }, t.scopes.map((x) => h("span", { class: "chip" }, x))) },
      { key: "created", label: "Created", render: (t) => fmtTime(t.created), cls: "nowrap" },
      { key: "expires", label: "Expires", render: (t) => (t.expires ? fmtTime(t.expires) : "never"), cls: "nowrap" },
      { key: "last_used", label: "Last used", render: (t) => fmtTime(t.last_used), cls: "nowrap" },
      { key: "state", label: "State", render: (t) => (t.revoked ? h("span", { class: "badge st-closed" }, "revoked") : t.expires && new Date(t.expires) < new Date() ? h("span", { class: "badge st-other" }, "expired") : h("span", { class: "badge ok" }, "active")) },
      { key: "actions", label: "", render: (t) => (t.revoked || !api.has("tokens_revoke") ? null : h("button", { class: "btn small danger", type: "button", onclick: () => revoke(t) }, "Revoke")) },
    ].filter(Boolean),
    empty: "No API token.",
    load: (page) => api.call("tokens_list", { query: { limit: page.limit, offset: page.offset, ...(all ? { all: true } : {}) } }),
  });
  async function revoke(t) {
    const ok = await dialog(`Revoke token ${t.name}?`, [{ name: "_", type: "hidden", label: "Clients using it are refused at once." }], "Revoke");
    if (!ok) return;
    try { await api.call("tokens_revoke", { params: { token_id: t.id, id: t.id } }); toast("Token revoked", "ok"); table.refresh(); } catch (err) { toast(err.message, "error"); }
  }
  table.refresh();
  return table;
}

function accountTab() {
  const tokens = api.has("tokens_list") ? tokensTable(false) : notAvailable("API tokens");
  async function newToken() {
    const values = await dialog("New API token", [
      { name: "name", label: "Name", required: true },
      { name: "scope", type: "select", label: "Scope", options: [["read", "read"], ["write", "read + write"]], value: "read" },
      { name: "days", type: "number", label: "Expires in days (empty: never)", value: "90" },
    ], "Create");
    if (!values) return;
    try {
      const r = await api.call("tokens_create", { body: { name: values.name, scopes: values.scope === "write" ? ["read", "write"] : ["read"], expires_in_days: values.days ? Number(values.days) : null } });
      showSecret("API token created", r.token, "Use it as 'Authorization: Bearer …'. It is shown only once.");
      tokens.refresh?.();
    } catch (err) { toast(`Could not create the token: ${err.message}`, "error"); }
  }
  async function changePassword() {
    const values = await dialog("Change password", [
      { name: "current", type: "password", label: "Current password", required: true },
      { name: "next", type: "password", label: "New password (12 characters or more)", required: true, minlength: 12 },
    ], "Change");
    if (!values) return;
    try { await api.call("auth_change_password", { body: { current_password: values.current, new_password: values.next } }); toast("Password changed", "ok"); } catch (err) { toast(err.message, "error"); }
  }
  return h("div", null,
    h("p", null, "Logged in as ", h("strong", null, session.user.username), " (", session.user.role, ")."),
    h("div", { class: "button-row" },
      api.has("auth_change_password") ? h("button", { class: "btn", type: "button", onclick: changePassword }, "Change password") : null,
      api.has("tokens_create") ? h("button", { class: "btn primary", type: "button", onclick: newToken }, "New API token") : null),
    h("h3", null, "My API tokens"), tokens);
}

function usersTab() {
  if (!api.has("users_list")) return notAvailable("User management");
  const roleSelect = (u) => {
    const sel = h("select", { "aria-label": `Role of ${u.username}`, disabled: u.username === session.user.username }, ["viewer", "analyst", "admin"].map((r) => h("option", { value: r, selected: r === u.role }, r)));
    sel.addEventListener("change", async () => {
      try { await api.call("users_update", { params: { user_id: u.id, id: u.id }, body: { role: sel.value } }); toast(`${u.username} is now ${sel.value}`, "ok"); } catch (err) { toast(err.message, "error"); sel.value = u.role; }
    });
    return sel;
  };
  const table = dataTable({
    columns: [
      { key: "username", label: "User", render: (u) => h("strong", null, u.username) },
      { key: "role", label: "Role", render: (u) => (api.has("users_update") ? roleSelect(u) : u.role) },
      { key: "active", label: "Active", render: (u) => (u.active ? h("span", { class: "badge ok" }, "active") : h("span", { class: "badge st-other" }, "disabled")) },
      { key: "last_login", label: "Last login", render: (u) => fmtTime(u.last_login), cls: "nowrap" },
      { key: "created", label: "Created", render: (u) => fmtTime(u.created), cls: "nowrap" },
      { key: "actions", label: "", render: (u) => (u.username === session.user.username ? h("span", { class: "muted" }, "you") : h("span", { class: "row-actions" },
        api.has("users_update") ? h("button", { class: "btn small", type: "button", onclick: () => toggle(u) }, u.active ? "Disable" : "Enable") : null,
        api.has("users_update") ? h("button", { class: "btn small", type: "button", onclick: () => resetPassword(u) }, "Set password") : null)) },
    ],
    empty: "No user.",
    load: (page) => api.call("users_list", { query: { limit: page.limit, offset: page.offset } }),
  });
  async function toggle(u) {
    try { await api.call("users_update", { params: { user_id: u.id, id: u.id }, body: { active: !u.active } }); table.refresh(); } catch (err) { toast(err.message, "error"); }
  }
  async function resetPassword(u) {
    const v = await dialog(`New password for ${u.username}`, [{ name: "password", type: "password", label: "Password (12 characters or more)", required: true, minlength: 12 }], "Set");
    if (!v) return;
    try { await api.call("users_update", { params: { user_id: u.id, id: u.id }, body: { password: v.password } }); toast("Password set; the user's sessions were ended", "ok"); } catch (err) { toast(err.message, "error"); }
  }
  async function create() {
    const v = await dialog("New user", [
      { name: "username", label: "User name", required: true },
      { name: "password", type: "password", label: "Password (12 characters or more)", required: true, minlength: 12 },
      { name: "role", type: "select", label: "Role", options: [["viewer", "viewer (read)"], ["analyst", "analyst (read + triage)"], ["admin", "admin (everything)"]], value: "viewer" },
    ], "Create");
    if (!v) return;
    try { await api.call("users_create", { body: v }); toast(`User ${v.username} created`, "ok"); table.refresh(); } catch (err) { toast(err.message, "error"); }
  }
  table.refresh();
  return h("div", null, api.has("users_create") ? h("div", { class: "button-row" }, h("button", { class: "btn primary", type: "button", onclick: create }, "New user")) : null, table);
}

function enumOf(schemaName, prop, fallback) {
  const sch = api.schema(schemaName)?.properties?.[prop];
  return sch?.enum || (sch?.anyOf || []).find((x) => x.enum)?.enum || fallback;
}

function systemTab() {
  const getOp = SETTINGS_GET.find((id) => api.has(id));
  const setOp = SETTINGS_SET.find((id) => api.has(id));
  if (!getOp) return h("div", null, notAvailable("Syslog/CEF forwarding and retention settings"),
    h("p", { class: "muted" }, "Until then: forward alerts with `fieldward alerts … export --format cef --syslog tls://siem:6514`."));
  const body = h("div", null, loading());
  api.call(getOp).then((current) => {
    const fwd = current.forwarding || {};
    const view = h("dl", { class: "kv" },
      h("dt", null, "Alert forwarding"), h("dd", null, fwd.enabled ? h("span", { class: "badge ok" }, "on") : h("span", { class: "badge st-other" }, "off")),
      h("dt", null, "Target"), h("dd", { class: "mono" }, text(fwd.target)),
      h("dt", null, "Format"), h("dd", null, text(fwd.format)),
      h("dt", null, "Minimum severity"), h("dd", null, text(fwd.min_severity)),
      h("dt", null, "Retention"), h("dd", null, current.retention_days ? `${current.retention_days} days (flows and protocol events)` : "—"),
      h("dt", null, "Last changed"), h("dd", null, current.updated ? `${fmtTime(current.updated)} by ${text(current.updated_by)}` : "never"));
    const edit = async () => {
      const v = await dialog("Forwarding and retention", [
        { name: "enabled", type: "checkbox", label: "Forward alerts over syslog", value: Boolean(fwd.enabled) },
        { name: "target", label: "Target", value: fwd.target || "", help: "udp://, tcp:// or tls://host:port" },
        { name: "format", type: "select", label: "Format", value: fwd.format || "cef", options: enumOf("ForwardingUpdate", "format", ["cef", "syslog"]).map((x) => [x, x.toUpperCase()]) },
        { name: "min_severity", type: "select", label: "Minimum severity", value: fwd.min_severity || "medium", options: enumOf("ForwardingUpdate", "min_severity", ["info", "low", "medium", "high", "critical"]).map((x) => [x, x]) },
        { name: "retention_days", type: "number", label: "Retention (days)", value: String(current.retention_days ?? "") },
      ], "Save");
      if (!v) return;
      const out = {
        forwarding: { enabled: v.enabled, target: v.target.trim() || null, format: v.format, min_severity: v.min_severity },
      };
      if (v.retention_days !== "") out.retention_days = Number(v.retention_days);
      try { await api.call(setOp, { body: out }); toast("Settings saved", "ok"); replace(body, systemTab()); } catch (err) { toast(`Not saved: ${err.message}`, "error"); }
    };
    replace(body, view, setOp && can("admin") ? h("div", { class: "button-row top-gap" }, h("button", { class: "btn primary", type: "button", onclick: edit, "data-action": "edit-settings" }, "Edit")) : null);
  }).catch((err) => replace(body, errorBox(err)));
  return body;
}

function rulesTab() {
  if (!api.has("alerts_rules")) return notAvailable("Learned and muted rules");
  const canDelete = api.has("alerts_delete_rule") && can(api.roleOf("alerts_delete_rule") || "analyst");
  const table = dataTable({
    columns: [
      { key: "kind", label: "Kind", render: (r) => h("span", { class: ["badge", r.kind === "muted" ? "st-other" : "ok"] }, r.kind) },
      { key: "alert_type", label: "Alert type", render: (r) => h("span", { class: "mono" }, r.alert_type) },
      { key: "src", label: "Source", render: (r) => h("span", { class: "mono" }, r.src === "*" ? "any" : r.src) },
      { key: "dst", label: "Destination", render: (r) => h("span", { class: "mono" }, r.dst === "*" ? "any" : r.dst) },
      { key: "created_by", label: "By", render: (r) => `${r.created_by}, ${fmtTime(r.created)}` },
      { key: "note", label: "Note", render: (r) => text(r.note) },
      canDelete ? { key: "actions", label: "", render: (r) => h("button", { class: "btn small danger", type: "button", onclick: () => remove(r) }, "Delete") } : null,
    ].filter(Boolean),
    empty: "Nothing learned or muted from the console yet.",
    load: (page) => api.call("alerts_rules", { query: { limit: page.limit, offset: page.offset } }),
  });
  async function remove(r) {
    const ok = await dialog(`Delete this ${r.kind} rule?`, [{ name: "_", type: "hidden", label: "Alerts like it will be raised again." }], "Delete");
    if (!ok) return;
    try { await api.call("alerts_delete_rule", { params: { rule_id: r.id, id: r.id } }); toast("Rule deleted", "ok"); table.refresh(); } catch (err) { toast(err.message, "error"); }
  }
  table.refresh();
  return h("div", null, h("p", { class: "muted" }, "Sensors pull these rules (GET /api/v1/sensors/me/rules) and stop raising the alerts they cover."), table);
}

function auditTab() {
  if (!api.has("audit_list")) return notAvailable("The audit log");
  const table = dataTable({
    columns: [
      { key: "at", label: "When", render: (a) => fmtTime(a.at), cls: "nowrap" },
      { key: "actor", label: "Who", render: (a) => a.actor },
      { key: "action", label: "Action", render: (a) => h("span", { class: "mono" }, a.action) },
      { key: "target", label: "Target", render: (a) => text(a.target) },
      { key: "details", label: "Details", render: (a) => h("span", { class: "mono small" }, Object.keys(a.details || {}).length ? JSON.stringify(a.details) : "") },
    ],
    empty: "Nothing logged.",
    load: (page) => api.call("audit_list", { query: { limit: page.limit, offset: page.offset } }),
  });
  table.refresh();
  return table;
}

export function settingsPage() {
  const defs = [{ id: "account", label: "My account", render: accountTab }];
  if (can("analyst") && api.has("alerts_rules")) defs.push({ id: "rules", label: "Learned & muted", render: rulesTab });
  if (can("admin")) {
    defs.push({ id: "users", label: "Users & roles", render: usersTab });
    if (api.has("tokens_list")) defs.push({ id: "tokens", label: "All API tokens", render: () => tokensTable(true) });
    defs.push({ id: "system", label: "Forwarding & retention", render: systemTab });
    defs.push({ id: "audit", label: "Audit log", render: auditTab });
  }
  return h("div", null, pageHeader("Settings"), card(null, tabs(defs)));
}
