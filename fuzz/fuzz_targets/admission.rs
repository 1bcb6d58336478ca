//! Feeds arbitrary frames from an authenticated but untrusted key to a node
//! with an open invitation.
//!
//! After a genuine Noise handshake (fixed keys and seeds), the fuzzer's bytes
//! are sent through the session as the stranger's first frames: a `redeem`
//! with any invitation id and proof, a `handshake`, a `refused`, garbage. No
//! input may make the node panic, and none may make it send its own
//! `handshake` message (which would tell a stranger its timelines): the
//! fuzzer cannot know the invitation's secret, so it must stay a stranger.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ivaldi_core::access::Access;
use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::Node;
use ivaldi_core::noise::{Keypair, Role, Session};
use ivaldi_core::rng::Rng;
use ivaldi_core::store::MemStore;
use ivaldi_core::time::Instant;
use ivaldi_core::trust::Invite;
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static (Keypair, Keypair) {
    static KEYS: OnceLock<(Keypair, Keypair)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = Rng::from_u64(7);
        (Keypair::generate(&mut rng), Keypair::generate(&mut rng))
    })
}

fn drain(node: &mut Node, store: &MemStore, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    while node.poll_output().is_some() {}
    while node.poll_transmit(now, store, &mut out).is_some() {}
    out
}

fuzz_target!(|data: &[u8]| {
    let (node_key, stranger_key) = keys();
    let store = MemStore::new("repo");
    let t0 = Instant::ZERO;
    let mut node = Node::new(NodeConfig::default(), node_key.clone(), [1; 32], t0);
    node.start(t0, &store);
    node.set_invites(vec![Invite {
        secret: [9; 32],
        access: Access::Write,
        expires: t0 + Duration::from_secs(3600),
        uses: 1,
    }]);
    let Some(conn) = node.handle_accepted(t0, "127.0.0.9:4000".parse().unwrap()) else {
        return;
    };
    let mut client = Session::new(
        Role::Initiator,
        stranger_key,
        Rng::from_u64(3),
        true,
        b"{}".to_vec(),
    )
    .unwrap();
    let (mut m1, mut m3, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    client.start(&mut m1);
    node.handle_bytes(t0, conn, &m1, &store);
    let m2 = drain(&mut node, &store, t0);
    client.receive(&m2, &mut plain, &mut m3).unwrap();
    node.handle_bytes(t0, conn, &m3, &store);
    drain(&mut node, &store, t0);
    // The fuzzer's bytes, in records of its choosing, as the stranger's frames.
    for piece in data.chunks(4096) {
        let mut rec = Vec::new();
        if client.send(piece, &mut rec).is_err() {
            break;
        }
        node.handle_bytes(t0, conn, &rec, &store);
        drain(&mut node, &store, t0);
    }
    node.handle_timeout(t0 + Duration::from_secs(60), &store);
    drain(&mut node, &store, t0 + Duration::from_secs(60));
    assert!(
        !node.stats().messages_out.contains_key("handshake"),
        "a stranger was sent our handshake: {:?}",
        node.stats().messages_out
    );
});
