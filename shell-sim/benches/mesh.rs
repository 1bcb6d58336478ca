//! The mesh benchmark: for 10, 50 and 200 nodes that may connect only along
//! the edges of a random connected graph (every node with at least 3
//! neighbours), no users, no random faults. Prints one table:
//!
//! - **start-up**: virtual time until every node has a route to every node it
//!   can reach (within the mesh's 8-hop radius);
//! - **convergence after a cut**: five times, one minute apart, a random link
//!   whose loss keeps the graph connected is cut (both ends reset) and the one
//!   cut before is restored; the virtual time from the cut until every node's
//!   routing table has a route to every reachable node through live links only
//!   (`Sim::mesh_check` against breadth-first paths over the simulator's
//!   ground-truth graph), mean and max;
//! - **topology traffic** per node per minute, `topology` (link-state
//!   advertisements) and `topology_summary` (database summaries) messages and
//!   their frame bytes (before encryption), in a quiet window of two minutes
//!   and over the five minutes with link changes;
//! - **path stretch**: hops of each node's route against the true fewest hops
//!   (BFS), mean (total hops taken over total shortest hops) and max, over all
//!   pairs with the links all up; routes are cheapest by round-trip time, so
//!   they may take more hops than the fewest;
//! - **hop-limited pairs**: pairs within 8 hops without any route because their
//!   cheapest path is longer than 8 links (an open core bug).
//!
//! ```sh
//! cargo bench -p ivaldi-sim --bench mesh
//! IVALDI_BENCH_NODES=10,50 IVALDI_BENCH_SEED=2 cargo bench -p ivaldi-sim --bench mesh
//! ```

use std::time::{Duration, Instant};

use ivaldi_core::rng::Rng;
use ivaldi_sim::config::NetConfig;
use ivaldi_sim::{FaultSet, Scenario, Sim, SimConfig, Topology, TraceMode, Workload};

const DEGREE: usize = 3;
const WARMUP: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_secs(120);
const CUTS: usize = 5;
const CUT_EVERY: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// Messages and frame bytes of the mesh's two message types, over all nodes.
fn topology_traffic(sim: &Sim) -> (u64, u64) {
    let mut msgs = 0;
    let mut bytes = 0;
    for sn in &sim.nodes {
        let Some(n) = &sn.node else { continue };
        let s = n.stats();
        for kind in ["topology", "topology_summary"] {
            msgs += s.messages_out.get(kind).copied().unwrap_or(0);
            bytes += s.bytes_out_by_type.get(kind).copied().unwrap_or(0);
        }
    }
    (msgs, bytes)
}

fn config(seed: u64, nodes: usize) -> SimConfig {
    SimConfig {
        seed,
        nodes,
        scenario: Scenario::Random,
        faults: FaultSet::NONE,
        workload: Workload::Own,
        large_every: 0,
        net: NetConfig {
            topology: Topology::RandomGraph { degree: DEGREE },
            ..NetConfig::default()
        },
        trace: TraceMode::Off,
        ..SimConfig::default()
    }
}

fn secs(t: u64) -> String {
    format!("{:.2} s", t as f64 / 1e6)
}

fn main() {
    let nodes: Vec<usize> = std::env::var("IVALDI_BENCH_NODES")
        .unwrap_or_else(|_| "10,50,200".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seed: u64 = std::env::var("IVALDI_BENCH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let d = NetConfig::default();
    println!(
        "mesh benchmark, seed {seed}: random connected graph (spanning tree + edges until every node has >= {DEGREE} neighbours); \
         sites of {} nodes {:?} apart, {:?}-{:?} between sites; heartbeat 10 s; no users, no random faults; \
         {CUTS} cuts {CUT_EVERY:?} apart (the previous cut restored), each keeping the graph connected",
        d.domain_size, d.lan_latency, d.wan_latency.0, d.wan_latency.1
    );
    println!();
    println!(
        "| nodes | edges | diameter | start-up | convergence after a cut, mean / max | topology msgs/node/min quiet | bytes/node/min quiet | msgs/node/min with cuts | bytes/node/min with cuts | stretch mean | stretch max | routes longer than shortest | hop-limited pairs | wall s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    for n in nodes {
        let wall = Instant::now();
        let mut sim = Sim::new(config(seed, n));
        let graph = sim.topology_graph().cloned().unwrap_or_default();
        let edges = graph.edges();
        let (startup, _) = sim.run_until_routes_converge(WARMUP, POLL);
        sim.run_until(us(WARMUP));

        // Quiet window: traffic with nothing changing; stretch with every link up.
        let check = sim.mesh_check();
        let t0 = topology_traffic(&sim);
        sim.run_for(QUIET);
        let t1 = topology_traffic(&sim);
        let minutes = QUIET.as_secs_f64() / 60.0;
        let quiet = (
            (t1.0 - t0.0) as f64 / n as f64 / minutes,
            (t1.1 - t0.1) as f64 / n as f64 / minutes,
        );

        // Link changes.
        let mut rng = Rng::from_u64(seed).child("mesh-bench", 0);
        let all: Vec<usize> = (0..n).collect();
        let mut cut: Option<(usize, usize)> = None;
        let mut conv = Vec::new();
        let t2 = topology_traffic(&sim);
        let changes_start = sim.now;
        for _ in 0..CUTS {
            let at = sim.now;
            if let Some((a, b)) = cut.take() {
                sim.restore_link(a, b);
            }
            let mut pick = None;
            for _ in 0..1000 {
                let e = edges[rng.below(edges.len().max(1) as u64) as usize];
                if graph.connects(&all, |a, b| (a.min(b), a.max(b)) != e) {
                    pick = Some(e);
                    break;
                }
            }
            if let Some((a, b)) = pick {
                sim.cut_link(a, b);
                cut = Some((a, b));
            }
            let (took, c) = sim.run_until_routes_converge(CUT_EVERY, POLL);
            match took {
                Some(t) => conv.push(t),
                None => {
                    failed = true;
                    eprintln!("n={n}: routes did not converge within {CUT_EVERY:?}: {c:?}");
                }
            }
            sim.run_until(at + us(CUT_EVERY));
        }
        let t3 = topology_traffic(&sim);
        let minutes = (sim.now - changes_start) as f64 / 60e6;
        let changing = (
            (t3.0 - t2.0) as f64 / n as f64 / minutes,
            (t3.1 - t2.1) as f64 / n as f64 / minutes,
        );
        let conv_text = if conv.is_empty() {
            "never".to_owned()
        } else {
            let mean = conv.iter().sum::<u64>() / conv.len() as u64;
            let max = conv.iter().copied().max().unwrap_or(0);
            format!("{} / {}", secs(mean), secs(max))
        };
        let report = sim.report(None);
        if !report.ok() {
            failed = true;
            eprintln!("{}", report.failure());
        }
        let routed = check.pairs - check.missing - check.hop_limited - check.stale;
        println!(
            "| {n} | {} | {} | {} | {conv_text} | {:.1} | {:.0} | {:.1} | {:.0} | {:.3} | {:.2} | {:.1} % | {} of {} | {:.1} |",
            edges.len(),
            graph.diameter(),
            startup.map_or("never".into(), secs),
            quiet.0,
            quiet.1,
            changing.0,
            changing.1,
            check.mean_stretch(),
            check.max_stretch,
            100.0 * check.longer as f64 / routed.max(1) as f64,
            check.hop_limited,
            check.pairs,
            wall.elapsed().as_secs_f64(),
        );
    }
    if failed {
        std::process::exit(1);
    }
}
