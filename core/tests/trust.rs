//! Trust by default, on the virtual network: strangers are refused before
//! they learn anything, invitations admit once, and trust changes apply to
//! live connections.

use std::collections::BTreeMap;
use std::time::Duration;

use ivaldi_core::access::Access;
use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::{Command, Event};
use ivaldi_core::store::MemStore;
use ivaldi_core::testkit::{TestNet, addr_of, seal_files};
use ivaldi_core::trust::{Invite, OpenMode, Ticket, TrustedPeer};
use ivaldi_core::{ObjectId, TimelineName};

fn main_tl() -> TimelineName {
    TimelineName::new("main").expect("valid name")
}

fn history(store: &mut MemStore, seals: usize) -> ObjectId {
    let mut files = BTreeMap::new();
    let mut parents = Vec::new();
    let mut head = ObjectId([0; 32]);
    for s in 0..seals {
        files.insert(format!("f{s}.txt"), format!("content {s}\n").into_bytes());
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

fn id(net: &TestNet, i: usize) -> ivaldi_core::NodeId {
    net.nodes[i].node.node_id()
}

fn head(net: &TestNet, i: usize) -> Option<ObjectId> {
    net.nodes[i].store.timelines.get(&main_tl()).copied()
}

fn set_config(net: &mut TestNet, i: usize, f: impl FnOnce(&mut NodeConfig)) {
    let mut c = net.nodes[i].node.config().clone();
    f(&mut c);
    c.validate().expect("valid config");
    let cmd = net.command(i, Command::SetConfig(Box::new(c)));
    assert_eq!(net.command_result(i, cmd).map(|r| r.0), Some(true));
}

fn trust(net: &mut TestNet, i: usize, j: usize, access: Access) {
    let peer = id(net, j);
    set_config(net, i, |c| {
        c.access
            .trusted_peers
            .push(TrustedPeer { id: peer, access });
    });
}

fn count(net: &TestNet, i: usize, pred: impl Fn(&Event) -> bool) -> usize {
    net.nodes[i].events.iter().filter(|(_, e)| pred(e)).count()
}

/// A's repository with history, B empty, both with default settings.
fn pair() -> (TestNet, usize, usize, ObjectId) {
    let mut net = TestNet::strangers();
    let mut a_store = MemStore::new("repo");
    let h = history(&mut a_store, 3);
    let a = net.add(NodeConfig::default(), a_store, 1);
    let b = net.add(NodeConfig::default(), MemStore::new("repo"), 2);
    (net, a, b, h)
}

fn ticket_for(net: &TestNet, inviter: usize, secret: [u8; 32]) -> Ticket {
    Ticket {
        node: id(net, inviter).0,
        addrs: vec![addr_of(inviter)],
        repo: "repo".into(),
        secret,
    }
}

fn invite(net: &mut TestNet, i: usize, secret: [u8; 32], access: Access, uses: u32) {
    let expires = net.now + Duration::from_secs(3600);
    net.nodes[i].node.set_invites(vec![Invite {
        secret,
        access,
        expires,
        uses,
    }]);
}

#[test]
fn a_stranger_is_refused_before_it_learns_anything_and_is_told_why() {
    let (mut net, a, b, _) = pair();
    // B trusts A (so B would talk), A does not know B: the default.
    trust(&mut net, b, a, Access::Write);
    let cmd = net.connect(b, a);
    net.run_for(Duration::from_secs(15));

    let (ok, msg) = net.command_result(b, cmd).expect("connect answered");
    assert!(!ok);
    let b_id = id(&net, b);
    assert!(
        msg.contains("is not trusted by") && msg.contains(&format!("ivaldi p2p trust {b_id}")),
        "B is told why and what to do: {msg}"
    );
    // Nothing about A's repository reached B: no handshake message, no heads.
    let b_in = &net.nodes[b].node.stats().messages_in;
    assert!(!b_in.contains_key("handshake"), "{b_in:?}");
    assert_eq!(b_in.get("refused"), Some(&1));
    assert!(net.nodes[b].store.timelines.is_empty());
    assert!(net.nodes[b].store.objects.is_empty());
    // A counted and listed B, once, with its address.
    let pending = net.nodes[a].node.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, b_id);
    assert_eq!(pending[0].addr.ip(), addr_of(b).ip());
    assert_eq!(net.nodes[a].node.stats().untrusted_refused, 1);
    assert_eq!(
        count(&net, a, |e| matches!(e, Event::PeerRefused { .. })),
        1
    );

    // Trusting B (one command for the owner) lets it in.
    trust(&mut net, a, b, Access::Write);
    assert!(net.nodes[a].node.pending().is_empty());
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b).is_some()));
}

#[test]
fn open_mode_admits_strangers_with_its_access() {
    let (mut net, a, b, h) = pair();
    set_config(&mut net, a, |c| c.access.open = OpenMode::Read);
    trust(&mut net, b, a, Access::Write);
    let mut b_store_head = None;
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| {
        b_store_head = head(n, b);
        b_store_head == Some(h)
    }));
    // B may read but not write: its new seal is refused by A.
    let files = BTreeMap::from([("new.txt".to_owned(), b"from b".to_vec())]);
    let nb = seal_files(&mut net.nodes[b].store, &files, vec![h], 5000, "b's seal");
    net.nodes[b].store.timelines.insert(main_tl(), nb);
    net.command(b, Command::LocalHeadsChanged);
    net.run_for(Duration::from_secs(5));
    assert_eq!(
        head(&net, a),
        Some(h),
        "a read-only stranger cannot move main"
    );
    assert!(net.nodes[a].node.stats().access_refused >= 1);
}

#[test]
fn an_invitation_admits_once_and_both_sides_then_trust_each_other() {
    let (mut net, a, b, h) = pair();
    let secret = [42u8; 32];
    invite(&mut net, a, secret, Access::Write, 1);
    let ticket = ticket_for(&net, a, secret);

    let cmd = net.command(b, Command::Join(Box::new(ticket.clone())));
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(h)));
    let (ok, msg) = net.command_result(b, cmd).expect("join answered");
    assert!(ok, "{msg}");
    let b_id = id(&net, b);
    assert_eq!(
        count(&net, a, |e| matches!(
            e,
            Event::InviteRedeemed { peer, access: Access::Write, uses_left: 0, .. } if *peer == b_id
        )),
        1
    );
    // B's seal now reaches A: write access was granted.
    let files = BTreeMap::from([("b.txt".to_owned(), b"hello".to_vec())]);
    let nb = seal_files(&mut net.nodes[b].store, &files, vec![h], 6000, "b");
    net.nodes[b].store.timelines.insert(main_tl(), nb);
    net.command(b, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, a) == Some(nb)));

    // A third node with the same (spent) ticket is refused, clearly.
    let c = net.add(NodeConfig::default(), MemStore::new("repo"), 3);
    let cmd = net.command(c, Command::Join(Box::new(ticket)));
    net.run_for(Duration::from_secs(15));
    let (ok, msg) = net.command_result(c, cmd).expect("join answered");
    assert!(!ok);
    assert!(
        msg.contains("invitation") && msg.contains("no uses left"),
        "{msg}"
    );
    assert!(net.nodes[c].store.timelines.is_empty());
}

#[test]
fn a_wrong_secret_or_an_expired_invitation_is_refused() {
    let (mut net, a, b, _) = pair();
    invite(&mut net, a, [1u8; 32], Access::Write, 5);
    // Same invitation id can't be forged without the secret: a ticket with
    // another secret names another invitation, unknown to A.
    let cmd = net.command(b, Command::Join(Box::new(ticket_for(&net, a, [2u8; 32]))));
    net.run_for(Duration::from_secs(15));
    let (ok, msg) = net.command_result(b, cmd).expect("join answered");
    assert!(!ok && msg.contains("unknown"), "{msg}");
    assert!(net.nodes[b].store.timelines.is_empty());

    // Expired: valid until now + 1 s, redeemed later.
    let secret = [3u8; 32];
    let expires = net.now + Duration::from_secs(1);
    net.nodes[a].node.set_invites(vec![Invite {
        secret,
        access: Access::Write,
        expires,
        uses: 1,
    }]);
    net.run_for(Duration::from_secs(2));
    let cmd = net.command(b, Command::Join(Box::new(ticket_for(&net, a, secret))));
    net.run_for(Duration::from_secs(15));
    let (ok, msg) = net.command_result(b, cmd).expect("join answered");
    assert!(!ok && msg.contains("has expired"), "{msg}");
}

#[test]
fn a_ticket_for_another_repository_is_refused_before_dialling() {
    let (mut net, a, b, _) = pair();
    let mut t = ticket_for(&net, a, [7u8; 32]);
    t.repo = "other".into();
    let cmd = net.command(b, Command::Join(Box::new(t)));
    let (ok, msg) = net.command_result(b, cmd).expect("answered at once");
    assert!(!ok && msg.contains("repository other"), "{msg}");
    assert_eq!(net.nodes[b].dials, 0);
}

#[test]
fn untrusting_a_connected_peer_closes_it_at_once_and_it_stays_out() {
    let (mut net, a, b, h) = pair();
    trust(&mut net, a, b, Access::Write);
    trust(&mut net, b, a, Access::Write);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(h)));
    assert!(net.connected(a, b));

    let b_id = id(&net, b);
    let before = net.now;
    set_config(&mut net, a, |c| {
        c.access.trusted_peers.retain(|p| p.id != b_id)
    });
    assert!(
        net.run_until(Duration::from_secs(1), |n| !n.connected(a, b)
            && !n.connected(b, a)),
        "closed within one second"
    );
    assert!(net.now.saturating_since(before) <= Duration::from_secs(1));
    // A new seal on A never reaches B, even though B keeps trying.
    let files = BTreeMap::from([("secret.txt".to_owned(), b"after".to_vec())]);
    let na = seal_files(&mut net.nodes[a].store, &files, vec![h], 7000, "after");
    net.nodes[a].store.timelines.insert(main_tl(), na);
    net.command(a, Command::LocalHeadsChanged);
    net.connect(b, a);
    net.run_for(Duration::from_secs(30));
    assert_eq!(head(&net, b), Some(h));
    assert!(!net.connected(a, b));
}

#[test]
fn narrowing_access_closes_the_connection_and_it_comes_back_read_only() {
    let (mut net, a, b, h) = pair();
    trust(&mut net, a, b, Access::Write);
    trust(&mut net, b, a, Access::Write);
    net.connect(b, a);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(h)));
    let b_id = id(&net, b);
    set_config(&mut net, a, |c| {
        for p in c.access.trusted_peers.iter_mut().filter(|p| p.id == b_id) {
            p.access = Access::Read;
        }
    });
    assert!(net.run_until(Duration::from_secs(1), |n| !n.connected(a, b)
        && !n.connected(b, a)));
    // B reconnects as a reader: its seal is refused.
    let cmd = net.connect(b, a);
    let ok = net.run_until(Duration::from_secs(5), |n| n.connected(a, b));
    assert!(
        ok,
        "{:?} {:?}",
        net.command_result(b, cmd),
        net.nodes[a].events.iter().rev().take(6).collect::<Vec<_>>()
    );
    let files = BTreeMap::from([("b.txt".to_owned(), b"b".to_vec())]);
    let nb = seal_files(&mut net.nodes[b].store, &files, vec![h], 8000, "b");
    net.nodes[b].store.timelines.insert(main_tl(), nb);
    net.command(b, Command::LocalHeadsChanged);
    net.run_for(Duration::from_secs(5));
    assert_eq!(head(&net, a), Some(h));
}

#[test]
fn a_stranger_without_a_ticket_is_refused_at_its_first_message() {
    // An unknown key is held until its first message: a `redeem` is
    // checked, anything else is refused at once (the handshake timeout bounds
    // one that says nothing).
    let (mut net, a, b, _) = pair();
    trust(&mut net, b, a, Access::Write);
    invite(&mut net, a, [9u8; 32], Access::Read, 1);
    net.connect(b, a);
    net.run_for(Duration::from_millis(500));
    assert!(!net.connected(a, b));
    assert_eq!(net.nodes[a].node.stats().untrusted_refused, 1);
    assert!(
        !net.nodes[b]
            .node
            .stats()
            .messages_in
            .contains_key("handshake")
    );
}

#[test]
fn a_peer_admitted_by_invitation_is_dropped_when_untrusted() {
    let (mut net, a, b, h) = pair();
    let secret = [11u8; 32];
    invite(&mut net, a, secret, Access::Write, 1);
    net.command(b, Command::Join(Box::new(ticket_for(&net, a, secret))));
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, b) == Some(h)));
    // The owner's shell records the newcomer in the configuration...
    trust(&mut net, a, b, Access::Write);
    assert!(net.connected(a, b));
    // ...and untrusting it later closes the connection at once.
    let b_id = id(&net, b);
    set_config(&mut net, a, |c| {
        c.access.trusted_peers.retain(|p| p.id != b_id)
    });
    assert!(net.run_until(Duration::from_secs(1), |n| !n.connected(a, b)));
}

/// Trust is per link, not per author: A takes from B whatever B may write,
/// including seals B took from X, whom A does not know (as a git pull from a
/// colleague brings their merges). A limits that by trusting B to read only.
#[test]
fn a_seal_from_an_untrusted_node_reaches_a_only_through_a_peer_trusted_to_write() {
    let mut net = TestNet::strangers();
    let mut a_store = MemStore::new("repo");
    let h = history(&mut a_store, 2);
    let a = net.add(NodeConfig::default(), a_store, 1);
    let b = net.add(NodeConfig::default(), MemStore::new("repo"), 2);
    let x = net.add(NodeConfig::default(), MemStore::new("repo"), 3);
    trust(&mut net, a, b, Access::Write);
    trust(&mut net, b, a, Access::Write);
    trust(&mut net, b, x, Access::Write);
    trust(&mut net, x, b, Access::Write);
    trust(&mut net, x, a, Access::Write);
    net.connect(b, a);
    net.connect(x, b);
    assert!(net.run_until(Duration::from_secs(5), |n| head(n, x) == Some(h)));
    // X cannot reach A directly...
    let cmd = net.connect(x, a);
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.command_result(x, cmd).map(|r| r.0), Some(false));
    // ...but its seal travels X -> B -> A.
    let files = BTreeMap::from([("x.txt".to_owned(), b"from x".to_vec())]);
    let nx = seal_files(&mut net.nodes[x].store, &files, vec![h], 9000, "x");
    net.nodes[x].store.timelines.insert(main_tl(), nx);
    net.command(x, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(10), |n| head(n, a) == Some(nx)));

    // With B trusted to read only, the next seal from X stops at B.
    let b_id = id(&net, b);
    set_config(&mut net, a, |c| {
        for p in c.access.trusted_peers.iter_mut().filter(|p| p.id == b_id) {
            p.access = Access::Read;
        }
    });
    net.connect(b, a);
    let files = BTreeMap::from([("x.txt".to_owned(), b"again".to_vec())]);
    let nx2 = seal_files(&mut net.nodes[x].store, &files, vec![nx], 9100, "x2");
    net.nodes[x].store.timelines.insert(main_tl(), nx2);
    net.command(x, Command::LocalHeadsChanged);
    assert!(net.run_until(Duration::from_secs(10), |n| head(n, b) == Some(nx2)));
    net.run_for(Duration::from_secs(5));
    assert_eq!(head(&net, a), Some(nx));
}
