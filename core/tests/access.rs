//! Per-timeline access rules and feature negotiation between two nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::access::{Access, AccessRule};
use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::{Command, Event};
use ivaldi_core::store::{MemStore, Store};
use ivaldi_core::testkit::{TestNet, plaintext_record, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

fn tl(s: &str) -> TimelineName {
    TimelineName::new(s).unwrap()
}

fn cfg() -> NodeConfig {
    NodeConfig::default().with(|c| c.connections.heartbeat_interval = Duration::from_secs(5))
}

fn files(salt: &str) -> BTreeMap<String, Vec<u8>> {
    (0..5)
        .map(|i| (format!("f{i}.txt"), format!("{salt} {i}\n").into_bytes()))
        .collect()
}

fn rule(timelines: &str, peer: &str, access: Access) -> AccessRule {
    AccessRule {
        timelines: timelines.into(),
        peers: vec![peer.to_owned()],
        access,
    }
}

/// Node `seed`'s id, by adding it to a scratch network.
fn id_of(seed: u64) -> String {
    let mut scratch = TestNet::new();
    let i = scratch.add(cfg(), MemStore::new("repo"), seed);
    scratch.nodes[i].node.node_id().to_hex()
}

fn refusals(net: &TestNet, i: usize) -> Vec<String> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::AccessRefused { what, .. } => Some(what.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_private_timeline_is_neither_announced_nor_served() {
    let b_id = id_of(2);
    let mut a_store = MemStore::new("repo");
    let main = seal_files(&mut a_store, &files("main"), vec![], 1000, "main");
    let secret = seal_files(&mut a_store, &files("secret"), vec![], 1001, "secret");
    a_store.timelines.insert(tl("main"), main);
    a_store.timelines.insert(tl("private/plans"), secret);
    let a_cfg = cfg().with(|c| c.access.rules = vec![rule("private/*", &b_id, Access::None)]);
    let mut net = TestNet::new();
    let a = net.add(a_cfg, a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[b].store.timelines.get(&tl("main")) == Some(&main)
    }));
    net.run_for(Duration::from_secs(2));
    let bs = &net.nodes[b].store;
    assert!(!bs.has(&secret), "the private seal never reached B");
    assert!(
        !bs.timelines.contains_key(&tl("private/plans"))
            && !bs
                .tracking
                .keys()
                .any(|(_, t)| t.as_str().starts_with("private/")),
        "B never heard of the private timeline"
    );
    // A new private seal is not announced to B either.
    let s = &mut net.nodes[a].store;
    let secret2 = seal_files(s, &files("secret2"), vec![secret], 1002, "secret 2");
    s.timelines.insert(tl("private/plans"), secret2);
    net.command(a, Command::LocalHeadsChanged);
    net.run_for(Duration::from_secs(2));
    assert!(!net.nodes[b].store.has(&secret2));
    let told = net.nodes[b].node.peer_records().values().any(|r| {
        r.heads_seen
            .keys()
            .any(|t| t.as_str().starts_with("private/"))
    });
    assert!(!told);
}

#[test]
fn heads_from_a_read_only_peer_are_refused_and_recorded() {
    let b_id = id_of(2);
    let mut a_store = MemStore::new("repo");
    let base = seal_files(&mut a_store, &files("v0"), vec![], 1000, "base");
    a_store.timelines.insert(tl("main"), base);
    let b_store = a_store.clone();
    let a_cfg = cfg().with(|c| c.access.rules = vec![rule("main", &b_id, Access::Read)]);
    let mut net = TestNet::new();
    let a = net.add(a_cfg, a_store, 1);
    let b = net.add(cfg(), b_store, 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(a, b)));
    // B seals on main; A refuses the head and keeps its own.
    let s = &mut net.nodes[b].store;
    let pushed = seal_files(s, &files("v1"), vec![base], 1001, "from b");
    s.timelines.insert(tl("main"), pushed);
    net.command(b, Command::LocalHeadsChanged);
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.nodes[a].store.timelines[&tl("main")], base);
    assert!(!net.nodes[a].store.has(&pushed), "nothing was fetched");
    let r = refusals(&net, a);
    assert!(!r.is_empty() && r[0].contains("may not write"), "{r:?}");
    assert!(net.nodes[a].node.stats().access_refused >= 1);
    // Reading still works: A's next seal reaches B.
    let s = &mut net.nodes[a].store;
    let next: ObjectId = seal_files(s, &files("v2"), vec![base], 1002, "from a");
    s.timelines.insert(tl("main"), next);
    net.command(a, Command::LocalHeadsChanged);
    net.run_for(Duration::from_secs(3));
    assert!(net.nodes[b].store.has(&next), "B may read main");
}

#[test]
fn a_peer_lacking_features_still_syncs_and_learns_the_mesh() {
    let mut a_store = MemStore::new("repo");
    let main = seal_files(&mut a_store, &files("big"), vec![], 1000, "main");
    a_store.timelines.insert(tl("main"), main);
    let old =
        cfg().with(|c| c.connections.features_off = vec!["lz4".into(), "topology-summary".into()]);
    let mut net = TestNet::new();
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(old, MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[b].store.timelines.get(&tl("main")) == Some(&main)
    }));
    let sb = net.nodes[b].node.stats();
    assert_eq!(
        sb.messages_in.get("topology_summary"),
        None,
        "never sent to B"
    );
    assert!(sb.messages_in.get("topology").copied().unwrap_or(0) >= 1);
    let sa = net.nodes[a].node.stats();
    assert_eq!(sa.messages_in.get("topology_summary"), None, "B sent none");
    let topo = net.nodes[b].node.topology().expect("mesh on");
    assert!(
        topo.nodes
            .iter()
            .any(|n| n.id == net.nodes[a].node.node_id().to_hex())
    );
}

#[test]
fn a_request_for_a_seal_the_peer_may_not_read_is_refused() {
    let b_id = id_of(2);
    let plain = cfg().with(|c| c.connections.encryption = false);
    let mut a_store = MemStore::new("repo");
    let main = seal_files(&mut a_store, &files("main"), vec![], 1000, "main");
    let secret = seal_files(&mut a_store, &files("secret"), vec![], 1001, "secret");
    a_store.timelines.insert(tl("main"), main);
    a_store.timelines.insert(tl("private/plans"), secret);
    let a_cfg = plain
        .clone()
        .with(|c| c.access.rules = vec![rule("private/*", &b_id, Access::None)]);
    let mut net = TestNet::new();
    let a = net.add(a_cfg, a_store, 1);
    let b = net.add(plain, MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[b].store.timelines.get(&tl("main")) == Some(&main)
    }));
    net.run_for(Duration::from_millis(200));
    // B learned the secret's id some other way and asks for it directly.
    let json = format!(
        r#"{{"id":5000000,"type":"sync_request","from":"{b_id}","ts":0,"payload":{{"sync":999,"repo":"repo","wants":["{secret}"],"haves":[]}}}}"#
    );
    assert!(net.inject(b, a, plaintext_record(&json)));
    net.run_for(Duration::from_secs(1));
    assert!(!net.nodes[b].store.has(&secret));
    let r = refusals(&net, a);
    assert!(r.iter().any(|w| w.contains("may read")), "{r:?}");
    assert_eq!(net.nodes[a].node.stats().objects_out, {
        // Only main's objects ever left A.
        net.nodes[b].store.objects.len() as u64
    });
}

#[test]
fn one_address_churning_connections_is_rate_limited_while_others_connect() {
    use ivaldi_core::noise::Keypair;
    use ivaldi_core::rng::Rng;
    use ivaldi_core::time::Instant;
    let cfg = cfg().with(|c| {
        c.connections.accept_burst = 5;
        c.connections.accept_rate_per_sec = 1;
        c.connections.max_peers = 1000;
    });
    let mut rng = Rng::from_u64(7);
    let kp = Keypair::generate(&mut rng);
    let mut node = ivaldi_core::node::Node::new(cfg, kp, [7; 32], Instant::ZERO);
    let hostile: std::net::SocketAddr = "127.0.0.66:40000".parse().unwrap();
    let honest: std::net::SocketAddr = "127.0.0.77:40000".parse().unwrap();
    let accepted = (0..50)
        .filter(|_| node.handle_accepted(Instant::ZERO, hostile).is_some())
        .count();
    assert_eq!(accepted, 5, "the burst, then nothing");
    assert_eq!(node.stats().accepts_rate_limited, 45);
    assert!(node.handle_accepted(Instant::ZERO, honest).is_some());
    // The allowance refills with time.
    let later = Instant::ZERO + Duration::from_secs(2);
    let again = (0..10)
        .filter(|_| node.handle_accepted(later, hostile).is_some())
        .count();
    assert_eq!(again, 2);
}
