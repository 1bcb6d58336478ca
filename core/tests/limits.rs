//! Abuse limits with an honest peer alongside: one peer hits a limit, the
//! node refuses it there and keeps serving the other peer.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::Command;
use ivaldi_core::store::MemStore;
use ivaldi_core::testkit::{TestNet, plaintext_record, seal_files};
use ivaldi_core::{ObjectId, TimelineName};

fn main_tl() -> TimelineName {
    TimelineName::new("main").unwrap()
}

fn plain() -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.encryption = false;
        c.connections.heartbeat_interval = Duration::from_secs(5);
    })
}

fn big_files(salt: &str) -> BTreeMap<String, Vec<u8>> {
    // Incompressible, so serving takes real (virtual) time on the link.
    let mut x: u64 = salt.bytes().fold(0x9e37_79b9, |h, b| h * 31 + u64::from(b));
    (0..40)
        .map(|i| {
            let data = (0..64 * 1024)
                .map(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (x >> 56) as u8
                })
                .collect();
            (format!("d/f{i}.bin"), data)
        })
        .collect()
}

#[test]
fn a_peer_flooding_sync_requests_is_capped_while_another_peer_syncs() {
    let mut a_store = MemStore::new("repo");
    let head: ObjectId = seal_files(&mut a_store, &big_files("v1"), vec![], 1000, "v1");
    a_store.timelines.insert(main_tl(), head);
    let mut net = TestNet::new();
    let a = net.add(plain(), a_store, 1);
    let hostile = net.add(plain(), MemStore::new("repo"), 2);
    let honest = net.add(plain(), MemStore::new("repo"), 3);
    net.connect(hostile, a);
    net.connect(honest, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[honest].store.timelines.get(&main_tl()) == Some(&head)
            && n.nodes[hostile].store.timelines.get(&main_tl()) == Some(&head)
    }));
    net.run_for(Duration::from_millis(200));
    // The hostile peer asks for the whole history forty times at once.
    let from = net.nodes[hostile].node.node_id().to_owned();
    let mut burst = Vec::new();
    for i in 0..40u64 {
        let json = format!(
            r#"{{"id":{},"type":"sync_request","from":"{from}","ts":0,"payload":{{"sync":{},"repo":"repo","wants":["{head}"],"haves":[]}}}}"#,
            9_000_000 + i,
            50_000 + i
        );
        burst.extend(plaintext_record(&json));
    }
    assert!(net.inject(hostile, a, burst));
    // Meanwhile the honest peer is told of a new seal and fetches it.
    let s = &mut net.nodes[a].store;
    let next = seal_files(s, &big_files("v2"), vec![head], 2000, "v2");
    s.timelines.insert(main_tl(), next);
    net.command(a, Command::LocalHeadsChanged);
    let mut most_serving = 0;
    let done = net.run_until(Duration::from_secs(20), |n| {
        most_serving = most_serving.max(
            n.nodes[a]
                .node
                .peers()
                .iter()
                .map(|p| p.serving)
                .max()
                .unwrap_or(0),
        );
        n.nodes[honest].store.timelines.get(&main_tl()) == Some(&next)
    });
    assert!(done, "the honest peer got the new seal");
    assert!(
        (1..=4).contains(&most_serving),
        "at most 4 requests served per connection, saw {most_serving}"
    );
    let refused = net.nodes[a]
        .node
        .stats()
        .messages_out
        .get("sync_response")
        .copied()
        .unwrap_or(0);
    assert!(
        refused >= 40,
        "every request was answered (most refused): {refused}"
    );
}

/// A peer that keeps sending pings but never reads the answers: the replies
/// pile up only to a bound, then the node drops that peer, and the other peer
/// keeps syncing.
#[test]
fn a_peer_that_never_reads_is_dropped_at_a_memory_bound() {
    let mut a_store = MemStore::new("repo");
    let head: ObjectId = seal_files(&mut a_store, &big_files("v1"), vec![], 1000, "v1");
    a_store.timelines.insert(main_tl(), head);
    let cfg = plain().with(|c| c.limits.max_message_size = 1024 * 1024);
    let mut net = TestNet::new();
    let a = net.add(cfg.clone(), a_store, 1);
    let hostile = net.add(cfg.clone(), MemStore::new("repo"), 2);
    let honest = net.add(cfg, MemStore::new("repo"), 3);
    net.connect(hostile, a);
    net.connect(honest, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        n.nodes[honest].store.timelines.get(&main_tl()) == Some(&head)
            && n.nodes[hostile].store.timelines.get(&main_tl()) == Some(&head)
    }));
    // Nothing A sends reaches the hostile peer any more (its window fills);
    // the hostile peer keeps pinging, and every ping queues a pong.
    net.hold(a, hostile);
    let from = net.nodes[hostile].node.node_id().to_owned();
    let mut peak = 0usize;
    let mut id = 20_000_000u64;
    for _ in 0..400 {
        let mut burst = Vec::new();
        for _ in 0..500 {
            id += 1;
            let json = format!(
                r#"{{"id":{id},"type":"heartbeat","from":"{from}","ts":0,"payload":{{"ping":{id}}}}}"#
            );
            burst.extend(plaintext_record(&json));
        }
        if !net.inject(hostile, a, burst) {
            break;
        }
        net.run_for(Duration::from_millis(10));
        peak = peak.max(
            net.nodes[a]
                .node
                .peers()
                .iter()
                .map(|p| p.queued_bytes)
                .max()
                .unwrap_or(0),
        );
        if net.nodes[a].node.stats().queue_overflows > 0 {
            break;
        }
    }
    assert_eq!(
        net.nodes[a].node.stats().queue_overflows,
        1,
        "the hostile peer was dropped"
    );
    assert!(
        peak <= 16 * 1024 * 1024 + 64 * 1024,
        "queued at most the bound: {peak}"
    );
    assert!(!net.connected(a, hostile));
    // The honest peer still gets a new seal.
    let s = &mut net.nodes[a].store;
    let next = seal_files(s, &big_files("v2"), vec![head], 2000, "v2");
    s.timelines.insert(main_tl(), next);
    net.command(a, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(20), |n| {
        n.nodes[honest].store.timelines.get(&main_tl()) == Some(&next)
    }));
}
