// The alerts queue: filters, server-side sort and paging, a detail drawer with the explanation,
// the triage actions (acknowledge, close, learn, mute, comment), the history and the evidence pcap.

import { h, replace, text, fmtTime, fmtShort, fmtNumber, severityBadge, statusBadge } from "../dom.js";
import * as api from "../api.js";
import { link, setQuery } from "../router.js";
import { dataTable, pageHeader, notAvailable, card, debounce, toast, errorBox, kv, dialog, loading } from "../components.js";
import { pageQuery, filter, sortable } from "../listing.js";
import { can } from "../session.js";

const OP = "alerts_list";
const SEVERITIES = ["critical", "high", "medium", "low", "info"];
const EVIDENCE_OPS = ["alerts_evidence", "alerts_get_evidence", "alerts_download_evidence", "alerts_evidence_get"];
const ACTIONS = [
  { op: "alerts_acknowledge", label: "Acknowledge", done: "acknowledged", note: false },
  { op: "alerts_close", label: "Close", done: "closed", note: true },
  { op: "alerts_learn", label: "Learn", done: "learned: the baseline now includes this behaviour", note: true, confirm: "Learn this behaviour? Future occurrences will be treated as normal." },
  { op: "alerts_mute", label: "Mute", done: "muted", note: true, confirm: "Mute this alert type for this source and destination? Muted alerts are closed and no longer raised." },
  { op: "alerts_reopen", label: "Reopen", done: "reopened", note: true },
];

function evidenceOp() { return EVIDENCE_OPS.find((id) => api.has(id)) || null; }

async function runAction(action, alert, after) {
  let note = "";
  let extra = {};
  if (action.note || action.confirm) {
    const fields = api.bodyFields(action.op);
    const wantsNote = fields && ["note", "text", "comment", "reason"].some((n) => n in fields.properties);
    const props = fields?.properties || {};
    const values = await dialog(`${action.label}: ${alert.title || alert.type}`,
      [action.confirm ? { name: "_", type: "hidden", label: action.confirm } : null,
        "any_source" in props ? { name: "any_source", type: "checkbox", label: "From any source", value: false } : null,
        "any_destination" in props ? { name: "any_destination", type: "checkbox", label: "To any destination", value: false } : null,
        wantsNote ? { name: "note", type: "textarea", label: "Note (optional)" } : null].filter(Boolean),
      action.label);
    if (!values) return;
    note = values.note || "";
    extra = Object.fromEntries(["any_source", "any_destination"].filter((k) => k in props).map((k) => [k, Boolean(values[k])]));
  }
  try {
    const body = api.noteBody(action.op, note);
    await api.call(action.op, { params: { alert_id: alert.id, id: alert.id }, body: body === undefined ? undefined : { ...body, ...extra } });
    toast(`Alert ${action.done}`, "ok");
    after();
  } catch (err) {
    toast(`${action.label} failed: ${err.message}`, "error");
  }
}

async function addComment(alert, input, after) {
  const value = input.value.trim();
  if (!value) return;
  const opId = ["alerts_comment", "alerts_add_comment", "alerts_comment_create"].find((id) => api.has(id));
  try {
    const fields = api.bodyFields(opId);
    const name = fields ? ["text", "comment", "note", "body"].find((n) => n in fields.properties) || "text" : "text";
    await api.call(opId, { params: { alert_id: alert.id, id: alert.id }, body: { [name]: value } });
    input.value = "";
    toast("Comment added", "ok");
    after();
  } catch (err) {
    toast(`Comment failed: ${err.message}`, "error");
  }
}

function deviceRef(id, label) {
  if (id === null || id === undefined) return text(label);
  return h("a", { href: link(`/devices/${id}`) }, text(label));
}

async function renderDetail(panel, id, onChange) {
  replace(panel, loading());
  let a;
  try {
    a = await api.call("alerts_get", { params: { alert_id: id, id } });
  } catch (err) {
    replace(panel, errorBox(err.status === 404 ? "This alert does not exist." : err));
    return;
  }
  const refresh = () => { renderDetail(panel, id, onChange); onChange(); };
  const actions = can("analyst")
    ? ACTIONS.filter((x) => api.has(x.op)).map((x) => h("button", {
      type: "button", class: ["btn", x.op === "alerts_acknowledge" ? "primary" : null], "data-action": x.op.replace("alerts_", ""),
      disabled: (x.op === "alerts_acknowledge" && a.status !== "new") || (x.op === "alerts_close" && a.status === "closed")
        || (x.op === "alerts_reopen" && a.status === "new") || ((x.op === "alerts_learn" || x.op === "alerts_mute") && a.status === "closed"),
      onclick: () => runAction(x, a, refresh),
    }, x.label))
    : [h("span", { class: "muted" }, "Triage needs the analyst role.")];
  const ev = evidenceOp();
  const evidence = ev && (a.evidence_pcap || a.has_evidence || a.evidence_available)
    ? h("a", { class: "btn", href: api.url(ev, { alert_id: a.id, id: a.id }), download: `alert-${a.id}.pcap`, "data-action": "evidence" }, "Download evidence (pcap)")
    : h("span", { class: "muted" }, ev ? "No evidence capture for this alert." : "Evidence download is not available on this console.");
  const commentOp = ["alerts_comment", "alerts_add_comment", "alerts_comment_create"].find((x) => api.has(x));
  const commentIn = h("textarea", { rows: 2, placeholder: "Add a comment…", "aria-label": "Comment" });
  const history = [
    ...(a.events || a.history || []).map((e) => ({ at: e.at, node: h("span", null, h("strong", null, text(e.by)), ` ${text(e.from_status)} → ${text(e.to_status)}`, e.note ? h("span", { class: "muted" }, ` · ${e.note}`) : null) })),
    ...(a.comments || []).map((c) => ({ at: c.at, node: h("span", null, h("strong", null, text(c.author)), ": ", h("span", { class: "comment-text" }, text(c.text))) })),
  ].sort((x, y) => String(x.at).localeCompare(String(y.at)));
  replace(panel,
    h("header", { class: "drawer-head" },
      h("div", null, severityBadge(a.severity), " ", statusBadge(a.status)),
      h("h2", null, a.title || a.type),
      h("p", { class: "muted mono" }, a.type)),
    h("div", { class: "drawer-actions" }, actions, evidence),
    h("p", { class: "explanation" }, text(a.explanation)),
    kv([
      ["Source", deviceRef(a.src_device_id, a.src)],
      ["Destination", deviceRef(a.dst_device_id, a.dst)],
      ["Protocol", text(a.protocol)],
      ["Engine", text(a.engine)],
      ["Occurrences", fmtNumber(a.count)],
      ["First", fmtTime(a.first_ts)],
      ["Last", fmtTime(a.last_ts)],
      ["MITRE ATT&CK for ICS", h("span", { class: "chips" }, (a.mitre || []).map((m) => h("span", { class: "chip" }, m)))],
    ]),
    a.description ? h("section", null, h("h3", null, "What it means"), h("p", null, a.description)) : null,
    a.recommendation ? h("section", null, h("h3", null, "Recommendation"), h("p", null, a.recommendation)) : null,
    h("section", null, h("h3", null, "History"),
      history.length ? h("ul", { class: "timeline" }, history.map((x) => h("li", null, h("span", { class: "muted nowrap" }, fmtTime(x.at)), " ", x.node))) : h("p", { class: "muted" }, "No triage yet."),
      commentOp && can("analyst") ? h("form", { class: "comment-form", onsubmit: (e) => { e.preventDefault(); addComment(a, commentIn, refresh); } },
        commentIn, h("button", { class: "btn small", type: "submit", "data-action": "comment" }, "Comment")) : null));
}

export function alertsPage(params, query) {
  if (!api.has(OP)) return h("div", null, pageHeader("Alerts"), notAvailable("The alerts queue"));
  const statusEnum = api.paramEnum(OP, "status") || [];
  const openValue = statusEnum.includes("open") ? "open" : "new";
  const state = { status: query.get("status") ?? openValue, severity: query.get("severity") || "", q: query.get("q") || "" };
  const statuses = [["", "All statuses"], ...(openValue === "open" ? [["open", "Open (new + acknowledged)"]] : []), ["new", "New"], ["acknowledged", "Acknowledged"], ["closed", "Closed"]];
  const statusSel = h("select", { "aria-label": "Status", "data-filter": "status" },
    statuses.map(([v, l]) => h("option", { value: v, selected: v === state.status }, l)));
  const severityValues = api.paramEnum(OP, "severity") || SEVERITIES;
  const sevLabel = (v) => (v.endsWith("+") ? `${v.slice(0, -1)} or worse` : v);
  const sevSel = h("select", { "aria-label": "Severity", "data-filter": "severity" },
    h("option", { value: "" }, "All severities"),
    [...severityValues].sort((a, b) => SEVERITIES.indexOf(a.replace("+", "")) - SEVERITIES.indexOf(b.replace("+", "")) || (a.endsWith("+") ? 1 : -1))
      .map((v) => h("option", { value: v, selected: v === state.severity }, sevLabel(v))));
  const searchIn = h("input", { type: "search", placeholder: "Search title, address, type…", value: state.q, class: "grow", "aria-label": "Search alerts" });
  const drawer = h("aside", { class: "drawer", "aria-label": "Alert detail" }, h("p", { class: "muted" }, "Select an alert to triage it."));
  let selectedRow = null;
  const open = (alert, tr) => {
    selectedRow?.classList.remove("selected");
    selectedRow = tr || null;
    selectedRow?.classList.add("selected");
    history.replaceState(null, "", `${link(`/alerts/${alert.id}`)}${location.search}`);
    renderDetail(drawer, alert.id, () => table.refresh());
  };
  const table = dataTable({
    columns: [
      { key: "severity", label: "Severity", sort: sortable(OP, "severity"), defaultOrder: "desc", render: (a) => severityBadge(a.severity) },
      { key: "title", label: "Alert", render: (a) => h("div", null, h("div", { class: "alert-title" }, a.title || a.type), h("div", { class: "muted small" }, [a.protocol, a.engine, a.count > 1 ? `${fmtNumber(a.count)} times` : null].filter(Boolean).join(" · "))), cls: "col-wide" },
      { key: "status", label: "Status", sort: sortable(OP, "status"), render: (a) => statusBadge(a.status) },
      { key: "src", label: "Source → destination", render: (a) => h("div", { class: "mono nowrap" }, h("div", null, text(a.src)), h("div", null, `→ ${text(a.dst)}`)) },
      { key: "last_ts", label: "Last", sort: sortable(OP, "last_ts"), defaultOrder: "desc", render: (a) => fmtShort(a.last_ts), cls: "nowrap" },
    ],
    sort: query.get("sort") || sortable(OP, "severity"),
    order: query.get("order") || "desc",
    empty: "No alert matches these filters.",
    onRow: open,
    load: (page) => {
      const q = pageQuery(OP, page);
      filter(q, OP, state.status, "status");
      filter(q, OP, state.severity, "severity", "min_severity");
      filter(q, OP, state.q, "q", "search");
      return api.call(OP, { query: q });
    },
    onState: (st) => setQuery({ ...state, sort: st.sort, order: st.sort ? st.order : "" }),
  });
  const apply = () => { state.status = statusSel.value; state.severity = sevSel.value; state.q = searchIn.value.trim(); table.refresh(true); };
  statusSel.addEventListener("change", apply);
  sevSel.addEventListener("change", apply);
  searchIn.addEventListener("input", debounce(apply, 300));
  table.refresh();
  if (params.id) {
    if (api.has("alerts_get")) renderDetail(drawer, params.id, () => table.refresh());
    else replace(drawer, notAvailable("The alert detail"));
  }
  return h("div", null,
    pageHeader("Alerts"),
    h("div", { class: "split" },
      card(null, h("div", { class: "filters" }, searchIn, statusSel, sevSel), table),
      drawer));
}
