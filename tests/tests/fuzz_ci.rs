//! The fuzz campaign's CI leg: every target in `fuzz/` runs for a short bounded
//! time (10 s each by default) on stable Rust, as part of `cargo test`.
//!
//! Needs `cargo-fuzz` (`cargo install cargo-fuzz`) and a C++ compiler (for
//! libFuzzer). Without cargo-fuzz the test prints a SKIP line and passes, so a
//! machine without it still runs the rest of the suite. Settings:
//!
//! - `IVALDI_FUZZ_CI=0` skips it;
//! - `IVALDI_FUZZ_SECONDS=N` changes the time per target.
//!
//! The fuzz crate is its own workspace with its own target directory
//! (`fuzz/target`), so its build never waits for the workspace's build lock, and
//! is built once for all targets. Long runs: `scripts/fuzz-long.sh 8h`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use ivaldi_tests::{describe_output, workspace_root};

const TARGETS: &[&str] = &[
    "frame",
    "discovery",
    "handshake",
    "object_decode",
    "text_merge",
    "ticket",
    "admission",
    "signed_lsa",
    "pack_reader",
    "delta_decode",
];

/// A `cargo fuzz ...` command in `fuzz/`, cleaned of the outer build's settings
/// (an inherited `CARGO_TARGET_DIR` would point it at the workspace's locked
/// target directory; inherited flags would change what it builds).
fn cargo_fuzz(fuzz_dir: &Path, args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("fuzz")
        .args(args)
        .current_dir(fuzz_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

/// libFuzzer's closing line, `Done N runs in S second(s)`: the run count.
fn runs_done(out: &Output) -> Option<u64> {
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .rev()
        .find_map(|l| l.split_once("Done ")?.1.split_once(" runs")?.0.parse().ok())
}

#[test]
fn every_fuzz_target_runs_briefly_without_findings() {
    if std::env::var("IVALDI_FUZZ_CI").is_ok_and(|v| v == "0") {
        println!("fuzz_ci: SKIP: IVALDI_FUZZ_CI=0");
        return;
    }
    let fuzz_dir: PathBuf = workspace_root().join("fuzz");
    let version = cargo_fuzz(&fuzz_dir, &["--version"]).output();
    match version {
        Ok(o) if o.status.success() => {}
        _ => {
            println!(
                "fuzz_ci: SKIP: cargo-fuzz is not installed (`cargo install cargo-fuzz`); \
                 the fuzz targets were not run"
            );
            eprintln!("fuzz_ci: SKIP: cargo-fuzz is not installed");
            return;
        }
    }
    let seconds = std::env::var("IVALDI_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(10);
    let target_dir = fuzz_dir.join("target");
    let target_dir = target_dir.to_str().expect("UTF-8 workspace path");

    let started = Instant::now();
    let mut build = cargo_fuzz(
        &fuzz_dir,
        &["build", "--sanitizer", "none", "--target-dir", target_dir],
    );
    let out = run(build.stdout(Stdio::piped()), "cargo fuzz build");
    assert!(
        out.status.success(),
        "building the fuzz targets failed\n{}",
        describe_output(&out)
    );
    eprintln!("fuzz_ci: built every target in {:?}", started.elapsed());

    let mut failures = Vec::new();
    for target in TARGETS {
        let t = Instant::now();
        let max = format!("-max_total_time={seconds}");
        let cmd = cargo_fuzz(
            &fuzz_dir,
            &[
                "run",
                "--sanitizer",
                "none",
                "--target-dir",
                target_dir,
                target,
                "--",
                &max,
                "-rss_limit_mb=2048",
            ],
        );
        let mut cmd = cmd;
        let out = run(&mut cmd, &format!("cargo fuzz run {target}"));
        let runs = runs_done(&out);
        eprintln!(
            "fuzz_ci: {target}: {} in {:?}: {}",
            runs.map(|r| format!("{r} runs"))
                .unwrap_or_else(|| "no summary".into()),
            t.elapsed(),
            if out.status.success() { "ok" } else { "FAILED" }
        );
        if !out.status.success() || runs.is_none_or(|r| r == 0) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
            failures.push(format!(
                "{target}: exit {:?}, runs {runs:?}; findings go to fuzz/artifacts/{target}/\n{}",
                out.status.code(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    eprintln!(
        "fuzz_ci: {} targets in {:?}",
        TARGETS.len(),
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
