// The application shell: boot (read the API description, find the user), the sidebar, login/logout and
// the session-expiry handling; pages live in ./pages/.

import { h, replace } from "./dom.js";
import * as api from "./api.js";
import { route, start, navigate, currentPath, render, link } from "./router.js";
import { session, can } from "./session.js";
import { toast } from "./components.js";
import { loginPage } from "./pages/login.js";
import { dashboardPage } from "./pages/dashboard.js";
import { inventoryPage } from "./pages/inventory.js";
import { devicePage } from "./pages/device.js";
import { mapPage } from "./pages/map.js";
import { alertsPage } from "./pages/alerts.js";
import { vulnsPage } from "./pages/vulns.js";
import { sensorsPage } from "./pages/sensors.js";
import { settingsPage } from "./pages/settings.js";
import { uploadPage } from "./pages/upload.js";

const app = document.getElementById("app");
let pendingPath = null;
let expiredNote = null;

const NAV = [
  ["/", "Dashboard", "dashboard"],
  ["/devices", "Inventory", "inventory"],
  ["/map", "Network map", "map"],
  ["/alerts", "Alerts", "alerts"],
  ["/vulnerabilities", "Vulnerabilities & risk", "vulns"],
  ["/sensors", "Sensors", "sensors"],
  ["/upload", "Upload", "upload"],
  ["/settings", "Settings", "settings"],
];

route("/login", () => null);
route("/", dashboardPage);
route("/devices", inventoryPage);
route("/devices/:id", devicePage);
route("/map", mapPage);
route("/alerts", alertsPage);
route("/alerts/:id", alertsPage);
route("/vulnerabilities", vulnsPage);
route("/sensors", sensorsPage);
route("/upload", uploadPage);
route("/settings", settingsPage);

async function logout() {
  try { await api.call("auth_logout", { quiet401: true }); } catch { /* the session may be gone already */ }
  api.setCsrf(null);
  session.user = null;
  pendingPath = null;
  navigate("/login", { replace: true });
}

function shell(active, content) {
  const user = session.user;
  return h("div", { class: "layout" },
    h("nav", { class: "sidebar", "aria-label": "Main" },
      h("a", { class: "brand", href: link("/") }, h("img", { src: `${document.querySelector('meta[name="fieldward-assets"]').content}/img/logo.svg`, alt: "" }), h("span", null, "FieldWard")),
      h("ul", null, NAV.map(([path, label, key]) => h("li", null,
        h("a", { href: link(path), class: key === active ? "active" : null, "aria-current": key === active ? "page" : null, "data-nav": key }, label))))),
    h("div", { class: "main" },
      h("header", { class: "topbar" },
        h("span", { class: "spacer" }),
        h("span", { class: "whoami", "data-testid": "whoami" }, user.username, " ", h("span", { class: ["badge", "role"] }, user.role)),
        h("button", { class: "btn small", type: "button", id: "logout", onclick: logout }, "Log out")),
      h("main", { id: "content" }, content)));
}

async function onRoute(m, query) {
  if (!m) {
    replace(app, shell(null, h("div", { class: "card" }, h("h1", null, "Page not found"), h("p", null, h("a", { href: link("/") }, "Back to the dashboard")))));
    return;
  }
  if (m.path === "/login" || !session.user) {
    if (m.path !== "/login") pendingPath = `${m.path}${location.search}`;
    if (m.path !== "/login") history.replaceState(null, "", link("/login"));
    replace(app, loginPage({
      note: expiredNote,
      onLoggedIn: (user, csrf) => {
        session.user = user;
        api.setCsrf(csrf);
        expiredNote = null;
        const target = pendingPath && !pendingPath.startsWith("/login") ? pendingPath : "/";
        pendingPath = null;
        navigate(target, { replace: true });
      },
    }));
    return;
  }
  const key = { "/": "dashboard", "/map": "map", "/sensors": "sensors", "/settings": "settings", "/vulnerabilities": "vulns", "/upload": "upload" }[m.route.pattern]
    ?? (m.route.pattern.startsWith("/devices") ? "inventory" : m.route.pattern.startsWith("/alerts") ? "alerts" : null);
  const content = h("div", { class: "page" });
  replace(app, shell(key, content));
  try {
    const node = await m.route.page(m.params, query, { can });
    if (node) replace(content, node);
  } catch (err) {
    replace(content, h("div", { class: "alert-box error", role: "alert" }, String(err.message || err)));
  }
}

window.addEventListener("fw:unauthorized", () => {
  if (!session.user) return;
  session.user = null;
  api.setCsrf(null);
  expiredNote = "Your session has expired. Log in again to continue.";
  pendingPath = `${currentPath()}${location.search}`;
  toast(expiredNote, "error");
  render();
});

async function boot() {
  await api.loadSpec();
  try {
    const me = await api.call("auth_me", { quiet401: true });
    session.user = me;
    if (me.csrf_token) api.setCsrf(me.csrf_token);
  } catch (err) {
    session.user = null;
    if (err.status !== 401) toast(`Cannot reach the console API: ${err.message}`, "error");
  }
  if (session.user && currentPath() === "/login") history.replaceState(null, "", link("/"));
  start(onRoute);
}

boot();
