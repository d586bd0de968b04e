// Calls to the server: the API key as a header (never in a URL), errors as the API words them,
// and each answer's time split by the server's Server-Timing header.

const KEY_STORE = "mobilenet-serve.api-key";

// Kept for the tab's life only: a key in localStorage would outlive the visit on a shared machine.
export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

// Server-Timing: `name;dur=1.2;desc="..."` entries, comma-separated.
export function parseServerTiming(header) {
  const stages = {};
  for (const entry of (header || "").split(",")) {
    const [name, ...params] = entry.trim().split(";");
    const duration = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && duration) stages[name.trim()] = Number(duration.slice(4));
  }
  return stages;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let code;
  try {
    const body = await response.json();
    const error = body.error ?? body;
    if (typeof error === "string") message = error;
    else if (error && error.message) ({ message, code } = error);
    else if (body.detail) message = JSON.stringify(body.detail);
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is.
  }
  return new ApiError(response.status, message, code);
}

export async function getJson(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// POST one image as the raw body. Returns the decoded body, the server's stages, and the time seen here.
export async function postImage(path, params, image, as = "json") {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null));
  const url = query.size ? `${path}?${query}` : path;
  const started = performance.now();
  const response = await fetch(url, {
    method: "POST",
    headers: headers({ "Content-Type": image.type || "application/octet-stream" }),
    body: image,
  });
  if (!response.ok) throw await failure(response);
  const body = as === "json" ? await response.json() : await response.blob();
  return {
    body,
    // A binary answer (a mask) names its model and size in headers instead of a JSON body.
    model: response.headers.get("X-Model"),
    resolution: response.headers.get("X-Resolution"),
    stages: parseServerTiming(response.headers.get("Server-Timing")),
    clientMs: performance.now() - started,
  };
}
