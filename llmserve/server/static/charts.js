// Small live charts per model: tokens/s, queue depth and time to first token, one point per second
// (the rates of each regular `figures` event), the last minute.

import { el, modelName, number, setText } from "./format.js";

const POINTS = 60;
const WIDTH = 120;
const HEIGHT = 32;
const SVG = "http://www.w3.org/2000/svg";
const SERIES = [
  { key: "tps", label: "tokens/s", of: (m) => m.rates.tokens_per_second },
  { key: "queue", label: "queue", of: (m) => m.queue_depth + m.running },
  { key: "ttft", label: "TTFT s", of: (m) => m.rates.ttft_seconds },
];

const rows = new Map(); // unit id -> { root, name, charts: {key: {line, value, points}} }

function chart(key, label) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("width", WIDTH);
  svg.setAttribute("height", HEIGHT);
  svg.setAttribute("aria-hidden", "true");
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("fill", "none");
  line.setAttribute("class", "line");
  svg.append(line);
  const value = el("span", { className: "value" });
  const root = el("figure", { className: "chart", "data-series": key }, svg, el("figcaption", {}, `${label} `, value));
  return { root, line, value, label, points: [] };
}

function draw(series) {
  const values = series.points.map((p) => p ?? 0);
  const top = Math.max(1e-9, ...values);
  const step = WIDTH / (POINTS - 1);
  const offset = POINTS - values.length;
  const coords = values.map((v, i) => `${((offset + i) * step).toFixed(1)},${(HEIGHT - 2 - (v / top) * (HEIGHT - 4)).toFixed(1)}`);
  series.line.setAttribute("points", coords.join(" "));
}

function row(model) {
  const name = el("h3");
  const charts = {};
  const root = el("div", { className: "chart-row", "data-unit-id": model.id }, name);
  for (const spec of SERIES) {
    charts[spec.key] = chart(spec.key, spec.label);
    root.append(charts[spec.key].root);
  }
  return { root, name, charts };
}

// `figures`: one figures event; points are added only from events that carry rates (regular ticks).
export function renderCharts(figures, container) {
  const seen = new Set();
  for (const model of figures.models) {
    if (model.kind === "Embedding") continue;
    seen.add(model.id);
    if (!rows.has(model.id)) {
      rows.set(model.id, row(model));
      container.append(rows.get(model.id).root);
    }
    const entry = rows.get(model.id);
    setText(entry.name, modelName(model));
    if (!model.rates) continue;
    for (const spec of SERIES) {
      const series = entry.charts[spec.key];
      const value = spec.of(model);
      series.points.push(value);
      if (series.points.length > POINTS) series.points.shift();
      draw(series);
      const shown = value === null ? "–" : number(value, spec.key === "ttft" ? 2 : 1);
      setText(series.value, shown);
      series.root.dataset.value = value === null ? "" : String(value);
      series.root.setAttribute("aria-label", `${modelName(model)} ${spec.label}: ${shown}`);
    }
  }
  for (const [id, entry] of rows) {
    if (!seen.has(id)) {
      entry.root.remove();
      rows.delete(id);
    }
  }
}
