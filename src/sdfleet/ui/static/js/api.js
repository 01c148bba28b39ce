// The public JSON API, and nothing else: fetch with the stored API key, one error type for the
// `{"error": {"code", "message", "field"}}` envelope, event streams read with fetch (the key in a
// header, never in a URL), and images.

const KEY_STORAGE = "sdfleet.apiKey";

/** The API root: the page lives at <root>/ui/, so the API is one level up (proxy prefixes survive). */
export const API_ROOT = new URL("../", document.baseURI);

/** An error the API answered with (or a network failure, status 0). */
export class ApiError extends Error {
  constructor(status, code, message, field = null, details = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.details = details;
  }

  /** "message (field: params.width)" — what a person reads. */
  get text() {
    return this.field && !this.message.includes(this.field)
      ? `${this.message} (field: ${this.field})`
      : this.message;
  }
}

export const auth = {
  get key() {
    return localStorage.getItem(KEY_STORAGE) || "";
  },
  set(key) {
    if (key) localStorage.setItem(KEY_STORAGE, key.trim());
    else localStorage.removeItem(KEY_STORAGE);
    window.dispatchEvent(new CustomEvent("sdfleet:key-changed"));
  },
};

/** Absolute URL of an API path ("v1/jobs") with query parameters (arrays repeat the key). */
export function apiUrl(path, query = {}) {
  const url = new URL(path.replace(/^\//, ""), API_ROOT);
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) url.searchParams.append(key, v);
  }
  return url;
}

function headers(extra = {}) {
  const result = { accept: "application/json", ...extra };
  if (auth.key) result.authorization = `Bearer ${auth.key}`;
  return result;
}

/**
 * Call the API: `api("v1/jobs", {method: "POST", body: {...}})`. Resolves to the parsed JSON (null
 * for an empty body); rejects with an ApiError. A 401 also fires `sdfleet:auth-required` so the
 * page can ask for a key.
 */
export async function api(path, { method = "GET", body, query, signal } = {}) {
  let response;
  try {
    response = await fetch(apiUrl(path, query), {
      method,
      signal,
      headers: headers(body === undefined ? {} : { "content-type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "the server cannot be reached — is sdfleet running?");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.ok) return data;
  const error = errorParts(data);
  const apiError = new ApiError(
    response.status,
    error.code || `http_${response.status}`,
    error.message || `${response.status} ${response.statusText || "error"}`.trim(),
    error.field || null,
    error.details || null,
  );
  if (response.status === 401) {
    window.dispatchEvent(new CustomEvent("sdfleet:auth-required", { detail: apiError }));
  }
  throw apiError;
}

const LOCATION_PARTS = new Set(["body", "query", "path", "header"]);

/**
 * {code, message, field, details} of an error body in any of the envelopes the server answers:
 * its own `{"error": {"code", "message", "field"}}`; A1111's `{"error": "<class>", "detail": "field:
 * message"}` (the /sdapi routes — the field is the message's prefix, e.g. `script_args.3: line 1: …`);
 * FastAPI's 422 `{"detail": [{"loc", "msg"}]}`.
 */
export function errorParts(data) {
  if (!data || typeof data !== "object") return {};
  if (data.error && typeof data.error === "object") return data.error;
  if (typeof data.detail === "string") {
    const named = /^([A-Za-z_]\w*(?:\.\w+)*): \S/.exec(data.detail);
    return { code: typeof data.error === "string" ? data.error : null, message: data.detail, field: named ? named[1] : null };
  }
  if (Array.isArray(data.detail) && data.detail.length) {
    const first = data.detail[0] || {};
    const field = (first.loc || []).filter((p) => !LOCATION_PARTS.has(p)).join(".") || null;
    return { code: "invalid_request", message: field ? `${field}: ${first.msg}` : String(first.msg || "invalid request"), field };
  }
  return {};
}

const eventsPath = (jobId) => `v1/jobs/${encodeURIComponent(jobId)}/events`;
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });

/**
 * Follow a job's server-sent events with `fetch` — the key goes in the Authorization header, never in
 * the URL (EventSource cannot send headers). `onEvent({type, id, data})` is called per event. A dropped
 * connection is reopened with `Last-Event-ID`, so the stream resumes after the last event seen. It ends
 * after "finished" (`onEnd(null)`), or when the server refuses it (`onEnd(ApiError)`; a 401 also fires
 * `sdfleet:auth-required`). Returns `{close()}`, which ends it without calling `onEnd`.
 */
export function streamEvents(jobId, { onEvent, onEnd = () => {} }) {
  const abort = new AbortController();
  let lastId = null;
  let ended = false;
  const end = (error) => {
    if (ended) return;
    ended = true;
    abort.abort();
    onEnd(error);
  };
  (async () => {
    let delay = 500;
    while (!ended) {
      let response;
      try {
        const extra = { accept: "text/event-stream" };
        if (lastId) extra["last-event-id"] = lastId;
        response = await fetch(apiUrl(eventsPath(jobId)), { headers: headers(extra), signal: abort.signal, cache: "no-store" });
      } catch (err) {
        if (ended || err.name === "AbortError") return;
        await sleep(delay, abort.signal); // the server is away: try again, a little later each time
        delay = Math.min(2 * delay, 10_000);
        continue;
      }
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        const error = new ApiError(response.status, body?.error?.code || `http_${response.status}`, body?.error?.message || "the event stream was refused");
        if (response.status === 401) window.dispatchEvent(new CustomEvent("sdfleet:auth-required", { detail: error }));
        end(error);
        return;
      }
      delay = 500;
      try {
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = (buffer + value).replace(/\r\n?/g, "\n");
          const cut = buffer.lastIndexOf("\n\n");
          if (cut < 0) continue;
          const complete = buffer.slice(0, cut + 2);
          buffer = buffer.slice(cut + 2);
          for (const event of parseEventStream(complete)) {
            if (event.id) lastId = event.id;
            onEvent(event);
            if (event.type === "finished") {
              end(null);
              return;
            }
          }
        }
      } catch (err) {
        if (ended || err.name === "AbortError") return;
      }
      await sleep(delay, abort.signal); // ended without "finished" (a restart, a proxy): resume
    }
  })();
  return {
    close() {
      ended = true;
      abort.abort();
    },
  };
}

/**
 * The first event of `type` in a job's stream (its history is replayed first, so for anything that
 * already happened this returns at once); null if it does not come within `timeoutMs`.
 */
export async function firstEvent(jobId, type, timeoutMs = 3000) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch(apiUrl(eventsPath(jobId)), {
      headers: headers({ accept: "text/event-stream" }),
      signal: abort.signal,
    });
    if (!response.ok) return null;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      const found = parseEventStream(text.slice(0, text.lastIndexOf("\n\n") + 2)).find((e) => e.type === type);
      if (found) return found;
    }
    return parseEventStream(text).find((e) => e.type === type) ?? null;
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
}

/** Parse text/event-stream into [{type, id, data}] (comments and keep-alives dropped). */
export function parseEventStream(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let type = "message";
    let id = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "id") id = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) continue;
    try {
      events.push({ type, id, data: JSON.parse(data.join("\n")) });
    } catch {
      events.push({ type, id, data: data.join("\n") });
    }
  }
  return events;
}

/** Fetch any URL (an output image) as a Blob, with the key for same-origin URLs. */
export async function fetchBlob(url) {
  const sameOrigin = new URL(url, document.baseURI).origin === location.origin;
  const response = await fetch(url, sameOrigin ? { headers: headers({ accept: "*/*" }) } : {});
  if (!response.ok) throw new ApiError(response.status, "fetch_failed", `could not load ${url}`);
  return response.blob();
}
