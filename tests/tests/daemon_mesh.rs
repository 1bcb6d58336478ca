//! The mesh with real daemons: A can reach only B and C can reach only B, and B
//! does not even hold the repository. A seal made on A still reaches C, through
//! an end-to-end session relayed by B.

use std::time::Duration;

use ivaldi_tests::p2p::{
    Daemon, configure_loopback, p2p_empty, p2p_forged, trust_each_other, wait_until,
};
use serde_json::Value;

#[test]
fn a_syncs_to_c_through_b_which_does_not_hold_the_repository() {
    let a = p2p_forged();
    a.write("hello.txt", "hello\n");
    a.seal("first");
    configure_loopback(
        &a,
        &["--heartbeat-interval", "1s", "--topology-interval", "2s"],
    );
    let c = p2p_empty();
    {
        let da = Daemon::start("A (for the clone)", &a);
        let dir = c.path().to_str().expect("UTF-8 path").to_owned();
        c.ok(&["p2p", "clone", &da.invite(), &dir]);
    }
    let b = p2p_forged(); // another repository altogether: a pure relay
    for r in [&b, &c] {
        configure_loopback(
            r,
            &["--heartbeat-interval", "1s", "--topology-interval", "2s"],
        );
    }
    // B relays for both, so each trusts it and it trusts each (A and C
    // already trust each other through the invitation).
    trust_each_other(&a, &b);
    trust_each_other(&b, &c);
    let id = |r: &ivaldi_tests::Repo| r.ok(&["p2p", "whoami"]).trim().to_owned();
    let (a_id, b_id, c_id) = (id(&a), id(&b), id(&c));
    // The per-test setting that refuses direct connections between A and C.
    a.ok(&["p2p", "config", "--no-direct", &c_id]);
    c.ok(&["p2p", "config", "--no-direct", &a_id]);

    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", &b);
    let dc = Daemon::start("C", &c);
    a.ok(&["p2p", "add-peer", &db.addr()]);
    c.ok(&["p2p", "add-peer", &db.addr()]);
    // C may even try A directly: it is refused.
    let _ = c.run(&["p2p", "connect", "127.0.0.1", &da.port().to_string()]);

    let routed_to = |r: &ivaldi_tests::Repo, peer: &str| {
        let v = r.json(&["p2p", "peers", "--json"]);
        v["peers"].as_array().is_some_and(|ps| {
            ps.iter().any(|p| {
                p["peer"].as_str() == Some(peer)
                    && p["routed_via_mesh"] == Value::Bool(true)
                    && p["state"] == "ready"
            })
        })
    };
    wait_until(
        Duration::from_secs(30),
        "C to hold a routed session with A",
        || routed_to(&c, &a_id),
        || {
            format!(
                "C peers: {}\nC topology: {}",
                c.ok(&["p2p", "peers", "--json"]),
                c.ok(&["p2p", "topology", "--json"])
            )
        },
    );
    // No direct session between A and C.
    let direct = c.json(&["p2p", "peers", "--json"])["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["peer"].as_str() == Some(a_id.as_str()) && p["routed_via_mesh"] == Value::Bool(false)
        })
        .count();
    assert_eq!(direct, 0);

    a.write("news.txt", "made on A\n");
    let head = a.seal("second, on A");
    wait_until(
        Duration::from_secs(30),
        "A's seal to reach C",
        || c.head_of("main").as_deref() == Some(head.as_str()),
        || format!("C main = {:?}", c.head_of("main")),
    );
    c.ok(&["update"]);
    assert_eq!(c.read_string("news.txt"), "made on A\n");

    // What the user sees.
    let route = c.json(&["p2p", "route", &a_id[..10], "--json"]);
    assert_eq!(route["hops"], 2, "{route}");
    assert_eq!(route["path"][1].as_str(), Some(b_id.as_str()), "{route}");
    let dot = c.ok(&["p2p", "topology", "--dot"]);
    assert!(dot.contains("graph") && dot.contains(&b_id[..8]), "{dot}");
    let status = b.json(&["p2p", "status", "--json"]);
    assert!(
        status["mesh"]["relayed_bytes"].as_u64().unwrap_or(0) > 0,
        "B relayed: {status}"
    );
    assert!(
        status["mesh"]["routing_table_size"].as_u64().unwrap_or(0) >= 2,
        "{status}"
    );
    // B never stored A's repository.
    assert!(
        b.head_of("main").is_none()
            || b.log(Some("main"))
                .iter()
                .all(|s| s["message"] != "second, on A")
    );
    drop((da, db, dc));
}
