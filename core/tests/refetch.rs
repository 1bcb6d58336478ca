//! Refetching objects a store lost below its own heads (`Command::Refetch`,
//! `core/src/node/refetch.rs`): what `ivaldi repair` asks the daemon for.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::access::{Access, AccessRule};
use ivaldi_core::config::NodeConfig;
use ivaldi_core::id::IdSet;
use ivaldi_core::node::{Command, Event};
use ivaldi_core::store::{MemStore, Store};
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

fn tl(s: &str) -> TimelineName {
    TimelineName::new(s).unwrap()
}

fn cfg() -> NodeConfig {
    NodeConfig::default().with(|c| c.connections.heartbeat_interval = Duration::from_secs(5))
}

fn files(salt: &str) -> BTreeMap<String, Vec<u8>> {
    (0..6)
        .map(|i| {
            let path = if i % 2 == 0 {
                format!("dir/sub/f{i}.txt")
            } else {
                format!("f{i}.txt")
            };
            (path, format!("{salt} {i}\n").into_bytes())
        })
        .collect()
}

fn ids(s: &MemStore) -> IdSet {
    s.objects.keys().copied().collect()
}

/// Node `seed`'s id, by adding it to a scratch network.
fn id_of(seed: u64) -> ivaldi_core::NodeId {
    let mut scratch = TestNet::new();
    let i = scratch.add(cfg(), MemStore::new("repo"), seed);
    scratch.nodes[i].node.node_id()
}

fn timeline_updates(net: &TestNet, i: usize) -> usize {
    net.nodes[i]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::TimelineUpdated { .. }))
        .count()
}

#[test]
fn a_node_that_lost_objects_refetches_exactly_those_from_a_peer() {
    let mut a_store = MemStore::new("repo");
    let one = seal_files(&mut a_store, &files("v0"), vec![], 1000, "one");
    let before_two = ids(&a_store);
    let two = seal_files(&mut a_store, &files("v1"), vec![one], 1001, "two");
    a_store.timelines.insert(tl("main"), two);
    let mut b_store = a_store.clone();
    // B loses everything seal two added below it (its trees and blobs), and
    // one blob of seal one; it keeps both seals and its head.
    let mut lost: Vec<ObjectId> = ids(&a_store)
        .difference(&before_two)
        .filter(|id| **id != two)
        .copied()
        .collect();
    let tree_one = a_store.seal(&one).unwrap().tree;
    let blob_one = *before_two
        .iter()
        .find(|id| {
            **id != one
                && **id != tree_one
                && a_store.kind(id) == Some(ivaldi_core::ObjectKind::Blob)
        })
        .expect("a blob of seal one");
    lost.push(blob_one);
    assert!(lost.len() >= 5, "trees and blobs: {lost:?}");
    for id in &lost {
        b_store.objects.remove(id);
    }
    let mut net = TestNet::new();
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), b_store, 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(a, b)));
    net.run_for(Duration::from_secs(1));
    let updates = timeline_updates(&net, b);
    let objects_in = net.nodes[b].node.stats().objects_in;
    // The damage report sees only the top of what is gone: seal two's tree
    // (nothing below a lost object is visible) and the lost blob.
    let tree_two = net.nodes[a].store.seal(&two).unwrap().tree;
    let cmd = net.command(
        b,
        Command::Refetch {
            peer: None,
            missing: vec![tree_two, blob_one],
        },
    );
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.command_result(b, cmd).is_some()
    }));
    let (ok, message) = net.command_result(b, cmd).unwrap();
    assert!(ok, "{message}");
    assert_eq!(message, "refetched 2 objects");
    assert_eq!(ids(&net.nodes[b].store), ids(&net.nodes[a].store));
    assert_eq!(
        net.nodes[b].node.stats().objects_in - objects_in,
        lost.len() as u64,
        "exactly the lost objects crossed the wire"
    );
    assert_eq!(net.nodes[b].store.timelines[&tl("main")], two);
    assert_eq!(timeline_updates(&net, b), updates, "no head moved");
}

#[test]
fn a_peer_cannot_use_a_refetch_to_read_a_timeline_it_may_not_read() {
    let b_id = id_of(2);
    let mut a_store = MemStore::new("repo");
    let main = seal_files(&mut a_store, &files("main"), vec![], 1000, "main");
    let secret = seal_files(&mut a_store, &files("secret"), vec![], 1001, "secret");
    a_store.timelines.insert(tl("main"), main);
    a_store.timelines.insert(tl("private/plans"), secret);
    let secret_tree = a_store.seal(&secret).unwrap().tree;
    let a_cfg = cfg().with(|c| {
        c.access.rules = vec![AccessRule {
            timelines: "private/*".into(),
            peers: vec![b_id.to_hex()],
            access: Access::None,
        }]
    });
    let mut net = TestNet::new();
    let a = net.add(a_cfg, a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[b].store.timelines.get(&tl("main")) == Some(&main)
    }));
    net.run_for(Duration::from_millis(200));
    // B loses main's tree, and asks for it along with the secret's ids, which
    // it learned some other way.
    let main_tree = net.nodes[b].store.seal(&main).unwrap().tree;
    net.nodes[b].store.objects.remove(&main_tree);
    let cmd = net.command(
        b,
        Command::Refetch {
            peer: None,
            missing: vec![main_tree, secret, secret_tree],
        },
    );
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.command_result(b, cmd).is_some()
    }));
    let (ok, message) = net.command_result(b, cmd).unwrap();
    assert!(!ok);
    assert_eq!(
        message,
        "refetched 1 objects; 2 still missing (asked 1 peer)"
    );
    let bs = &net.nodes[b].store;
    assert!(bs.has(&main_tree), "what B may read came back");
    assert!(!bs.has(&secret) && !bs.has(&secret_tree));
    let refused: Vec<String> = net.nodes[a]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::AccessRefused { what, .. } => Some(what.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec!["refetch of 2 objects it may not read"]);
}

#[test]
fn a_refetch_without_a_connected_peer_fails_at_once() {
    let mut s = MemStore::new("repo");
    let main = seal_files(&mut s, &files("main"), vec![], 1000, "main");
    s.timelines.insert(tl("main"), main);
    let tree = s.seal(&main).unwrap().tree;
    s.objects.remove(&tree);
    let mut net = TestNet::new();
    let a = net.add(cfg(), s, 1);
    let cmd = net.command(
        a,
        Command::Refetch {
            peer: None,
            missing: vec![tree],
        },
    );
    assert_eq!(
        net.command_result(a, cmd),
        Some((false, "no connected peer serves this repository".into()))
    );
}
