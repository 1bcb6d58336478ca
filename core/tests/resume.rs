//! Issue 8 §4: an interrupted transfer resumes without resending the objects
//! that already landed. A pull lands checkpoints as it receives; a cut transfer
//! keeps them, and the next pull names their roots (`sync_request.resume`) so
//! the sender skips them. Measured in bytes on the (virtual) wire.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::config::NodeConfig;
use ivaldi_core::id::IdSet;
use ivaldi_core::object::{self, ObjectKind};
use ivaldi_core::store::{MemStore, Store};
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

const MIB: usize = 1024 * 1024;

fn main_tl() -> TimelineName {
    TimelineName::new("main").expect("valid")
}

fn cfg() -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.heartbeat_interval = Duration::from_secs(5);
        c.sync.sync_interval = Duration::from_secs(3600);
    })
}

/// Incompressible bytes (xorshift), so lz4 does not shrink the transfer.
fn pseudo(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn head(net: &TestNet, i: usize) -> Option<ObjectId> {
    net.nodes[i].store.timelines.get(&main_tl()).copied()
}

/// A store with one small seal on `main`; returns it and the seal.
fn base() -> (MemStore, ObjectId) {
    let mut s = MemStore::new("repo");
    let mut files = BTreeMap::new();
    files.insert("readme.txt".to_owned(), b"hello\n".to_vec());
    let seal = seal_files(&mut s, &files, Vec::new(), 1000, "base");
    s.timelines.insert(main_tl(), seal);
    (s, seal)
}

/// Every object reachable from `head` in `store`.
fn reachable(store: &MemStore, head: ObjectId) -> IdSet {
    let mut seen = IdSet::default();
    let mut stack = vec![head];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let raw = store
            .get(&id)
            .expect("closure: a reachable object is present");
        if object::kind_of(&raw) == Ok(ObjectKind::Blob) {
            continue;
        }
        stack.extend(object::Object::decode(&raw).expect("decodes").children());
    }
    seen
}

/// Closure holds: every object's children are present.
fn assert_closed(store: &MemStore) {
    for (id, raw) in &store.objects {
        assert_eq!(ObjectId::hash(raw), *id, "object verifies");
        if object::kind_of(raw) == Ok(ObjectKind::Blob) {
            continue;
        }
        for c in object::Object::decode(raw).expect("decodes").children() {
            assert!(store.has(&c), "{id} refers to missing {c}");
        }
    }
}

fn bytes_of(store: &MemStore) -> u64 {
    store.objects.values().map(|b| b.len() as u64).sum()
}

/// B pulls A's history; the transfer is cut after `cut` bytes. Returns the net
/// (links gone) with A = 0, B = 1, and the bytes B held before.
fn cut_transfer(
    a_store: MemStore,
    b_store: MemStore,
    target: ObjectId,
    cut: u64,
) -> (TestNet, u64) {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(2);
    net.model.window = 256 * 1024;
    let before = bytes_of(&b_store);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), b_store, 2);
    // Checkpoints small enough that some land before the cut.
    net.nodes[b].node.set_checkpoint_bytes(8 * MIB as u64);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(120), |n| n.traffic().get(a, b) > cut));
    assert_ne!(
        head(&net, b),
        Some(target),
        "the transfer finished before the cut"
    );
    net.disconnect_all(b);
    (net, before)
}

/// The uninterrupted transfer's bytes, for comparison.
fn baseline(a_store: &MemStore, b_store: &MemStore, target: ObjectId) -> u64 {
    let mut net = TestNet::new();
    let a = net.add(cfg(), a_store.clone(), 1);
    let b = net.add(cfg(), b_store.clone(), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(120), |n| head(n, b) == Some(target)));
    net.traffic().get(a, b)
}

/// Reconnects B to A, waits for the sync, and checks the result. Returns the
/// bytes A sent on the resumed connection.
fn resume(net: &mut TestNet, target: ObjectId) -> u64 {
    let (a, b) = (0, 1);
    let t = net.traffic();
    net.connect(b, a);
    assert!(
        net.run_until(Duration::from_secs(120), |n| head(n, b) == Some(target)),
        "the resumed sync did not finish"
    );
    let second = net.bytes_since(&t, a, b);
    let want = reachable(&net.nodes[a].store, target);
    let have = reachable(&net.nodes[b].store, target);
    assert_eq!(want, have, "B holds A's whole history");
    assert_closed(&net.nodes[b].store);
    assert!(net.nodes[b].store.staged.is_empty(), "nothing left staged");
    assert!(
        net.nodes[b].store.resume.is_empty(),
        "the finished pull clears its resume record"
    );
    second
}

fn report(what: &str, full: u64, first: u64, landed: u64, second: u64) {
    eprintln!(
        "{what}: uninterrupted {full} B; cut after {first} B with {landed} B landed; \
         resumed transfer {second} B ({}% of uninterrupted)",
        second * 100 / full
    );
}

#[test]
fn a_cut_big_file_resumes_with_the_remainder() {
    let (mut a_store, base_seal) = base();
    let b_store = a_store.clone();
    let mut files = BTreeMap::new();
    files.insert("big.bin".to_owned(), pseudo(32 * MIB, 7));
    let big = seal_files(&mut a_store, &files, vec![base_seal], 2000, "big file");
    a_store.timelines.insert(main_tl(), big);
    let full = baseline(&a_store, &b_store, big);

    let (mut net, before) = cut_transfer(a_store, b_store, big, 20 * MIB as u64);
    let first = net.traffic().get(0, 1);
    let landed = bytes_of(&net.nodes[1].store) - before;
    assert!(
        landed >= 8 * MIB as u64,
        "checkpoints landed only {landed} B"
    );
    assert_eq!(
        head(&net, 1),
        Some(base_seal),
        "no head moved before the end"
    );
    assert_closed(&net.nodes[1].store);
    assert!(!net.nodes[1].store.resume.is_empty(), "a resume record");

    let second = resume(&mut net, big);
    report("32 MiB file", full, first, landed, second);
    assert!(
        second < full - landed + full / 20,
        "resumed {second} B: more than the remainder ({full} - {landed} landed)"
    );
    assert!(second * 10 < full * 6, "resumed {second} B of {full}");
}

#[test]
fn a_cut_long_history_resumes_with_the_remainder() {
    let (mut a_store, base_seal) = base();
    let b_store = a_store.clone();
    let mut files = BTreeMap::new();
    let mut parent = base_seal;
    // 48 seals, each adding a 512 KiB file (a single blob) and a small edit.
    for s in 0..48u64 {
        files.insert(format!("data/{s}.bin"), pseudo(512 * 1024, s + 100));
        files.insert("log.txt".to_owned(), format!("seal {s}\n").into_bytes());
        parent = seal_files(&mut a_store, &files, vec![parent], 3000 + s as i64, "more");
    }
    a_store.timelines.insert(main_tl(), parent);
    let full = baseline(&a_store, &b_store, parent);

    let (mut net, before) = cut_transfer(a_store, b_store, parent, 18 * MIB as u64);
    let first = net.traffic().get(0, 1);
    let landed = bytes_of(&net.nodes[1].store) - before;
    assert!(
        landed >= 8 * MIB as u64,
        "checkpoints landed only {landed} B"
    );
    assert_eq!(
        head(&net, 1),
        Some(base_seal),
        "no head moved before the end"
    );
    assert_closed(&net.nodes[1].store);

    let second = resume(&mut net, parent);
    report("48 seals", full, first, landed, second);
    assert!(
        second < full - landed + full / 20,
        "resumed {second} B: more than the remainder ({full} - {landed} landed)"
    );
    assert!(second * 10 < full * 6, "resumed {second} B of {full}");
}

/// A crash loses the node's memory: the record read back from the store
/// (written by `StoreRequest::Resume`) is what resumes the pull.
#[test]
fn a_restarted_node_resumes_from_the_stored_record() {
    let (mut a_store, base_seal) = base();
    let b_store = a_store.clone();
    let mut files = BTreeMap::new();
    files.insert("big.bin".to_owned(), pseudo(24 * MIB, 9));
    let big = seal_files(&mut a_store, &files, vec![base_seal], 2000, "big file");
    a_store.timelines.insert(main_tl(), big);
    let full = baseline(&a_store, &b_store, big);

    let (net, before) = cut_transfer(a_store, b_store, big, 18 * MIB as u64);
    let first = net.traffic().get(0, 1);
    // Both restart: fresh nodes (same keys) on the same stores; what was
    // staged but not landed is lost like in a crash.
    let a_store = net.nodes[0].store.clone();
    let mut b_store = net.nodes[1].store.clone();
    b_store.staged.clear();
    let landed = bytes_of(&b_store) - before;
    assert!(
        landed >= 8 * MIB as u64,
        "checkpoints landed only {landed} B"
    );
    assert!(!b_store.resume.is_empty(), "the record was written");
    let mut net = TestNet::new();
    net.add(cfg(), a_store, 1);
    net.add(cfg(), b_store, 2);
    let second = resume(&mut net, big);
    report("restart, 24 MiB file", full, first, landed, second);
    assert!(
        second < full - landed + full / 20,
        "resumed {second} B: more than the remainder ({full} - {landed} landed)"
    );
}

/// A peer that does not know `resume` ignores it and resends everything; the
/// pull still completes. Simulated by forgetting the record on the puller.
#[test]
fn without_a_record_the_pull_resends_and_completes() {
    let (mut a_store, base_seal) = base();
    let b_store = a_store.clone();
    let mut files = BTreeMap::new();
    files.insert("big.bin".to_owned(), pseudo(20 * MIB, 11));
    let big = seal_files(&mut a_store, &files, vec![base_seal], 2000, "big file");
    a_store.timelines.insert(main_tl(), big);
    let full = baseline(&a_store, &b_store, big);
    let (net, _) = cut_transfer(a_store, b_store, big, 14 * MIB as u64);
    let a_store = net.nodes[0].store.clone();
    let mut b_store = net.nodes[1].store.clone();
    b_store.staged.clear();
    b_store.resume.clear();
    let mut net = TestNet::new();
    net.add(cfg(), a_store, 1);
    net.add(cfg(), b_store, 2);
    let second = resume(&mut net, big);
    assert!(second + full / 20 > full, "resent {second} of {full}");
}

/// The record collapses complete subtrees into their root and never grows
/// past the limit a sender accepts.
#[test]
fn landed_roots_collapse_and_stay_bounded() {
    use ivaldi_core::sync::{LandedRoots, MAX_RESUME_HINTS};
    let id = |n: u32| ObjectId::hash(&n.to_be_bytes());
    let mut r = LandedRoots::default();
    r.land(id(1), &[]);
    r.land(id(2), &[]);
    r.land(id(3), &[id(1), id(2)]);
    assert_eq!(r.ids(), vec![id(3)], "a complete subtree is one root");
    for n in 10..(10 + 2 * MAX_RESUME_HINTS as u32) {
        r.land(id(n), &[]);
    }
    assert_eq!(r.len(), MAX_RESUME_HINTS);
    assert_eq!(
        r.ids().last().copied(),
        Some(id(9 + 2 * MAX_RESUME_HINTS as u32)),
        "the newest roots are kept"
    );
}
