//! A host churning connections against a real daemon hits the per-IP accept
//! limit, while an honest peer on another address keeps syncing.
//!
//! All traffic stays on loopback: the churning "host" binds its sockets to
//! 127.0.0.5, the honest daemon connects from 127.0.0.1.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ivaldi_tests::p2p::{
    Daemon, configure_loopback, edit_config_file, p2p_forged, p2p_repo, wait_until,
};

/// A TCP connection to `to` from `from_ip` (any free port).
fn connect_from(from_ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: SocketAddr = format!("{from_ip}:0").parse().expect("an address");
    s.bind(&local.into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// Whether the daemon closes `s` within `limit` (refused at accept).
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("set_read_timeout");
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_host_churning_connections_is_rate_limited_while_a_peer_syncs() {
    let a = p2p_forged();
    a.write("f.txt", "one\n");
    a.seal("one");
    // B holds a copy of the repository and gets its own identity at start;
    // the two trust each other the way a user sets it up.
    let b = p2p_repo(a.copy_of());
    configure_loopback(&a, &[]);
    edit_config_file(&a, |c| {
        c.insert("accept_burst".into(), 10.into());
        c.insert("accept_rate_per_sec".into(), 1.into());
        c.insert("handshake_timeout".into(), "30s".into());
    });
    let da = Daemon::start("A", &a);
    configure_loopback(&b, &[]);
    let db = Daemon::start("B", &b);
    let a_id = da.node_id();
    a.ok(&["p2p", "trust", &db.node_id()]);
    b.ok(&["p2p", "trust", &a_id]);
    b.ok(&["p2p", "add-peer", &da.addr()]);
    wait_until(
        Duration::from_secs(10),
        "B connected to A",
        || db.peer_ids().contains(&a_id),
        String::new,
    );
    let before = da.status()["stats"]["accepts_rate_limited"]
        .as_u64()
        .unwrap_or(0);

    // The churning host opens 40 connections at once and holds them silent.
    let mut socks = Vec::new();
    for _ in 0..40 {
        match connect_from("127.0.0.5", da.socket_addr()) {
            Ok(s) => socks.push(s),
            Err(e) => panic!("connecting from 127.0.0.5: {e}"),
        }
    }
    let mut refused = 0;
    for s in &mut socks {
        if closed_within(s, Duration::from_millis(300)) {
            refused += 1;
        }
    }
    let limited = da.status()["stats"]["accepts_rate_limited"]
        .as_u64()
        .unwrap_or(0)
        - before;
    eprintln!("{refused} of 40 closed at once; accepts_rate_limited +{limited}");
    assert!(
        limited >= 25,
        "at most the burst (10) and a refill got through: +{limited}"
    );
    assert!(
        refused >= 25,
        "refused connections are closed at once: {refused}"
    );

    // Meanwhile the honest peer keeps syncing.
    a.write("f.txt", "one\ntwo\n");
    let head = a.seal("two");
    wait_until(
        Duration::from_secs(20),
        "B has A's new seal during the churn",
        || b.head_of("main").as_deref() == Some(head.as_str()),
        String::new,
    );
    assert!(da.is_alive());
    drop(socks);
}
