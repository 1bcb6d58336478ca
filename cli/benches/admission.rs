//! Admission under attack: how long a trusted peer takes to get in and to
//! sync one new seal while 0, 100 or 500 hostile connections crowd the
//! daemon, and the daemon's peak memory.
//!
//! ```text
//! cargo bench -p ivaldi-cli --bench admission                        # full run
//! IVALDI_BENCH_QUICK=1 cargo bench -p ivaldi-cli --bench admission   # smoke run
//! ```
//!
//! Each repetition starts two fresh daemons (A attacked, B the trusted peer)
//! on 127.0.0.1 with default limits (loopback, discovery off), makes them
//! trust each other with `ivaldi p2p trust`, starts the attack
//! (`ivaldi_tests::hostile`: idle, half-open Noise, a byte per second,
//! oversized record headers, 10 connections from each of `n / 10` addresses
//! `127.1.x.y`, reopened as A closes them, at most 200 a second), waits
//! 0.5 s, then:
//!
//! - **connect**: from `ivaldi p2p add-peer` on B until A lists B as a ready
//!   peer (A's `p2p peers --json`, polled every 5 ms);
//! - **sync**: from `ivaldi seal` returning on A until B's `main` names the
//!   new seal (polled every 5 ms);
//! - **peak RSS**: A's `VmHWM` at the end of the repetition (the daemon is
//!   fresh, so this is the peak under this attack).
//!
//! Medians of the repetitions are reported (3, or 1 in a quick run). Polling
//! runs the CLI, so times include a few milliseconds of process start.
//! Network safety: everything binds and connects to 127.0.0.0/8 only;
//! every ivaldi process gets `IVALDI_DISCOVERY_ADDRS=127.255.255.255`; the
//! daemons are stopped by their guards.

use std::time::{Duration, Instant};

use ivaldi_tests::hostile::{self, Attack};
use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_forged, p2p_repo};

fn time_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

struct Sample {
    connect: Option<Duration>,
    sync: Option<Duration>,
    peak_rss: u64,
    opened: usize,
}

fn run_once(hostile_count: usize) -> Sample {
    let a = p2p_forged();
    a.write("f.txt", "one\n");
    a.seal("one");
    let b = p2p_repo(a.copy_of());
    configure_loopback(&a, &[]);
    configure_loopback(&b, &[]);
    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", &b);
    let (a_id, b_id) = (da.node_id(), db.node_id());
    a.ok(&["p2p", "trust", &b_id]);
    b.ok(&["p2p", "trust", &a_id]);
    let attack = (hostile_count > 0).then(|| {
        let a = Attack::start(da.socket_addr(), hostile_count, hostile_count / 10, 200);
        std::thread::sleep(Duration::from_millis(500));
        a
    });
    b.ok(&["p2p", "add-peer", &da.addr()]);
    let connect = time_until(Duration::from_secs(30), || da.peer_ids().contains(&b_id));
    a.write("f.txt", "one\ntwo\n");
    let head = a.seal("two");
    let sync = time_until(Duration::from_secs(30), || {
        b.head_of("main").as_deref() == Some(head.as_str())
    });
    let opened = attack.map_or(0, |a| a.stop().opened);
    let peak_rss = hostile::peak_rss_bytes(da.pid()).unwrap_or(0);
    Sample {
        connect,
        sync,
        peak_rss,
        opened,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::INFINITY, |d| d.as_secs_f64() * 1000.0)
}

fn main() {
    let quick = std::env::var_os("IVALDI_BENCH_QUICK").is_some();
    let reps = if quick { 1 } else { 3 };
    println!("admission under attack: {reps} repetition(s) per row, medians");
    println!();
    println!(
        "| hostile connections | opened by the attacker | trusted peer connects | seal synced | daemon peak RSS | goal (2 s / 1 s / 64 MiB) |"
    );
    println!("|---:|---:|---:|---:|---:|---|");
    for n in [0usize, 100, 500] {
        let samples: Vec<Sample> = (0..reps).map(|_| run_once(n)).collect();
        let connect = median(samples.iter().map(|s| ms(s.connect)).collect());
        let sync = median(samples.iter().map(|s| ms(s.sync)).collect());
        let rss = samples.iter().map(|s| s.peak_rss).max().unwrap_or(0) as f64 / 1048576.0;
        let opened = median(samples.iter().map(|s| s.opened as f64).collect());
        let met = connect <= 2000.0 && sync <= 1000.0 && rss < 64.0;
        println!(
            "| {n} | {opened:.0} | {connect:.0} ms | {sync:.0} ms | {rss:.1} MiB | {} |",
            if met { "met" } else { "NOT met" }
        );
    }
}
