// Memory: one bar per device (cpu, cuda:N) with every model's share, the KV cache their requests
// reserve and what is free, and the room policy (--max-loaded-models, the next eviction candidate).

import { bytes, el, setText } from "./format.js";

const PALETTE = 8; // style.css: .share-0 ... .share-7
const colours = new Map(); // unit id -> palette index, stable while the page lives

function colour(unit) {
  if (!colours.has(unit)) colours.set(unit, colours.size % PALETTE);
  return colours.get(unit);
}

function segment(className, size, total, label) {
  const span = el("span", { className: `segment ${className}`, title: label });
  span.style.width = `${total > 0 ? Math.max(0, (100 * size) / total) : 0}%`;
  return span;
}

function device(memory, next) {
  const free = memory.free_bytes ?? 0;
  const total = memory.budget_bytes ?? memory.used_bytes + free;
  const bar = el("div", { className: "bar" });
  const legend = el("ul", { className: "legend" });
  const spoken = [];
  for (const share of memory.models) {
    const what = `${share.model}: ${bytes(share.bytes)}${share.estimated ? " (estimated, loading)" : ""}`;
    const classes = `share-${colour(share.model)}${share.estimated ? " estimated" : ""}`;
    const seg = segment(classes, share.bytes, total, what);
    seg.dataset.shareOf = share.model;
    bar.append(seg);
    const item = el("li", {}, el("span", { className: `swatch ${classes}`, "aria-hidden": "true" }), what);
    if (share.model === next) item.append(el("strong", { className: "next", text: " · next to evict" }));
    legend.append(item);
    spoken.push(what);
  }
  if (memory.kv_reserved_bytes > 0) {
    const what = `KV cache reserved by requests: ${bytes(memory.kv_reserved_bytes)}`;
    bar.append(segment("kv", memory.kv_reserved_bytes, total, what));
    legend.append(el("li", {}, el("span", { className: "swatch kv", "aria-hidden": "true" }), what));
    spoken.push(what);
  }
  const freeText = memory.free_bytes === null ? "free: unknown" : `free: ${bytes(memory.free_bytes)}`;
  legend.append(el("li", {}, el("span", { className: "swatch free", "aria-hidden": "true" }), freeText));
  spoken.push(freeText);
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", `${memory.device}: ${spoken.join("; ")}`);
  const limit =
    memory.budget_bytes === null
      ? "no --memory-budget: the bar is what the models use plus what the device has free"
      : `budget ${bytes(memory.budget_bytes)}`;
  return el(
    "div",
    { className: "device", "data-device": memory.device },
    el("h3", {}, `${memory.device} `, el("span", { className: "summary", text: `${bytes(memory.used_bytes)} used · ${limit}` })),
    bar,
    legend,
  );
}

// --max-loaded-models shown the same way: one cell per place, filled by the model that holds it.
function slots(figures) {
  const count = figures.max_loaded_models;
  const bar = el("div", { className: "bar slots" });
  const legend = el("ul", { className: "legend" });
  const spoken = [];
  for (let i = 0; i < count; i += 1) {
    const unit = figures.resident[i];
    const cell = el("span", { className: `segment slot${unit ? ` share-${colour(unit)}` : ""}`, title: unit || "free" });
    cell.style.width = `${100 / count}%`;
    if (unit) cell.dataset.shareOf = unit;
    bar.append(cell);
    spoken.push(unit || "free");
  }
  for (const unit of figures.resident) {
    legend.append(el("li", {}, el("span", { className: `swatch share-${colour(unit)}`, "aria-hidden": "true" }), unit));
  }
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", `model places: ${spoken.join(", ")}`);
  const title = `${figures.resident.length} of ${count} places taken`;
  return el(
    "div",
    { className: "device", "data-device": "slots" },
    el("h3", {}, "--max-loaded-models ", el("span", { className: "summary", text: title })),
    bar,
    legend,
  );
}

let lastKey = "";

export function renderMemory(figures, container, room) {
  const parts = [];
  parts.push(`${figures.loaded_models} loaded`);
  if (figures.memory_budget) parts.push(`budget ${figures.memory_budget}`);
  parts.push(`next to evict: ${figures.next_eviction ?? "none"}`);
  if (figures.waiting_for_room.length) parts.push(`waiting for room: ${figures.waiting_for_room.join(", ")}`);
  parts.push(`${figures.evictions} eviction${figures.evictions === 1 ? "" : "s"} · ${figures.swaps} swap${figures.swaps === 1 ? "" : "s"}`);
  setText(room, parts.join(" · "));
  // the bars are rebuilt only when what they show changes (they hold nothing focusable)
  const key = JSON.stringify([figures.devices, figures.next_eviction, figures.resident]);
  if (key === lastKey) return;
  lastKey = key;
  const blocks = figures.max_loaded_models === null ? [] : [slots(figures)];
  blocks.push(...figures.devices.map((memory) => device(memory, figures.next_eviction)));
  container.replaceChildren(...blocks);
}
