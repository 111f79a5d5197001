// The model cards: one per model version, updated in place (focus and hover survive each update).
// Hooks for automation: data-model-id (ID, or ID@VERSION for a version that is not the default),
// data-state, buttons data-action="load|unload|reload|promote", and data-field on each fact. An action the
// server refuses (403: a key without admin rights) says so on the card itself, in a role=alert.

import { postJSON } from "./api.js";
import { REASONS, bytes, duration, el, modelName, setText } from "./format.js";

const cards = new Map(); // unit id -> { root, fields, buttons, model }
const pending = new Set(); // unit ids with an action under way
let notify = () => {};

const ACTIONS = {
  load: { label: "Load", when: ["unloaded", "failed"] },
  unload: { label: "Unload", when: ["loaded"] },
  reload: { label: "Reload", when: ["loaded"] },
  promote: { label: "Promote", when: null }, // a version that is not the default, in any state
};

export function setNotifier(fn) {
  notify = fn;
}

// The server's refusal of an action (a 403), on the card: a new role=alert element, so that it is read out.
function refuse(id, action, error) {
  const card = cards.get(id);
  if (!card) return;
  const why = error.code === "admin_required" ? "this API key has no admin rights. " : "";
  const note = el("p", { className: "refusal error", role: "alert", "data-code": error.code || "forbidden" });
  note.textContent = `${ACTIONS[action].label} refused: ${why}${error.message}`;
  card.refusal.replaceWith(note);
  card.refusal = note;
}

async function run(action, model) {
  const id = model.id;
  pending.add(id);
  update(model);
  cards.get(id).refusal.hidden = true; // the previous refusal, if any
  try {
    if (action === "load") await postJSON("/v1/models/reload", { model_id: id });
    else if (action === "unload") await postJSON("/v1/models/unload", { model_id: id });
    else if (action === "reload") {
      await postJSON("/v1/models/unload", { model_id: id });
      await postJSON("/v1/models/reload", { model_id: id });
    } else if (action === "promote") {
      await postJSON("/v1/models/promote", { model_id: model.api_id, version: model.version });
    }
  } catch (error) {
    if (error.status === 403) refuse(id, action, error);
    else notify(`${ACTIONS[action].label} ${modelName(model)}: ${error.message}`);
  } finally {
    pending.delete(id);
    const card = cards.get(id); // gone if the model went away meanwhile
    if (card) update(card.model);
  }
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function fact(name, label) {
  const value = el("dd", { "data-field": name });
  return [el("dt", { text: label }), value];
}

function create(model) {
  const titleId = `model-${cards.size}-title`;
  const fields = {};
  const facts = el("dl", { className: "facts" });
  for (const [name, label] of [
    ["kind", "Engine"],
    ["memory", "Memory"],
    ["quantization", "Quantization"],
    ["expiry", "Keep-alive"],
    ["queue", "Queue"],
    ["served", "Served"],
  ]) {
    const [dt, dd] = fact(name, label);
    fields[name] = dd;
    facts.append(dt, dd);
  }
  fields.title = el("h3", { id: titleId });
  fields.version = el("span", { className: "version" });
  fields.state = el("span", { className: "state" });
  fields.why = el("p", { className: "why" });
  const refusal = el("p", { className: "refusal error", hidden: true });
  fields.bar = el("progress", { max: "1", value: "0" });
  fields.stage = el("span");
  fields.progress = el("div", { className: "load-progress" }, fields.bar, fields.stage);
  const buttons = {};
  const actions = el("div", { className: "actions" });
  for (const [action, spec] of Object.entries(ACTIONS)) {
    const button = el("button", { type: "button", "data-action": action, text: spec.label });
    button.addEventListener("click", () => run(action, cards.get(model.id).model));
    buttons[action] = button;
    actions.append(button);
  }
  const root = el(
    "article",
    { className: "card", "aria-labelledby": titleId, "data-unit-id": model.id },
    el("header", {}, fields.title, fields.version, fields.state),
    fields.progress,
    fields.why,
    facts,
    actions,
    refusal,
  );
  return { root, fields, buttons, model, refusal };
}

function expiry(model) {
  if (model.state !== "loaded") return "–";
  if (model.expires_at === null) return model.running || model.queue_depth ? "busy" : "stays loaded";
  return `unloads in ${duration(model.expires_at - Date.now() / 1000)}`;
}

function memory(model) {
  const parts = Object.entries(model.footprint).map(([device, size]) => `${device} ${bytes(size)}`);
  const held = ["loaded", "unloading"].includes(model.state);
  if (!parts.length) return held ? bytes(model.memory_bytes) : "not loaded";
  return held ? parts.join(", ") : `not loaded (last: ${parts.join(", ")})`;
}

function update(model) {
  const card = cards.get(model.id);
  card.model = model;
  const { root, fields, buttons } = card;
  const name = modelName(model);
  root.dataset.modelId = name;
  // unloaded, its weights parked in CPU memory (unload_mode: offload): the next request wakes it
  const state = model.parked && model.state === "unloaded" ? "parked" : model.state;
  root.dataset.state = state;
  setText(fields.title, name);
  const tags = [];
  if (model.version !== null) tags.push(`version ${model.version}${model.default_version ? " (default)" : ""}`);
  if (model.default_model) tags.push("default model");
  setText(fields.version, tags.join(" · "));
  setText(fields.state, state);
  const loading = model.state === "loading";
  fields.progress.hidden = !loading;
  if (loading && model.progress) {
    fields.bar.value = model.progress.fraction;
    const percent = Math.round(model.progress.fraction * 100);
    setText(fields.stage, `${model.progress.stage.replaceAll("_", " ")} · ${percent}%`);
    fields.bar.setAttribute("aria-label", `loading ${name}: ${percent}%`);
  }
  let why = "";
  if (model.state === "failed") why = `Failed: ${model.error || REASONS[model.reason] || "unknown reason"}`;
  else if (state === "parked") why = "parked in CPU memory: the next request wakes it without a load";
  else if (["unloaded", "unloading"].includes(model.state) && model.reason) why = REASONS[model.reason] || model.reason;
  setText(fields.why, why);
  fields.why.hidden = !why;
  fields.why.classList.toggle("error", model.state === "failed");
  setText(fields.kind, `${model.kind} on ${model.engine}`);
  setText(fields.memory, memory(model));
  setText(fields.quantization, model.quantization || "none");
  setText(fields.expiry, expiry(model));
  setText(fields.queue, `${model.running} running · ${model.queue_depth} waiting (of ${model.capacity})`);
  setText(fields.served, `${plural(model.requests, "request")} · ${plural(model.decoded_tokens, "token")} decoded`);
  const busy = pending.has(model.id);
  for (const [action, spec] of Object.entries(ACTIONS)) {
    const button = buttons[action];
    const shown = spec.when ? spec.when.includes(model.state) : model.version !== null && !model.default_version;
    button.hidden = !shown;
    button.disabled = busy;
    setText(button, action === "load" && model.state === "failed" ? "Retry" : spec.label);
    button.setAttribute("aria-label", `${button.textContent} ${name}`);
  }
}

// Renders the models of a `figures` event (in server order), adding and removing cards as needed.
export function renderModels(list, container) {
  const seen = new Set();
  for (const model of list) {
    seen.add(model.id);
    if (!cards.has(model.id)) cards.set(model.id, create(model));
    update(model);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.root.remove();
      cards.delete(id);
    }
  }
  list.forEach((model, i) => {
    const root = cards.get(model.id).root;
    if (container.children[i] !== root) container.insertBefore(root, container.children[i] || null);
  });
}

// A lifecycle event (`model_state`, `load_progress`) shown at once, before the next figures.
export function applyEvent(event) {
  const card = cards.get(event.model);
  if (!card || event.state === "promoted") return;
  const model = { ...card.model, state: event.state };
  if (event.stage !== undefined) model.progress = { stage: event.stage, fraction: event.fraction };
  if (event.reason !== undefined) model.reason = event.reason;
  if (event.error !== undefined) model.error = event.error;
  if (event.memory_bytes !== undefined) model.memory_bytes = event.memory_bytes;
  update(model);
}
