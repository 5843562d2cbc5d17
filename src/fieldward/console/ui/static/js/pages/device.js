// A device: identity attributes with confidence and evidence, communications, vulnerabilities,
// insecure configurations, alerts, risk, and the analyst's importance setter.

import { h, text, levelName, fmtTime, fmtNumber, fmtBytes, severityBadge, statusBadge, confidenceBar, fmtPercent, typeName } from "../dom.js";
import * as api from "../api.js";
import { link } from "../router.js";
import { card, kv, pageHeader, notAvailable, tabs, toast, errorBox } from "../components.js";
import { can } from "../session.js";
import { riskCell } from "./inventory.js";

const IMPORTANCE = ["low", "normal", "high", "critical"];

function evidenceList(evidence) {
  if (!evidence || !evidence.length) return h("span", { class: "muted" }, "—");
  const items = evidence.slice(0, 8).map((e) => h("li", null,
    h("span", { class: "chip" }, text(e.source)), " ", text(e.detail),
    e.ts ? h("span", { class: "muted" }, ` · ${fmtTime(e.ts)}`) : null,
    e.flow_id !== undefined && e.flow_id >= 0 ? h("span", { class: "muted" }, ` · flow ${e.flow_id}`) : null));
  if (evidence.length > 8) items.push(h("li", { class: "muted" }, `… ${evidence.length - 8} more`));
  return h("ul", { class: "evidence" }, items);
}

function attributesTable(d) {
  const rows = (d.attributes || []).map((a) => h("tr", null,
    h("th", { scope: "row" }, a.name.replaceAll("_", " ")),
    h("td", { class: "attr-value" }, a.name === "purdue_level" ? levelName(a.value) : text(a.value),
      a.alternatives?.length ? h("div", { class: "muted small" }, `alternatives: ${text(a.alternatives.map((x) => (typeof x === "object" && x ? x.value ?? JSON.stringify(x) : x)))}`) : null),
    h("td", null, confidenceBar(a.confidence)),
    h("td", null, evidenceList(a.evidence))));
  if (!rows.length) return h("p", { class: "muted" }, "No inferred attributes.");
  return h("table", { class: "data attrs" },
    h("thead", null, h("tr", null, h("th", null, "Attribute"), h("th", null, "Value"), h("th", null, "Confidence"), h("th", null, "Evidence"))),
    h("tbody", null, rows));
}

function commsTable(d) {
  if (!d.communications?.length) return h("p", { class: "muted" }, "No communications recorded.");
  return h("div", null,
    d.communications_total > d.communications.length ? h("p", { class: "muted" }, `Showing ${d.communications.length} of ${fmtNumber(d.communications_total)} edges.`) : null,
    h("table", { class: "data" },
      h("thead", null, h("tr", null, ["Direction", "Peer", "Protocol", "Transport/port", "Flows", "Packets", "Bytes", "Last seen"].map((c) => h("th", null, c)))),
      h("tbody", null, d.communications.map((c) => h("tr", null,
        h("td", null, c.direction === "out" ? "→ to" : "← from"),
        h("td", null, h("a", { href: link(`/devices/${c.peer_id}`) }, c.peer_label)),
        h("td", null, c.protocol ? h("span", { class: "chip" }, c.protocol) : h("span", { class: "muted" }, "unrecognised")),
        h("td", { class: "mono" }, `${c.transport}/${c.port}`),
        h("td", { class: "num" }, fmtNumber(c.flows)),
        h("td", { class: "num" }, fmtNumber(c.packets)),
        h("td", { class: "num" }, fmtBytes(c.bytes)),
        h("td", { class: "nowrap" }, fmtTime(c.last_seen)))))));
}

function vulnsTable(d) {
  if (!d.vulnerabilities?.length) return h("p", { class: "muted" }, "No known vulnerability matches this device.");
  return h("table", { class: "data" },
    h("thead", null, h("tr", null, ["CVE", "Severity", "CVSS", "KEV", "Confidence", "Why it matched", "Remediation"].map((c) => h("th", null, c)))),
    h("tbody", null, d.vulnerabilities.map((v) => h("tr", { class: v.not_applicable ? "dim" : null },
      h("td", { class: "mono nowrap" }, v.vulnerability_id, v.not_applicable ? h("div", { class: "muted small" }, `not applicable: ${text(v.not_applicable_reason)}`) : null),
      h("td", null, severityBadge(v.severity)),
      h("td", { class: "num" }, v.cvss_score ?? "—"),
      h("td", null, v.kev ? h("span", { class: "badge kev" }, v.known_ransomware ? "KEV · ransomware" : "KEV") : "—"),
      h("td", null, confidenceBar(v.confidence)),
      h("td", { class: "wrap" }, v.reason),
      h("td", { class: "wrap" }, text(v.remediation))))));
}

function configTable(d) {
  if (!d.configurations?.length) return h("p", { class: "muted" }, "No insecure configuration seen in traffic.");
  return h("div", { class: "findings" }, d.configurations.map((c) => h("article", { class: "finding" },
    h("header", null, severityBadge(c.severity), " ", h("strong", null, c.title), c.port ? h("span", { class: "muted" }, ` · ${text(c.protocol)} port ${c.port}`) : null),
    h("p", null, c.explanation),
    h("p", { class: "muted" }, "Recommendation: ", c.recommendation),
    c.peers?.length ? h("p", { class: "muted small" }, `Peers: ${c.peers.slice(0, 10).join(", ")}${c.peers.length > 10 ? " …" : ""}`) : null)));
}

function alertsTable(d) {
  if (!d.alerts?.length) return h("p", { class: "muted" }, "No alert involves this device.");
  return h("div", null,
    d.alerts_total > d.alerts.length ? h("p", { class: "muted" }, `Showing ${d.alerts.length} of ${fmtNumber(d.alerts_total)} alerts.`) : null,
    h("table", { class: "data" },
      h("thead", null, h("tr", null, ["Severity", "Alert", "Status", "Source → destination", "Count", "Last"].map((c) => h("th", null, c)))),
      h("tbody", null, d.alerts.map((a) => h("tr", null,
        h("td", null, severityBadge(a.severity)),
        h("td", null, api.has("alerts_get") || api.has("alerts_list") ? h("a", { href: link(`/alerts/${a.id}`) }, a.title || a.type) : (a.title || a.type)),
        h("td", null, statusBadge(a.status)),
        h("td", { class: "mono" }, `${text(a.src)} → ${text(a.dst)}`),
        h("td", { class: "num" }, fmtNumber(a.count)),
        h("td", { class: "nowrap" }, fmtTime(a.last_ts)))))));
}

function riskBlock(d) {
  const r = d.risk;
  if (!r) return h("p", { class: "muted" }, "No risk assessment for this device yet.");
  return h("div", { class: "grid2" },
    kv([
      ["Score", riskCell(r.score)],
      ["Priority", h("span", { class: ["badge", `prio-${["now", "next", "later"].includes(r.priority) ? r.priority : "later"}`] }, r.priority)],
      ["Exploitability", fmtPercent(r.exploitability)],
      ["Exposure", fmtPercent(r.exposure)],
      ["Criticality", fmtPercent(r.criticality)],
      ["Behaviour", fmtPercent(r.behaviour)],
      ["Updated", fmtTime(r.updated)],
    ]),
    h("div", null, h("h3", null, "Contributors"), h("ul", { class: "contributors" }, (r.contributors || []).map((c) => h("li", null,
      h("span", { class: "points" }, `+${Number(c.points).toFixed(1)}`), " ", h("span", { class: "chip" }, text(c.factor)), " ", text(c.detail))))));
}

function importanceControl(d) {
  const updateOp = ["devices_update", "devices_set_importance"].find((id) => api.has(id));
  const current = d.importance ?? "";
  if (!updateOp || !can("analyst")) return h("span", null, current || "normal (not set)");
  const sel = h("select", { "aria-label": "Importance", id: "importance" },
    h("option", { value: "" }, "normal (not set)"),
    IMPORTANCE.filter((i) => i !== "normal").concat(["normal"]).map((i) => h("option", { value: i, selected: i === current }, i)));
  sel.addEventListener("change", async () => {
    sel.disabled = true;
    try {
      await api.call(updateOp, { params: { device_id: d.id, id: d.id }, body: { importance: sel.value || null } });
      toast(`Importance set to ${sel.value || "normal"}`, "ok");
    } catch (err) {
      toast(`Could not set the importance: ${err.message}`, "error");
      sel.value = current;
    } finally {
      sel.disabled = false;
    }
  });
  return sel;
}

export async function devicePage(params) {
  if (!api.has("devices_get")) return h("div", null, pageHeader("Device"), notAvailable("The device page"));
  let d;
  try {
    d = await api.call("devices_get", { params: { device_id: params.id, id: params.id } });
  } catch (err) {
    return h("div", null, pageHeader("Device"), errorBox(err.status === 404 ? "This device does not exist." : err));
  }
  const title = d.label || d.hostname || d.device_key;
  const identity = kv([
    ["Type", typeName(d.device_type)],
    ["Vendor", text(d.vendor)],
    ["Model", text(d.model)],
    ["Firmware", text(d.firmware)],
    ["Serial", text(d.serial)],
    ["OS", text(d.os)],
    ["Purdue level", levelName(d.purdue_level)],
    ["Importance", importanceControl(d)],
  ]);
  const network = kv([
    ["IP addresses", h("span", { class: "mono" }, text(d.ips))],
    ["MAC", h("span", { class: "mono" }, text(d.mac))],
    ["Host name", text(d.hostname)],
    ["VLANs", text(d.vlans)],
    ["Protocols", h("span", { class: "chips" }, (d.protocols || []).map((p) => h("span", { class: "chip" }, p)))],
    ["Roles", text((d.roles || []).map((r) => `${r.protocol} ${r.role}`))],
    ["First seen", fmtTime(d.first_seen)],
    ["Last seen", fmtTime(d.last_seen)],
    ["Packets", fmtNumber(d.packets)],
  ]);
  const n = (list, total) => `${total ?? list?.length ?? 0}`;
  return h("div", { class: "device-page" },
    h("p", { class: "breadcrumb" }, h("a", { href: link("/devices") }, "Inventory"), " / ", h("span", null, title)),
    pageHeader(title, h("span", { class: "muted mono" }, d.device_key), riskCell(d.risk_score)),
    h("div", { class: "grid2" }, card("Identity", identity), card("Network", network)),
    card(null, tabs([
      { id: "attributes", label: "Attributes & evidence", render: () => attributesTable(d) },
      { id: "comms", label: `Communications (${n(d.communications, d.communications_total)})`, render: () => commsTable(d) },
      { id: "vulns", label: `Vulnerabilities (${n(d.vulnerabilities)})`, render: () => vulnsTable(d) },
      { id: "config", label: `Configuration (${n(d.configurations)})`, render: () => configTable(d) },
      { id: "alerts", label: `Alerts (${n(d.alerts, d.alerts_total)})`, render: () => alertsTable(d) },
      { id: "risk", label: "Risk", render: () => riskBlock(d) },
    ])));
}
