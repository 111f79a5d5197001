// The playground: a chat with any model over /v1/chat/completions, streamed token by token. Stop
// aborts the request; the server cancels the generation when its client goes away.

import { readEvents, request } from "./api.js";
import { el, modelName, number, setText } from "./format.js";

export class Playground {
  constructor(form, transcript, stats, onUnauthorized) {
    this.form = form;
    this.transcript = transcript;
    this.stats = stats;
    this.onUnauthorized = onUnauthorized;
    this.select = form.elements.model;
    this.prompt = form.elements.prompt;
    this.send = form.querySelector('[data-action="send"]');
    this.stop = form.querySelector('[data-action="stop"]');
    this.history = []; // {role, content} of the finished turns
    this.controller = null;
    this.optionsKey = "";
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.ask();
    });
    this.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    this.stop.addEventListener("click", () => this.controller && this.controller.abort());
    form.querySelector('[data-action="clear"]').addEventListener("click", () => this.clear());
  }

  // The models one can chat with (not embedding models), `default` first (when the key may use it); the
  // choice is kept.
  setModels(models, withDefault = true) {
    const names = [...(withDefault ? ["default"] : []), ...models.filter((m) => m.kind !== "Embedding").map(modelName)];
    const key = names.join("\n");
    if (key === this.optionsKey) return;
    this.optionsKey = key;
    const chosen = this.select.value;
    this.select.replaceChildren(...names.map((name) => el("option", { value: name, text: name })));
    if (names.includes(chosen)) this.select.value = chosen;
  }

  clear() {
    if (this.controller) this.controller.abort();
    this.history = [];
    this.transcript.replaceChildren();
    setText(this.stats, "");
  }

  body(messages) {
    const fields = this.form.elements;
    const body = {
      model: this.select.value,
      messages,
      stream: true,
      stream_options: { include_usage: true },
    };
    if (fields.temperature.value !== "") body.temperature = Number(fields.temperature.value);
    if (fields.max_tokens.value !== "") body.max_tokens = Number(fields.max_tokens.value);
    return body;
  }

  turn(role, text) {
    const content = el("div", { className: "content", "data-role": role, text });
    const item = el("li", { className: `turn ${role}` }, el("span", { className: "who", text: role === "user" ? "You" : "Model" }), content);
    this.transcript.append(item);
    item.scrollIntoView({ block: "nearest" });
    return { item, content };
  }

  async ask() {
    const text = this.prompt.value.trim();
    if (!text || this.controller) return;
    const system = this.form.elements.system.value.trim();
    const messages = [...(system ? [{ role: "system", content: system }] : []), ...this.history, { role: "user", content: text }];
    this.turn("user", text);
    this.prompt.value = "";
    const answer = this.turn("assistant", "");
    answer.item.setAttribute("aria-busy", "true");
    this.controller = new AbortController();
    this.send.disabled = true;
    this.stop.disabled = false;
    setText(this.stats, "waiting for the first token…");
    const started = performance.now();
    let first = null;
    let pieces = 0;
    let usage = null;
    let served = null;
    let outcome = "done";
    try {
      const response = await request("/v1/chat/completions", {
        method: "POST",
        body: this.body(messages),
        signal: this.controller.signal,
      });
      await readEvents(response, (type, data) => {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        served = chunk.model || served;
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (first === null) {
            first = performance.now();
            setText(this.stats, `streaming · TTFT ${number((first - started) / 1000, 2)} s`);
          }
          pieces += 1;
          answer.content.append(delta.content);
        }
      });
    } catch (error) {
      if (error.name === "AbortError") outcome = "stopped";
      else {
        outcome = "failed";
        if (error.status === 401) this.onUnauthorized();
        answer.item.append(el("p", { className: "error", role: "alert", text: error.message }));
      }
    } finally {
      this.controller = null;
      this.send.disabled = false;
      this.stop.disabled = true;
      answer.item.removeAttribute("aria-busy");
      answer.item.dataset.outcome = outcome;
    }
    const reply = answer.content.textContent;
    if (outcome !== "failed") this.history.push({ role: "user", content: text }, { role: "assistant", content: reply });
    this.report(outcome, started, first, usage, pieces, served);
  }

  report(outcome, started, first, usage, pieces, served) {
    const end = performance.now();
    const parts = [outcome];
    if (served) parts.push(`served by ${served}`);
    if (first !== null) {
      parts.push(`TTFT ${number((first - started) / 1000, 2)} s`);
      const tokens = usage ? usage.completion_tokens : pieces;
      const seconds = (end - first) / 1000;
      if (seconds > 0 && tokens > 1) {
        parts.push(`${usage ? "" : "≈"}${number((tokens - 1) / seconds, 1)} tokens/s`);
      }
      parts.push(`${usage ? "" : "≈"}${tokens} tokens`);
    }
    setText(this.stats, parts.join(" · "));
  }
}
