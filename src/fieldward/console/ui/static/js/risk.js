// Finding the risk endpoints (site score, history) among the names the API may give them.

import * as api from "./api.js";

export const RISK_OPS = ["risk_site", "risk_get", "risk_summary", "risk_read"];
export const RISK_HISTORY_OPS = ["risk_trend", "risk_history", "risk_snapshots", "risk_list_snapshots"];
export const REMEDIATION_OPS = ["risk_remediation", "risk_plan", "remediation_list"];

export function remediationOp() { return REMEDIATION_OPS.find((id) => api.has(id)) || null; }

export function riskOp() { return RISK_OPS.find((id) => api.has(id)) || null; }
export function riskHistoryOp() { return RISK_HISTORY_OPS.find((id) => api.has(id)) || null; }

/** The site's score from whichever shape the risk endpoint returns. */
export function siteScore(risk) {
  if (!risk) return null;
  const site = risk.site ?? risk;
  return site.score ?? site.site_score ?? null;
}

/** [{t, v}] from a history response (a list, or a Page of snapshots). */
export function trendPoints(history) {
  const items = Array.isArray(history) ? history : history?.items ?? history?.points ?? [];
  return items
    .map((x) => ({ t: x.day ?? x.at ?? x.taken ?? x.ts ?? x.time ?? x.created, v: Number(x.score ?? x.site_score ?? x.value) }))
    .filter((p) => p.t && Number.isFinite(p.v))
    .sort((a, b) => String(a.t).localeCompare(String(b.t)));
}
