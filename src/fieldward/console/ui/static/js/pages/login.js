// The login form: POST /api/v1/auth/login sets the HttpOnly session cookie and returns the CSRF token.

import { h, replace } from "../dom.js";
import * as api from "../api.js";

export function loginPage({ note, onLoggedIn }) {
  const message = h("div", { class: "login-message", role: "alert" });
  if (note) replace(message, h("div", { class: "alert-box warn" }, note));
  const username = h("input", { name: "username", id: "username", autocomplete: "username", required: true, autofocus: true });
  const password = h("input", { name: "password", id: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "btn primary wide" }, "Log in");
  const form = h("form", { class: "login-form", "aria-label": "Log in" },
    h("div", { class: "login-brand" }, h("img", { src: `${document.querySelector('meta[name="fieldward-assets"]').content}/img/logo.svg`, alt: "" }), h("span", null, "FieldWard")),
    h("p", { class: "muted" }, "IoT / OT network security console"),
    message,
    h("label", { class: "field", for: "username" }, h("span", null, "Username"), username),
    h("label", { class: "field", for: "password" }, h("span", null, "Password"), password),
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    replace(message);
    try {
      const result = await api.call("auth_login", { body: { username: username.value, password: password.value }, quiet401: true });
      password.value = "";
      onLoggedIn(result.user, result.csrf_token);
    } catch (err) {
      replace(message, h("div", { class: "alert-box error" }, err.status === 401 ? "Invalid username or password." : err.message));
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  return h("div", { class: "login-screen" }, form);
}
