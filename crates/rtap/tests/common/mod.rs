//! Helpers shared by the black-box tests of the rtap binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
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
