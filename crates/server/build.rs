//! Installs the dashboard's chart library, the npm package uplot pinned by
//! `dashboard/package-lock.json`, with `npm ci` into OUT_DIR (nothing is written to the source
//! tree and no third-party code is in the repository), for `dashboard.rs` to embed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=dashboard/package.json");
    println!("cargo:rerun-if-changed=dashboard/package-lock.json");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("npm");
    let dist = out.join("node_modules").join("uplot").join("dist");
    let wanted = ["uPlot.iife.min.js", "uPlot.min.css"];
    let lock = std::fs::read(manifest.join("dashboard/package-lock.json"))
        .expect("crates/server/dashboard/package-lock.json is missing");
    let installed_lock = std::fs::read(out.join("package-lock.json")).ok();
    if wanted.iter().all(|f| dist.join(f).exists()) && installed_lock.as_deref() == Some(&lock[..])
    {
        return;
    }
    std::fs::create_dir_all(&out).expect("create OUT_DIR/npm");
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(manifest.join("dashboard").join(f), out.join(f)).expect("copy package files");
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let status = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm ci` for the dashboard's chart library (npm package uplot) failed with {s}: \
             check access to the npm registry"
        ),
        Err(e) => panic!(
            "the dashboard's chart library (npm package uplot) is installed with npm, which could \
             not be run ({e}): install Node.js (https://nodejs.org) and build again"
        ),
    }
    for f in wanted {
        assert!(dist.join(f).exists(), "npm ci did not produce {f}");
    }
}
