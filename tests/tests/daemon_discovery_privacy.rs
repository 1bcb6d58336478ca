//! Discovery that gives nothing away (issue 12): real daemons on loopback,
//! announcing to 127.255.255.255 on a private port, with a passive listener on
//! that port recording every datagram they send.
//!
//! - No captured announcement carries the repository id.
//! - Two daemons of the repository that trust each other find and connect to
//!   each other by discovery alone, and sync.
//! - A third daemon of the same repository that they do not trust is never
//!   dialled: at most it shows in their `ivaldi p2p pending` (it trusts them
//!   and dials them itself), and it never gets their data.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ivaldi_core::discovery::{Announcement, MAGIC, repo_tag};
use ivaldi_tests::Repo;
use ivaldi_tests::p2p::{Daemon, configure_loopback, free_udp_port, p2p_forged, wait_until};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

/// The repository id in `.ivaldi/repo.json`.
fn repo_id(r: &Repo) -> String {
    let path = r.dot().join("repo.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("repo.json is JSON");
    v["id"].as_str().expect("repo.json has an id").to_owned()
}

/// A socket on the discovery port beside the daemons' (they share it the same
/// way), so it receives a copy of every broadcast announcement.
fn passive_listener(port: u16) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp socket");
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.set_reuse_port(true).expect("SO_REUSEPORT");
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())
        .expect("bind the discovery port");
    let s = UdpSocket::from(s);
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    s
}

/// Every datagram waiting on `sock`.
fn capture(sock: &UdpSocket, into: &mut Vec<Vec<u8>>) {
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        into.push(buf[..n].to_vec());
    }
}

fn whoami(r: &Repo) -> String {
    r.ok(&["p2p", "whoami"]).trim().to_owned()
}

fn pending_ids(d: &Daemon) -> Vec<String> {
    let v = d.repo().json(&["p2p", "pending", "--json"]);
    v["pending"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|p| p["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn announcements_hide_the_repository_and_only_trusted_daemons_connect() {
    let dport = free_udp_port();
    let listener = passive_listener(dport);
    let dport_text = dport.to_string();
    let target = format!("127.255.255.255:{dport}");
    let discovery = [
        "--discovery",
        "on",
        "--discovery-port",
        &dport_text,
        "--discovery-addr",
        &target,
        "--discovery-interval",
        "1s",
        "--sync-interval",
        "1s",
    ];
    // Three working copies of one repository (the same id), made before any
    // node key exists, so each gets its own.
    let a = p2p_forged();
    a.write("base.txt", "base\n");
    a.seal("base");
    let b = a.copy_of();
    let c = a.copy_of();
    let repo = repo_id(&a);
    assert_eq!(repo_id(&c), repo);
    for r in [&a, &b, &c] {
        configure_loopback(r, &discovery);
    }
    let (ida, idb, idc) = (whoami(&a), whoami(&b), whoami(&c));
    assert!(ida != idb && idb != idc && ida != idc, "distinct node keys");
    // A and B trust each other; C trusts them, but neither trusts C.
    a.ok(&["p2p", "trust", &idb]);
    b.ok(&["p2p", "trust", &ida]);
    c.ok(&["p2p", "trust", &ida]);
    c.ok(&["p2p", "trust", &idb]);

    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", &b);
    let dc = Daemon::start("C", &c);
    let mut captured = Vec::new();

    // A and B find each other by discovery alone (no known_peers, no connect).
    let discovered = |d: &Daemon| d.repo().ok(&["p2p", "discovered", "--json"]);
    wait_until(
        Duration::from_secs(20),
        "A and B to connect by discovery",
        || {
            capture(&listener, &mut captured);
            da.peer_ids().contains(&idb) && db.peer_ids().contains(&ida)
        },
        || {
            format!(
                "discovered: A {}\nB {}\nC {}\n{}\n{}",
                discovered(&da),
                discovered(&db),
                discovered(&dc),
                da.diagnostics(),
                db.diagnostics()
            )
        },
    );
    // And they sync.
    a.write("news.txt", "only for the team\n");
    let head = a.seal("news");
    wait_until(
        Duration::from_secs(20),
        "A's seal to reach B",
        || {
            capture(&listener, &mut captured);
            b.head_of("main").as_deref() == Some(head.as_str())
        },
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );

    // C dials A and B itself (it trusts them) and is refused: it shows in
    // their pending lists, nowhere else.
    wait_until(
        Duration::from_secs(20),
        "C to show in A's and B's pending lists",
        || {
            capture(&listener, &mut captured);
            pending_ids(&da).contains(&idc) && pending_ids(&db).contains(&idc)
        },
        || {
            format!(
                "{}\n{}\n{}",
                da.diagnostics(),
                db.diagnostics(),
                dc.diagnostics()
            )
        },
    );
    // A few more announcement rounds, so each daemon has announced often and
    // had every chance to dial C.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        capture(&listener, &mut captured);
    }

    for (d, name) in [(&da, "A"), (&db, "B")] {
        assert!(
            !d.peer_ids().contains(&idc),
            "{name} is connected to the untrusted C:\n{}",
            d.diagnostics()
        );
        // Both recognise C as serving the repository (they hold its id), and
        // still never dial it.
        let v = d.repo().json(&["p2p", "discovered", "--json"]);
        let list = v["discovered"].as_array().cloned().unwrap_or_default();
        let entry = list
            .iter()
            .find(|p| p["node_id"] == idc.as_str())
            .unwrap_or_else(|| panic!("{name} has not heard C: {v}"));
        assert_eq!(entry["matching"], true, "{entry}");
        assert!(entry["repos"].get(&repo).is_some(), "{entry}");
        let log = std::fs::read_to_string(d.log_path()).unwrap_or_default();
        let dialled_c = log
            .lines()
            .any(|l| l.contains("auto-connecting") && l.contains(&idc[..12]));
        assert!(!dialled_c, "{name} dialled the untrusted C:\n{log}");
    }
    assert!(dc.peer_ids().is_empty(), "{}", dc.diagnostics());
    assert_ne!(
        c.head_of("main").as_deref(),
        Some(head.as_str()),
        "C got the team's data"
    );

    // What a listener on the LAN heard: announcements from all three, none
    // naming the repository, each tagging it differently.
    capture(&listener, &mut captured);
    let mut tags_by_sender = std::collections::BTreeMap::new();
    for bytes in &captured {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(&repo),
            "an announcement carries the repository id in clear: {text}"
        );
        assert!(bytes.starts_with(MAGIC), "{text}");
        let ann = Announcement::decode(bytes).unwrap_or_else(|e| panic!("{e}: {text}"));
        tags_by_sender.insert(ann.node_id.clone(), ann.repos.clone());
    }
    for (id, name) in [(&ida, "A"), (&idb, "B"), (&idc, "C")] {
        let tags = tags_by_sender
            .get(id)
            .unwrap_or_else(|| panic!("no announcement from {name} among {}", captured.len()));
        assert_eq!(tags.len(), 1, "{name}: {tags:?}");
        assert!(tags.contains_key(&repo_tag(&repo, id)), "{name}: {tags:?}");
    }
    let distinct: std::collections::BTreeSet<&String> =
        tags_by_sender.values().flat_map(|t| t.keys()).collect();
    assert_eq!(distinct.len(), 3, "one tag per sender: {tags_by_sender:?}");
    eprintln!(
        "captured {} announcements; none names repository {repo}",
        captured.len()
    );
}
