// Sensors: who reports to this console, when each was last heard from; admins register a sensor
// (its push credential is shown once), rotate its credential or delete it.

import { h, text, fmtTime } from "../dom.js";
import * as api from "../api.js";
import { card, dataTable, pageHeader, notAvailable, dialog, showSecret, toast } from "../components.js";
import { can } from "../session.js";

function freshness(lastSeen) {
  if (!lastSeen) return h("span", { class: "badge st-other" }, "never");
  const age = (Date.now() - new Date(lastSeen).getTime()) / 1000;
  if (age < 300) return h("span", { class: "badge ok" }, "online");
  if (age < 86400) return h("span", { class: "badge warn" }, "quiet");
  return h("span", { class: "badge st-other" }, "stale");
}

export function sensorsPage() {
  if (!api.has("sensors_list")) return h("div", null, pageHeader("Sensors"), notAvailable("The sensor list"));
  const admin = can("admin");
  const table = dataTable({
    columns: [
      { key: "name", label: "Name", render: (x) => h("strong", null, x.name) },
      { key: "state", label: "State", render: (x) => freshness(x.last_seen) },
      { key: "last_seen", label: "Last seen", render: (x) => fmtTime(x.last_seen), cls: "nowrap" },
      { key: "version", label: "Version", render: (x) => text(x.version) },
      { key: "description", label: "Description", render: (x) => text(x.description) },
      { key: "has_credential", label: "Credential", render: (x) => (x.has_credential ? "set" : h("span", { class: "muted" }, "none (upload only)")) },
      { key: "created", label: "Registered", render: (x) => fmtTime(x.created), cls: "nowrap" },
      admin ? { key: "actions", label: "", render: (x) => h("span", { class: "row-actions" },
        api.has("sensors_rotate_token") ? h("button", { class: "btn small", type: "button", onclick: () => rotate(x) }, "New credential") : null,
        api.has("sensors_delete") ? h("button", { class: "btn small danger", type: "button", onclick: () => remove(x) }, "Delete") : null) } : null,
    ].filter(Boolean),
    empty: "No sensor reports to this console yet.",
    load: (page) => api.call("sensors_list", { query: { limit: page.limit, offset: page.offset } }),
  });
  async function rotate(x) {
    const ok = await dialog(`New credential for ${x.name}`, [{ name: "_", type: "hidden", label: "The old credential stops working at once; the sensor must be given the new one." }], "Rotate");
    if (!ok) return;
    try {
      const r = await api.call("sensors_rotate_token", { params: { sensor_id: x.id, id: x.id } });
      showSecret("Sensor credential", r.token, "Give it to the sensor (fieldward sensor --token …). It is shown only once.");
      table.refresh();
    } catch (err) { toast(err.message, "error"); }
  }
  async function remove(x) {
    const ok = await dialog(`Delete sensor ${x.name}?`, [{ name: "_", type: "hidden", label: "Its devices, alerts and findings are deleted with it." }], "Delete");
    if (!ok) return;
    try { await api.call("sensors_delete", { params: { sensor_id: x.id, id: x.id } }); toast("Sensor deleted", "ok"); table.refresh(); } catch (err) { toast(err.message, "error"); }
  }
  async function create() {
    const values = await dialog("Register a sensor", [
      { name: "name", label: "Name", required: true },
      { name: "description", label: "Description" },
    ], "Register");
    if (!values) return;
    try {
      const r = await api.call("sensors_create", { body: { name: values.name, description: values.description || null } });
      showSecret(`Sensor ${r.name} registered`, r.token, "This push credential (fws_…) is shown only once: configure the sensor with it now.");
      table.refresh();
    } catch (err) { toast(`Could not register: ${err.message}`, "error"); }
  }
  table.refresh();
  return h("div", null,
    pageHeader("Sensors", admin && api.has("sensors_create") ? h("button", { class: "btn primary", type: "button", onclick: create }, "Register sensor") : null),
    card(null, table));
}
