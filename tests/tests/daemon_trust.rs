//! Trust by default with real daemons on loopback, through the CLI: strangers
//! are refused and listed, invitations admit once and can be revoked or
//! expire, untrust closes a live connection, open mode is loud.

use std::time::Duration;

use ivaldi_tests::Repo;
use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_empty, p2p_forged, wait_until, whoami};

/// A forged repository with one seal and a running daemon.
fn origin() -> Repo {
    let a = p2p_forged();
    a.write("hello.txt", "hello\n");
    a.seal("first");
    configure_loopback(&a, &["--heartbeat-interval", "200ms"]);
    a
}

fn dir_of(r: &Repo) -> String {
    r.path().to_str().expect("UTF-8 path").to_owned()
}

#[test]
fn a_stranger_is_refused_told_why_and_listed_as_pending() {
    let a = origin();
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    // A clone by address meets a node that does not know its key.
    let err = b.fails(&["p2p", "clone", &da.addr(), &dir_of(&b)]);
    assert!(
        err.contains("is not trusted by") && err.contains("ivaldi p2p trust "),
        "the refusal says why and what to do: {err}"
    );
    assert!(
        !b.dot().exists(),
        "a refused clone leaves no repository behind"
    );
    let st = da.status();
    assert_eq!(st["stats"]["untrusted_refused"], 1, "{st}");
    assert_eq!(st["open"], "off", "{st}");
    let pending = a.json(&["p2p", "pending", "--json"]);
    let list = pending["pending"].as_array().expect("a list");
    assert_eq!(list.len(), 1, "{pending}");
    let text = a.ok(&["p2p", "pending"]);
    let id = list[0]["id"].as_str().expect("an id");
    assert!(
        text.contains(&format!("ivaldi p2p trust {id}")),
        "pending says how to trust it: {text}"
    );
    // Trusting it empties the list.
    a.ok(&["p2p", "trust", id]);
    let pending = a.json(&["p2p", "pending", "--json"]);
    assert_eq!(pending["pending"], serde_json::json!([]), "{pending}");
}

#[test]
fn an_invitation_admits_once_and_a_spent_or_revoked_one_says_so() {
    let a = origin();
    let da = Daemon::start("A", &a);
    let ticket = da.invite();
    let b = p2p_empty();
    let out = b.ok(&["p2p", "clone", &ticket, &dir_of(&b)]);
    assert!(out.contains("Cloned repository"), "{out}");
    // A recorded B as trusted (write), B recorded A and its address.
    let a_cfg = a.json(&["p2p", "config", "--json"]);
    let b_id = whoami(&b);
    assert!(
        a_cfg["trusted_peers"].to_string().contains(&b_id),
        "{a_cfg}"
    );
    let b_cfg = b.json(&["p2p", "config", "--json"]);
    assert!(
        b_cfg["trusted_peers"].to_string().contains(&da.node_id()),
        "{b_cfg}"
    );
    assert_eq!(b_cfg["known_peers"], serde_json::json!([da.addr()]));

    // The one use is spent.
    let c = p2p_empty();
    let err = c.fails(&["p2p", "clone", &ticket, &dir_of(&c)]);
    assert!(err.contains("no uses left"), "{err}");
    let list = a.json(&["p2p", "invite", "--list", "--json"]);
    assert_eq!(list["invites"], serde_json::json!([]), "{list}");

    // A revoked ticket is refused; so is an expired one.
    let revoked = da.invite_with(&["--uses", "5"]);
    let id = a.json(&["p2p", "invite", "--list", "--json"])["invites"][0]["id"]
        .as_str()
        .expect("an open invitation")
        .to_owned();
    a.ok(&["p2p", "invite", "--revoke", &id]);
    let err = c.fails(&["p2p", "clone", &revoked, &dir_of(&c)]);
    assert!(err.contains("unknown here"), "{err}");
    let short = da.invite_with(&["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let err = c.fails(&["p2p", "clone", &short, &dir_of(&c)]);
    assert!(err.contains("has expired"), "{err}");
    assert!(!c.dot().exists());
    // A damaged ticket never dials anything.
    let mut bad = ticket.clone();
    bad.insert(20, 'x');
    let err = c.fails(&["p2p", "clone", &bad, &dir_of(&c)]);
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn a_read_only_invitation_cannot_move_timelines() {
    let a = origin();
    let da = Daemon::start("A", &a);
    let before = a.head_of("main").expect("A has main");
    let ticket = da.invite_with(&["--read"]);
    let b = p2p_empty();
    b.ok(&["p2p", "clone", &ticket, &dir_of(&b)]);
    configure_loopback(&b, &["--heartbeat-interval", "200ms"]);
    let db = Daemon::start("B", &b);
    let b_id = db.node_id();
    wait_until(
        Duration::from_secs(10),
        "B to connect to A",
        || da.peer_ids().contains(&b_id),
        || da.diagnostics(),
    );
    b.write("b.txt", "from b\n");
    b.seal("b's seal");
    let _ = b.run(&["p2p", "sync"]);
    wait_until(
        Duration::from_secs(10),
        "A to refuse B's head",
        || da.status()["stats"]["access_refused"].as_u64().unwrap_or(0) >= 1,
        || da.diagnostics(),
    );
    assert_eq!(a.head_of("main").as_deref(), Some(before.as_str()));
}

#[test]
fn untrust_closes_a_live_connection_within_a_second() {
    let a = origin();
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    b.ok(&["p2p", "clone", &da.invite(), &dir_of(&b)]);
    configure_loopback(&b, &["--heartbeat-interval", "200ms"]);
    let db = Daemon::start("B", &b);
    let b_id = db.node_id();
    wait_until(
        Duration::from_secs(10),
        "B to connect to A",
        || da.peer_ids().contains(&b_id),
        || da.diagnostics(),
    );
    let out = a.ok(&["p2p", "untrust", &b_id]);
    assert!(out.contains("No longer trusting"), "{out}");
    let t = std::time::Instant::now();
    wait_until(
        Duration::from_secs(1),
        "A to drop B",
        || !da.peer_ids().contains(&b_id),
        || da.diagnostics(),
    );
    assert!(t.elapsed() <= Duration::from_secs(1));
    // B keeps redialling (A is its known peer) and is refused each time;
    // A's new seal never reaches it.
    a.write("after.txt", "after\n");
    let head = a.seal("after");
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(b.head_of("main").as_deref(), Some(head.as_str()));
    assert!(!da.peer_ids().contains(&b_id));
    wait_until(
        Duration::from_secs(10),
        "A to list B as pending",
        || a.ok(&["p2p", "pending"]).contains(&b_id),
        || da.diagnostics(),
    );
}

#[test]
fn open_mode_is_a_choice_and_status_says_so() {
    let a = origin();
    let text = a.ok(&["p2p", "config", "--open", "read"]);
    assert!(!text.is_empty());
    let da = Daemon::start("A", &a);
    let st = a.ok(&["p2p", "status"]);
    assert!(st.contains("OPEN MODE (read)"), "{st}");
    // Any key may now read: a clone by address works.
    let b = p2p_empty();
    b.ok(&["p2p", "clone", &da.addr(), &dir_of(&b)]);
    assert_eq!(b.head_of("main"), a.head_of("main"));
    let err = a.fails(&["p2p", "config", "--open", "everyone"]);
    assert!(err.contains("--open"), "{err}");
}

#[test]
fn join_pairs_an_existing_clone_with_another_node() {
    // C is a clone of B's; A does not know C. `join` with A's ticket pairs
    // them without a new clone.
    let a = origin();
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    b.ok(&["p2p", "clone", &da.invite(), &dir_of(&b)]);
    configure_loopback(&b, &["--heartbeat-interval", "200ms"]);
    b.ok(&["p2p", "remove-peer", &da.addr()]);
    let db = Daemon::start("B", &b);
    let c = p2p_empty();
    c.ok(&["p2p", "clone", &db.invite(), &dir_of(&c)]);
    configure_loopback(&c, &["--heartbeat-interval", "200ms"]);
    let dc = Daemon::start("C", &c);
    let c_id = dc.node_id();
    assert!(!da.peer_ids().contains(&c_id));

    // A ticket for another repository is refused before anything changes.
    let other = p2p_forged();
    configure_loopback(&other, &[]);
    let dother = Daemon::start("other", &other);
    let err = c.fails(&["p2p", "join", &dother.invite()]);
    assert!(err.contains("the ticket is for repository"), "{err}");

    let out = c.ok(&["p2p", "join", &da.invite()]);
    assert!(out.contains("joined"), "{out}");
    wait_until(
        Duration::from_secs(10),
        "A and C to be connected",
        || da.peer_ids().contains(&c_id),
        || da.diagnostics(),
    );
    let c_cfg = c.json(&["p2p", "config", "--json"]);
    assert!(
        c_cfg["known_peers"].to_string().contains(&da.addr()),
        "{c_cfg}"
    );
    // A seal on A reaches C directly.
    a.write("direct.txt", "direct\n");
    let head = a.seal("direct");
    wait_until(
        Duration::from_secs(10),
        "A's seal to reach C",
        || c.head_of("main").as_deref() == Some(head.as_str()),
        || dc.diagnostics(),
    );
    // A restart keeps the pairing: it was written to both configurations.
    drop(dc);
    let dc = Daemon::start("C again", &c);
    wait_until(
        Duration::from_secs(10),
        "C to reconnect to A after a restart",
        || da.peer_ids().contains(&c_id),
        || dc.diagnostics(),
    );
}
