//! The dashboard in a real headless Chromium (driven through ChromeDriver's WebDriver API):
//! every panel renders with data, the page shows the API's numbers, updates by itself, shows
//! when the server is gone and recovers when it is back. Also: the README's first command on a
//! fresh directory answers on 5001, 8888 and 8501 within 5 s, and `/metrics` parses as
//! Prometheus text with counters that move.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{free_port, get_json, rtap, terminate};
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A ChromeDriver process and one headless Chromium session, spoken to in WebDriver JSON.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Browser {
    fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/install-browser.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let rt = runtime();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-component-update", "--window-size=1400,2400"]
            }
        }}});
        let session = loop {
            let r: Option<Value> = rt.block_on(async {
                http.post(format!("{base}/session"))
                    .json(&caps)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            });
            if let Some(id) = r.as_ref().and_then(|v| v["value"]["sessionId"].as_str()) {
                break id.to_string();
            }
            assert!(Instant::now() < deadline, "no browser session: {r:?}");
            std::thread::sleep(Duration::from_millis(200));
        };
        Browser {
            driver,
            base,
            session,
            rt,
            http,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        self.rt.block_on(async {
            let req = self.http.request(method, url);
            let req = if body.is_null() { req } else { req.json(&body) };
            let v: Value = req
                .send()
                .await
                .expect("webdriver")
                .json()
                .await
                .expect("json");
            v["value"].clone()
        })
    }

    fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn screenshot(&self, path: &Path) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64 png"))
            .expect("png");
        std::fs::write(path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }

    /// Polls `script` until `ok` accepts its value.
    fn wait_for(
        &self,
        what: &str,
        script: &str,
        ok: impl Fn(&Value) -> bool,
        limit: Duration,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.js(script);
            if ok(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: last value {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call(reqwest::Method::DELETE, "", Value::Null);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn start(data: &Path, ports: (u16, u16, u16), extra: &[&str]) -> common::Running {
    start_env(data, ports, extra, &[])
}

/// [`start`] with environment variables set.
fn start_env(
    data: &Path,
    ports: (u16, u16, u16),
    extra: &[&str],
    env: &[(&str, &str)],
) -> common::Running {
    let mut cmd = rtap();
    cmd.envs(env.iter().copied());
    cmd.args([
        "up",
        "--api-port",
        &ports.0.to_string(),
        "--http-port",
        &ports.1.to_string(),
    ])
    .args(["--dashboard-port", &ports.2.to_string(), "--data-dir"])
    .arg(data)
    .args(extra)
    .stderr(Stdio::null());
    common::start(cmd).child
}

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

const TEXTS: &str = "return {
  conn: document.getElementById('conn').dataset.state,
  updated: Number(document.getElementById('last-update').dataset.ms || 0),
  orders: Number(document.getElementById('kpi-orders').dataset.value),
  revenue: Number(document.getElementById('kpi-revenue').dataset.value),
  fraud: Number(document.getElementById('kpi-fraud').dataset.value),
  delivered: Number(document.getElementById('kpi-delivered').dataset.value),
  refunded: Number(document.getElementById('kpi-refunded').dataset.value),
  latest: [...document.querySelectorAll('#table-latest tbody tr')].map(r => r.cells[0].textContent),
  minutes: [...document.querySelectorAll('#table-minutes tbody tr')].map(r => r.cells[1].textContent),
  categories: [...document.querySelectorAll('#table-categories tbody tr')].map(r => r.cells[0].textContent),
  items: [...document.querySelectorAll('#table-items tbody tr')].map(r => r.cells[0].textContent),
  cities: [...document.querySelectorAll('#table-cities tbody tr')].map(r => r.cells[0].textContent),
  states: [...document.querySelectorAll('#table-states tbody tr')].map(r => r.cells[0].textContent),
  coupons: [...document.querySelectorAll('#table-coupons tbody tr')].map(r => r.cells[0].textContent),
  charts: [...document.querySelectorAll('.chart')].map(c => c.querySelectorAll('canvas').length),
};";

fn names(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x[key].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_dashboard_shows_the_api_numbers_live_and_survives_an_outage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let ports = (free_port(), free_port(), free_port());
    let mut rtap_up = start(
        &data,
        ports,
        &["--rate", "400", "--max-orders", "1200", "--seed", "21"],
    );
    let http = format!("http://127.0.0.1:{}", ports.1);
    let page = format!("http://127.0.0.1:{}/", ports.2);
    let browser = Browser::start();
    browser.goto(&page);
    let first = browser.wait_for(
        "the page goes live",
        TEXTS,
        |v| v["conn"] == "live" && v["orders"].as_u64().is_some_and(|n| n > 0),
        Duration::from_secs(15),
    );
    // It updates by itself: newer snapshots and more orders arrive without a reload.
    browser.wait_for(
        "the page updates by itself",
        TEXTS,
        |v| {
            v["updated"].as_f64() > first["updated"].as_f64()
                && v["orders"].as_u64() > first["orders"].as_u64()
        },
        Duration::from_secs(10),
    );
    // Generation stops at 1,200 orders; then the page and the API must agree exactly.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (page_view, api) = loop {
        let v = browser.js(TEXTS);
        let overview = get_json(&format!("{http}/orders/overview"))
            .expect("overview")
            .1;
        let cur = &overview["currentTimePeriod"];
        let agree = v["orders"] == cur["orders"]
            && cur["orders"] == 1200
            && (v["revenue"].as_f64().unwrap_or(-1.0)
                - cur["totalRevenue"].as_f64().unwrap_or(-2.0))
            .abs()
                < 0.005
            && v["fraud"] == cur["fraudCount"]
            && v["delivered"] == cur["deliveredCount"]
            && v["refunded"] == cur["refundedCount"];
        if agree {
            break (v, overview);
        }
        assert!(Instant::now() < deadline, "page {v} vs API {overview}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = api;
    let latest = get_json(&format!("{http}/orders/latestorders"))
        .expect("latest")
        .1;
    assert_eq!(strings(&page_view["latest"]), names(&latest, "orderId"));
    let per_minute = get_json(&format!("{http}/orders/ordersperminute"))
        .expect("per minute")
        .1;
    let api_minutes: Vec<String> = per_minute
        .as_array()
        .expect("minutes")
        .iter()
        .take(10)
        .map(|m| m["orders"].as_u64().expect("orders").to_string())
        .collect();
    let page_minutes: Vec<String> = strings(&page_view["minutes"])
        .iter()
        .map(|s| s.replace(',', ""))
        .collect();
    assert_eq!(page_minutes, api_minutes);
    let popular = get_json(&format!("{http}/orders/popular"))
        .expect("popular")
        .1;
    assert_eq!(
        strings(&page_view["categories"]),
        names(&popular["categories"], "category")
    );
    assert_eq!(
        strings(&page_view["items"]),
        names(&popular["itemNames"], "itemName")
    );
    let locations = get_json(&format!("{http}/orders/toplocations"))
        .expect("locations")
        .1;
    assert_eq!(
        strings(&page_view["cities"]),
        names(&locations["cities"], "city")
    );
    assert_eq!(
        strings(&page_view["states"]),
        names(&locations["states"], "state")
    );
    let coupons = get_json(&format!("{http}/orders/couponslastminute"))
        .expect("coupons")
        .1;
    assert!(
        !names(&coupons, "coupon_code").is_empty(),
        "1,200 orders used some coupons"
    );
    assert_eq!(
        strings(&page_view["coupons"]),
        names(&coupons, "coupon_code")
    );
    for panel in [
        "categories",
        "items",
        "cities",
        "states",
        "latest",
        "minutes",
    ] {
        assert!(!strings(&page_view[panel]).is_empty(), "{panel} is empty");
    }
    let charts = page_view["charts"].as_array().expect("charts");
    assert_eq!(charts.len(), 9);
    assert!(
        charts.iter().all(|c| c.as_u64() >= Some(1)),
        "every chart drew: {charts:?}"
    );
    browser.screenshot(&shots_dir().join("dashboard-live.png"));

    // The server goes away: the page says so. It comes back: the page recovers by itself.
    assert!(terminate(&mut rtap_up).success());
    browser.wait_for(
        "the stale indicator",
        TEXTS,
        |v| v["conn"] == "offline" || v["conn"] == "stale",
        Duration::from_secs(10),
    );
    browser.screenshot(&shots_dir().join("dashboard-offline.png"));
    let gone_at = browser.js(TEXTS)["updated"].clone();
    let mut rtap_up = start(&data, ports, &["--max-orders", "0"]);
    browser.wait_for(
        "the page recovers",
        TEXTS,
        |v| v["conn"] == "live" && v["updated"].as_f64() > gone_at.as_f64() && v["orders"] == 1200,
        Duration::from_secs(20),
    );
    assert!(terminate(&mut rtap_up).success());
}

#[test]
fn the_readme_command_serves_all_three_ports_with_data_within_5_seconds() {
    // A new user's `rtap up`: no flags, a fresh directory, the default ports.
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut child = rtap()
        .arg("up")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rtap up");
    let mut ok = [false; 3];
    while started.elapsed() < Duration::from_secs(5) && !ok.iter().all(|o| *o) {
        ok[0] = ok[0]
            || get_json("http://127.0.0.1:5001/orders?page=1&limit=5").is_some_and(|(s, v)| {
                s == 200 && v["data"].as_array().is_some_and(|d| !d.is_empty())
            });
        ok[1] = ok[1]
            || get_json("http://127.0.0.1:8888/orders/latestorders")
                .is_some_and(|(s, v)| s == 200 && v.as_array().is_some_and(|d| !d.is_empty()));
        ok[2] = ok[2]
            || get_json("http://127.0.0.1:8501/api/snapshot").is_some_and(|(s, v)| {
                s == 200 && v["overview"]["currentTimePeriod"]["orders"].as_u64() > Some(0)
            });
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    // Once rows are sealed into segment files under the relative ./data, SQL still reads them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sealed_ok = false;
    while Instant::now() < deadline {
        let segments = get_json("http://127.0.0.1:8888/api/status").and_then(|(_, v)| {
            v["stages"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "table")?["detail"]["segments"]
                .as_u64()
        });
        if segments.is_some_and(|n| n >= 1) {
            sealed_ok = get_json("http://127.0.0.1:8888/orders/ordersperminute")
                .is_some_and(|(s, v)| s == 200 && v.as_array().is_some_and(|d| !d.is_empty()));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = terminate(&mut child);
    assert_eq!(
        ok, [true; 3],
        "5001, 8888, 8501 answering with data after {elapsed:?}"
    );
    assert!(
        sealed_ok,
        "SQL over sealed segments under the default ./data failed"
    );
    assert!(dir.path().join("data").join("orders.redb").exists());
}

#[test]
fn metrics_parse_as_prometheus_text_and_counters_move() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = (free_port(), free_port(), free_port());
    let mut child = start(&dir.path().join("data"), ports, &["--rate", "500"]);
    let http = format!("http://127.0.0.1:{}", ports.1);
    let rt = runtime();
    let scrape = |url: &str| -> prometheus_parse::Scrape {
        let text = rt.block_on(async {
            reqwest::get(url)
                .await
                .expect("get")
                .text()
                .await
                .expect("text")
        });
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("Prometheus text")
    };
    let value = |s: &prometheus_parse::Scrape, name: &str| -> f64 {
        s.samples
            .iter()
            .find(|x| x.metric == name)
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name}"))
    };
    std::thread::sleep(Duration::from_millis(1_500));
    let _ = get_json(&format!("{http}/orders/popular"));
    let a = scrape(&format!("{http}/metrics"));
    std::thread::sleep(Duration::from_millis(1_500));
    let b = scrape(&format!("http://127.0.0.1:{}/metrics", ports.2));
    let rows = |s: &prometheus_parse::Scrape| value(s, "rtap_ingest_rows_total");
    assert!(
        rows(&a) > 0.0 && rows(&b) > rows(&a),
        "ingest counter moves: {} -> {}",
        rows(&a),
        rows(&b)
    );
    assert!(value(&b, "rtap_table_rows") >= rows(&a));
    // Flags are 0 or 1 (NaN, a missing value, fails too); the merge count a whole number.
    for flag in ["rtap_table_merging", "rtap_table_merge_due"] {
        let v = value(&b, flag);
        assert!(v == 0.0 || v == 1.0, "{flag} is {v}");
    }
    let merges = value(&b, "rtap_table_merges_total");
    assert!(merges >= 0.0 && merges.fract() == 0.0, "merges {merges}");
    // The column cache stays within its default budget (sql.column_cache_bytes, 16 MiB).
    let cached = value(&b, "rtap_sql_column_cache_bytes");
    assert!(
        (0.0..=16.0 * 1024.0 * 1024.0).contains(&cached),
        "column cache {cached}"
    );
    for counter in [
        "rtap_sql_column_cache_hits_total",
        "rtap_sql_column_cache_decoded_total",
    ] {
        let v = value(&b, counter);
        assert!(v >= 0.0 && v.fract() == 0.0, "{counter} is {v}");
    }
    assert_eq!(value(&b, "rtap_ingest_dead_letters_total"), 0.0);
    let histogram = b
        .samples
        .iter()
        .find(|x| {
            x.metric == "rtap_http_request_duration_seconds"
                && x.labels.get("endpoint") == Some("/orders/popular")
        })
        .expect("a latency histogram for /orders/popular");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.iter().any(|h| h.count >= 1.0), "{buckets:?}")
        }
        other => panic!("not a histogram: {other:?}"),
    }
    let status = get_json(&format!("{http}/api/status")).expect("status").1;
    let stages: Vec<&str> = status["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(stages, ["store", "generator", "ingest", "table", "windows"]);
    assert_eq!(status["status"], "ok");
    assert!(terminate(&mut child).success());
}

/// For every bar chart: the tick labels uPlot drew and the values it holds, next to its table's
/// names (shortened as the chart shortens them) and numbers, read in one go (one frame).
const CHARTS_VS_TABLES: &str = "
const short = (s) => s.length > 14 ? s.slice(0, 13) + '\u{2026}' : s;
const pairs = [['chart-categories', 'table-categories', [1, 2]], ['chart-items', 'table-items', [1, 2]],
  ['chart-cities', 'table-cities', [1]], ['chart-states', 'table-states', [1]], ['chart-coupons', 'table-coupons', [1]]];
return {
  updated: Number(document.getElementById('last-update').dataset.ms || 0),
  checks: pairs.map(([c, t, cols]) => {
    const u = (window.rtapCharts || {})[c];
    const rows = [...document.querySelectorAll('#' + t + ' tbody tr')].filter(r => !r.querySelector('.empty'));
    return {
      chart: c,
      drawn: u ? Array.from(u.axes[0]._values || []) : null,
      data: u ? cols.map(i => Array.from(u.data[i] || [])) : null,
      names: rows.map(r => short(r.cells[0].textContent)),
      numbers: cols.map(i => rows.map(r => Number(r.cells[i].textContent.replace(/,/g, '')))),
    };
  }),
};";

#[test]
fn every_chart_draws_its_own_tables_labels_and_values_snapshot_after_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = (free_port(), free_port(), free_port());
    // A steady stream: the top lists change order and ties come and go between snapshots.
    let mut rtap_up = start(
        &dir.path().join("data"),
        ports,
        &["--rate", "300", "--seed", "5"],
    );
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{}/", ports.2));
    browser.wait_for(
        "the page goes live",
        TEXTS,
        |v| v["conn"] == "live" && v["orders"].as_u64().is_some_and(|n| n > 0),
        Duration::from_secs(15),
    );
    let mut last = 0.0;
    let mut seen = 0;
    let mut orders_changed = false;
    let mut first_labels: Option<Value> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    // At least six snapshots, and on until the top cities have changed order at least once.
    while seen < 6 || !orders_changed {
        assert!(
            Instant::now() < deadline,
            "{seen} snapshots in 60 s; the top cities changed order: {orders_changed}"
        );
        let v = browser.js(CHARTS_VS_TABLES);
        let updated = v["updated"].as_f64().unwrap_or(0.0);
        if updated <= last {
            std::thread::sleep(Duration::from_millis(150));
            continue;
        }
        last = updated;
        seen += 1;
        for check in v["checks"].as_array().expect("checks") {
            let chart = check["chart"].as_str().unwrap_or_default();
            assert!(
                check["names"].as_array().is_some_and(|n| !n.is_empty()),
                "{chart}: an empty table proves nothing (snapshot {seen})"
            );
            assert_eq!(
                check["drawn"], check["names"],
                "{chart}: the drawn labels are not the table's (snapshot {seen})"
            );
            let data: Vec<Vec<f64>> = serde_json::from_value(check["data"].clone()).expect("data");
            let numbers: Vec<Vec<f64>> =
                serde_json::from_value(check["numbers"].clone()).expect("numbers");
            assert_eq!(
                data, numbers,
                "{chart}: the bars are not the table's numbers"
            );
        }
        let labels = v["checks"][2]["drawn"].clone();
        match &first_labels {
            None => first_labels = Some(labels),
            Some(f) => orders_changed |= *f != labels,
        }
    }
    assert!(terminate(&mut rtap_up).success());
}

/// Elements that stick out of their card (or of the page): none may, at any width.
const OVERFLOW: &str = "
const bad = [];
for (const card of document.querySelectorAll('.kpi, .card, .stage, header')) {
  const c = card.getBoundingClientRect();
  for (const el of card.querySelectorAll('*')) {
    const scroller = el.parentElement && el.parentElement.closest('.table-wrap');
    if (scroller && card.contains(scroller)) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.right > c.right + 1 || r.left < c.left - 1) {
      bad.push((card.id || card.className) + ' > ' + el.tagName.toLowerCase() + '.' + el.className + ' ' +
        JSON.stringify((el.textContent || '').slice(0, 30)) + ' ' + Math.round(r.left) + '..' + Math.round(r.right) +
        ' outside ' + Math.round(c.left) + '..' + Math.round(c.right));
    }
  }
}
if (document.documentElement.scrollWidth > window.innerWidth + 1) bad.push('the page scrolls sideways: ' + document.documentElement.scrollWidth);
return bad;";

const HISTORY: &str = "
const r = window.rtapRange || null;
const u = (window.rtapCharts || {})['chart-minute-orders'];
const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')].filter(r => !r.querySelector('.empty')).map(r => r.cells[0].textContent);
return {
  url: location.search,
  loaded: document.getElementById('ranges').dataset.loaded || '',
  pressed: [...document.querySelectorAll('#ranges button[aria-pressed=true]')].map(b => b.dataset.range),
  title: document.getElementById('series-title').textContent,
  labels: [...document.querySelectorAll('.range-label')].map(e => e.textContent),
  range: r,
  drawnOrders: u ? Array.from(u.data[1] || []) : null,
  categories: rows('table-categories'),
  states: rows('table-states'),
  drillCategory: document.getElementById('drill-category').dataset.loaded || '',
  drillCategoryRows: rows('drill-table-category'),
  drillState: document.getElementById('drill-state').dataset.loaded || '',
  drillStateRows: rows('drill-table-state'),
  stages: Object.fromEntries([...document.querySelectorAll('#stages .stage')].map(s => [s.dataset.stage, s.dataset.level + ' ' + s.dataset.state])),
};";

impl Browser {
    fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": width, "height": height}),
        );
    }
}

fn number(http: &str, sql: &str) -> i64 {
    let rows = common::sql_rows(http, sql).unwrap_or_else(|| panic!("{sql}: no rows"));
    // MIN/MAX answer DOUBLE, as in Pinot (epoch ms are exact in a double).
    rows[0][0]
        .as_i64()
        .or_else(|| rows[0][0].as_f64().map(|f| f as i64))
        .unwrap_or_else(|| panic!("{sql}: {rows:?}"))
}

fn column(http: &str, sql: &str) -> Vec<String> {
    common::sql_rows(http, sql)
        .unwrap_or_else(|| panic!("{sql}: no rows"))
        .iter()
        .map(|r| r[0].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn history_over_any_range_drill_downs_and_the_pipeline_strip_fit_every_width() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Ten days of history, made and ingested by `rtap backfill`.
    let out = rtap()
        .args([
            "backfill", "--orders", "6000", "--days", "10", "--seed", "3",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("rtap backfill");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("the table holds 6000 rows"), "{text}");
    // Nothing new: the history is all there is, so every answer can be checked exactly.
    let ports = (free_port(), free_port(), free_port());
    let mut rtap_up = start(&data, ports, &["--rate", "0", "--max-orders", "0"]);
    let http = format!("http://127.0.0.1:{}", ports.1);
    let dash = format!("http://127.0.0.1:{}", ports.2);
    assert_eq!(number(&http, "SELECT COUNT(*) FROM orders"), 6000);
    // History in event-time order is on time for the windows: none of it counts as late.
    let (_, status) = get_json(&format!("{http}/api/status")).expect("status");
    let windows = status["stages"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "windows"))
        .cloned()
        .expect("windows stage");
    assert_eq!(windows["detail"]["late"], 0, "{windows}");
    let oldest = number(&http, "SELECT MIN(time_ms) FROM orders");
    let newest = number(&http, "SELECT MAX(time_ms) FROM orders");
    let now = number(&http, "SELECT ago('PT0S') FROM orders LIMIT 1");
    // The oldest was made ten days before backfill's clock read, a little before ours.
    assert!(
        now - oldest > 9 * 86_400_000 && now - oldest <= 10 * 86_400_000 + 300_000,
        "oldest {oldest}, now {now}"
    );
    assert!(now - newest < 3_600_000, "the newest order is recent");

    // The API: every range's series adds up to the table's count over its bounds.
    for (range, bucket) in [
        ("5m", "minute"),
        ("1h", "minute"),
        ("24h", "hour"),
        ("7d", "hour"),
        ("30d", "day"),
    ] {
        let (code, r) = get_json(&format!("{dash}/api/range?range={range}")).expect(range);
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["bucket"], bucket);
        let (from, to) = (
            r["from"].as_i64().expect("from"),
            r["to"].as_i64().expect("to"),
        );
        let want = number(
            &http,
            &format!("SELECT COUNT(*) FROM orders WHERE time_ms > {from} AND time_ms <= {to}"),
        );
        let got: i64 = r["series"]
            .as_array()
            .expect("series")
            .iter()
            .map(|b| b["orders"].as_i64().unwrap_or(0))
            .sum();
        assert_eq!(got, want, "{range}");
        if range == "30d" {
            assert_eq!(got, 6000);
            let days = r["series"].as_array().map_or(0, Vec::len);
            assert!((10..=12).contains(&days), "{days} New York days in ten");
            let want = column(
                &http,
                "SELECT line_items.product.category AS c, SUM(line_items.quantity) AS q FROM orders \
                 GROUP BY line_items.product.category ORDER BY q DESC, c LIMIT 5",
            );
            assert_eq!(names(&r["categories"], "category"), want);
        }
    }
    assert_eq!(
        get_json(&format!("{dash}/api/range?range=2h"))
            .expect("bad")
            .0,
        400
    );
    assert_eq!(
        get_json(&format!("{dash}/api/drill?range=1h"))
            .expect("bad")
            .0,
        400
    );

    let browser = Browser::start();
    // A link keeps its range.
    browser.goto(&format!("{dash}/?range=7d"));
    let v = browser.wait_for(
        "the 7-day range loads",
        HISTORY,
        |v| {
            v["loaded"].as_str().is_some_and(|l| l.starts_with("7d@"))
                && v["drawnOrders"].is_array()
        },
        Duration::from_secs(15),
    );
    assert_eq!(v["pressed"], json!(["7d"]));
    assert_eq!(v["title"], "Orders per hour");
    assert!(v["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .all(|l| l == "last 7 days"));
    let series = v["range"]["series"].as_array().expect("series").clone();
    let asc: Vec<i64> = series
        .iter()
        .rev()
        .map(|b| b["orders"].as_i64().unwrap_or(-1))
        .collect();
    let drawn: Vec<i64> = serde_json::from_value(v["drawnOrders"].clone()).expect("drawn");
    assert_eq!(drawn, asc, "the chart draws the range's series");
    assert_eq!(
        strings(&v["categories"]),
        names(&v["range"]["categories"], "category")
    );

    // Picking 30 days: per day, in the URL, and the drill-downs for that range.
    browser.js("document.querySelector('#ranges [data-range=\"30d\"]').click(); return 0;");
    let v = browser.wait_for(
        "the 30-day range loads",
        HISTORY,
        |v| v["loaded"].as_str().is_some_and(|l| l.starts_with("30d@")),
        Duration::from_secs(15),
    );
    assert_eq!(v["url"], "?range=30d");
    assert_eq!(v["title"], "Orders per day");
    let category = strings(&v["categories"])[0].clone();
    let state = strings(&v["states"])[0].clone();
    browser.js("document.querySelector('#table-categories tbody tr').click(); document.querySelector('#table-states tbody tr').click(); return 0;");
    let v = browser.wait_for(
        "both drill-downs load",
        HISTORY,
        |v| {
            v["drillCategory"] == format!("30d:{category}")
                && v["drillState"] == format!("30d:{state}")
        },
        Duration::from_secs(15),
    );
    let items = column(
        &http,
        &format!(
            "SELECT line_items.product.name AS n, SUM(line_items.quantity) AS q FROM orders \
             WHERE line_items.product.category = '{}' GROUP BY line_items.product.name \
             ORDER BY q DESC, n LIMIT 10",
            category.replace('\'', "''")
        ),
    );
    assert_eq!(strings(&v["drillCategoryRows"]), items);
    let cities = column(
        &http,
        &format!(
            "SELECT customer_city AS c, COUNT(*) AS n FROM orders WHERE customer_state = '{}' \
             GROUP BY customer_city ORDER BY n DESC, c LIMIT 10",
            state.replace('\'', "''")
        ),
    );
    assert_eq!(strings(&v["drillStateRows"]), cities);

    // The pipeline strip: every stage, none amber or red; a generator at its limit is finished.
    let v = browser.wait_for(
        "the pipeline strip",
        HISTORY,
        |v| v["stages"]["ingest"].is_string(),
        Duration::from_secs(10),
    );
    assert_eq!(v["stages"]["generator"], "ok finished", "{}", v["stages"]);
    for stage in ["store", "ingest", "table", "windows"] {
        assert!(
            v["stages"][stage]
                .as_str()
                .is_some_and(|s| s.starts_with("ok ")),
            "{stage}: {}",
            v["stages"]
        );
    }

    // Nothing sticks out of its card from a phone to a wide screen, light and dark.
    let shots = shots_dir();
    for theme in ["light", "dark"] {
        for (width, height) in [(360, 2400), (1400, 2000), (2560, 1600)] {
            browser.resize(width, height);
            browser.goto(&format!("{dash}/?range=30d&theme={theme}"));
            browser.wait_for(
                "the page renders",
                HISTORY,
                |v| {
                    v["loaded"].as_str().is_some_and(|l| l.starts_with("30d@"))
                        && v["stages"]["ingest"].is_string()
                },
                Duration::from_secs(15),
            );
            browser.js("document.querySelector('#table-categories tbody tr').click(); return 0;");
            browser.wait_for(
                "the drill-down",
                HISTORY,
                |v| v["drillCategory"].as_str().is_some_and(|d| !d.is_empty()),
                Duration::from_secs(10),
            );
            let bad = browser.js(OVERFLOW);
            browser.screenshot(&shots.join(format!("history-{theme}-{width}.png")));
            assert_eq!(bad, json!([]), "{theme} at {width} px");
        }
    }
    assert!(terminate(&mut rtap_up).success());
}

#[test]
fn a_failed_stage_turns_the_pipeline_strip_red_with_its_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = (free_port(), free_port(), free_port());
    let mut rtap_up = start_env(
        &dir.path().join("data"),
        ports,
        &["--rate", "200", "--max-orders", "100000", "--seed", "4"],
        // About 10 s in at 200 orders/s: the red shows for about a second, and the page must be
        // up by then (at 300 rows, 1.5 s in, a slow Chromium start missed it on a busy machine).
        &[("RTAP_FAULT", "ingest-panic-at-rows:2000")],
    );
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{}/", ports.2));
    // The page logs every change of a stage's level: the failure shows for about a second
    // before the supervisor restarts the pipeline, perhaps between two screenshots.
    let log = "return window.rtapStageLog || [];";
    let failed = |v: &Value| {
        v.as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["stage"] == "ingest" && s["level"] == "bad")
            })
            .cloned()
    };
    let v = browser.wait_for(
        "the ingest stage turns red",
        log,
        |v| failed(v).is_some(),
        Duration::from_secs(30),
    );
    let ingest = failed(&v).expect("a red ingest stage");
    assert_eq!(ingest["state"], "failed");
    assert!(
        ingest["error"]
            .as_str()
            .is_some_and(|e| e.contains("panicked")),
        "{ingest}"
    );
    // The supervisor restarts it from the checkpoint: the strip turns green again.
    browser.wait_for(
        "the ingest stage recovers",
        log,
        |v| {
            v.as_array().is_some_and(|a| {
                a.iter()
                    .rev()
                    .find(|s| s["stage"] == "ingest")
                    .is_some_and(|s| s["level"] == "ok" && s["state"] == "running")
            })
        },
        Duration::from_secs(30),
    );
    browser.screenshot(&shots_dir().join("strip-recovered.png"));
    assert!(terminate(&mut rtap_up).success());
}
