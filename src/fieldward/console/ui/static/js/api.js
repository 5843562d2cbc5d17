// The REST client: finds endpoints by their stable operation id in /api/v1/openapi.json (so a page can ask
// whether an endpoint exists before showing it), sends the CSRF header on every state change and
// reports an expired session once, as the `fw:unauthorized` event.

const ROOT = document.querySelector('meta[name="fieldward-root"]')?.content ?? "";
const CSRF_KEY = "fieldward.csrf";

// The contract's paths (docs/console/api.md), used only when /openapi.json cannot be read.
const FALLBACK = {
  auth_login: ["POST", "/api/v1/auth/login"],
  auth_logout: ["POST", "/api/v1/auth/logout"],
  auth_me: ["GET", "/api/v1/auth/me"],
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

const state = { ops: null, specError: null, spec: null };

export function root() { return ROOT; }

export async function loadSpec() {
  try {
    let response = await fetch(`${ROOT}/api/v1/openapi.json`, { credentials: "same-origin" });
    if (response.status === 404) response = await fetch(`${ROOT}/openapi.json`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const spec = await response.json();
    const ops = new Map();
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const [method, op] of Object.entries(item)) {
        if (!op || typeof op !== "object" || !op.operationId) continue;
        ops.set(op.operationId, {
          method: method.toUpperCase(),
          path,
          params: (op.parameters || []).map((p) => ({ name: p.name, in: p.in, schema: p.schema || {} })),
          role: op["x-fieldward-role"] || null,
          body: op.requestBody?.content?.["application/json"]?.schema || null,
        });
      }
    }
    state.ops = ops;
    state.spec = spec;
  } catch (err) {
    state.ops = null;
    state.specError = err;
  }
}

/** The operation's description from the spec: exact id, or FastAPI's default `<id>_<path>_<method>`. */
export function op(id) {
  if (state.ops) {
    if (state.ops.has(id)) return state.ops.get(id);
    for (const [key, value] of state.ops) if (key.startsWith(`${id}_`) && key.includes("api_v1")) return value;
    return null;
  }
  const fb = FALLBACK[id];
  return fb ? { method: fb[0], path: fb[1], params: [], role: null } : null;
}

export function has(...ids) { return ids.every((id) => op(id) !== null); }

/** The name of the first query parameter of `id` among `candidates` (APIs name filters differently). */
export function param(id, ...candidates) {
  const o = op(id);
  if (!o) return null;
  const names = new Set(o.params.filter((p) => p.in === "query").map((p) => p.name));
  return candidates.find((c) => names.has(c)) ?? null;
}

/** Allowed values of a query parameter when the spec lists them (enum / Literal). */
export function paramEnum(id, name) {
  const p = op(id)?.params.find((x) => x.name === name);
  if (!p) return null;
  const schema = p.schema;
  const pick = (sch) => sch?.enum || (sch?.items && pick(sch.items)) || null;
  return pick(schema) || (schema.anyOf || []).map(pick).find(Boolean) || null;
}

function resolve(sch) {
  if (sch?.$ref) return schema(sch.$ref.split("/").pop());
  const alt = (sch?.anyOf || sch?.allOf || []).find((x) => x.$ref || x.properties);
  return alt ? resolve(alt) : sch;
}

/** Properties of an operation's JSON body (null when it takes none): {name: schema}, plus required. */
export function bodyFields(id) {
  const sch = resolve(op(id)?.body);
  if (!sch) return null;
  return { properties: sch.properties || {}, required: sch.required || [] };
}

/** A body for a triage action from a free-text note, in whichever field the API names it. */
export function noteBody(id, note) {
  const fields = bodyFields(id);
  if (!fields) return undefined;
  const name = ["note", "text", "comment", "reason"].find((n) => n in fields.properties);
  const body = {};
  if (name && (note || fields.required.includes(name))) body[name] = note || "";
  return body;
}

export function schema(name) { return state.spec?.components?.schemas?.[name] ?? null; }

export function csrf() { return localStorage.getItem(CSRF_KEY); }
export function setCsrf(token) {
  if (token) localStorage.setItem(CSRF_KEY, token);
  else localStorage.removeItem(CSRF_KEY);
}

/** The URL of operation `id` with its path parameters filled (null when the endpoint is absent). */
export function url(id, params = {}, query = {}) {
  const o = op(id);
  if (!o) return null;
  const used = new Set();
  const path = o.path.replace(/\{([^}]+)\}/g, (_, name) => {
    const value = params[name] ?? params.id;
    used.add(name);
    if (value === undefined || value === null) throw new Error(`missing path parameter ${name} for ${id}`);
    return encodeURIComponent(String(value));
  });
  const qs = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => qs.append(key, String(v)));
    else qs.append(key, String(value));
  }
  const q = qs.toString();
  return `${ROOT}${path}${q ? `?${q}` : ""}`;
}

/**
 * Call operation `id`: `await call("devices_list", {query: {limit: 50}})`.
 * Throws ApiError (status 0 for a network failure, 404 "not available" for an absent endpoint).
 */
export async function call(id, { params = {}, query = {}, body, quiet401 = false } = {}) {
  const o = op(id);
  if (!o) throw new ApiError(404, `${id} is not available on this console`);
  const headers = { Accept: "application/json" };
  const init = { method: o.method, headers, credentials: "same-origin" };
  if (o.method !== "GET" && o.method !== "HEAD") {
    const token = csrf();
    if (token) headers["X-CSRF-Token"] = token;
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url(id, params, query), init);
  } catch (err) {
    throw new ApiError(0, `the console cannot be reached (${err.message})`);
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    let detail = data && typeof data === "object" ? data.detail : data;
    if (Array.isArray(detail)) detail = detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    if (response.status === 401 && !quiet401) {
      window.dispatchEvent(new CustomEvent("fw:unauthorized", { detail: String(detail || "") }));
    }
    if (response.status === 429) {
      const retry = response.headers.get("retry-after");
      if (retry) detail = `${detail || "too many attempts"} (retry in ${retry} s)`;
    }
    throw new ApiError(response.status, typeof detail === "string" ? detail : `HTTP ${response.status}`);
  }
  return data;
}

/** The role an operation declares (`x-fieldward-role`), e.g. "analyst"; null when unknown. */
export function roleOf(id) { return op(id)?.role ?? null; }

/** POST files as multipart/form-data to operation `id` (field `field`), with the CSRF header. */
export async function upload(id, files, field = "files") {
  const o = op(id);
  if (!o) throw new ApiError(404, `${id} is not available on this console`);
  const form = new FormData();
  for (const file of files) form.append(field, file, file.name);
  const headers = { Accept: "application/json" };
  const token = csrf();
  if (token) headers["X-CSRF-Token"] = token;
  let response;
  try {
    response = await fetch(url(id), { method: o.method, headers, body: form, credentials: "same-origin" });
  } catch (err) {
    throw new ApiError(0, `the console cannot be reached (${err.message})`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new CustomEvent("fw:unauthorized"));
    throw new ApiError(response.status, (data && typeof data.detail === "string" && data.detail) || `HTTP ${response.status}`);
  }
  return data;
}
