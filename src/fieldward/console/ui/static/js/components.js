// Small reusable widgets: toasts, cards, data tables with server-side sort and paging, SVG charts,
// confirmation dialogs. All text goes through dom.h (text nodes), never innerHTML.

import { h, s, clear, replace, fmtNumber } from "./dom.js";

export function toast(message, kind = "info") {
  let box = document.getElementById("toasts");
  if (!box) { box = h("div", { id: "toasts", role: "status" }); document.body.append(box); }
  const t = h("div", { class: ["toast", `toast-${kind}`] }, message);
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

export function errorBox(err) {
  return h("div", { class: "alert-box error", role: "alert" }, String(err?.message || err));
}

export function notAvailable(what) {
  return h("div", { class: "unavailable" },
    h("strong", null, "Not available"),
    h("p", null, `${what} is not provided by this console's API yet.`));
}

export function card(title, ...body) {
  return h("section", { class: "card" }, title ? h("h2", { class: "card-title" }, title) : null, ...body);
}

export function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

export function loading() { return h("div", { class: "loading" }, "Loading…"); }

export function pageHeader(title, ...extra) {
  return h("header", { class: "page-header" }, h("h1", null, title), h("div", { class: "page-actions" }, ...extra));
}

/** A modal dialog; resolves with the form's values or null on cancel. */
export function dialog(title, fields, submitLabel = "Save") {
  return new Promise((resolve) => {
    const inputs = {};
    const form = h("form", { class: "dialog-form" },
      h("h2", null, title),
      fields.map((f) => {
        let input;
        if (f.type === "select") {
          input = h("select", { name: f.name }, f.options.map(([v, label]) => h("option", { value: v, selected: v === f.value }, label)));
        } else if (f.type === "textarea") {
          input = h("textarea", { name: f.name, rows: 4, required: f.required }, f.value || "");
        } else if (f.type === "checkbox") {
          input = h("input", { type: "checkbox", name: f.name, checked: f.value });
        } else {
          input = h("input", { type: f.type || "text", name: f.name, value: f.value ?? "", required: f.required, minlength: f.minlength, autocomplete: "off" });
        }
        inputs[f.name] = input;
        if (f.type === "checkbox") return h("label", { class: "field check" }, input, h("span", null, f.label));
        return h("label", { class: "field" }, h("span", null, f.label), input, f.help ? h("small", null, f.help) : null);
      }),
      h("div", { class: "dialog-actions" },
        h("button", { type: "button", class: "btn", onclick: () => close(null) }, "Cancel"),
        h("button", { type: "submit", class: "btn primary" }, submitLabel)));
    const overlay = h("div", { class: "overlay", role: "dialog", "aria-modal": "true" }, form);
    function close(value) { overlay.remove(); resolve(value); }
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const values = {};
      for (const [name, input] of Object.entries(inputs)) values[name] = input.type === "checkbox" ? input.checked : input.value;
      close(values);
    });
    overlay.addEventListener("keydown", (e) => { if (e.key === "Escape") close(null); });
    document.body.append(overlay);
    (Object.values(inputs)[0] || form.querySelector("button.primary"))?.focus();
  });
}

/** Show a secret once (API token, sensor credential) with a copy button. */
export function showSecret(title, secret, note) {
  const code = h("code", { class: "secret" }, secret);
  const overlay = h("div", { class: "overlay", role: "dialog", "aria-modal": "true" },
    h("div", { class: "dialog-form" },
      h("h2", null, title),
      h("p", null, note),
      code,
      h("div", { class: "dialog-actions" },
        h("button", { class: "btn", type: "button", onclick: () => navigator.clipboard?.writeText(secret).then(() => toast("Copied")) }, "Copy"),
        h("button", { class: "btn primary", type: "button", onclick: () => overlay.remove() }, "Done"))));
  document.body.append(overlay);
}

/**
 * A table whose sorting and paging run on the server.
 * columns: [{key, label, sort: "api sort key" | null, render: (row) => Node|string, cls}]
 * load({limit, offset, sort, order}) -> Page {items, total, limit, offset}
 */
export function dataTable({ columns, load, pageSize = 50, sort = null, order = "asc", onRow = null, empty = "Nothing to show", onState = null, offset = 0 }) {
  const st = { sort, order, offset, limit: pageSize, total: 0 };
  const tbody = h("tbody");
  const info = h("span", { class: "page-info" });
  const prev = h("button", { class: "btn small", type: "button", onclick: () => { st.offset = Math.max(0, st.offset - st.limit); refresh(); } }, "‹ Prev");
  const next = h("button", { class: "btn small", type: "button", onclick: () => { st.offset += st.limit; refresh(); } }, "Next ›");
  const heads = columns.map((c) => {
    const th = h("th", { class: [c.cls, c.sort ? "sortable" : null], scope: "col" }, c.label);
    if (c.sort) {
      th.tabIndex = 0;
      const activate = () => {
        if (st.sort === c.sort) st.order = st.order === "asc" ? "desc" : "asc";
        else { st.sort = c.sort; st.order = c.defaultOrder || "asc"; }
        st.offset = 0;
        refresh();
      };
      th.addEventListener("click", activate);
      th.addEventListener("keydown", (e) => { if (e.key === "Enter") activate(); });
    }
    return th;
  });
  const table = h("table", { class: "data" }, h("thead", null, h("tr", null, heads)), tbody);
  const root = h("div", { class: "table-wrap" }, table, h("div", { class: "pager" }, prev, info, next));
  let seq = 0;
  async function refresh() {
    const mine = ++seq;
    heads.forEach((th, i) => {
      th.classList.toggle("sorted-asc", columns[i].sort === st.sort && st.order === "asc");
      th.classList.toggle("sorted-desc", columns[i].sort === st.sort && st.order === "desc");
      if (columns[i].sort) th.setAttribute("aria-sort", columns[i].sort === st.sort ? (st.order === "asc" ? "ascending" : "descending") : "none");
    });
    tbody.classList.add("busy");
    root.dataset.state = "loading";
    try {
      const page = await load({ limit: st.limit, offset: st.offset, sort: st.sort, order: st.order });
      if (mine !== seq) return;
      st.total = page.total ?? page.items.length;
      clear(tbody);
      if (!page.items.length) tbody.append(h("tr", null, h("td", { colspan: columns.length, class: "empty" }, empty)));
      for (const row of page.items) {
        const tr = h("tr", { class: onRow ? "clickable" : null }, columns.map((c) => h("td", { class: c.cls }, c.render ? c.render(row) : (row[c.key] ?? "—"))));
        if (onRow) {
          tr.tabIndex = 0;
          tr.addEventListener("click", (e) => { if (!e.target.closest("a,button,input,select")) onRow(row, tr); });
          tr.addEventListener("keydown", (e) => { if (e.key === "Enter") onRow(row, tr); });
        }
        tbody.append(tr);
      }
      const first = st.total ? st.offset + 1 : 0;
      const last = Math.min(st.offset + st.limit, st.total);
      replace(info, `${fmtNumber(first)}–${fmtNumber(last)} of ${page.total_capped ? "more than " : ""}${fmtNumber(st.total)}`);
      prev.disabled = st.offset <= 0;
      next.disabled = st.offset + st.limit >= st.total;
      root.dataset.state = "ready";
      onState?.({ ...st });
    } catch (err) {
      if (mine !== seq) return;
      clear(tbody);
      tbody.append(h("tr", null, h("td", { colspan: columns.length, class: "empty error" }, String(err.message || err))));
      root.dataset.state = "error";
    } finally {
      tbody.classList.remove("busy");
    }
  }
  root.refresh = (reset = false) => { if (reset) st.offset = 0; return refresh(); };
  root.state = st;
  return root;
}

/** Horizontal bar chart: items [{label, value, cls, href}] */
export function barChart(items, { unit = "" } = {}) {
  const max = Math.max(1, ...items.map((i) => i.value));
  return h("div", { class: "bars" }, items.map((i) => {
    const fill = h("span", { class: ["bar-fill", i.cls] });
    fill.style.width = `${(100 * i.value) / max}%`;
    const label = i.href ? h("a", { href: i.href }, i.label) : i.label;
    return h("div", { class: "bar-row" }, h("span", { class: "bar-label" }, label), h("span", { class: "bar-track" }, fill), h("span", { class: "bar-value" }, `${fmtNumber(i.value)}${unit}`));
  }));
}

/** A risk gauge (0-100) as SVG. */
export function gauge(score) {
  const n = Math.max(0, Math.min(100, Number(score) || 0));
  const angle = Math.PI * (1 - n / 100);
  const x = 60 + 48 * Math.cos(angle);
  const y = 60 - 48 * Math.sin(angle);
  const cls = n >= 70 ? "risk-high" : n >= 40 ? "risk-mid" : "risk-low";
  return s("svg", { viewBox: "0 0 120 72", class: "gauge", role: "img", "aria-label": `risk score ${n}` },
    s("path", { d: "M12 60 A48 48 0 0 1 108 60", class: "gauge-track" }),
    s("path", { d: `M12 60 A48 48 0 0 1 ${x.toFixed(2)} ${y.toFixed(2)}`, class: ["gauge-fill", cls] }),
    s("text", { x: 60, y: 58, "text-anchor": "middle", class: "gauge-text" }, String(n)));
}

/** A small line chart of [{t, v}] (risk trend). */
export function sparkline(points, { width = 320, height = 80, max = 100 } = {}) {
  if (points.length < 2) return null;
  const xs = points.map((p) => new Date(p.t).getTime());
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs) || x0 + 1;
  const px = (t) => 4 + ((width - 8) * (t - x0)) / Math.max(1, x1 - x0);
  const py = (v) => height - 4 - ((height - 8) * Math.min(max, v)) / max;
  const d = points.map((p, i) => `${i ? "L" : "M"}${px(xs[i]).toFixed(1)} ${py(p.v).toFixed(1)}`).join(" ");
  return s("svg", { viewBox: `0 0 ${width} ${height}`, class: "sparkline", role: "img", "aria-label": "risk trend" },
    s("path", { d, class: "spark-line" }),
    points.map((p, i) => s("circle", { cx: px(xs[i]).toFixed(1), cy: py(p.v).toFixed(1), r: 2.5, class: "spark-dot" }, s("title", null, `${p.t}: ${p.v}`))));
}

export function tabs(defs) {
  // defs: [{id, label, render: () => Node}]
  const body = h("div", { class: "tab-body" });
  const buttons = defs.map((d, i) => h("button", {
    type: "button", role: "tab", class: "tab", "aria-selected": i === 0 ? "true" : "false",
    onclick: () => select(i),
  }, d.label));
  function select(i) {
    buttons.forEach((b, j) => b.setAttribute("aria-selected", i === j ? "true" : "false"));
    replace(body, defs[i].render());
  }
  const root = h("div", { class: "tabs" }, h("div", { class: "tab-list", role: "tablist" }, buttons), body);
  select(0);
  return root;
}
export { debounce } from "./dom.js";
