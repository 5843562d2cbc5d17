// Query building shared by list pages: filter and sort parameters are named as the API's OpenAPI
// document names them (feature-detected), so the UI follows the API rather than guessing.

import * as api from "./api.js";

/** Query parameters for a Page endpoint: limit/offset, sort (with `order` or a "-" prefix). */
export function pageQuery(opId, { limit, offset, sort, order }) {
  const q = { limit, offset };
  if (sort) {
    const sortName = api.param(opId, "sort", "order_by", "sort_by");
    const orderName = api.param(opId, "order", "direction", "dir");
    if (sortName && orderName) { q[sortName] = sort; q[orderName] = order; }
    else if (sortName) q[sortName] = order === "desc" ? `-${sort}` : sort;
  }
  return q;
}

/** Put `value` into `query` under the first parameter name the API knows among `candidates`. */
export function filter(query, opId, value, ...candidates) {
  if (value === undefined || value === null || value === "") return query;
  const name = api.param(opId, ...candidates);
  if (name) query[name] = value;
  return query;
}

export function supports(opId, ...candidates) { return api.param(opId, ...candidates) !== null; }

/** `key` when the list endpoint can sort by it (its `sort` parameter's enum lists it), else null. */
export function sortable(opId, key) {
  const name = api.param(opId, "sort", "order_by", "sort_by");
  if (!name) return null;
  const values = api.paramEnum(opId, name);
  return !values || values.includes(key) ? key : null;
}
