//! `ivaldi p2p trace` and `peers --verbose` on two real daemons, and one sync
//! followed across both daemons' logs by its peer and sync id.

use std::time::Duration;

use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_empty, p2p_forged, wait_until};
use serde_json::Value;

fn trace(r: &ivaldi_tests::Repo, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["p2p", "trace", "--json"];
    args.extend_from_slice(extra);
    r.ok(&args)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn trace_shows_one_sync_on_both_sides_and_logs_follow_it() {
    let a = p2p_forged();
    a.write("f.txt", "one\n");
    a.seal("one");
    configure_loopback(&a, &[]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    configure_loopback(&b, &[]);
    let db = Daemon::start("B", &b);
    b.ok(&["p2p", "add-peer", &da.addr()]);
    let (a_id, b_id) = (da.node_id(), db.node_id());
    wait_until(
        Duration::from_secs(10),
        "B connected to A",
        || db.peer_ids().contains(&a_id),
        String::new,
    );
    a.write("f.txt", "one\ntwo\n");
    let head = a.seal("two");
    wait_until(
        Duration::from_secs(20),
        "B has A's new seal",
        || b.head_of("main").as_deref() == Some(head.as_str()),
        String::new,
    );

    // B pulled: its trace shows a sync_request out to A, A's shows it in,
    // with the same sync id, then objects out and sync_complete.
    let tb = trace(&b, &["--peer", &a_id[..8]]);
    let req = tb
        .iter()
        .rev()
        .find(|m| m["dir"] == "out" && m["kind"] == "sync_request")
        .unwrap_or_else(|| panic!("no sync_request in B's trace: {tb:?}"));
    let sync = req["sync"].as_u64().expect("a sync id");
    assert!(req["bytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(req["peer"].as_str(), Some(a_id.as_str()));
    assert!(req.get("payload").is_none(), "payloads only when asked for");
    let ta = trace(&a, &[]);
    let kinds_a: Vec<(&str, &str)> = ta
        .iter()
        .filter(|m| m["sync"].as_u64() == Some(sync) && m["peer"] == b_id.as_str())
        .map(|m| {
            (
                m["dir"].as_str().unwrap_or(""),
                m["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for want in [
        ("in", "sync_request"),
        ("out", "sync_response"),
        ("out", "objects"),
        ("out", "sync_complete"),
    ] {
        assert!(
            kinds_a.contains(&want),
            "A's trace for sync {sync} lacks {want:?}: {kinds_a:?}"
        );
    }
    assert!(
        ta.iter().any(|m| m["kind"] == "heartbeat"),
        "every type is traced"
    );
    // A filter that matches nobody shows nothing.
    assert!(trace(&a, &["--peer", "ffffffffffff"]).is_empty() || !a_id.starts_with("ff"));

    // Both logs name the sync: B's as an event, A's as the served request.
    let log_a = std::fs::read_to_string(da.log_path()).expect("A's log");
    let log_b = std::fs::read_to_string(db.log_path()).expect("B's log");
    assert!(
        log_a.lines().any(|l| l.contains("serving sync request")
            && l.contains(&format!("sync={sync}"))
            && l.contains(&b_id[..12])),
        "A's log does not show sync {sync} served to B"
    );
    assert!(
        log_b.lines().any(|l| l.contains("sync_started")
            && l.contains(&format!("\"sync\":{sync}"))
            && l.contains(&a_id)),
        "B's log does not show sync {sync} started with A"
    );

    // peers --verbose shows each connection's state machine.
    let out = b.ok(&["p2p", "peers", "--verbose"]);
    assert!(
        out.contains("handshake ready") && out.contains("sync idle"),
        "{out}"
    );
    assert!(out.contains("features lz4,topology-summary"), "{out}");
}
