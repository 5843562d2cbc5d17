// Vulnerabilities and risk: the site score with contributors and trend, the remediation plan
// (Now / Next / Later), and the findings list with filters and the analyst's not-applicable mark.

import { h, replace, text, fmtTime, severityBadge, confidenceBar, debounce } from "../dom.js";
import * as api from "../api.js";
import { link, setQuery } from "../router.js";
import { card, dataTable, pageHeader, notAvailable, gauge, sparkline, errorBox, toast, dialog, loading } from "../components.js";
import { pageQuery, filter, sortable } from "../listing.js";
import { can } from "../session.js";
import { riskOp, riskHistoryOp, remediationOp, siteScore, trendPoints } from "../risk.js";

const LIST_OPS = ["vulnerabilities_list", "vulns_list", "findings_list"];
const MARK_OPS = ["vulnerabilities_mark", "vulnerabilities_not_applicable", "vulnerabilities_mark_not_applicable", "vulnerabilities_update"];

async function riskSection() {
  const op = riskOp();
  if (!op) return card("Site risk", notAvailable("The risk assessment"));
  let risk;
  try { risk = await api.call(op); } catch (err) { return card("Site risk", errorBox(err)); }
  const site = risk.site ?? risk;
  const score = siteScore(risk);
  let trend = h("p", { class: "muted" }, "Trend: needs history (risk snapshots are not available from this API yet).");
  const histOp = riskHistoryOp();
  if (histOp) {
    try {
      const chart = sparkline(trendPoints(await api.call(histOp)), { width: 480, height: 100 });
      trend = chart || h("p", { class: "muted" }, "Trend: needs at least two risk snapshots.");
    } catch (err) { trend = errorBox(err); }
  }
  let plan = risk.remediation ?? risk.plan ?? null;
  const planOp = remediationOp();
  if (!plan && planOp) {
    try {
      const r = await api.call(planOp, { query: api.param(planOp, "limit") ? { limit: 200 } : {} });
      plan = Array.isArray(r) ? r : r.items ?? r;
    } catch (err) { plan = null; }
  }
  const planItems = (bucket) => (Array.isArray(plan) ? plan.filter((x) => (x.priority ?? x.bucket) === bucket) : plan?.[bucket] ?? []);
  return h("div", { class: "grid2" },
    card("Site risk", h("div", { class: "risk-card" }, score !== null ? gauge(score) : h("p", { class: "muted" }, "No score yet"),
      site.band ? h("p", { class: "center" }, h("span", { class: ["badge", `band-${site.band}`] }, site.band), site.by_priority ? h("span", { class: "muted" }, ` · now ${site.by_priority.now ?? 0} · next ${site.by_priority.next ?? 0} · later ${site.by_priority.later ?? 0} devices`) : null) : null,
      h("ul", { class: "contributors" }, (site.contributors || []).map((c) => h("li", null, h("span", { class: "points" }, `+${Number(c.points).toFixed(1)}`), " ", text(c.detail)))),
      trend)),
    card("Remediation plan", plan
      ? h("div", { class: "plan" }, ["now", "next", "later"].map((b) => h("div", { class: "plan-col" },
        h("h3", null, h("span", { class: ["badge", `prio-${b}`] }, b)),
        h("ol", null, planItems(b).slice(0, 8).map((x) => h("li", null,
          x.device_id ? h("a", { href: link(`/devices/${x.device_id}`) }, text(x.device_label)) : text(x.device_label ?? x.device),
          ": ", text(x.action ?? x.title ?? x.detail ?? x.summary),
          x.risk_reduction ? h("span", { class: "muted" }, ` (−${x.risk_reduction})`) : null))),
        planItems(b).length > 8 ? h("p", { class: "muted small" }, `… ${planItems(b).length - 8} more`) : null)))
      : h("p", { class: "muted" }, "The risk endpoint does not return a remediation plan.")));
}

async function unmark(op, v, after) {
  try {
    await api.call(op, { params: { finding_id: v.id, id: v.id } });
    toast(`${v.vulnerability_id} applies again`, "ok");
    after();
  } catch (err) { toast(`Could not unmark: ${err.message}`, "error"); }
}

function reportLinks() {
  if (!api.has("reports_risk")) return null;
  const formats = api.paramEnum("reports_risk", "format") || ["html", "pdf"];
  return h("span", { class: "row-actions" },
    formats.includes("html") ? h("a", { class: "btn small", href: api.url("reports_risk", {}, { format: "html" }), target: "_blank", rel: "noopener" }, "Report (HTML)") : null,
    formats.includes("pdf") ? h("a", { class: "btn small", href: api.url("reports_risk", {}, { format: "pdf" }), download: "fieldward-risk-report.pdf" }, "Report (PDF)") : null);
}

function feedsCard() {
  if (!api.has("feeds_status")) return null;
  const body = h("div", null, loading());
  const render = () => api.call("feeds_status").then((s) => {
    const sources = Object.entries(s.sources || {});
    const input = h("input", { type: "file", multiple: true, "aria-label": "Feed files", accept: ".json,.csv,.gz" });
    const importer = api.has("feeds_import") && can(api.roleOf("feeds_import") || "admin")
      ? h("form", { class: "filters top-gap", onsubmit: async (e) => {
        e.preventDefault();
        if (!input.files.length) return;
        try {
          const r = await api.upload("feeds_import", [...input.files]);
          toast(`Imported: ${r.total.added} added, ${r.total.updated} updated, ${r.total.unchanged} unchanged`, "ok");
          render();
        } catch (err) { toast(`Import failed: ${err.message}`, "error"); }
      } }, input, h("button", { class: "btn", type: "submit" }, "Import NVD / KEV / CSAF files"))
      : null;
    replace(body,
      sources.length ? h("table", { class: "data compact" },
        h("thead", null, h("tr", null, h("th", null, "Source"), h("th", null, "Status"))),
        h("tbody", null, sources.map(([name, info]) => h("tr", null, h("td", null, name),
          h("td", { class: "mono small wrap" }, Object.entries(info || {}).map(([k, v]) => `${k}: ${text(v)}`).join(" · "))))))
        : h("p", { class: "muted" }, "No vulnerability feed imported yet: findings need NVD, KEV or CSAF data."),
      h("p", { class: "muted small" }, `Last import: ${s.last_import ? fmtTime(s.last_import) : "never"} · analyst marks: ${s.marks ?? 0}`),
      importer);
  }).catch((err) => replace(body, errorBox(err)));
  render();
  return card("Vulnerability feeds", body);
}

async function markNotApplicable(op, v, after) {
  const values = await dialog(`Mark ${v.vulnerability_id} not applicable`, [{ name: "reason", type: "textarea", label: "Reason", required: true }], "Mark");
  if (!values) return;
  const fields = api.bodyFields(op);
  const body = {};
  if (fields && "not_applicable" in fields.properties) body.not_applicable = true;
  const reasonName = fields ? ["not_applicable_reason", "reason", "note"].find((n) => n in fields.properties) : "reason";
  if (reasonName) body[reasonName] = values.reason;
  try {
    await api.call(op, { params: { finding_id: v.id, vulnerability_id: v.id, id: v.id }, body });
    toast("Marked not applicable", "ok");
    after();
  } catch (err) { toast(`Could not mark: ${err.message}`, "error"); }
}

export async function vulnsPage(_params, query) {
  const listOp = LIST_OPS.find((id) => api.has(id));
  const risk = await riskSection();
  if (!listOp) return h("div", null, pageHeader("Vulnerabilities & risk", reportLinks()), risk, card("Findings", notAvailable("The vulnerability list")), feedsCard());
  const state = { severity: query.get("severity") || "", kev: query.get("kev") || "", q: query.get("q") || "" };
  const sev = h("select", { "aria-label": "Severity" }, h("option", { value: "" }, "All severities"),
    ["critical", "high", "medium", "low"].map((x) => h("option", { value: x, selected: x === state.severity }, x)));
  const kev = h("select", { "aria-label": "Known exploited" }, [["", "KEV or not"], ["true", "Known exploited only"]].map(([v, l]) => h("option", { value: v, selected: v === state.kev }, l)));
  const search = h("input", { type: "search", class: "grow", placeholder: "CVE id, device…", value: state.q, "aria-label": "Search findings" });
  const markOp = MARK_OPS.find((id) => api.has(id));
  const table = dataTable({
    columns: [
      { key: "vulnerability_id", label: "CVE", sort: sortable(listOp, "vulnerability_id"), render: (v) => h("span", { class: "mono nowrap" }, v.vulnerability_id), cls: "nowrap" },
      { key: "device", label: "Device", sort: api.paramEnum(listOp, "sort")?.includes("device") ? "device" : null, render: (v) => (v.device_id ? h("a", { href: link(`/devices/${v.device_id}`) }, text(v.device_label ?? v.device ?? v.device_id)) : "—") },
      { key: "severity", label: "Severity", sort: sortable(listOp, "severity"), defaultOrder: "desc", render: (v) => severityBadge(v.severity) },
      { key: "cvss_score", label: "CVSS", sort: sortable(listOp, "cvss_score"), defaultOrder: "desc", render: (v) => text(v.cvss_score), cls: "num" },
      { key: "kev", label: "KEV", render: (v) => (v.kev ? h("span", { class: "badge kev", title: v.kev_due_date ? `CISA due date ${v.kev_due_date}` : "" }, v.known_ransomware ? "KEV · ransomware" : "KEV") : "—") },
      { key: "confidence", label: "Confidence", render: (v) => confidenceBar(v.confidence) },
      "reason" in (api.schema("VulnerabilityPublic")?.properties || {}) ? { key: "reason", label: "Why", render: (v) => h("span", { class: "wrap" }, text(v.reason)) } : null,
      { key: "last_seen", label: "Last seen", sort: sortable(listOp, "last_seen"), defaultOrder: "desc", render: (v) => fmtTime(v.last_seen), cls: "nowrap" },
      markOp && can("analyst") ? { key: "na", label: "", render: (v) => (v.not_applicable
        ? h("span", { class: "row-actions" }, h("span", { class: "muted", title: text(v.not_applicable_reason) }, "not applicable"),
          api.has("vulnerabilities_unmark") ? h("button", { class: "btn small", type: "button", onclick: () => unmark("vulnerabilities_unmark", v, () => table.refresh()) }, "Undo") : null)
        : h("button", { class: "btn small", type: "button", onclick: () => markNotApplicable(markOp, v, () => table.refresh()) }, "Not applicable")) } : null,
    ].filter(Boolean),
    sort: query.get("sort") || sortable(listOp, "severity"),
    order: query.get("order") || "desc",
    empty: "No finding matches these filters.",
    load: (page) => {
      const q = pageQuery(listOp, page);
      filter(q, listOp, state.severity, "severity", "min_severity");
      filter(q, listOp, state.kev, "kev");
      filter(q, listOp, state.q, "search", "q");
      return api.call(listOp, { query: q });
    },
    onState: (st) => setQuery({ ...state, sort: st.sort, order: st.sort ? st.order : "" }),
  });
  const apply = () => { state.severity = sev.value; state.kev = kev.value; state.q = search.value.trim(); table.refresh(true); };
  sev.addEventListener("change", apply);
  kev.addEventListener("change", apply);
  search.addEventListener("input", debounce(apply, 300));
  table.refresh();
  return h("div", null, pageHeader("Vulnerabilities & risk", reportLinks()), risk, card("Findings", h("div", { class: "filters" }, search, sev, kev), table), feedsCard());
}
