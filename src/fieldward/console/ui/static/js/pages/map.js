// The network map: devices in horizontal bands by Purdue level (enterprise at the top, process at the
// bottom), edges coloured by protocol, zoom (wheel, buttons) and pan (drag), filters by level,
// protocol and text. Plain SVG, no graph library.

import { h, s, replace, clear, levelName, text, fmtBytes, fmtNumber, typeName } from "../dom.js";
import * as api from "../api.js";
import { link, navigate } from "../router.js";
import { card, pageHeader, notAvailable, errorBox } from "../components.js";

const LEVELS = [5, 4, 3, 2, 1, 0, null];
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#469990", "#808000", "#000075", "#a9a9a9"];
const KNOWN = {
  modbus: "#d1495b", s7comm: "#edae49", enip: "#00798c", cip: "#00798c", dnp3: "#8e44ad", bacnet: "#30638e",
  mqtt: "#66a182", opcua: "#2e86ab", iec104: "#c0392b", profinet: "#e67e22", http: "#7f8c8d", https: "#95a5a6",
  tls: "#95a5a6", dns: "#b8b8b8", dhcp: "#c8c8c8", ssh: "#34495e", telnet: "#e74c3c", snmp: "#16a085",
  ntp: "#bdc3c7", rdp: "#2c3e50", vnc: "#9b59b6", smb: "#5d6d7e", ftp: "#a04000",
};
const NODE_W = 132;
const NODE_H = 34;
const GAP_X = 22;
const LANE_PAD = 26;
const ROW_H = 62;
const LABEL_W = 150;

export function protocolColour(protocol) {
  const p = String(protocol || "").toLowerCase();
  if (!p) return "#9aa4b2";
  if (KNOWN[p]) return KNOWN[p];
  let hash = 0;
  for (const ch of p) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function clip(value, max) {
  const str = String(value);
  return str.length > max ? `${str.slice(0, max - 1)}…` : str;
}

function layout(nodes, width) {
  const perRow = Math.max(1, Math.floor((width - LABEL_W) / (NODE_W + GAP_X)));
  const lanes = [];
  let y = 0;
  for (const level of LEVELS) {
    const members = nodes.filter((n) => (level === null ? n.level === null || n.level === undefined || !LEVELS.includes(n.level) : n.level === level));
    if (!members.length) continue;
    members.sort((a, b) => String(a.type).localeCompare(String(b.type)) || String(a.label).localeCompare(String(b.label)));
    const rows = Math.ceil(members.length / perRow);
    const height = rows * ROW_H + LANE_PAD;
    members.forEach((n, i) => {
      const row = Math.floor(i / perRow);
      const col = i % perRow;
      const inRow = Math.min(perRow, members.length - row * perRow);
      const span = inRow * (NODE_W + GAP_X) - GAP_X;
      const x0 = LABEL_W + (width - LABEL_W - span) / 2;
      n.x = x0 + col * (NODE_W + GAP_X) + NODE_W / 2;
      n.y = y + LANE_PAD / 2 + row * ROW_H + ROW_H / 2;
    });
    lanes.push({ level, y, height, count: members.length });
    y += height;
  }
  return { lanes, height: Math.max(y, 200) };
}

export async function mapPage() {
  const opId = ["map_get", "map_graph", "map_read"].find((id) => api.has(id));
  if (!opId) return h("div", null, pageHeader("Network map"), notAvailable("The network map"));
  let graph;
  try {
    graph = await api.call(opId);
  } catch (err) {
    return h("div", null, pageHeader("Network map"), errorBox(err));
  }
  const nodes = graph.nodes.map((n) => ({ ...n }));
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const edges = graph.edges.filter((e) => byId.has(e.source) && byId.has(e.target));
  const protocols = [...new Set(edges.flatMap((e) => (e.protocols.length ? e.protocols : [""])))].sort();
  const hiddenProto = new Set();
  const hiddenLevel = new Set();
  let search = "";

  const width = 960;
  const { lanes, height } = layout(nodes, width);
  const view = { x: 0, y: 0, w: width, h: height };
  const svg = s("svg", { class: "netmap", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Network map by Purdue level", "data-testid": "netmap" });
  const world = s("g");
  svg.append(world);
  const info = h("div", { class: "map-info" }, h("p", { class: "muted" }, "Select a device to see its connections."));
  let selected = null;

  function applyView() { svg.setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`); }
  function zoom(factor, cx = view.x + view.w / 2, cy = view.y + view.h / 2) {
    const w = Math.min(width * 4, Math.max(120, view.w * factor));
    const hh = (view.h * w) / view.w;
    view.x = cx - ((cx - view.x) * w) / view.w;
    view.y = cy - ((cy - view.y) * hh) / view.h;
    view.w = w; view.h = hh;
    applyView();
  }
  function reset() { Object.assign(view, { x: 0, y: 0, w: width, h: height }); applyView(); }

  function draw() {
    clear(world);
    for (const lane of lanes) {
      world.append(s("g", { class: ["lane", lane.level === null ? "lane-unknown" : `lane-l${lane.level}`, hiddenLevel.has(String(lane.level)) ? "lane-hidden" : null] },
        s("rect", { x: 0, y: lane.y, width, height: lane.height, class: "lane-bg" }),
        s("text", { x: 12, y: lane.y + 22, class: "lane-label" }, levelName(lane.level)),
        s("text", { x: 12, y: lane.y + 40, class: "lane-count" }, `${lane.count} device${lane.count === 1 ? "" : "s"}`)));
    }
    const visibleNode = (n) => !hiddenLevel.has(String(n.level ?? null));
    const term = search.toLowerCase();
    const matches = (n) => !term || [n.label, n.vendor, n.type].some((v) => String(v ?? "").toLowerCase().includes(term));
    const edgeLayer = s("g", { class: "edges" });
    for (const e of edges) {
      const a = byId.get(e.source);
      const b = byId.get(e.target);
      if (!visibleNode(a) || !visibleNode(b)) continue;
      const shown = (e.protocols.length ? e.protocols : [""]).filter((p) => !hiddenProto.has(p));
      if (!shown.length) continue;
      const mx = (a.x + b.x) / 2 + (a.y === b.y ? 0 : 0);
      const my = (a.y + b.y) / 2 - (a.y === b.y ? 28 : 0);
      const sel = selected && (e.source === selected.id || e.target === selected.id);
      const path = s("path", {
        d: `M${a.x} ${a.y} Q${mx} ${my} ${b.x} ${b.y}`,
        class: ["edge", sel ? "edge-selected" : selected ? "edge-dim" : null],
        stroke: protocolColour(shown[0]),
        "stroke-width": Math.min(6, 1 + Math.log10(1 + e.packets) / 1.5).toFixed(2),
      }, s("title", null, `${a.label} → ${b.label}: ${shown.join(", ") || "unrecognised"} · ${fmtNumber(e.packets)} packets · ${fmtBytes(e.bytes)}`));
      edgeLayer.append(path);
    }
    world.append(edgeLayer);
    const nodeLayer = s("g", { class: "nodes" });
    for (const n of nodes) {
      if (!visibleNode(n)) continue;
      const risk = n.risk ?? null;
      const cls = risk === null ? "risk-none" : risk >= 70 ? "risk-high" : risk >= 40 ? "risk-mid" : "risk-low";
      const label = String(n.label ?? n.id);
      const g = s("g", {
        class: ["node", cls, selected?.id === n.id ? "node-selected" : null, term && !matches(n) ? "node-dim" : null, term && matches(n) ? "node-match" : null],
        transform: `translate(${n.x - NODE_W / 2} ${n.y - NODE_H / 2})`, tabindex: 0, "data-node": n.id,
        onclick: (ev) => { ev.stopPropagation(); select(n); },
        ondblclick: () => navigate(`/devices/${n.id}`),
        onkeydown: (ev) => { if (ev.key === "Enter") select(n); },
      },
      s("rect", { width: NODE_W, height: NODE_H, rx: 6, class: "node-box" }),
      s("rect", { width: 5, height: NODE_H, rx: 2, class: "node-risk" }),
      s("text", { x: 11, y: 14, class: "node-label" }, clip(label, 18)),
      s("text", { x: 11, y: 27, class: "node-type" }, clip([n.type ? typeName(n.type) : null, n.vendor].filter(Boolean).join(" · "), 22)),
      s("title", null, `${label}\n${text(n.type)} · ${text(n.vendor)} · ${levelName(n.level)}${risk !== null ? ` · risk ${risk}` : ""}`));
      nodeLayer.append(g);
    }
    world.append(nodeLayer);
  }

  function select(n) {
    selected = n;
    draw();
    if (!n) { replace(info, h("p", { class: "muted" }, "Select a device to see its connections.")); return; }
    const links = edges.filter((e) => e.source === n.id || e.target === n.id);
    replace(info,
      h("h3", null, n.label),
      h("p", null, `${typeName(n.type)} · ${text(n.vendor)} · ${levelName(n.level)}`),
      n.risk !== null && n.risk !== undefined ? h("p", null, `Risk score ${n.risk}`) : null,
      h("p", null, h("a", { href: link(`/devices/${n.id}`), class: "btn small" }, "Open device page")),
      h("h4", null, `${links.length} connection${links.length === 1 ? "" : "s"}`),
      h("ul", { class: "map-links" }, links.slice(0, 30).map((e) => {
        const peer = byId.get(e.source === n.id ? e.target : e.source);
        return h("li", null, e.source === n.id ? "→ " : "← ", h("a", { href: link(`/devices/${peer.id}`) }, peer.label), " ",
          (e.protocols.length ? e.protocols : ["?"]).map((p) => h("span", { class: "chip proto", "data-proto": p }, p)));
      })));
  }

  // pan and zoom: a drag starts only after the pointer moved a few pixels, so clicks reach the nodes
  let drag = null;
  let dragged = false;
  svg.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, id: e.pointerId }; dragged = false; });
  svg.addEventListener("pointermove", (e) => {
    if (!drag) return;
    if (!dragged && Math.hypot(e.clientX - drag.x, e.clientY - drag.y) < 4) return;
    if (!dragged) { dragged = true; svg.setPointerCapture(drag.id); }
    const scale = view.w / svg.clientWidth;
    view.x = drag.vx - (e.clientX - drag.x) * scale;
    view.y = drag.vy - (e.clientY - drag.y) * scale;
    applyView();
  });
  const endDrag = () => { drag = null; };
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);
  svg.addEventListener("click", (e) => { if (dragged) { e.stopPropagation(); dragged = false; } }, true);
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = svg.getBoundingClientRect();
    const cx = view.x + ((e.clientX - rect.left) / rect.width) * view.w;
    const cy = view.y + ((e.clientY - rect.top) / rect.height) * view.h;
    zoom(e.deltaY > 0 ? 1.15 : 1 / 1.15, cx, cy);
  }, { passive: false });
  svg.addEventListener("click", (e) => { if (!e.target.closest("g.node")) select(null); });

  const legend = h("div", { class: "legend", "aria-label": "Protocols" }, protocols.map((p) => {
    const box = h("input", { type: "checkbox", checked: true, "data-proto": p });
    box.addEventListener("change", () => { if (box.checked) hiddenProto.delete(p); else hiddenProto.add(p); draw(); });
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = protocolColour(p);
    return h("label", { class: "legend-item" }, box, swatch, p || "unrecognised");
  }));
  const levels = h("div", { class: "legend" }, lanes.map((lane) => {
    const box = h("input", { type: "checkbox", checked: true, "data-level": String(lane.level) });
    box.addEventListener("change", () => { if (box.checked) hiddenLevel.delete(String(lane.level)); else hiddenLevel.add(String(lane.level)); draw(); });
    return h("label", { class: "legend-item" }, box, levelName(lane.level));
  }));
  const find = h("input", { type: "search", placeholder: "Highlight devices…", "aria-label": "Highlight devices" });
  find.addEventListener("input", () => { search = find.value.trim(); draw(); });

  draw();
  return h("div", { class: "map-page" },
    pageHeader("Network map",
      h("span", { class: "muted" }, `${nodes.length} devices · ${edges.length} links${graph.truncated ? " (truncated: the busiest devices only)" : ""}`),
      h("button", { class: "btn small", type: "button", onclick: () => zoom(1 / 1.3), "aria-label": "Zoom in" }, "+"),
      h("button", { class: "btn small", type: "button", onclick: () => zoom(1.3), "aria-label": "Zoom out" }, "−"),
      h("button", { class: "btn small", type: "button", onclick: reset }, "Fit")),
    h("div", { class: "map-layout" },
      card(null, h("div", { class: "map-canvas" }, svg)),
      h("aside", { class: "map-side" },
        card("Find", find),
        card("Levels", levels),
        card("Protocols", legend),
        card("Selection", info))));
}
