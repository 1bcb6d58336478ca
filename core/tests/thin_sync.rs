//! Thin deltas on the wire (`zstd-delta`): what a sync costs with and without
//! the capability, and that a peer without it still syncs.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::Command;
use ivaldi_core::store::MemStore;
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

fn main_tl() -> TimelineName {
    TimelineName::new("main").unwrap()
}

fn cfg(without_deltas: bool) -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.heartbeat_interval = Duration::from_secs(5);
        c.sync.sync_interval = Duration::from_secs(30);
        c.connections.features_off = if without_deltas {
            vec!["zstd-delta".into()]
        } else {
            Vec::new()
        };
    })
}

/// Three long text files (the `Cargo.lock` pattern) and a few small ones.
fn text(file: usize, version: usize) -> Vec<u8> {
    (0..1500)
        .map(|i| {
            if i % 300 == version % 300 {
                format!("name = \"crate-{file}-{i}\" version = \"1.{version}.0\"\n")
            } else {
                format!("name = \"crate-{file}-{i}\" version = \"0.{}.0\"\n", i % 17)
            }
        })
        .collect::<String>()
        .into_bytes()
}

fn files(versions: [usize; 3]) -> BTreeMap<String, Vec<u8>> {
    let mut f: BTreeMap<String, Vec<u8>> = (0..3)
        .map(|i| (format!("locks/lock{i}.txt"), text(i, versions[i])))
        .collect();
    for i in 0..20 {
        f.insert(
            format!("src/mod{i}.rs"),
            format!("fn f{i}() {{}}\n").into_bytes(),
        );
    }
    f
}

fn history(store: &mut MemStore, seals: usize) -> (ObjectId, [usize; 3]) {
    let mut parent = Vec::new();
    let mut head = ObjectId([0; 32]);
    let mut v = [0usize; 3];
    for s in 0..seals {
        v[s % 3] += 1;
        head = seal_files(
            store,
            &files(v),
            parent,
            1000 + s as i64,
            &format!("seal {s}"),
        );
        parent = vec![head];
    }
    store.timelines.insert(main_tl(), head);
    (head, v)
}

/// Bytes from A to B for a full sync of `seals` seals, then for one more seal
/// that edits one line of a long file; both runs end with B on A's head and
/// every object of A's history.
fn costs(a_without: bool, b_without: bool, seals: usize) -> (u64, u64) {
    let mut net = TestNet::new();
    let mut a_store = MemStore::new("repo");
    let (head, mut v) = history(&mut a_store, seals);
    let a = net.add(cfg(a_without), a_store, 1);
    let b = net.add(cfg(b_without), MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.nodes[b].store.timelines.get(&main_tl()) == Some(&head)
    }));
    assert_eq!(
        net.nodes[b].store.objects.len(),
        net.nodes[a].store.objects.len()
    );
    let full = net.bytes_between(a, b);
    let before = net.traffic();
    v[1] += 1;
    let s = &mut net.nodes[a].store;
    let next = seal_files(s, &files(v), vec![head], 5000, "one line");
    s.timelines.insert(main_tl(), next);
    net.command(a, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(10), |n| {
        n.nodes[b].store.timelines.get(&main_tl()) == Some(&next)
    }));
    for (id, bytes) in &net.nodes[a].store.objects {
        assert_eq!(net.nodes[b].store.objects.get(id), Some(bytes), "{id}");
    }
    (full, net.bytes_since(&before, a, b))
}

#[test]
fn deltas_make_a_full_sync_and_a_one_line_seal_cheap() {
    let (full, one) = costs(false, false, 30);
    let (full_whole, one_whole) = costs(true, true, 30);
    // 30 seals of three 60 KB files: whole (lz4) objects cost most of a file
    // per seal; deltas cost the edits.
    assert!(
        full * 4 < full_whole,
        "full sync: {full} vs {full_whole} bytes"
    );
    assert!(one * 4 < one_whole, "one seal: {one} vs {one_whole} bytes");
    assert!(one < 4096, "one seal of a one-line edit: {one} bytes");
}

#[test]
fn a_peer_without_the_capability_still_syncs_both_ways() {
    let (full_a, one_a) = costs(true, false, 12);
    let (full_b, one_b) = costs(false, true, 12);
    // Whole objects both times: the capability is used only when both offer
    // it (the handshakes differ by a few bytes of feature names).
    assert!(full_a.abs_diff(full_b) < 200, "{full_a} vs {full_b}");
    assert_eq!(one_a, one_b);
    let (full, _) = costs(false, false, 12);
    assert!(full * 3 < full_a, "{full} with deltas vs {full_a} without");
}
