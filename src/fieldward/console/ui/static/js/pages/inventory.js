// The inventory: filters (type, vendor, Purdue level, search), sorting and paging, all on the server.

import { h, replace, text, levelName, levelShort, fmtShort, fmtNumber, typeName } from "../dom.js";
import * as api from "../api.js";
import { link, navigate, setQuery } from "../router.js";
import { dataTable, pageHeader, notAvailable, card, debounce } from "../components.js";
import { pageQuery, filter, sortable } from "../listing.js";
import { deviceFacets } from "../facets.js";

const OP = "devices_list";
const TYPES = ["plc", "rtu", "hmi", "engineering_workstation", "historian", "scada_server", "iot_sensor", "ip_camera", "switch", "router", "firewall", "server", "workstation", "printer", "unknown"];

export function riskCell(score) {
  if (score === null || score === undefined) return h("span", { class: "muted" }, "—");
  const cls = score >= 70 ? "risk-high" : score >= 40 ? "risk-mid" : "risk-low";
  return h("span", { class: ["risk-pill", cls] }, String(score));
}

export function inventoryPage(_params, query) {
  if (!api.has(OP)) return h("div", null, pageHeader("Inventory"), notAvailable("The device list"));
  const typeEnum = api.paramEnum(OP, api.param(OP, "device_type", "type") || "") || TYPES;
  const state = {
    type: query.get("type") || "",
    vendor: query.get("vendor") || "",
    level: query.get("level") || "",
    q: query.get("q") || "",
  };
  const typeSel = h("select", { name: "type", "aria-label": "Device type", "data-filter": "type" },
    h("option", { value: "" }, "All types"),
    typeEnum.map((t) => h("option", { value: t, selected: t === state.type }, typeName(t))));
  const levelSel = h("select", { name: "level", "aria-label": "Purdue level", "data-filter": "level" },
    h("option", { value: "" }, "All levels"),
    [0, 1, 2, 3, 4, 5].map((l) => h("option", { value: String(l), selected: String(l) === state.level }, levelName(l))));
  const vendorIn = h("input", { type: "search", name: "vendor", placeholder: "Vendor (exact)", value: state.vendor, "aria-label": "Vendor", "data-filter": "vendor", list: "vendor-list" });
  const vendorList = h("datalist", { id: "vendor-list" });
  deviceFacets().then((f) => {
    if (!f) return;
    // The types present in this inventory (the API takes any type name).
    const present = [...f.byType.keys()].filter((k) => k !== "unknown").sort();
    if (present.length) {
      if (state.type && !present.includes(state.type)) present.push(state.type);
      replace(typeSel, h("option", { value: "" }, "All types"),
        present.map((t) => h("option", { value: t, selected: t === state.type }, typeName(t))));
    }
    [...f.byVendor.keys()].sort((a, b) => a.localeCompare(b)).forEach((v) => vendorList.append(h("option", { value: v })));
  }).catch(() => {});
  const searchIn = h("input", { type: "search", name: "q", placeholder: "Search IP, MAC, host name, model…", value: state.q, "aria-label": "Search", class: "grow", "data-filter": "q" });

  const columns = [
    { key: "label", label: "Device", sort: sortable(OP, "hostname"), render: (d) => h("a", { href: link(`/devices/${d.id}`), class: "device-link" }, d.label ?? d.hostname ?? d.device_key), cls: "nowrap" },
    { key: "ips", label: "IP", sort: null, render: (d) => text(d.ips), cls: "mono nowrap" },
    { key: "mac", label: "MAC", render: (d) => text(d.mac), cls: "mono nowrap" },
    { key: "device_type", label: "Type", sort: sortable(OP, "device_type"), render: (d) => typeName(d.device_type) },
    { key: "vendor", label: "Vendor", sort: sortable(OP, "vendor"), render: (d) => text(d.vendor) },
    { key: "model", label: "Model", render: (d) => text(d.model) },
    { key: "firmware", label: "Firmware", render: (d) => text(d.firmware) },
    { key: "purdue_level", label: "Level", sort: sortable(OP, "purdue_level"), render: (d) => levelShort(d.purdue_level) },
    { key: "protocols", label: "Protocols", render: (d) => h("span", { class: "chips" }, (d.protocols || []).slice(0, 3).map((p) => h("span", { class: "chip" }, p)), d.protocols?.length > 3 ? h("span", { class: "muted small", title: d.protocols.join(", ") }, `+${d.protocols.length - 3}`) : null) },
    { key: "risk_score", label: "Risk", sort: sortable(OP, "risk_score"), defaultOrder: "desc", render: (d) => riskCell(d.risk_score), cls: "num" },
    { key: "last_seen", label: "Last seen", sort: sortable(OP, "last_seen"), defaultOrder: "desc", render: (d) => fmtShort(d.last_seen), cls: "nowrap" },
  ];
  const count = h("span", { class: "muted" });
  const table = dataTable({
    columns,
    sort: query.get("sort") || null,
    order: query.get("order") || "asc",
    offset: Number(query.get("offset")) || 0,
    empty: "No device matches these filters.",
    onRow: (d) => navigate(`/devices/${d.id}`),
    load: (page) => {
      const q = pageQuery(OP, page);
      filter(q, OP, state.type, "device_type", "type");
      filter(q, OP, state.vendor, "vendor");
      filter(q, OP, state.level, "purdue_level", "level");
      filter(q, OP, state.q, "q", "search");
      return api.call(OP, { query: q });
    },
    onState: (st) => {
      count.textContent = `${fmtNumber(st.total)} devices`;
      setQuery({ ...state, sort: st.sort, order: st.sort ? st.order : "", offset: st.offset || "" });
    },
  });
  const apply = () => {
    state.type = typeSel.value;
    state.level = levelSel.value;
    state.vendor = vendorIn.value.trim();
    state.q = searchIn.value.trim();
    table.refresh(true);
  };
  typeSel.addEventListener("change", apply);
  levelSel.addEventListener("change", apply);
  const typed = debounce(apply, 300);
  vendorIn.addEventListener("input", typed);
  searchIn.addEventListener("input", typed);
  table.refresh();
  return h("div", null,
    pageHeader("Inventory", count),
    card(null, h("div", { class: "filters" }, searchIn, typeSel, vendorIn, vendorList, levelSel), table));
}
