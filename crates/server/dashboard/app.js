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

function connect() {
  if (source) source.close();
  const token = accessToken();
  // EventSource cannot send headers: the token goes as access_token (over loopback or TLS).
  source = new EventSource("/api/stream" + (token ? "?access_token=" + encodeURIComponent(token) : ""));
  source.addEventListener("snapshot", (e) => {
    lastMessageAt = Date.now();
    setConn("live", "live");
    if (!paused) render(JSON.parse(e.data));
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
  }
  return charts[id];
}

window.addEventListener("resize", () => {
  for (const [id, u] of Object.entries(charts)) u.setSize(size($(id)));
});

const nyDate = (ts) => uPlot.tzDate(new Date(ts * 1000), TZ);

// `wallClock`: x values are New York wall-clock times already (the API's minute stamps).
function timeChart(id, series, data, wallClock) {
  return chart(id, {
    tzDate: wallClock ? (ts) => uPlot.tzDate(new Date(ts * 1000), "UTC") : nyDate,
    // Minute charts always show the hour up to the newest minute (even with one point).
    scales: { x: wallClock ? { time: true, range: (u) => {
      const xs = u.data[0];
      const hi = xs.length ? xs[xs.length - 1] : Date.now() / 1000;
      return [hi - 3540, hi + 30];
    } } : { time: true } },
    axes: [axis(), axis({ size: 56 })],
    series: [{}].concat(series.map((s) => Object.assign({ points: { show: (u) => u.data[0].length < 3 } }, s))),
    cursor: { drag: { x: false, y: false } },
  }, data);
}

// Categorical bars: `labels` along x, one or two series side by side.
function barChart(id, labels, series, values) {
  const holder = $(id);
  holder.labels = labels;
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

function fillTable(id, rows, columns) {
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
  $("last-update").textContent = nyTime.format(new Date(s.generatedAt));
  $("last-update").dataset.ms = String(s.generatedAt);
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

  // Orders per minute: newest first from the API; charts run oldest to newest.
  const minutes = list(s.ordersPerMinute);
  const asc = minutes.slice().reverse();
  const minuteTs = asc.map((m) => Date.parse(m.timestamp.replace(" ", "T") + "Z") / 1000);
  timeChart("chart-minute-orders", [
    { label: "orders", stroke: css("--accent"), width: 2, scale: "y" },
    { label: "revenue ($)", stroke: css("--accent2"), width: 2, scale: "rev", value: (u, v) => (v == null ? "" : money.format(v)) },
  ], [minuteTs, asc.map((m) => m.orders), asc.map((m) => m.revenue)], true);
  timeChart("chart-minute-status", [
    { label: "fraud", stroke: css("--bad"), width: 2 },
    { label: "delivered", stroke: css("--good"), width: 2 },
    { label: "refunded", stroke: css("--warn"), width: 2 },
  ], [minuteTs, asc.map((m) => m.fraud), asc.map((m) => m.delivered), asc.map((m) => m.refunded)], true);
  fillTable("table-minutes", minutes.slice(0, 10), [
    [(m) => m.timestamp], [(m) => count.format(m.orders), "num"], [(m) => money.format(m.revenue), "num"],
    [(m) => count.format(m.fraud), "num"], [(m) => count.format(m.delivered), "num"], [(m) => count.format(m.refunded), "num"],
  ]);

  fillTable("table-latest", list(s.latestOrders), [
    [(o) => o.orderId, "mono"], [(o) => o.timestamp], [(o) => money.format(o.orderTotal), "num"],
    [(o) => o.customerId, "mono"], [(o) => count.format(o.productsOrdered), "num"], [(o) => count.format(o.totalQuantity), "num"],
  ]);

  const popular = s.popular || {};
  const cats = list(popular.categories);
  const items = list(popular.itemNames);
  const ordersVsQty = [
    { label: "orders", fill: css("--accent"), stroke: css("--accent") },
    { label: "quantity", fill: css("--accent2"), stroke: css("--accent2") },
  ];
  barChart("chart-categories", cats.map((c) => c.category), ordersVsQty, [cats.map((c) => c.orders), cats.map((c) => c.quantity)]);
  fillTable("table-categories", cats, [[(c) => c.category], [(c) => count.format(c.orders), "num"], [(c) => count.format(c.quantity), "num"]]);
  barChart("chart-items", items.map((c) => c.itemName), ordersVsQty, [items.map((c) => c.orders), items.map((c) => c.quantity)]);
  fillTable("table-items", items, [[(c) => c.itemName], [(c) => count.format(c.orders), "num"], [(c) => count.format(c.quantity), "num"]]);

  const loc = s.topLocations || {};
  const cities = list(loc.cities);
  const states = list(loc.states);
  const one = [{ label: "orders", fill: css("--accent"), stroke: css("--accent") }];
  barChart("chart-cities", cities.map((c) => c.city), one, [cities.map((c) => c.totalOrders)]);
  fillTable("table-cities", cities, [[(c) => c.city], [(c) => count.format(c.totalOrders), "num"]]);
  barChart("chart-states", states.map((c) => c.state), one, [states.map((c) => c.totalOrders)]);
  fillTable("table-states", states, [[(c) => c.state], [(c) => count.format(c.totalOrders), "num"]]);

  const coupons = list(s.coupons);
  barChart("chart-coupons", coupons.map((c) => c.coupon_code), [{ label: "times used", fill: css("--accent2"), stroke: css("--accent2") }], [coupons.map((c) => c.times_used)]);
  fillTable("table-coupons", coupons, [[(c) => c.coupon_code, "mono"], [(c) => count.format(c.times_used), "num"]]);
}

connect();
