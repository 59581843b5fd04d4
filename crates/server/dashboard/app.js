// rtap dashboard: renders the snapshots that /api/stream pushes every second.
"use strict";

const TZ = "America/New_York";
const STALE_AFTER_MS = 3500;
const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const count = new Intl.NumberFormat("en-US");
const nyTime = new Intl.DateTimeFormat("en-US", {
  timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

const $ = (id) => document.getElementById(id);
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

let paused = false;
let lastMessageAt = 0;
let source = null;
const charts = {};
/// The newest snapshot and range answer drawn (redrawn when the theme changes).
let lastSnapshot = null;
let lastRange = null;
/// What is on the page (while paused, the newest snapshot is kept but not shown).
let shownSnapshot = null;

const params = new URLSearchParams(location.search);
const RANGES = {
  live: "last minute", "5m": "last 5 minutes", "1h": "last hour", "24h": "last 24 hours",
  "7d": "last 7 days", "30d": "last 30 days",
};
/// "live": the panels of SPEC section 7 from the pushed snapshots; otherwise the history panels
/// (series and top lists) come from /api/range for that range. The URL keeps the choice.
let range = Object.hasOwn(RANGES, params.get("range") || "") ? params.get("range") : "live";
const RANGE_REFRESH_MS = 10000;
const STATUS_REFRESH_MS = 1000;

// ---------- connection and staleness ----------

function setConn(state, text) {
  const el = $("conn");
  if (el.dataset.state !== state) {
    el.dataset.state = state;
    el.querySelector("b").textContent = text;
    document.body.classList.toggle("stale", state !== "live");
  }
}

// The access token, when rtap was started with one and protects every endpoint: given once as
// http://host:8501/#token=..., kept for this tab only (sessionStorage), and never sent in a
// Referer or a server log (a fragment is not sent).
function accessToken() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("rtap-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("rtap-token");
}

/// GET `path` as JSON, with the access token when there is one; throws with the server's error.
async function api(path) {
  const token = sessionStorage.getItem("rtap-token");
  const r = await fetch(path, { headers: token ? { Authorization: "Bearer " + token } : {} });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
  return body;
}

function connect() {
  if (source) source.close();
  const token = accessToken();
  // EventSource cannot send headers: the token goes as access_token (over loopback or TLS).
  source = new EventSource("/api/stream" + (token ? "?access_token=" + encodeURIComponent(token) : ""));
  source.addEventListener("snapshot", (e) => {
    lastMessageAt = Date.now();
    setConn("live", "live");
    lastSnapshot = JSON.parse(e.data);
    if (!paused) render(lastSnapshot);
  });
  source.onerror = () => {
    // The browser retries by itself; a closed source is reopened here.
    if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  };
}

setInterval(() => {
  const age = Date.now() - lastMessageAt;
  if (!source || source.readyState !== EventSource.OPEN) {
    setConn("offline", lastMessageAt ? "server unreachable: reconnecting" : "connecting");
  } else if (age > STALE_AFTER_MS) {
    setConn("stale", "stale: no update for " + Math.round(age / 1000) + " s");
  }
}, 500);

$("pause").addEventListener("click", (e) => {
  paused = !paused;
  e.target.setAttribute("aria-pressed", String(paused));
  e.target.textContent = paused ? "Resume" : "Pause";
  if (!paused) {
    if (lastSnapshot) render(lastSnapshot);
    if (lastRange && range !== "live") renderHistory(lastRange, lastRange.bucket);
  }
});

// ---------- theme ----------

// Light or dark: the system's choice unless one is picked (?theme=dark, or the button, kept in
// localStorage).
let themeChoice = ["light", "dark"].includes(params.get("theme")) ? params.get("theme") : localStorage.getItem("rtap-theme");

function isDark() {
  return themeChoice ? themeChoice === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
}

function applyTheme() {
  if (themeChoice) document.documentElement.dataset.theme = themeChoice;
  else delete document.documentElement.dataset.theme;
  $("theme").textContent = isDark() ? "Light" : "Dark";
  // Charts take their colours when made: make them again.
  for (const id of Object.keys(charts)) {
    charts[id].destroy();
    delete charts[id];
  }
  if (shownSnapshot) render(shownSnapshot);
  if (lastRange && range !== "live") renderHistory(lastRange, lastRange.bucket);
}

$("theme").addEventListener("click", () => {
  themeChoice = isDark() ? "light" : "dark";
  localStorage.setItem("rtap-theme", themeChoice);
  applyTheme();
});

// ---------- charts ----------

function size(el) {
  return { width: Math.max(el.clientWidth, 260), height: 220 };
}

function axis(extra) {
  return Object.assign({ stroke: css("--muted"), grid: { stroke: css("--line"), width: 1 }, ticks: { stroke: css("--line") } }, extra || {});
}

function chart(id, opts, data) {
  const el = $(id);
  if (!charts[id]) {
    charts[id] = new uPlot(Object.assign(size(el), opts), data, el);
  } else {
    charts[id].setData(data);
    // Categorical x values stay 0..n-1 while their labels change: uPlot keeps the tick labels
    // of an unchanged scale, so the axes are recomputed from this snapshot's labels.
    charts[id].redraw(false, true);
  }
  // Without a pointer over the chart, the legend shows the newest values, not "--".
  const last = data[0].length - 1;
  if (last >= 0) charts[id].setLegend({ idx: last });
  return charts[id];
}

// What each chart holds, for the browser tests: uPlot's own data and drawn tick labels.
window.rtapCharts = charts;

window.addEventListener("resize", () => {
  for (const [id, u] of Object.entries(charts)) u.setSize(size($(id)));
});

const nyDate = (ts) => uPlot.tzDate(new Date(ts * 1000), TZ);

const BUCKET_SECONDS = { minute: 60, hour: 3600, day: 86400 };

// A chart's x value as its legend shows it: New York time for the live series, the bucket's own
// wall-clock stamp for the per-minute/hour/day series.
function stampText(v, bucket, tz) {
  if (!bucket) return nyTime.format(new Date(v * 1000));
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
    timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).formatToParts(new Date(v * 1000)).map((p) => [p.type, p.value]));
  const day = `${parts.year}-${parts.month}-${parts.day}`;
  const time = `${parts.hour}:${parts.minute}`;
  if (bucket >= 86400) return day;
  if (bucket >= 3600) return day + " " + time;
  return time;
}

// `bucket`: x values are New York wall-clock times already (the API's stamps), one per
// `bucket` seconds; the axis spans the buckets there are (at least five), not the whole range.
// A series on scale "rev" (money) gets an axis of its own on the right: two quantities never
// share one axis.
// `zone`: the time zone the x values are read in ("UTC" for wall-clock stamps).
function timeChart(id, series, data, bucket, zone) {
  const wallClock = bucket > 0;
  const tz = zone || TZ;
  const axes = [axis(), axis({ size: 56, scale: "y" })];
  if (series.some((s) => s.scale === "rev")) {
    axes.push(axis({ scale: "rev", side: 1, size: 72, grid: { show: false },
      values: (u, vals) => vals.map((v) => "$" + count.format(v)) }));
  }
  return chart(id, {
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), tz),
    // Minute charts span the minutes they have (at least five), not always the whole hour.
    scales: { x: wallClock ? { time: true, range: (u) => {
      const xs = u.data[0];
      const hi = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
      const lo = xs.length ? Math.min(xs[0], hi - 4 * bucket) : hi - 4 * bucket;
      return [lo - bucket / 2, hi + bucket / 2];
    } } : { time: true } },
    axes,
    series: [{ value: (u, v) => (v == null ? "" : stampText(v, bucket, tz)) }].concat(series.map((s) => Object.assign({ points: { show: (u) => u.data[0].length < 3 } }, s))),
    cursor: { drag: { x: false, y: false } },
  }, data);
}

// Categorical bars: `labels` along x, one or two series side by side.
function barChart(id, labels, series, values) {
  const holder = $(id);
  holder.labels = labels;
  holder.title = labels.join("\n");
  const x = labels.map((_, i) => i);
  const align = series.length > 1 ? [-1, 1] : [0];
  const opts = {
    scales: { x: { time: false, range: () => [-0.5, Math.max(labels.length, 1) - 0.5] }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [
      axis({ splits: () => (holder.labels || []).map((_, i) => i), values: (u, vals) => vals.map((v) => short(holder.labels[v] ?? "")), size: 40 }),
      axis({ size: 48 }),
    ],
    series: [{ label: "", value: (u, v) => (v == null ? "" : holder.labels[v] ?? "") }].concat(series.map((s, i) => Object.assign({
      width: 0,
      paths: uPlot.paths.bars({ size: [series.length > 1 ? 0.38 : 0.6, 64], align: align[i] }),
      points: { show: false },
    }, s))),
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
  };
  return chart(id, opts, [x].concat(values));
}

// Bar labels are shortened so neighbours never run into each other; the full names are in
// the table below, in the chart's tooltip (title) and in the legend when hovered.
function short(s) {
  return s.length > 14 ? s.slice(0, 13) + "…" : s;
}

// ---------- tables ----------

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// `key`: rows that open a drill-down carry their name (and take the keyboard focus).
function fillTable(id, rows, columns, key) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell("nothing in this period", "empty");
    td.colSpan = columns.length;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const r of rows) {
    const tr = document.createElement("tr");
    if (key) {
      tr.dataset.key = key(r);
      tr.tabIndex = 0;
    }
    for (const [get, cls] of columns) tr.appendChild(cell(get(r), cls));
    body.appendChild(tr);
  }
}

const list = (v) => (Array.isArray(v) ? v : []);

// ---------- render ----------

const KPIS = [
  ["orders", "kpi-orders", (v) => count.format(v)],
  ["totalRevenue", "kpi-revenue", (v) => money.format(v)],
  ["avgOrderValue", "kpi-avg", (v) => money.format(v)],
  ["fraudCount", "kpi-fraud", (v) => count.format(v)],
  ["deliveredCount", "kpi-delivered", (v) => count.format(v)],
  ["refundedCount", "kpi-refunded", (v) => count.format(v)],
];

function renderKpis(overview) {
  const cur = overview.currentTimePeriod || {};
  const prev = overview.previousTimePeriod || {};
  for (const [key, id, fmt] of KPIS) {
    const v = cur[key] ?? 0;
    const p = prev[key] ?? 0;
    const el = $(id);
    el.textContent = fmt(v);
    el.dataset.value = String(v);
    const d = $(id + "-delta");
    const diff = v - p;
    const pct = p ? ` (${diff >= 0 ? "+" : ""}${((diff / p) * 100).toFixed(1)}%)` : "";
    d.textContent = diff === 0 ? "= previous minute" : `${diff > 0 ? "▲" : "▼"} ${fmt(Math.abs(diff))}${pct} vs previous minute`;
    d.className = "delta " + (diff > 0 ? "up" : diff < 0 ? "down" : "");
  }
}

function render(s) {
  shownSnapshot = s;
  $("last-update").textContent = nyTime.format(new Date(s.generatedAt));
  $("last-update").dataset.ms = String(s.generatedAt);
  // Instances in one consumer group hold only their partitions: say so above the numbers.
  const cov = s.coverage;
  const partial = Boolean(cov && cov.state === "partial");
  $("coverage").hidden = !partial;
  $("coverage").textContent = partial ? "Partial view: this instance holds " + cov.text : "";
  renderKpis(s.overview || {});

  const pts = list(s.series && s.series.points);
  timeChart("chart-live", [
    { label: "orders/s", stroke: css("--accent"), fill: css("--accent") + "22", width: 2 },
  ], [pts.map((p) => p.start / 1000), pts.map((p) => p.orders)]);

  const cur = (s.overview || {}).currentTimePeriod || {};
  const prev = (s.overview || {}).previousTimePeriod || {};
  barChart("chart-compare", ["Fraud", "Delivered", "Refunded"], [
    { label: "last minute", fill: css("--accent"), stroke: css("--accent") },
    { label: "minute before", fill: css("--accent2"), stroke: css("--accent2") },
  ], [
    [cur.fraudCount ?? 0, cur.deliveredCount ?? 0, cur.refundedCount ?? 0],
    [prev.fraudCount ?? 0, prev.deliveredCount ?? 0, prev.refundedCount ?? 0],
  ]);

  fillTable("table-latest", list(s.latestOrders), [
    [(o) => o.orderId, "mono"], [(o) => o.timestamp], [(o) => money.format(o.orderTotal), "num"],
    [(o) => o.customerId, "mono"], [(o) => count.format(o.productsOrdered), "num"], [(o) => count.format(o.totalQuantity), "num"],
  ]);

  if (range === "live") {
    const popular = s.popular || {};
    const loc = s.topLocations || {};
    renderHistory({
      series: list(s.ordersPerMinute),
      categories: popular.categories, itemNames: popular.itemNames,
      cities: loc.cities, states: loc.states, coupons: s.coupons,
    }, "minute");
  }
}

const UNIT = { minute: ["Minute", "Orders per minute"], hour: ["Hour", "Orders per hour"], day: ["Day", "Orders per day"] };

// The history panels: orders over time (newest first from the API; charts run oldest to newest)
// and the top lists, from one snapshot or one /api/range answer.
function renderHistory(h, bucket) {
  const [unit, title] = UNIT[bucket] || UNIT.minute;
  $("series-title").textContent = title;
  $("series-sub").textContent = range === "live" ? "last hour" : RANGES[range];
  $("series-unit").textContent = unit;
  const secs = BUCKET_SECONDS[bucket] || 60;
  const rows = list(h.series);
  const asc = rows.slice().reverse();
  // Minutes and hours of a range are placed by their epoch start, read in New York time (so a
  // change of daylight saving time neither repeats nor skips an hour); days and the live
  // minutes (which carry only a New York stamp) by their stamp, read as wall-clock time.
  const byStart = bucket !== "day" && asc.length > 0 && asc.every((m) => typeof m.start === "number");
  const zone = byStart ? TZ : "UTC";
  const xs = asc.map((m) => (byStart ? m.start / 1000 : Date.parse(m.timestamp.replace(" ", "T") + "Z") / 1000));
  timeChart("chart-minute-orders", [
    { label: "orders", stroke: css("--accent"), width: 2, scale: "y" },
    { label: "revenue ($)", stroke: css("--accent2"), width: 2, scale: "rev", value: (u, v) => (v == null ? "" : money.format(v)) },
  ], [xs, asc.map((m) => m.orders), asc.map((m) => m.revenue)], secs, zone);
  timeChart("chart-minute-status", [
    { label: "fraud", stroke: css("--bad"), width: 2 },
    { label: "delivered", stroke: css("--good"), width: 2 },
    { label: "refunded", stroke: css("--warn"), width: 2 },
  ], [xs, asc.map((m) => m.fraud), asc.map((m) => m.delivered), asc.map((m) => m.refunded)], secs, zone);
  const stamp = bucket === "day" ? (m) => m.timestamp.slice(0, 10) : bucket === "hour" ? (m) => m.timestamp.slice(0, 16) : (m) => m.timestamp;
  fillTable("table-minutes", rows.slice(0, 10), [
    [stamp], [(m) => count.format(m.orders), "num"], [(m) => money.format(m.revenue), "num"],
    [(m) => count.format(m.fraud), "num"], [(m) => count.format(m.delivered), "num"], [(m) => count.format(m.refunded), "num"],
  ]);

  const cats = list(h.categories);
  const items = list(h.itemNames);
  const ordersVsQty = [
    { label: "orders", fill: css("--accent"), stroke: css("--accent") },
    { label: "quantity", fill: css("--accent2"), stroke: css("--accent2") },
  ];
  barChart("chart-categories", cats.map((c) => c.category), ordersVsQty, [cats.map((c) => c.orders), cats.map((c) => c.quantity)]);
  fillTable("table-categories", cats, [[(c) => c.category], [(c) => count.format(c.orders), "num"], [(c) => count.format(c.quantity), "num"]], (c) => c.category);
  barChart("chart-items", items.map((c) => c.itemName), ordersVsQty, [items.map((c) => c.orders), items.map((c) => c.quantity)]);
  fillTable("table-items", items, [[(c) => c.itemName], [(c) => count.format(c.orders), "num"], [(c) => count.format(c.quantity), "num"]]);

  const cities = list(h.cities);
  const states = list(h.states);
  const one = [{ label: "orders", fill: css("--accent"), stroke: css("--accent") }];
  barChart("chart-cities", cities.map((c) => c.city), one, [cities.map((c) => c.totalOrders)]);
  fillTable("table-cities", cities, [[(c) => c.city], [(c) => count.format(c.totalOrders), "num"]]);
  barChart("chart-states", states.map((c) => c.state), one, [states.map((c) => c.totalOrders)]);
  fillTable("table-states", states, [[(c) => c.state], [(c) => count.format(c.totalOrders), "num"]], (c) => c.state);

  const coupons = list(h.coupons);
  barChart("chart-coupons", coupons.map((c) => c.coupon_code), [{ label: "times used", fill: css("--accent2"), stroke: css("--accent2") }], [coupons.map((c) => c.times_used)]);
  fillTable("table-coupons", coupons, [[(c) => c.coupon_code, "mono"], [(c) => count.format(c.times_used), "num"]]);
}

// ---------- time range ----------

let rangeTimer = null;
let rangeAsked = 0;

function setRange(r) {
  range = r;
  for (const b of document.querySelectorAll("#ranges button")) b.setAttribute("aria-pressed", String(b.dataset.range === r));
  const q = new URLSearchParams(location.search);
  if (r === "live") q.delete("range");
  else q.set("range", r);
  const qs = q.toString();
  history.replaceState(null, "", location.pathname + (qs ? "?" + qs : "") + location.hash);
  for (const el of document.querySelectorAll(".range-label")) el.textContent = RANGES[r];
  document.body.dataset.range = r;
  lastRange = null;
  clearInterval(rangeTimer);
  if (r === "live") {
    if (lastSnapshot) render(lastSnapshot);
  } else {
    loadRange();
    rangeTimer = setInterval(loadRange, RANGE_REFRESH_MS);
  }
  for (const kind of Object.keys(drills)) loadDrill(kind);
}

async function loadRange() {
  const asked = ++rangeAsked;
  const want = range;
  const holder = $("ranges");
  try {
    const r = await api("/api/range?range=" + encodeURIComponent(want));
    if (asked !== rangeAsked || want !== range) return;
    lastRange = r;
    // What the history panels show, for the browser tests.
    window.rtapRange = r;
    holder.dataset.loaded = r.range + "@" + r.to;
    holder.removeAttribute("title");
    holder.classList.remove("failed");
    if (!paused) renderHistory(r, r.bucket);
  } catch (e) {
    if (asked !== rangeAsked) return;
    holder.title = "could not load the range: " + e.message;
    holder.classList.add("failed");
  }
}

for (const b of document.querySelectorAll("#ranges button")) {
  b.addEventListener("click", () => setRange(b.dataset.range));
}

// ---------- drill-down: a category's items, a state's cities ----------

const drills = { category: null, state: null };
/// Per kind: the number of the newest request (older answers are dropped) and whether one is
/// on its way (the periodic refresh skips then).
const drillAsked = { category: 0, state: 0 };
const drillBusy = { category: false, state: false };

async function loadDrill(kind, periodic) {
  const box = $("drill-" + kind);
  const name = drills[kind];
  if (!name) {
    box.hidden = true;
    return;
  }
  if (periodic && drillBusy[kind]) return;
  const asked = ++drillAsked[kind];
  drillBusy[kind] = true;
  box.hidden = false;
  box.querySelector(".drill-name").textContent = name;
  const want = range === "live" ? "1m" : range;
  try {
    const r = await api(`/api/drill?range=${want}&${kind}=${encodeURIComponent(name)}`);
    if (asked !== drillAsked[kind]) return;
    const table = box.querySelector("table");
    table.id = "drill-table-" + kind;
    const cols = kind === "category"
      ? [[(c) => c.itemName], [(c) => count.format(c.orders), "num"], [(c) => count.format(c.quantity), "num"]]
      : [[(c) => c.city], [(c) => count.format(c.totalOrders), "num"]];
    fillTable(table.id, list(r.rows), cols);
    box.dataset.loaded = r.range + ":" + name;
  } catch (e) {
    if (asked !== drillAsked[kind]) return;
    box.dataset.loaded = "";
    const tr = document.createElement("tr");
    tr.appendChild(cell("could not load: " + e.message, "empty"));
    box.querySelector("tbody").replaceChildren(tr);
  } finally {
    if (asked === drillAsked[kind]) drillBusy[kind] = false;
  }
}

for (const [kind, tableId] of [["category", "table-categories"], ["state", "table-states"]]) {
  const open = (tr) => {
    if (!tr || !tr.dataset.key) return;
    drills[kind] = tr.dataset.key;
    loadDrill(kind);
  };
  $(tableId).addEventListener("click", (e) => open(e.target.closest("tr")));
  $(tableId).addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") open(e.target.closest("tr"));
  });
  $("drill-" + kind).querySelector(".drill-close").addEventListener("click", () => {
    drills[kind] = null;
    loadDrill(kind);
  });
}
setInterval(() => {
  if (!paused) for (const kind of Object.keys(drills)) if (drills[kind]) loadDrill(kind, true);
}, RANGE_REFRESH_MS / 2);

// ---------- the pipeline strip (/api/status) ----------

const num = (v) => (typeof v === "number" ? count.format(v) : "–");

// One line of what matters for each stage.
function stageFacts(st) {
  const d = st.detail || {};
  switch (st.name) {
    case "store": return `${num(d.orders)} orders`;
    case "generator": return `${num(d.ordersStored)} made` + (d.restarts ? ` · ${num(d.restarts)} restarts` : "");
    case "producer": return `${num(d.confirmed)} sent` + (d.failed ? ` · ${num(d.failed)} failed` : "") + (d.inFlight ? ` · ${num(d.inFlight)} in flight` : "");
    case "ingest": {
      const parts = [`${num(d.ratePerSecond)}/s`];
      if (d.lag != null) parts.push(`lag ${num(d.lag)}`);
      parts.push(`${num(d.deadLettered)} dead letters`, `${num(d.late)} late`);
      if (d.lastCheckpointAtMs) parts.push(`checkpoint ${Math.max(0, Math.round((Date.now() - d.lastCheckpointAtMs) / 1000))} s ago`);
      return parts.join(" · ");
    }
    case "table": return `${num(d.rows)} rows · ${num(d.segments)} segments`;
    case "windows": return `${num(d.late)} late`;
    default: return d.lag != null ? `lag ${num(d.lag)}` : "";
  }
}

function stageLevel(st) {
  if (st.state === "failed" || st.state === "stopped") return "bad";
  if (st.state === "paused" || st.state === "waiting" || st.last_error) return "warn";
  return "ok";
}

/// Every change of a stage's level, for the browser tests (a failure may show only briefly).
window.rtapStageLog = [];
const stageLevels = {};

function renderStatus(s) {
  const strip = $("pipeline");
  strip.dataset.status = s.status;
  for (const st of list(s.stages)) {
    const level = stageLevel(st);
    if (stageLevels[st.name] !== level) {
      stageLevels[st.name] = level;
      window.rtapStageLog.push({ stage: st.name, level, state: st.state, error: st.last_error || "" });
      if (window.rtapStageLog.length > 500) window.rtapStageLog.shift();
    }
  }
  const ol = $("stages");
  ol.replaceChildren();
  for (const st of list(s.stages)) {
    const li = document.createElement("li");
    li.className = "stage";
    li.dataset.stage = st.name;
    li.dataset.state = st.state;
    li.dataset.level = stageLevel(st);
    const name = document.createElement("b");
    name.textContent = st.name;
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = st.state;
    const facts = document.createElement("span");
    facts.className = "facts";
    facts.textContent = stageFacts(st);
    li.append(name, state, facts);
    if (st.last_error) {
      const err = document.createElement("span");
      err.className = "error";
      err.textContent = st.last_error;
      li.append(err);
      li.title = st.last_error;
    }
    ol.appendChild(li);
  }
}

async function loadStatus() {
  try {
    renderStatus(await api("/api/status"));
  } catch (e) {
    $("pipeline").dataset.status = "unreachable";
  }
}

accessToken();
applyTheme();
setRange(range);
loadStatus();
setInterval(loadStatus, STATUS_REFRESH_MS);
connect();
