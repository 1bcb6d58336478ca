//! Two and three nodes in one thread, virtual time, in-memory stores.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::{Command, Event};
use ivaldi_core::store::{MemStore, Store};
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

fn main_tl() -> TimelineName {
    TimelineName::new("main").unwrap()
}

fn cfg() -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.heartbeat_interval = Duration::from_secs(5);
        c.sync.sync_interval = Duration::from_secs(30);
    })
}

fn files(n: usize, salt: &str) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| {
            (
                format!("dir{}/file{i}.txt", i % 7),
                format!("{salt} file {i}\n").repeat(20).into_bytes(),
            )
        })
        .collect()
}

fn history(store: &mut MemStore, seals: usize) -> ObjectId {
    let mut parent = Vec::new();
    let mut head = ObjectId([0; 32]);
    let mut f = files(50, "v0");
    for s in 0..seals {
        f.insert(
            format!("dir1/file{s}.txt"),
            format!("edit {s}").into_bytes(),
        );
        head = seal_files(store, &f, parent, 1000 + s as i64, &format!("seal {s}"));
        parent = vec![head];
    }
    store.timelines.insert(main_tl(), head);
    head
}

#[test]
fn handshake_full_sync_and_fast_forward() {
    let mut net = TestNet::new();
    let mut a_store = MemStore::new("repo");
    let head = history(&mut a_store, 5);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    let cmd = net.connect(b, a);
    assert!(net.run_until(
        Duration::from_secs(5),
        |n| n.nodes[b].store.timelines.get(&main_tl()) == Some(&head)
    ));
    assert_eq!(net.command_result(b, cmd).map(|r| r.0), Some(true));
    assert!(net.connected(a, b) && net.connected(b, a));
    // Every object of the history arrived and verifies.
    assert_eq!(
        net.nodes[b].store.objects.len(),
        net.nodes[a].store.objects.len()
    );

    // A new seal on A reaches B without waiting for the interval.
    let mut f = files(50, "v0");
    f.insert("new.txt".into(), b"new".to_vec());
    let s = &mut net.nodes[a].store;
    let next = seal_files(s, &f, vec![head], 2000, "next");
    s.timelines.insert(main_tl(), next);
    net.command(a, Command::LocalHeadsChanged);
    let t0 = net.now;
    assert!(net.run_until(
        Duration::from_secs(5),
        |n| n.nodes[b].store.timelines.get(&main_tl()) == Some(&next)
    ));
    assert!(
        net.now.saturating_since(t0) < Duration::from_millis(100),
        "took {:?}",
        net.now.saturating_since(t0)
    );
    let ff = net.nodes[b].events.iter().any(|(_, e)| matches!(e, Event::TimelineUpdated { old: Some(o), new, .. } if *o == head && *new == next));
    assert!(ff, "fast-forward event");
}

#[test]
fn divergence_is_reported_not_overwritten() {
    let mut net = TestNet::new();
    let mut a_store = MemStore::new("repo");
    let base = history(&mut a_store, 3);
    let mut b_store = a_store.clone();
    let mut fa = files(50, "v0");
    fa.insert("a.txt".into(), b"a".to_vec());
    let ha = seal_files(&mut a_store, &fa, vec![base], 5000, "a");
    a_store.timelines.insert(main_tl(), ha);
    let mut fb = files(50, "v0");
    fb.insert("b.txt".into(), b"b".to_vec());
    let hb = seal_files(&mut b_store, &fb, vec![base], 5001, "b");
    b_store.timelines.insert(main_tl(), hb);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), b_store, 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[b]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::ConflictDetected { .. }))
            && n.nodes[a]
                .events
                .iter()
                .any(|(_, e)| matches!(e, Event::ConflictDetected { .. }))
    }));
    // Heads unchanged; the remote head is kept under the tracking name.
    assert_eq!(net.nodes[b].store.timelines[&main_tl()], hb);
    assert_eq!(net.nodes[a].store.timelines[&main_tl()], ha);
    let a_id = net.nodes[a].node.node_id().to_hex();
    assert_eq!(
        net.nodes[b].store.tracking.get(&(a_id, main_tl())),
        Some(&ha)
    );
    assert!(net.nodes[b].store.has(&ha));
    let conflict = net.nodes[b].node.conflicts();
    assert_eq!(conflict.len(), 1);
    assert_eq!(conflict[0].base, Some(base));
}

#[test]
fn different_repositories_never_exchange_seals() {
    let mut net = TestNet::new();
    let mut a_store = MemStore::new("repo-a");
    history(&mut a_store, 2);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo-b"), 2);
    net.connect(b, a);
    net.run_for(Duration::from_secs(60));
    assert!(net.connected(b, a));
    assert!(net.nodes[b].store.objects.is_empty());
    assert!(net.nodes[b].store.timelines.is_empty());
}
