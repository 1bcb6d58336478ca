//! A peer offering thousands of timeline names creates at most its budget
//! here (`max_new_timelines_per_sync`, `max_new_timelines_per_peer`); the rest
//! is refused whole, counted once, reported once, and existing timelines keep
//! updating.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::{Command, Event};
use ivaldi_core::store::MemStore;
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

fn tl(name: &str) -> TimelineName {
    TimelineName::new(name).unwrap()
}

fn plain() -> NodeConfig {
    NodeConfig::default().with(|c| c.connections.encryption = false)
}

fn files(text: &str) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([("f.txt".to_owned(), text.as_bytes().to_vec())])
}

#[test]
fn five_thousand_offered_timelines_create_at_most_the_peer_budget() {
    let mut a_store = MemStore::new("repo");
    let base = seal_files(&mut a_store, &files("base"), vec![], 1000, "base");
    a_store.timelines.insert(tl("main"), base);
    for i in 0..5000 {
        // Every tenth name has a seal of its own, so refused names would cost objects.
        let head = if i % 10 == 0 {
            seal_files(
                &mut a_store,
                &files(&format!("t{i}")),
                vec![base],
                1001,
                "t",
            )
        } else {
            base
        };
        a_store.timelines.insert(tl(&format!("spam/{i:05}")), head);
    }
    let mut b_store = MemStore::new("repo");
    seal_files(&mut b_store, &files("base"), vec![], 1000, "base");
    b_store.timelines.insert(tl("main"), base);
    let mut net = TestNet::new();
    let a = net.add(plain(), a_store, 1);
    let b = net.add(plain(), b_store, 2);
    net.connect(b, a);
    let settled = net.run_until(Duration::from_secs(60), |n| {
        n.nodes[b].store.timelines.len() == 1001
    });
    assert!(
        settled,
        "B has {} timelines",
        net.nodes[b].store.timelines.len()
    );
    net.run_for(Duration::from_secs(5));
    let bs = &net.nodes[b].store;
    // main plus the first thousand names, in name order; nothing of the rest.
    assert_eq!(bs.timelines.len(), 1001);
    assert!(bs.timelines.contains_key(&tl("spam/00999")));
    assert!(!bs.timelines.contains_key(&tl("spam/01000")));
    // No tracking ref or seal for a refused name: never half-applied.
    let a_id = net.nodes[a].node.node_id().to_hex();
    let tracked = bs.tracking.keys().filter(|(p, _)| *p == a_id).count();
    assert!(tracked <= 1001, "{tracked} tracking refs");
    let refused_seal = net.nodes[a].store.timelines[&tl("spam/01000")];
    assert!(!bs.objects.contains_key(&refused_seal));
    // Counted once per name, reported once.
    let node = &net.nodes[b].node;
    assert_eq!(node.stats().timelines_refused, 4000);
    let a_key = net.nodes[a].node.node_id();
    assert_eq!(node.peer_records()[&a_key].timelines_created, 1000);
    let reports: Vec<_> = net.nodes[b]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::TimelinesRefused { refused, first, .. } => Some((*refused, first.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(reports, vec![(4000, tl("spam/01000"))]);

    // With the budget spent, an existing timeline still updates.
    let s = &mut net.nodes[a].store;
    let next: ObjectId = seal_files(s, &files("next"), vec![base], 1002, "next");
    s.timelines.insert(tl("main"), next);
    net.command(a, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.nodes[b].store.timelines.get(&tl("main")) == Some(&next)
    }));
    assert_eq!(net.nodes[b].store.timelines.len(), 1001);
    assert_eq!(net.nodes[b].node.stats().timelines_refused, 4000);
}

#[test]
fn a_sync_creates_at_most_its_cap_and_the_rest_follows_in_later_syncs() {
    let mut a_store = MemStore::new("repo");
    let base = seal_files(&mut a_store, &files("base"), vec![], 1000, "base");
    for i in 0..250 {
        a_store.timelines.insert(tl(&format!("t/{i:03}")), base);
    }
    let mut net = TestNet::new();
    let cfg = plain().with(|c| c.limits.max_new_timelines_per_sync = 100);
    let a = net.add(plain(), a_store, 1);
    let b = net.add(cfg, MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(30), |n| {
        n.nodes[b].store.timelines.len() == 250
    }));
    // Three syncs landed 100, 100 and 50; none was refused.
    let updated_per_sync: Vec<usize> = {
        let mut per: BTreeMap<u64, usize> = BTreeMap::new();
        let mut current = 0;
        for (_, e) in &net.nodes[b].events {
            match e {
                Event::SyncStarted { sync, .. } => current = *sync,
                Event::TimelineUpdated { .. } => *per.entry(current).or_default() += 1,
                _ => {}
            }
        }
        per.into_values().collect()
    };
    assert_eq!(updated_per_sync, vec![100, 100, 50]);
    assert_eq!(net.nodes[b].node.stats().timelines_refused, 0);
}
