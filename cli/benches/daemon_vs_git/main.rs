//! Daemons side by side with git, and the goal table of issue 13: one
//! deterministic history synced over TCP on 127.0.0.1, `ivaldi` daemons against
//! `git daemon` + `git clone` / `git fetch`, in the same run, alternating ivaldi
//! and git (A, B, A, B, …), medians reported. Every goal row is printed with
//! the ivaldi value, the git value, the ratio, the goal and whether it is met,
//! all computed from this run's measurements.
//!
//! ```text
//! cargo bench -p ivaldi-cli --bench daemon_vs_git                          # full run
//! IVALDI_BENCH_QUICK=1 cargo bench -p ivaldi-cli --bench daemon_vs_git     # smoke run
//! ```
//!
//! The main history is generated twice from one splitmix64 stream, as an Ivaldi
//! repository and as a git repository with the same files and the same changes:
//! 5,000 files of 0.1–20 KB (log-uniform, ~10% binary, nested directories), then
//! 300 seals/commits each editing 1% of the files (50). Seal and commit times are
//! pinned (`IVALDI_TIME`, `GIT_AUTHOR_DATE`/`GIT_COMMITTER_DATE`), so both histories
//! are the same every run. The git source is then repacked (`git repack -a -d`), as
//! a server's repository would be; the ivaldi source is left as its seals wrote
//! it. A second, text-heavy history (see `text.rs`) has many versions of four
//! large lock-file-like text files. Both are cached under
//! `$IVALDI_BENCH_DIR/ivaldi-daemon-bench-cache/<parameters>-<binary hash>/`
//! (default: the system temporary directory), keyed by a hash of the `ivaldi`
//! binary, so a rebuilt binary writes its own history; every measurement runs on
//! fresh copies.
//!
//! Cases:
//!
//! 0. **Disk.** `.ivaldi` of the history as the seals left it against the
//!    repacked `.git`; then `ivaldi gc` on a copy, and `.ivaldi` again.
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
//!    (see below). Informational 2b: with auto-sync on, `ivaldi seal` start → the
//!    clone's head moved, against `git add -A && git commit` + `git fetch`.
//! 3. **One 256 MiB file** (pseudo-random) sealed on top of the history and pulled
//!    by a connected clone daemon with `ivaldi p2p sync` (direct connection, no
//!    proxy), against `git fetch` of the same commit (source repacked first, so git
//!    ships the stored zlib stream without recompressing). MB/s = 10^6 bytes/s of
//!    the file size over the command's wall time. The yardstick: one core's
//!    ChaCha20-Poly1305 speed, measured before each repetition (256 MiB in 64 KiB
//!    messages, `cipher.rs`). Peak RSS: `VmHWM` of both daemons (fresh daemons,
//!    started for this case), judged on the largest repetition. git: peak RSS of
//!    `git fetch` and its children (`wait4`), and of `git-daemon`'s children
//!    (sampled every 20 ms). Informational 3x: the same ivaldi sync with
//!    encryption off on both daemons.
//! 4. **Seal against commit** (`seal.rs`): a fresh tree of 5,000 files, then a
//!    change of 50 of them, against `git add -A && git commit`.
//! 5. **1,000 timelines against 10** (`timelines.rs`, shared with the
//!    `timelines` bench): one new seal, first `p2p sync` after the daemons start
//!    and a later one.
//! 6. **Text-heavy history** (`text.rs`): disk before and after `ivaldi gc`
//!    against `.git` loose and repacked; full-sync bytes against
//!    `git clone --bare`; the bytes of syncing the last 10 seals into a clone
//!    that has the rest against `git fetch` of the last 10 commits.
//!
//! Timed runs connect directly. Bytes and round trips come from extra runs
//! through the proxy (case 1: the first repetition; case 2: a third change in
//! every repetition; case 6: every run). Controls: git's clone and fetch are also
//! timed over `file://` (pipes), which shows how much of git's time is TCP
//! delayed-ACK stalls (git does not set `TCP_NODELAY` on git:// connections).
//!
//! Round trips: the proxy logs every read with its direction, before forwarding
//! it, so the log is causally ordered. A round trip is a switch from
//! client→server bytes to server→client bytes (a request answered). For case 2's
//! ivaldi side they are counted from the moment `p2p sync` starts, so the
//! unsolicited `timeline_update` push before it is not counted (its bytes are).
//!
//! Network safety: everything binds and connects to 127.0.0.1 only. Every ivaldi
//! process gets `IVALDI_DISCOVERY_ADDRS=127.255.255.255`; every daemon gets
//! `--bind-addr 127.0.0.1 --discovery off --port 0`. Daemons and `git daemon` are
//! children of this process held by guards that stop them by pid (SIGTERM, then
//! SIGKILL) on every exit path, and they get `PR_SET_PDEATHSIG` so they die with it.
//!
//! Environment: `IVALDI_BENCH_QUICK=1` (500 files, 30 seals, 16 MiB, a 40-seal
//! text history, one repetition of everything); `IVALDI_BENCH_DIR` (scratch and
//! cache directory); `IVALDI_BENCH_REPS` / `IVALDI_BENCH_BIG_REPS` (repetitions
//! of cases 1, 2 and 4 / 3); `IVALDI_BENCH_TIMELINE_REPS` (case 5, default 5);
//! `IVALDI_BENCH_NO_CACHE=1` (regenerate, and delete the cache afterwards).

mod cipher;
mod data;
mod history;
mod procs;
mod proxy;
mod report;
mod seal;
mod stats;
mod sync;
mod text;
mod timelines;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use data::{Rng, apply_edits, plan_edits, write_big};
use history::{History, history};
use procs::{
    Daemon, GitDaemon, RssSampler, Scratch, children_cpu, copy_dir, cpu_pressure_us, dir_size, git,
    git_at, git_head, git_quiet_config, ivaldi, ivaldi_at, ivaldi_head, proc_cpu, repo_id, run,
    run_rusage, timed, wait_head,
};
use proxy::Proxy;
use stats::{Samples, fmt_ms, human_bytes, ms};
use sync::{git_clone, ivaldi_big_sync, ivaldi_full_sync, ivaldi_one_seal};
use text::TextHistory;

const IVALDI: &str = env!("CARGO_BIN_EXE_ivaldi");
const AUTHOR: &str = "Bench <bench@example.invalid>";
/// Where discovery announcements would go: loopback broadcast, never the LAN.
const DISCOVERY_ADDRS: &str = "127.255.255.255";
const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Seal/commit time of the first seal; each later one is a minute after.
const T0: i64 = 1_700_000_000;
/// Bump when the generated history changes, so stale caches are not reused.
const GENERATOR: &str = "g1";
/// Bytes encrypted for the single-core ChaCha20-Poly1305 yardstick.
const CIPHER_BYTES: u64 = 256 << 20;

struct Config {
    quick: bool,
    files: usize,
    seals: usize,
    touch: usize,
    one_seal: usize,
    big: u64,
    reps_small: usize,
    reps_big: usize,
    reps_timelines: usize,
    text_seals: usize,
    text_tail: usize,
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
                reps_timelines: 1,
                text_seals: 40,
                text_tail: 10,
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
                reps_timelines: 5,
                text_seals: 200,
                text_tail: 10,
                keep_cache: true,
            }
        };
        if let Some(r) = num("IVALDI_BENCH_REPS") {
            c.reps_small = r;
        }
        if let Some(r) = num("IVALDI_BENCH_BIG_REPS") {
            c.reps_big = r;
        }
        if let Some(r) = num("IVALDI_BENCH_TIMELINE_REPS") {
            c.reps_timelines = r;
        }
        c.keep_cache = !flag("IVALDI_BENCH_NO_CACHE");
        c
    }
}

/// `ivaldi --version` plus a hash of the binary's bytes: the cached histories
/// are only reused by the binary that wrote them.
fn binary_key() -> String {
    use std::hash::{Hash, Hasher};
    let version = run(Command::new(IVALDI).arg("--version"))
        .trim()
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    fs::read(IVALDI)
        .expect("read the ivaldi binary")
        .hash(&mut h);
    format!("{version}-{:016x}", h.finish())
}

/// Case 0: `.ivaldi` as the seals left it against the repacked `.git`, then
/// after `ivaldi gc` on a copy; the same for the text-heavy history.
fn disk_case(h: &History, th: &TextHistory, work: &Path, s: &mut Samples) {
    for (tag, idir, gdir) in [("0", &h.ivaldi, &h.git), ("t", &th.ivaldi, &th.git)] {
        s.push(
            &format!("{tag} ivaldi disk"),
            dir_size(&idir.join(".ivaldi")) as f64,
        );
        s.push(
            &format!("{tag} git disk"),
            dir_size(&gdir.join(".git")) as f64,
        );
        let copy = work.join(format!("gc-{tag}"));
        copy_dir(idir, &copy);
        let wall = timed(ivaldi(&copy).arg("gc"));
        s.push(&format!("{tag} ivaldi gc ms"), ms(wall));
        s.push(
            &format!("{tag} ivaldi gc disk"),
            dir_size(&copy.join(".ivaldi")) as f64,
        );
        let _ = fs::remove_dir_all(&copy);
    }
    s.push("t loose git disk", th.git_loose_bytes as f64);
    eprintln!(
        "  disk: .ivaldi {} → {} after gc, .git {}; text: .ivaldi {} → {}, .git {} loose / {} packed",
        human_bytes(s.med("0 ivaldi disk")),
        human_bytes(s.med("0 ivaldi gc disk")),
        human_bytes(s.med("0 git disk")),
        human_bytes(s.med("t ivaldi disk")),
        human_bytes(s.med("t ivaldi gc disk")),
        human_bytes(s.med("t loose git disk")),
        human_bytes(s.med("t git disk")),
    );
}

fn main() {
    // Before any thread starts: case 5's harness runs this bench's binary.
    timelines::use_binary(IVALDI);
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

    let key = binary_key();
    let h = history(&cfg, &cache, &key);
    let th = text::text_history(&cfg, &cache, &key);
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
         {} repetitions of cases 1, 2 and 4, {} of case 3, {} of case 5; ivaldi and git alternating",
        h.paths.len(),
        human_bytes(h.tree_bytes as f64),
        cfg.seals,
        cfg.touch,
        cfg.reps_small,
        cfg.reps_big,
        cfg.reps_timelines
    );
    println!(
        "- text-heavy history: 4 lock-file-like text files ({} at the end), {} seals/commits of 1–2 files \
         each; the last-seals sync covers {} seals",
        human_bytes(th.tree_bytes as f64),
        cfg.text_seals,
        cfg.text_tail
    );
    println!("- cache key (binary): {key}");
    println!();

    // ---- case 0: disk -----------------------------------------------------------
    disk_case(&h, &th, &work, &mut s);

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
            let (wall, cpu, _) = ivaldi_one_seal(&src, &ds, &dd, &edits[0], times[0], None);
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
            let (wall, _, synced) =
                ivaldi_one_seal(&src, &ds, &dd, &edits[2], times[2], Some(&proxy));
            std::thread::sleep(Duration::from_millis(100)); // the clone's announcement
            // All of it: the source's timeline_update push, the sync, the
            // clone's announcement of its new head.
            let tr = proxy.since(mark);
            // From the moment `p2p sync` started: round trips are counted here.
            let trs = proxy.since(synced);
            s.push("2p ivaldi ms", ms(wall));
            s.push("2p ivaldi bytes down", tr.down as f64);
            s.push("2p ivaldi bytes up", tr.up as f64);
            s.push("2p ivaldi sync bytes down", trs.down as f64);
            s.push("2p ivaldi sync bytes up", trs.up as f64);
            s.push("2p ivaldi round trips", trs.round_trips as f64);
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

            // The yardstick, just before: one core's ChaCha20-Poly1305.
            s.push("3 chacha MB/s", cipher::chacha_mb_s(CIPHER_BYTES));

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

    // ---- case 4: seal vs commit -------------------------------------------------
    seal::measure(&cfg, &work, &mut s);

    // ---- case 5: 1,000 timelines against 10 ---------------------------------------
    {
        let m = timelines::measure(cfg.reps_timelines);
        for (k, n) in timelines::SIZES.iter().enumerate() {
            for (first, later) in m.first[k].iter().zip(&m.later[k]) {
                s.push(&format!("5 first {n} ms"), *first);
                s.push(&format!("5 later {n} ms"), *later);
            }
        }
        eprintln!(
            "  timelines: first {:.1} / {:.1} ms, later {:.1} / {:.1} ms (10 / 1,000)",
            s.med("5 first 10 ms"),
            s.med("5 first 1000 ms"),
            s.med("5 later 10 ms"),
            s.med("5 later 1000 ms"),
        );
    }

    // ---- case 6: the text-heavy history --------------------------------------------
    text::measure(&th, &work, &logs, &mut s);

    // ---- report -----------------------------------------------------------------
    report::report(&cfg, &s);
    println!();
    println!("Notes (medians):");
    report::notes(&s);
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
