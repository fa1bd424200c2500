// spendgate's dashboard: asks for a key, fetches /dashboard/data with it, draws the figures as
// SVG and tables (spend, budgets, the forecast with its intervals, anomalies with their causes,
// the scorecard, the recommendations), and fetches again every REFRESH_MS. Money arrives as exact decimal strings and
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

// A line chart over `days`: `lines` ({name, values, color, width, dash, cls}; a null value is a
// gap) over `bands` ({low, high, opacity}: a forecast's prediction intervals). With `axes`, the
// dashboard's big chart; without, a sparkline.
function chart(days, lines, bands, { width = 800, height = 240, axes = true, label = "" } = {}) {
  const [left, bottom, top, right] = axes ? [60, 24, 10, 10] : [2, 2, 2, 2];
  const seen = [...lines.flatMap((l) => l.values), ...bands.flatMap((b) => b.high)];
  const max = Math.max(1e-9, ...seen.filter((v) => v !== null));
  const x = (i) => left + (days.length < 2 ? 0 : (i * (width - left - right)) / (days.length - 1));
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label });
  if (axes) {
    for (const frac of [0, 0.5, 1]) {
      svg.append(el("svg:line", { x1: left, x2: width - right, y1: y(max * frac),
        y2: y(max * frac), stroke: "#d8dde6" }));
      svg.append(el("svg:text", { x: left - 6, y: y(max * frac) + 4, "text-anchor": "end" },
        axisUsd(max * frac)));
    }
    const every = Math.max(1, Math.ceil(days.length / 8));
    days.forEach((day, i) => {
      const last = i === days.length - 1;
      // Every `every`-th day, and the last one unless it would overlap the one before.
      if ((i % every === 0 && (last || days.length - 1 - i >= every / 2)) || last) {
        const anchor = i === 0 ? "start" : last ? "end" : "middle";
        svg.append(el("svg:text", { x: x(i), y: height - 6, "text-anchor": anchor },
          day.slice(5)));
      }
    });
  }
  for (const band of bands) {
    const at = days.map((_, i) => i).filter((i) => band.low[i] !== null && band.high[i] !== null);
    if (!at.length) continue;
    const edge = (values, order) => order.map((i) => `${x(i).toFixed(1)},${y(values[i]).toFixed(1)}`);
    const points = [...edge(band.high, at), ...edge(band.low, [...at].reverse())].join(" ");
    svg.append(el("svg:polygon", { points, class: "band", fill: COLORS[0],
      "fill-opacity": band.opacity, stroke: "none" }));
  }
  for (const line of lines) {
    // Consecutive values form one polyline; a gap (null) starts another.
    let run = [];
    const flush = () => {
      if (run.length) {
        svg.append(el("svg:polyline", { points: run.join(" "), fill: "none", class: line.cls,
          stroke: line.color, "stroke-width": line.width || 1.5, "stroke-dasharray": line.dash || "" }));
      }
      run = [];
    };
    line.values.forEach((v, i) => {
      if (v === null) flush();
      else run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`);
    });
    flush();
  }
  return svg;
}

function legend(entries) {
  return el("div", { class: "legend" }, ...entries.map(({ name, color, band }) => {
    const swatch = el("span", { class: band ? "swatch band" : "swatch" });
    swatch.style.background = color; // CSSOM: allowed by the page's CSP
    return el("span", {}, swatch, name);
  }));
}

// The forecast report's entry for what the big chart and the card show: every team's sum for
// the admin, the team for a team's key.
function forecastFocus(doc) {
  const fc = doc.forecast;
  if (!fc) return null;
  return doc.teams.length === 1 ? fc.teams.find((t) => t.team === doc.teams[0].team) : fc.total;
}

// Forecast values of `entry.daily` by day, null where there is none.
function forecastValues(entry, days, field) {
  const byDay = new Map((entry ? entry.daily : []).map((d) => [d.date, d[field]]));
  return days.map((day) => (byDay.has(day) && byDay.get(day) !== null ? Number(byDay.get(day))
    : null));
}

function forecastBands(entry, days) {
  return [
    { low: forecastValues(entry, days, "low95_usd"), high: forecastValues(entry, days, "high95_usd"),
      opacity: 0.12 },
    { low: forecastValues(entry, days, "low80_usd"), high: forecastValues(entry, days, "high80_usd"),
      opacity: 0.28 },
  ];
}

function spendChart(doc) {
  const focus = forecastFocus(doc);
  const later = focus ? focus.daily.map((d) => d.date).filter((d) => d > doc.end) : [];
  const days = doc.days.concat(later);
  const pad = (values) => values.map(dollars).concat(later.map(() => null));
  const lines = doc.teams.map((t, n) => ({ name: t.team, values: pad(t.daily_usd),
    color: COLORS[n % COLORS.length], cls: "actual" }));
  if (doc.teams.length > 1) {
    lines.push({ name: "all teams", values: pad(doc.total.daily_usd), width: 2.5, dash: "5 3",
      color: COLORS[lines.length % COLORS.length], cls: "actual" });
  }
  const entries = lines.map((l) => ({ name: l.name, color: l.color }));
  let bands = [];
  if (focus && focus.daily.length) {
    bands = forecastBands(focus, days);
    lines.push({ name: "forecast", values: forecastValues(focus, days, "forecast_usd"),
      color: "#1d2433", dash: "2 3", cls: "forecast" });
    const whose = focus.team === "*" ? "all teams" : focus.team;
    entries.push({ name: `forecast of ${whose}`, color: "#1d2433" },
      { name: "80 % / 95 % intervals", color: COLORS[0], band: true });
  }
  return el("div", {}, chart(days, lines, bands, { label: "spend per day" }), legend(entries));
}

function range(m, level) {
  const low = m[`low${level}_usd`], high = m[`high${level}_usd`];
  return low === null ? "–" : `${money(low)} – ${money(high)}`;
}

function forecastTable(doc) {
  const fc = doc.forecast;
  if (!fc) {
    $("forecast-note").textContent = "Forecasts are shown for periods that end today.";
    return el("p", { class: "muted" }, "No forecast for this period.");
  }
  const month = (fc.total || fc.teams[0] || { month: { period: "the month" } }).month.period;
  $("forecast-note").textContent = `As of ${fc.as_of}, to the end of ${month}; fitted on the ` +
    `days ${fc.history.first_day} to ${fc.history.last_day}. ${fc.method}.`;
  const rows = [...fc.teams, ...(fc.total ? [fc.total] : [])].map((t) => {
    const name = t.team === "*" ? "all teams" : t.team;
    const m = t.month;
    const sparkDays = t.daily.map((d) => d.date);
    const spark = t.model === null ? el("span", { class: "muted" }, "–")
      : chart(sparkDays, [{ values: forecastValues(t, sparkDays, "forecast_usd"), color: "#1d2433",
        cls: "forecast" }], forecastBands(t, sparkDays),
        { width: 240, height: 40, axes: false, label: `forecast of ${name}` });
    const mape = t.accuracy && t.accuracy.mape_pct !== null ? `${t.accuracy.mape_pct}%` : "–";
    return el("tr", {},
      el("td", {}, name),
      figure("team-month-to-date", money(m.to_date_usd), { "data-team": t.team }),
      figure("team-month-forecast", t.model === null ? "needs 7+ days of history"
        : money(m.forecast_usd), { "data-team": t.team }),
      figure("team-month-range80", range(m, 80), { "data-team": t.team }),
      el("td", {}, range(m, 95)),
      el("td", {}, t.model === null ? "–" : t.model),
      el("td", {}, mape),
      el("td", { class: "spark" }, spark));
  });
  return table(["Team", "Month to date", "Month-end forecast", "80 % range", "95 % range", "Model",
    "Backtest MAPE", "Next days"], rows);
}

function anomaliesTable(doc) {
  const open = doc.anomalies.filter((a) => a.status !== "resolved").length;
  document.querySelector(`[data-figure="anomalies-open"]`).textContent = `${open} open`;
  if (!doc.anomalies.length) return el("p", { class: "muted" }, "No spend anomaly in this period.");
  const rows = doc.anomalies.map((a) => el("tr", { class: a.status === "resolved" ? "resolved" : "" },
    el("td", {}, el("span", { class: `sev sev-${a.severity}` }, a.severity)),
    el("td", {}, a.team),
    el("td", {}, `${a.kind} · ${a.scope}`),
    el("td", { "data-figure": "anomaly-status", "data-anomaly": a.id },
      a.status + (a.suppressed_by ? " (suppressed)" : "") +
      (a.feedback ? ` · marked ${a.feedback.verdict}` : "")),
    el("td", {}, a.start.replace("T", " ").replace("Z", " UTC")),
    figure("anomaly-actual", money(a.actual_usd), { "data-anomaly": a.id }),
    figure("anomaly-expected", money(a.expected_usd), { "data-anomaly": a.id }),
    figure("anomaly-excess", money(a.excess_usd), { "data-anomaly": a.id }),
    el("td", { class: "causes" }, el("ol", { "data-figure": "anomaly-causes", "data-anomaly": a.id },
      ...a.cause_texts.map((text) => el("li", {}, text))))));
  return table(["Severity", "Team", "What", "Status", "Started", "Actual", "Expected", "Excess",
    "Possible causes, by dollars"], rows);
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

// The report's text with every exact amount (nine decimals) shown as money to the cent.
const withMoney = (text) => text.replace(/-?\d+\.\d{9}/g, (usd) => money(usd));

function scorecardTable(doc) {
  const card = doc.scorecard;
  $("scorecard-period").textContent = card ? card.period : "";
  if (!card || !card.lines.length) return el("p", { class: "muted" }, "No scorecard for this month.");
  let previous = null;
  const rows = card.lines.map((l) => {
    const first = l.team !== previous;
    previous = l.team;
    return el("tr", { class: first ? "first" : "" },
      el("td", {}, first ? l.team : ""),
      el("td", {}, l.line),
      figure("scorecard-value", withMoney(l.value), { "data-team": l.team, "data-line": l.line }),
      el("td", { class: "detail" }, withMoney(l.detail)));
  });
  return table(["Team", "", "Value", "Detail"], rows);
}

function recommendationsTable(doc) {
  const rec = doc.recommendations;
  $("recommendations-period").textContent = rec ? rec.period : "";
  document.querySelector('[data-figure="recommendations-total"]').textContent =
    rec ? money(rec.monthly_saving_usd) : "–";
  if (!rec || !rec.rows.length) return el("p", { class: "muted" }, "Nothing to recommend.");
  const rows = rec.rows.map((r, i) => el("tr", {},
    el("td", {}, r.team),
    el("td", {}, `${r.kind}${r.subject ? " · " + r.subject : ""}`),
    figure("recommendation-saving", money(r.monthly_saving_usd), { "data-row": String(i) }),
    el("td", { class: "detail" }, r.evidence),
    el("td", { class: "detail" }, el("code", {}, r.change))));
  return table(["Team", "Recommendation", "Saving a month", "Evidence", "Change"], rows);
}

// The forecast of a budget's limit at the end of its period, from the forecast report.
function budgetForecast(doc, b) {
  const team = doc.forecast && doc.forecast.teams.find((t) => t.team === b.team);
  const found = team && team.budgets.find((x) => x.name === b.name);
  if (!found || !found.limits.length) return null;
  const limit = found.limits[0];
  const unit = limit.unit === "tokens" ? "_tokens" : "_usd";
  const show = (v) => (unit === "_usd" ? money(v) : `${count(v)} tokens`);
  const median = limit[`period_end_forecast${unit}`];
  if (median === null || median === undefined) return null;
  let text = `forecast at the period's end ${show(median)} (80 %: ` +
    `${show(limit[`period_end_low80${unit}`])} – ${show(limit[`period_end_high80${unit}`])})`;
  if (limit.exhausted_at) text += `; runs out ${limit.exhausted_at.replace("T", " ").replace("Z", " UTC")}`;
  return el("div", { class: limit.will_exceed ? "forecast over" : "forecast",
    "data-figure": "budget-forecast", "data-budget": b.name }, text);
}

function budgetBar(b, doc) {
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
  const forecast = budgetForecast(doc, b);
  return el("div", { class: "budget" }, label, svg, ...(forecast ? [forecast] : []));
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

  const focus = forecastFocus(doc);
  const month = focus && focus.model !== null ? focus.month : null;
  put("month-forecast", month ? money(month.forecast_usd) : "–");
  put("month-forecast-range", month ? `80 %: ${range(month, 80)}`
    : doc.forecast ? "needs 7+ days of history" : "for periods ending today");
  $("spend-chart").replaceChildren(spendChart(doc));
  $("forecast").replaceChildren(forecastTable(doc));
  $("anomalies").replaceChildren(anomaliesTable(doc));
  $("scorecard").replaceChildren(scorecardTable(doc));
  $("recommendations").replaceChildren(recommendationsTable(doc));

  $("teams").querySelector("tbody").replaceChildren(...doc.teams.map((t) => el("tr", {},
    el("td", {}, t.team),
    figure("team-cost", money(t.cost_usd), { "data-team": t.team }),
    figure("team-list-cost", money(t.list_cost_usd), { "data-team": t.team }),
    figure("team-savings", money(t.savings_usd), { "data-team": t.team }),
    figure("team-requests", count(t.requests), { "data-team": t.team }),
    el("td", {}, money(t.cost_per_request_usd, 6)),
    el("td", {}, money(t.cost_per_1k_tokens_usd, 6)))));

  const budgets = doc.teams.flatMap((t) => t.budgets);
  $("budgets").replaceChildren(...(budgets.length ? budgets.map((b) => budgetBar(b, doc))
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
    if (sessionStorage.getItem(KEY) !== key) return;
    $("updated").textContent = "gateway unreachable; retrying";
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  // Signed out (or in with another key) while this fetch was on its way: drop its answer.
  if (sessionStorage.getItem(KEY) !== key) return;
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
    const doc = await response.json();
    if (sessionStorage.getItem(KEY) !== key) return;
    render(doc);
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
