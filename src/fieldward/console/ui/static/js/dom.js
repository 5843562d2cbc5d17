// Tiny DOM helpers. Every string becomes a text node or an attribute value: nothing here parses HTML,
// so a hostile host name such as `<img src=x onerror=alert(1)>` is shown as the text it is.

const SVG_NS = "http://www.w3.org/2000/svg";
const SAFE_URL = /^(\/|#|\?|blob:)/;

function setProps(el, props) {
  if (!props) return;
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value" && "value" in el) el.value = String(value);
    else if (key === "checked" || key === "selected" || key === "disabled") el[key] = Boolean(value);
    else if ((key === "href" || key === "src" || key === "action") && !SAFE_URL.test(String(value))) continue;
    else if (key === "style") continue; // inline styles are refused by the CSP; use classes
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false || child === true) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("a", {href: "/devices/1", class: "x"}, "text", otherNode). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

/** An SVG element (attributes only; text children are text nodes). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  if (attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

// ---- formatting (all return plain strings) ----

export function fmtTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, " UTC");
}

/** A compact time for tables: "2026-01-01 00:03" (UTC; the full time is in the title). */
export function fmtShort(value) {
  if (!value) return h("span", { class: "muted" }, "—");
  const full = fmtTime(value);
  return h("time", { datetime: String(value), title: full }, full.slice(0, 16));
}

export function fmtNumber(value) {
  if (value === null || value === undefined || value === "") return "—";
  const n = Number(value);
  return Number.isFinite(n) ? n.toLocaleString("en-US") : String(value);
}

export function fmtBytes(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return "—";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let x = n;
  while (x >= 1000 && i < units.length - 1) { x /= 1000; i += 1; }
  return `${i ? x.toFixed(1) : x} ${units[i]}`;
}

export function fmtPercent(value) {
  const n = Number(value);
  return Number.isFinite(n) ? `${Math.round(n * 100)}%` : "—";
}

export function text(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (Array.isArray(value)) return value.length ? value.map(text).join(", ") : "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

const LEVELS = {
  0: "L0 Process", 1: "L1 Control", 2: "L2 Supervisory", 3: "L3 Operations",
  3.5: "L3.5 DMZ", 4: "L4 Enterprise", 5: "L5 Internet",
};
export function levelShort(level) {
  if (level === null || level === undefined) return h("span", { class: "muted", title: "Purdue level unknown" }, "?");
  return h("span", { class: "level-tag", title: levelName(level) }, `L${level}`);
}

export function levelName(level) {
  if (level === null || level === undefined) return "Unknown";
  return LEVELS[level] ?? `L${level}`;
}

const ACRONYMS = new Set(["plc", "hmi", "rtu", "iot", "it", "ot", "ip", "ied", "scada", "dcs", "ups", "nvr", "vpn"]);
/** A device type for people: "iot_sensor" -> "IoT sensor", "plc" -> "PLC". */
export function typeName(type) {
  if (!type) return "—";
  const words = String(type).split(/[_\s]+/).map((w) => (w === "iot" ? "IoT" : w === "io" ? "I/O" : ACRONYMS.has(w) ? w.toUpperCase() : w));
  const first = words[0] || "";
  words[0] = first === first.toLowerCase() ? first.charAt(0).toUpperCase() + first.slice(1) : first;
  return words.join(" ");
}

export function severityBadge(severity) {
  const sev = String(severity || "none").toLowerCase();
  const known = ["critical", "high", "medium", "low", "info", "none"].includes(sev) ? sev : "none";
  return h("span", { class: ["badge", `sev-${known}`] }, sev);
}

export function statusBadge(status) {
  const st = String(status || "").toLowerCase();
  const known = ["new", "acknowledged", "closed"].includes(st) ? st : "other";
  return h("span", { class: ["badge", `st-${known}`] }, st || "—");
}

export function confidenceBar(conf) {
  const n = Math.max(0, Math.min(1, Number(conf) || 0));
  const bar = h("span", { class: "conf", title: `confidence ${Math.round(n * 100)}%` },
    h("span", { class: ["conf-fill", n >= 0.8 ? "hi" : n >= 0.5 ? "mid" : "lo"] }));
  // Width through the CSSOM (allowed by the CSP, unlike a style attribute).
  bar.firstChild.style.width = `${Math.round(n * 100)}%`;
  return h("span", { class: "conf-wrap" }, bar, h("span", { class: "conf-num" }, `${Math.round(n * 100)}%`));
}

export function debounce(fn, ms = 250) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}
