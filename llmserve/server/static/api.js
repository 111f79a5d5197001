// Requests to the server with the API key, and server-sent events read over fetch (EventSource can
// send no Authorization header).

const KEY = "llmserve.apiKey";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || null; // the OpenAI error shape's code: admin_required, model_not_allowed, ...
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

function headers(extra) {
  const out = { ...extra };
  const key = apiKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    const error = body.error;
    message = typeof error === "string" ? error : (error && error.message) || message;
    code = (error && error.code) || null;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, code);
}

// fetch with the key; a non-2xx answer throws ApiError with the server's message.
export async function request(path, { method = "GET", body, signal } = {}) {
  const init = { method, signal, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function getJSON(path, signal) {
  return (await request(path, { signal })).json();
}

export async function postJSON(path, body, signal) {
  return (await request(path, { method: "POST", body, signal })).json();
}

// Calls onEvent(type, data) for each event of an SSE response until it ends; `data` is the joined
// data lines (text). Comments are skipped.
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let type = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(type, data.join("\n"));
    }
  }
}
