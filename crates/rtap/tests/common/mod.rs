//! Helpers shared by the black-box tests (and benches, through `#[path]`) of the rtap binary.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn rtap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtap"))
}

/// Where a child's stderr goes: nowhere, or with `RTAP_TEST_LOG_DIR` set a new file there named
/// after `role` (to read what rtap and tansu said in a test that failed; it is kept).
pub fn child_log(role: &str) -> Stdio {
    kept_log(role).map_or_else(Stdio::null, Stdio::from)
}

/// The file under `RTAP_TEST_LOG_DIR` for a child of `role`, if that is set.
fn kept_log(role: &str) -> Option<std::fs::File> {
    let dir = std::env::var_os("RTAP_TEST_LOG_DIR")?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = Path::new(&dir).join(format!("{role}-{}-{n}.log", std::process::id()));
    match std::fs::File::create(&path) {
        Ok(f) => Some(f),
        Err(e) => panic!("RTAP_TEST_LOG_DIR: cannot create {}: {e}", path.display()),
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped: a test that panics
/// leaves no `rtap` running behind it. Used as the [`Child`] it holds.
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A running rtap command and the base URLs its banner printed.
pub struct Started {
    pub child: Running,
    /// The orders API (`up`, `api`).
    pub api: Option<String>,
    /// The analytics API and SQL (`up`, `serve`).
    pub http: Option<String>,
    /// The dashboard (`up`, `serve`).
    pub dashboard: Option<String>,
}

/// The one way tests and benches start rtap: spawns `cmd` with stdout piped, reads its banner up
/// to "stop with Ctrl-C" and picks the URLs out of it, then keeps draining stdout so the child
/// never blocks on a full pipe. Stderr is the caller's choice.
pub fn start(mut cmd: Command) -> Started {
    read_banner(cmd.stdout(Stdio::piped()).spawn().expect("spawn rtap"))
}

/// Reads the banner of a child spawned with stdout piped (see [`start`]).
pub fn read_banner(mut child: Child) -> Started {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut started = Started {
        child: Running(child),
        api: None,
        http: None,
        dashboard: None,
    };
    loop {
        let line = match lines.next() {
            Some(Ok(line)) => line,
            _ => panic!("rtap exited before its banner: {:?}", started.child.wait()),
        };
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_string);
        if line.contains(": orders API on ") {
            started.api = url;
        } else if line.contains(": analytics API and SQL on ") {
            started.http = url;
        } else if line.contains(": dashboard on ") {
            started.dashboard = url;
        } else if line.trim() == "stop with Ctrl-C" {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    started
}

/// Every port of `rtap up` picked free (port 0).
pub const FREE_PORTS: [&str; 6] = [
    "--api-port",
    "0",
    "--http-port",
    "0",
    "--dashboard-port",
    "0",
];

/// `rtap up` with every port picked free; add the rest of the arguments.
pub fn up_on_free_ports() -> Command {
    let mut cmd = rtap();
    cmd.arg("up").args(FREE_PORTS);
    cmd
}

/// Starts `rtap up` on free ports with `args`; returns the child and the base URLs of its
/// banner (orders API, analytics).
pub fn start_up_with(data_dir: &std::path::Path, args: &[&str]) -> (Running, Vec<String>) {
    let mut cmd = up_on_free_ports();
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stderr(Stdio::null());
    let s = start(cmd);
    let urls = vec![
        s.api.expect("orders API URL"),
        s.http.expect("analytics URL"),
    ];
    (s.child, urls)
}

/// An HTTP client that gives up after 30 s: a wedged server fails the test, never hangs it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

pub fn get_json(url: &str) -> Option<(u16, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let resp = client().get(url).send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.ok()?))
    })
}

/// Runs a SQL query on a running rtap; the Pinot response's rows.
pub fn sql_rows(http: &str, sql: &str) -> Option<Vec<Value>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let v: Value = rt.block_on(async {
        let resp = client()
            .post(format!("{http}/query/sql"))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    })?;
    v["resultTable"]["rows"].as_array().cloned()
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    wait_within(child, Duration::from_secs(10), "rtap after SIGTERM")
}

/// Waits for `child` to exit within `limit`; past that, kills it and panics.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The tansu binary: `RTAP_TANSU`, or where scripts/install-tansu.sh puts it.
pub fn tansu() -> PathBuf {
    let path = std::env::var("RTAP_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/cache/rtap/tansu/bin/tansu"));
    assert!(
        path.exists(),
        "tansu is needed at {} (scripts/test.sh installs it; or set RTAP_TANSU)",
        path.display()
    );
    path
}

/// A tansu broker on a loopback port with its storage under its own directory (SQLite by
/// default, so it can be restarted with its topics).
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    storage: String,
    child: Option<Child>,
}

impl Broker {
    pub fn start() -> Self {
        Self::start_with("sqlite://tansu.db")
    }

    /// A broker with tansu's `--storage-engine` URL, e.g. `memory://tansu/`.
    pub fn start_with(storage: &str) -> Self {
        let mut b = Broker {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            storage: storage.to_string(),
            child: None,
        };
        b.spawn();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = match kept_log("tansu") {
            Some(f) => f,
            None => std::fs::File::create(self.dir.path().join("tansu.log")).expect("log"),
        };
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- Kafka: `rtap serve`, `rtap produce` and what the tests check on a running rtap ----

/// `rtap serve --kafka` on a free port; returns the child and the analytics URL.
pub fn serve(data: &Path, broker: &str, extra: &[&str]) -> (Running, String) {
    let mut cmd = rtap();
    cmd.args([
        "serve",
        "--http-port",
        "0",
        "--dashboard-port",
        "0",
        "--checkpoint-interval",
        "0.5",
    ])
    .args(["--kafka", broker, "--data-dir"])
    .arg(data)
    .args(extra)
    .stderr(child_log("serve"));
    let s = start(cmd);
    (s.child, s.http.expect("analytics URL"))
}

pub fn produce(broker: &str, data: &Path, args: &[&str]) -> Command {
    let mut c = rtap();
    c.args(["produce", "--kafka", broker, "--data-dir"])
        .arg(data)
        .args(args)
        .stdout(Stdio::null())
        .stderr(child_log("produce"));
    c
}

pub fn count(http: &str) -> Option<u64> {
    sql_rows(http, "SELECT COUNT(*) FROM orders")?
        .first()?
        .get(0)?
        .as_u64()
}

pub fn wait_count(http: &str, n: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let c = count(http);
        if c == Some(n) {
            return;
        }
        if Instant::now() >= deadline {
            // What each stage says (Kafka positions, lag, errors), to tell why it is stuck.
            let status = get_json(&format!("{http}/api/status")).map(|(_, v)| v.to_string());
            panic!("the table has {c:?} orders, expected {n}; /api/status: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn table_ids(http: &str) -> Vec<String> {
    sql_rows(http, "SELECT order_id FROM orders LIMIT 100000")
        .expect("ids")
        .iter()
        .map(|r| r[0].as_str().expect("order_id").to_string())
        .collect()
}

/// The ids the generator gives orders 1..=n of `seed`.
pub fn generated_ids(seed: u64, n: u64) -> HashSet<String> {
    let mut g = orders::Generator::new(orders::GeneratorConfig {
        seed,
        ..orders::GeneratorConfig::default()
    });
    (1..=n)
        .map(|seq| g.generate(seq, 0).order_id.to_string())
        .collect()
}

pub fn assert_exactly(ids: &[String], expected: &HashSet<String>) {
    let set: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "an order is in the table twice");
    assert_eq!(set.len(), expected.len());
    assert!(
        &set == expected,
        "the table's ids are not the produced ones"
    );
}

/// `rtap backfill --orders n --days days --seed seed` into `data`; the seconds it took.
pub fn backfill(data: &Path, n: u64, days: u64, seed: u64) -> f64 {
    let started = Instant::now();
    let status = rtap()
        .args([
            "backfill",
            "--orders",
            &n.to_string(),
            "--days",
            &days.to_string(),
        ])
        .args(["--seed", &seed.to_string(), "--data-dir"])
        .arg(data)
        .env("RTAP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .expect("run rtap backfill");
    assert!(status.success(), "rtap backfill failed: {status}");
    started.elapsed().as_secs_f64()
}

/// A number from the environment (the benches' knobs), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn kill9(child: &mut Child) {
    child.kill().expect("SIGKILL");
    let _ = child.wait();
}
