// Small helpers: building elements, and numbers as people read them.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

// Sets a node's text only when it changed (no needless DOM writes, no lost selection).
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  if (i === 0) return `${value} B`;
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[i]}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

export function number(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

// Why a model left memory or did not get there (models/status.py, UnloadReason).
export const REASONS = {
  unload: "unloaded on request",
  keep_alive: "idle for its keep_alive",
  evicted: "evicted: idle, it made room for another model",
  swapped: "swapped: busy, it yielded its turn to a waiting model",
  no_room: "found no room in memory in time",
  load_failed: "its load failed",
  failed: "it failed while serving",
  shutdown: "the server is stopping",
};

// The name a model is called by on the page and in requests: the API id for the default version,
// ID@VERSION for another version.
export function modelName(model) {
  return model.default_version ? model.api_id : model.id;
}
