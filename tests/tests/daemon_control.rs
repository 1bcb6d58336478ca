//! The daemon's control surface on real daemons over loopback: every `--json`
//! command parses and carries the keys scripts rely on, and `p2p stop` leaves
//! nothing behind.
//!
//! Every `ivaldi` process runs with `IVALDI_DISCOVERY_ADDRS=127.255.255.255`,
//! every daemon listens on `127.0.0.1` on a port the kernel picks, and every
//! daemon is stopped by its guard, by pid, even when an assertion fails.

use std::time::{Duration, Instant};

use ivaldi_tests::p2p::{
    Daemon, alive, configure_loopback, free_udp_port, p2p_empty, p2p_forged, proc_state, wait_until,
};
use ivaldi_tests::{Repo, assert_no_panic, describe_output};
use serde_json::Value;

fn repo_id(r: &Repo) -> String {
    let text = std::fs::read_to_string(r.dot().join("repo.json")).expect("repo.json");
    serde_json::from_str::<Value>(&text).expect("repo.json is JSON")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

fn is_node_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// Asserts `v` is an object with every key in `keys`.
#[track_caller]
fn has_keys(v: &Value, keys: &[&str], what: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not a JSON object: {v}"));
    let missing: Vec<&&str> = keys.iter().filter(|k| !obj.contains_key(**k)).collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}: {v}");
}

/// Asserts `v` maps message type names to counts.
#[track_caller]
fn counts_by_type(v: &Value, must: &[&str], what: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object of counts: {v}"));
    for (k, n) in obj {
        assert!(n.as_u64().is_some(), "{what}[{k}] is not a count: {v}");
    }
    for k in must {
        assert!(
            obj.get(*k).and_then(Value::as_u64).unwrap_or(0) > 0,
            "{what} has no {k} messages: {v}"
        );
    }
}

/// The keys of one connection in `status`/`peers`.
const PEER_KEYS: &[&str] = &[
    "conn",
    "peer",
    "addr",
    "direction",
    "state",
    "rtt_micros",
    "last_seen_ago_ms",
    "shares_repo",
    "encrypted",
    "syncing",
    "queued_bytes",
    "remote_repos",
];

#[test]
fn status_and_peers_emit_well_formed_json() {
    let a = p2p_forged();
    a.write("shared.txt", "shared\n");
    a.seal("shared");
    configure_loopback(&a, &["--heartbeat-interval", "100ms"]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    b.ok(&[
        "p2p",
        "clone",
        &da.invite(),
        b.path().to_str().expect("UTF-8"),
    ]);

    // Both sides seal on main before they meet: a divergence for `conflicts`.
    a.write("a-only.txt", "a\n");
    let a_head = a.seal("A diverges");
    b.write("b-only.txt", "b\n");
    let b_head = b.seal("B diverges");

    let dport = free_udp_port();
    configure_loopback(
        &b,
        &[
            "--heartbeat-interval",
            "100ms",
            "--discovery",
            "on",
            "--discovery-port",
            &dport.to_string(),
            "--discovery-addr",
            &format!("127.255.255.255:{dport}"),
        ],
    );
    let db = Daemon::start("B", &b);
    b.ok(&["p2p", "add-peer", &da.addr()]);
    let a_id = da.node_id();
    let b_id = db.node_id();

    // Wait for a measured round trip and for the divergence to be recorded.
    wait_until(
        Duration::from_secs(10),
        "B to measure a round trip to A and record the divergence",
        || {
            let p = b.json(&["p2p", "peers", "--json"]);
            let rtt = p["peers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["rtt_micros"].as_u64().is_some()));
            let c = b.json(&["p2p", "conflicts", "--json"]);
            rtt && c["conflicts"].as_array().is_some_and(|l| !l.is_empty())
        },
        String::new,
    );

    // status --json
    let st = db.status();
    has_keys(
        &st,
        &[
            "node_id",
            "pid",
            "port",
            "discovery_port",
            "repo",
            "started_unix",
            "uptime_secs",
            "auto_sync",
            "sync_interval",
            "peers",
            "stats",
            "conflicts",
            "discovery",
            "events",
        ],
        "status",
    );
    assert!(is_node_id(&st["node_id"]), "{st}");
    assert_eq!(st["pid"].as_u64(), db.pid_file().map(u64::from), "{st}");
    assert_eq!(st["port"].as_u64(), Some(u64::from(db.port())), "{st}");
    assert_ne!(
        st["port"], 0,
        "status reports the real port, not the configured 0"
    );
    assert_eq!(
        st["discovery_port"].as_u64(),
        Some(u64::from(dport)),
        "{st}"
    );
    assert_eq!(st["repo"], repo_id(&b).as_str(), "{st}");
    assert!(
        st["auto_sync"].is_boolean() && st["sync_interval"].is_string(),
        "{st}"
    );
    assert!(
        st["uptime_secs"].is_u64() && st["started_unix"].is_u64(),
        "{st}"
    );
    assert_eq!(st["conflicts"].as_u64(), Some(1), "{st}");
    assert_eq!(st["discovery"]["enabled"], true, "{st}");
    has_keys(
        &st["events"],
        &["emitted", "dropped", "subscribers"],
        "status.events",
    );
    let stats = &st["stats"];
    has_keys(
        stats,
        &[
            "bytes_in",
            "bytes_out",
            "messages_in",
            "messages_out",
            "unknown_messages",
            "duplicate_messages",
            "violations",
            "syncs_completed",
            "syncs_failed",
            "objects_in",
            "objects_out",
            "conflicts",
        ],
        "status.stats",
    );
    assert!(stats["bytes_in"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(stats["bytes_out"].as_u64().unwrap_or(0) > 0, "{st}");
    counts_by_type(
        &stats["messages_in"],
        &["handshake", "heartbeat"],
        "stats.messages_in",
    );
    counts_by_type(
        &stats["messages_out"],
        &["handshake", "heartbeat", "sync_request"],
        "stats.messages_out",
    );
    assert_eq!(stats["violations"], 0, "{st}");
    let peers = st["peers"].as_array().expect("status.peers is an array");
    assert_eq!(peers.len(), 1, "{st}");
    has_keys(&peers[0], PEER_KEYS, "status.peers[0]");

    // peers --json, from both ends.
    let pb = b.json(&["p2p", "peers", "--json"]);
    let list = pb["peers"].as_array().expect("peers array");
    assert_eq!(list.len(), 1, "{pb}");
    let p = &list[0];
    has_keys(p, PEER_KEYS, "B's peers[0]");
    assert_eq!(p["peer"], a_id.as_str(), "{pb}");
    assert_eq!(p["addr"], da.addr().as_str(), "{pb}");
    assert_eq!(p["direction"], "outbound", "{pb}");
    assert_eq!(p["state"], "ready", "{pb}");
    assert!(p["rtt_micros"].as_u64().is_some(), "{pb}");
    assert_eq!(p["shares_repo"], true, "{pb}");
    assert_eq!(p["encrypted"], true, "{pb}");
    assert_eq!(p["remote_repos"], serde_json::json!([repo_id(&a)]), "{pb}");
    let pa = a.json(&["p2p", "peers", "--json"]);
    let p = &pa["peers"][0];
    has_keys(p, PEER_KEYS, "A's peers[0]");
    assert_eq!(p["peer"], b_id.as_str(), "{pa}");
    assert_eq!(p["direction"], "inbound", "{pa}");
    assert!(
        p["addr"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{pa}"
    );
    let verbose = b.json(&["p2p", "peers", "--verbose", "--json"]);
    has_keys(&verbose["peers"][0], PEER_KEYS, "peers --verbose");

    // sync-status --json: per-peer records and the totals.
    let ss = b.json(&["p2p", "sync-status", "--json"]);
    has_keys(&ss, &["peers", "stats"], "sync-status");
    let rec = &ss["peers"][&a_id];
    has_keys(
        rec,
        &[
            "last_sync",
            "last_seen",
            "heads_seen",
            "syncs",
            "failures",
            "objects_in",
            "bytes_in",
            "objects_out",
            "bytes_out",
            "last_error",
        ],
        "sync-status.peers[A]",
    );
    assert!(rec["syncs"].as_u64().unwrap_or(0) >= 1, "{ss}");
    assert!(rec["objects_in"].as_u64().unwrap_or(0) > 0, "{ss}");
    assert_eq!(rec["heads_seen"]["main"], a_head.as_str(), "{ss}");
    has_keys(
        &ss["stats"],
        &["bytes_in", "bytes_out", "objects_in"],
        "sync-status.stats",
    );

    // conflicts --json: the divergence on main.
    let c = b.json(&["p2p", "conflicts", "--json"]);
    let list = c["conflicts"].as_array().expect("conflicts array");
    assert_eq!(list.len(), 1, "{c}");
    has_keys(
        &list[0],
        &["timeline", "local", "remote", "base", "peer"],
        "conflicts[0]",
    );
    assert_eq!(list[0]["timeline"], "main", "{c}");
    assert_eq!(list[0]["local"], b_head.as_str(), "{c}");
    assert_eq!(list[0]["remote"], a_head.as_str(), "{c}");
    assert_eq!(list[0]["peer"], a_id.as_str(), "{c}");
    assert_eq!(
        b.head_of("main").as_deref(),
        Some(b_head.as_str()),
        "main kept"
    );

    // config --json: the stored configuration, every field.
    let cfg = b.json(&["p2p", "config", "--json"]);
    has_keys(
        &cfg,
        &[
            "port",
            "discovery_port",
            "max_peers",
            "known_peers",
            "auto_sync",
            "sync_interval",
            "sync_timeout",
            "conflict_strategy",
            "max_concurrent_syncs",
            "max_message_size",
            "heartbeat_interval",
            "heartbeat_misses",
            "encryption",
            "trusted_peers",
            "allowed_networks",
            "compression",
            "handshake_timeout",
            "reconnect_min",
            "reconnect_max",
            "bind_addr",
            "discovery_addrs",
            "discovery_interval",
            "discovery",
            "log_level",
            "data_dir",
        ],
        "config",
    );
    assert_eq!(cfg["port"], 0, "{cfg}");
    assert_eq!(cfg["bind_addr"], "127.0.0.1", "{cfg}");
    assert_eq!(cfg["heartbeat_interval"], "100ms", "{cfg}");
    assert_eq!(cfg["known_peers"], serde_json::json!([da.addr()]), "{cfg}");

    // whoami, discovered, events.
    let w = b.json(&["p2p", "whoami", "--json"]);
    assert_eq!(w["node_id"], b_id.as_str(), "{w}");
    let plain = b.ok(&["p2p", "whoami"]);
    assert_eq!(plain.trim(), b_id);
    let d = b.json(&["p2p", "discovered", "--json"]);
    let found = d["discovered"]
        .as_array()
        .unwrap_or_else(|| panic!("discovered --json has no discovered array: {d}"));
    for p in found {
        has_keys(
            p,
            &["node_id", "addr", "matching", "last_seen_ago_ms"],
            "discovered[]",
        );
    }
    let events = db.events();
    assert!(!events.is_empty(), "no events recorded");
    for e in &events {
        assert!(e["event"].is_string(), "event without a kind: {e}");
    }
    for kind in [
        "peer_connected",
        "sync_started",
        "sync_completed",
        "conflict_detected",
    ] {
        assert!(
            events.iter().any(|e| e["event"] == kind),
            "no {kind} event in {events:?}"
        );
    }

    // The human-readable forms do not fail either.
    for args in [
        &["p2p", "status"][..],
        &["p2p", "peers"],
        &["p2p", "peers", "--verbose"],
        &["p2p", "sync-status"],
        &["p2p", "conflicts"],
        &["p2p", "discovered"],
        &["p2p", "config"],
        &["p2p", "events"],
    ] {
        let out = b.ok(args);
        assert!(
            !out.trim().is_empty(),
            "`ivaldi {}` printed nothing",
            args.join(" ")
        );
    }
}

/// `p2p status` without a daemon: one line on stderr, exit 1, a pointer to start.
#[track_caller]
fn assert_no_daemon(r: &Repo) {
    let out = r.run(&["p2p", "status"]);
    assert_no_panic(&["p2p", "status"], &out);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(out.stdout.is_empty(), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(
        err.contains("no daemon is running") && err.contains("ivaldi p2p start"),
        "{err:?}"
    );
}

#[test]
fn stop_leaves_no_process_behind() {
    let a = p2p_forged();
    configure_loopback(&a, &[]);
    assert_no_daemon(&a);
    let d = Daemon::start("A", &a);
    let pid = d.pid();
    let p2p = a.dot().join("p2p");
    assert!(alive(pid));
    assert!(p2p.join("control.sock").exists() && p2p.join("daemon.pid").exists());
    assert!(
        d.start_output().contains(&format!("pid {pid}")),
        "{}",
        d.start_output()
    );
    // A second start refuses while one runs.
    let err = a.fails(&["p2p", "start"]);
    assert!(err.contains("already running"), "{err}");

    let started = Instant::now();
    let out = a.run(&["p2p", "stop"]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert!(
            stdout.contains("Daemon stopped"),
            "{}",
            describe_output(&out)
        );
    } else {
        // Known product bug (see `stop_reports_success_every_time`): the reply to
        // `stop` is sometimes lost. Everything else must still hold.
        assert!(
            stderr.contains("closed the connection without replying"),
            "p2p stop failed unexpectedly\n{}",
            describe_output(&out)
        );
        eprintln!("note: p2p stop lost its reply (known bug)");
    }
    eprintln!("p2p stop took {took:?}");
    // `stop` waits for the process, so it is gone once stop returns; allow a
    // moment for the init process to reap it.
    wait_until(
        Duration::from_secs(5),
        "the daemon's pid to disappear",
        || proc_state(pid).is_none_or(|s| s == 'Z'),
        || format!("/proc/{pid} state {:?}", proc_state(pid)),
    );
    assert!(!alive(pid));
    assert!(
        !p2p.join("control.sock").exists(),
        "control socket left behind"
    );
    assert!(!p2p.join("daemon.pid").exists(), "pid file left behind");
    assert_no_daemon(&a);
    // Stopping again says there is nothing to stop.
    let err = a.fails(&["p2p", "stop"]);
    assert!(err.contains("no daemon is running"), "{err}");
}

#[test]
fn stop_reports_success_every_time() {
    // The race shows about once in a hundred stops.
    const ROUNDS: usize = 60;
    let a = p2p_forged();
    configure_loopback(&a, &[]);
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let d = Daemon::start("A", &a);
        // Some traffic on the control socket first, as a user would have.
        d.status();
        let out = a.run(&["p2p", "stop"]);
        if !out.status.success() {
            failures.push(format!("round {round}: {}", describe_output(&out)));
        }
        drop(d);
    }
    assert!(
        failures.is_empty(),
        "p2p stop failed in {} of {ROUNDS} rounds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
