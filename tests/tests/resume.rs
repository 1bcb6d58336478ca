//! Issue 8 §4: "an interrupted transfer resumes without resending the objects
//! that already landed". A large pull is cut by killing the receiving daemon;
//! the restarted daemon's byte counter shows what the resumed sync moved,
//! against an uninterrupted sync of the same history.
//!
//! A pull lands checkpoints while it receives (the core asks for one every
//! 8 MiB of objects; the daemon's writer may land closed prefixes more often)
//! and records their roots in `.ivaldi/p2p/resume/<peer>`. After the restart
//! the pull names those roots in `sync_request.resume`, and the sender skips
//! them and everything beneath them.

use std::time::Duration;

use ivaldi_tests::p2p::{Daemon, Relay, configure_loopback, p2p_empty, p2p_forged, wait_until};
use ivaldi_tests::pseudo_random_bytes;

const MIB: usize = 1024 * 1024;

fn objects(r: &ivaldi_tests::Repo) -> u64 {
    let v = r.json(&["verify", "--json"]);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    v["objects"].as_u64().expect("objects")
}

fn bytes_in(d: &Daemon) -> u64 {
    d.status()["stats"]["bytes_in"].as_u64().unwrap_or(0)
}

#[test]
fn a_resumed_sync_does_not_resend_what_landed() {
    let seals = 8;
    let per_seal = 2 * MIB;
    let a = p2p_forged();
    a.write("start.txt", "start\n");
    a.seal("start");
    configure_loopback(&a, &[]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 temp path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    // C starts where B starts and syncs without interruption: the baseline.
    let c = p2p_empty();
    let cdir = c.path().to_str().expect("UTF-8 temp path").to_owned();
    c.ok(&["p2p", "clone", &da.invite(), &cdir]);
    for s in 0..seals {
        a.write(
            &format!("data/{s}.bin"),
            pseudo_random_bytes(s as u64 + 7, per_seal),
        );
        a.seal(&format!("seal {s}"));
    }
    let head = a.head_of("main").expect("A has a head");
    let total = (seals * per_seal) as u64;
    let before = objects(&b);
    configure_loopback(&c, &[]);
    c.ok(&["p2p", "add-peer", &da.addr()]);
    let dc = Daemon::start("C", &c);
    wait_until(
        Duration::from_secs(60),
        "C's uninterrupted sync",
        || c.head_of("main").as_deref() == Some(head.as_str()),
        || dc.diagnostics(),
    );
    let full = bytes_in(&dc);
    drop(dc);

    let relay = Relay::start(da.socket_addr(), total / 5);
    configure_loopback(&b, &[]);
    // The clone remembers A's own address; this test goes through the relay only.
    b.ok(&["p2p", "remove-peer", &da.addr()]);
    b.ok(&["p2p", "add-peer", &relay.addr().to_string()]);
    // Checkpoints of 8 MiB (the old default), so several land before the kill.
    b.set_env("IVALDI_CHECKPOINT_MIB", "8");
    let db = Daemon::start("B", &b);
    // Kill once three quarters arrived and a checkpoint's resume record was
    // written (after its landing).
    let record = b.dot().join("p2p").join("resume");
    let recorded = || {
        std::fs::read_dir(&record)
            .map(|rd| {
                rd.flatten()
                    .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
            })
            .unwrap_or(false)
    };
    wait_until(
        Duration::from_secs(60),
        "B to receive three quarters of the transfer and record a checkpoint",
        || bytes_in(&db) > full * 3 / 4 && recorded(),
        || db.diagnostics(),
    );
    let first = bytes_in(&db);
    db.kill9();
    assert_ne!(
        b.head_of("main").as_deref(),
        Some(head.as_str()),
        "finished too early"
    );
    let landed = objects(&b) - before;

    relay.set_rate(0);
    db.restart();
    wait_until(
        Duration::from_secs(60),
        "the resumed sync to finish",
        || {
            let _ = b.run(&["p2p", "sync"]);
            b.head_of("main").as_deref() == Some(head.as_str())
        },
        || db.diagnostics(),
    );
    let second = bytes_in(&db);
    eprintln!(
        "resume: {total} bytes of content, {full} bytes on the wire uninterrupted; \
         {first} received before the kill, {landed} objects landed; the resumed sync \
         received {second}"
    );
    assert!(landed > 0, "nothing landed before the kill");
    objects(&b);
    assert!(
        second * 10 < full * 6,
        "the resumed sync received {second} bytes; an uninterrupted one takes {full}, and \
         {first} had arrived before the kill ({landed} objects landed)"
    );
}
