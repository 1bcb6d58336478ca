//! A large transfer does not hold up other peers' syncs or the heartbeats
//! (issue "Compact history": "Heartbeats and other peers' syncs are never held
//! behind a large transfer").
//!
//! Real daemons on loopback, heartbeats every second. B pulls a 40 MiB
//! incompressible file from A (on its own timeline). While that transfer is
//! under way, C seals on `main`; C's seal must reach B before the file does,
//! and no session may drop. The file is big enough that, in a debug build,
//! its transfer takes seconds, while C's seal is one small sync: if B's driver
//! took the file's frames one after the other without serving C, the file
//! would land first.

use std::time::Duration;

use ivaldi_tests::p2p::{
    Daemon, configure_loopback, disconnects, edit_config_file, p2p_forged, p2p_repo, trust_pairs,
};
use ivaldi_tests::pseudo_random_bytes;

fn bytes_in(d: &Daemon) -> u64 {
    d.status()["stats"]["bytes_in"].as_u64().unwrap_or(0)
}

#[test]
fn a_large_file_transfer_does_not_hold_up_another_peers_seal() {
    let t0 = std::time::Instant::now();
    let a = p2p_forged();
    a.write("f.txt", "base\n");
    a.seal("base");
    let (b, c) = (p2p_repo(a.copy_of()), p2p_repo(a.copy_of()));
    // The file goes on its own timeline, so C's seal on `main` is a
    // fast-forward for B whichever lands first.
    a.ok(&["timeline", "create", "assets"]);
    a.ok(&["timeline", "switch", "assets"]);
    a.write("big.bin", pseudo_random_bytes(11, 48 << 20));
    let big = a.seal("a large file");
    eprintln!("sealed the file at {:?}", t0.elapsed());
    for r in [&a, &b, &c] {
        configure_loopback(r, &[]);
        edit_config_file(r, |cfg| {
            cfg.insert("heartbeat_interval".into(), "1s".into());
            cfg.insert("heartbeat_misses".into(), 3.into());
        });
    }
    // B reads at most 24 MiB/s from all peers together, so the file takes
    // about two seconds whatever the machine, and C's frames must find their
    // share of the same allowance.
    edit_config_file(&b, |cfg| {
        cfg.insert("download_rate".into(), "24M".into());
    });
    trust_pairs(&[(&a, &b), (&b, &c)]);
    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", &b);
    let dc = Daemon::start("C", &c);
    let (a_id, c_id) = (da.node_id(), dc.node_id());
    let all = || {
        format!(
            "{}\n{}\n{}",
            da.diagnostics(),
            db.diagnostics(),
            dc.diagnostics()
        )
    };
    c.ok(&["p2p", "add-peer", &db.addr()]);
    ivaldi_tests::p2p::wait_until(
        Duration::from_secs(20),
        "B and C to connect",
        || db.peer_ids().contains(&c_id),
        all,
    );

    // The big pull starts; C seals once B is a few MiB into it.
    let before = bytes_in(&db);
    b.ok(&["p2p", "add-peer", &da.addr()]);
    ivaldi_tests::p2p::wait_until(
        Duration::from_secs(60),
        "B to be 4 MiB into the file",
        || bytes_in(&db) > before + (4 << 20),
        all,
    );
    assert_eq!(
        b.head_of("assets"),
        None,
        "the file landed before C sealed: the transfer is too short to show anything\n{}",
        all()
    );
    eprintln!("B 4 MiB into the file at {:?}", t0.elapsed());
    c.write("c.txt", "from C\n");
    let c_head = c.seal("C's seal");
    ivaldi_tests::p2p::wait_until(
        Duration::from_secs(60),
        "C's seal to reach B",
        || b.head_of("main").as_deref() == Some(c_head.as_str()),
        all,
    );
    let file_first = b.head_of("assets");
    eprintln!("C's seal on B at {:?}", t0.elapsed());
    ivaldi_tests::p2p::wait_until(
        Duration::from_secs(180),
        "B to hold the file",
        || b.head_of("assets").as_deref() == Some(big.as_str()),
        all,
    );
    assert_eq!(
        file_first,
        None,
        "B took the whole file before C's one small seal\n{}",
        all()
    );
    eprintln!("the file on B at {:?}", t0.elapsed());
    let peers = db.peer_ids();
    assert!(
        peers.contains(&a_id) && peers.contains(&c_id),
        "{peers:?}\n{}",
        all()
    );
    assert_eq!(disconnects(&db), Vec::<String>::new(), "{}", all());
    assert_eq!(disconnects(&da), Vec::<String>::new(), "{}", all());
    b.ok(&["verify"]);
}
