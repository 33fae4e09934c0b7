// The cost overview: reads /openapi.json, /api/v1/costs, /gpu/info, /api/v1/anomalies and
// /health, and renders them. Plain browser JavaScript, no build step (docs/page.md).
"use strict";

const TOKEN_KEY = "gpu-token-cost.read-token";
const RANGES = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
const COLORS = ["#1f6f5c", "#d9822b", "#3b6fb6", "#b3261e", "#7a4fa3", "#2f9c95", "#8c6d1f", "#c2185b"];
let openapi = null;
let chart = null;
let refreshTimer = null;

// ---- formatting: what a person reads ("$0.42 / 1M"); tests/e2e/test_page.py mirrors it.
function sig2(x) {
  const a = Math.abs(x);
  if (a >= 1000) return x.toLocaleString("en-US", { maximumFractionDigits: 0 });
  if (a >= 1) return x.toFixed(2);
  if (a === 0) return "0.00";
  return x.toFixed(Math.min(8, Math.max(2, 1 - Math.floor(Math.log10(a)))));
}
const fmt = {
  usd: (x) => (x == null ? "—" : "$" + sig2(x)),
  per1m: (x) => (x == null ? "—" : "$" + sig2(x) + " / 1M"),
  int: (x) => (x == null ? "—" : Math.round(x).toLocaleString("en-US")),
  pct: (x) => (x == null ? "—" : (x * 100).toFixed(1) + "%"),
  kwh1m: (x) => (x == null ? "—" : sig2(x) + " kWh / 1M"),
  num: (x, unit) => (x == null ? "—" : sig2(x) + (unit ? " " + unit : "")),
};

// ---- small DOM helpers (textContent only: no API value is ever parsed as HTML)
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v != null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function cell(field, value, text) {
  return el("td", { "data-field": field, "data-value": value == null ? "" : String(value) }, text);
}
function table(id, headers, rows) {
  const t = document.getElementById(id);
  t.replaceChildren(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows));
  if (!rows.length) {
    t.tBodies[0].append(el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "no data in this window")));
  }
}

// ---- API access, with the read token when the API asks for one
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
function needsToken(path) {
  const op = openapi && openapi.paths && openapi.paths[path] && openapi.paths[path].get;
  return Boolean(op && op.security && op.security.length);
}
class AuthNeeded extends Error {}
async function api(path, params) {
  if (needsToken(path) && !token()) throw new AuthNeeded("this processor requires a read token");
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v != null) url.searchParams.set(k, v);
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(url, { headers });
  if (response.status === 401 || response.status === 403) {
    throw new AuthNeeded(response.status === 401 ? "the token was refused (401)" : "the token lacks the read scope (403)");
  }
  const body = await response.json();
  // /health answers 503 with its report: the body is the answer, not an error.
  if (!response.ok && !(path === "/health" && response.status === 503)) {
    throw new Error(`${path}: ${response.status} ${body.detail || ""}`);
  }
  return body;
}

// ---- the window
function isoSeconds(date) { return date.toISOString().replace(/\.\d{3}Z$/, "Z"); }
function localInput(date) { return isoSeconds(date).slice(0, 19); }
function chosenWindow() {
  const range = document.getElementById("range").value;
  if (range === "custom") {
    const start = document.getElementById("start").value;
    const end = document.getElementById("end").value;
    if (!start || !end) throw new Error("choose a start and an end (UTC)");
    const s = new Date(start + (start.length === 16 ? ":00" : "") + "Z");
    const e = new Date(end + (end.length === 16 ? ":00" : "") + "Z");
    if (!(s < e)) throw new Error("start must be before end");
    return { start: isoSeconds(s), end: isoSeconds(e), seconds: (e - s) / 1000 };
  }
  const end = new Date();
  const start = new Date(end.getTime() - RANGES[range] * 1000);
  document.getElementById("start").value = localInput(start);
  document.getElementById("end").value = localInput(end);
  return { start: isoSeconds(start), end: isoSeconds(end), seconds: RANGES[range] };
}
// The finest period /api/v1/costs allows for the span, without thousands of points.
function granularity(seconds) {
  if (seconds <= 6 * 3600) return "minute";
  if (seconds <= 93 * 86400) return "hour";
  return "day";
}

// ---- cost tables: a group's periods summed, $/1M from the sums (as the API's totals do)
const SUMMED = ["tokens", "input_tokens", "output_tokens", "requests", "cost_usd",
  "input_cost_usd", "output_cost_usd", "energy_kwh"];
function perGroup(rows) {
  const groups = new Map();
  for (const r of rows) {
    const g = groups.get(r.group) || Object.fromEntries([["group", r.group], ...SUMMED.map((f) => [f, 0])]);
    for (const f of SUMMED) g[f] += r[f];
    groups.set(r.group, g);
  }
  const per1m = (amount, tokens) => (tokens ? (amount / tokens) * 1e6 : null);
  return [...groups.values()].map((g) => ({
    ...g,
    cost_per_1m_tokens: per1m(g.cost_usd, g.tokens),
    cost_per_1m_input_tokens: per1m(g.input_cost_usd, g.input_tokens),
    cost_per_1m_output_tokens: per1m(g.output_cost_usd, g.output_tokens),
    energy_kwh_per_1m_tokens: per1m(g.energy_kwh, g.tokens),
  })).sort((a, b) => (a.group === "(idle)") - (b.group === "(idle)") || b.cost_usd - a.cost_usd);
}
function costTable(id, label, report) {
  const rows = perGroup(report.rows).map((g) => el("tr", { "data-group": g.group, class: g.group === "(idle)" ? "idle" : null },
    el("td", {}, g.group),
    cell("cost_usd", g.cost_usd, fmt.usd(g.cost_usd)),
    cell("cost_per_1m_tokens", g.cost_per_1m_tokens, fmt.per1m(g.cost_per_1m_tokens)),
    cell("cost_per_1m_input_tokens", g.cost_per_1m_input_tokens, fmt.per1m(g.cost_per_1m_input_tokens)),
    cell("cost_per_1m_output_tokens", g.cost_per_1m_output_tokens, fmt.per1m(g.cost_per_1m_output_tokens)),
    cell("tokens", g.tokens, fmt.int(g.tokens)),
    cell("requests", g.requests, fmt.int(g.requests)),
    cell("energy_kwh_per_1m_tokens", g.energy_kwh_per_1m_tokens, fmt.kwh1m(g.energy_kwh_per_1m_tokens))));
  table(id, [label, "cost", "per 1M tokens", "per 1M input", "per 1M output", "tokens", "requests", "energy"], rows);
}
function summary(totals) {
  const card = (field, label, value, text) => el("div", { class: "card" },
    el("div", { class: "label" }, label),
    el("div", { class: "value", "data-field": field, "data-value": value == null ? "" : String(value) }, text));
  document.getElementById("summary").replaceChildren(
    card("cost_usd", "GPU cost in window", totals.cost_usd, fmt.usd(totals.cost_usd)),
    card("cost_per_1m_tokens", "fully loaded, per 1M tokens", totals.cost_per_1m_tokens, fmt.per1m(totals.cost_per_1m_tokens)),
    card("tokens", "tokens", totals.tokens, fmt.int(totals.tokens)),
    card("requests", "requests", totals.requests, fmt.int(totals.requests)),
    card("idle_share", "idle share of cost", totals.idle_share, fmt.pct(totals.idle_share)),
    card("energy_kwh_per_1m_tokens", "energy per 1M tokens", totals.energy_kwh_per_1m_tokens, fmt.kwh1m(totals.energy_kwh_per_1m_tokens)));
}

// ---- the chart: cost per period, one line per model ((idle) included)
const STEP = { minute: 60, hour: 3600, day: 86400 };
function drawChart(report) {
  const box = document.getElementById("chart");
  document.getElementById("chart-period").textContent = `(USD per ${report.granularity})`;
  if (chart) { chart.destroy(); chart = null; }
  box.replaceChildren();
  if (typeof uPlot === "undefined") { box.textContent = "chart library missing"; return; }
  if (!report.rows.length) { box.append(el("p", { class: "muted" }, "no data in this window")); return; }
  // Every period of the window, so a period without cost is a zero, not a gap bridged by a line.
  const step = STEP[report.granularity];
  const first = Math.floor(Date.parse(report.start) / 1000 / step) * step;
  const last = Math.ceil(Date.parse(report.end) / 1000 / step) * step - step;
  const xs = [];
  for (let x = first; x <= last; x += step) xs.push(x);
  const index = new Map(xs.map((x, i) => [x, i]));
  const groups = perGroup(report.rows).map((g) => g.group);
  const data = [xs, ...groups.map(() => xs.map(() => 0))];
  for (const r of report.rows) {
    const i = index.get(Date.parse(r.period_start) / 1000);
    if (i !== undefined) data[1 + groups.indexOf(r.group)][i] += r.cost_usd;
  }
  chart = new uPlot({
    width: Math.max(400, box.clientWidth - 8),
    height: 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { x: { time: true, range: [first, Math.max(last, first + step)] } },
    series: [{ label: "UTC" }, ...groups.map((g, i) => ({
      label: g, stroke: COLORS[i % COLORS.length], width: 2, dash: g === "(idle)" ? [4, 4] : undefined,
      value: (u, v) => fmt.usd(v),
    }))],
    axes: [{}, { size: 70, values: (u, vals) => vals.map((v) => fmt.usd(v)) }],
  }, data, box);
}

// ---- the fleet and its anomalies
function fleet(info, anomalies) {
  const flagged = new Map();
  for (const a of anomalies || []) {
    const key = `${a.host}/${a.gpu_uuid}`;
    flagged.set(key, (flagged.get(key) || 0) + 1);
  }
  const rows = [...info.stream].sort((a, b) => a.gpu_key.localeCompare(b.gpu_key)).map((r) => el("tr", { "data-gpu": r.gpu_key },
    el("td", {}, r.gpu_key),
    el("td", {}, r.gpu_name),
    cell("utilization_gpu_pct", r.utilization_gpu_pct, r.utilization_gpu_pct == null ? "—" : `${Math.round(r.utilization_gpu_pct)}%`),
    cell("memory_used_mib", r.memory_used_mib, r.memory_used_mib == null ? "—"
      : `${(r.memory_used_mib / 1024).toFixed(1)} / ${r.memory_total_mib == null ? "?" : (r.memory_total_mib / 1024).toFixed(0)} GiB`),
    cell("power_draw_w", r.power_draw_w, r.power_draw_w == null ? "—" : `${Math.round(r.power_draw_w)} W`),
    cell("temperature_gpu_c", r.temperature_gpu_c, r.temperature_gpu_c == null ? "—" : `${Math.round(r.temperature_gpu_c)} °C`),
    cell("price_per_hour_usd", r.price_per_hour_usd, `${fmt.usd(r.price_per_hour_usd)} / h (${r.price_source})`),
    cell("anomalies", flagged.get(r.gpu_key) || 0, anomalies == null ? "—" : String(flagged.get(r.gpu_key) || 0)),
    el("td", {}, r.ts.slice(0, 19).replace("T", " "))));
  table("fleet", ["GPU (host/uuid)", "model", "util", "memory", "power", "temp", "price", "anomalies", "last reading (UTC)"], rows);
}
function anomalyList(result) {
  const box = document.getElementById("anomalies");
  if (result == null) {
    box.replaceChildren(el("p", { class: "muted", id: "anomalies-unavailable" }, "anomaly flags not available (this processor has no /api/v1/anomalies)"));
    return;
  }
  if (result.error) {
    box.replaceChildren(el("p", { class: "error" }, `anomalies: ${result.error}`));
    return;
  }
  if (!result.anomalies.length) {
    box.replaceChildren(el("p", { class: "muted" }, "no anomalies in this window"));
    return;
  }
  // The API lists oldest first: show the newest 50, newest on top.
  const rows = result.anomalies.slice(-50).reverse().map((a) => el("tr", { "data-event": a.event_id },
    el("td", {}, a.ts.slice(0, 19).replace("T", " ")),
    el("td", {}, `${a.host}/${a.gpu_uuid}`),
    el("td", {}, ...a.flags.map((f) => el("span", { class: "flag", title: `rule ${f.rule}, score ${f.score}` },
      `${f.field} ${fmt.num(f.value)} (median ${fmt.num(f.median)})`)))));
  box.replaceChildren(el("p", { class: "muted" }, `${result.count} flagged reading(s)` + (result.truncated ? " (the API's limit cut the list)" : "") + (result.count > 50 ? ", newest 50 shown" : "")), el("table", {}, el("tbody", {}, ...rows)));
}

// ---- pipeline health
function health(h) {
  const c = h.consumer;
  const line = (name, check, extra) => el("tr", {},
    el("td", {}, name),
    el("td", { class: check.ok ? "status-ok" : "status-bad" }, check.ok ? "ok" : "failing"),
    el("td", { style: "text-align:left; white-space:normal" }, check.detail + (extra ? ` — ${extra}` : "")));
  const box = document.getElementById("health");
  box.replaceChildren(
    el("p", {}, "status ", el("span", { id: "health-status", class: h.status === "ok" ? "status-ok" : "status-bad" }, h.status),
      h.failing.length ? ` (failing: ${h.failing.join(", ")})` : ""),
    el("table", {}, el("tbody", {},
      line("kafka", h.kafka),
      line("mongodb", h.mongodb),
      line("consumer", c, `${c.assigned_partitions.length} partitions, lag ${fmt.int(c.total_lag)}, `
        + `last poll ${c.seconds_since_poll == null ? "never" : c.seconds_since_poll.toFixed(1) + " s ago"}, ${fmt.int(c.batches)} batches`))));
}

// ---- one refresh
async function refresh() {
  const errorBox = document.getElementById("error");
  errorBox.hidden = true;
  document.body.dataset.state = "loading";
  try {
    if (openapi == null) openapi = await (await fetch("/openapi.json")).json();
    const w = chosenWindow();
    const gran = granularity(w.seconds);
    const shown = document.getElementById("window-shown");
    shown.textContent = `${w.start} → ${w.end}, per ${gran}`;
    shown.dataset.start = w.start;
    shown.dataset.end = w.end;
    shown.dataset.granularity = gran;
    const span = { start: w.start, end: w.end, granularity: gran };
    // No request for a route the processor does not have: a 404 would be a console error.
    const hasAnomalies = Boolean(openapi.paths["/api/v1/anomalies"]);
    const [byModel, byTenant, info, anomalies, h] = await Promise.all([
      api("/api/v1/costs", { group_by: "model", ...span }),
      api("/api/v1/costs", { group_by: "tenant", ...span }),
      api("/gpu/info"),
      // The anomaly list is an extra: its failure is shown in its box, the rest still renders.
      hasAnomalies
        ? api("/api/v1/anomalies", { start: w.start, end: w.end })
          .catch((e) => { if (e instanceof AuthNeeded) throw e; return { error: String(e.message || e) }; })
        : Promise.resolve(null),
      api("/health"),
    ]);
    summary(byModel.totals);
    costTable("by-model", "model", byModel);
    costTable("by-tenant", "tenant", byTenant);
    drawChart(byModel);
    fleet(info, anomalies && anomalies.anomalies);
    anomalyList(anomalies);
    health(h);
    document.getElementById("auth-form").hidden = true;
    document.body.dataset.state = "ready";
  } catch (err) {
    if (err instanceof AuthNeeded) {
      document.getElementById("auth-reason").textContent = err.message + ":";
      document.getElementById("auth-form").hidden = false;
      document.body.dataset.state = "needs-token";
    } else {
      errorBox.textContent = String(err.message || err);
      errorBox.hidden = false;
      document.body.dataset.state = "error";
    }
  }
}

function schedule() {
  clearInterval(refreshTimer);
  // A sliding window follows the clock; a fixed start/end does not change.
  if (document.getElementById("range").value !== "custom") refreshTimer = setInterval(refresh, 60000);
}

function init() {
  // ?window=1h|24h|7d, or ?start=...&end=... (RFC 3339, UTC): a link shows the same window.
  const params = new URLSearchParams(location.search);
  if (params.get("start") && params.get("end")) {
    document.getElementById("range").value = "custom";
    document.getElementById("start").value = params.get("start").replace(/Z$/, "").slice(0, 19);
    document.getElementById("end").value = params.get("end").replace(/Z$/, "").slice(0, 19);
  } else if (RANGES[params.get("window")]) {
    document.getElementById("range").value = params.get("window");
  }
  document.getElementById("window-form").addEventListener("submit", (e) => { e.preventDefault(); schedule(); refresh(); });
  document.getElementById("range").addEventListener("change", () => { schedule(); if (document.getElementById("range").value !== "custom") refresh(); });
  document.getElementById("auth-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    refresh();
  });
  schedule();
  refresh();
}

init();
