// Calls to the semhash API: the API key (kept in sessionStorage only) and one message per error.

const KEY_STORAGE = "semhash.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

// Listeners told about every 401, so the page can open the key field.
const unauthorizedListeners = [];
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    // FastAPI's validation format: [{loc: ["body", "radius"], msg: "..."}, ...]
    return detail
      .map((item) => {
        const where = (item.loc || []).filter((part) => part !== "body" && part !== "query").join(".");
        // The API's own messages often name their field already ("radius must be at most 4").
        return where && !String(item.msg).startsWith(where) ? `${where}: ${item.msg}` : item.msg;
      })
      .join("; ");
  }
  return JSON.stringify(detail);
}

async function errorFrom(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    // not JSON (a proxy's page): fall back on the status text
  }
  const what = detail != null ? describeDetail(detail) : response.statusText || "no detail";
  const prefix = {
    401: "This server needs an API key (open “API key” at the top)",
    413: "Too large",
    415: "Unsupported content",
    422: "Invalid input",
    404: "Not found",
    503: "Not available",
  }[response.status];
  return new ApiError(response.status, prefix ? `${prefix}: ${what}` : `Error ${response.status}: ${what}`);
}

// One API call. `body` is sent as JSON unless it is FormData. Resolves to the parsed JSON (or null).
export async function api(method, path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, `Cannot reach the server (${err.message})`);
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401) unauthorizedListeners.forEach((listener) => listener(error));
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

export function collectionPath(name) {
  return `/v1/collections/${encodeURIComponent(name)}`;
}

// Show `message` in an error region (role=alert), or hide it when message is empty.
export function showError(element, message) {
  element.textContent = message || "";
  element.hidden = !message;
}

// The JSON schema of a request model from /openapi.json (fetched once), for the API's defaults.
let openapi = null;
export async function requestSchema(name) {
  if (openapi === null) openapi = api("GET", "/openapi.json");
  const spec = await openapi;
  return spec.components?.schemas?.[name] ?? null;
}

// Elements by id, with a clear failure when the page and the script disagree.
export function $(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`no element #${id}`);
  return element;
}
