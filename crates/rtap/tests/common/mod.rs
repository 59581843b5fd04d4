//! Helpers shared by the black-box tests (and benches, through `#[path]`) of the rtap binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn rtap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtap"))
}

/// Starts `rtap up` on free ports with `args`; returns the child and the base URLs of its
/// banner (orders API, analytics).
pub fn start_up_with(data_dir: &std::path::Path, args: &[&str]) -> (Child, Vec<String>) {
    let mut child = rtap()
        .args([
            "up",
            "--api-port",
            "0",
            "--http-port",
            "0",
            "--dashboard-port",
            "0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rtap");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut urls = Vec::new();
    while urls.len() < 2 {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("rtap up exited before its banner: {:?}", child.wait()))
            .expect("utf-8");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in banner {line:?}"))
            .to_string();
        urls.push(url);
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, urls)
}

pub fn get_json(url: &str) -> Option<(u16, Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let resp = reqwest::get(url).await.ok()?;
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
        let resp = reqwest::Client::new()
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "rtap did not stop within 10 s of SIGTERM"
        );
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
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).expect("log");
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
