// Usage per tenant (docs/tenants.md), shown only when the server has a keys file (the figures then name
// the key's tenant): for an admin key every tenant (GET /admin/usage), for another key its own (GET
// /v1/usage); requests and tokens over the last minute, the last hour and since start, in total and per
// model. Refreshed from the figures stream: at once when what the models served changed (and once more
// shortly after, for the requests that were still ending), else every 10 s; one request at a time, never
// two within 2 s. The page's own requests count for its key too (the server's counters, as they are).
// Hooks: rows data-tenant and data-model ("" for the tenant's total), cells data-window and data-count.

import { getJSON } from "./api.js";
import { clock, el, setText } from "./format.js";

const WINDOWS = [
  ["last_minute", "1 min"],
  ["last_hour", "1 hour"],
  ["since_start", "since start"],
];
const COUNTS = [
  ["requests", "Requests"],
  ["total_tokens", "Tokens"],
];
const EVERY = 10000; // ms between refreshes when nothing changed
const AT_MOST = 2000; // ms: the least time between two refreshes

function limits(tenant) {
  const parts = [];
  const l = tenant.limits;
  if (l) {
    if (l.requests_per_minute !== null) parts.push(`${l.requests_per_minute} requests/min`);
    if (l.tokens_per_minute !== null) parts.push(`${l.tokens_per_minute} tokens/min`);
    if (l.max_concurrent !== null) parts.push(`at most ${l.max_concurrent} at once`);
    parts.push(`${l.in_flight} in flight`);
  }
  parts.push(`${tenant.rate_limited} rate-limited (429)`, `${tenant.forbidden} refused (403)`);
  return parts.join(" · ");
}

function row(tenant, model, spans, header) {
  const tr = el("tr", { "data-tenant": tenant, "data-model": model, className: model ? "model" : "tenant" }, header);
  for (const [count] of COUNTS) {
    for (const [window] of WINDOWS) {
      const counts = spans[window];
      const title = count === "total_tokens" ? `${counts.prompt_tokens} prompt + ${counts.completion_tokens} completion` : null;
      tr.append(el("td", { "data-window": window, "data-count": count, title, text: String(counts[count]) }));
    }
  }
  return tr;
}

function head() {
  const top = el("tr", {}, el("th", { scope: "col", rowspan: "2", text: "Tenant · model" }));
  const sub = el("tr");
  for (const [, label] of COUNTS) {
    top.append(el("th", { scope: "colgroup", colspan: String(WINDOWS.length), text: label }));
    for (const [, window] of WINDOWS) sub.append(el("th", { scope: "col", text: window }));
  }
  return el("thead", {}, top, sub);
}

export class UsagePanel {
  constructor(section, table, status, link) {
    this.section = section;
    this.table = table;
    this.status = status;
    this.link = link;
    this.busy = false;
    this.last = 0; // when the last refresh began (ms)
    this.served = null; // what the models had served then
    this.settle = false; // one more refresh due after a change
  }

  // Called with each figures event.
  onFigures(figures) {
    const shown = typeof figures.tenant === "string";
    this.section.hidden = !shown;
    this.link.hidden = !shown;
    if (!shown) return;
    const served = [figures.admin, ...figures.models.map((m) => `${m.id} ${m.requests} ${m.prompt_tokens} ${m.decoded_tokens}`)].join();
    const changed = served !== this.served;
    const since = Date.now() - this.last;
    if (this.busy || since < AT_MOST || !(changed || this.settle || since >= EVERY)) return;
    this.settle = changed;
    this.served = served;
    this.refresh(figures.admin);
  }

  async refresh(admin) {
    this.busy = true;
    this.last = Date.now();
    try {
      const report = await getJSON(admin ? "/admin/usage" : "/v1/usage");
      this.render(report);
      const whose = admin ? "every tenant (this key is an admin's)" : "this key's tenant";
      setText(this.status, `Requests and tokens of ${whose}, as of ${clock(Date.now() / 1000)}.`);
    } catch (error) {
      setText(this.status, `Usage is not available: ${error.message}`);
    } finally {
      this.busy = false;
    }
  }

  render(report) {
    const groups = [];
    for (const [name, tenant] of Object.entries(report.tenants)) {
      const header = el("th", { scope: "row" }, name, el("small", { className: "limits", text: limits(tenant) }));
      const body = el("tbody", { "data-tenant": name }, row(name, "", tenant, header));
      for (const model of Object.keys(tenant.models).sort()) {
        body.append(row(name, model, tenant.models[model], el("th", { scope: "row", text: model })));
      }
      groups.push(body);
    }
    const caption = el("caption", { text: "Usage per tenant and model" });
    this.table.replaceChildren(caption, head(), ...groups);
  }
}
