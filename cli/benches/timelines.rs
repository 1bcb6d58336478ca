//! What one new seal costs to sync as the number of timelines grows: the same
//! `ivaldi p2p sync` in a repository with 10 timelines and with 1,000.
//!
//! ```text
//! cargo bench -p ivaldi-cli --bench timelines                        # full run
//! IVALDI_BENCH_QUICK=1 cargo bench -p ivaldi-cli --bench timelines   # smoke run
//! ```
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
//! the second a later one.
//!
//! The sizes alternate (10, 1,000, 10, …) so a busy machine slows both alike.
//! Medians of the repetitions (9, or 1 in a quick run) are reported, with the
//! ratio of 1,000 timelines to 10 (goal: at most 1.2 for both).
//! Network safety: everything binds and connects to 127.0.0.1 only; every
//! ivaldi process gets `IVALDI_DISCOVERY_ADDRS=127.255.255.255`; the daemons
//! are stopped by their guards.

use std::time::{Duration, Instant};

use ivaldi_tests::Repo;
use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_forged, p2p_repo, wait_until};

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let quick = std::env::var_os("IVALDI_BENCH_QUICK").is_some();
    let reps = if quick { 1 } else { 9 };
    println!("one new seal, `ivaldi p2p sync`: {reps} repetition(s) per row, medians");
    println!();
    println!("| timelines | first sync after start | later sync |");
    println!("|---:|---:|---:|");
    // Sizes alternate (10, 1,000, 10, …), so a busy machine slows both alike.
    let sizes = [10usize, 1000];
    let sources: Vec<Repo> = sizes.iter().map(|n| build(*n)).collect();
    let mut samples: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); sizes.len()];
    for _ in 0..reps {
        for (k, source) in sources.iter().enumerate() {
            samples[k].push(run_once(source));
        }
    }
    let mut rows = Vec::new();
    for (n, s) in sizes.iter().zip(&samples) {
        let first = median(s.iter().map(|s| ms(s.0)).collect());
        let later = median(s.iter().map(|s| ms(s.1)).collect());
        println!("| {n} | {first:.1} ms | {later:.1} ms |");
        rows.push((first, later));
    }
    let (r_first, r_later) = (rows[1].0 / rows[0].0, rows[1].1 / rows[0].1);
    let met = r_first <= 1.2 && r_later <= 1.2;
    println!(
        "| ratio 1,000 / 10 (goal ≤ 1.2) | {r_first:.2}× | {r_later:.2}× | {}",
        if met { "met" } else { "NOT met" }
    );
}
