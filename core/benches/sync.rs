//! Sync benchmarks for the protocol core: two in-process nodes over the virtual
//! test network, so the numbers are the protocol's and the CPU's, not the
//! kernel's. Prints one table.
//!
//! ```sh
//! cargo bench -p ivaldi-core --bench sync            # full size
//! IVALDI_BENCH_QUICK=1 cargo bench -p ivaldi-core --bench sync
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant as Wall};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ivaldi_core::access::Access;
use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::{Command, Event, Node, Output};
use ivaldi_core::noise::Keypair;
use ivaldi_core::rng::Rng;
use ivaldi_core::store::MemStore;
use ivaldi_core::store::{Store, StoreRequest};
use ivaldi_core::testkit::{TestNet, seal_files};
use ivaldi_core::{ObjectId, TimelineName};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};

fn quick() -> bool {
    std::env::var_os("IVALDI_BENCH_QUICK").is_some()
}

fn main_tl() -> TimelineName {
    TimelineName::new("main").expect("valid name")
}

fn cfg(encryption: bool) -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.encryption = encryption;
        c.connections.heartbeat_interval = Duration::from_secs(30);
    })
}

fn pseudo(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::from_u64(seed);
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

fn text(n: usize, seed: u64) -> Vec<u8> {
    let words = [
        "ivaldi", "seal", "timeline", "tree", "blob", "peer", "sync", "mesh", "\n",
    ];
    let mut rng = Rng::from_u64(seed);
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        v.extend_from_slice(words[rng.below(words.len() as u64) as usize].as_bytes());
        v.push(b' ');
    }
    v.truncate(n);
    v
}

/// Runs until node 1's main timeline is `head`; returns wall time.
fn sync_to(net: &mut TestNet, head: ObjectId) -> Duration {
    let start = Wall::now();
    let ok = net.run_until(Duration::from_secs(3600), |n| {
        n.nodes[1].store.timelines.get(&main_tl()) == Some(&head)
    });
    assert!(ok, "sync did not finish");
    start.elapsed()
}

fn count_requests(net: &TestNet, node: usize) -> usize {
    net.nodes[node]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::SyncStarted { .. }))
        .count()
}

struct Row(String, String, String);

fn incremental(rows: &mut Vec<Row>) {
    let (files, seals) = if quick() { (500, 30) } else { (5000, 300) };
    let mut store = MemStore::new("bench");
    let mut tree: BTreeMap<String, Vec<u8>> = (0..files)
        .map(|i| {
            let size = 100 + (i * 7919) % 20_000;
            (
                format!("d{}/s{}/f{i}.txt", i % 20, i % 7),
                text(size, i as u64),
            )
        })
        .collect();
    let mut parent = Vec::new();
    let mut head = ObjectId([0; 32]);
    for s in 0..seals {
        for k in 0..(files / 100).max(1) {
            let i = (s * 31 + k * 97) % files;
            let key = tree.keys().nth(i).cloned().expect("index in range");
            tree.insert(key, text(100 + (s * k) % 5000, (s * 1000 + k) as u64));
        }
        head = seal_files(&mut store, &tree, parent, 1000 + s as i64, "work");
        parent = vec![head];
    }
    store.timelines.insert(main_tl(), head);
    let mut net = TestNet::new();
    net.add(cfg(true), store, 1);
    net.add(cfg(true), MemStore::new("bench"), 2);
    net.connect(1, 0);
    let full = sync_to(&mut net, head);
    let full_bytes = net.bytes_between(0, 1);
    rows.push(Row(
        format!("full sync, {seals} seals × {files} files"),
        format!(
            "{:.2} s wall, {:.1} MiB on the wire",
            full.as_secs_f64(),
            full_bytes as f64 / 1048576.0
        ),
        "(context)".into(),
    ));

    // One seal changing three files.
    let mut changed = 0usize;
    for k in 0..3 {
        let key = tree
            .keys()
            .nth(k * 1000 % files)
            .cloned()
            .expect("index in range");
        let content = text(4000 + k * 1000, 777 + k as u64);
        changed += content.len();
        tree.insert(key, content);
    }
    let s = &mut net.nodes[0].store;
    let next = seal_files(s, &tree, vec![head], 99_999, "three files");
    s.timelines.insert(main_tl(), next);
    let before_ab = net.bytes_between(0, 1);
    let before_ba = net.bytes_between(1, 0);
    let before_req = count_requests(&net, 1);
    net.command(0, Command::LocalHeadsChanged);
    let t = sync_to(&mut net, next);
    let ab = net.bytes_between(0, 1) - before_ab;
    let ba = net.bytes_between(1, 0) - before_ba;
    let requests = count_requests(&net, 1) - before_req;
    let goal = 2 * changed as u64 + 16 * 1024;
    rows.push(Row(
        "one seal, 3 files changed: bytes on the wire".into(),
        format!(
            "{ab} B to the puller + {ba} B back ({changed} B changed); {requests} request round trip(s); {:.1} ms",
            t.as_secs_f64() * 1e3
        ),
        format!(
            "< {goal} B, ≤ 2 round trips: {}",
            if ab + ba < goal && requests <= 2 { "met" } else { "MISSED" }
        ),
    ));
}

fn big_file(
    rows: &mut Vec<Row>,
    encryption: bool,
    size: usize,
    limit: f64,
) -> (MemStore, ObjectId, BTreeMap<String, Vec<u8>>) {
    let mut store = MemStore::new("big");
    let mut tree = BTreeMap::new();
    tree.insert("big.bin".to_string(), pseudo(size, 42));
    let head = seal_files(&mut store, &tree, vec![], 1, "big");
    store.timelines.insert(main_tl(), head);
    let mut net = TestNet::new();
    net.add(cfg(encryption), store.clone(), 1);
    net.add(cfg(encryption), MemStore::new("big"), 2);
    net.connect(1, 0);
    let t = sync_to(&mut net, head);
    let mbps = size as f64 / t.as_secs_f64() / 1e6;
    let peak = net.peak_in_flight.max(net.nodes[0].peak_queued);
    rows.push(Row(
        format!(
            "{} MiB file, encryption {}",
            size >> 20,
            if encryption { "on" } else { "off" }
        ),
        format!(
            "{mbps:.0} MB/s; peak buffer {:.2} MiB",
            peak as f64 / 1048576.0
        ),
        format!(
            "≥ {:.0} MB/s (half the slower limit): {}",
            limit / 2.0,
            if mbps >= limit / 2.0 { "met" } else { "MISSED" }
        ),
    ));
    (store, head, tree)
}

/// Runs one node on its own thread with a channel as its socket: what a real
/// daemon on each machine does, so sender and receiver each get a core.
#[allow(clippy::too_many_arguments)]
fn pump(
    mut node: Node,
    mut store: MemStore,
    conn: u64,
    rx: Receiver<Vec<u8>>,
    tx: SyncSender<Vec<u8>>,
    done: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    want: Option<ObjectId>,
) -> MemStore {
    let origin = Wall::now();
    let now = || ivaldi_core::time::Instant::from_micros(origin.elapsed().as_micros() as u64);
    let mut pending: Option<Vec<u8>> = None;
    while !done.load(Ordering::Relaxed) {
        while let Some(out) = node.poll_output() {
            if let Output::Close { reason, .. } = &out {
                // Without this the two threads would wait for each other
                // forever (as they did while the bench's nodes were strangers).
                eprintln!("bench sync: conn {conn} closed: {reason}");
                std::process::exit(1);
            }
            if let Output::Store(req) = out {
                let batch = match &req {
                    StoreRequest::Land { batch, .. } => Some(*batch),
                    _ => None,
                };
                let r = store.apply(req);
                if let Some(b) = batch {
                    node.handle_store_done(now(), b, r, &store);
                }
            }
        }
        if let (Some(w), Ok(h)) = (want, store.heads())
            && h.get(&main_tl()) == Some(&w)
        {
            done.store(true, Ordering::Relaxed);
            break;
        }
        if pending.is_none() {
            let mut buf = Vec::new();
            if node.poll_transmit(now(), &store, &mut buf).is_some() {
                peak.fetch_max(
                    node.peers()
                        .iter()
                        .map(|p| p.queued_bytes)
                        .max()
                        .unwrap_or(0)
                        + buf.len(),
                    Ordering::Relaxed,
                );
                pending = Some(buf);
            }
        }
        let mut sent = false;
        if let Some(p) = pending.take() {
            match tx.try_send(p) {
                Ok(()) => {
                    node.set_blocked(conn, false);
                    sent = true;
                }
                Err(TrySendError::Full(p)) => {
                    node.set_blocked(conn, true);
                    pending = Some(p);
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        let got = if sent {
            match rx.try_recv() {
                Ok(d) => Some(d),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            rx.recv_timeout(Duration::from_micros(200)).ok()
        };
        if let Some(d) = got {
            node.handle_bytes(now(), conn, &d, &store);
        }
        if node.poll_timeout().is_some_and(|t| t <= now()) {
            node.handle_timeout(now(), &store);
        }
    }
    store
}

/// Moves `head` from `source` to an empty store over two threads; returns the
/// wall time and the peak bytes buffered (socket queue plus node queue).
fn two_threads(
    source: MemStore,
    head: ObjectId,
    encryption: bool,
    dest: MemStore,
) -> (Duration, usize) {
    let mut rng = Rng::from_u64(5);
    let ka = Keypair::generate(&mut rng);
    let kb = Keypair::generate(&mut rng);
    let t0 = ivaldi_core::time::Instant::ZERO;
    let mut a = Node::new(cfg(encryption), ka, [1; 32], t0);
    let mut b = Node::new(cfg(encryption), kb, [2; 32], t0);
    // Strangers are refused by default (as `TestNet::team` does for the
    // in-memory cases), so the two trust each other first.
    a.grant_trust(b.node_id(), Access::Write);
    b.grant_trust(a.node_id(), Access::Write);
    a.start(t0, &source);
    b.start(t0, &dest);
    let addr_a: std::net::SocketAddr = "127.0.0.1:9090".parse().expect("addr");
    b.handle_command(t0, 1, Command::Connect(addr_a), &dest);
    let mut b_conn = 0;
    while let Some(o) = b.poll_output() {
        if let Output::Dial { conn, .. } = o {
            b_conn = conn;
        }
    }
    let a_conn = a
        .handle_accepted(t0, "127.0.0.2:5000".parse().expect("addr"))
        .expect("accepted");
    b.handle_connected(t0, b_conn);
    // Four 256 KiB slices in flight each way: the socket buffers.
    let (to_a, from_b) = sync_channel::<Vec<u8>>(4);
    let (to_b, from_a) = sync_channel::<Vec<u8>>(4);
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let start = Wall::now();
    let (d1, p1) = (done.clone(), peak.clone());
    let ta = std::thread::spawn(move || pump(a, source, a_conn, from_b, to_b, d1, p1, None));
    let tb = std::thread::spawn(move || {
        pump(
            b,
            dest,
            b_conn,
            from_a,
            to_a,
            done,
            peak.clone(),
            Some(head),
        )
        .heads()
        .map(|_| peak)
    });
    let peak = tb.join().expect("receiver thread").expect("heads");
    let elapsed = start.elapsed();
    let _ = ta.join();
    (elapsed, peak.load(Ordering::Relaxed) + 4 * 256 * 1024)
}

fn big_file_threads(
    rows: &mut Vec<Row>,
    store: &MemStore,
    head: ObjectId,
    size: usize,
    encryption: bool,
    limit: f64,
) {
    let (t, peak) = two_threads(store.clone(), head, encryption, MemStore::new("big"));
    let mbps = size as f64 / t.as_secs_f64() / 1e6;
    rows.push(Row(
        format!(
            "{} MiB file, encryption {}, two threads (one node per core)",
            size >> 20,
            if encryption { "on" } else { "off" }
        ),
        format!(
            "{mbps:.0} MB/s; peak buffer {:.2} MiB",
            peak as f64 / 1048576.0
        ),
        format!(
            "≥ {:.0} MB/s (half the slower limit): {}",
            limit / 2.0,
            if mbps >= limit / 2.0 { "met" } else { "MISSED" }
        ),
    ));
}

fn edit_in_big_file(
    rows: &mut Vec<Row>,
    mut store: MemStore,
    head: ObjectId,
    mut tree: BTreeMap<String, Vec<u8>>,
) {
    let mut net = TestNet::new();
    let b_store = store.clone();
    let content = tree.get_mut("big.bin").expect("big file present");
    let at = content.len() / 3;
    content[at..at + 4096].copy_from_slice(&pseudo(4096, 7));
    let next = seal_files(&mut store, &tree, vec![head], 2, "edit");
    store.timelines.insert(main_tl(), next);
    net.add(cfg(true), store, 1);
    net.add(cfg(true), b_store, 2);
    net.connect(1, 0);
    let t = sync_to(&mut net, next);
    let bytes = net.bytes_between(0, 1) + net.bytes_between(1, 0);
    rows.push(Row(
        "4 KiB edit inside that file, incremental".into(),
        format!(
            "{:.1} KiB on the wire (incl. handshake), {:.1} ms",
            bytes as f64 / 1024.0,
            t.as_secs_f64() * 1e3
        ),
        format!(
            "< 300 KiB: {}",
            if bytes < 300 * 1024 { "met" } else { "MISSED" }
        ),
    ));
}

fn limits(size: usize) -> (f64, f64) {
    let data = pseudo(size, 9);
    let t = Wall::now();
    let h = blake3::hash(&data);
    let blake = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    std::hint::black_box(h);
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7u8; 32]));
    let mut buf = data;
    let t = Wall::now();
    for (i, chunk) in buf.chunks_mut(65_519).enumerate() {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_le_bytes());
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", chunk)
            .expect("encrypt");
        std::hint::black_box(tag);
    }
    let chacha = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    (blake, chacha)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("sync: bench");
        return;
    }
    let size = if quick() { 32 << 20 } else { 256 << 20 };
    let mut rows = Vec::new();
    // `IVALDI_BENCH_ONLY=big-off` runs one case, for profiling.
    if std::env::var("IVALDI_BENCH_ONLY").as_deref() == Ok("threads") {
        let (store, head, _) = big_file(&mut rows, true, size, 0.0);
        big_file_threads(&mut rows, &store, head, size, true, 0.0);
        for Row(a, b, c) in rows {
            println!("| {a} | {b} | {c} |");
        }
        return;
    }
    if std::env::var("IVALDI_BENCH_ONLY").as_deref() == Ok("big-off") {
        big_file(&mut rows, false, size, 0.0);
        for Row(a, b, c) in rows {
            println!("| {a} | {b} | {c} |");
        }
        return;
    }
    let (blake, chacha) = limits(size);
    rows.push(Row(
        "BLAKE3 hashing (one core)".into(),
        format!("{blake:.0} MB/s"),
        "limit".into(),
    ));
    rows.push(Row(
        "ChaCha20-Poly1305 encryption (one core)".into(),
        format!("{chacha:.0} MB/s"),
        "limit".into(),
    ));
    eprintln!("bench sync: incremental");
    incremental(&mut rows);
    eprintln!("bench sync: one node pair, in-memory");
    let slower_on = blake.min(chacha);
    let (store, head, tree) = big_file(&mut rows, true, size, slower_on);
    // The goal is half the slower of the two limits, for both modes.
    big_file(&mut rows, false, size, slower_on);
    eprintln!("bench sync: two threads");
    big_file_threads(&mut rows, &store, head, size, true, slower_on);
    big_file_threads(&mut rows, &store, head, size, false, slower_on);
    eprintln!("bench sync: edit in a big file");
    edit_in_big_file(&mut rows, store, head, tree);
    println!("\n| case | result | goal |\n|---|---|---|");
    for Row(a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
}
