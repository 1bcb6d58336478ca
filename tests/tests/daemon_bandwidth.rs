//! Bandwidth caps on real daemons over loopback: a capped upload of a few MiB
//! completes, `status --json` shows the cap, and a cap changed at run time
//! with `ivaldi p2p config --upload-rate` is applied without a restart while
//! the session (short heartbeats) stays alive.
//!
//! Timing is only ever used as an upper bound on throughput (a slow machine
//! moves fewer bytes, never more), so the test cannot flake on a busy host.

use std::time::{Duration, Instant};

use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_empty, wait_until};
use ivaldi_tests::pseudo_random_bytes;

const MIB: u64 = 1024 * 1024;

fn bandwidth(d: &Daemon) -> serde_json::Value {
    d.status()["bandwidth"].clone()
}

fn bytes_out(d: &Daemon) -> u64 {
    d.status()["stats"]["bytes_out"].as_u64().unwrap_or(0)
}

#[test]
fn capped_upload_completes_and_the_cap_changes_at_run_time() {
    const SLOW: u64 = 512 * 1024;
    const SIZE: usize = 4 * MIB as usize;
    let a = ivaldi_tests::p2p::p2p_forged();
    a.write("notes.txt", "one\n");
    a.seal("one");
    configure_loopback(&a, &["--upload-rate", "512K", "--heartbeat-interval", "1s"]);
    let da = Daemon::start("A", &a);
    assert_eq!(bandwidth(&da)["upload_rate"], SLOW, "{}", da.status());
    assert_eq!(bandwidth(&da)["download_rate"], 0);

    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 temp path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    configure_loopback(&b, &["--heartbeat-interval", "1s"]);
    let db = Daemon::start("B", &b);
    b.ok(&["p2p", "add-peer", &da.addr()]);
    let a_id = da.node_id();
    let b_id = db.node_id();
    wait_until(
        Duration::from_secs(10),
        "B connected to A",
        || db.peer_ids().contains(&a_id) && da.peer_ids().contains(&b_id),
        String::new,
    );

    // A large file on A: B pulls it through A's 512 KiB/s upload cap.
    let before = bytes_out(&da);
    let start = Instant::now();
    a.write("big.bin", pseudo_random_bytes(11, SIZE));
    let head = a.seal("big");
    std::thread::sleep(Duration::from_millis(1500));
    let sent = bytes_out(&da) - before;
    let elapsed = start.elapsed().as_secs_f64();
    // At most rate × t plus the bucket (a quarter second), one bulk frame
    // pushed ahead by a control message, and control traffic.
    let bound = (SLOW as f64 * elapsed) as u64 + SLOW / 2 + 256 * 1024;
    assert!(
        sent <= bound,
        "A sent {sent} bytes in {elapsed:.2} s under a {SLOW} B/s cap (bound {bound})"
    );
    assert!(
        b.head_of("main").as_deref() != Some(head.as_str()),
        "4 MiB cannot have crossed a 512 KiB/s link in 1.5 s"
    );
    eprintln!("capped: {sent} bytes in {elapsed:.2} s (bound {bound})");

    // Raise the cap while the transfer runs: applied without a restart.
    a.ok(&["p2p", "config", "--upload-rate", "4MB/s"]);
    assert_eq!(bandwidth(&da)["upload_rate"], 4 * MIB, "{}", da.status());
    let took = wait_until(
        Duration::from_secs(15),
        "B's main to reach A's big seal",
        || b.head_of("main").as_deref() == Some(head.as_str()),
        || format!("A: {}\nB: {}", da.status(), db.status()),
    );
    eprintln!(
        "the rest arrived {took:?} after raising the cap (total {:?})",
        start.elapsed()
    );
    assert!(!b.exists("big.bin"), "the working tree is not updated yet");

    // The session survived the capped transfer: same connection, no failures.
    assert!(da.peer_ids().contains(&b_id) && db.peer_ids().contains(&a_id));
    let ss = b.json(&["p2p", "sync-status", "--json"]);
    assert_eq!(ss["peers"][&a_id]["failures"], 0, "{ss}");

    // Caps can be removed again, and per-peer caps are shown too.
    a.ok(&[
        "p2p",
        "config",
        "--upload-rate",
        "0",
        "--peer-rate",
        &format!("{b_id}=1M,2M"),
    ]);
    let bw = bandwidth(&da);
    assert_eq!(bw["upload_rate"], 0, "{bw}");
    assert_eq!(bw["peer_rates"][&b_id]["upload"], MIB, "{bw}");
    assert_eq!(bw["peer_rates"][&b_id]["download"], 2 * MIB, "{bw}");
    let err = a.fails(&["p2p", "config", "--upload-rate", "fast"]);
    assert!(err.contains("upload-rate"), "{err}");
    assert!(da.is_alive() && db.is_alive());
}

#[test]
fn download_cap_pauses_reading_and_the_sync_still_completes() {
    const CAP: u64 = 512 * 1024;
    const SIZE: usize = 2 * MIB as usize;
    let a = ivaldi_tests::p2p::p2p_forged();
    a.write("notes.txt", "one\n");
    a.seal("one");
    configure_loopback(&a, &["--heartbeat-interval", "1s"]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 temp path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    configure_loopback(
        &b,
        &["--heartbeat-interval", "1s", "--download-rate", "512K"],
    );
    let db = Daemon::start("B", &b);
    assert_eq!(bandwidth(&db)["download_rate"], CAP, "{}", db.status());
    b.ok(&["p2p", "add-peer", &da.addr()]);
    let a_id = da.node_id();
    wait_until(
        Duration::from_secs(10),
        "B connected to A",
        || db.peer_ids().contains(&a_id),
        String::new,
    );
    let bytes_in = || db.status()["stats"]["bytes_in"].as_u64().unwrap_or(0);
    let before = bytes_in();
    let start = Instant::now();
    a.write("big.bin", pseudo_random_bytes(12, SIZE));
    let head = a.seal("big");
    std::thread::sleep(Duration::from_millis(1500));
    let got = bytes_in() - before;
    let elapsed = start.elapsed().as_secs_f64();
    // The bucket, plus what one read may take past a spent allowance.
    let bound = (CAP as f64 * elapsed) as u64 + CAP / 2 + 256 * 1024;
    assert!(
        got <= bound,
        "B read {got} bytes in {elapsed:.2} s under a {CAP} B/s download cap (bound {bound})"
    );
    eprintln!("download cap: {got} bytes in {elapsed:.2} s (bound {bound})");
    // Lift the cap at run time: the paused reader resumes and the sync ends.
    b.ok(&["p2p", "config", "--download-rate", "0"]);
    assert_eq!(bandwidth(&db)["download_rate"], 0);
    wait_until(
        Duration::from_secs(15),
        "B's main to reach A's big seal",
        || b.head_of("main").as_deref() == Some(head.as_str()),
        || format!("A: {}\nB: {}", da.status(), db.status()),
    );
    let ss = b.json(&["p2p", "sync-status", "--json"]);
    assert_eq!(ss["peers"][&a_id]["failures"], 0, "{ss}");
    assert!(da.is_alive() && db.is_alive());
}
