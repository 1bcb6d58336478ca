//! Processes, daemons and file-system helpers.

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{AUTHOR, DISCOVERY_ADDRS, IVALDI, LOCAL};

/// Runs a command to completion, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its wall time.
pub fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    run(cmd);
    t.elapsed()
}

pub fn ivaldi(dir: &Path) -> Command {
    let mut c = Command::new(IVALDI);
    c.arg("-C")
        .arg(dir)
        .env("IVALDI_AUTHOR", AUTHOR)
        .env("IVALDI_DISCOVERY_ADDRS", DISCOVERY_ADDRS)
        .env_remove("IVALDI_TIME")
        .env_remove("RUST_LOG");
    c
}

pub fn ivaldi_at(dir: &Path, t: i64) -> Command {
    let mut c = ivaldi(dir);
    c.env("IVALDI_TIME", t.to_string());
    c
}

pub fn git_env(c: &mut Command) -> &mut Command {
    // Only the repository's own config: no user or system settings leak in.
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_WORK_TREE")
}

pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    git_env(&mut c);
    c
}

pub fn git_at(dir: &Path, t: i64) -> Command {
    let mut c = git(dir);
    let date = format!("@{t} +0000");
    c.env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date);
    c
}

pub fn git_quiet_config(dir: &Path) {
    for (k, v) in [
        ("user.name", "Bench"),
        ("user.email", "bench@example.invalid"),
        ("commit.gpgsign", "false"),
        ("core.hooksPath", "/dev/null"),
        ("gc.auto", "0"),
        ("maintenance.auto", "false"),
    ] {
        run(git(dir).args(["config", k, v]));
    }
}

/// The child is killed with SIGTERM if this process dies first, however it dies.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd
}

/// Stops a child of ours by pid: SIGTERM, up to 10 s, then SIGKILL; always reaps.
pub fn stop_child(child: &mut Child, name: &str) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still ours.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    eprintln!(
        "warning: {name} (pid {}) did not stop on SIGTERM; killing it",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Fields after the command name in /proc/PID/stat (index 0 is the state).
pub fn proc_stat(pid: u32) -> Option<Vec<u64>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

pub fn clock_tick() -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(1_000_000_000 / hz)
}

/// A process's user+sys CPU, plus that of its reaped children when `children`.
pub fn proc_cpu(pid: u32, children: bool) -> Duration {
    // After the state: ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime(10) stime(11) cutime(12) cstime(13).
    let Some(f) = proc_stat(pid) else {
        return Duration::ZERO;
    };
    let mut ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    if children {
        ticks += f.get(12).copied().unwrap_or(0) + f.get(13).copied().unwrap_or(0);
    }
    clock_tick() * ticks as u32
}

/// Linux PSI: total µs some task waited for a CPU (`/proc/pressure/cpu`).
pub fn cpu_pressure_us() -> Option<u64> {
    fs::read_to_string("/proc/pressure/cpu")
        .ok()?
        .lines()
        .find(|l| l.starts_with("some"))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Peak resident set (VmHWM) of a live process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Every live descendant of `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = proc_stat(p) {
                parent.push((p, f.first().copied().unwrap_or(0) as u32));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent {
            if *pp == p && !out.contains(c) {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// CPU of this process's reaped children (user+sys).
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

/// Runs a command with `wait4`: wall time, peak RSS (KiB) of it and the
/// descendants it reaped, and their CPU.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's `Child` cannot see
pub fn run_rusage(cmd: &mut Command, errlog: &Path) -> (Duration, u64, Duration) {
    let err = File::create(errlog).expect("create stderr log");
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut status = 0;
    // SAFETY: wait4 on our own child; status and ru are ours to write.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = t.elapsed();
    assert!(rc > 0, "wait4 failed");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        panic!(
            "{cmd:?} failed (status {status}):\n{}",
            fs::read_to_string(errlog).unwrap_or_default()
        );
    }
    (wall, ru.ru_maxrss as u64, tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Samples the largest VmHWM among the descendants of `pid` every 20 ms.
pub struct RssSampler {
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // Scanning /proc costs CPU the measured processes would use; every
            // 20 ms is enough, as VmHWM keeps the peak and pack-objects lives for
            // seconds here.
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                for p in descendants(pid) {
                    peak = peak.max(vm_hwm_kib(p));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Daemons.

/// An `ivaldi p2p start --foreground` child; stopped by pid when dropped.
pub struct Daemon {
    pub name: String,
    pub dir: PathBuf,
    pub child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(dir: &Path, name: &str, auto_sync: bool, logs: &Path) -> Daemon {
        Daemon::start_with(dir, name, auto_sync, &[], logs)
    }

    /// Like `start`, with extra `ivaldi p2p config` arguments.
    pub fn start_with(
        dir: &Path,
        name: &str,
        auto_sync: bool,
        extra: &[&str],
        logs: &Path,
    ) -> Daemon {
        run(ivaldi(dir)
            .args([
                "p2p",
                "config",
                "--bind-addr",
                "127.0.0.1",
                "--discovery",
                "off",
                "--port",
                "0",
                "--auto-sync",
                if auto_sync { "on" } else { "off" },
            ])
            .args(extra));
        let log = logs.join(format!("{name}.daemon.out"));
        let out = File::create(&log).expect("create daemon log");
        let err = out.try_clone().expect("clone daemon log");
        let child = die_with_parent(ivaldi(dir).args(["p2p", "start", "--foreground"]))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn the ivaldi daemon");
        let mut d = Daemon {
            name: name.to_owned(),
            dir: dir.to_owned(),
            child,
            port: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!(
                    "daemon {name} exited ({st}):\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let out = ivaldi(dir)
                .args(["p2p", "status", "--json"])
                .stdin(Stdio::null())
                .output()
                .expect("spawn ivaldi p2p status");
            if out.status.success()
                && let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
                && v["pid"].as_u64() == Some(u64::from(d.child.id()))
            {
                d.port = v["port"].as_u64().expect("status has a port") as u16;
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "daemon {name} did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn status(&self) -> Value {
        let out = run(ivaldi(&self.dir).args(["p2p", "status", "--json"]));
        serde_json::from_str(&out).expect("status is JSON")
    }

    /// Dials `port` (the other daemon's, or a proxy in front of it), after
    /// both sides trust each other as their users would (`p2p trust`).
    pub fn connect(&self, other: &Daemon, port: u16) {
        self.trust(other);
        other.trust(self);
        run(ivaldi(&self.dir).args(["p2p", "connect", "127.0.0.1", &port.to_string()]));
    }

    pub fn trust(&self, other: &Daemon) {
        let id = other.status()["node_id"]
            .as_str()
            .expect("status has a node id")
            .to_owned();
        run(ivaldi(&self.dir).args(["p2p", "trust", &id]));
    }

    /// A one-use invitation ticket for this daemon's repository.
    pub fn invite(&self) -> String {
        let out = run(ivaldi(&self.dir).args(["p2p", "invite", "--json"]));
        let v: Value = serde_json::from_str(&out).expect("invite --json is JSON");
        v["ticket"].as_str().expect("a ticket").to_owned()
    }

    /// Waits until the daemon has received at least `n` messages of `kind`.
    pub fn wait_messages_in(&self, kind: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status()["stats"]["messages_in"][kind]
            .as_u64()
            .unwrap_or(0)
            < n
        {
            assert!(
                Instant::now() < deadline,
                "daemon {} never received {n} {kind}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop_child(&mut self.child, &self.name);
    }
}

/// `git daemon` on 127.0.0.1, serving everything under `base`; stopped by pid.
pub struct GitDaemon {
    pub child: Child,
    pub port: u16,
}

impl GitDaemon {
    pub fn start(base: &Path, logs: &Path) -> GitDaemon {
        for attempt in 0..5 {
            let port = free_port();
            let log = logs.join(format!("git-daemon.{attempt}.out"));
            let out = File::create(&log).expect("create git daemon log");
            let err = out.try_clone().expect("clone log");
            // `git daemon` would run `git-daemon` as a child of the `git` wrapper;
            // running it directly makes our child the daemon itself, whose reaped
            // children (the connections it served) show in its cutime/cstime.
            let exec_path = run(Command::new("git").arg("--exec-path"));
            let mut cmd = Command::new(Path::new(exec_path.trim()).join("git-daemon"));
            git_env(&mut cmd);
            let child = die_with_parent(cmd.args([
                "--reuseaddr",
                "--export-all",
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
            ]))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn git daemon");
            let mut d = GitDaemon { child, port };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = d.child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                if TcpStream::connect((LOCAL, port)).is_ok() {
                    return d;
                }
                if Instant::now() > deadline {
                    panic!(
                        "git daemon did not listen within 10 s:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("git daemon could not bind a port in 5 attempts");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU of the connections it served (upload-pack, pack-objects), once reaped.
    pub fn children_cpu(&self) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !descendants(self.pid()).is_empty() {
            if Instant::now() > deadline {
                eprintln!("warning: git daemon's children still running; server CPU undercounted");
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        proc_cpu(self.pid(), true).saturating_sub(proc_cpu(self.pid(), false))
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        // Connections still being served were forked by git daemon for us.
        for p in descendants(self.pid()) {
            // SAFETY: kill(2) by pid on a process git daemon forked for this bench.
            unsafe { libc::kill(p as i32, libc::SIGTERM) };
        }
        stop_child(&mut self.child, "git daemon");
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((LOCAL, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port on 127.0.0.1")
}

// ---------------------------------------------------------------------------
// File-system helpers.

pub fn copy_dir(from: &Path, to: &Path) {
    if let Some(p) = to.parent() {
        fs::create_dir_all(p).expect("create parent");
    }
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for e in rd.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            total += dir_size(&e.path());
        } else {
            total += meta.len();
        }
    }
    total
}

pub fn ivaldi_head(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(".ivaldi").join("timelines").join("main"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Polls the clone's head file every 0.5 ms; returns when it names `want`.
pub fn wait_head(dir: &Path, want: &str, limit: Duration) -> Instant {
    let t = Instant::now();
    loop {
        if ivaldi_head(dir).as_deref() == Some(want) {
            return Instant::now();
        }
        assert!(
            t.elapsed() < limit,
            "{} never reached {want} (head {:?})",
            dir.display(),
            ivaldi_head(dir)
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

pub fn git_head(dir: &Path, rev: &str) -> String {
    run(git(dir).args(["rev-parse", rev])).trim().to_owned()
}

pub fn repo_id(dir: &Path) -> String {
    let v: Value = serde_json::from_slice(
        &fs::read(dir.join(".ivaldi").join("repo.json")).expect("read repo.json"),
    )
    .expect("repo.json is JSON");
    v["id"].as_str().expect("repo.json has an id").to_owned()
}

/// Removes the scratch directory even if the benchmark panics.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
