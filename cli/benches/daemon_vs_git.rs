//! Daemons side by side with git: syncing one deterministic history over TCP on
//! 127.0.0.1, `ivaldi` daemons against `git daemon` + `git clone` / `git fetch`, in
//! the same run, alternating ivaldi and git (A, B, A, B, …), medians reported.
//!
//! ```text
//! cargo bench -p ivaldi-cli --bench daemon_vs_git                          # full run
//! IVALDI_BENCH_QUICK=1 cargo bench -p ivaldi-cli --bench daemon_vs_git     # smoke run
//! ```
//!
//! The history is generated twice from one splitmix64 stream, as an Ivaldi
//! repository and as a git repository with the same files and the same changes:
//! 5,000 files of 0.1–20 KB (log-uniform, ~10% binary, nested directories), then
//! 300 seals/commits each editing 1% of the files (50). Seal and commit times are
//! pinned (`IVALDI_TIME`, `GIT_AUTHOR_DATE`/`GIT_COMMITTER_DATE`), so both histories
//! are the same every run. The git source is then repacked (`git repack -a -d`), as
//! a server's repository would be. Both are cached under
//! `$IVALDI_BENCH_DIR/ivaldi-daemon-bench-cache/<parameters>/` (default: the
//! system temporary directory); every measurement runs on fresh copies.
//!
//! Cases:
//!
//! 1. **Full sync into an empty repository.** ivaldi: the source's daemon runs; an
//!    empty repository with the source's repository id gets a daemon, and the
//!    clock runs from `ivaldi p2p connect` (the auto-sync pull starts on the
//!    handshake) until `.ivaldi/timelines/main` names the source's head (polled
//!    every 0.5 ms); no working tree is written. git: `git clone --bare` from
//!    `git daemon`. Also, informational: `ivaldi p2p clone` (probe, full sync and
//!    checkout of the working tree) against a plain `git clone` (with checkout).
//! 2. **One new seal touching three files**, synced by running daemons. The clone
//!    (a synced copy) runs with auto-sync off; the source seals; once the clone's
//!    daemon has received the `timeline_update`, the clock runs around
//!    `ivaldi p2p sync` on the clone (control socket → pull → land → head moved).
//!    git: a commit in the source, then `git fetch` into a synced bare clone.
//!    Bytes each way and round trips come from a counting TCP proxy in this bench
//!    (see below). Informational
//!    2b: with auto-sync on, `ivaldi seal` start → the clone's head moved, against
//!    `git add -A && git commit` + `git fetch`.
//! 3. **One 256 MiB file** (pseudo-random) sealed on top of the history and pulled
//!    by a connected clone daemon with `ivaldi p2p sync` (direct connection, no
//!    proxy), against `git fetch` of the same commit (source repacked first, so git
//!    ships the stored zlib stream without recompressing). MB/s = 10^6 bytes/s of
//!    the file size over the command's wall time. Peak RSS: `VmHWM` of both daemons
//!    (fresh daemons, started for this case), judged on the largest repetition.
//!    git: peak RSS of `git fetch` and its children (`wait4`), and of
//!    `git-daemon`'s children (sampled every 20 ms). Informational 3x: the same
//!    ivaldi sync with encryption off on both daemons.
//!
//! Timed runs connect directly. Bytes and round trips come from one extra run
//! through the proxy (case 1: the first repetition; case 2: a third change in
//! every repetition). Controls: git's clone and fetch are also timed over
//! `file://` (pipes), which shows how much of git's time is TCP delayed-ACK stalls
//! (git does not set `TCP_NODELAY` on git:// connections).
//!
//! Round trips: the proxy logs every read with its direction, before forwarding
//! it, so the log is causally ordered. A round trip is a switch from
//! client→server bytes to server→client bytes (a request answered). Unsolicited
//! pushes (ivaldi's `timeline_update`) and the TCP handshake are not counted.
//!
//! Network safety: everything binds and connects to 127.0.0.1 only. Every ivaldi
//! process gets `IVALDI_DISCOVERY_ADDRS=127.255.255.255`; every daemon gets
//! `--bind-addr 127.0.0.1 --discovery off --port 0`. Daemons and `git daemon` are
//! children of this process held by guards that stop them by pid (SIGTERM, then
//! SIGKILL) on every exit path, and they get `PR_SET_PDEATHSIG` so they die with it.
//!
//! Environment: `IVALDI_BENCH_QUICK=1` (500 files, 30 seals, 16 MiB, one
//! repetition); `IVALDI_BENCH_DIR` (scratch and cache directory);
//! `IVALDI_BENCH_REPS` / `IVALDI_BENCH_BIG_REPS` (repetitions of cases 1–2 / 3);
//! `IVALDI_BENCH_NO_CACHE=1` (regenerate, and delete the cache afterwards).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write as _};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

const IVALDI: &str = env!("CARGO_BIN_EXE_ivaldi");
const AUTHOR: &str = "Bench <bench@example.invalid>";
/// Where discovery announcements would go: loopback broadcast, never the LAN.
const DISCOVERY_ADDRS: &str = "127.255.255.255";
const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Seal/commit time of the first seal; each later one is a minute after.
const T0: i64 = 1_700_000_000;
/// Bump when the generated history changes, so stale caches are not reused.
const GENERATOR: &str = "g1";

struct Config {
    quick: bool,
    files: usize,
    seals: usize,
    touch: usize,
    one_seal: usize,
    big: u64,
    reps_small: usize,
    reps_big: usize,
    keep_cache: bool,
}

impl Config {
    fn from_env() -> Config {
        let flag = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0");
        let num = |k: &str| -> Option<usize> {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0)
        };
        let quick = flag("IVALDI_BENCH_QUICK");
        let mut c = if quick {
            Config {
                quick,
                files: 500,
                seals: 30,
                touch: 5,
                one_seal: 3,
                big: 16 << 20,
                reps_small: 1,
                reps_big: 1,
                keep_cache: true,
            }
        } else {
            Config {
                quick,
                files: 5_000,
                seals: 300,
                touch: 50,
                one_seal: 3,
                big: 256 << 20,
                reps_small: 3,
                reps_big: 3,
                keep_cache: true,
            }
        };
        if let Some(r) = num("IVALDI_BENCH_REPS") {
            c.reps_small = r;
        }
        if let Some(r) = num("IVALDI_BENCH_BIG_REPS") {
            c.reps_big = r;
        }
        c.keep_cache = !flag("IVALDI_BENCH_NO_CACHE");
        c
    }
}

// ---------------------------------------------------------------------------
// Deterministic data (the same generator style as the foundation benchmark).

/// splitmix64: tiny, fast, and the same stream on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

const WORDS: &[&str] = &[
    "fn", "let", "mut", "self", "return", "if", "else", "match", "struct", "impl", "pub", "use",
    "for", "in", "while", "loop", "break", "Some", "None", "Ok", "Err", "value", "index", "buffer",
    "count", "len", "path", "node", "tree", "seal", "timeline", "store", "error", "result",
    "config", "file", "bytes", "write", "read", "parse", "=", "+", "-", "{", "}", "(", ")", ";",
    "->", "&", "0", "1", "42", "String", "Vec", "Option", "// TODO", "assert!", "println!",
];
const DIR_NAMES: &[&str] = &[
    "src", "lib", "tests", "docs", "core", "util", "net", "ui", "data", "tools", "proto", "sync",
];
const EXTS: &[&str] = &["rs", "c", "h", "txt", "md", "json", "toml", "py"];

/// Source-like text of exactly `size` bytes.
fn text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    while out.len() < size {
        let indent = rng.below(4) * 4;
        out.extend(std::iter::repeat_n(b' ', indent));
        for w in 0..3 + rng.below(10) {
            if w > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
            if rng.below(8) == 0 {
                out.extend_from_slice(rng.below(100_000).to_string().as_bytes());
            }
        }
        out.push(b'\n');
    }
    out.truncate(size);
    out
}

/// Writes `files` files (log-uniform 100 B–20 KB, ~90% text, ~10% binary) over a
/// random tree of nested directories (depth ≤ 6, ~16 files a directory) into every
/// root. Returns the relative paths and the total size.
fn generate_tree(roots: &[&Path], files: usize) -> (Vec<String>, u64) {
    let mut rng = Rng(0x1FA1_D1F0_0DA7_1011);
    let mut dirs: Vec<(String, usize)> = vec![(String::new(), 0)];
    let ndirs = (files / 16).max(4);
    while dirs.len() < ndirs {
        let (parent, depth) = dirs[rng.below(dirs.len())].clone();
        if depth >= 6 {
            continue;
        }
        let name = format!("{}{}", DIR_NAMES[rng.below(DIR_NAMES.len())], dirs.len());
        let path = if parent.is_empty() {
            name
        } else {
            format!("{parent}/{name}")
        };
        dirs.push((path, depth + 1));
    }
    let mut paths = Vec::with_capacity(files);
    let mut total = 0u64;
    for i in 0..files {
        let (dir, _) = &dirs[rng.below(dirs.len())];
        let size = (100.0 * 200f64.powf(rng.unit())) as usize;
        let binary = rng.below(10) == 0;
        let ext = if binary {
            "bin"
        } else {
            EXTS[rng.below(EXTS.len())]
        };
        let name = format!("{}_{i}.{ext}", WORDS[rng.below(12)]);
        let rel = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let content = if binary {
            let mut b = vec![0u8; size];
            rng.fill(&mut b);
            b
        } else {
            text(&mut rng, size)
        };
        for root in roots {
            let abs = root.join(&rel);
            fs::create_dir_all(abs.parent().expect("file has a parent")).expect("create dir");
            fs::write(&abs, &content).expect("write file");
        }
        total += content.len() as u64;
        paths.push(rel);
    }
    (paths, total)
}

/// One edit: text files get a line inserted at a random line boundary; binary
/// files get 64 bytes overwritten at a random offset.
fn edit(rng: &mut Rng, old: &[u8], binary: bool) -> Vec<u8> {
    if binary {
        let mut v = old.to_vec();
        let len = 64.min(v.len());
        let at = rng.below(v.len() - len + 1);
        rng.fill(&mut v[at..at + len]);
        return v;
    }
    let guess = rng.below(old.len().max(1));
    let cut = old[guess.min(old.len())..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(old.len(), |p| guess + p + 1);
    let mut v = old[..cut].to_vec();
    v.extend_from_slice(format!("    let edited = {};\n", rng.next() % 1_000_000_007).as_bytes());
    v.extend_from_slice(&old[cut..]);
    v
}

/// Picks `n` distinct files and computes their edited contents from `root`.
fn plan_edits(rng: &mut Rng, root: &Path, paths: &[String], n: usize) -> Vec<(String, Vec<u8>)> {
    let mut picked = BTreeSet::new();
    while picked.len() < n.min(paths.len()) {
        picked.insert(rng.below(paths.len()));
    }
    picked
        .into_iter()
        .map(|i| {
            let rel = &paths[i];
            let old = fs::read(root.join(rel)).expect("read file to edit");
            (rel.clone(), edit(rng, &old, rel.ends_with(".bin")))
        })
        .collect()
}

fn apply_edits(root: &Path, edits: &[(String, Vec<u8>)]) {
    for (rel, content) in edits {
        fs::write(root.join(rel), content).expect("write edited file");
    }
}

fn write_big(path: &Path, size: u64) {
    let mut rng = Rng(0xB16F_11E0);
    let mut f =
        std::io::BufWriter::with_capacity(1 << 20, File::create(path).expect("create big file"));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write big file");
        left -= n as u64;
    }
    f.flush().expect("flush big file");
}

// ---------------------------------------------------------------------------
// Processes.

/// Runs a command to completion, panicking with its output if it fails.
fn run(cmd: &mut Command) -> String {
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
fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    run(cmd);
    t.elapsed()
}

fn ivaldi(dir: &Path) -> Command {
    let mut c = Command::new(IVALDI);
    c.arg("-C")
        .arg(dir)
        .env("IVALDI_AUTHOR", AUTHOR)
        .env("IVALDI_DISCOVERY_ADDRS", DISCOVERY_ADDRS)
        .env_remove("IVALDI_TIME")
        .env_remove("RUST_LOG");
    c
}

fn ivaldi_at(dir: &Path, t: i64) -> Command {
    let mut c = ivaldi(dir);
    c.env("IVALDI_TIME", t.to_string());
    c
}

fn git_env(c: &mut Command) -> &mut Command {
    // Only the repository's own config: no user or system settings leak in.
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_WORK_TREE")
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    git_env(&mut c);
    c
}

fn git_at(dir: &Path, t: i64) -> Command {
    let mut c = git(dir);
    let date = format!("@{t} +0000");
    c.env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date);
    c
}

fn git_quiet_config(dir: &Path) {
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
fn die_with_parent(cmd: &mut Command) -> &mut Command {
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
fn stop_child(child: &mut Child, name: &str) {
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
fn proc_stat(pid: u32) -> Option<Vec<u64>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn clock_tick() -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(1_000_000_000 / hz)
}

/// A process's user+sys CPU, plus that of its reaped children when `children`.
fn proc_cpu(pid: u32, children: bool) -> Duration {
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
fn cpu_pressure_us() -> Option<u64> {
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
fn vm_hwm_kib(pid: u32) -> u64 {
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
fn descendants(pid: u32) -> Vec<u32> {
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
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn tv(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000)
}

/// Runs a command with `wait4`: wall time, peak RSS (KiB) of it and the
/// descendants it reaped, and their CPU.
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's `Child` cannot see
fn run_rusage(cmd: &mut Command, errlog: &Path) -> (Duration, u64, Duration) {
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
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
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

    fn finish(mut self) -> u64 {
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
struct Daemon {
    name: String,
    dir: PathBuf,
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(dir: &Path, name: &str, auto_sync: bool, logs: &Path) -> Daemon {
        Daemon::start_with(dir, name, auto_sync, &[], logs)
    }

    /// Like `start`, with extra `ivaldi p2p config` arguments.
    fn start_with(dir: &Path, name: &str, auto_sync: bool, extra: &[&str], logs: &Path) -> Daemon {
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status(&self) -> Value {
        let out = run(ivaldi(&self.dir).args(["p2p", "status", "--json"]));
        serde_json::from_str(&out).expect("status is JSON")
    }

    /// Dials `port` (the other daemon's, or a proxy in front of it), after
    /// both sides trust each other as their users would (`p2p trust`).
    fn connect(&self, other: &Daemon, port: u16) {
        self.trust(other);
        other.trust(self);
        run(ivaldi(&self.dir).args(["p2p", "connect", "127.0.0.1", &port.to_string()]));
    }

    fn trust(&self, other: &Daemon) {
        let id = other.status()["node_id"]
            .as_str()
            .expect("status has a node id")
            .to_owned();
        run(ivaldi(&self.dir).args(["p2p", "trust", &id]));
    }

    /// A one-use invitation ticket for this daemon's repository.
    fn invite(&self) -> String {
        let out = run(ivaldi(&self.dir).args(["p2p", "invite", "--json"]));
        let v: Value = serde_json::from_str(&out).expect("invite --json is JSON");
        v["ticket"].as_str().expect("a ticket").to_owned()
    }

    /// Waits until the daemon has received at least `n` messages of `kind`.
    fn wait_messages_in(&self, kind: &str, n: u64) {
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
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path, logs: &Path) -> GitDaemon {
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU of the connections it served (upload-pack, pack-objects), once reaped.
    fn children_cpu(&self) -> Duration {
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

fn free_port() -> u16 {
    TcpListener::bind((LOCAL, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port on 127.0.0.1")
}

// ---------------------------------------------------------------------------
// The counting proxy.

/// One read: direction (true = client → server) and size.
#[derive(Clone, Copy)]
struct Ev {
    up: bool,
    n: u64,
}

#[derive(Clone, Copy, Default)]
struct Traffic {
    up: u64,
    down: u64,
    round_trips: u64,
}

/// A TCP forwarder on 127.0.0.1 that logs each read's direction and size.
struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Ev>>>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind((LOCAL, 0)).expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2, streams2) = (stop.clone(), log.clone(), streams.clone());
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(SocketAddr::from((LOCAL, target))) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let Ok(mut s) = streams2.lock() {
                    s.extend(client.try_clone());
                    s.extend(server.try_clone());
                }
                let (la, lb) = (log2.clone(), log2.clone());
                std::thread::spawn(move || pump(client, server, true, &la));
                std::thread::spawn(move || pump(s2, c2, false, &lb));
            }
        });
        Proxy {
            port,
            stop,
            log,
            streams,
            accept: Some(accept),
        }
    }

    fn mark(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or(0)
    }

    fn since(&self, mark: usize) -> Traffic {
        let log = self.log.lock().expect("proxy log");
        let mut t = Traffic::default();
        let mut last: Option<bool> = None;
        for e in &log[mark.min(log.len())..] {
            if e.up {
                t.up += e.n;
            } else {
                t.down += e.n;
                if last == Some(true) {
                    t.round_trips += 1;
                }
            }
            last = Some(e.up);
        }
        t
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, up: bool, log: &Mutex<Vec<Ev>>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Logged before forwarding: the answer to these bytes cannot be
                // logged ahead of them.
                if let Ok(mut l) = log.lock() {
                    l.push(Ev { up, n: n as u64 });
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((LOCAL, self.port));
        if let Ok(s) = self.streams.lock() {
            for st in s.iter() {
                let _ = st.shutdown(Shutdown::Both);
            }
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// File-system helpers.

fn copy_dir(from: &Path, to: &Path) {
    if let Some(p) = to.parent() {
        fs::create_dir_all(p).expect("create parent");
    }
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

fn dir_size(dir: &Path) -> u64 {
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

fn ivaldi_head(dir: &Path) -> Option<String> {
    fs::read_to_string(dir.join(".ivaldi").join("timelines").join("main"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Polls the clone's head file every 0.5 ms; returns when it names `want`.
fn wait_head(dir: &Path, want: &str, limit: Duration) -> Instant {
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

fn git_head(dir: &Path, rev: &str) -> String {
    run(git(dir).args(["rev-parse", rev])).trim().to_owned()
}

fn repo_id(dir: &Path) -> String {
    let v: Value = serde_json::from_slice(
        &fs::read(dir.join(".ivaldi").join("repo.json")).expect("read repo.json"),
    )
    .expect("repo.json is JSON");
    v["id"].as_str().expect("repo.json has an id").to_owned()
}

/// Removes the scratch directory even if the benchmark panics.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Full sync into an empty repository with the source's id: its daemon connects
/// to `port` and auto-sync pulls everything. Returns the wall time from the
/// `connect` command to the head file naming `head`, the CPU of both daemons and
/// the command, and the new daemon's final status.
fn ivaldi_full_sync(
    dst: &Path,
    id: &str,
    src: &Daemon,
    port: u16,
    head: &str,
    name: &str,
    logs: &Path,
) -> (Duration, Duration, Value) {
    run(Command::new(IVALDI).arg("forge").arg(dst));
    fs::write(
        dst.join(".ivaldi").join("repo.json"),
        format!("{{\"id\":\"{id}\"}}\n"),
    )
    .expect("write repo.json");
    let d = Daemon::start(dst, name, true, logs);
    let (cpu_s0, cpu_d0, cpu_c0) = (
        proc_cpu(src.pid(), false),
        proc_cpu(d.pid(), false),
        children_cpu(),
    );
    let t = Instant::now();
    d.connect(src, port);
    let wall = wait_head(dst, head, Duration::from_secs(900)) - t;
    let cpu = proc_cpu(src.pid(), false).saturating_sub(cpu_s0)
        + proc_cpu(d.pid(), false).saturating_sub(cpu_d0)
        + children_cpu().saturating_sub(cpu_c0);
    std::thread::sleep(Duration::from_millis(50)); // the clone's announcement
    let st = d.status();
    (wall, cpu, st)
}

/// `git clone [--bare]` from the git daemon (or a proxy) at `port`; wall time
/// and CPU of both sides.
fn git_clone(
    dir: &Path,
    port: u16,
    dst: &Path,
    bare: bool,
    gd: &GitDaemon,
) -> (Duration, Duration) {
    let url = format!("git://127.0.0.1:{port}/git");
    let (cpu_g0, cpu_c0) = (gd.children_cpu(), children_cpu());
    let mut c = git(dir);
    c.args(["clone", "-q"]);
    if bare {
        c.arg("--bare");
    }
    let wall = timed(c.arg(&url).arg(dst));
    let cpu = gd.children_cpu().saturating_sub(cpu_g0) + children_cpu().saturating_sub(cpu_c0);
    (wall, cpu)
}

/// Seals `edits` on the source, waits until the clone's daemon has heard of the
/// new head, then times `ivaldi p2p sync` on the clone. Returns the wall time and
/// the CPU of both daemons and the command.
fn ivaldi_one_seal(
    src: &Path,
    ds: &Daemon,
    dd: &Daemon,
    edits: &[(String, Vec<u8>)],
    t: i64,
) -> (Duration, Duration) {
    let updates0 = dd.status()["stats"]["messages_in"]["timeline_update"]
        .as_u64()
        .unwrap_or(0);
    apply_edits(src, edits);
    run(ivaldi_at(src, t).args(["seal", "-m", "one seal"]));
    let new = ivaldi_head(src).expect("source head");
    dd.wait_messages_in("timeline_update", updates0 + 1);
    let (cpu_s0, cpu_d0, cpu_c0) = (
        proc_cpu(ds.pid(), false),
        proc_cpu(dd.pid(), false),
        children_cpu(),
    );
    let wall = timed(ivaldi(&dd.dir).args(["p2p", "sync"]));
    let cpu = proc_cpu(ds.pid(), false).saturating_sub(cpu_s0)
        + proc_cpu(dd.pid(), false).saturating_sub(cpu_d0)
        + children_cpu().saturating_sub(cpu_c0);
    assert_eq!(
        ivaldi_head(&dd.dir).as_deref(),
        Some(new.as_str()),
        "synced head"
    );
    (wall, cpu)
}

struct BigSample {
    wall: Duration,
    cpu_src: Duration,
    cpu_dst: Duration,
    hwm_src: u64,
    hwm_dst: u64,
    hwm_src0: u64,
    hwm_dst0: u64,
    bytes_in: f64,
}

/// Case 3: fresh daemons on the source (the big file already sealed) and on a
/// copy of the synced clone; connected, then `ivaldi p2p sync` on the clone.
fn ivaldi_big_sync(
    src: &Path,
    synced: &Path,
    dst: &Path,
    encryption: bool,
    rep: usize,
    logs: &Path,
) -> BigSample {
    copy_dir(synced, dst);
    let enc = ["--encryption", if encryption { "on" } else { "off" }];
    let tag = if encryption { "" } else { "-plain" };
    let new = ivaldi_head(src).expect("source head");
    let ds = Daemon::start_with(src, &format!("c3-src{rep}{tag}"), true, &enc, logs);
    let dd = Daemon::start_with(dst, &format!("c3-dst{rep}{tag}"), false, &enc, logs);
    dd.connect(&ds, ds.port);
    std::thread::sleep(Duration::from_millis(200));
    let (hwm_src0, hwm_dst0) = (vm_hwm_kib(ds.pid()), vm_hwm_kib(dd.pid()));
    let st0 = dd.status();
    let (cpu_s0, cpu_d0) = (proc_cpu(ds.pid(), false), proc_cpu(dd.pid(), false));
    let wall = timed(ivaldi(dst).args(["p2p", "sync"]));
    let (cpu_src, cpu_dst) = (
        proc_cpu(ds.pid(), false).saturating_sub(cpu_s0),
        proc_cpu(dd.pid(), false).saturating_sub(cpu_d0),
    );
    assert_eq!(ivaldi_head(dst).as_deref(), Some(new.as_str()), "big head");
    let (hwm_src, hwm_dst) = (vm_hwm_kib(ds.pid()), vm_hwm_kib(dd.pid()));
    let st1 = dd.status();
    assert_eq!(
        st1["peers"][0]["encrypted"].as_bool().unwrap_or(encryption),
        encryption,
        "encryption setting not in effect"
    );
    let bytes_in = st1["stats"]["bytes_in"].as_f64().unwrap_or(0.0)
        - st0["stats"]["bytes_in"].as_f64().unwrap_or(0.0);
    BigSample {
        wall,
        cpu_src,
        cpu_dst,
        hwm_src,
        hwm_dst,
        hwm_src0,
        hwm_dst0,
        bytes_in,
    }
}

// ---------------------------------------------------------------------------
// The cached history.

struct History {
    ivaldi: PathBuf,
    git: PathBuf,
    paths: Vec<String>,
    ivaldi_head: String,
    git_head: String,
    tree_bytes: u64,
}

fn history(cfg: &Config, cache: &Path) -> History {
    let version = run(Command::new(IVALDI).arg("--version"))
        .trim()
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_");
    let key = format!(
        "{}f-{}s-{}t-{GENERATOR}-{version}",
        cfg.files, cfg.seals, cfg.touch
    );
    let dir = cache.join(key);
    let h = History {
        ivaldi: dir.join("ivaldi"),
        git: dir.join("git"),
        paths: Vec::new(),
        ivaldi_head: String::new(),
        git_head: String::new(),
        tree_bytes: 0,
    };
    if dir.join("complete").exists() {
        let paths: Vec<String> = fs::read_to_string(dir.join("paths.txt"))
            .expect("read paths.txt")
            .lines()
            .map(str::to_owned)
            .collect();
        let meta = fs::read_to_string(dir.join("complete")).expect("read marker");
        let mut it = meta.split_whitespace();
        let (ih, gh, bytes) = (it.next(), it.next(), it.next());
        if let (Some(ih), Some(gh), Some(bytes)) = (ih, gh, bytes)
            && ivaldi_head(&h.ivaldi).as_deref() == Some(ih)
            && git_head(&h.git, "HEAD") == gh
        {
            eprintln!("- using the cached history in {}", dir.display());
            return History {
                paths,
                ivaldi_head: ih.to_owned(),
                git_head: gh.to_owned(),
                tree_bytes: bytes.parse().unwrap_or(0),
                ..h
            };
        }
        eprintln!("- the cached history is damaged; regenerating");
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create cache dir");
    let t = Instant::now();
    run(Command::new(IVALDI).arg("forge").arg(&h.ivaldi));
    fs::create_dir_all(&h.git).expect("create git dir");
    run(git(&h.git).args(["init", "-q", "-b", "main"]));
    git_quiet_config(&h.git);
    let (paths, tree_bytes) = generate_tree(&[&h.ivaldi, &h.git], cfg.files);
    commit_both(&h.ivaldi, &h.git, "initial import", T0);
    let mut rng = Rng(0x5EA1_5EED);
    for i in 1..=cfg.seals {
        let edits = plan_edits(&mut rng, &h.ivaldi, &paths, cfg.touch);
        apply_edits(&h.ivaldi, &edits);
        apply_edits(&h.git, &edits);
        commit_both(
            &h.ivaldi,
            &h.git,
            &format!("change {i}"),
            T0 + 60 * i as i64,
        );
        if i % 50 == 0 {
            eprintln!(
                "  generated {i}/{} seals ({:.0} s)",
                cfg.seals,
                t.elapsed().as_secs_f64()
            );
        }
    }
    // A server's repository is packed; so is this one.
    run(git(&h.git).args(["repack", "-a", "-d", "-q"]));
    let n_seals = run(ivaldi(&h.ivaldi).args(["log", "--json"]))
        .parse::<Value>()
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    let n_commits: usize = run(git(&h.git).args(["rev-list", "--count", "HEAD"]))
        .trim()
        .parse()
        .unwrap_or(0);
    assert_eq!(n_seals, cfg.seals + 1, "ivaldi history length");
    assert_eq!(n_commits, cfg.seals + 1, "git history length");
    let ih = ivaldi_head(&h.ivaldi).expect("ivaldi head");
    let gh = git_head(&h.git, "HEAD");
    fs::write(dir.join("paths.txt"), paths.join("\n")).expect("write paths.txt");
    fs::write(dir.join("complete"), format!("{ih} {gh} {tree_bytes}\n")).expect("write marker");
    eprintln!(
        "- generated the history in {:.0} s into {}",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    History {
        paths,
        ivaldi_head: ih,
        git_head: gh,
        tree_bytes,
        ..h
    }
}

/// Seals and commits the same change, both at time `t`, in parallel.
fn commit_both(idir: &Path, gdir: &Path, msg: &str, t: i64) {
    let seal = ivaldi_at(idir, t)
        .args(["seal", "-m", msg])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivaldi seal");
    run(git_at(gdir, t).args(["add", "-A"]));
    run(git_at(gdir, t).args(["commit", "-q", "-m", msg]));
    let out = seal.wait_with_output().expect("wait for ivaldi seal");
    assert!(
        out.status.success(),
        "ivaldi seal failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Statistics and the report.

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn human_bytes(b: f64) -> String {
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// Named series of samples, in insertion order.
#[derive(Default)]
struct Samples(BTreeMap<String, Vec<f64>>);

impl Samples {
    fn push(&mut self, k: &str, v: f64) {
        self.0.entry(k.to_owned()).or_default().push(v);
    }

    fn med(&self, k: &str) -> f64 {
        self.0.get(k).map_or(f64::NAN, |v| median(v))
    }

    fn max(&self, k: &str) -> f64 {
        self.0
            .get(k)
            .map_or(f64::NAN, |v| v.iter().copied().fold(f64::NAN, f64::max))
    }

    fn raw(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.0 {
            let list: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
            let _ = writeln!(out, "- {k}: [{}]", list.join(", "));
        }
        out
    }
}

struct Row {
    case: String,
    ivaldi: String,
    git: String,
    ratio: String,
    goal: String,
    met: String,
}

fn verdict(ok: Option<bool>) -> String {
    match ok {
        None => "—".into(),
        Some(true) => "yes".into(),
        Some(false) => "**no**".into(),
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let cfg = Config::from_env();
    let base = std::env::var_os("IVALDI_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let cache = base.join("ivaldi-daemon-bench-cache");
    let scratch = Scratch(base.join(format!("ivaldi-daemon-bench-{}", std::process::id())));
    let work = scratch.0.clone();
    let _ = fs::remove_dir_all(&work);
    let logs = work.join("logs");
    fs::create_dir_all(&logs).expect("create scratch dir");

    let git_version = run(Command::new("git").arg("--version")).trim().to_string();
    let ivaldi_version = run(Command::new(IVALDI).arg("--version"))
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let commit = Command::new("git")
        .arg("-C")
        .arg(&ws)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "(not a git checkout)".into());
    let dirty = Command::new("git")
        .arg("-C")
        .arg(&ws)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);

    let h = history(&cfg, &cache);
    let (psi0, run0) = (cpu_pressure_us(), Instant::now());
    let mut s = Samples::default();

    println!(
        "# Ivaldi daemons vs git daemon{}",
        if cfg.quick { " (QUICK mode)" } else { "" }
    );
    println!();
    println!(
        "- ivaldi: {ivaldi_version} ({IVALDI}), workspace at {commit} with {dirty} modified tracked files; \
         default daemon config except bind 127.0.0.1, discovery off (so encryption on, lz4 on)"
    );
    println!(
        "- git: {git_version} (repo-local config only; git:// protocol, so no encryption; source repacked)"
    );
    println!(
        "- cores: {nproc}; load average at start: {}; scratch: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        work.display()
    );
    println!(
        "- history: {} files ({}), {} seals/commits of {} edited files each, after the initial import; \
         {} repetitions of cases 1–2, {} of case 3; ivaldi and git alternating",
        h.paths.len(),
        human_bytes(h.tree_bytes as f64),
        cfg.seals,
        cfg.touch,
        cfg.reps_small,
        cfg.reps_big
    );
    println!(
        "- on-disk size of the sources: ivaldi .ivaldi {}, git .git {}",
        human_bytes(dir_size(&h.ivaldi.join(".ivaldi")) as f64),
        human_bytes(dir_size(&h.git.join(".git")) as f64)
    );
    println!();

    let synced_ivaldi = work.join("synced-ivaldi");
    let synced_git = work.join("synced-git.git");

    // ---- case 1: full sync ------------------------------------------------------
    {
        let c1 = work.join("c1");
        let srv_i = c1.join("srv-ivaldi");
        copy_dir(&h.ivaldi, &srv_i);
        let src = Daemon::start(&srv_i, "c1-src", true, &logs);
        let iproxy = Proxy::start(src.port);
        let gd = GitDaemon::start(h.git.parent().expect("cache dir"), &logs);
        let gproxy = Proxy::start(gd.port);
        let id = repo_id(&srv_i);
        for rep in 0..cfg.reps_small {
            let r = c1.join(format!("rep{rep}"));
            fs::create_dir_all(&r).expect("create rep dir");
            // A: ivaldi daemon-to-daemon full sync, no checkout.
            let dst = r.join("ivaldi-sync");
            let (wall, cpu, st) = ivaldi_full_sync(
                &dst,
                &id,
                &src,
                src.port,
                &h.ivaldi_head,
                &format!("c1-dst{rep}"),
                &logs,
            );
            s.push("1 ivaldi ms", ms(wall));
            s.push("1 ivaldi cpu ms", ms(cpu));
            s.push(
                "1 ivaldi stats bytes in",
                st["stats"]["bytes_in"].as_f64().unwrap_or(0.0),
            );
            s.push(
                "1 ivaldi stats bytes out",
                st["stats"]["bytes_out"].as_f64().unwrap_or(0.0),
            );
            s.push(
                "1 ivaldi sync_requests",
                st["stats"]["messages_out"]["sync_request"]
                    .as_f64()
                    .unwrap_or(0.0),
            );
            run(ivaldi(&dst).args(["verify"]));

            // B: git clone --bare.
            let gdst = r.join("git-bare.git");
            let (wall, cpu) = git_clone(&r, gd.port, &gdst, true, &gd);
            assert_eq!(git_head(&gdst, "main"), h.git_head, "git clone --bare head");
            s.push("1 git ms", ms(wall));
            s.push("1 git cpu ms", ms(cpu));
            // Control: the same clone over file:// (pipes, no TCP).
            let gfile = r.join("git-file.git");
            let wall = timed(
                git(&r)
                    .args(["clone", "--bare", "-q"])
                    .arg(format!("file://{}", h.git.display()))
                    .arg(&gfile),
            );
            s.push("1f git ms", ms(wall));
            let _ = fs::remove_dir_all(&gfile);

            // A: ivaldi p2p clone (probe + sync + checkout).
            let cdst = r.join("ivaldi-clone");
            let (cpu_s0, cpu_c0) = (proc_cpu(src.pid(), false), children_cpu());
            let wall = timed(ivaldi(&r).args(["p2p", "clone", &src.invite()]).arg(&cdst));
            let cpu = proc_cpu(src.pid(), false).saturating_sub(cpu_s0)
                + children_cpu().saturating_sub(cpu_c0);
            assert_eq!(
                ivaldi_head(&cdst).as_deref(),
                Some(h.ivaldi_head.as_str()),
                "p2p clone head"
            );
            s.push("1b ivaldi ms", ms(wall));
            s.push("1b ivaldi cpu ms", ms(cpu));

            // B: git clone (with checkout).
            let gco = r.join("git-clone");
            let (wall, cpu) = git_clone(&r, gd.port, &gco, false, &gd);
            s.push("1b git ms", ms(wall));
            s.push("1b git cpu ms", ms(cpu));

            if rep == 0 {
                // The working trees must match.
                let diff = Command::new("diff")
                    .args(["-rq", "--exclude=.ivaldi", "--exclude=.git"])
                    .arg(&cdst)
                    .arg(&gco)
                    .output()
                    .expect("run diff");
                assert!(
                    diff.status.success(),
                    "ivaldi and git clones differ:\n{}",
                    String::from_utf8_lossy(&diff.stdout)
                );
                fs::rename(&dst, &synced_ivaldi).expect("keep the synced ivaldi clone");
                fs::rename(&gdst, &synced_git).expect("keep the synced git clone");
                git_quiet_config(&synced_git);

                // Once more through the counting proxy, for bytes and round trips.
                let mark = iproxy.mark();
                let (wall, _, _) = ivaldi_full_sync(
                    &r.join("ivaldi-proxied"),
                    &id,
                    &src,
                    iproxy.port,
                    &h.ivaldi_head,
                    "c1-proxied",
                    &logs,
                );
                let tr = iproxy.since(mark);
                s.push("1p ivaldi ms", ms(wall));
                s.push("1p ivaldi bytes down", tr.down as f64);
                s.push("1p ivaldi bytes up", tr.up as f64);
                s.push("1p ivaldi round trips", tr.round_trips as f64);
                let mark = gproxy.mark();
                let (wall, _) = git_clone(&r, gproxy.port, &r.join("git-proxied.git"), true, &gd);
                let tr = gproxy.since(mark);
                s.push("1p git ms", ms(wall));
                s.push("1p git bytes down", tr.down as f64);
                s.push("1p git bytes up", tr.up as f64);
                s.push("1p git round trips", tr.round_trips as f64);
            }
            eprintln!(
                "  rep {rep}: case 1  ivaldi {:>9} (clone {:>9})  git {:>9} (clone {:>9})",
                fmt_ms(s.0["1 ivaldi ms"][rep]),
                fmt_ms(s.0["1b ivaldi ms"][rep]),
                fmt_ms(s.0["1 git ms"][rep]),
                fmt_ms(s.0["1b git ms"][rep]),
            );
            // Deleted with the whole case: on ext4 without a journal, creating
            // files soon after thousands were freed is slower (see the
            // foundation benchmark), which would tax the next repetition.
        }
        drop(iproxy);
        drop(gproxy);
        drop(src);
        drop(gd);
        let _ = fs::remove_dir_all(&c1);
    }

    // ---- case 2: one new seal ---------------------------------------------------
    let mut next_t = T0 + 60 * (cfg.seals as i64 + 10);
    {
        let c2 = work.join("c2");
        fs::create_dir_all(&c2).expect("create c2");
        let gd = GitDaemon::start(&c2, &logs);
        let gproxy = Proxy::start(gd.port);
        for rep in 0..cfg.reps_small {
            let r = c2.join(format!("rep{rep}"));
            let mut rng = Rng(0x0C0F_FEE0 + rep as u64);
            // Three changes: timed direct, automatic propagation, through the proxy.
            let edits: Vec<_> = (0..3)
                .map(|_| plan_edits(&mut rng, &h.ivaldi, &h.paths, cfg.one_seal))
                .collect();
            let times = [next_t, next_t + 60, next_t + 120];
            next_t += 180;

            // A: ivaldi.
            let src = r.join("ivaldi-src");
            let dst = r.join("ivaldi-dst");
            copy_dir(&h.ivaldi, &src);
            copy_dir(&synced_ivaldi, &dst);
            run(ivaldi(&src).arg("status")); // refresh the stat cache after the copy
            let ds = Daemon::start(&src, &format!("c2-src{rep}"), true, &logs);
            let dd = Daemon::start(&dst, &format!("c2-dst{rep}"), false, &logs);
            dd.connect(&ds, ds.port);
            std::thread::sleep(Duration::from_millis(200)); // handshake pulls settle
            let (st_s0, st_d0) = (ds.status(), dd.status());
            let (wall, cpu) = ivaldi_one_seal(&src, &ds, &dd, &edits[0], times[0]);
            std::thread::sleep(Duration::from_millis(100)); // the clone's announcement
            let (st_s1, st_d1) = (ds.status(), dd.status());
            let delta = |a: &Value, b: &Value, k: &str| {
                b["stats"][k].as_f64().unwrap_or(0.0) - a["stats"][k].as_f64().unwrap_or(0.0)
            };
            s.push("2 ivaldi ms", ms(wall));
            s.push("2 ivaldi cpu ms", ms(cpu));
            s.push(
                "2 ivaldi stats bytes down",
                delta(&st_s0, &st_s1, "bytes_out"),
            );
            s.push(
                "2 ivaldi stats bytes up",
                delta(&st_d0, &st_d1, "bytes_out"),
            );
            s.push("2 ivaldi objects", delta(&st_d0, &st_d1, "objects_in"));
            s.push(
                "2 ivaldi sync_requests",
                st_d1["stats"]["messages_out"]["sync_request"]
                    .as_f64()
                    .unwrap_or(0.0)
                    - st_d0["stats"]["messages_out"]["sync_request"]
                        .as_f64()
                        .unwrap_or(0.0),
            );

            // A (2b): auto-sync on; seal start → the clone's head moved.
            run(ivaldi(&dst).args(["p2p", "auto-sync", "on"]));
            apply_edits(&src, &edits[1]);
            let t = Instant::now();
            run(ivaldi_at(&src, times[1]).args(["seal", "-m", "second seal"]));
            let sealed = t.elapsed();
            let new2 = ivaldi_head(&src).expect("source head");
            let arrived = wait_head(&dst, &new2, Duration::from_secs(60)) - t;
            s.push("2b ivaldi ms", ms(arrived));
            s.push("2b ivaldi seal ms", ms(sealed));

            // A (proxied): reconnect through the counting proxy.
            run(ivaldi(&dst).args(["p2p", "auto-sync", "off"]));
            let src_id = ds.status()["node_id"].as_str().expect("node id").to_owned();
            run(ivaldi(&dst).args(["p2p", "disconnect", &src_id]));
            let proxy = Proxy::start(ds.port);
            dd.connect(&ds, proxy.port);
            std::thread::sleep(Duration::from_millis(200));
            let mark = proxy.mark();
            let (wall, _) = ivaldi_one_seal(&src, &ds, &dd, &edits[2], times[2]);
            std::thread::sleep(Duration::from_millis(100));
            let tr = proxy.since(mark);
            s.push("2p ivaldi ms", ms(wall));
            s.push("2p ivaldi bytes down", tr.down as f64);
            s.push("2p ivaldi bytes up", tr.up as f64);
            s.push("2p ivaldi round trips", tr.round_trips as f64);
            drop(proxy);
            drop(dd);
            drop(ds);

            // B: git.
            let gsrc = r.join("git-src");
            let gdst = r.join("git-dst.git");
            let gdst_p = r.join("git-dst-proxied.git");
            let gdst_f = r.join("git-dst-file.git");
            copy_dir(&h.git, &gsrc);
            copy_dir(&synced_git, &gdst);
            copy_dir(&synced_git, &gdst_p);
            copy_dir(&synced_git, &gdst_f);
            // Refresh the index's stat data after the copy (exit status irrelevant).
            let _ = git(&gsrc)
                .args(["update-index", "-q", "--refresh"])
                .output();
            let url = |port: u16| format!("git://127.0.0.1:{port}/rep{rep}/git-src");
            let fetch = |dir: &Path, port: u16| {
                let mut c = git(dir);
                c.args(["fetch", "-q", &url(port), "+refs/heads/*:refs/heads/*"]);
                c
            };
            apply_edits(&gsrc, &edits[0]);
            run(git_at(&gsrc, times[0]).args(["add", "-A"]));
            run(git_at(&gsrc, times[0]).args(["commit", "-q", "-m", "one seal"]));
            let (cpu_g0, cpu_c0) = (gd.children_cpu(), children_cpu());
            let wall = timed(&mut fetch(&gdst, gd.port));
            let cpu =
                gd.children_cpu().saturating_sub(cpu_g0) + children_cpu().saturating_sub(cpu_c0);
            assert_eq!(
                git_head(&gdst, "main"),
                git_head(&gsrc, "HEAD"),
                "git fetch head"
            );
            s.push("2 git ms", ms(wall));
            s.push("2 git cpu ms", ms(cpu));
            // Control: the same fetch over file:// (pipes, no TCP).
            let wall = timed(git(&gdst_f).args([
                "fetch",
                "-q",
                &format!("file://{}", gsrc.display()),
                "+refs/heads/*:refs/heads/*",
            ]));
            s.push("2f git ms", ms(wall));

            // B (2b): commit + fetch.
            apply_edits(&gsrc, &edits[1]);
            let t = Instant::now();
            run(git_at(&gsrc, times[1]).args(["add", "-A"]));
            run(git_at(&gsrc, times[1]).args(["commit", "-q", "-m", "second seal"]));
            let committed = t.elapsed();
            run(&mut fetch(&gdst, gd.port));
            s.push("2b git ms", ms(t.elapsed()));
            s.push("2b git commit ms", ms(committed));

            // B (proxied): a synced clone one commit behind fetches the third change.
            run(&mut fetch(&gdst_p, gd.port));
            apply_edits(&gsrc, &edits[2]);
            run(git_at(&gsrc, times[2]).args(["add", "-A"]));
            run(git_at(&gsrc, times[2]).args(["commit", "-q", "-m", "third seal"]));
            let mark = gproxy.mark();
            let wall = timed(&mut fetch(&gdst_p, gproxy.port));
            let tr = gproxy.since(mark);
            assert_eq!(
                git_head(&gdst_p, "main"),
                git_head(&gsrc, "HEAD"),
                "git fetch head"
            );
            s.push("2p git ms", ms(wall));
            s.push("2p git bytes down", tr.down as f64);
            s.push("2p git bytes up", tr.up as f64);
            s.push("2p git round trips", tr.round_trips as f64);
            eprintln!(
                "  rep {rep}: case 2  ivaldi {:>9} ({} B down, {} B up)  git {:>9} ({} B down, {} B up)",
                fmt_ms(s.0["2 ivaldi ms"][rep]),
                s.0["2p ivaldi bytes down"][rep],
                s.0["2p ivaldi bytes up"][rep],
                fmt_ms(s.0["2 git ms"][rep]),
                s.0["2p git bytes down"][rep],
                s.0["2p git bytes up"][rep],
            );
        }
        drop(gproxy);
        drop(gd);
        let _ = fs::remove_dir_all(&c2);
    }

    // ---- case 3: one big file ---------------------------------------------------
    {
        let c3 = work.join("c3");
        fs::create_dir_all(&c3).expect("create c3");
        let big = c3.join("big.template");
        write_big(&big, cfg.big);
        let gd = GitDaemon::start(&c3, &logs);
        for rep in 0..cfg.reps_big {
            let r = c3.join(format!("rep{rep}"));
            let t = next_t;
            next_t += 60;

            // A: ivaldi.
            let src = r.join("ivaldi-src");
            copy_dir(&h.ivaldi, &src);
            run(ivaldi(&src).arg("status"));
            fs::copy(&big, src.join("big.bin")).expect("copy big file");
            run(ivaldi_at(&src, t).args(["seal", "-m", "big file"]));
            let b = ivaldi_big_sync(
                &src,
                &synced_ivaldi,
                &r.join("ivaldi-dst"),
                true,
                rep,
                &logs,
            );
            s.push("3 ivaldi ms", ms(b.wall));
            s.push("3 ivaldi MB/s", cfg.big as f64 / b.wall.as_secs_f64() / 1e6);
            s.push("3 ivaldi src cpu ms", ms(b.cpu_src));
            s.push("3 ivaldi dst cpu ms", ms(b.cpu_dst));
            s.push("3 ivaldi src hwm KiB", b.hwm_src as f64);
            s.push("3 ivaldi dst hwm KiB", b.hwm_dst as f64);
            s.push("3 ivaldi src hwm before KiB", b.hwm_src0 as f64);
            s.push("3 ivaldi dst hwm before KiB", b.hwm_dst0 as f64);
            s.push("3 ivaldi bytes down", b.bytes_in);

            // B: git.
            let gsrc = r.join("git-src");
            let gdst = r.join("git-dst.git");
            copy_dir(&h.git, &gsrc);
            copy_dir(&synced_git, &gdst);
            fs::copy(&big, gsrc.join("big.bin")).expect("copy big file");
            run(git_at(&gsrc, t).args(["add", "-A"]));
            run(git_at(&gsrc, t).args(["commit", "-q", "-m", "big file"]));
            run(git(&gsrc).args(["repack", "-d", "-q"]));
            let url = format!("git://127.0.0.1:{}/rep{rep}/git-src", gd.port);
            let sampler = RssSampler::start(gd.pid());
            let cpu_g0 = gd.children_cpu();
            let (wall, rss, cpu) = run_rusage(
                git(&gdst).args(["fetch", "-q", &url, "+refs/heads/*:refs/heads/*"]),
                &logs.join("git-fetch.err"),
            );
            let srv_cpu = gd.children_cpu().saturating_sub(cpu_g0);
            let srv_rss = sampler.finish();
            assert_eq!(
                git_head(&gdst, "main"),
                git_head(&gsrc, "HEAD"),
                "git fetch head"
            );
            s.push("3 git ms", ms(wall));
            s.push("3 git MB/s", cfg.big as f64 / wall.as_secs_f64() / 1e6);
            s.push("3 git client hwm KiB", rss as f64);
            s.push("3 git server hwm KiB", srv_rss as f64);
            s.push("3 git client cpu ms", ms(cpu));
            s.push("3 git server cpu ms", ms(srv_cpu));
            // A': ivaldi again, both daemons with encryption off (informational).
            let b = ivaldi_big_sync(
                &src,
                &synced_ivaldi,
                &r.join("ivaldi-dst-plain"),
                false,
                rep,
                &logs,
            );
            s.push("3x ivaldi ms", ms(b.wall));
            s.push(
                "3x ivaldi MB/s",
                cfg.big as f64 / b.wall.as_secs_f64() / 1e6,
            );
            s.push("3x ivaldi src hwm KiB", b.hwm_src as f64);
            s.push("3x ivaldi dst hwm KiB", b.hwm_dst as f64);
            s.push("3x ivaldi cpu ms", ms(b.cpu_src + b.cpu_dst));
            eprintln!(
                "  rep {rep}: case 3  ivaldi {:>9} ({:.0} MB/s, RSS src {} dst {})  git {:>9} ({:.0} MB/s)",
                fmt_ms(s.0["3 ivaldi ms"][rep]),
                s.0["3 ivaldi MB/s"][rep],
                human_bytes(s.0["3 ivaldi src hwm KiB"][rep] * 1024.0),
                human_bytes(s.0["3 ivaldi dst hwm KiB"][rep] * 1024.0),
                fmt_ms(s.0["3 git ms"][rep]),
                s.0["3 git MB/s"][rep],
            );
            let _ = fs::remove_dir_all(&r);
        }
        drop(gd);
        let _ = fs::remove_dir_all(&c3);
    }

    // ---- report -----------------------------------------------------------------
    let big = human_bytes(cfg.big as f64);
    let mut rows = Vec::new();
    let time_row = |case: String, a: f64, b: f64, goal: &str, limit: Option<f64>| {
        let r = a / b;
        Row {
            case,
            ivaldi: fmt_ms(a),
            git: fmt_ms(b),
            ratio: format!("{r:.2}×"),
            goal: goal.into(),
            met: verdict(limit.map(|l| r <= l)),
        }
    };
    let bytes_row = |case: &str, k: &str, goal: &str, judge: bool| {
        let (id, iu, gdn, gu) = (
            s.med(&format!("{k} ivaldi bytes down")),
            s.med(&format!("{k} ivaldi bytes up")),
            s.med(&format!("{k} git bytes down")),
            s.med(&format!("{k} git bytes up")),
        );
        Row {
            case: case.into(),
            ivaldi: format!("{} / {}", human_bytes(id), human_bytes(iu)),
            git: format!("{} / {}", human_bytes(gdn), human_bytes(gu)),
            ratio: format!("{:.2}×", (id + iu) / (gdn + gu)),
            goal: goal.into(),
            met: verdict(judge.then_some(id + iu < gdn + gu)),
        }
    };
    rows.push(time_row(
        "1. full sync into an empty repository (ivaldi: daemon pull, no checkout; git: `clone --bare`)"
            .into(),
        s.med("1 ivaldi ms"),
        s.med("1 git ms"),
        "≤ 0.5× git",
        Some(0.5),
    ));
    rows.push(bytes_row(
        "1. … bytes down / up (proxy)",
        "1p",
        "(informational)",
        false,
    ));
    rows.push(time_row(
        "1b. clone with checkout (`ivaldi p2p clone` vs `git clone`)".into(),
        s.med("1b ivaldi ms"),
        s.med("1b git ms"),
        "(informational)",
        None,
    ));
    rows.push(time_row(
        format!(
            "2. one new seal of {} files: `ivaldi p2p sync` vs `git fetch`",
            cfg.one_seal
        ),
        s.med("2 ivaldi ms"),
        s.med("2 git ms"),
        "< 0.2× git",
        Some(0.2 - 1e-9),
    ));
    rows.push(bytes_row(
        "2. … bytes down / up (proxy)",
        "2p",
        "fewer bytes than git",
        true,
    ));
    rows.push(Row {
        case: "2. … round trips (proxy)".into(),
        ivaldi: format!(
            "{:.0} ({:.0} sync_request)",
            s.med("2p ivaldi round trips"),
            s.med("2 ivaldi sync_requests")
        ),
        git: format!("{:.0}", s.med("2p git round trips")),
        ratio: format!(
            "{:.2}×",
            s.med("2p ivaldi round trips") / s.med("2p git round trips")
        ),
        goal: "(informational)".into(),
        met: verdict(None),
    });
    rows.push(time_row(
        "2b. seal → clone's head moved, auto-sync (vs `git add -A && git commit` + `git fetch`)"
            .into(),
        s.med("2b ivaldi ms"),
        s.med("2b git ms"),
        "(informational)",
        None,
    ));
    let (mi, mg) = (s.med("3 ivaldi MB/s"), s.med("3 git MB/s"));
    rows.push(Row {
        case: format!("3. one {big} file: `ivaldi p2p sync` vs `git fetch`, MB/s"),
        ivaldi: format!("{mi:.0} MB/s ({})", fmt_ms(s.med("3 ivaldi ms"))),
        git: format!("{mg:.0} MB/s ({})", fmt_ms(s.med("3 git ms"))),
        ratio: format!("{:.2}× the speed", mi / mg),
        goal: "≥ 1 GB/s (1000 MB/s)".into(),
        met: verdict(Some(mi >= 1000.0)),
    });
    // A peak is a peak: the RSS goal is judged on the largest repetition.
    let (rs, rd) = (
        s.max("3 ivaldi src hwm KiB") * 1024.0,
        s.max("3 ivaldi dst hwm KiB") * 1024.0,
    );
    let (gc, gs) = (
        s.max("3 git client hwm KiB") * 1024.0,
        s.max("3 git server hwm KiB") * 1024.0,
    );
    rows.push(Row {
        case: "3. … peak RSS, largest of the repetitions (ivaldi: source / clone daemon; git: fetch side / daemon side)"
            .into(),
        ivaldi: format!("{} / {}", human_bytes(rs), human_bytes(rd)),
        git: format!("{} / {}", human_bytes(gc), human_bytes(gs)),
        ratio: format!("{:.2}×", rs.max(rd) / gc.max(gs)),
        goal: "< 64 MiB per daemon".into(),
        met: verdict(Some(rs.max(rd) < 64.0 * 1048576.0)),
    });
    let mx = s.med("3x ivaldi MB/s");
    rows.push(Row {
        case: "3x. … the same with encryption off on both daemons".into(),
        ivaldi: format!("{mx:.0} MB/s ({})", fmt_ms(s.med("3x ivaldi ms"))),
        git: format!("{mg:.0} MB/s"),
        ratio: format!("{:.2}× the speed", mx / mg),
        goal: "(informational)".into(),
        met: verdict(None),
    });

    println!("| case | ivaldi | git | ratio | goal | met? |");
    println!("|---|---:|---:|---:|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.case, r.ivaldi, r.git, r.ratio, r.goal, r.met
        );
    }
    println!();
    println!("Notes (medians):");
    println!(
        "- timed runs connect directly; bytes and round trips come from one extra run through \
         the counting proxy (case 1: first repetition; case 2: a third change each repetition). \
         Proxied wall times: case 1 ivaldi {}, git {}; case 2 ivaldi {}, git {}",
        fmt_ms(s.med("1p ivaldi ms")),
        fmt_ms(s.med("1p git ms")),
        fmt_ms(s.med("2p ivaldi ms")),
        fmt_ms(s.med("2p git ms")),
    );
    println!(
        "- control, git over file:// (pipes, so no TCP delayed-ACK stalls): case 1 `clone --bare` {} \
         (ivaldi/this {:.2}×), case 2 `fetch` {} (ivaldi/this {:.2}×)",
        fmt_ms(s.med("1f git ms")),
        s.med("1 ivaldi ms") / s.med("1f git ms"),
        fmt_ms(s.med("2f git ms")),
        s.med("2 ivaldi ms") / s.med("2f git ms"),
    );
    println!(
        "- CPU user+sys, both sides: case 1 ivaldi {} (both daemons + the connect command), git {} \
         (clone + index-pack, and git daemon's upload-pack/pack-objects); case 1b ivaldi {} \
         (clone command + source daemon), git {}",
        fmt_ms(s.med("1 ivaldi cpu ms")),
        fmt_ms(s.med("1 git cpu ms")),
        fmt_ms(s.med("1b ivaldi cpu ms")),
        fmt_ms(s.med("1b git cpu ms")),
    );
    println!(
        "- case 1 round trips seen by the proxy: ivaldi {:.0} (Noise + hello included; {:.0} sync_request), \
         git {:.0}; the clone daemon's own counters: {} in, {} out",
        s.med("1p ivaldi round trips"),
        s.med("1 ivaldi sync_requests"),
        s.med("1p git round trips"),
        human_bytes(s.med("1 ivaldi stats bytes in")),
        human_bytes(s.med("1 ivaldi stats bytes out")),
    );
    println!(
        "- case 2 CPU: ivaldi {} (both daemons + the sync command), git {}; objects sent {:.0}; \
         daemons' own counters on the direct run: {:.0} B down, {:.0} B up",
        fmt_ms(s.med("2 ivaldi cpu ms")),
        fmt_ms(s.med("2 git cpu ms")),
        s.med("2 ivaldi objects"),
        s.med("2 ivaldi stats bytes down"),
        s.med("2 ivaldi stats bytes up"),
    );
    println!(
        "- case 2b split: ivaldi seal {} of {}; git add+commit {} of {}",
        fmt_ms(s.med("2b ivaldi seal ms")),
        fmt_ms(s.med("2b ivaldi ms")),
        fmt_ms(s.med("2b git commit ms")),
        fmt_ms(s.med("2b git ms")),
    );
    println!(
        "- case 3: ivaldi received {} (daemon counter); CPU source daemon {}, clone daemon {}; \
         git CPU fetch side {}, daemon side {}; RSS before the sync: source {}, clone {}",
        human_bytes(s.med("3 ivaldi bytes down")),
        fmt_ms(s.med("3 ivaldi src cpu ms")),
        fmt_ms(s.med("3 ivaldi dst cpu ms")),
        fmt_ms(s.med("3 git client cpu ms")),
        fmt_ms(s.med("3 git server cpu ms")),
        human_bytes(s.med("3 ivaldi src hwm before KiB") * 1024.0),
        human_bytes(s.med("3 ivaldi dst hwm before KiB") * 1024.0),
    );
    if let (Some(a), Some(b)) = (psi0, cpu_pressure_us()) {
        println!(
            "- CPU pressure (PSI) over the measurements: some task waited for a core {:.0}% of the time",
            (b - a) as f64 / 1e4 / run0.elapsed().as_secs_f64()
        );
    }
    println!(
        "- case 3 peak RSS: medians ivaldi source {} / clone {}, git fetch side {} / daemon side {}; \
         with encryption off: clone {} (largest), CPU both daemons {}",
        human_bytes(s.med("3 ivaldi src hwm KiB") * 1024.0),
        human_bytes(s.med("3 ivaldi dst hwm KiB") * 1024.0),
        human_bytes(s.med("3 git client hwm KiB") * 1024.0),
        human_bytes(s.med("3 git server hwm KiB") * 1024.0),
        human_bytes(s.max("3x ivaldi dst hwm KiB") * 1024.0),
        fmt_ms(s.med("3x ivaldi cpu ms")),
    );
    println!();
    println!("Raw samples:");
    print!("{}", s.raw());
    drop(scratch);
    if !cfg.keep_cache {
        let _ = fs::remove_dir_all(&cache);
    } else {
        eprintln!(
            "- the generated history stays cached in {} (IVALDI_BENCH_NO_CACHE=1 removes it)",
            cache.display()
        );
    }
}
