// The lifecycle log: every event of the stream (loads, unloads, evictions, swaps, refusals, failures)
// with its reason and time, newest first, filterable by model.

import { REASONS, bytes, clock, el, number } from "./format.js";

const KEEP = 300; // entries kept

function describe(event) {
  if (event.state === "promoted") return `promoted version ${event.version} (was ${event.previous})`;
  if (event.stage !== undefined) {
    return `loading: ${event.stage.replaceAll("_", " ")} ${Math.round(event.fraction * 100)}%`;
  }
  let text = `${event.previous} → ${event.state}`;
  if (event.state === "loaded") text += ` in ${number(event.load_seconds, 2)} s, ${bytes(event.memory_bytes)}`;
  if (event.reason) text += ` — ${REASONS[event.reason] || event.reason}`;
  if (event.error) text += `: ${event.error}`;
  return text;
}

export class EventLog {
  constructor(list, filter, empty) {
    this.list = list;
    this.filter = filter;
    this.empty = empty;
    this.models = new Set();
    filter.addEventListener("change", () => this.applyFilter());
  }

  setModels(ids) {
    for (const id of ids) {
      if (this.models.has(id)) continue;
      this.models.add(id);
      this.filter.append(el("option", { value: id, text: id }));
    }
  }

  add(kind, event) {
    const failed = event.state === "failed" || ["no_room", "load_failed", "failed"].includes(event.reason);
    const item = el(
      "li",
      { "data-model": event.model, "data-kind": kind, className: failed ? "error" : null },
      el("time", { datetime: new Date(event.time * 1000).toISOString(), text: clock(event.time) }),
      " ",
      el("strong", { text: event.model }),
      ` ${describe(event)}`,
    );
    this.list.prepend(item);
    while (this.list.children.length > KEEP) this.list.lastElementChild.remove();
    this.applyFilter();
  }

  applyFilter() {
    const wanted = this.filter.value;
    let shown = 0;
    for (const item of this.list.children) {
      const model = item.dataset.model;
      item.hidden = Boolean(wanted) && model !== wanted && !model.startsWith(`${wanted}@`);
      if (!item.hidden) shown += 1;
    }
    this.empty.hidden = shown > 0;
  }
}
