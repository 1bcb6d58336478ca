//! Admission at the node level: unauthenticated connections wait in their own
//! pool and never take peer slots; peer slots go to admitted peers only; a
//! connection not admitted yet may only send small frames.

use std::net::SocketAddr;
use std::time::Duration;

use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::{Command, Event, Node};
use ivaldi_core::noise::Keypair;
use ivaldi_core::rng::Rng;
use ivaldi_core::store::MemStore;
use ivaldi_core::testkit::TestNet;
use ivaldi_core::time::Instant;

fn cfg() -> NodeConfig {
    NodeConfig::default().with(|c| c.connections.heartbeat_interval = Duration::from_secs(5))
}

fn node(cfg: NodeConfig, seed: u8) -> Node {
    let mut rng = Rng::from_u64(u64::from(seed));
    let kp = Keypair::generate(&mut rng);
    Node::new(cfg, kp, [seed; 32], Instant::ZERO)
}

fn from(a: u8, b: u8) -> SocketAddr {
    format!("127.0.{a}.{b}:5000").parse().unwrap()
}

#[test]
fn pending_connections_never_take_peer_slots() {
    let mut node = node(cfg().with(|c| c.connections.max_peers = 3), 9);
    let store = MemStore::new("repo");
    for i in 0..2u8 {
        let addr = format!("127.0.0.{}:9101", 10 + i).parse().unwrap();
        node.handle_command(
            Instant::ZERO,
            u64::from(i) + 1,
            Command::Connect(addr),
            &store,
        );
    }
    // Twenty strangers, two dials pending: no peer is admitted, so every
    // slot is still free and the pool takes them all.
    let accepted = (0..20)
        .filter(|i| node.handle_accepted(Instant::ZERO, from(1, *i)).is_some())
        .count();
    assert_eq!(accepted, 20);
    assert!(node.admission_pool_len() <= 20);
    // More dials are still possible (they have their own small cap).
    let addr: SocketAddr = "127.0.0.30:9101".parse().unwrap();
    node.handle_command(Instant::ZERO, 9, Command::Connect(addr), &store);
    let dials = std::iter::from_fn(|| node.poll_output())
        .filter(|o| matches!(o, ivaldi_core::node::Output::Dial { .. }))
        .count();
    assert_eq!(dials, 3);
}

#[test]
fn one_flooding_address_is_capped_and_a_fresh_one_still_gets_in() {
    let mut node = node(
        cfg().with(|c| {
            c.connections.accept_burst = 1000;
            c.connections.accept_rate_per_sec = 1000;
        }),
        3,
    );
    let hostile = from(9, 9);
    let accepted = (0..50)
        .filter(|_| node.handle_accepted(Instant::ZERO, hostile).is_some())
        .count();
    assert_eq!(accepted, 10, "the per-source cap");
    assert_eq!(node.stats().admission.pool_refused, 40);
    // A wide flood fills the pool...
    for a in 0..20u8 {
        for b in 0..10u8 {
            let _ = node.handle_accepted(Instant::ZERO, from(10 + a, b));
        }
    }
    assert!(node.admission_pool_len() <= 100);
    // ...and a fresh address still gets a slot, pushing out a flooder.
    assert!(node.handle_accepted(Instant::ZERO, from(200, 1)).is_some());
    assert!(node.stats().admission.pool_evicted > 0);
}

#[test]
fn unauthenticated_inbound_connections_time_out_sooner() {
    let mut node = node(
        cfg().with(|c| c.connections.handshake_timeout = Duration::from_secs(30)),
        4,
    );
    let store = MemStore::new("repo");
    node.start(Instant::ZERO, &store);
    let conn = node.handle_accepted(Instant::ZERO, from(1, 1)).unwrap();
    node.handle_timeout(Instant::ZERO, &store);
    while node.poll_output().is_some() {}
    let at = Instant::ZERO + Duration::from_secs(5);
    node.handle_timeout(at, &store);
    let closed = std::iter::from_fn(|| node.poll_output()).any(|o| {
        matches!(o, ivaldi_core::node::Output::Close { conn: c, ref reason }
            if c == conn && *reason == ivaldi_core::node::CloseReason::HandshakeTimeout)
    });
    assert!(
        closed,
        "closed after 5 s although handshake_timeout is 30 s"
    );
    assert_eq!(
        node.admission_pool_len(),
        1,
        "until the owner reports it gone"
    );
    node.handle_closed(at, conn, &gone(), &store);
    assert_eq!(node.admission_pool_len(), 0);
}

#[test]
fn an_admitted_peer_beyond_max_peers_is_closed_with_the_reason() {
    let mut net = TestNet::new();
    let a = net.add(
        cfg().with(|c| c.connections.max_peers = 1),
        MemStore::new("repo"),
        1,
    );
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    let c = net.add(cfg(), MemStore::new("repo"), 3);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(a, b)));
    net.connect(c, a);
    net.run_for(Duration::from_secs(2));
    assert!(net.connected(a, b), "the first peer keeps its slot");
    assert!(!net.connected(a, c));
    assert_eq!(net.nodes[a].node.stats().admission.peer_slots_full, 1);
    let told = net.nodes[c].events.iter().any(|(_, e)| match e {
        Event::PeerDisconnected { reason, .. } => reason.contains("max_peers"),
        Event::CommandDone { ok, message, .. } => !ok && message.contains("max_peers"),
        _ => false,
    });
    assert!(
        told,
        "the refused peer is told why: {:?}",
        net.nodes[c].events
    );
}

/// A client of `node` over an in-memory connection: runs the Noise
/// handshake as initiator with key `kp`, feeding the node's replies back.
struct Client {
    conn: u64,
    session: ivaldi_core::noise::Session,
}

fn handshake(node: &mut Node, store: &MemStore, kp: &Keypair, from: SocketAddr) -> Client {
    use ivaldi_core::noise::{Role, Session};
    let now = Instant::ZERO;
    let conn = node.handle_accepted(now, from).expect("accepted");
    let mut session = Session::new(
        Role::Initiator,
        kp,
        Rng::from_u64(1),
        true,
        b"ivaldi".to_vec(),
    )
    .unwrap();
    let mut out = Vec::new();
    session.start(&mut out);
    for _ in 0..4 {
        if !out.is_empty() {
            node.handle_bytes(now, conn, &std::mem::take(&mut out), store);
        }
        let mut buf = Vec::new();
        while let Some(c) = node.poll_transmit(now, store, &mut buf) {
            if c == conn && !session.is_established() {
                let mut plain = Vec::new();
                session.receive(&buf, &mut plain, &mut out).unwrap();
            }
            buf.clear();
        }
        while node.poll_output().is_some() {}
    }
    assert!(session.is_established());
    Client { conn, session }
}

impl Client {
    /// Sends plaintext frame bytes through the secure channel.
    fn send(&mut self, node: &mut Node, store: &MemStore, plain: &[u8]) {
        let mut out = Vec::new();
        self.session.send(plain, &mut out).unwrap();
        node.handle_bytes(Instant::ZERO, self.conn, &out, store);
    }
}

fn closes(node: &mut Node, conn: u64, what: &str) -> bool {
    std::iter::from_fn(|| node.poll_output()).any(|o| {
        matches!(o, ivaldi_core::node::Output::Close { conn: c, ref reason }
            if c == conn && reason.to_string().contains(what))
    })
}

#[test]
fn admitted_peers_stalling_in_large_frames_are_paused_at_the_global_budget() {
    // 10 MiB frames, a 64 MiB budget: six stalled frames fit, the seventh waits.
    let mut node = node(cfg(), 5);
    let store = MemStore::new("repo");
    let mut clients = Vec::new();
    for i in 0..8u8 {
        let kp = Keypair::generate(&mut Rng::from_u64(100 + u64::from(i)));
        node.grant_trust(
            ivaldi_core::NodeId(kp.public),
            ivaldi_core::access::Access::Write,
        );
        let mut c = handshake(&mut node, &store, &kp, from(2, i));
        // A frame header announcing almost 10 MiB, then a little of it.
        let mut frame = (10 * 1024 * 1024 - 64u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[b' '; 1000]);
        c.send(&mut node, &store, &frame);
        clients.push(c);
    }
    let closed = std::iter::from_fn(|| node.poll_output())
        .any(|o| matches!(o, ivaldi_core::node::Output::Close { .. }));
    assert!(
        !closed,
        "admitted peers may send frames up to max_message_size"
    );
    let paused: Vec<bool> = clients
        .iter()
        .map(|c| node.read_budget(c.conn, Instant::ZERO) == Some(0))
        .collect();
    assert_eq!(paused.iter().filter(|p| **p).count(), 2, "{paused:?}");
    assert!(node.frame_budget_reserved() <= 64 * 1024 * 1024);
    assert_eq!(node.stats().admission.budget_paused, 2);
    // One stalled peer goes away: a paused one may read again.
    node.handle_closed(Instant::ZERO, clients[0].conn, &gone(), &store);
    let resumed = clients[1..]
        .iter()
        .filter(|c| node.read_budget(c.conn, Instant::ZERO) == Some(0))
        .count();
    assert_eq!(resumed, 1, "one of the two paused ones fits now");
}

#[test]
fn a_stranger_waiting_for_admission_may_only_send_small_frames() {
    let mut node = node(cfg(), 6);
    let store = MemStore::new("repo");
    // An open invitation keeps strangers in `Admission` (waiting for a redeem).
    node.set_invites(vec![ivaldi_core::trust::Invite {
        secret: [7; 32],
        access: ivaldi_core::access::Access::Read,
        expires: Instant::ZERO + Duration::from_secs(3600),
        uses: 1,
    }]);
    let kp = Keypair::generate(&mut Rng::from_u64(77));
    let mut c = handshake(&mut node, &store, &kp, from(3, 1));
    assert!(
        node.peers()
            .iter()
            .any(|p| p.conn == c.conn && p.state == ivaldi_core::node::ConnState::Admission)
    );
    // A frame header just over 16 KiB is refused from its prefix.
    c.send(&mut node, &store, &(16 * 1024 + 1u32).to_be_bytes());
    assert!(closes(&mut node, c.conn, "exceeds the 16384-byte limit"));
}

/// A store whose handshake lists 400 timelines (about 40 KB: more than the
/// pre-admission frame limit).
fn many_timelines() -> MemStore {
    let mut store = MemStore::new("repo");
    let files = [("a.txt".to_owned(), b"a\n".to_vec())]
        .into_iter()
        .collect();
    let seal = ivaldi_core::testkit::seal_files(&mut store, &files, vec![], 1000, "one");
    for i in 0..400 {
        let name = ivaldi_core::TimelineName::new(&format!("feature/number-{i:04}")).unwrap();
        store.timelines.insert(name, seal);
    }
    store
}

#[test]
fn the_frame_limit_is_raised_on_admission_so_a_large_handshake_arrives() {
    let mut net = TestNet::new();
    let a = net.add(cfg(), many_timelines(), 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(b, a)
        && n.connected(a, b)));
    assert_eq!(net.nodes[b].node.stats().violations, 0);
}

#[test]
fn a_newcomer_redeeming_an_invitation_is_admitted_and_gets_a_large_handshake() {
    let mut net = TestNet::strangers();
    let a = net.add(cfg(), many_timelines(), 1);
    let b = net.add(cfg(), MemStore::new("repo"), 2);
    let secret = [9u8; 32];
    net.nodes[a]
        .node
        .set_invites(vec![ivaldi_core::trust::Invite {
            secret,
            access: ivaldi_core::access::Access::Write,
            expires: Instant::ZERO + Duration::from_secs(3600),
            uses: 1,
        }]);
    let a_id = net.nodes[a].node.node_id();
    net.nodes[b]
        .node
        .grant_trust(a_id, ivaldi_core::access::Access::Write);
    let ticket = ivaldi_core::trust::Ticket {
        node: a_id.0,
        addrs: vec![net.nodes[a].addr],
        repo: "repo".into(),
        secret,
    };
    let cmd = net.command(b, Command::Join(Box::new(ticket)));
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(b, a)
        && n.connected(a, b)));
    assert_eq!(net.command_result(b, cmd).map(|r| r.0), Some(true));
    assert_eq!(
        net.nodes[a].node.admission_pool_len(),
        0,
        "admitted: out of the pool"
    );
    assert_eq!(net.nodes[b].node.stats().violations, 0);
}

/// What the owner reports when a socket it was told to close has gone.
fn gone() -> ivaldi_core::node::CloseReason {
    ivaldi_core::node::CloseReason::Transport("gone".into())
}
