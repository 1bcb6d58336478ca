//! A sync costs what changed, not how many timelines exist: the store reads
//! the puller's "have" list makes stay the same when the timelines on one
//! history go from 10 to 1,000.

use std::cell::Cell;
use std::collections::BTreeMap;

use ivaldi_core::ObjectId;
use ivaldi_core::store::{MemStore, Store, StoreError};
use ivaldi_core::sync;
use ivaldi_core::testkit::seal_files;
use ivaldi_core::timeline::TimelineName;

/// A store that counts the objects read from it.
struct Counting {
    inner: MemStore,
    gets: Cell<u64>,
}

impl Store for Counting {
    fn repo_id(&self) -> &str {
        self.inner.repo_id()
    }
    fn heads(&self) -> Result<BTreeMap<TimelineName, ObjectId>, StoreError> {
        self.inner.heads()
    }
    fn has(&self, id: &ObjectId) -> bool {
        self.inner.has(id)
    }
    fn get(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        self.gets.set(self.gets.get() + 1);
        self.inner.get(id)
    }
}

/// A 40-seal history on `main` and `n - 1` more timelines on its last 10 seals.
fn repo(n: usize) -> Counting {
    let mut store = MemStore::new("r");
    let mut seals: Vec<ObjectId> = Vec::new();
    for i in 0..40 {
        let files = BTreeMap::from([("f.txt".to_owned(), format!("line {i}\n").into_bytes())]);
        let parents = seals.last().copied().into_iter().collect();
        seals.push(seal_files(&mut store, &files, parents, i, "seal"));
    }
    let name = |s: &str| TimelineName::new(s).expect("name");
    store.timelines.insert(name("main"), seals[39]);
    for i in 1..n {
        store
            .timelines
            .insert(name(&format!("branch/{i:04}")), seals[39 - i % 10]);
    }
    Counting {
        inner: store,
        gets: Cell::new(0),
    }
}

fn haves_cost(n: usize) -> (u64, usize) {
    let store = repo(n);
    let heads: Vec<ObjectId> = store.heads().expect("heads").into_values().collect();
    assert_eq!(heads.len(), n);
    let haves = sync::haves(&store, &heads, &[]).expect("haves");
    (store.gets.get(), haves.len())
}

#[test]
fn the_have_list_costs_the_same_with_1000_timelines_as_with_10() {
    let (reads_10, list_10) = haves_cost(10);
    let (reads_1000, list_1000) = haves_cost(1000);
    // One walk down the shared history, however many heads sit on it.
    assert!(reads_10 <= 41, "{reads_10} seal reads for 10 timelines");
    assert_eq!(reads_1000, reads_10, "seal reads grow with the timelines");
    // Every distinct head is listed, and the history is sampled once.
    assert_eq!(list_1000, list_10);
}

#[test]
fn every_head_is_still_in_the_have_list() {
    let store = repo(1000);
    let heads: Vec<ObjectId> = store.heads().expect("heads").into_values().collect();
    let haves = sync::haves(&store, &heads, &[]).expect("haves");
    for h in &heads {
        assert!(haves.contains(h), "head {h} missing from the haves");
    }
}

/// Head updates B lands to pull one new seal on `main` from A, both holding
/// the same `n` timelines and B the tracking names of an earlier run.
fn updates_for_one_seal(n: usize) -> u64 {
    use ivaldi_core::config::NodeConfig;
    use ivaldi_core::node::Command;
    use ivaldi_core::testkit::TestNet;
    use std::time::Duration;

    let cfg = || {
        NodeConfig::default().with(|c| {
            c.connections.heartbeat_interval = Duration::from_secs(5);
            c.sync.sync_interval = Duration::from_secs(30);
        })
    };
    let mut net = TestNet::new();
    let source = repo(n).inner;
    let a = net.add(cfg(), source.clone(), 1);
    let a_id = net.nodes[a].node.node_id().to_hex();
    let mut copy = source.clone();
    for (t, h) in &source.timelines {
        copy.tracking.insert((a_id.clone(), t.clone()), *h);
    }
    let b = net.add(cfg(), copy, 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(a, b)
        && n.connected(b, a)));
    net.run_for(Duration::from_secs(1));
    let before = net.nodes[b].head_updates;

    let main = TimelineName::new("main").expect("name");
    let s = &mut net.nodes[a].store;
    let head = s.timelines[&main];
    let files = BTreeMap::from([("f.txt".to_owned(), b"new\n".to_vec())]);
    let next = seal_files(s, &files, vec![head], 100, "next");
    s.timelines.insert(main.clone(), next);
    net.command(a, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[b].store.timelines.get(&main) == Some(&next)
    }));
    net.nodes[b].head_updates - before
}

#[test]
fn the_first_pull_after_a_restart_writes_only_what_moved() {
    // `main` and its tracking name, however many timelines exist.
    assert_eq!(updates_for_one_seal(10), 2);
    assert_eq!(updates_for_one_seal(1000), 2);
}
