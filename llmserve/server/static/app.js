// The dashboard: asks for the API key when the server wants one, then follows /v1/figures/events (one
// stream: the figures each second and every lifecycle event as it happens) and renders it.

import { apiKey, getJSON, readEvents, request, setApiKey } from "./api.js";
import { renderCharts } from "./charts.js";
import { EventLog } from "./events.js";
import { setText } from "./format.js";
import { renderMemory } from "./memory.js";
import { applyEvent, renderModels, setNotifier } from "./models.js";
import { Playground } from "./playground.js";
import { UsagePanel } from "./usage.js";

const $ = (id) => document.getElementById(id);
const main = $("main");
const keyForm = $("key-form");
const connection = $("connection");
let stream = null; // AbortController of the figures stream
let retry = 1000;

function notify(message) {
  setText($("notice-text"), message);
  $("notice").hidden = false;
}

function status(state, text) {
  connection.dataset.connection = state;
  setText(connection, text);
}

function askForKey(message) {
  if (stream) stream.abort();
  stream = null;
  main.hidden = true;
  keyForm.hidden = false;
  setText($("key-error"), message || "");
  status("locked", "API key needed");
  $("api-key").focus();
}

const log = new EventLog($("event-log"), $("event-filter"), $("event-empty"));
const playground = new Playground($("chat-form"), $("transcript"), $("answer-stats"), () => {
  setApiKey("");
  askForKey("The API key was refused.");
});
setNotifier(notify);
const usage = new UsagePanel($("usage"), $("usage-table"), $("usage-status"), $("usage-link"));

function onFigures(figures) {
  renderModels(figures.models, $("model-list"));
  const loaded = figures.models.filter((m) => m.state === "loaded").length;
  // a key with a model scope may not see (nor use) the default model
  const withDefault = figures.models.some((m) => m.id === figures.default_model);
  const count = figures.models.length;
  const summary = [`${count} model version${count === 1 ? "" : "s"}`, `${loaded} loaded`];
  if (withDefault) summary.push(`default: ${figures.default_model}`);
  if (typeof figures.tenant === "string") summary.push(`this key's tenant: ${figures.tenant}`);
  setText($("models-summary"), summary.join(" · "));
  $("admin-note").hidden = figures.admin !== false;
  renderMemory(figures, $("devices"), $("room"));
  renderCharts(figures, $("charts"));
  playground.setModels(figures.models, withDefault);
  log.setModels(figures.models.map((m) => m.id));
  usage.onFigures(figures);
}

function onEvent(type, data) {
  const payload = JSON.parse(data);
  if (type === "figures") onFigures(payload);
  else if (type === "model_state" || type === "load_progress") {
    applyEvent(payload);
    log.add(type, payload);
  }
}

async function follow() {
  const controller = new AbortController();
  stream = controller;
  while (stream === controller) {
    try {
      const response = await request("/v1/figures/events", { signal: controller.signal });
      status("live", "live");
      retry = 1000;
      await readEvents(response, onEvent);
      throw new Error("the server closed the stream");
    } catch (error) {
      if (error.name === "AbortError" || stream !== controller) return;
      if (error.status === 401) {
        setApiKey("");
        askForKey("The API key was refused.");
        return;
      }
      status("offline", `reconnecting (${error.message})…`);
      await new Promise((resolve) => setTimeout(resolve, retry));
      retry = Math.min(retry * 2, 10000);
    }
  }
}

async function open() {
  keyForm.hidden = true;
  main.hidden = false;
  $("forget-key").hidden = !apiKey();
  status("connecting", "connecting…");
  follow();
}

keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  setApiKey(key);
  try {
    await getJSON("/v1/figures");
  } catch (error) {
    setApiKey("");
    askForKey(error.status === 401 ? "That API key was refused." : error.message);
    return;
  }
  $("api-key").value = "";
  open();
});

$("forget-key").addEventListener("click", () => {
  setApiKey("");
  $("forget-key").hidden = true;
  askForKey("");
});
$("notice-close").addEventListener("click", () => {
  $("notice").hidden = true;
});

async function start() {
  let needed = false;
  try {
    needed = (await getJSON("auth.json")).key_required;
  } catch (error) {
    status("offline", `cannot reach the server (${error.message})`);
    return;
  }
  if (needed && !apiKey()) askForKey("");
  else open();
}

start();
