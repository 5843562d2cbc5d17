// Client-side routing on the History API: the server answers every UI path with index.html.

import { root } from "./api.js";

const routes = [];
let current = null;
let onRoute = null;

/** Register a page: pattern like "/devices/:id" and a render(params, query) returning a Node. */
export function route(pattern, page) {
  const names = [];
  const regex = new RegExp(`^${pattern.replace(/\/:([a-z_]+)/g, (_, n) => { names.push(n); return "/([^/]+)"; })}/?$`);
  routes.push({ pattern, regex, names, page });
}

export function match(pathname) {
  const path = pathname.startsWith(root()) ? pathname.slice(root().length) || "/" : pathname;
  for (const r of routes) {
    const m = r.regex.exec(path);
    if (m) {
      const params = {};
      r.names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      return { route: r, params, path };
    }
  }
  return null;
}

export function currentPath() {
  const p = location.pathname;
  return p.startsWith(root()) ? p.slice(root().length) || "/" : p;
}

export function navigate(path, { replace = false } = {}) {
  const target = `${root()}${path}`;
  if (replace) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  return render();
}

/** Change only the query string (filters, paging) without a new history entry. */
export function setQuery(query) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") qs.set(k, String(v));
  const s = qs.toString();
  history.replaceState(null, "", `${location.pathname}${s ? `?${s}` : ""}`);
}

export function render() {
  current = match(location.pathname);
  return onRoute ? onRoute(current, new URLSearchParams(location.search)) : undefined;
}

export function start(handler) {
  onRoute = handler;
  window.addEventListener("popstate", render);
  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const a = event.target.closest("a");
    if (!a || a.target || a.hasAttribute("download") || a.dataset.external !== undefined) return;
    const href = a.getAttribute("href");
    if (!href || !href.startsWith("/") || href.startsWith(`${root()}/api/`)) return;
    event.preventDefault();
    const stripped = href.startsWith(root()) ? href.slice(root().length) : href;
    navigate(stripped);
  });
  return render();
}

/** A link to a UI path (the root path is prepended). */
export function link(path) { return `${root()}${path}`; }
