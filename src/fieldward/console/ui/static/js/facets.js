// Counts of the inventory by type, Purdue level and vendor, for the dashboard and the filters.
// Uses a summary endpoint when the API has one; otherwise reads the device list itself (exact up to
// FULL_SCAN devices) or, for a large inventory, asks the list endpoint for one count per value.

import * as api from "./api.js";

const SUMMARY_OPS = ["devices_summary", "devices_stats", "devices_facets", "dashboard_get"];
const FULL_SCAN = 2000;
const KNOWN_TYPES = ["plc", "rtu", "hmi", "engineering_workstation", "historian", "scada_server", "iot_sensor", "ip_camera", "switch", "router", "firewall", "server", "workstation", "printer", "unknown"];

function tally(map, key) { map.set(key, (map.get(key) || 0) + 1); }

let cache = null;

export async function deviceFacets({ fresh = false } = {}) {
  if (cache && !fresh) return cache;
  cache = load();
  return cache;
}

async function load() {
  const summaryOp = SUMMARY_OPS.find((id) => api.has(id));
  if (summaryOp) {
    const s = await api.call(summaryOp);
    const pick = (...names) => names.map((n) => s[n]).find(Boolean) || {};
    const asMap = (obj) => new Map(Array.isArray(obj) ? obj.map((x) => [x.key ?? x.name ?? x.value, x.count]) : Object.entries(obj));
    return {
      total: s.total ?? s.devices ?? 0,
      byType: asMap(pick("by_type", "types", "device_types")),
      byLevel: asMap(pick("by_level", "levels", "purdue_levels")),
      byVendor: asMap(pick("by_vendor", "vendors")),
      exact: true,
    };
  }
  if (!api.has("devices_list")) return null;
  const first = await api.call("devices_list", { query: { limit: 500, offset: 0 } });
  const items = [...first.items];
  if (first.total <= FULL_SCAN) {
    for (let offset = 500; offset < first.total; offset += 500) {
      const page = await api.call("devices_list", { query: { limit: 500, offset } });
      items.push(...page.items);
    }
    const byType = new Map();
    const byLevel = new Map();
    const byVendor = new Map();
    for (const d of items) {
      tally(byType, d.device_type || "unknown");
      tally(byLevel, d.purdue_level ?? "unknown");
      if (d.vendor) tally(byVendor, d.vendor);
    }
    return { total: first.total, byType, byLevel, byVendor, exact: true };
  }
  // A large inventory: one indexed count per known value (limit=1 returns the total only).
  const count = async (query) => (await api.call("devices_list", { query: { limit: 1, ...query } })).total;
  const typeParam = api.param("devices_list", "type", "device_type");
  const levelParam = api.param("devices_list", "level", "purdue_level");
  const byType = new Map();
  const byLevel = new Map();
  await Promise.all(KNOWN_TYPES.map(async (t) => { const n = await count({ [typeParam]: t }); if (n) byType.set(t, n); }));
  await Promise.all([0, 1, 2, 3, 4, 5].map(async (l) => { const n = await count({ [levelParam]: l }); if (n) byLevel.set(l, n); }));
  const byVendor = new Map();
  for (const d of items) if (d.vendor) tally(byVendor, d.vendor);
  return { total: first.total, byType, byLevel, byVendor, exact: false };
}
