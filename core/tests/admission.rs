//! Admission at the node level: unauthenticated connections wait in their own
//! pool and never take peer slots; peer slots go to admitted peers only; a
//! connection not admitted yet may only send small frames.

use std::net::SocketAddr;
use std::time::Duration;

use ivaldi_core::config::Config;
use ivaldi_core::node::{Command, Event, Node};
use ivaldi_core::noise::Keypair;
use ivaldi_core::rng::Rng;
use ivaldi_core::store::MemStore;
use ivaldi_core::testkit::TestNet;
use ivaldi_core::time::Instant;

fn cfg() -> Config {
    Config {
        heartbeat_interval: Duration::from_secs(5),
        ..Config::default()
    }
}

fn node(cfg: Config, seed: u8) -> Node {
    let mut rng = Rng::from_u64(u64::from(seed));
    let kp = Keypair::generate(&mut rng);
    Node::new(cfg, kp, [seed; 32], Instant::ZERO)
}

fn from(a: u8, b: u8) -> SocketAddr {
    format!("127.0.{a}.{b}:5000").parse().unwrap()
}

#[test]
fn pending_connections_never_take_peer_slots() {
    let mut node = node(
        Config {
            max_peers: 3,
            ..cfg()
        },
        9,
    );
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
        Config {
            accept_burst: 1000,
            accept_rate_per_sec: 1000,
            ..cfg()
        },
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
        Config {
            handshake_timeout: Duration::from_secs(30),
            ..cfg()
        },
        4,
    );
    let store = MemStore::new("repo");
    let conn = node.handle_accepted(Instant::ZERO, from(1, 1)).unwrap();
    node.handle_timeout(Instant::ZERO, &store);
    while node.poll_output().is_some() {}
    let at = Instant::ZERO + Duration::from_secs(5);
    node.handle_timeout(at, &store);
    let closed = std::iter::from_fn(|| node.poll_output()).any(|o| {
        matches!(o, ivaldi_core::node::Output::Close { conn: c, ref reason }
            if c == conn && reason.contains("handshake timed out"))
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
    node.handle_closed(at, conn, "closed");
    assert_eq!(node.admission_pool_len(), 0);
}

#[test]
fn an_admitted_peer_beyond_max_peers_is_closed_with_the_reason() {
    let mut net = TestNet::new();
    let a = net.add(
        Config {
            max_peers: 1,
            ..cfg()
        },
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
