// spendgate's dashboard: asks for a key, fetches /dashboard/data with it, draws the figures as
// SVG and tables, and fetches again every REFRESH_MS. Money arrives as exact decimal strings and
// is rounded here with integer arithmetic (BigInt), never with floats, so what it shows equals
// the reports to the cent. Nothing is fetched from anywhere but this gateway.
"use strict";

const KEY = "spendgate.dashboard.key";
// `?refresh=S` sets how often it fetches again (default 15 s); `?start=&end=` pick the days.
const PARAMS = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(1, Number(PARAMS.get("refresh")) || 15) * 1000;
PARAMS.delete("refresh");
const COLORS = ["#2f6fd0", "#e07b39", "#3a9d5d", "#9b59b6", "#c0392b", "#16a2b8", "#7f8c8d",
  "#d4ac0d", "#8e5a2b", "#e84393"];
const SVG = "http://www.w3.org/2000/svg";
let timer = null;

const $ = (id) => document.getElementById(id);

function nano(usd) {
  const negative = usd.startsWith("-");
  const [whole, frac = ""] = (negative ? usd.slice(1) : usd).split(".");
  const value = BigInt(whole) * 1000000000n + BigInt((frac + "000000000").slice(0, 9));
  return negative ? -value : value;
}

// "$1,234.57": an exact USD string rounded half up to `digits` decimals (2: cents).
function money(usd, digits = 2) {
  if (usd === null || usd === undefined) return "–";
  let n = nano(usd);
  const negative = n < 0n;
  if (negative) n = -n;
  const step = 10n ** BigInt(9 - digits);
  const units = (n + step / 2n) / step;
  const scale = 10n ** BigInt(digits);
  const whole = (units / scale).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const frac = digits ? "." + (units % scale).toString().padStart(digits, "0") : "";
  return (negative ? "-$" : "$") + whole + frac;
}

const count = (n) => Number(n).toLocaleString("en-US");
// An axis label: whole dollars when large, two significant digits when below a dollar.
const axisUsd = (v) => "$" + (v === 0 ? "0" : v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(2)
  : v.toPrecision(2));
const dollars = (usd) => Number(nano(usd)) / 1e9; // for drawing only

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function figure(name, text, attrs = {}) {
  return el("td", { "data-figure": name, ...attrs }, text);
}

function lineChart(days, series) {
  const width = 800, height = 240, left = 60, bottom = 24, top = 10, right = 10;
  const max = Math.max(1e-9, ...series.flatMap((s) => s.values));
  const x = (i) => left + (days.length < 2 ? 0 : (i * (width - left - right)) / (days.length - 1));
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "spend per day" });
  for (const frac of [0, 0.5, 1]) {
    svg.append(el("svg:line", { x1: left, x2: width - right, y1: y(max * frac), y2: y(max * frac),
      stroke: "#d8dde6" }));
    svg.append(el("svg:text", { x: left - 6, y: y(max * frac) + 4, "text-anchor": "end" },
      axisUsd(max * frac)));
  }
  const every = Math.max(1, Math.ceil(days.length / 8));
  days.forEach((day, i) => {
    if (i % every === 0 || i === days.length - 1) {
      const anchor = i === 0 ? "start" : i === days.length - 1 ? "end" : "middle";
      svg.append(el("svg:text", { x: x(i), y: height - 6, "text-anchor": anchor }, day.slice(5)));
    }
  });
  series.forEach((s, n) => {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svg.append(el("svg:polyline", { points, fill: "none", stroke: COLORS[n % COLORS.length],
      "stroke-width": s.total ? 2.5 : 1.5, "stroke-dasharray": s.total ? "5 3" : "" }));
  });
  const legend = el("div", { class: "legend" }, ...series.map((s, n) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = COLORS[n % COLORS.length]; // CSSOM: allowed by the page's CSP
    return el("span", {}, swatch, s.name);
  }));
  return el("div", {}, svg, legend);
}

function barChart(rows) {
  if (!rows.length) return el("p", { class: "muted" }, "Nothing saved in this period yet.");
  const width = 800, row = 26, left = 150;
  const max = Math.max(1e-9, ...rows.map((r) => dollars(r.usd)));
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${rows.length * row + 4}`, role: "img",
    "aria-label": "savings by optimization" });
  rows.forEach((r, i) => {
    const w = ((width - left - 110) * dollars(r.usd)) / max;
    svg.append(el("svg:text", { x: 0, y: i * row + 17 }, r.name));
    svg.append(el("svg:rect", { x: left, y: i * row + 5, width: Math.max(1, w), height: 16,
      fill: COLORS[2] }));
    svg.append(el("svg:text", { x: left + w + 6, y: i * row + 17, "data-figure": "savings",
      "data-name": r.name }, money(r.usd)));
  });
  return svg;
}

function budgetBar(b) {
  const usd = b.limit_nano !== null;
  const spent = usd ? b.spent_nano : b.spent_tokens;
  const held = usd ? b.reserved_nano : b.reserved_tokens;
  const limit = usd ? b.limit_nano : b.limit_tokens;
  const frac = (v) => Math.min(1, Math.max(0, v / limit));
  const width = 800, height = 22;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `budget ${b.name}` });
  svg.append(el("svg:rect", { x: 0, y: 3, width, height: 16, fill: "#eef1f6" }));
  const color = b.pct >= 100 ? "#c0392b" : b.pct >= 75 ? "#c77d00" : "#2f6fd0";
  svg.append(el("svg:rect", { x: 0, y: 3, width: width * frac(spent), height: 16, fill: color }));
  svg.append(el("svg:rect", { x: width * frac(spent), y: 3,
    width: width * (frac(spent + held) - frac(spent)), height: 16, fill: color, opacity: 0.35 }));
  for (const t of b.thresholds) {
    if (t <= 100) {
      svg.append(el("svg:line", { x1: (width * t) / 100, x2: (width * t) / 100, y1: 0, y2: height,
        stroke: "#1d2433", "stroke-width": 1 }));
    }
  }
  const used = usd ? `${money(b.spent_usd)} of ${money(b.limit_usd)}`
    : `${count(b.spent_tokens)} of ${count(b.limit_tokens)} tokens`;
  const label = el("div", { class: "label" },
    el("span", {}, `${b.name} · ${b.team} · ${b.period}`),
    el("span", { "data-figure": "budget-used", "data-budget": b.name },
      `${used} (${b.pct.toFixed(1)}%)`));
  return el("div", { class: "budget" }, label, svg);
}

function table(columns, rows) {
  if (!rows.length) return el("p", { class: "muted" }, "No traffic in this period yet.");
  return el("table", {}, el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, ...rows));
}

function render(doc) {
  const total = doc.total;
  $("scope").textContent = `${doc.start} to ${doc.end}, ` +
    (doc.teams.length === 1 ? `team ${doc.teams[0].team}` : `${doc.teams.length} teams`);
  const put = (name, text) => { document.querySelector(`[data-figure="${name}"]`).textContent = text; };
  put("total-cost", money(total.cost_usd));
  put("total-savings", money(total.savings_usd));
  put("total-requests", count(total.requests));
  put("total-cache-rate", total.requests ? `${((100 * total.cache_hits) / total.requests).toFixed(1)}%` : "–");

  const series = doc.teams.map((t) => ({ name: t.team, values: t.daily_usd.map(dollars) }));
  if (doc.teams.length > 1) {
    series.push({ name: "all teams", total: true, values: total.daily_usd.map(dollars) });
  }
  $("spend-chart").replaceChildren(lineChart(doc.days, series));

  $("teams").querySelector("tbody").replaceChildren(...doc.teams.map((t) => el("tr", {},
    el("td", {}, t.team),
    figure("team-cost", money(t.cost_usd), { "data-team": t.team }),
    figure("team-list-cost", money(t.list_cost_usd), { "data-team": t.team }),
    figure("team-savings", money(t.savings_usd), { "data-team": t.team }),
    figure("team-requests", count(t.requests), { "data-team": t.team }),
    el("td", {}, money(t.cost_per_request_usd, 6)),
    el("td", {}, money(t.cost_per_1k_tokens_usd, 6)))));

  const budgets = doc.teams.flatMap((t) => t.budgets);
  $("budgets").replaceChildren(...(budgets.length ? budgets.map(budgetBar)
    : [el("p", { class: "muted" }, "No budgets in force.")]));

  const savings = Object.entries(total.savings_by_optimization_usd)
    .map(([name, usd]) => ({ name, usd })).sort((a, b) => (nano(b.usd) > nano(a.usd) ? 1 : -1));
  $("savings").replaceChildren(barChart(savings));

  const top = (kind, label) => table([label, "Team", "Spend", "Requests"],
    doc.teams.flatMap((t) => t[kind].map((r) => ({ team: t.team, ...r })))
      .sort((a, b) => (nano(b.cost_usd) > nano(a.cost_usd) ? 1 : -1)).slice(0, 10)
      .map((r) => el("tr", {}, el("td", {}, r.model || r.key_id), el("td", {}, r.team),
        el("td", {}, money(r.cost_usd)), el("td", {}, count(r.requests)))));
  $("models").replaceChildren(top("top_models", "Model"));
  $("keys").replaceChildren(top("top_keys", "Key id"));
  $("updated").textContent = `updated ${new Date(doc.generated_at).toLocaleTimeString()}`;
}

function show(signedIn, error = "") {
  $("login").hidden = signedIn;
  $("board").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  $("login-error").textContent = error;
}

async function refresh() {
  clearTimeout(timer);
  const key = sessionStorage.getItem(KEY);
  if (!key) { show(false); return; }
  let response;
  try {
    const query = PARAMS.toString();
    response = await fetch("/dashboard/data" + (query ? "?" + query : ""),
      { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
  } catch (err) {
    $("updated").textContent = "gateway unreachable; retrying";
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY);
    const body = await response.json().catch(() => ({}));
    show(false, body.error ? body.error.message : "That key is not accepted.");
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    $("updated").textContent = body.error ? body.error.message : `error ${response.status}`;
  } else {
    render(await response.json());
    show(true);
    document.body.dataset.loaded = "true";
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    refresh();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    clearTimeout(timer);
    show(false);
  });
  refresh();
});
