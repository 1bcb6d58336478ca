//! Properties of reading `config.json` (`ivaldi_core::config::from_json`).
//!
//! The file is written by hand, so whatever it holds, reading it either fails
//! with a message or yields a configuration that validates, and a node built
//! from an accepted configuration runs without panicking: its time arithmetic
//! must hold at every bound `validate` allows. The inputs are valid
//! configurations mutated at random: unknown and misspelt keys, wrong types,
//! huge and negative numbers, huge durations and rates, nested objects and
//! arrays, a root that is not an object, truncated bytes.

use std::time::Duration;

use ivaldi_core::config::{NodeConfig, check, field_names, from_json};
use ivaldi_core::node::{Command, Node};
use ivaldi_core::noise::Keypair;
use ivaldi_core::rng::Rng;
use ivaldi_core::store::MemStore;
use ivaldi_core::testkit::TestNet;
use ivaldi_core::time::Instant;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use serde_json::{Value, json};

/// Bytes of a candidate `config.json`.
#[derive(Clone, Debug)]
struct ConfigJson(Vec<u8>);

const DURATIONS: &[&str] = &[
    "10ms",
    "9ms",
    "0s",
    "1s",
    "1h30m",
    "1h",
    "24h",
    "1d",
    "86401s",
    "7d",
    "168h",
    "8d",
    "604800s",
    "18446744073709551615s",
    "18446744073709551615ms",
    "99999999999999999999s",
    "18446744073709551615d",
    "213503982334601d",
    "1d1d1d1d1d1d1d1d",
    "",
    "5x",
    "-5s",
    "s",
];

const TEXTS: &[&str] = &[
    "1G",
    "1024G",
    "1025G",
    "99999999999999G",
    "10MB/s",
    "10.0.0.0/8",
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/99",
    "bogus",
    "127.0.0.1:9",
    "127.0.0.1:0",
    "[::1]:80",
    "host:1",
    "127.0.0.1",
    "0.0.0.0",
    "info",
    "ivaldi=debug",
    "inof",
    "manual",
    "auto_merge",
    "prefer_remote",
    "drop",
    "nope",
    "p2p",
    "../escape",
    "/abs",
    "main",
    "feature/*",
    "*",
    "é木😀\u{0}\"\\",
];

fn node_id(g: &mut Gen) -> String {
    (0..32)
        .map(|_| format!("{:02x}", u8::arbitrary(g)))
        .collect()
}

fn number(g: &mut Gen) -> Value {
    let pool: &[Value] = &[
        json!(0),
        json!(1),
        json!(-1),
        json!(9),
        json!(u16::MAX),
        json!(u32::MAX),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(10_000),
        json!(10_001),
        json!(1_000),
        json!(100),
        json!(101),
        json!(100_000),
        json!(1u64 << 30),
        json!((1u64 << 30) + 1),
        json!(1u64 << 40),
        json!((1u64 << 40) + 1),
        json!(1e300),
        json!(0.5),
    ];
    if bool::arbitrary(g) {
        g.choose(pool).cloned().unwrap_or(Value::Null)
    } else {
        json!(u64::arbitrary(g))
    }
}

fn value(g: &mut Gen, depth: u32) -> Value {
    let pick = u8::arbitrary(g) % if depth == 0 { 7 } else { 9 };
    match pick {
        0 => number(g),
        1 | 2 => json!(g.choose(DURATIONS).copied().unwrap_or("")),
        3 => json!(g.choose(TEXTS).copied().unwrap_or("")),
        4 => json!(bool::arbitrary(g)),
        5 => Value::Null,
        6 => json!(node_id(g)),
        7 => {
            let n = usize::arbitrary(g) % 4;
            Value::Array((0..n).map(|_| value(g, depth - 1)).collect())
        }
        _ => {
            let n = usize::arbitrary(g) % 4;
            Value::Object((0..n).map(|_| (key(g), value(g, depth - 1))).collect())
        }
    }
}

/// A known key mostly; else a misspelling of one, or anything.
fn key(g: &mut Gen) -> String {
    let known = field_names();
    let k = g.choose(known).copied().unwrap_or("port").to_owned();
    match u8::arbitrary(g) % 10 {
        0 => format!("{k}x"),
        1 => k.replace('_', "-"),
        2 => String::arbitrary(g),
        3 => node_id(g),
        _ => k,
    }
}

/// Every bound at its most and its least, both accepted.
fn extremes() -> [Value; 2] {
    let most = json!({
        "max_peers": check::MAX_PEERS,
        "max_concurrent_syncs": check::MAX_CONCURRENT_SYNCS,
        "max_message_size": check::MAX_MESSAGE_SIZE,
        "heartbeat_interval": "1d",
        "heartbeat_misses": check::MAX_HEARTBEAT_MISSES,
        "sync_interval": "7d",
        "sync_timeout": "1d",
        "handshake_timeout": "1h",
        "reconnect_min": "1d",
        "reconnect_max": "7d",
        "discovery_interval": "1d",
        "topology_interval": "7d",
        "accept_burst": check::MAX_ACCEPT,
        "accept_rate_per_sec": check::MAX_ACCEPT,
        "relay_rate": check::MAX_RATE,
        "upload_rate": check::MAX_RATE,
        "download_rate": check::MAX_RATE,
        "peer_upload_rate": check::MAX_RATE,
        "peer_download_rate": check::MAX_RATE,
        "known_peers": ["127.0.0.2:9090"],
    });
    let least = json!({
        "max_peers": 1,
        "max_concurrent_syncs": 1,
        "max_message_size": ivaldi_core::config::MIN_MESSAGE_SIZE,
        "heartbeat_interval": "10ms",
        "heartbeat_misses": 1,
        "sync_interval": "10ms",
        "sync_timeout": "10ms",
        "handshake_timeout": "10ms",
        "reconnect_min": "10ms",
        "reconnect_max": "10ms",
        "discovery_interval": "10ms",
        "topology_interval": "10ms",
        "accept_burst": 1,
        "accept_rate_per_sec": 1,
        "relay_rate": 1,
        "upload_rate": 1,
        "download_rate": 1,
        "known_peers": ["127.0.0.2:9090"],
    });
    [most, least]
}

impl Arbitrary for ConfigJson {
    fn arbitrary(g: &mut Gen) -> Self {
        let mut root = match u8::arbitrary(g) % 4 {
            0 => extremes()[0].clone(),
            1 => extremes()[1].clone(),
            _ => serde_json::to_value(NodeConfig::default()).unwrap_or(Value::Null),
        };
        for _ in 0..usize::arbitrary(g) % 5 {
            match (u8::arbitrary(g) % 20, root.as_object_mut()) {
                (0, _) => root = value(g, 2),
                (1..=3, Some(map)) => {
                    let k = key(g);
                    map.remove(&k);
                }
                (_, Some(map)) => {
                    map.insert(key(g), value(g, 2));
                }
                (_, None) => {}
            }
        }
        let mut bytes = serde_json::to_vec(&root).unwrap_or_default();
        if u8::arbitrary(g) % 20 == 0 && !bytes.is_empty() {
            let at = usize::arbitrary(g) % bytes.len();
            bytes.truncate(at);
        }
        ConfigJson(bytes)
    }
}

/// Builds a node from `cfg` and drives its timers: a few deadlines in turn,
/// then jumps far ahead, so every interval is added to an instant and
/// multiplied (stale-after, lost-after) at its configured value.
fn drive_alone(cfg: &NodeConfig, seed: u64) {
    let mut rng = Rng::from_u64(seed);
    let keypair = Keypair::generate(&mut rng);
    let store = MemStore::new("repo");
    let mut node = Node::new(cfg.clone(), keypair, [7; 32], Instant::ZERO);
    node.start(Instant::ZERO, &store);
    let mut buf = Vec::new();
    let mut now = Instant::ZERO;
    for step in 0..40 {
        now = match node.poll_timeout() {
            Some(t) if step % 10 != 9 => t.max(now),
            _ => now + Duration::from_secs(86_400 * 365),
        };
        node.handle_timeout(now, &store);
        while node.poll_output().is_some() {}
        while node.poll_transmit(now, &store, &mut buf).is_some() {
            buf.clear();
        }
    }
    node.handle_command(now, 1, Command::SetConfig(Box::new(cfg.clone())), &store);
    node.handle_timeout(Instant::from_micros(u64::MAX), &store);
    let _ = node.poll_timeout();
}

/// Two nodes with `cfg`, connected, stepped a bounded number of times.
fn drive_pair(cfg: &NodeConfig) {
    let mut net = TestNet::new();
    let a = net.add(cfg.clone(), MemStore::new("repo"), 1);
    let b = net.add(cfg.clone(), MemStore::new("repo"), 2);
    net.connect(a, b);
    for _ in 0..200 {
        if !net.step() {
            break;
        }
    }
}

fn accepted_configs_run(input: ConfigJson) -> TestResult {
    match from_json(&input.0) {
        Err(e) => {
            let msg = e.to_string();
            if msg.trim().is_empty() {
                return TestResult::error("an empty error message");
            }
            TestResult::passed()
        }
        Ok(cfg) => {
            if let Err(e) = cfg.validate() {
                return TestResult::error(format!("accepted but does not validate: {e}"));
            }
            drive_alone(&cfg, input.0.len() as u64);
            drive_pair(&cfg);
            TestResult::passed()
        }
    }
}

#[test]
fn any_config_json_is_refused_clearly_or_runs() {
    QuickCheck::new()
        .rng(Gen::new(30))
        .tests(300)
        .quickcheck(accepted_configs_run as fn(ConfigJson) -> TestResult);
}

#[test]
fn both_extremes_of_every_bound_are_accepted_and_run() {
    for v in extremes() {
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        let cfg = from_json(&bytes).unwrap_or_else(|e| panic!("{v}: {e}"));
        drive_alone(&cfg, 1);
        drive_pair(&cfg);
    }
}

#[test]
fn one_past_each_bound_is_refused_naming_its_key() {
    for (key, past) in [
        ("max_peers", json!(check::MAX_PEERS + 1)),
        (
            "max_concurrent_syncs",
            json!(check::MAX_CONCURRENT_SYNCS + 1),
        ),
        ("max_message_size", json!(check::MAX_MESSAGE_SIZE + 1)),
        ("heartbeat_interval", json!("86401s")),
        ("heartbeat_misses", json!(check::MAX_HEARTBEAT_MISSES + 1)),
        ("sync_interval", json!("604801s")),
        ("sync_timeout", json!("86401s")),
        ("handshake_timeout", json!("3601s")),
        ("reconnect_max", json!("604801s")),
        ("discovery_interval", json!("86401s")),
        ("topology_interval", json!("604801s")),
        ("accept_burst", json!(check::MAX_ACCEPT + 1)),
        ("upload_rate", json!(check::MAX_RATE + 1)),
        ("relay_rate", json!(check::MAX_RATE + 1)),
        ("heartbeat_interval", json!("9ms")),
    ] {
        let text = json!({ key: past }).to_string();
        match from_json(text.as_bytes()) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => assert!(
                e.to_string().starts_with(&format!("{key}: ")),
                "{text}: {e}"
            ),
        }
    }
}

#[test]
fn a_node_given_an_unchecked_bad_allowed_networks_admits_nobody() {
    // `from_json` and `validate` refuse this list; a caller that skips them
    // must not get a node that accepts every address (it used to).
    let open = NodeConfig::default();
    let broken = NodeConfig::default()
        .with(|c| c.access.allowed_networks = vec!["127.0.0.0/8".into(), "not-a-net".into()]);
    assert!(broken.validate().is_err());
    let mut net = TestNet::new();
    let a = net.add(open.clone(), MemStore::new("repo"), 1);
    let b = net.add(broken, MemStore::new("repo"), 2);
    net.connect(a, b);
    net.run_for(Duration::from_secs(5));
    assert!(!net.connected(a, b), "the filter failed open");
    // The same pair with a valid filter connects.
    let mut net = TestNet::new();
    let a = net.add(open.clone(), MemStore::new("repo"), 1);
    let allowed =
        NodeConfig::default().with(|c| c.access.allowed_networks = vec!["127.0.0.0/8".into()]);
    let b = net.add(allowed, MemStore::new("repo"), 2);
    net.connect(a, b);
    net.run_for(Duration::from_secs(5));
    assert!(net.connected(a, b));
}
