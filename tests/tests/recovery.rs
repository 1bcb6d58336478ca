//! Recovery (issue 8 §4): partial files left by a crash are removed when the
//! repository is next opened (by a command or the daemon); a daemon killed at
//! each fault point of a sync (objects landed, head moved, pack about to be
//! renamed) and a command killed while writing config leave a repository that
//! `verify` accepts, and the next sync completes.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ivaldi_shell_smol::repo::fault::{CONFIG_POINTS, SYNC_POINTS};
use ivaldi_tests::p2p::{
    Daemon, configure_loopback, p2p_empty, p2p_forged, proc_state, wait_until,
};
use ivaldi_tests::{Repo, describe_output, id_of, pseudo_random_bytes};

const SIGABRT: i32 = 6;
const MIB: usize = 1024 * 1024;

/// A pid that certainly belonged to a process that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait for true");
    pid
}

/// Files a crashed writer with `pid` leaves behind: a partial pack and the
/// temporary siblings of atomic writes (HEAD, a timeline, the stat cache, the
/// daemon's config), each with half-written content.
fn leftovers(r: &Repo, pid: u32) -> Vec<PathBuf> {
    let dot = r.dot();
    let files = [
        (
            dot.join("tmp").join(format!("pack-{pid}-12345.tmp")),
            "IVPACK01 half a pack",
        ),
        (dot.join(format!(".HEAD.{pid}.tmp")), "half-a-ti"),
        (
            dot.join("timelines").join(format!(".main.{pid}.tmp")),
            "00ff",
        ),
        (dot.join(format!(".index.{pid}.tmp")), "IVIDX"),
        (
            dot.join("p2p").join(format!(".config.json.{pid}.tmp")),
            "{\"port\": 90",
        ),
    ];
    for (path, content) in &files {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write leftover");
    }
    files.into_iter().map(|(p, _)| p).collect()
}

#[test]
fn partial_files_are_removed_when_the_repository_is_opened() {
    let r = p2p_forged();
    r.write("a.txt", "a\n");
    let head = r.seal("first");
    configure_loopback(&r, &[]);
    let config = std::fs::read(r.dot().join("p2p/config.json")).expect("config");

    // A live writer's pack (this test process) must survive; a dead one's goes.
    let live = r
        .dot()
        .join("tmp")
        .join(format!("pack-{}-1.tmp", std::process::id()));
    std::fs::write(&live, "being written").expect("write live pack");
    let dead = leftovers(&r, dead_pid());

    r.ok(&["status"]);
    for p in &dead {
        assert!(!p.exists(), "{} survived the next command", p.display());
    }
    assert!(live.exists(), "a live writer's partial pack was removed");
    std::fs::remove_file(&live).expect("remove live pack");
    assert_eq!(r.head_of("main").as_deref(), Some(head.as_str()));
    assert_eq!(r.current_timeline(), "main");
    assert_eq!(
        std::fs::read(r.dot().join("p2p/config.json")).expect("config"),
        config,
        "the config is untouched"
    );
    r.ok(&["verify"]);

    // The daemon cleans at start too (no command runs in between).
    let dead = leftovers(&r, dead_pid());
    let d = Daemon::start("R", &r);
    for p in &dead {
        assert!(!p.exists(), "{} survived the daemon's start", p.display());
    }
    assert!(d.is_alive());
    r.ok(&["verify"]);
    let st = r.json(&["status", "--json"]);
    assert_eq!(st["base"].as_str(), Some(head.as_str()), "{st}");
}

/// Seal ids of `log --json` on `main`, newest first.
fn history(r: &Repo) -> Vec<String> {
    r.log(Some("main")).iter().map(id_of).collect()
}

/// A (serving, daemon running) with a head B lacks: B is a clone of A's first
/// seal, then A seals two more (one with a chunked file).
fn behind<'a>(a: &'a Repo, b: &Repo) -> (Daemon<'a>, String, String) {
    a.write("start.txt", "start\n");
    let old = a.seal("start");
    configure_loopback(a, &[]);
    let da = Daemon::start("A", a);
    let dir = b.path().to_str().expect("UTF-8 temp path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    // B dials A when the test says so, not at start as a known peer.
    b.ok(&["p2p", "remove-peer", &da.addr()]);
    assert_eq!(b.head_of("main").as_deref(), Some(old.as_str()));
    // Above the daemon's 4 MiB checkpoint, so a pull lands in two packs.
    a.write("big.bin", pseudo_random_bytes(11, 5 * MIB + 300_000));
    a.seal("big file");
    a.write("start.txt", "start, edited\n");
    a.write("dir/new.txt", "new\n");
    let head = a.seal("edits");
    configure_loopback(b, &[]);
    (da, old, head)
}

/// Waits until the process `pid` is gone (reaped), so its temporary files count
/// as debris.
fn wait_reaped(pid: u32) {
    let start = Instant::now();
    while proc_state(pid).is_some() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After the crash: verify passes, main is old or new; then B restarts without
/// the crash point and the sync completes.
fn finish_after_crash(
    a: &Repo,
    da: &Daemon,
    b: &Repo,
    db: &Daemon,
    old: &str,
    head: &str,
    what: &str,
) {
    let v = b.run(&["verify"]);
    assert!(
        v.status.success(),
        "{what}: verify rejects B\n{}",
        describe_output(&v)
    );
    let now = b.head_of("main");
    assert!(
        now.as_deref() == Some(old) || now.as_deref() == Some(head),
        "{what}: B's main is {now:?}, neither {old} nor {head}"
    );
    if !db.is_alive() {
        db.restart();
    }
    let port = da.port().to_string();
    wait_until(
        Duration::from_secs(60),
        &format!("{what}: B to finish the sync after the restart"),
        || {
            let _ = b.run(&["p2p", "connect", "127.0.0.1", &port]);
            let _ = b.run(&["p2p", "sync"]);
            b.head_of("main").as_deref() == Some(head)
        },
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );
    let v = b.run(&["verify"]);
    assert!(
        v.status.success(),
        "{what}: verify after the sync\n{}",
        describe_output(&v)
    );
    assert_eq!(history(b), history(a), "{what}");
    b.ok(&["update"]);
    assert_eq!(b.read("big.bin"), a.read("big.bin"), "{what}");
    let tmp: Vec<_> = std::fs::read_dir(b.dot().join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "{what}: partial files left: {tmp:?}");
}

#[test]
fn daemon_killed_at_each_sync_fault_point_stays_consistent_and_resyncs() {
    assert!(!SYNC_POINTS.is_empty());
    for &point in SYNC_POINTS {
        let a = p2p_forged();
        let b = p2p_empty();
        let (da, old, head) = behind(&a, &b);

        b.set_env("IVALDI_CRASH_AT", point);
        // Checkpoints small enough that the transfer lands some.
        b.set_env("IVALDI_CHECKPOINT_MIB", "8");
        let db = Daemon::start("B", &b);
        let crashed_pid = db.pid();
        // Dial A: the pull starts at once and B aborts at the point.
        let _ = b.run(&["p2p", "connect", "127.0.0.1", &da.port().to_string()]);
        wait_until(
            Duration::from_secs(60),
            &format!("{point}: B's daemon to abort at its fault point"),
            || !db.is_alive(),
            || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
        );
        let log = std::fs::read_to_string(db.log_path()).unwrap_or_default();
        assert!(
            log.contains(&format!("crashing at fault point {point}")),
            "{point}: the daemon died elsewhere\n{}",
            db.diagnostics()
        );
        b.set_env("IVALDI_CRASH_AT", "");
        wait_reaped(crashed_pid);

        if point == "sync.objects-landed" {
            // An aborted landing: its objects are on disk but no ref reaches
            // them. gc finds and removes them; the sync still completes.
            let dry = b.json(&["gc", "--dry-run", "--json"]);
            assert!(
                dry["objects_removed"].as_u64() > Some(0),
                "the aborted landing's objects are unreachable: {dry}"
            );
            b.ok(&["gc"]);
        }
        finish_after_crash(&a, &da, &b, &db, &old, &head, point);
    }
}

#[test]
fn command_killed_while_writing_config_leaves_the_old_config_and_syncs() {
    for &point in CONFIG_POINTS {
        let a = p2p_forged();
        let b = p2p_empty();
        let (da, old, head) = behind(&a, &b);
        let path = b.dot().join("p2p/config.json");
        let before = std::fs::read(&path).expect("config");
        let out = b.run_env(
            &["p2p", "config", "--conflict-strategy", "prefer_remote"],
            &[("IVALDI_CRASH_AT", point)],
        );
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{}",
            describe_output(&out)
        );
        assert_eq!(
            std::fs::read(&path).expect("config"),
            before,
            "{point}: a crashed config write must leave the old config"
        );
        let p2p = b.dot().join("p2p");
        let partial = |p: &std::path::Path| {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                        .count()
                })
                .unwrap_or(0)
        };
        assert_eq!(
            partial(&p2p),
            1,
            "{point}: the crash leaves its temporary file"
        );
        let db = Daemon::start("B", &b);
        assert_eq!(partial(&p2p), 0, "{point}: the daemon's start removes it");
        finish_after_crash(&a, &da, &b, &db, &old, &head, point);
        // The interrupted change can simply be made again.
        b.ok(&["p2p", "config", "--conflict-strategy", "prefer_remote"]);
    }
}
