// The dashboard: devices by type and Purdue level, open alerts by severity, the site risk score and
// its trend, the riskiest devices and the latest alerts. Each card loads on its own, so a missing
// endpoint or an error only affects its card.

import { h, replace, levelName, fmtShort, fmtNumber, severityBadge, text, typeName } from "../dom.js";
import * as api from "../api.js";
import { link } from "../router.js";
import { card, barChart, gauge, sparkline, loading, errorBox, notAvailable } from "../components.js";
import { deviceFacets } from "../facets.js";
import { riskOp, riskHistoryOp, siteScore, trendPoints } from "../risk.js";
import { riskCell } from "./inventory.js";

const SEVERITIES = ["critical", "high", "medium", "low", "info"];

function section(title, id, fill) {
  const body = h("div", { class: "card-body" }, loading());
  const node = card(title, body);
  node.dataset.card = id;
  Promise.resolve().then(fill).then((content) => replace(body, content)).catch((err) => replace(body, errorBox(err)));
  return node;
}

async function devicesByType() {
  const f = await deviceFacets({ fresh: true });
  if (!f) return notAvailable("The device list");
  const items = [...f.byType.entries()].sort((a, b) => b[1] - a[1]).map(([t, n]) => ({
    label: typeName(t), value: n, href: t === "unknown" ? link("/devices") : link(`/devices?type=${encodeURIComponent(t)}`),
  }));
  return h("div", null,
    h("p", { class: "big-number" }, fmtNumber(f.total), h("span", { class: "muted" }, " devices")),
    items.length ? barChart(items) : h("p", { class: "muted" }, "No device yet: ingest an analysis or connect a sensor."));
}

async function devicesByLevel() {
  const f = await deviceFacets();
  if (!f) return notAvailable("The device list");
  const order = [5, 4, 3, 2, 1, 0, "unknown"];
  const items = order.filter((l) => f.byLevel.has(l) || f.byLevel.has(String(l))).map((l) => ({
    label: l === "unknown" ? "Unknown" : levelName(l), value: f.byLevel.get(l) ?? f.byLevel.get(String(l)),
    href: l === "unknown" ? link("/devices") : link(`/devices?level=${l}`), cls: "level",
  }));
  return items.length ? barChart(items) : h("p", { class: "muted" }, "No device yet.");
}

async function alertsBySeverity() {
  const summaryOp = ["alerts_summary", "alerts_stats"].find((id) => api.has(id));
  let counts;
  if (summaryOp) {
    const s = await api.call(summaryOp);
    const src = s.open_by_severity ?? s.by_severity ?? s;
    counts = SEVERITIES.map((sev) => [sev, Number(src[sev] ?? 0)]);
  } else if (api.has("alerts_list")) {
    const statusParam = api.param("alerts_list", "status");
    const sevParam = api.param("alerts_list", "severity");
    if (!sevParam) return notAvailable("Alert counts by severity");
    const openStatuses = (api.paramEnum("alerts_list", "status") || []).includes("open") ? ["open"] : ["new", "acknowledged"];
    counts = await Promise.all(SEVERITIES.map(async (sev) => {
      let n = 0;
      for (const st of statusParam ? openStatuses : [null]) {
        const q = { limit: 1, [sevParam]: sev };
        if (st) q[statusParam] = st;
        n += (await api.call("alerts_list", { query: q })).total;
      }
      return [sev, n];
    }));
  } else {
    return notAvailable("The alerts queue");
  }
  const total = counts.reduce((a, [, n]) => a + n, 0);
  return h("div", null,
    h("p", { class: "big-number" }, fmtNumber(total), h("span", { class: "muted" }, " open alerts")),
    barChart(counts.map(([sev, n]) => ({ label: sev, value: n, cls: `sev-${sev}`, href: link(`/alerts?severity=${sev}`) }))));
}

async function riskCard() {
  const op = riskOp();
  if (!op) {
    // Without a risk endpoint, the riskiest device's score is the best available figure.
    const page = await api.call("devices_list", { query: { limit: 1, sort: "risk_score", order: "desc" } });
    const top = page.items[0];
    return h("div", null,
      notAvailable("The site risk score"),
      top && top.risk_score !== null ? h("p", null, "Riskiest device: ", h("a", { href: link(`/devices/${top.id}`) }, top.label), " ", riskCell(top.risk_score)) : null);
  }
  const risk = await api.call(op);
  const score = siteScore(risk);
  const histOp = riskHistoryOp();
  let trend = h("p", { class: "muted", "data-testid": "trend-note" }, "Trend: needs history (risk snapshots are not available from this API yet).");
  if (histOp) {
    const points = trendPoints(await api.call(histOp));
    const chart = sparkline(points);
    trend = chart ? h("div", { class: "trend" }, h("h3", null, "Trend"), chart) : h("p", { class: "muted" }, "Trend: needs at least two risk snapshots.");
  }
  const contributors = (risk.site ?? risk).contributors || [];
  return h("div", { class: "risk-card" },
    h("div", { class: "risk-score" }, score !== null ? gauge(score) : h("p", { class: "muted" }, "No score yet")),
    contributors.length ? h("ul", { class: "contributors" }, contributors.slice(0, 4).map((c) => h("li", null, h("span", { class: "points" }, `+${Number(c.points).toFixed(1)}`), " ", text(c.detail)))) : null,
    trend);
}

async function riskiest() {
  const page = await api.call("devices_list", { query: { limit: 6, sort: "risk_score", order: "desc" } });
  const rows = page.items.filter((d) => d.risk_score !== null);
  if (!rows.length) return h("p", { class: "muted" }, "No device has a risk score yet (run the assessment).");
  return h("table", { class: "data compact" }, h("tbody", null, rows.map((d) => h("tr", null,
    h("td", null, h("a", { href: link(`/devices/${d.id}`) }, d.label)),
    h("td", null, typeName(d.device_type)),
    h("td", null, levelName(d.purdue_level)),
    h("td", { class: "num" }, riskCell(d.risk_score))))));
}

async function latestAlerts() {
  if (!api.has("alerts_list")) return notAvailable("The alerts queue");
  const q = { limit: 6 };
  if (api.param("alerts_list", "sort")) { q.sort = "last_ts"; if (api.param("alerts_list", "order")) q.order = "desc"; }
  const page = await api.call("alerts_list", { query: q });
  if (!page.items.length) return h("p", { class: "muted" }, "No alert.");
  return h("table", { class: "data compact" }, h("tbody", null, page.items.map((a) => h("tr", null,
    h("td", null, severityBadge(a.severity)),
    h("td", null, h("a", { href: link(`/alerts/${a.id}`) }, a.title || a.type)),
    h("td", { class: "nowrap muted" }, fmtShort(a.last_ts))))));
}

export function dashboardPage() {
  return h("div", { class: "dashboard" },
    h("header", { class: "page-header" }, h("h1", null, "Dashboard")),
    h("div", { class: "grid3" },
      section("Devices by type", "types", devicesByType),
      section("Devices by Purdue level", "levels", devicesByLevel),
      section("Open alerts by severity", "alerts", alertsBySeverity)),
    h("div", { class: "grid3" },
      section("Site risk", "risk", riskCard),
      section("Riskiest devices", "riskiest", riskiest),
      section("Latest alerts", "latest", latestAlerts)));
}
