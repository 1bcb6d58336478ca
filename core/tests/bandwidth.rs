//! Upload and download rate caps, and control traffic under them, in virtual
//! time: the caps bound the bytes on the wire, a per-peer cap leaves other
//! peers alone, heartbeats keep a capped session alive, and a cap changed at
//! run time takes effect mid-transfer.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::config::{NodeConfig, PeerRates};
use ivaldi_core::node::{Command, Event};
use ivaldi_core::store::{MemStore, Store};
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn main_tl() -> TimelineName {
    TimelineName::new("main").unwrap()
}

fn cfg() -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.heartbeat_interval = Duration::from_secs(5);
        // Only the first pull on connect: the test decides when data moves.
        c.sync.sync_interval = Duration::from_secs(3600);
    })
}

/// Incompressible bytes (lz4 must not shrink what the cap is measured on).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A store holding one seal with a file of `size` bytes.
fn store_with(size: u64) -> (MemStore, ObjectId) {
    let mut store = MemStore::new("repo");
    let files: BTreeMap<String, Vec<u8>> =
        [("big.bin".to_owned(), noise(size as usize, size))].into();
    let head = seal_files(&mut store, &files, Vec::new(), 1000, "big");
    store.timelines.insert(main_tl(), head);
    (store, head)
}

fn has_head(net: &TestNet, i: usize, head: ObjectId) -> bool {
    net.nodes[i]
        .store
        .heads()
        .unwrap_or_default()
        .get(&main_tl())
        == Some(&head)
}

/// Bytes from `from` to `to` sampled after every step: `(micros, bytes)`.
struct Samples(Vec<(u64, u64)>);

impl Samples {
    /// The largest excess over `rate × t` seen in any window between two samples.
    fn worst_excess(&self, rate: u64) -> i128 {
        let mut worst = i128::MIN;
        for (i, &(t1, b1)) in self.0.iter().enumerate() {
            for &(t2, b2) in &self.0[i + 1..] {
                let allowed = i128::from(rate) * i128::from(t2 - t1) / 1_000_000;
                worst = worst.max(i128::from(b2 - b1) - allowed);
            }
        }
        worst
    }
}

/// Steps until `done`, sampling the bytes `from → to`; returns the virtual
/// time taken and the samples.
fn run_sampled(
    net: &mut TestNet,
    from: usize,
    to: usize,
    limit: Duration,
    mut done: impl FnMut(&TestNet) -> bool,
) -> (Duration, Samples) {
    let start = net.now;
    let base = net.traffic();
    let mut samples = vec![(start.as_micros(), 0)];
    while !done(net) {
        assert!(net.step(), "nothing left to do before the transfer ended");
        samples.push((net.now.as_micros(), net.bytes_since(&base, from, to)));
        assert!(
            net.now.saturating_since(start) <= limit,
            "not done within {limit:?}"
        );
    }
    (net.now.saturating_since(start), Samples(samples))
}

fn disconnects(net: &TestNet, i: usize) -> Vec<String> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::PeerDisconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// Burst a capped link may carry beyond `rate × t`: the bucket, the one bulk
/// frame a control message may push ahead, and the control traffic itself.
fn slack(rate: u64) -> i128 {
    i128::from(2 * (rate / 4).max(16 * KIB) + 64 * KIB)
}

#[test]
fn upload_cap_bounds_the_bytes_on_the_wire() {
    const RATE: u64 = 256 * KIB;
    const SIZE: u64 = 2 * MIB;
    let mut net = TestNet::new();
    let (a_store, head) = store_with(SIZE);
    let a = net.add(cfg().with(|c| c.rates.upload_rate = RATE), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    let (took, samples) = run_sampled(&mut net, a, b, Duration::from_secs(60), |n| {
        has_head(n, b, head)
    });
    let sent = net.bytes_between(a, b);
    assert!(sent >= SIZE, "the whole file crossed: {sent}");
    // The bucket starts full (a quarter second of traffic), so the transfer
    // takes at least (bytes − burst) / rate.
    let floor = Duration::from_micros((sent - RATE / 4) * 1_000_000 / RATE);
    assert!(
        took >= floor,
        "took {took:?}, the cap allows no less than {floor:?}"
    );
    assert!(
        took <= floor * 2,
        "took {took:?}: the cap is far from saturated"
    );
    let excess = samples.worst_excess(RATE);
    assert!(
        excess <= slack(RATE),
        "a window carried {excess} bytes over rate × t"
    );
    eprintln!("capped 2 MiB at 256 KiB/s: {took:?} (floor {floor:?}), worst excess {excess} B");

    // The same transfer uncapped is far faster: the cap is what slowed it.
    let mut net = TestNet::new();
    let (a_store, head) = store_with(SIZE);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    let (fast, _) = run_sampled(&mut net, a, b, Duration::from_secs(60), |n| {
        has_head(n, b, head)
    });
    assert!(fast * 10 < took, "uncapped {fast:?} vs capped {took:?}");
}

#[test]
fn per_peer_cap_leaves_other_peers_at_full_speed() {
    const RATE: u64 = 128 * KIB;
    const SIZE: u64 = MIB;
    let mut net = TestNet::new();
    let slow = net.add(cfg(), MemStore::new("repo"), 2);
    let fast = net.add(cfg(), MemStore::new("repo"), 3);
    let slow_id = net.nodes[slow].node.node_id().to_owned();
    let (a_store, head) = store_with(SIZE);
    let a = net.add(
        cfg().with(|c| {
            c.rates.peer_rates = [(
                slow_id,
                PeerRates {
                    upload: RATE,
                    download: 0,
                },
            )]
            .into()
        }),
        a_store,
        1,
    );
    net.connect(slow, a);
    net.connect(fast, a);
    let start = net.now;
    let mut fast_done = None;
    let (took, samples) = run_sampled(&mut net, a, slow, Duration::from_secs(60), |n| {
        if fast_done.is_none() && has_head(n, fast, head) {
            fast_done = Some(n.now);
        }
        has_head(n, slow, head)
    });
    let fast_took = fast_done
        .expect("the fast peer finished first")
        .saturating_since(start);
    let floor = Duration::from_micros((SIZE - RATE / 4) * 1_000_000 / RATE);
    assert!(took >= floor, "capped peer took {took:?}, floor {floor:?}");
    assert!(
        fast_took < Duration::from_secs(1),
        "the uncapped peer took {fast_took:?}"
    );
    assert!(samples.worst_excess(RATE) <= slack(RATE));
    eprintln!("per-peer cap: capped peer {took:?}, other peer {fast_took:?}");
}

#[test]
fn heartbeats_keep_a_capped_session_alive() {
    const RATE: u64 = 64 * KIB;
    const SIZE: u64 = MIB;
    let quick = cfg().with(|c| {
        c.connections.heartbeat_interval = Duration::from_secs(1);
        c.connections.heartbeat_misses = 3;
        c.sync.sync_timeout = Duration::from_secs(4);
    });
    let mut net = TestNet::new();
    let (a_store, head) = store_with(SIZE);
    let a = net.add(
        quick.clone().with(|c| c.rates.upload_rate = RATE),
        a_store,
        1,
    );
    let b = net.add(quick, MemStore::new("repo"), 2);
    net.connect(b, a);
    let hb = |net: &TestNet, i: usize| {
        net.nodes[i]
            .node
            .stats()
            .messages_in
            .get("heartbeat")
            .copied()
            .unwrap_or(0)
    };
    let (took, _) = run_sampled(&mut net, a, b, Duration::from_secs(60), |n| {
        has_head(n, b, head)
    });
    // Much longer than heartbeat_interval × heartbeat_misses and the sync
    // timeout, so the session only survived because heartbeats got through.
    assert!(took > Duration::from_secs(12), "took {took:?}");
    assert!(
        disconnects(&net, a).is_empty(),
        "{:?}",
        disconnects(&net, a)
    );
    assert!(
        disconnects(&net, b).is_empty(),
        "{:?}",
        disconnects(&net, b)
    );
    assert!(net.connected(a, b));
    assert_eq!(net.nodes[b].node.stats().syncs_failed, 0);
    // Heartbeats flowed both ways throughout (one per second each way).
    let secs = took.as_secs();
    assert!(
        hb(&net, b) + 2 >= secs,
        "b heard {} heartbeats in {secs}s",
        hb(&net, b)
    );
    assert!(
        hb(&net, a) + 2 >= secs,
        "a heard {} heartbeats in {secs}s",
        hb(&net, a)
    );
    // Round trips measured by those heartbeats stay short: they jumped the
    // queue of object data (a frame of a quarter second of the cap at most).
    let rtt = net.nodes[b].node.peers()[0].rtt_micros.unwrap_or(u64::MAX);
    assert!(rtt < 1_000_000, "heartbeat round trip {rtt} µs");
    eprintln!("capped 1 MiB at 64 KiB/s with 1 s heartbeats: {took:?}, last rtt {rtt} µs");
}

#[test]
fn a_rate_change_takes_effect_mid_transfer() {
    const SLOW: u64 = 64 * KIB;
    const FAST: u64 = MIB;
    const SIZE: u64 = 2 * MIB;
    let mut net = TestNet::new();
    let (a_store, head) = store_with(SIZE);
    let slow_cfg = cfg().with(|c| c.rates.upload_rate = SLOW);
    let a = net.add(slow_cfg.clone(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    let t0 = net.now;
    let base = net.traffic();
    net.run_for(Duration::from_secs(3));
    let early = net.bytes_since(&base, a, b);
    let allowed = SLOW * 3 + 2 * (16 * KIB) + 64 * KIB;
    assert!(early <= allowed, "{early} bytes in 3 s at 64 KiB/s");
    assert!(early >= SLOW * 2, "the transfer was moving: {early}");
    assert!(!has_head(&net, b, head));
    net.command(
        a,
        Command::SetConfig(Box::new(slow_cfg.with(|c| c.rates.upload_rate = FAST))),
    );
    let (rest, samples) = run_sampled(&mut net, a, b, Duration::from_secs(60), |n| {
        has_head(n, b, head)
    });
    // At the old rate the rest would take ~30 s; at the new one ~2 s.
    assert!(rest < Duration::from_secs(4), "rest took {rest:?}");
    let floor = Duration::from_micros((SIZE - early - FAST / 4) * 1_000_000 / FAST);
    assert!(
        rest >= floor,
        "rest took {rest:?}, the new cap allows no less than {floor:?}"
    );
    assert!(samples.worst_excess(FAST) <= slack(FAST));
    eprintln!(
        "rate change: {early} B in the first 3 s at 64 KiB/s, the rest in {rest:?} at 1 MiB/s (total {:?})",
        net.now.saturating_since(t0)
    );
}
