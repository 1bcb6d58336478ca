//! Hostile traffic against a daemon that is busy serving a large sync: garbage
//! on its TCP port, a fake handshake followed by a huge length prefix, an
//! authenticated peer that sends a 4 GiB frame header, a connection that never
//! speaks, and junk and oversized datagrams on its discovery port. The daemon
//! must survive, drop every bad connection, count the violations, and finish
//! the honest peer's sync undisturbed.
//!
//! All traffic stays on 127.0.0.1. Every `ivaldi` process runs with
//! `IVALDI_DISCOVERY_ADDRS=127.255.255.255`; daemons are stopped by their guards.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ivaldi_core::noise::{Keypair, Role, Session};
use ivaldi_core::rng::Rng;
use ivaldi_tests::p2p::{
    Daemon, Relay, configure_loopback, edit_config_file, free_udp_port, p2p_empty, p2p_forged,
    wait_until,
};
use ivaldi_tests::pseudo_random_bytes;

const MIB: usize = 1024 * 1024;
/// The handshake timeout the attacked daemon runs with.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads until the daemon closes the connection; returns how long that took
/// (from `since`), or `None` if it was still open after `limit`.
fn time_to_close(s: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(since.elapsed())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set_read_timeout");
        match s.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if since.elapsed() >= limit {
                    return None;
                }
            }
            // A reset is a close too.
            Err(_) => return Some(since.elapsed()),
        }
    }
}

/// (a) Bytes that are not a Noise handshake at all.
fn garbage(addr: SocketAddr) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).expect("connect for garbage");
    let start = Instant::now();
    let mut junk = b"GET / HTTP/1.1\r\nHost: ivaldi\r\n\r\n".to_vec();
    junk.extend(pseudo_random_bytes(99, 70_000));
    // The daemon may close while we are still writing.
    let _ = s.write_all(&junk);
    time_to_close(&mut s, start, HANDSHAKE_TIMEOUT + Duration::from_secs(3))
}

/// (b) A well-formed first handshake message (a random ephemeral key), then a
/// 4-byte 0xFFFFFFFF "length" and silence.
fn fake_handshake_then_huge_length(addr: SocketAddr) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).expect("connect for fake handshake");
    let start = Instant::now();
    let mut msg1 = vec![0x00, 0x20];
    msg1.extend(pseudo_random_bytes(5, 32));
    s.write_all(&msg1).expect("write message 1");
    // The daemon answers with message 2 (a u16 length and the record).
    let mut len = [0u8; 2];
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set_read_timeout");
    s.read_exact(&mut len)
        .expect("the daemon answers a well-formed message 1");
    let _ = s.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]);
    time_to_close(&mut s, start, HANDSHAKE_TIMEOUT + Duration::from_secs(3))
}

/// (b') A peer that completes the real Noise handshake with a key of its own,
/// then announces a frame of 0xFFFFFFFF bytes inside the secure channel.
fn authenticated_huge_frame(addr: SocketAddr) -> Option<Duration> {
    let kp = Keypair::from_private([0x42; 32]).expect("key");
    let mut session = Session::new(
        Role::Initiator,
        &kp,
        Rng::from_u64(4242),
        true,
        b"ivaldi".to_vec(),
    )
    .expect("session");
    let mut s = TcpStream::connect(addr).expect("connect for the authenticated attack");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set_read_timeout");
    let start = Instant::now();
    let mut out = Vec::new();
    session.start(&mut out);
    s.write_all(&out).expect("write message 1");
    let mut buf = vec![0u8; 64 * 1024];
    while !session.is_established() {
        let n = s.read(&mut buf).expect("read handshake");
        assert!(n > 0, "the daemon closed during a valid handshake");
        let mut plain = Vec::new();
        out.clear();
        session
            .receive(&buf[..n], &mut plain, &mut out)
            .expect("the daemon's handshake is valid");
        s.write_all(&out).expect("write message 3");
    }
    out.clear();
    let mut frame = vec![0xFF, 0xFF, 0xFF, 0xFF];
    frame.extend_from_slice(b"{\"id\":1}");
    session.send(&frame, &mut out).expect("encrypt");
    let _ = s.write_all(&out);
    time_to_close(&mut s, start, HANDSHAKE_TIMEOUT + Duration::from_secs(3))
}

/// (c) A connection that opens and says nothing.
fn silent(addr: SocketAddr) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).expect("connect silently");
    let start = Instant::now();
    time_to_close(&mut s, start, HANDSHAKE_TIMEOUT + Duration::from_secs(4))
}

/// Junk, empty and oversized datagrams to the discovery port (loopback only).
fn udp_junk(port: u16) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let mut sent = 0;
    let mut send = |d: &[u8]| {
        if sock.send_to(d, to).is_ok() {
            sent += 1;
        }
    };
    send(&[]);
    send(b"{\"node_id\":\"x\",\"port\":1}");
    send(b"IVALDI\x00\x01\xff\xff\xff\xff");
    for i in 0..200u64 {
        send(&pseudo_random_bytes(i + 1000, 1 + (i as usize * 37) % 1500));
    }
    for i in 0..5u64 {
        send(&pseudo_random_bytes(i + 77, 60_000));
    }
    send(&vec![b'{'; 65_000]);
    sent
}

#[test]
fn hostile_traffic_does_not_disturb_syncing_peers() {
    let big = if cfg!(debug_assertions) {
        16 * MIB
    } else {
        20 * MIB
    };
    let a = p2p_forged();
    a.write("seed.txt", "seed\n");
    a.seal("seed");
    let dport = free_udp_port();
    configure_loopback(
        &a,
        &[
            "--discovery",
            "on",
            "--discovery-port",
            &dport.to_string(),
            "--discovery-addr",
            &format!("127.255.255.255:{dport}"),
        ],
    );
    // No CLI flag sets the handshake timeout; the config file does.
    edit_config_file(&a, |c| {
        c.insert("handshake_timeout".into(), "1s".into());
    });
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    b.ok(&[
        "p2p",
        "clone",
        &da.invite(),
        b.path().to_str().expect("UTF-8"),
    ]);

    a.write("big/one.bin", pseudo_random_bytes(11, big / 2));
    a.seal("first half");
    a.write("big/two.bin", pseudo_random_bytes(12, big / 2));
    let head = a.seal("second half");

    // B pulls through a throttled relay so the transfer lasts a few seconds.
    let relay = Relay::start(da.socket_addr(), (big as u64) / 4);
    configure_loopback(&b, &[]);
    // The clone remembers A's own address; this test goes through the relay only.
    b.ok(&["p2p", "remove-peer", &da.addr()]);
    b.ok(&["p2p", "add-peer", &relay.addr().to_string()]);
    let db = Daemon::start("B", &b);
    let a_id = da.node_id();
    let b_id = db.node_id();
    wait_until(
        Duration::from_secs(10),
        "B's sync from A to be under way",
        || db.status()["stats"]["bytes_in"].as_u64().unwrap_or(0) > (big as u64) / 16,
        String::new,
    );
    assert_ne!(
        b.head_of("main").as_deref(),
        Some(head.as_str()),
        "too fast"
    );

    // The attack, all at once, while the transfer runs.
    let addr = da.socket_addr();
    let t_silent = std::thread::spawn(move || silent(addr));
    let t_fake = std::thread::spawn(move || fake_handshake_then_huge_length(addr));
    let garbage_closed = garbage(addr);
    let auth_closed = authenticated_huge_frame(addr);
    let datagrams = udp_junk(dport);
    let silent_closed = t_silent.join().expect("silent thread");
    let fake_closed = t_fake.join().expect("fake-handshake thread");
    eprintln!(
        "closed after: garbage {garbage_closed:?}, authenticated huge frame {auth_closed:?}, \
         fake handshake + 0xFFFFFFFF {fake_closed:?}, silent {silent_closed:?}; \
         {datagrams} datagrams sent"
    );
    assert!(
        b.head_of("main").as_deref() != Some(head.as_str()),
        "the sync finished before the attack did; the test proves less than it should"
    );

    assert!(da.is_alive(), "A died under hostile traffic");
    let bound = HANDSHAKE_TIMEOUT + Duration::from_secs(2);
    let garbage_closed = garbage_closed.expect("A kept a garbage connection open");
    assert!(
        garbage_closed < bound,
        "garbage closed after {garbage_closed:?}"
    );
    let auth_closed = auth_closed.expect("A kept a connection with a 4 GiB frame header open");
    assert!(auth_closed < bound, "{auth_closed:?}");
    let fake_closed = fake_closed.expect("A kept a stalled fake handshake open");
    assert!(
        fake_closed < bound,
        "a stalled handshake closed after {fake_closed:?}"
    );
    let silent_closed = silent_closed.expect("A kept a silent connection open");
    assert!(
        silent_closed >= HANDSHAKE_TIMEOUT / 2 && silent_closed < bound,
        "a silent connection closed after {silent_closed:?}; the handshake timeout is {HANDSHAKE_TIMEOUT:?}"
    );

    // The honest sync completes, without a single failure or reconnect.
    relay.set_rate(0);
    wait_until(
        Duration::from_secs(30),
        "B's main to reach A's head",
        || b.head_of("main").as_deref() == Some(head.as_str()),
        String::new,
    );
    let v = b.json(&["verify", "--json"]);
    assert_eq!(v["problems"], serde_json::json!([]), "{v}");
    let ss = b.json(&["p2p", "sync-status", "--json"]);
    assert_eq!(ss["peers"][&a_id]["failures"], 0, "B's syncs failed: {ss}");

    let st = da.status();
    let violations = st["stats"]["violations"].as_u64().unwrap_or(0);
    assert!(
        violations >= 2,
        "A counted {violations} protocol violations for garbage and a 4 GiB frame: {st}"
    );
    let peers = st["peers"].as_array().expect("peers");
    assert_eq!(
        peers.len(),
        1,
        "A should have only B left connected, every hostile connection dropped: {st}"
    );
    assert_eq!(peers[0]["peer"], b_id.as_str(), "{st}");
    let verbose = a.json(&["p2p", "peers", "--verbose", "--json"]);
    assert_eq!(
        verbose["peers"].as_array().map(Vec::len),
        Some(1),
        "half-open hostile connections linger: {verbose}"
    );
    let events = da.events();
    assert!(
        events.iter().any(|e| e["event"] == "protocol_violation"
            && e["reason"].as_str().is_some_and(|r| r.contains("exceeds"))),
        "no protocol_violation event for the 4 GiB frame: {events:?}"
    );
    // (B's clone connected with B's key too; only the daemon's connection counts.)
    let since = events
        .iter()
        .rposition(|e| e["event"] == "peer_connected" && e["peer"] == b_id.as_str())
        .expect("A saw B's daemon connect");
    assert_eq!(
        events[since]["conn"], peers[0]["conn"],
        "B's daemon reconnected during the attack: {events:?}"
    );
    assert!(
        !events[since..]
            .iter()
            .any(|e| e["event"] == "peer_disconnected" && e["peer"] == b_id.as_str()),
        "B's connection was dropped during the attack: {events:?}"
    );
    // Junk datagrams never become discovered peers.
    let d = a.json(&["p2p", "discovered", "--json"]);
    let found = d["discovered"].as_array().expect("discovered array");
    assert!(
        found.iter().all(|p| p["node_id"] != "x"),
        "a junk datagram was taken for an announcement: {d}"
    );
}
