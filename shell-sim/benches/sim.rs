//! The simulator benchmark: for 10, 50 and 200 nodes, ten virtual minutes of
//! sealing with the network split in two halves, then the heal. Prints one
//! table: convergence time after the heal, messages and bytes per new seal per
//! node, and wall-clock (and CPU) time per simulated minute.
//!
//! ```sh
//! cargo bench -p ivaldi-sim --bench sim
//! IVALDI_BENCH_NODES=10,50 IVALDI_BENCH_MINUTES=2 cargo bench -p ivaldi-sim --bench sim
//! IVALDI_BENCH_WRITERS=0 cargo bench -p ivaldi-sim --bench sim   # every node seals
//! ```
//!
//! The goal: 200 nodes simulate ten virtual minutes in under ten wall seconds.

use std::time::{Duration, Instant};

use ivaldi_sim::{FaultSet, Scenario, SimConfig, TraceMode, Workload};

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The benchmark's configuration for `nodes` nodes.
fn bench_config(nodes: usize, minutes: u64, writers: usize) -> SimConfig {
    SimConfig {
        seed: 1,
        nodes,
        scenario: Scenario::SplitBrain,
        faults: FaultSet::NONE,
        duration: Duration::from_secs(60 * minutes),
        bound: Duration::from_secs(300),
        workload: Workload::Own,
        seal_every: Duration::from_secs(2),
        writers,
        large_every: 0,
        trace: TraceMode::Off,
        ..SimConfig::default()
    }
}

fn main() {
    let nodes: Vec<usize> = std::env::var("IVALDI_BENCH_NODES")
        .unwrap_or_else(|_| "10,50,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let minutes = env_u64("IVALDI_BENCH_MINUTES", 10);
    let writers = env_u64("IVALDI_BENCH_WRITERS", 16) as usize;
    let example = bench_config(200, minutes, writers);
    println!(
        "scenario: split-brain from 20 s to {minutes} min, then heal; seals every {:?} network-wide \
         on {} nodes' own timelines; heartbeat {:?}; {} nodes per broadcast domain; \
         {} known peers each; encryption {}",
        example.seal_every,
        if writers == 0 {
            "all".to_owned()
        } else {
            format!("{writers}")
        },
        example.heartbeat,
        example.net.domain_size,
        example.net.known_degree,
        if example.encryption { "on" } else { "off" },
    );
    println!();
    println!(
        "| nodes | seals | virtual min | converged after heal | msgs/seal/node | w/o heartbeats | bytes/seal/node | wall s | wall s per sim min | CPU s per sim min | violations |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    for n in nodes {
        let cfg = bench_config(n, minutes, writers);
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        let r = ivaldi_sim::run(&cfg);
        let (wall, cpu) = (wall0.elapsed(), cpu_time() - cpu0);
        let sim_min = r.end as f64 / 60e6;
        let per = (r.counters.seals.max(1) * r.nodes_total as u64) as f64;
        let hb = r.totals.messages_out.get("heartbeat").copied().unwrap_or(0);
        let conv = r
            .converged_after
            .map_or("not within 300 s".to_owned(), |us| {
                format!("{:.1} s", us as f64 / 1e6)
            });
        println!(
            "| {n} | {} | {sim_min:.1} | {conv} | {:.1} | {:.1} | {:.0} | {:.2} | {:.3} | {:.3} | {} |",
            r.counters.seals,
            r.messages() as f64 / per,
            (r.messages() - hb) as f64 / per,
            r.counters.stream_bytes as f64 / per,
            wall.as_secs_f64(),
            wall.as_secs_f64() / sim_min,
            cpu.as_secs_f64() / sim_min,
            r.violations.len(),
        );
        if !r.ok() {
            failed = true;
            eprintln!("{}", r.failure());
        }
    }
    if failed {
        std::process::exit(1);
    }
}
