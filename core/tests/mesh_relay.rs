//! The mesh carrying real sync traffic: nodes that cannot reach each other
//! directly sync through relays, relays need not hold the repository, and a relay
//! that tampers with routed frames is detected and routed around.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::config::{NodeConfig, RelayFault};
use ivaldi_core::node::Command;
use ivaldi_core::store::MemStore;
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

fn main_tl() -> TimelineName {
    TimelineName::new("main").unwrap()
}

fn cfg() -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.heartbeat_interval = Duration::from_secs(2);
        c.sync.sync_interval = Duration::from_secs(10);
        c.mesh.topology_interval = Duration::from_secs(5);
        c.discovery.enabled = false;
    })
}

fn files(tag: &str) -> BTreeMap<String, Vec<u8>> {
    (0..20)
        .map(|i| {
            (
                format!("f{i}.txt"),
                format!("{tag} {i}\n").repeat(50).into_bytes(),
            )
        })
        .collect()
}

/// A line of `n` nodes where only neighbours may connect. Nodes in `holders`
/// serve "repo"; the others serve an unrelated repository.
fn line(n: usize, holders: &[usize]) -> TestNet {
    let mut net = TestNet::new();
    for i in 0..n {
        let id = if holders.contains(&i) {
            "repo"
        } else {
            "relay-only"
        };
        net.add(cfg(), MemStore::new(id), i as u64 + 1);
    }
    for i in 0..n {
        for j in 0..n {
            if i + 1 < j || j + 1 < i {
                net.blocked_pairs.push((i, j));
            }
        }
    }
    for i in 0..n - 1 {
        net.connect(i + 1, i);
    }
    net
}

fn seal_on(net: &mut TestNet, i: usize, tag: &str, parents: Vec<ObjectId>) -> ObjectId {
    let s = &mut net.nodes[i].store;
    let head = seal_files(s, &files(tag), parents, 1000, tag);
    s.timelines.insert(main_tl(), head);
    net.command(i, Command::LocalHeadsChanged);
    head
}

fn reaches(net: &mut TestNet, i: usize, head: ObjectId, limit: Duration) -> bool {
    net.run_until(limit, |n| {
        n.nodes[i].store.timelines.get(&main_tl()) == Some(&head)
    })
}

#[test]
fn five_nodes_in_a_line_carry_a_seal_end_to_end() {
    let mut net = line(5, &[0, 1, 2, 3, 4]);
    net.run_for(Duration::from_secs(2));
    let head = seal_on(&mut net, 0, "first", vec![]);
    assert!(
        reaches(&mut net, 4, head, Duration::from_secs(60)),
        "the seal reached the far end"
    );
}

#[test]
fn only_the_two_ends_hold_the_repository() {
    let mut net = line(5, &[0, 4]);
    let head = seal_on(&mut net, 0, "first", vec![]);
    assert!(
        reaches(&mut net, 4, head, Duration::from_secs(120)),
        "the far end got the seal through three relays that do not hold the repository"
    );
    // The relays never stored the repository's objects.
    for i in 1..4 {
        assert!(
            net.nodes[i].store.objects.is_empty(),
            "relay {i} stored objects"
        );
        assert!(
            net.nodes[i].node.stats().relayed_bytes > 0,
            "relay {i} relayed"
        );
    }
    // The ends really are not connected directly.
    assert!(!net.connected(0, 4) || net.nodes[0].node.peers().iter().any(|p| p.routed_via_mesh));
    let far = net.nodes[4].node.node_id().to_owned();
    let now = net.now;
    let route = net.nodes[0]
        .node
        .route_to(now, &far)
        .expect("a route to the far end");
    assert_eq!(
        route.0.len(),
        5,
        "the path runs through every node: {route:?}"
    );
    // A later seal travels the same way.
    let next = seal_on(&mut net, 4, "second", vec![head]);
    assert!(reaches(&mut net, 0, next, Duration::from_secs(60)));
}

/// 0 reaches 3 through 1 or 2; `bad` is a faulty relay.
fn diamond(bad: RelayFault) -> TestNet {
    let mut net = TestNet::new();
    for i in 0..4 {
        let id = if i == 0 || i == 3 {
            "repo"
        } else {
            "relay-only"
        };
        let mut c = cfg();
        if i == 1 {
            c.mesh.fault_relay = Some(bad);
        }
        net.add(c, MemStore::new(id), i as u64 + 10);
    }
    net.blocked_pairs.push((0, 3));
    net.blocked_pairs.push((1, 2));
    net.connect(1, 0);
    net.connect(2, 0);
    net.connect(3, 1);
    net.connect(3, 2);
    net
}

#[test]
fn a_tampering_relay_is_detected_and_avoided() {
    for fault in [RelayFault::Corrupt, RelayFault::Replay, RelayFault::Drop] {
        let mut net = diamond(fault);
        net.run_for(Duration::from_secs(3));
        let mut head = seal_on(&mut net, 0, "one", vec![]);
        assert!(
            reaches(&mut net, 3, head, Duration::from_secs(300)),
            "{fault:?}: the seal arrived over the honest relay"
        );
        eprintln!(
            "{fault:?}: relay 1 relayed {} B, relay 2 relayed {} B, violations at 0: {}, at 3: {}",
            net.nodes[1].node.stats().relayed_bytes,
            net.nodes[2].node.stats().relayed_bytes,
            net.nodes[0].node.stats().violations,
            net.nodes[3].node.stats().violations
        );
        if fault != RelayFault::Drop {
            let detected =
                net.nodes[0].node.stats().violations + net.nodes[3].node.stats().violations;
            assert!(
                detected >= 1,
                "{fault:?}: the tampering was detected end to end"
            );
        }
        assert!(
            net.nodes[2].node.stats().relayed_bytes > 0,
            "{fault:?}: the honest relay carried the session"
        );
        // Later seals keep flowing.
        for k in 0..3 {
            head = seal_on(&mut net, 0, &format!("more {k}"), vec![head]);
            assert!(
                reaches(&mut net, 3, head, Duration::from_secs(120)),
                "{fault:?}: seal {k}"
            );
        }
    }
}

#[test]
fn a_split_mesh_heals_through_peers_heard_of() {
    // A–B–C: A and C know of each other only because B told them.
    let mut net = TestNet::new();
    for i in 0..3 {
        net.add(cfg(), MemStore::new("repo"), i as u64 + 40);
    }
    net.connect(1, 0);
    net.connect(2, 1);
    net.run_for(Duration::from_secs(3));
    let head = seal_on(&mut net, 0, "before", vec![]);
    assert!(reaches(&mut net, 2, head, Duration::from_secs(30)));
    let c_id = net.nodes[2].node.node_id();
    let direct_to_c = |net: &TestNet| {
        net.nodes[0]
            .node
            .peers()
            .iter()
            .any(|p| p.peer == Some(c_id) && !p.routed_via_mesh)
    };
    assert!(
        !direct_to_c(&net),
        "before the split A reaches C only through B"
    );
    // B disappears for good; A and C find each other at the address B gave them.
    net.blocked_pairs.extend([(0, 1), (2, 1)]);
    net.freeze(1);
    net.disconnect_all(1);
    let next = seal_on(&mut net, 0, "after the split", vec![head]);
    assert!(
        reaches(&mut net, 2, next, Duration::from_secs(120)),
        "A and C reconnected directly and synced"
    );
    assert!(
        direct_to_c(&net)
            || net.nodes[2]
                .node
                .peers()
                .iter()
                .any(|p| !p.routed_via_mesh && p.state == ivaldi_core::node::ConnState::Ready)
    );
}

/// `no_direct` names a key, not a text: an id written in upper case keeps
/// its node from dialling that peer to heal the mesh (the check that used
/// to compare text exactly) as well as from accepting it directly (the
/// check that ignored case).
#[test]
fn an_upper_case_no_direct_id_is_honoured_when_healing_and_at_the_handshake() {
    // A–B–C: A hears of C from B; C is in A's no_direct, written in upper case.
    let mut scratch = TestNet::new();
    let c_seed = 42;
    let c = scratch.add(cfg(), MemStore::new("repo"), c_seed);
    let c_id = scratch.nodes[c].node.node_id();
    let a_cfg: NodeConfig = serde_json::from_str(&format!(
        r#"{{"no_direct": ["{}"]}}"#,
        c_id.to_hex().to_ascii_uppercase()
    ))
    .unwrap();
    assert_eq!(a_cfg.mesh.no_direct, vec![c_id]);
    let mut net = TestNet::new();
    net.add(
        cfg().with(|c| c.mesh.no_direct = a_cfg.mesh.no_direct),
        MemStore::new("repo"),
        40,
    );
    net.add(cfg(), MemStore::new("repo"), 41);
    net.add(cfg(), MemStore::new("repo"), c_seed);
    assert_eq!(net.nodes[2].node.node_id(), c_id);
    net.connect(1, 0);
    net.connect(2, 1);
    net.run_for(Duration::from_secs(3));
    let head = seal_on(&mut net, 0, "before", vec![]);
    assert!(reaches(&mut net, 2, head, Duration::from_secs(30)));
    // B disappears: C is reachable only at the address B gave, and A must
    // not dial it to heal.
    net.blocked_pairs.extend([(0, 1), (2, 1)]);
    net.freeze(1);
    net.disconnect_all(1);
    let dials_before = net.nodes[0].dials;
    net.run_for(Duration::from_secs(120));
    assert_eq!(net.nodes[0].dials, dials_before, "A never dials C");
    assert!(!net.connected(0, 2));
    // C dialling A is refused at A's handshake all the same.
    net.connect(2, 0);
    net.run_for(Duration::from_secs(5));
    assert!(!net.connected(0, 2) && !net.connected(2, 0));
}

/// A relay at its `relay_rate` holds routed frames back instead of dropping
/// them: the transfer through it is shaped to the rate, nothing is dropped,
/// no relay is suspected of tampering, and its own connections stay up.
#[test]
fn a_relay_at_its_rate_cap_shapes_routed_traffic() {
    const RATE: u64 = 128 * 1024;
    let mut net = TestNet::new();
    for i in 0..3 {
        let mut c = cfg();
        if i == 1 {
            c.mesh.relay_rate = RATE;
        }
        let repo = if i == 1 { "relay-only" } else { "repo" };
        net.add(c, MemStore::new(repo), i as u64 + 1);
    }
    net.blocked_pairs.push((0, 2));
    net.blocked_pairs.push((2, 0));
    net.connect(1, 0);
    net.connect(2, 1);
    // About 1 MiB that does not compress.
    let mut x: u64 = 7;
    let big: BTreeMap<String, Vec<u8>> = (0..16)
        .map(|i| {
            let data = (0..64 * 1024)
                .map(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (x >> 56) as u8
                })
                .collect();
            (format!("blob{i}.bin"), data)
        })
        .collect();
    let s = &mut net.nodes[0].store;
    let head = seal_files(s, &big, vec![], 1000, "big");
    s.timelines.insert(main_tl(), head);
    net.command(0, Command::LocalHeadsChanged);
    let start = net.now;
    assert!(
        reaches(&mut net, 2, head, Duration::from_secs(120)),
        "the seal crossed the capped relay"
    );
    let took = net.now.saturating_since(start);
    let relay = net.nodes[1].node.stats();
    assert_eq!(relay.relay_dropped, 0, "nothing dropped at the cap");
    assert!(relay.relayed_bytes >= 1024 * 1024);
    // Shaped: at most the rate plus the bucket (two 64 KiB chunks or a
    // second's worth) over the whole transfer.
    let allowed = RATE as f64 * took.as_secs_f64() + (RATE as f64).max(128.0 * 1024.0);
    assert!(
        (relay.relayed_bytes as f64) <= allowed,
        "{} bytes relayed in {took:?} (allowed {allowed})",
        relay.relayed_bytes
    );
    assert!(
        net.connected(0, 1) && net.connected(1, 2),
        "the relay's own links stayed up"
    );
}
