//! The simulator's scenarios, in the normal test suite.
//!
//! Each test prints its seed first; a failure prints every violation and the
//! command that reproduces the run (`cargo run -p ivaldi-sim --release -- ...`).
//! The liveness bound each test states is the virtual time allowed between the
//! heal and identical heads on every node.

use std::time::Duration;

use ivaldi_core::config::ConflictStrategy;
use ivaldi_core::object::Seal;
use ivaldi_core::store::{HeadUpdate, RefName, Store, StoreRequest};
use ivaldi_core::timeline::TimelineName;
use ivaldi_sim::store::StoreFaults;
use ivaldi_sim::{Fault, FaultSet, Kind, Report, Scenario, Sim, SimConfig, TraceMode, Workload};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs a configuration, printing the seed before anything else, and fails with
/// the reproduction command if an invariant was violated.
fn check(cfg: &SimConfig) -> Report {
    println!("seed: {}", cfg.seed);
    let report = ivaldi_sim::run(cfg);
    println!("{}", report.summary());
    assert!(report.ok(), "{}", report.failure());
    report
}

fn base(seed: u64, nodes: usize) -> SimConfig {
    SimConfig {
        seed,
        nodes,
        trace: TraceMode::Hash,
        // Large files just above the chunking threshold keep the suite fast.
        large_size: 1200 * 1024,
        ..SimConfig::default()
    }
}

/// Two nodes; node 0 is cut off after a warm-up and both keep sealing; after
/// the heal both hold identical heads within 60 s.
#[test]
fn two_nodes_partition_then_heal() {
    let cfg = SimConfig {
        scenario: Scenario::Partition,
        duration: secs(120),
        bound: secs(60),
        seal_every: Duration::from_secs(1),
        ..base(11, 2)
    };
    let r = check(&cfg);
    assert!(
        r.counters.seals > 50,
        "both sides sealed: {}",
        r.counters.seals
    );
    let after = r.converged_after.expect("converged");
    assert!(after <= 60_000_000);
}

/// Ten nodes split into two halves of five for most of two minutes, every node
/// sealing; heads identical within 90 s of the heal.
#[test]
fn ten_nodes_split_brain_then_heal() {
    let cfg = SimConfig {
        scenario: Scenario::SplitBrain,
        duration: secs(150),
        bound: secs(90),
        ..base(21, 10)
    };
    let r = check(&cfg);
    assert!(r.counters.seals > 40);
    assert!(r.diverged_at_heal, "the halves held different heads");
    assert!(r.converged_after.is_some());
}

/// Fifty nodes under every kind of fault (partitions, one-way partitions, cut
/// links, held messages, crashes and restarts, store errors and delays, clock
/// skew, nodes joining and leaving), over several seeds; heads identical within
/// three minutes of the heal.
#[test]
fn fifty_nodes_random_faults_over_seeds() {
    for seed in [101, 102, 103] {
        let cfg = SimConfig {
            scenario: Scenario::Random,
            faults: FaultSet::all(),
            duration: secs(90),
            bound: secs(180),
            large_every: 60,
            ..base(seed, 50)
        };
        let r = check(&cfg);
        assert!(r.counters.faults > 5);
        assert!(r.converged_after.is_some());
    }
}

/// One seed run twice gives the same trace, event for event (compared by the
/// BLAKE3 hash of the traces); another seed gives another trace.
#[test]
fn determinism_same_seed_same_trace() {
    let cfg = SimConfig {
        duration: secs(90),
        bound: secs(120),
        large_every: 10,
        ..base(7, 12)
    };
    println!("seed: {}", cfg.seed);
    let a = ivaldi_sim::run(&cfg);
    let b = ivaldi_sim::run(&cfg);
    assert!(a.trace_lines > 500, "a trace worth comparing");
    assert_eq!(
        a.trace_hash,
        b.trace_hash,
        "seed {} gave two different traces; rerun with {}",
        cfg.seed,
        cfg.command()
    );
    assert_eq!(a.steps, b.steps);
    assert_eq!(a.messages(), b.messages());
    let other = ivaldi_sim::run(&SimConfig { seed: 8, ..cfg });
    assert_ne!(a.trace_hash, other.trace_hash);
}

/// Diverging edits on shared timelines under the manual strategy: conflicts are
/// detected, heads are not expected to converge, and no seal is ever lost on
/// the node that made it (the remote head is kept under a tracking name).
#[test]
fn diverging_edits_manual_keeps_every_seal() {
    let cfg = SimConfig {
        scenario: Scenario::SplitBrain,
        workload: Workload::Shared,
        strategy: ConflictStrategy::Manual,
        duration: secs(120),
        bound: secs(60),
        seal_every: Duration::from_secs(1),
        ..base(31, 6)
    };
    let r = check(&cfg);
    assert!(r.totals.conflicts > 0, "diverging edits were detected");
    assert!(!r.convergence_expected);
    assert_eq!(r.merge_seals, 0, "manual never merges by itself");
    assert_eq!(r.counters.resolutions, 0, "and no user resolved");
}

/// Ten nodes on shared timelines, split into two halves from 20 s to 2 min,
/// every user sealing on `main`, `dev` and `topic-*` (diverging edits), then
/// the heal: heads identical within 180 s, no seal lost anywhere (checked by
/// the run after convergence).
fn diverging(strategy: ConflictStrategy, seed: u64, resolvers: bool, faults: bool) -> Report {
    let cfg = SimConfig {
        scenario: if faults {
            Scenario::Random
        } else {
            Scenario::SplitBrain
        },
        faults: FaultSet::NONE.with_all(&[Fault::Partition, Fault::Cut, Fault::Crash]),
        workload: Workload::Shared,
        strategy,
        resolvers,
        duration: secs(120),
        bound: secs(180),
        ..base(seed, 10)
    };
    let r = check(&cfg);
    assert!(r.convergence_expected);
    assert!(r.converged_after.is_some(), "converged after the heal");
    if !faults {
        // (Random partitions may have healed, and merged, before the end.)
        assert!(r.diverged_at_heal, "the halves held different heads");
    }
    r
}

fn diverging_with(strategy: ConflictStrategy, seed: u64) {
    let r = diverging(strategy, seed, false, false);
    assert_eq!(
        r.merge_seals, 0,
        "a prefer strategy takes a head, never merges"
    );
}

/// The no-merge-storm bound: at most one merge seal per seal the users made.
///
/// A merge seal's parents are the frontier of the work merged (the newest user
/// seals, automatic merges looked through), and nodes that hold the same work
/// make the same merge, byte for byte; a merge replaces an older merge of less
/// work instead of being merged with it. So a new merge seal appears only when
/// a frontier changes, i.e. when some user seal reaches some node: about one per
/// user seal (observed: 2–4 per split-brain run and 17–40 per random-partition
/// run, against 50–65 user seals). Before the fix a random-partition run made
/// merges of merges without end (thousands per virtual second).
fn assert_no_merge_storm(r: &Report, made: u64) {
    assert!(
        made <= r.counters.seals,
        "{made} merge seals for {} user seals",
        r.counters.seals
    );
}

/// Diverging edits on shared timelines converge under `auto_merge` (users edit
/// files of their own, so every merge is clean), over six seeds, with a bounded
/// number of merge seals. Seeds 41–43 used to stay apart: the merge base was
/// the common ancestor with the largest seal time, and the nodes' clocks
/// differ, so an old ancestor was taken and every merge looked unclean.
#[test]
fn diverging_edits_converge_under_auto_merge() {
    for seed in 41..=46 {
        let r = diverging(ConflictStrategy::AutoMerge, seed, false, false);
        assert!(r.merge_seals > 0, "the halves were merged");
        assert_eq!(r.totals.conflicts, 0, "clean merges: nothing left to users");
        assert_no_merge_storm(&r, r.merge_seals);
    }
}

/// `auto_merge` under random partitions, cut links and crashes (many heads at
/// once, merged pairwise in every order): converges, no merge storm.
#[test]
fn diverging_edits_converge_under_auto_merge_with_random_partitions() {
    for seed in [1, 2] {
        let r = diverging(ConflictStrategy::AutoMerge, seed, false, true);
        assert!(r.merge_seals > 0);
        assert_no_merge_storm(&r, r.merge_seals);
    }
}

/// `manual` with users who resolve: some seconds after its node records a
/// conflict, a user resolves it as `ivaldi p2p resolve` does (a clean merge,
/// else one side, in a seal with both heads as parents). Heads converge, no
/// seal is lost, the strategy itself makes no merge, and the users' resolutions
/// are bounded the same way (a resolution that reaches the other nodes is a
/// fast-forward for them, so they have nothing left to resolve).
#[test]
fn diverging_edits_converge_under_manual_with_users_resolving() {
    for (seed, faults) in [(31, false), (32, false), (33, false), (1, true)] {
        let r = diverging(ConflictStrategy::Manual, seed, true, faults);
        assert!(r.totals.conflicts > 0, "conflicts were recorded");
        assert!(r.counters.resolutions > 0, "users resolved them");
        assert_eq!(r.merge_seals, 0, "manual never merges by itself");
        assert_no_merge_storm(&r, r.counters.resolutions);
    }
}

/// Diverging edits on shared timelines converge under `prefer_remote`.
#[test]
fn diverging_edits_converge_under_prefer_remote() {
    diverging_with(ConflictStrategy::PreferRemote, 42);
}

/// Diverging edits on shared timelines converge under `prefer_local`.
#[test]
fn diverging_edits_converge_under_prefer_local() {
    diverging_with(ConflictStrategy::PreferLocal, 43);
}

/// Large files through flow control: one seal in three carries a 3 MiB file
/// while messages are held and links cut; every queue stays bounded.
#[test]
fn large_objects_under_holds_stay_bounded() {
    let cfg = SimConfig {
        faults: FaultSet::NONE.with_all(&[Fault::Hold, Fault::Cut, Fault::Crash]),
        duration: secs(90),
        bound: secs(120),
        large_every: 3,
        large_size: 3 * 1024 * 1024,
        seal_every: Duration::from_secs(3),
        fault_every: Duration::from_secs(5),
        ..base(51, 6)
    };
    let r = check(&cfg);
    assert!(r.counters.large_seals >= 5);
}

/// Every node's store is slow (writes take up to 2 s) and sometimes fails,
/// while nodes crash just before a `Land` completes: landings are cut short
/// between their objects and their head updates, staged batches are lost, and
/// still no seal is lost and heads converge within 2 minutes of the heal.
#[test]
fn crashes_between_writes_lose_nothing() {
    let nodes = 6;
    let cfg = SimConfig {
        faults: FaultSet::NONE,
        seal_every: Duration::from_millis(500),
        ..base(61, nodes)
    };
    println!("seed: {}", cfg.seed);
    let mut sim = Sim::new(cfg.clone());
    let slow = StoreFaults {
        land_fail_ppm: 100_000,
        read_fail_ppm: 0,
        max_delay_us: 2_000_000,
    };
    for i in 0..nodes {
        sim.set_store_faults(i, slow);
    }
    sim.start_workload(secs(1));
    let mut crashes = 0;
    while crashes < 40 && sim.now < 900_000_000 {
        sim.run_for(Duration::from_millis(50));
        if let Some(i) = (0..nodes).find(|i| sim.landing_next(*i)) {
            sim.crash(i, crashes % 2 == 0);
            crashes += 1;
            sim.run_for(secs(2));
            sim.restart(i);
        }
    }
    let converged = sim.liveness(secs(120));
    let r = sim.report(converged);
    println!("{}", r.summary());
    assert!(r.ok(), "{}", r.failure());
    assert_eq!(crashes, 40);
    assert!(
        r.counters.partial_lands >= 10,
        "{}",
        r.counters.partial_lands
    );
    assert!(r.counters.land_failures > 0);
    assert!(converged.is_some());
}

/// Discovery alone (no known peers is impossible here, so: one broadcast domain,
/// lossy and duplicating datagrams) finds and connects the nodes.
#[test]
fn discovery_works_over_lossy_datagrams() {
    let cfg = SimConfig {
        faults: FaultSet::NONE,
        duration: secs(60),
        bound: secs(60),
        ..base(71, 8)
    };
    let mut cfg = cfg;
    cfg.net.domain_size = 8;
    cfg.net.loss_ppm = 200_000;
    cfg.net.dup_ppm = 100_000;
    cfg.net.jitter = Duration::from_millis(300);
    let r = check(&cfg);
    assert!(r.counters.datagrams_lost > 0 && r.counters.datagrams_duplicated > 0);
    // Each node knows two others; discovery connects the rest of its domain.
    assert!(r.totals.messages_out.get("handshake").copied().unwrap_or(0) > 2 * 2 * 8);
}

/// The checker is not blind: a store write that breaks closure, and a ref moved
/// off the history of a seal its node made, are both reported, with the seed.
#[test]
fn invariant_checker_catches_injected_bugs() {
    let cfg = SimConfig {
        faults: FaultSet::NONE,
        ..base(81, 3)
    };
    println!("seed: {}", cfg.seed);
    let mut sim = Sim::new(cfg.clone());
    sim.start_workload(secs(1));
    sim.run_for(secs(30));
    sim.stop_workload();
    let tl = TimelineName::new("n0/main").unwrap();
    let head = match sim.head(0, "n0/main") {
        Some(h) => h,
        None => {
            let h = sim.seal(0, &tl, false).unwrap();
            sim.run_for(secs(1));
            h
        }
    };
    // A seal whose tree is missing: closure would break.
    let bad = Seal {
        git: None,
        tree: ivaldi_core::ObjectId([7; 32]),
        parents: vec![head],
        author: "bug".into(),
        time: ivaldi_core::Timestamp {
            seconds: 0,
            offset_minutes: 0,
        },
        message: "incomplete".into(),
    }
    .encode()
    .unwrap();
    let bad_id = ivaldi_core::ObjectId::hash(&bad);
    sim.inject_store_request(
        1,
        StoreRequest::Put {
            batch: 9_001,
            objects: vec![(bad_id, bad)],
            blobs: Vec::new(),
            forms: Vec::new(),
        },
    );
    sim.inject_store_request(
        1,
        StoreRequest::Land {
            batch: 9_001,
            updates: vec![],
        },
    );
    // Node 0's main moved back past a seal node 0 made.
    let first = sim.nodes[0]
        .store
        .seal(&head)
        .unwrap()
        .parents
        .first()
        .copied();
    // (Injected before any peer could pull the new seal, so no tracking ref
    // anywhere on node 0 names it.)
    let seal = sim.seal(0, &tl, false).unwrap();
    sim.inject_store_request(
        0,
        StoreRequest::Land {
            batch: 9_002,
            updates: vec![HeadUpdate {
                name: RefName::Timeline(tl.clone()),
                expected: Some(seal),
                new: first.unwrap_or(head),
            }],
        },
    );
    sim.run_for(secs(1));
    let report = sim.report(None);
    let kinds: Vec<Kind> = report.violations.iter().map(|v| v.kind).collect();
    assert!(kinds.contains(&Kind::Closure), "{}", report.summary());
    assert!(kinds.contains(&Kind::SealLost), "{}", report.summary());
    let msg = report.failure();
    assert!(msg.contains("cargo run -p ivaldi-sim --release -- --seed 81"));
}

/// The soak: `IVALDI_SIM_SEEDS` seeds (from `IVALDI_SIM_SEED`, default 1000) of
/// `IVALDI_SIM_NODES` nodes (default 50) under every fault for
/// `IVALDI_SIM_MINUTES` virtual minutes (default 10) each. Run with
/// `cargo test -p ivaldi-sim --release -- --ignored soak --nocapture`.
#[test]
#[ignore = "soak: long; see docs/simulator.md (IVALDI_SIM_SEEDS, IVALDI_SIM_NODES, IVALDI_SIM_MINUTES)"]
fn soak() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let seeds = env("IVALDI_SIM_SEEDS", 20);
    let first = env("IVALDI_SIM_SEED", 1000);
    let nodes = env("IVALDI_SIM_NODES", 50) as usize;
    let minutes = env("IVALDI_SIM_MINUTES", 10);
    let mut failures = Vec::new();
    for seed in first..first + seeds {
        let cfg = SimConfig {
            duration: secs(60 * minutes),
            bound: secs(300),
            ..base(seed, nodes)
        };
        println!("seed: {seed}");
        let r = ivaldi_sim::run(&cfg);
        println!(
            "seed {seed}: {} seals, {} faults, converged after {:?} us, {} violations",
            r.counters.seals,
            r.counters.faults,
            r.converged_after,
            r.violations.len()
        );
        if !r.ok() {
            failures.push(r.failure());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The six seeds of the 10,000-seed soak that did not converge (docs/simulator.md),
/// in exactly the soak's configuration: 4 nodes, 1 virtual minute of every fault,
/// a 5-minute bound. Two causes: a head update that lost its compare-and-set
/// against a concurrent landing still counted the peer's head as seen, so no
/// later pull decided it again (3986, 5095, 5491, 7651, 9139); a seal made while
/// the handshakes crossed was never announced to that peer (9894).
#[test]
fn soak_seeds_that_did_not_converge() {
    for seed in [3986, 5095, 5491, 7651, 9139, 9894] {
        let cfg = SimConfig {
            duration: secs(60),
            bound: secs(300),
            ..base(seed, 4)
        };
        let r = check(&cfg);
        assert!(r.converged_after.is_some());
    }
}

/// Store faults set through the API apply to that node only.
#[test]
fn store_faults_are_per_node() {
    let mut sim = Sim::new(SimConfig {
        faults: FaultSet::NONE,
        ..base(91, 2)
    });
    sim.set_store_faults(
        1,
        StoreFaults {
            land_fail_ppm: 1_000_000,
            read_fail_ppm: 0,
            max_delay_us: 0,
        },
    );
    sim.start_workload(secs(1));
    sim.run_for(secs(40));
    assert!(sim.counters.land_failures > 0);
    // Node 1 can land nothing; node 0 holds only its own seals and whatever it pulled.
    assert!(
        sim.nodes[1]
            .store
            .timelines()
            .keys()
            .all(|t| t.as_str().starts_with("n1/"))
    );
}

/// Prefer strategies under every random fault (found by a sweep, fixed):
/// with the shared workload and all fault kinds, seeds 909 and 914 (8 nodes,
/// 2 min) made heads cycle inside a partition group — "newest" judged by seal
/// time disagreed with ancestry under clock skew, so prefer decisions and
/// fast-forwards undid each other (a storm of empty syncs until the queue
/// bound tripped). Heads are now ordered by generation first
/// (`conflict::HeadKey`).
#[test]
fn prefer_strategies_do_not_storm_under_every_fault() {
    for strategy in [
        ConflictStrategy::PreferRemote,
        ConflictStrategy::PreferLocal,
    ] {
        for seed in [909, 914] {
            let cfg = SimConfig {
                seed,
                nodes: 8,
                scenario: Scenario::Random,
                workload: Workload::Shared,
                strategy,
                duration: secs(120),
                trace: TraceMode::Hash,
                ..SimConfig::default()
            };
            check(&cfg);
        }
    }
}
