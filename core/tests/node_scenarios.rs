//! Protocol scenarios from the issue's requirements, each driven over the virtual
//! test network: trust, duplicate connections, incremental and large transfers,
//! corrupt data, heartbeats, timeouts, reconnects, encryption and relaying.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ivaldi_core::NodeId;
use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::{Command, ConnState, Event, PeerStatus};
use ivaldi_core::rng::Rng;
use ivaldi_core::store::{MemStore, Store};
use ivaldi_core::testkit::{TestNet, plaintext_record, seal_files};
use ivaldi_core::time::Instant;
use ivaldi_core::{ObjectId, ObjectKind, TimelineName};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

fn main_tl() -> TimelineName {
    TimelineName::new("main").expect("valid name")
}

fn cfg() -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.heartbeat_interval = Duration::from_secs(5);
        c.sync.sync_interval = Duration::from_secs(30);
    })
}

fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Rng::from_u64(seed).fill(&mut v);
    v
}

/// A small repository: `seals` seals over 20 text files on `main`.
fn small_history(store: &mut MemStore, seals: usize) -> ObjectId {
    let mut files: BTreeMap<String, Vec<u8>> = (0..20)
        .map(|i| {
            (
                format!("src/file{i}.txt"),
                format!("line of file {i}\n").repeat(30).into_bytes(),
            )
        })
        .collect();
    let mut parents = Vec::new();
    let mut head = ObjectId([0; 32]);
    for s in 0..seals {
        files.insert(format!("src/file{s}.txt"), format!("edit {s}").into_bytes());
        head = seal_files(
            store,
            &files,
            parents,
            1000 + s as i64,
            &format!("seal {s}"),
        );
        parents = vec![head];
    }
    store.timelines.insert(main_tl(), head);
    head
}

/// Adds one seal on top of `parent` with `files` plus one large pseudo-random
/// file, and moves `main` there.
fn seal_big_file(
    store: &mut MemStore,
    parent: ObjectId,
    size: usize,
    seed: u64,
) -> (ObjectId, BTreeMap<String, Vec<u8>>) {
    let mut files = BTreeMap::new();
    files.insert("big.bin".to_owned(), pseudo(size, seed));
    let head = seal_files(store, &files, vec![parent], 9000, "big file");
    store.timelines.insert(main_tl(), head);
    (head, files)
}

fn head(net: &TestNet, i: usize) -> Option<ObjectId> {
    net.nodes[i].store.timelines.get(&main_tl()).copied()
}

fn events(net: &TestNet, i: usize) -> impl Iterator<Item = &(Instant, Event)> {
    net.nodes[i].events.iter()
}

/// When node `i` first reported an event matching `pred`.
fn first_event(net: &TestNet, i: usize, pred: impl Fn(&Event) -> bool) -> Option<Instant> {
    events(net, i).find(|(_, e)| pred(e)).map(|(t, _)| *t)
}

fn count_events(net: &TestNet, i: usize, pred: impl Fn(&Event) -> bool) -> usize {
    events(net, i).filter(|(_, e)| pred(e)).count()
}

fn id(net: &TestNet, i: usize) -> NodeId {
    net.nodes[i].node.node_id()
}

/// Node `i`'s connections whose authenticated peer is node `j`.
fn conns_to(net: &TestNet, i: usize, j: usize) -> Vec<PeerStatus> {
    let peer = id(net, j);
    net.nodes[i]
        .node
        .peers()
        .into_iter()
        .filter(|p| p.peer == Some(peer))
        .collect()
}

fn ready_conns_to(net: &TestNet, i: usize, j: usize) -> Vec<PeerStatus> {
    conns_to(net, i, j)
        .into_iter()
        .filter(|p| p.state == ConnState::Ready)
        .collect()
}

fn peer_connected_with(net: &TestNet, i: usize, j: usize) -> usize {
    let peer = id(net, j);
    count_events(
        net,
        i,
        |e| matches!(e, Event::PeerConnected { peer: p, .. } if *p == peer),
    )
}

fn set_trusted(net: &mut TestNet, i: usize, trusted: Vec<NodeId>) {
    let c = net.nodes[i].node.config().clone().with(|c| {
        c.access.trusted_peers = trusted
            .iter()
            .map(|t| ivaldi_core::trust::TrustedPeer::write(*t))
            .collect()
    });
    c.validate().expect("valid config");
    let cmd = net.command(i, Command::SetConfig(Box::new(c)));
    assert_eq!(net.command_result(i, cmd).map(|r| r.0), Some(true));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ----- 1. trust and self-connections -----

#[test]
fn untrusted_key_is_refused() {
    let mut net = TestNet::strangers();
    let mut a_store = MemStore::new("repo");
    small_history(&mut a_store, 3);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    // Some other, valid node id: not B's.
    let stranger = NodeId([0xab; 32]);
    assert_ne!(stranger, id(&net, b));
    set_trusted(&mut net, a, vec![stranger]);
    let a_id = id(&net, a);
    set_trusted(&mut net, b, vec![a_id]);

    let cmd = net.connect(b, a);
    net.run_for(Duration::from_secs(30));

    let (ok, msg) = net.command_result(b, cmd).expect("connect answered");
    assert!(!ok, "B's connect must fail: {msg}");
    assert!(
        conns_to(&net, a, b).is_empty(),
        "A keeps no connection to B"
    );
    assert!(
        conns_to(&net, b, a).is_empty(),
        "B keeps no connection to A"
    );
    assert_eq!(
        count_events(&net, a, |e| matches!(e, Event::PeerConnected { .. })),
        0
    );
    assert_eq!(
        count_events(&net, b, |e| matches!(e, Event::PeerConnected { .. })),
        0
    );
    assert!(
        net.nodes[b].store.objects.is_empty(),
        "no objects exchanged"
    );
    assert!(net.nodes[b].store.timelines.is_empty());
    assert_eq!(net.nodes[a].node.stats().objects_out, 0);
    // A held B until its first message (it might have been an invitation's
    // `redeem`); B's hello got it refused, and A never answered with its own.
    assert!(
        !net.nodes[a]
            .node
            .stats()
            .messages_out
            .contains_key("handshake"),
        "A never sent B its hello: {:?}",
        net.nodes[a].node.stats().messages_out
    );
}

#[test]
fn trusted_key_is_accepted() {
    let mut net = TestNet::strangers();
    let mut a_store = MemStore::new("repo");
    let h = small_history(&mut a_store, 3);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    let b_id = id(&net, b);
    // Listed in upper case: ids compare without regard to case.
    let upper = format!("\"{}\"", b_id.to_hex().to_uppercase());
    let b_upper: NodeId = serde_json::from_str(&upper).unwrap();
    set_trusted(&mut net, a, vec![NodeId([0xab; 32]), b_upper]);
    let a_id = id(&net, a);
    set_trusted(&mut net, b, vec![a_id]);

    let cmd = net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(h)));
    assert_eq!(net.command_result(b, cmd).map(|r| r.0), Some(true));
    assert!(net.connected(a, b) && net.connected(b, a));
    assert_eq!(peer_connected_with(&net, a, b), 1);
}

#[test]
fn untrusted_listener_is_refused_by_the_dialer() {
    // Trust is checked on outbound connections too: B dials A, which B does not
    // trust.
    let mut net = TestNet::strangers();
    let mut a_store = MemStore::new("repo");
    small_history(&mut a_store, 2);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    set_trusted(&mut net, b, vec![NodeId([0xcd; 32])]);
    let b_id = id(&net, b);
    set_trusted(&mut net, a, vec![b_id]);
    let cmd = net.connect(b, a);
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.command_result(b, cmd).map(|r| r.0), Some(false));
    assert!(conns_to(&net, a, b).is_empty() && conns_to(&net, b, a).is_empty());
    assert_eq!(
        count_events(&net, a, |e| matches!(e, Event::PeerConnected { .. })),
        0
    );
    assert!(net.nodes[b].store.objects.is_empty());
}

#[test]
fn node_never_connects_to_itself() {
    let mut net = TestNet::new();
    let mut store = MemStore::new("repo");
    small_history(&mut store, 2);
    let a = net.add(cfg(), store, 1);
    let own = net.nodes[a].addr;

    // A one-off dial of its own address: the test network lets it through, and
    // the node must notice the handshake's peer key is its own.
    let cmd = net.command(a, Command::Connect(own));
    net.run_for(Duration::from_secs(5));
    let (ok, msg) = net.command_result(a, cmd).expect("connect answered");
    assert!(!ok, "connecting to itself must fail");
    assert!(msg.contains("connected to itself"), "{msg}");
    assert!(net.nodes[a].node.peers().is_empty(), "no connection left");
    assert_eq!(
        count_events(&net, a, |e| matches!(e, Event::PeerConnected { .. })),
        0
    );
    assert_eq!(net.nodes[a].dials, 1);

    // Remembered as a peer: dialled once, recognised, never redialled.
    let cmd = net.command(a, Command::AddPeer(own));
    assert_eq!(net.command_result(a, cmd).map(|r| r.0), Some(true));
    net.run_for(Duration::from_secs(600));
    assert_eq!(
        net.nodes[a].dials, 2,
        "its own address must not be redialled"
    );
    assert!(net.nodes[a].node.peers().is_empty());
    assert_eq!(
        count_events(&net, a, |e| matches!(e, Event::PeerConnected { .. })),
        0
    );
}

#[test]
fn own_address_in_known_peers_is_dialled_once() {
    let own = ivaldi_core::testkit::addr_of(0);
    let c = cfg().with(|c| {
        c.connections.known_peers = vec![own.to_string()];
        c.connections.reconnect_min = Duration::from_millis(100);
        c.connections.reconnect_max = Duration::from_secs(2);
    });
    let mut net = TestNet::new();
    let a = net.add(c, MemStore::new("repo"), 1);
    assert_eq!(net.nodes[a].addr, own);
    net.run_for(Duration::from_secs(600));
    assert_eq!(net.nodes[a].dials, 1);
    assert!(net.nodes[a].node.peers().is_empty());
}

// ----- 2. duplicate connections -----

#[test]
fn simultaneous_dial_keeps_exactly_one_connection() {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(10);
    let mut a_store = MemStore::new("repo");
    let h = small_history(&mut a_store, 3);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    // Both dial at the same virtual instant.
    net.connect(a, b);
    net.connect(b, a);
    net.run_for(Duration::from_secs(2));

    let at_a = ready_conns_to(&net, a, b);
    let at_b = ready_conns_to(&net, b, a);
    assert_eq!(at_a.len(), 1, "A: {at_a:?}");
    assert_eq!(at_b.len(), 1, "B: {at_b:?}");
    assert_eq!(conns_to(&net, a, b).len(), 1, "the loser is gone at A");
    assert_eq!(conns_to(&net, b, a).len(), 1, "the loser is gone at B");
    // Both ends kept the same link.
    assert_eq!(net.link_peer(a, at_a[0].conn), Some((b, at_b[0].conn)));
    assert_eq!(net.link_peer(b, at_b[0].conn), Some((a, at_a[0].conn)));
    // It is the one dialled by the smaller node id.
    let a_dialled = id(&net, a) < id(&net, b);
    assert_eq!(
        at_a[0].direction,
        if a_dialled {
            ivaldi_core::node::Direction::Outbound
        } else {
            ivaldi_core::node::Direction::Inbound
        }
    );
    assert_eq!(head(&net, b), Some(h), "the surviving link syncs");

    // And it stays that way: no flapping, no redial.
    net.run_for(Duration::from_secs(120));
    assert_eq!(ready_conns_to(&net, a, b).len(), 1);
    assert_eq!(ready_conns_to(&net, b, a).len(), 1);
    assert_eq!(ready_conns_to(&net, a, b)[0].conn, at_a[0].conn);
    assert_eq!(net.nodes[a].dials + net.nodes[b].dials, 2);
}

#[test]

fn simultaneous_dial_reports_both_connects_ok() {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(10);
    let a = net.add(cfg(), MemStore::new("repo"), 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    let ca = net.connect(a, b);
    let cb = net.connect(b, a);
    net.run_for(Duration::from_secs(2));
    assert!(net.connected(a, b) && net.connected(b, a));
    assert_eq!(
        net.command_result(a, ca).map(|r| r.0),
        Some(true),
        "{:?}",
        net.command_result(a, ca)
    );
    assert_eq!(
        net.command_result(b, cb).map(|r| r.0),
        Some(true),
        "{:?}",
        net.command_result(b, cb)
    );
}

// ----- 3. incremental sync -----

/// 300 files of 2–4 KiB (text, in 10 directories).
fn wide_files() -> BTreeMap<String, Vec<u8>> {
    (0..300)
        .map(|i| {
            let len = 2048 + (i * 37) % 2048;
            let line = format!("dir{} file {i} — some ordinary source text\n", i % 10);
            let mut content = line.repeat(len / line.len() + 1).into_bytes();
            content.truncate(len);
            (format!("dir{}/file{i:03}.txt", i % 10), content)
        })
        .collect()
}

#[test]
fn incremental_sync_sends_about_the_change() {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(10);
    let mut a_store = MemStore::new("repo");
    let mut files = wide_files();
    let mut parents = Vec::new();
    let mut h = ObjectId([0; 32]);
    for s in 0..30 {
        let i = (s * 7) % 300;
        let k = format!("dir{}/file{i:03}.txt", i % 10);
        assert!(files.contains_key(&k));
        files.insert(k, format!("edit {s}\n").repeat(100).into_bytes());
        h = seal_files(
            &mut a_store,
            &files,
            parents,
            1000 + s,
            &format!("seal {s}"),
        );
        parents = vec![h];
    }
    a_store.timelines.insert(main_tl(), h);
    let total_objects = a_store.objects.len();
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(10), |n| head(n, b) == Some(h)));
    assert_eq!(net.nodes[b].store.objects.len(), total_objects);
    let full = net.traffic().get(a, b);
    net.run_for(Duration::from_millis(100));

    // One seal changing three files (4 KiB of incompressible bytes each), in
    // three directories.
    let changed: Vec<(String, Vec<u8>)> = (0..3)
        .map(|k| {
            (
                format!("dir{}/file{:03}.txt", k * 3, k * 3 + 100),
                pseudo(4 * KIB, 70 + k as u64),
            )
        })
        .collect();
    let changed_bytes: usize = changed.iter().map(|(_, c)| c.len()).sum();
    for (p, c) in &changed {
        assert!(files.contains_key(p), "{p} exists");
        files.insert(p.clone(), c.clone());
    }
    let next = seal_files(
        &mut net.nodes[a].store,
        &files,
        vec![h],
        5000,
        "three files",
    );
    net.nodes[a].store.timelines.insert(main_tl(), next);

    let before = net.traffic();
    let requests_before = net.nodes[b]
        .node
        .stats()
        .messages_out
        .get("sync_request")
        .copied()
        .unwrap_or(0);
    let served_before = net.nodes[a].node.stats().objects_out;
    let t0 = net.now;
    net.command(a, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(next)));
    let elapsed = net.now.saturating_since(t0);
    let down = net.bytes_since(&before, a, b);
    let up = net.bytes_since(&before, b, a);
    let requests = net.nodes[b].node.stats().messages_out["sync_request"] - requests_before;
    let objects = net.nodes[a].node.stats().objects_out - served_before;
    println!(
        "incremental sync: {down} bytes A→B, {up} bytes B→A for {changed_bytes} changed bytes \
         ({objects} objects, {requests} request, {elapsed:?}); the full sync was {full} bytes"
    );
    assert!(
        (down as usize) < 2 * changed_bytes + 16 * KIB,
        "{down} bytes sent for {changed_bytes} changed bytes"
    );
    assert!(up < 4 * KIB as u64, "the request is small: {up} bytes");
    assert_eq!(requests, 1, "one sync request");
    // Seal, root tree, three directory trees, three blobs.
    assert_eq!(objects, 8, "only the new objects are sent");
    // The announcement, then one round trip.
    assert!(
        elapsed <= Duration::from_millis(30) + Duration::from_millis(1),
        "{elapsed:?}"
    );
}

// ----- 4. large objects -----

#[test]
fn large_object_streams_with_bounded_buffers() {
    let wall = std::time::Instant::now();
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(2);
    let window = net.model.window;
    let mut a_store = MemStore::new("repo");
    let base = small_history(&mut a_store, 1);
    let (big, _) = seal_big_file(&mut a_store, base, 64 * MIB, 64);
    let chunks = a_store
        .objects
        .values()
        .filter(|o| ivaldi_core::object::kind_of(o) == Ok(ObjectKind::Blob))
        .count();
    let total_objects = a_store.objects.len();
    let built = wall.elapsed();
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    let t0 = net.now;
    assert!(net.run_until(Duration::from_secs(120), |n| head(n, b) == Some(big)));
    let virtual_time = net.now.saturating_since(t0);
    assert_eq!(net.nodes[b].store.objects.len(), total_objects);
    for (id, enc) in &net.nodes[a].store.objects {
        assert_eq!(net.nodes[b].store.objects.get(id), Some(enc), "{id}");
    }
    // What each node held for the connection: queued between calls, and handed
    // over by one `poll_transmit` call.
    let held = |i: usize| net.nodes[i].peak_queued.max(net.nodes[i].peak_transmit);
    let (peak_a, peak_b) = (held(a), held(b));
    println!(
        "64 MiB: {total_objects} objects ({chunks} blobs), built in {built:?}, synced in {:?} wall / \
         {virtual_time:?} virtual; peak in flight {} KiB (window {} KiB); A queued at most {} KiB \
         and handed over at most {} KiB at once; B {} KiB / {} KiB",
        wall.elapsed() - built,
        net.peak_in_flight / KIB,
        window / KIB,
        net.nodes[a].peak_queued / KIB,
        net.nodes[a].peak_transmit / KIB,
        net.nodes[b].peak_queued / KIB,
        net.nodes[b].peak_transmit / KIB,
    );
    // The sender produces nothing once the window is full, so the window is
    // overshot by at most one transmit: a 256 KiB slice of the connection's
    // buffer, plus the object frame (at most 1 MiB of objects and its framing)
    // that took the buffer past the slice.
    let one_transmit = 256 * KIB + MIB + 16 * KIB;
    assert!(
        net.peak_in_flight <= window + one_transmit,
        "peak in flight {} with a window of {window}",
        net.peak_in_flight
    );
    assert!(
        peak_a <= 2 * MIB,
        "A held {peak_a} bytes for the connection"
    );
    assert!(
        peak_b <= 2 * MIB,
        "B held {peak_b} bytes for the connection"
    );
}

// ----- 5. corrupt objects -----

#[test]
fn corrupt_object_is_refused_and_peer_disconnected() {
    let mut net = TestNet::new();
    let mut a_store = MemStore::new("repo");
    small_history(&mut a_store, 3);
    // Keep the key, change the value: A serves bytes that do not hash to the id.
    let bad = a_store
        .objects
        .iter()
        .find(|(_, o)| ivaldi_core::object::kind_of(o) == Ok(ObjectKind::Blob) && o.len() > 100)
        .map(|(id, _)| *id)
        .expect("a blob");
    let enc = a_store.objects.get_mut(&bad).expect("present");
    let last = enc.len() - 1;
    enc[last] ^= 0x5a;
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    let cmd = net.connect(b, a);
    net.run_for(Duration::from_secs(30));

    assert_eq!(net.command_result(b, cmd).map(|r| r.0), Some(true));
    let violation = events(&net, b).find_map(|(_, e)| match e {
        Event::ProtocolViolation { reason, peer, .. } => Some((reason.clone(), *peer)),
        _ => None,
    });
    let (reason, peer) = violation.expect("B records a protocol violation");
    assert!(reason.contains("bad object"), "{reason}");
    assert!(reason.contains(&bad.to_string()), "{reason}");
    assert_eq!(peer, Some(id(&net, a)));
    assert_eq!(net.nodes[b].node.stats().violations, 1);
    assert!(
        conns_to(&net, b, a).is_empty() && conns_to(&net, a, b).is_empty(),
        "the connection is closed"
    );
    assert_eq!(
        count_events(&net, a, |e| matches!(e, Event::PeerDisconnected { .. })),
        1
    );
    assert!(first_event(&net, b, |e| matches!(e, Event::SyncFailed { .. })).is_some());
    // Nothing of the batch landed.
    assert!(
        net.nodes[b].store.timelines.is_empty(),
        "no timeline created"
    );
    assert!(!net.nodes[b].store.has(&bad), "no bad object stored");
    assert!(
        net.nodes[b].store.objects.is_empty(),
        "{} objects landed",
        net.nodes[b].store.objects.len()
    );
    assert!(
        net.nodes[b].store.staged.is_empty(),
        "the batch was aborted"
    );
    assert!(net.nodes[b].store.tracking.is_empty());
}

#[test]
fn tampered_ciphertext_is_refused_and_peer_disconnected() {
    let mut net = TestNet::new();
    let a = net.add(cfg(), MemStore::new("repo"), 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(1), |n| n.connected(a, b)
        && n.connected(b, a)));
    let armed = Arc::new(AtomicBool::new(true));
    let flag = armed.clone();
    net.tamper = Some(Box::new(move |from, _to, bytes: &mut Vec<u8>| {
        if from == a && bytes.len() > 4 && flag.swap(false, Ordering::SeqCst) {
            bytes[3] ^= 1;
        }
    }));
    // The next heartbeat from A is flipped in flight.
    net.run_for(Duration::from_secs(6));
    assert!(!armed.load(Ordering::SeqCst), "something was tampered with");
    let reason = events(&net, b)
        .find_map(|(_, e)| match e {
            Event::ProtocolViolation { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("violation");
    assert!(reason.contains("secure channel"), "{reason}");
    assert!(conns_to(&net, b, a).is_empty() && conns_to(&net, a, b).is_empty());
}

// ----- 6. heartbeats -----

#[test]
fn heartbeat_timeout_declares_peer_lost() {
    let mut net = TestNet::new();
    let latency = Duration::from_millis(20);
    net.model.latency = latency;
    let c = cfg();
    let (interval, misses) = (
        c.connections.heartbeat_interval,
        c.connections.heartbeat_misses,
    );
    let a = net.add(c.clone(), MemStore::new("repo"), 1);
    let b = net.add(c, MemStore::new("repo"), 2);
    net.connect(b, a);
    // Long enough for a ping and its pong.
    net.run_for(interval + Duration::from_secs(1));
    let at_a = ready_conns_to(&net, a, b);
    assert_eq!(at_a.len(), 1);
    let rtt = at_a[0].rtt_micros.expect("RTT measured");
    println!("RTT at A: {rtt} µs with {latency:?} latency each way");
    let expected = 2 * latency.as_micros() as u64;
    assert!(
        rtt >= expected && rtt <= expected + 1000,
        "rtt {rtt} µs, expected about {expected}"
    );
    assert!(ready_conns_to(&net, b, a)[0].rtt_micros.is_some());

    net.freeze(b);
    let frozen_at = net.now;
    assert!(net.run_until(interval * (misses + 2), |n| {
        first_event(n, a, |e| matches!(e, Event::PeerDisconnected { .. })).is_some()
    }));
    let lost_at = first_event(&net, a, |e| matches!(e, Event::PeerDisconnected { .. }))
        .expect("disconnected");
    let after = lost_at.saturating_since(frozen_at);
    println!("A declared B lost {after:?} after the freeze");
    assert!(
        after <= interval * misses + interval,
        "lost after {after:?}"
    );
    assert!(
        after >= interval * (misses - 1),
        "declared lost too early: {after:?}"
    );
    let reason = events(&net, a)
        .find_map(|(_, e)| match e {
            Event::PeerDisconnected { reason, peer, .. } => Some((reason.clone(), *peer)),
            _ => None,
        })
        .expect("event");
    assert!(reason.0.contains("peer lost"), "{}", reason.0);
    assert_eq!(reason.1, Some(id(&net, b)));
    assert!(conns_to(&net, a, b).is_empty());

    // Thawed, B notices the close too.
    net.thaw(b);
    net.run_for(Duration::from_secs(1));
    assert!(conns_to(&net, b, a).is_empty());
}

// ----- 7. sync timeout -----

#[test]
fn sync_timeout_fails_a_stalled_sync() {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(5);
    let mut a_store = MemStore::new("repo");
    let old = small_history(&mut a_store, 3);
    let b_store = a_store.clone();
    let (new, _) = seal_big_file(&mut a_store, old, 16 * MIB, 7);
    let slow = cfg().with(|c| c.connections.heartbeat_interval = Duration::from_secs(60));
    let b_cfg = slow
        .clone()
        .with(|c| c.sync.sync_timeout = Duration::from_secs(2));
    let a = net.add(slow, a_store, 1);
    let b = net.add(b_cfg, b_store, 2);
    let objects_before = net.nodes[b].store.objects.len();
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        first_event(n, b, |e| matches!(e, Event::ObjectReceived { .. })).is_some()
    }));
    assert_ne!(head(&net, b), Some(new), "still transferring");
    net.hold(a, b);
    let stalled_at = net.now;
    assert!(net.run_until(Duration::from_secs(10), |n| {
        first_event(n, b, |e| matches!(e, Event::SyncFailed { .. })).is_some()
    }));
    let (failed_at, reason) = events(&net, b)
        .find_map(|(t, e)| match e {
            Event::SyncFailed { reason, .. } => Some((*t, reason.clone())),
            _ => None,
        })
        .expect("failed");
    let after = failed_at.saturating_since(stalled_at);
    println!("stalled sync failed {after:?} after the stall: {reason}");
    assert!(reason.contains("sync timed out"), "{reason}");
    assert!(
        after <= Duration::from_secs(2) + Duration::from_millis(100),
        "{after:?}"
    );
    assert!(after >= Duration::from_millis(1900), "{after:?}");
    // Nothing of the partial transfer is visible.
    assert_eq!(head(&net, b), Some(old), "the timeline is untouched");
    assert_eq!(net.nodes[b].store.objects.len(), objects_before);
    assert!(!net.nodes[b].store.has(&new));
    assert!(
        net.nodes[b].store.staged.is_empty(),
        "the batch was aborted"
    );
    assert!(conns_to(&net, b, a).is_empty());
    assert_eq!(net.nodes[b].node.stats().syncs_failed, 1);
}

// ----- 8. reconnects -----

#[test]
fn reconnect_finishes_what_was_left() {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(5);
    let mut a_store = MemStore::new("repo");
    let old = small_history(&mut a_store, 3);
    let b_store = a_store.clone();
    let (new, _) = seal_big_file(&mut a_store, old, 16 * MIB, 8);
    let reconnect_max = Duration::from_secs(8);
    let a = net.add(cfg(), a_store, 1);
    let b_cfg = cfg().with(|c| {
        c.connections.known_peers = vec![net.nodes[a].addr.to_string()];
        c.connections.reconnect_min = Duration::from_secs(1);
        c.connections.reconnect_max = reconnect_max;
    });
    let b = net.add(b_cfg, b_store, 2);
    // B dials its known peer by itself.
    assert!(net.run_until(Duration::from_secs(5), |n| {
        first_event(n, b, |e| matches!(e, Event::ObjectReceived { .. })).is_some()
    }));
    assert_ne!(head(&net, b), Some(new));
    net.disconnect_all(b);
    let cut_at = net.now;
    assert_eq!(head(&net, b), Some(old));

    // Back within the backoff bound.
    assert!(net.run_until(reconnect_max + Duration::from_secs(1), |n| {
        peer_connected_with(n, b, a) == 2
    }));
    let back_at = events(&net, b)
        .filter(|(_, e)| matches!(e, Event::PeerConnected { .. }))
        .map(|(t, _)| *t)
        .nth(1)
        .expect("reconnected");
    let gap = back_at.saturating_since(cut_at);
    println!("reconnected {gap:?} after the cut");
    assert!(gap <= reconnect_max, "{gap:?}");
    // A user sync issued while connected (and the resumed sync running).
    let sync = net.command(b, Command::Sync { peer: None });
    assert!(net.run_until(Duration::from_secs(60), |n| head(n, b) == Some(new)));
    assert_eq!(
        net.nodes[b].store.objects.len(),
        net.nodes[a].store.objects.len()
    );
    net.run_for(Duration::from_millis(100));
    let (ok, msg) = net.command_result(b, sync).expect("sync answered");
    assert!(ok, "{msg}");
    assert_eq!(net.nodes[b].dials, 2, "one dial, one redial");
    // And once idle, another one completes too.
    let again = net.command(b, Command::Sync { peer: None });
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.command_result(b, again).map(|r| r.0), Some(true));
}

// ----- 9. encryption -----

/// Connects two nodes with the given `encryption` settings; returns the net, the
/// captured bytes A→B, and whether each end reports the channel encrypted.
fn run_capture(enc_a: bool, enc_b: bool) -> (TestNet, Vec<u8>, bool, bool) {
    let mut net = TestNet::new();
    net.capture = true;
    let mut a_store = MemStore::new("repo");
    let h = small_history(&mut a_store, 2);
    let secret_tl = TimelineName::new("feature/plaintext-marker").expect("valid");
    a_store.timelines.insert(secret_tl, h);
    let a = net.add(cfg().with(|c| c.connections.encryption = enc_a), a_store, 1);
    let b = net.add(
        cfg().with(|c| c.connections.encryption = enc_b),
        MemStore::new("repo"),
        2,
    );
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(h)));
    let wire = net.captured(a, b).to_vec();
    let ea = ready_conns_to(&net, a, b)[0].encrypted;
    let eb = ready_conns_to(&net, b, a)[0].encrypted;
    (net, wire, ea, eb)
}

#[test]
fn encryption_off_sends_plaintext_but_still_authenticates() {
    let marker = b"feature/plaintext-marker";
    let (net, wire, ea, eb) = run_capture(false, false);
    assert!(!ea && !eb, "both ends report plaintext");
    assert!(contains(&wire, marker), "the timeline name is readable");
    assert!(contains(&wire, b"\"type\":\"handshake\""));
    // Authenticated all the same: each knows the other's real key.
    assert_eq!(ready_conns_to(&net, 1, 0)[0].peer, Some(id(&net, 0)));
    assert_eq!(ready_conns_to(&net, 0, 1)[0].peer, Some(id(&net, 1)));

    let (_, wire, ea, eb) = run_capture(true, true);
    assert!(ea && eb);
    assert!(!contains(&wire, marker), "encrypted by default");
    assert!(!contains(&wire, b"handshake"));

    for (x, y) in [(false, true), (true, false)] {
        let (_, wire, ea, eb) = run_capture(x, y);
        assert!(ea && eb, "one side wanting encryption is enough ({x}, {y})");
        assert!(!contains(&wire, marker), "({x}, {y})");
    }
}

// ----- 10. unknown messages -----

#[test]
fn unknown_message_types_are_counted_and_ignored() {
    // Injecting needs a plaintext channel: with encryption on, only the peer's
    // keys could make a record the other end accepts.
    let plain = cfg().with(|c| c.connections.encryption = false);
    let mut net = TestNet::new();
    let mut a_store = MemStore::new("repo");
    let h = small_history(&mut a_store, 2);
    let a = net.add(plain.clone(), a_store, 1);
    let b = net.add(plain, MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(h)));
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.in_flight(a, b), 0, "the link is idle");
    assert_eq!(ready_conns_to(&net, a, b)[0].queued_bytes, 0);

    let from = id(&net, a);
    for (n, kind) in ["mesh_gossip", "future_thing"].iter().enumerate() {
        let json = format!(
            r#"{{"id":{},"type":"{kind}","from":"{from}","ts":0,"payload":{{"x":[1,2,3]}}}}"#,
            1_000_000 + n
        );
        assert!(net.inject(a, b, plaintext_record(&json)));
        net.run_for(Duration::from_millis(50));
    }
    let stats = net.nodes[b].node.stats();
    assert_eq!(stats.unknown_messages, 2);
    assert_eq!(stats.violations, 0);
    assert!(net.connected(b, a), "still connected");

    // The connection keeps working afterwards.
    let mut files = BTreeMap::new();
    files.insert("after.txt".to_owned(), b"after".to_vec());
    let next = seal_files(&mut net.nodes[a].store, &files, vec![h], 7000, "after");
    net.nodes[a].store.timelines.insert(main_tl(), next);
    net.command(a, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(next)));
    assert_eq!(net.nodes[b].node.stats().violations, 0);
}

// ----- 11. relaying -----

#[test]
fn three_nodes_relay_a_new_seal() {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(10);
    let mut a_store = MemStore::new("repo");
    let h = small_history(&mut a_store, 3);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    let c = net.add(cfg(), MemStore::new("repo"), 3);
    net.blocked_pairs.push((a, c));
    net.connect(b, a);
    net.connect(c, b);
    // A and C may not connect: the dial fails.
    let direct = net.connect(c, a);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, c) == Some(h)));
    assert_eq!(net.command_result(c, direct).map(|r| r.0), Some(false));

    let mut files = BTreeMap::new();
    files.insert("relayed.txt".to_owned(), b"from A".to_vec());
    let next = seal_files(&mut net.nodes[a].store, &files, vec![h], 8000, "relay me");
    net.nodes[a].store.timelines.insert(main_tl(), next);
    let t0 = net.now;
    net.command(a, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, c) == Some(next)));
    let took = net.now.saturating_since(t0);
    println!("relayed A→B→C in {took:?}");
    // Well before any periodic sync: pushed by announcements.
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(head(&net, b), Some(next));
    let b_id = id(&net, b);
    assert!(events(&net, c).any(|(_, e)| matches!(
        e,
        Event::TimelineUpdated { new, old: Some(o), peer, .. } if *new == next && *o == h && *peer == b_id
    )));
    assert!(
        events(&net, b).any(|(_, e)| matches!(e, Event::TimelineUpdated { new, old: Some(o), .. } if *new == next && *o == h))
    );
    // A and C never share a socket (they may open a routed session through B's
    // mesh relay, which carries no direct traffic).
    let direct = |from: usize, to: usize| {
        net.nodes[from]
            .node
            .peers()
            .iter()
            .filter(|p| !p.routed_via_mesh && p.peer == Some(id(&net, to)))
            .count()
    };
    assert_eq!(direct(a, c) + direct(c, a), 0);
    assert_eq!(net.traffic().get(a, c) + net.traffic().get(c, a), 0);
}

// ----- product bugs found on the way -----

#[test]

fn large_transfer_overshoots_the_window_by_at_most_one_slice() {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(2);
    let window = net.model.window;
    let mut a_store = MemStore::new("repo");
    let base = small_history(&mut a_store, 1);
    let (big, _) = seal_big_file(&mut a_store, base, 16 * MIB, 64);
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(60), |n| head(n, b) == Some(big)));
    assert!(
        net.peak_in_flight <= window + 256 * KIB,
        "peak in flight {} KiB with a window of {} KiB; largest transmit {} KiB",
        net.peak_in_flight / KIB,
        window / KIB,
        net.nodes[a].peak_transmit / KIB
    );
}

/// A serves a 16 MiB seal on `main`, C a small one on `other`; B may run one
/// pull at a time.
fn two_sources(auto_sync: bool) -> (TestNet, usize, usize, usize, ObjectId) {
    let mut net = TestNet::new();
    net.model.latency = Duration::from_millis(5);
    let mut a_store = MemStore::new("repo");
    let base = small_history(&mut a_store, 1);
    let mut c_store = a_store.clone();
    seal_big_file(&mut a_store, base, 16 * MIB, 5);
    let mut files = BTreeMap::new();
    files.insert("c.txt".to_owned(), b"from C".to_vec());
    let other = seal_files(&mut c_store, &files, vec![base], 6000, "on C");
    c_store
        .timelines
        .insert(TimelineName::new("other").expect("valid"), other);
    let b_store = {
        let mut s = a_store.clone();
        s.objects.clear();
        s.timelines.clear();
        s
    };
    let one_at_a_time = cfg().with(|c| {
        c.sync.max_concurrent_syncs = 1;
        c.sync.auto_sync = auto_sync;
    });
    let a = net.add(cfg(), a_store, 1);
    let b = net.add(one_at_a_time, b_store, 2);
    let c = net.add(cfg(), c_store, 3);
    (net, a, b, c, other)
}

fn other_head(net: &TestNet, i: usize) -> Option<ObjectId> {
    net.nodes[i]
        .store
        .timelines
        .get(&TimelineName::new("other").expect("valid"))
        .copied()
}

#[test]

fn queued_pull_starts_when_the_active_one_fails() {
    let (mut net, a, b, c, other) = two_sources(true);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        first_event(n, b, |e| matches!(e, Event::ObjectReceived { .. })).is_some()
    }));
    // A's transfer stalls (its pull stays active), and C connects meanwhile.
    net.hold(a, b);
    net.connect(b, c);
    net.run_for(Duration::from_millis(500));
    assert!(net.connected(b, c));
    assert_eq!(other_head(&net, b), None, "queued behind the pull from A");
    net.disconnect_all(a);
    let failed_at = net.now;
    let landed = net.run_until(Duration::from_secs(60), |n| other_head(n, b) == Some(other));
    let took = net.now.saturating_since(failed_at);
    assert!(landed);
    assert!(
        took < Duration::from_secs(2),
        "the queued pull from C started {took:?} after the pull from A failed"
    );
}

#[test]

fn user_sync_completes_when_one_of_its_pulls_fails() {
    let (mut net, a, b, c, other) = two_sources(false);
    net.connect(b, a);
    net.connect(b, c);
    net.run_for(Duration::from_millis(100));
    assert!(net.connected(b, a) && net.connected(b, c));
    let sync = net.command(b, Command::Sync { peer: None });
    assert!(net.run_until(Duration::from_secs(5), |n| {
        first_event(n, b, |e| matches!(e, Event::ObjectReceived { .. })).is_some()
    }));
    net.hold(a, b);
    net.run_for(Duration::from_millis(500));
    assert_eq!(other_head(&net, b), None, "queued behind the pull from A");
    net.disconnect_all(a);
    net.run_for(Duration::from_secs(120));
    let done = net.command_result(b, sync);
    assert!(
        other_head(&net, b) == Some(other) && done.is_some(),
        "C's timeline arrived: {}; the sync command completed: {done:?}",
        other_head(&net, b) == Some(other)
    );
    let (ok, msg) = done.unwrap_or_default();
    assert!(!ok, "the pull from A failed: {msg}");
}
