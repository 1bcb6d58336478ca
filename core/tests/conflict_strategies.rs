//! Each conflict strategy on a diverged timeline between two nodes: who ends up
//! with which head, what is kept, and that nothing is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::config::{ConflictStrategy, NodeConfig};
use ivaldi_core::node::Event;
use ivaldi_core::store::{MemStore, Store};
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

fn main_tl() -> TimelineName {
    TimelineName::new("main").unwrap()
}

fn cfg(strategy: ConflictStrategy) -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.sync.conflict_strategy = strategy;
        c.connections.heartbeat_interval = Duration::from_secs(5);
        c.sync.sync_interval = Duration::from_secs(10);
    })
}

fn base_files() -> BTreeMap<String, Vec<u8>> {
    let mut f = BTreeMap::new();
    f.insert(
        "shared.txt".to_owned(),
        b"one\ntwo\nthree\nfour\nfive\n".to_vec(),
    );
    f.insert("dir/other.txt".to_owned(), b"other\n".to_vec());
    f
}

/// Two stores sharing a base seal, each with its own seal on top. With
/// `clash`, both edit the same line (an unclean merge).
fn diverged(clash: bool) -> (MemStore, MemStore, ObjectId, ObjectId, ObjectId) {
    let mut a = MemStore::new("repo");
    let base = seal_files(&mut a, &base_files(), vec![], 100, "base");
    a.timelines.insert(main_tl(), base);
    let mut b = a.clone();
    let mut fa = base_files();
    fa.insert(
        "shared.txt".into(),
        b"ONE\ntwo\nthree\nfour\nfive\n".to_vec(),
    );
    fa.insert("a.txt".into(), b"from a\n".to_vec());
    let ha = seal_files(&mut a, &fa, vec![base], 200, "a");
    a.timelines.insert(main_tl(), ha);
    let mut fb = base_files();
    if clash {
        fb.insert(
            "shared.txt".into(),
            b"uno\ntwo\nthree\nfour\nfive\n".to_vec(),
        );
    } else {
        fb.insert(
            "shared.txt".into(),
            b"one\ntwo\nthree\nfour\nFIVE\n".to_vec(),
        );
    }
    fb.insert("b.txt".into(), b"from b\n".to_vec());
    let hb = seal_files(&mut b, &fb, vec![base], 300, "b");
    b.timelines.insert(main_tl(), hb);
    (a, b, base, ha, hb)
}

fn run(sa: ConflictStrategy, sb: ConflictStrategy, clash: bool) -> (TestNet, ObjectId, ObjectId) {
    let (a, b, _, ha, hb) = diverged(clash);
    let mut net = TestNet::new();
    net.add(cfg(sa), a, 1);
    net.add(cfg(sb), b, 2);
    net.connect(1, 0);
    net.run_for(Duration::from_secs(60));
    (net, ha, hb)
}

fn head(net: &TestNet, i: usize) -> ObjectId {
    net.nodes[i].store.timelines[&main_tl()]
}

/// Every seal either node ever had is still reachable on both.
fn nothing_lost(net: &TestNet, seals: &[ObjectId]) {
    for (i, n) in net.nodes.iter().enumerate() {
        let s = &n.store;
        let mut roots: Vec<ObjectId> = s.timelines.values().copied().collect();
        roots.extend(s.tracking.values().copied());
        roots.extend(s.kept.iter().map(|k| k.1));
        let reach = ivaldi_core::sync::closure(s, &roots).unwrap();
        for seal in seals {
            assert!(reach.contains(seal), "node {i} lost seal {seal:?}");
        }
    }
}

#[test]
fn manual_records_the_conflict_and_keeps_both_heads() {
    let (net, ha, hb) = run(ConflictStrategy::Manual, ConflictStrategy::Manual, false);
    assert_eq!(head(&net, 0), ha);
    assert_eq!(head(&net, 1), hb);
    assert_eq!(net.nodes[0].node.conflicts().len(), 1);
    assert_eq!(net.nodes[1].node.conflicts().len(), 1);
    nothing_lost(&net, &[ha, hb]);
}

#[test]
fn auto_merge_makes_one_identical_merge_seal_on_both_nodes() {
    let (net, ha, hb) = run(
        ConflictStrategy::AutoMerge,
        ConflictStrategy::AutoMerge,
        false,
    );
    let (m0, m1) = (head(&net, 0), head(&net, 1));
    assert_eq!(m0, m1, "both nodes converge on one head");
    let seal = net.nodes[0].store.seal(&m0).unwrap();
    let mut parents = vec![ha, hb];
    parents.sort();
    assert_eq!(seal.parents, parents, "a merge seal with both parents");
    // Exactly one merge seal exists, though both nodes merged.
    let merges = net.nodes[0]
        .store
        .objects
        .iter()
        .filter_map(|(_, b)| ivaldi_core::Seal::decode(b).ok())
        .filter(|s| s.parents.len() == 2)
        .count();
    assert_eq!(merges, 1);
    let tree = ivaldi_core::conflict::flatten(&net.nodes[1].store, &seal.tree).unwrap();
    assert!(tree.contains_key("a.txt") && tree.contains_key("b.txt"));
    let shared = &tree["shared.txt"].1;
    let bytes = net.nodes[1].store.get(shared).unwrap();
    assert_eq!(&bytes[1..], b"ONE\ntwo\nthree\nfour\nFIVE\n");
    nothing_lost(&net, &[ha, hb]);
}

#[test]
fn auto_merge_that_is_not_clean_falls_back_to_manual() {
    let (net, ha, hb) = run(
        ConflictStrategy::AutoMerge,
        ConflictStrategy::AutoMerge,
        true,
    );
    assert_eq!(head(&net, 0), ha);
    assert_eq!(head(&net, 1), hb);
    assert_eq!(net.nodes[0].node.conflicts().len(), 1);
    nothing_lost(&net, &[ha, hb]);
}

#[test]
fn prefer_remote_on_both_sides_agrees_on_the_newest_head() {
    let (net, ha, hb) = run(
        ConflictStrategy::PreferRemote,
        ConflictStrategy::PreferRemote,
        true,
    );
    assert_eq!(head(&net, 0), hb, "b's head is newer (time 300 > 200)");
    assert_eq!(head(&net, 1), hb);
    let kept = TimelineName::new(&format!("kept/main/{}", ha.short())).unwrap();
    assert_eq!(
        net.nodes[0].store.timelines.get(&kept),
        Some(&ha),
        "a's head is kept"
    );
    assert_eq!(
        net.nodes[1].store.timelines.get(&kept),
        Some(&ha),
        "and syncs like any other timeline"
    );
    nothing_lost(&net, &[ha, hb]);
}

#[test]
fn prefer_local_on_both_sides_agrees_on_the_newest_head() {
    let (net, ha, hb) = run(
        ConflictStrategy::PreferLocal,
        ConflictStrategy::PreferLocal,
        true,
    );
    assert_eq!(head(&net, 0), hb);
    assert_eq!(head(&net, 1), hb);
    nothing_lost(&net, &[ha, hb]);
}

#[test]
fn prefer_local_against_prefer_remote_keeps_the_preferring_side() {
    // Node 0 prefers remote, node 1 prefers local: both end on node 1's head.
    let (net, ha, hb) = run(
        ConflictStrategy::PreferRemote,
        ConflictStrategy::PreferLocal,
        true,
    );
    assert_eq!(head(&net, 0), hb);
    assert_eq!(head(&net, 1), hb);
    // And the other way round, where the older head wins because it is kept.
    let (net, ha2, hb2) = run(
        ConflictStrategy::PreferLocal,
        ConflictStrategy::PreferRemote,
        true,
    );
    assert_eq!(head(&net, 0), ha2);
    assert_eq!(head(&net, 1), ha2);
    nothing_lost(&net, &[ha2, hb2]);
    let _ = ha;
}

#[test]
fn prefer_remote_against_manual_follows_the_manual_node() {
    let (net, ha, hb) = run(
        ConflictStrategy::PreferRemote,
        ConflictStrategy::Manual,
        true,
    );
    assert_eq!(head(&net, 0), hb);
    assert_eq!(
        head(&net, 1),
        hb,
        "the manual node then simply fast-forwards"
    );
    nothing_lost(&net, &[ha, hb]);
}

#[test]
fn resolutions_are_announced_to_the_peer() {
    let (net, _, hb) = run(
        ConflictStrategy::PreferRemote,
        ConflictStrategy::PreferRemote,
        true,
    );
    let told = net.nodes[0]
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::ConflictResolved { head, .. } if *head == hb));
    assert!(told);
    let sent = net.nodes[0]
        .node
        .stats()
        .messages_out
        .get("conflict_resolve")
        .copied()
        .unwrap_or(0);
    assert!(sent >= 1, "conflict_resolve messages sent: {sent}");
}

fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(p, c)| ((*p).to_owned(), c.as_bytes().to_vec()))
        .collect()
}

/// Lands a merge's objects in a test store and returns the merge seal.
fn land_merge(store: &mut MemStore, a: &ObjectId, b: &ObjectId) -> ObjectId {
    let m = ivaldi_core::conflict::auto_merge(store, a, b)
        .unwrap()
        .expect("a clean merge");
    for (_, bytes) in m.objects {
        store.insert(bytes);
    }
    m.seal
}

fn relate(store: &MemStore, local: ObjectId, remote: ObjectId) -> ivaldi_core::history::Relation {
    ivaldi_core::history::relate(Some(local), remote, &mut |id| store.seal(id)).unwrap()
}

/// Seal times come from the authors' clocks. A seal made on a clock that runs
/// behind must not make an older seal "the newest common ancestor": the merge
/// base is found in the graph, and a file only one side changed since the real
/// base merges cleanly. (Picking the base by time made the simulator's
/// split-brain runs under auto_merge fall back to manual and never converge.)
#[test]
fn merge_base_comes_from_the_graph_not_the_clocks() {
    let mut s = MemStore::new("repo");
    let root = seal_files(&mut s, &files(&[("f.txt", "old\n")]), vec![], 1000, "root");
    // Made later, on a clock 15 minutes behind.
    let base = seal_files(
        &mut s,
        &files(&[("f.txt", "base\n")]),
        vec![root],
        100,
        "base",
    );
    let a = seal_files(
        &mut s,
        &files(&[("f.txt", "a's rewrite\n")]),
        vec![base],
        200,
        "a",
    );
    let b = seal_files(
        &mut s,
        &files(&[("f.txt", "base\n"), ("g.txt", "b\n")]),
        vec![base],
        300,
        "b",
    );
    assert_eq!(
        relate(&s, a, b),
        ivaldi_core::history::Relation::Diverged { base: Some(base) }
    );
    let m = land_merge(&mut s, &a, &b);
    let seal = s.seal(&m).unwrap();
    let tree = ivaldi_core::conflict::flatten(&s, &seal.tree).unwrap();
    assert_eq!(&s.get(&tree["f.txt"].1).unwrap()[1..], b"a's rewrite\n");
    assert!(tree.contains_key("g.txt"));
}

/// Three diverged heads merged pairwise in different orders, as different nodes
/// do when they meet different peers first: every order ends with the same seal
/// (parents: the three heads), and an older merge is replaced by the newer one
/// (a fast-forward), not merged with it again. This is what bounds merges.
#[test]
fn merges_in_any_order_make_one_seal_and_replace_older_merges() {
    let mut s = MemStore::new("repo");
    let base = seal_files(
        &mut s,
        &files(&[("common.txt", "c\n")]),
        vec![],
        100,
        "base",
    );
    let mut heads = Vec::new();
    for (i, name) in ["x", "y", "z"].iter().enumerate() {
        let f = files(&[("common.txt", "c\n"), (&format!("{name}.txt"), name)]);
        heads.push(seal_files(&mut s, &f, vec![base], 200 + i as i64, name));
    }
    let (x, y, z) = (heads[0], heads[1], heads[2]);
    let xy = land_merge(&mut s, &x, &y);
    let xz = land_merge(&mut s, &x, &z);
    let yx = land_merge(&mut s, &y, &x);
    assert_eq!(xy, yx, "a merge does not depend on which side merges");
    let xy_z = land_merge(&mut s, &xy, &z);
    let xz_y = land_merge(&mut s, &xz, &y);
    let xy_xz = land_merge(&mut s, &xy, &xz);
    assert_eq!(xy_z, xz_y);
    assert_eq!(xy_z, xy_xz);
    let mut parents = vec![x, y, z];
    parents.sort();
    assert_eq!(s.seal(&xy_z).unwrap().parents, parents);
    // The older, smaller merges are superseded by the larger one, both ways.
    use ivaldi_core::history::Relation;
    assert_eq!(relate(&s, xy, xy_z), Relation::Behind);
    assert_eq!(relate(&s, xz, xy_z), Relation::Behind);
    assert_eq!(relate(&s, xy_z, xy), Relation::Ahead);
    // Two merges of different work are still a divergence.
    assert!(matches!(relate(&s, xy, xz), Relation::Diverged { .. }));
    // A user's seal on top of a merge is never replaced.
    let mut f = files(&[("common.txt", "c\n"), ("x.txt", "x"), ("y.txt", "y")]);
    f.insert("u.txt".into(), b"user\n".to_vec());
    let u = seal_files(&mut s, &f, vec![xy], 400, "user on xy");
    assert!(matches!(relate(&s, u, xy_z), Relation::Diverged { .. }));
    let tree = ivaldi_core::conflict::flatten(&s, &s.seal(&xy_z).unwrap().tree).unwrap();
    for name in ["x.txt", "y.txt", "z.txt", "common.txt"] {
        assert!(tree.contains_key(name), "{name} in the merge");
    }
}

/// A merge skipped because the user sealed while the peer's objects were
/// landing is decided again at the next interval sync, even though the peer
/// has nothing new (here the peer is `manual`, so it never merges for us).
#[test]
fn a_merge_skipped_because_the_head_moved_is_retried() {
    let (a, b, _, ha, hb) = diverged(false);
    let mut net = TestNet::new();
    let na = net.add(cfg(ConflictStrategy::Manual), a, 1);
    let nb = net.add(cfg(ConflictStrategy::AutoMerge), b, 2);
    net.nodes[nb].store_delay = Duration::from_secs(1);
    net.connect(nb, na);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[nb]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::SyncStarted { .. }))
    }));
    // The user seals on B while A's objects are still landing.
    net.run_for(Duration::from_millis(300));
    let mut fb = base_files();
    fb.insert("b.txt".into(), b"from b, again\n".to_vec());
    let s = &mut net.nodes[nb].store;
    let hb2 = seal_files(s, &fb, vec![hb], 400, "b2");
    s.timelines.insert(main_tl(), hb2);
    net.run_for(Duration::from_secs(30));
    let h = head(&net, nb);
    assert_ne!(h, hb2, "B merged after all");
    let st = &net.nodes[nb].store;
    let merge = ivaldi_core::object::Seal::decode(&st.get(&h).unwrap()).unwrap();
    let mut parents = merge.parents.clone();
    parents.sort();
    let mut want = vec![ha, hb2];
    want.sort();
    assert_eq!(parents, want, "the merge joins A's head and B's new seal");
}
