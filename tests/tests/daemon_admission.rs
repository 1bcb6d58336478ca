//! Admission under attack, with real daemons on loopback: 500 hostile
//! connections (idle, half-open Noise, a byte per second, oversized record
//! headers) from 50 source addresses, reopened as the daemon closes them,
//! cannot keep a trusted peer out, delay its sync, or grow the daemon's
//! memory.
//!
//! The daemon under attack runs with its default limits (only loopback and
//! discovery off are configured). Trust is set up the way a user would:
//! `ivaldi p2p trust <other node id>` in each repository. All traffic stays on
//! 127.0.0.0/8; every daemon is stopped by its guard, and the attack's sockets
//! are closed when it is dropped.

use std::time::{Duration, Instant};

use ivaldi_tests::hostile::{self, Attack};
use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_forged, p2p_repo, wait_until};

const MIB: u64 = 1024 * 1024;

/// Polls `cond` every 20 ms; returns how long it took to hold, or `None`
/// after `limit`.
fn time_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_trusted_peer_gets_in_and_syncs_while_500_strangers_crowd_the_daemon() {
    let a = p2p_forged();
    a.write("f.txt", "one\n");
    a.seal("one");
    // Same repository, its own identity (created at its first start).
    let b = p2p_repo(a.copy_of());
    configure_loopback(&a, &[]);
    configure_loopback(&b, &[]);
    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", &b);
    let (a_id, b_id) = (da.node_id(), db.node_id());
    a.ok(&["p2p", "trust", &b_id]);
    b.ok(&["p2p", "trust", &a_id]);
    let baseline = hostile::rss_bytes(da.pid()).expect("A's VmRSS");

    // 500 hostile connections, 10 from each of 50 addresses (within the
    // default per-IP accept burst), reopened as the daemon closes them.
    let attack = Attack::start(da.socket_addr(), 500, 50, 200);
    std::thread::sleep(Duration::from_millis(500));
    let mut peak_rss = baseline;
    let mut sample = || {
        if let Some(r) = hostile::rss_bytes(da.pid()) {
            peak_rss = peak_rss.max(r);
        }
    };
    sample();

    // The trusted peer connects within 2 s while the pool is under attack.
    b.ok(&["p2p", "add-peer", &da.addr()]);
    let connected = time_until(Duration::from_secs(2), || {
        sample();
        da.peer_ids().contains(&b_id)
    });
    let stats_now = attack.stats();
    assert!(
        connected.is_some(),
        "B not admitted by A within 2 s under attack ({stats_now:?})\n{}",
        da.diagnostics()
    );
    eprintln!("trusted peer admitted after {connected:?}; attack so far: {stats_now:?}");

    // ... and syncs a new seal within 1 s of it being sealed.
    a.write("f.txt", "one\ntwo\n");
    let head = a.seal("two");
    let synced = time_until(Duration::from_secs(1), || {
        sample();
        b.head_of("main").as_deref() == Some(head.as_str())
    });
    assert!(
        synced.is_some(),
        "B did not get A's seal within 1 s under attack\n{}",
        da.diagnostics()
    );
    eprintln!("seal synced after {synced:?}");
    // The strangers wait in the bounded pool, not in peer slots.
    let st = da.status();
    let pool = st["admission"]["pool"]
        .as_u64()
        .expect("status has admission.pool");
    assert!(pool <= 100, "the unauthenticated pool is bounded: {pool}");
    let ready = st["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter(|p| p["state"] == "ready")
        .count();
    assert_eq!(ready, 1, "only B holds a peer slot");

    // Keep the pressure on past the unauthenticated deadline (5 s), so every
    // kind of hostile connection has been closed and reopened at least once.
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        sample();
        std::thread::sleep(Duration::from_millis(100));
    }
    let open_at_end = attack.open_now();
    let stats = attack.stop();
    eprintln!(
        "attack: {stats:?}; open at the end {open_at_end}; A's RSS {} MiB at start, peak {} MiB",
        baseline / MIB,
        peak_rss / MIB
    );
    assert!(
        stats.opened >= 500,
        "the attack really opened its 500 connections: {stats:?}"
    );
    assert!(
        stats.closed_by_daemon > 0,
        "the daemon closed hostile connections: {stats:?}"
    );
    assert!(
        peak_rss < 64 * MIB,
        "A's RSS stays under 64 MiB: peak {} MiB",
        peak_rss / MIB
    );
    let st = da.status();
    let adm = &st["stats"]["admission"];
    assert!(
        adm["pool_refused"].as_u64().unwrap_or(0) + adm["pool_evicted"].as_u64().unwrap_or(0) > 0,
        "the pool refused or evicted strangers: {adm}"
    );
    // The peer is still connected after the attack, and A is alive.
    assert!(da.is_alive());
    wait_until(
        Duration::from_secs(5),
        "B still connected to A after the attack",
        || da.peer_ids().contains(&b_id),
        || da.diagnostics(),
    );
}
