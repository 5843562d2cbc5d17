// Upload: an analyst sends a capture (pcap, pcapng, optionally .gz); the console analyses it in the
// background and stores the devices, alerts, flows and events under a sensor name. The page shows the
// upload's progress, then polls the job until it is done (with a link to the inventory) or failed.
// Text is set through dom.h (text nodes) only.

import { h, replace, fmtNumber, fmtBytes } from "../dom.js";
import * as api from "../api.js";
import { card, pageHeader, notAvailable, kv } from "../components.js";
import { link } from "../router.js";
import { can } from "../session.js";

const ACCEPT = ".pcap,.pcapng,.cap,.gz";
const POLL_MS = 1000;

/** POST the form with XMLHttpRequest (fetch has no upload progress); resolves with the JSON answer. */
function send(form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", api.url("uploads_create"));
    xhr.setRequestHeader("Accept", "application/json");
    const token = api.csrf();
    if (token) xhr.setRequestHeader("X-CSRF-Token", token);
    xhr.withCredentials = true;
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
    xhr.addEventListener("load", () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) { resolve(data); return; }
      if (xhr.status === 401) window.dispatchEvent(new CustomEvent("fw:unauthorized"));
      const detail = data && typeof data.detail === "string" ? data.detail
        : data && Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : `HTTP ${xhr.status}`;
      reject(new api.ApiError(xhr.status, detail));
    });
    xhr.addEventListener("error", () => reject(new api.ApiError(0, "the console cannot be reached")));
    xhr.send(form);
  });
}

function statusBadge(status) {
  const cls = { done: "ok", failed: "sev-critical", running: "warn", queued: "st-other" }[status] || "st-other";
  return h("span", { class: ["badge", cls], "data-testid": "upload-status" }, status);
}

export function uploadPage() {
  if (!api.has("uploads_create", "uploads_get")) return h("div", null, pageHeader("Upload"), notAvailable("Capture upload"));
  if (!can("analyst")) {
    return h("div", null, pageHeader("Upload"),
      card(null, h("p", { class: "muted" }, "Uploading captures needs the analyst role.")));
  }
  const file = h("input", { type: "file", id: "upload-file", name: "file", accept: ACCEPT, required: true });
  const sensor = h("input", { id: "upload-sensor", name: "sensor", value: "upload", maxlength: "64", required: true });
  const submit = h("button", { type: "submit", class: "btn primary", id: "upload-submit" }, "Upload and analyse");
  const progress = h("progress", { max: "100", value: "0", hidden: true, id: "upload-progress" });
  const result = h("div", { id: "upload-result", "aria-live": "polite" });
  let timer = null;

  function show(job) {
    const rows = [
      ["File", `${job.filename} (${fmtBytes(job.size)})`],
      ["Sensor", job.sensor],
      ["Status", statusBadge(job.status)],
    ];
    for (const [kind, n] of Object.entries(job.counts || {})) rows.push([kind.replace(/_/g, " "), fmtNumber(n)]);
    const parts = [kv(rows)];
    if (job.status === "failed") parts.push(h("div", { class: "alert-box error", role: "alert", "data-testid": "upload-error" }, job.error || "The analysis failed."));
    if (job.status === "done") parts.push(h("p", null, h("a", { href: link("/devices"), class: "btn", "data-testid": "upload-inventory" }, "Open the inventory")));
    if (job.status === "queued" || job.status === "running") parts.push(h("p", { class: "muted" }, "Analysing… this page updates by itself."));
    replace(result, card("Analysis", ...parts));
  }

  async function poll(id) {
    if (!result.isConnected) return; // the user left the page
    try {
      const job = await api.call("uploads_get", { params: { upload_id: id } });
      show(job);
      if (job.status === "queued" || job.status === "running") timer = setTimeout(() => poll(id), POLL_MS);
      else submit.disabled = false;
    } catch (err) {
      replace(result, h("div", { class: "alert-box error", role: "alert" }, err.message));
      submit.disabled = false;
    }
  }

  const form = h("form", { class: "upload-form", "aria-label": "Upload a capture" },
    h("label", { class: "field", for: "upload-file" }, h("span", null, "Capture"), file,
      h("small", null, "pcap or pcapng, optionally gzip-compressed (.gz)")),
    h("label", { class: "field", for: "upload-sensor" }, h("span", null, "Store as sensor"), sensor,
      h("small", null, "The results appear in the inventory under this sensor name.")),
    submit, progress);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    if (timer) clearTimeout(timer);
    submit.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    replace(result);
    const body = new FormData();
    body.append("file", file.files[0], file.files[0].name);
    body.append("sensor", sensor.value.trim() || "upload");
    try {
      const job = await send(body, (loaded, total) => { progress.value = Math.round((100 * loaded) / total); });
      progress.value = 100;
      show(job);
      timer = setTimeout(() => poll(job.id), POLL_MS);
    } catch (err) {
      replace(result, h("div", { class: "alert-box error", role: "alert", "data-testid": "upload-error" }, err.message));
      submit.disabled = false;
    } finally {
      progress.hidden = true;
    }
  });
  return h("div", null, pageHeader("Upload"), card("Analyse a capture", form), result);
}
