// The native API as the page uses it: JSON requests with the optional API key, errors in the wanserve shape,
// and server-sent events read over fetch (EventSource cannot send an Authorization header).

const KEY_STORAGE = "wanserve.apiKey";

export class ApiError extends Error {
  /** An error answer: HTTP status, wanserve error type and the field it names (`param`). */
  constructor(status, message, type = "http_error", param = null) {
    super(message);
    this.status = status;
    this.type = type;
    this.param = param;
  }
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall back to the status text
  }
  const error = body && body.error && typeof body.error === "object" ? body.error : null;
  const message = (error && error.message) || (body && body.detail) || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, String(message), error ? error.type : "http_error", error ? error.param : null);
}

/** `request(path, {method, json, form})`: the parsed JSON answer, or throws `ApiError`. */
export async function request(path, { method = "GET", json, form, signal } = {}) {
  const init = { method, signal, headers: headers({ Accept: "application/json" }) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (form !== undefined) {
    init.body = form; // the browser sets the multipart boundary
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

/** A URL the page can put in `src`/`href`: the path itself, or (with an API key) a blob fetched with the key. */
export async function mediaUrl(path) {
  if (!apiKey()) return path;
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await errorOf(response);
  return URL.createObjectURL(await response.blob());
}

/**
 * Follows `/v1/jobs/{id}/events` until the stream ends (the job's final status) or `signal` aborts.
 * Calls `onEvent({event, id, data})` for each event; reconnects with `Last-Event-ID` after a dropped connection.
 */
export async function followEvents(jobId, onEvent, signal, maxReconnects = 5) {
  let lastId = "";
  for (let attempt = 0; attempt <= maxReconnects; attempt++) {
    const extra = { Accept: "text/event-stream" };
    if (lastId) extra["Last-Event-ID"] = lastId;
    try {
      const response = await fetch(`/v1/jobs/${jobId}/events`, { headers: headers(extra), signal });
      if (!response.ok) throw await errorOf(response);
      for await (const event of parseEvents(response.body)) {
        lastId = event.id || lastId;
        onEvent(event);
      }
      return; // the server ends the stream after the final status
    } catch (error) {
      if (signal && signal.aborted) return;
      if (error instanceof ApiError || attempt === maxReconnects) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1000 * (attempt + 1)));
    }
  }
}

async function* parseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let current = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (current.data !== undefined) {
          yield { event: current.event || "message", id: current.id || "", data: JSON.parse(current.data) };
        }
        current = {};
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        current[field] = field === "data" && current.data !== undefined ? `${current.data}\n${text}` : text;
      }
    }
  }
}
