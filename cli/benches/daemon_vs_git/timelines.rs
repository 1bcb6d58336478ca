//! One new seal with 10 and with 1,000 timelines (issue 13): shared by
//! `benches/timelines.rs` and the daemon_vs_git benchmark.
//!
//! Each repository is built once per size: a history of 20 seals on `main`,
//! then `n - 1` more timelines made with `ivaldi timeline create`, spread over
//! the last ten seals (as an imported git project's branches and tags
//! would be). Each repetition copies it twice (A, the source, and B, a synced
//! copy), starts both daemons on 127.0.0.1 (discovery off, B with auto-sync
//! off), makes them trust each other (`ivaldi p2p trust`) and connects B to A
//! (`ivaldi p2p add-peer`), and B pulls one new seal (its first sync with A,
//! which records a tracking name per timeline). Both daemons are then stopped
//! and started again (`ivaldi p2p stop`), B connects again, and twice: A seals
//! one change on `main`; once B's daemon has received A's `timeline_update`,
//! the clock runs around `ivaldi p2p sync` on B, and B's `main` must name the
//! new seal afterwards. The first is the first sync after the daemons start,
//! the second a later one. Sizes alternate (10, 1,000, 10, …) so a busy
//! machine slows both alike.

use std::time::{Duration, Instant};

use ivaldi_tests::Repo;
use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_forged, p2p_repo, wait_until};

/// The repository sizes compared, smallest first.
pub const SIZES: [usize; 2] = [10, 1000];
/// The goal: each 1,000-timeline sync at most this many times the 10-timeline one.
pub const GOAL: f64 = 1.2;

/// Builds the source repository: 20 seals on `main`, `n` timelines in all.
fn build(n: usize) -> Repo {
    let a = p2p_forged();
    let mut seals = Vec::new();
    for i in 0..20 {
        a.write("f.txt", format!("line {i}\n"));
        a.write(&format!("dir/file{i}.txt"), format!("file {i}\n"));
        seals.push(a.seal(&format!("seal {i}")));
    }
    for i in 1..n {
        let from = &seals[seals.len() - 1 - i % 10];
        a.ok(&[
            "timeline",
            "create",
            &format!("branch/{i:04}"),
            "--from",
            from,
        ]);
    }
    a
}

/// Seals one change on A's `main` and times `ivaldi p2p sync` on B once B's
/// daemon has heard of it.
fn one_seal(a: &Repo, b: &Repo, db: &Daemon, step: usize) -> Duration {
    let updates = |d: &Daemon| {
        d.status()["stats"]["messages_in"]["timeline_update"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = updates(db);
    a.write("f.txt", format!("a new line {step}\n"));
    let head = a.seal(&format!("new seal {step}"));
    wait_until(
        Duration::from_secs(30),
        "B to hear of the new seal",
        || updates(db) > before,
        String::new,
    );
    let start = Instant::now();
    b.ok(&["p2p", "sync"]);
    let took = start.elapsed();
    assert_eq!(b.head_of("main").as_deref(), Some(head.as_str()), "synced");
    took
}

/// Connects B's daemon to A's and waits until both list the other.
fn connect(db: &Daemon, da: &Daemon, b: &Repo) {
    let (a_id, b_id) = (da.node_id(), db.node_id());
    b.ok(&["p2p", "add-peer", &da.addr()]);
    wait_until(
        Duration::from_secs(30),
        "the daemons to connect",
        || da.peer_ids().contains(&b_id) && db.peer_ids().contains(&a_id),
        String::new,
    );
}

/// One repetition: (first sync after start, a later one).
fn run_once(source: &Repo) -> (Duration, Duration) {
    let a = p2p_repo(source.copy_of());
    let b = p2p_repo(source.copy_of());
    configure_loopback(&a, &[]);
    configure_loopback(&b, &["--auto-sync", "off"]);
    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", &b);
    a.ok(&["p2p", "trust", &db.node_id()]);
    b.ok(&["p2p", "trust", &da.node_id()]);
    connect(&db, &da, &b);
    // B's first sync ever with A records a tracking name per timeline.
    one_seal(&a, &b, &db, 0);
    a.ok(&["p2p", "stop"]);
    b.ok(&["p2p", "stop"]);
    da.restart();
    db.restart();
    connect(&db, &da, &b);
    let first = one_seal(&a, &b, &db, 1);
    let later = one_seal(&a, &b, &db, 2);
    (first, later)
}

/// Samples in milliseconds for each of [`SIZES`]: (first syncs, later syncs).
pub struct Measured {
    pub first: Vec<Vec<f64>>,
    pub later: Vec<Vec<f64>>,
}

/// Builds both repositories and runs `reps` repetitions, sizes alternating.
pub fn measure(reps: usize) -> Measured {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let sources: Vec<Repo> = SIZES.iter().map(|n| build(*n)).collect();
    let mut m = Measured {
        first: vec![Vec::new(); SIZES.len()],
        later: vec![Vec::new(); SIZES.len()],
    };
    for _ in 0..reps {
        for (k, source) in sources.iter().enumerate() {
            let (first, later) = run_once(source);
            m.first[k].push(ms(first));
            m.later[k].push(ms(later));
        }
    }
    m
}

/// Points the test harness's daemons at `bin` unless `IVALDI_BIN` is set, so
/// they run the binary this bench was built with (no nested `cargo build`).
/// Call before any thread starts.
pub fn use_binary(bin: &str) {
    if std::env::var_os("IVALDI_BIN").is_none() {
        // SAFETY: called at the start of `main`, before this process starts any
        // thread, so nothing reads the environment concurrently.
        unsafe { std::env::set_var("IVALDI_BIN", bin) };
    }
}
