//! Real daemons on loopback syncing real repositories: clone, add-peer, history
//! with large files, repositories that must never mix, a daemon killed in the
//! middle of a transfer, and seals relayed across three daemons.
//!
//! Every `ivaldi` process runs with `IVALDI_DISCOVERY_ADDRS=127.255.255.255`
//! (see `ivaldi_tests::p2p`), every daemon listens on `127.0.0.1` on a port the
//! kernel picks, and every daemon is stopped by its guard, by pid, even when an
//! assertion fails (the guard then prints the daemon's status and log tail).

use std::time::{Duration, Instant};

use ivaldi_tests::p2p::{
    Daemon, Relay, configure_loopback, free_udp_port, p2p_empty, p2p_forged, trust_each_other,
    wait_until,
};
use ivaldi_tests::{Repo, id_of, pseudo_random_bytes};
use serde_json::Value;

const MIB: usize = 1024 * 1024;

/// Debug builds move less data so the whole suite stays quick; release builds
/// use the sizes the issue names.
fn scaled(release: usize, debug: usize) -> usize {
    if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

/// The repository id in `.ivaldi/repo.json`.
fn repo_id(r: &Repo) -> String {
    let path = r.dot().join("repo.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("repo.json is JSON");
    v["id"].as_str().expect("repo.json has an id").to_owned()
}

/// `ivaldi p2p clone ADDR DIR` into the (empty) directory of `into`.
#[track_caller]
fn clone_from(into: &Repo, from: &str) -> String {
    let dir = into.path().to_str().expect("UTF-8 temp path").to_owned();
    into.ok(&["p2p", "clone", from, &dir])
}

/// Seal ids of `log --json` on `main`, newest first.
fn history(r: &Repo) -> Vec<String> {
    r.log(Some("main")).iter().map(id_of).collect()
}

/// `verify --json` must report no problems; returns the object count.
#[track_caller]
fn verify_clean(r: &Repo, what: &str) -> u64 {
    let v = r.json(&["verify", "--json"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "verify found problems in {what}: {v}"
    );
    v["objects"]
        .as_u64()
        .expect("verify reports an object count")
}

/// Waits until `daemon` has a ready connection to the node `peer`.
#[track_caller]
fn wait_connected(daemon: &Daemon, peer: &str, timeout: Duration) -> Duration {
    wait_until(
        timeout,
        &format!("a ready connection to {}", &peer[..12]),
        || daemon.peer_ids().iter().any(|p| p == peer),
        String::new,
    )
}

/// Waits until `main` in `r` points at `head`.
#[track_caller]
fn wait_head(r: &Repo, head: &str, what: &str, timeout: Duration) -> Duration {
    wait_until(
        timeout,
        what,
        || r.head_of("main").as_deref() == Some(head),
        || format!("main in {} is {:?}", r.path().display(), r.head_of("main")),
    )
}

#[test]
fn clone_from_a_running_daemon_gives_an_identical_tree() {
    let a = p2p_forged();
    a.write("README.md", "Ivaldi over loopback\n");
    a.write("src/deep/er/nested/mod.rs", "pub fn hello() {}\n");
    a.write("src/lib.rs", "mod deep;\n");
    a.write("bin/tool.sh", "#!/bin/sh\necho tool\n");
    a.chmod_x("bin/tool.sh");
    a.write("empty", "");
    a.symlink("src/deep/er/nested/mod.rs", "link-to-mod");
    a.symlink("bin", "link-to-dir");
    a.write("data/big.bin", pseudo_random_bytes(1, 3 * MIB));
    a.seal("first: every kind of entry");
    // A second seal, so the clone carries history and not only a tree.
    a.write("src/lib.rs", "mod deep;\npub use deep::*;\n");
    a.write("data/more/small.txt", "more\n");
    a.remove("empty");
    let head = a.seal("second: edits, an addition, a deletion");
    let expected = a.snapshot_tree();
    let expected_history = history(&a);

    configure_loopback(&a, &[]);
    let da = Daemon::start("A", &a);

    let b = p2p_empty();
    let started = Instant::now();
    let out = clone_from(&b, &da.invite());
    let took = started.elapsed();
    assert!(
        out.contains(&format!("Cloned repository {}", repo_id(&a)))
            && out.contains("checked out main"),
        "clone printed: {out}"
    );
    eprintln!("clone of {} KiB took {took:?}", a.objects_size() / 1024);

    b.assert_tree(&expected, "the clone's working tree");
    assert_eq!(
        repo_id(&b),
        repo_id(&a),
        "the clone keeps the repository id"
    );
    assert_eq!(b.head_of("main").as_deref(), Some(head.as_str()));
    assert_eq!(
        b.base().as_deref(),
        Some(head.as_str()),
        "the clone is based on the head"
    );
    assert_eq!(
        history(&b),
        expected_history,
        "the clone has the whole history"
    );
    assert_eq!(b.current_timeline(), "main");
    let st = b.json(&["status", "--json"]);
    for k in ["added", "modified", "deleted"] {
        assert_eq!(
            st["changes"][k].as_array().map(Vec::len),
            Some(0),
            "a fresh clone has no changes: {st}"
        );
    }
    b.ok(&["verify"]);
    assert_eq!(
        verify_clean(&b, "the clone"),
        verify_clean(&a, "the origin")
    );
    assert!(da.is_alive(), "serving a clone must not end the daemon");
}

#[test]
fn two_daemons_sync_a_history_with_a_large_file_via_add_peer() {
    let big = scaled(20 * MIB, 20 * MIB);
    let a = p2p_forged();
    a.write("notes.txt", "one\n");
    a.write("bin/run", "#!/bin/sh\n");
    a.chmod_x("bin/run");
    let first = a.seal("one");
    configure_loopback(&a, &[]);
    let da = Daemon::start("A", &a);

    let b = p2p_empty();
    clone_from(&b, &da.invite());
    assert_eq!(b.head_of("main").as_deref(), Some(first.as_str()));
    configure_loopback(&b, &[]);
    let db = Daemon::start("B", &b);
    let out = b.ok(&["p2p", "add-peer", &da.addr()]);
    assert!(
        out.contains("Added known peer") && out.contains("applied to the running daemon"),
        "add-peer printed: {out}"
    );
    let a_id = da.node_id();
    let b_id = db.node_id();
    wait_connected(&db, &a_id, Duration::from_secs(10));
    wait_connected(&da, &b_id, Duration::from_secs(10));

    // A moves on by several seals, one of them carrying a large file.
    a.write("docs/guide/intro.md", "# Intro\n");
    a.seal("two: docs");
    a.write("media/video.bin", pseudo_random_bytes(7, big));
    a.seal("three: a large file");
    a.write("notes.txt", "one\ntwo\n");
    a.symlink("media/video.bin", "latest-video");
    let head = a.seal("four: edit and a link");

    let took = wait_head(
        &b,
        &head,
        "B's main to reach A's head without any command on B",
        Duration::from_secs(30),
    );
    eprintln!("{} MiB history arrived in B after {took:?}", big / MIB);
    assert_eq!(history(&b), history(&a), "B has A's whole history");

    // A manual sync now has nothing to bring but must still succeed.
    let out = b.ok(&["p2p", "sync"]);
    assert!(out.contains("sync complete"), "p2p sync printed: {out}");
    let js = b.json(&["p2p", "sync", "--json"]);
    assert_eq!(js["ok"], true, "p2p sync --json: {js}");

    let ss = b.json(&["p2p", "sync-status", "--json"]);
    let rec = &ss["peers"][&a_id];
    assert!(
        rec.is_object(),
        "sync-status has no record for A ({a_id}): {ss}"
    );
    assert!(
        rec["objects_in"].as_u64().unwrap_or(0) > 0,
        "sync-status shows no objects in from A: {ss}"
    );
    assert!(
        rec["bytes_in"].as_u64().unwrap_or(0) >= big as u64,
        "sync-status shows fewer than {big} bytes in from A: {ss}"
    );
    assert!(rec["syncs"].as_u64().unwrap_or(0) >= 1, "{ss}");
    assert_eq!(rec["failures"], 0, "{ss}");
    assert!(ss["stats"]["objects_in"].as_u64().unwrap_or(0) > 0, "{ss}");

    // The working tree is still at the clone's seal until `update`.
    assert_eq!(b.base().as_deref(), Some(first.as_str()));
    let out = b.ok(&["update"]);
    assert!(
        out.contains("Updated the working tree"),
        "update printed: {out}"
    );
    b.assert_tree(&a.snapshot_tree(), "B after update");
    assert_eq!(b.base().as_deref(), Some(head.as_str()));
    verify_clean(&b, "B");
    assert!(da.is_alive() && db.is_alive());
}

#[test]
fn separately_forged_repositories_never_exchange_seals() {
    let a = p2p_forged();
    a.write("a.txt", "only in A\n");
    let sa = a.seal("A's seal");
    let b = p2p_forged();
    b.write("b.txt", "only in B\n");
    let sb = b.seal("B's seal");
    assert_ne!(repo_id(&a), repo_id(&b));
    let a_objects = verify_clean(&a, "A");
    let b_objects = verify_clean(&b, "B");

    // A short interval, so background syncs get their chance too.
    configure_loopback(&a, &["--sync-interval", "200ms"]);
    configure_loopback(&b, &["--sync-interval", "200ms"]);
    // Trusted both ways: what keeps them apart is the repository id alone.
    trust_each_other(&a, &b);
    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", &b);
    let out = b.ok(&["p2p", "connect", "127.0.0.1", &da.port().to_string()]);
    assert!(out.contains("connected to"), "connect printed: {out}");
    let a_id = da.node_id();
    let b_id = db.node_id();
    wait_connected(&db, &a_id, Duration::from_secs(10));
    wait_connected(&da, &b_id, Duration::from_secs(10));

    let peers = b.json(&["p2p", "peers", "--json"]);
    let pa = peers["peers"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["peer"] == a_id.as_str()))
        .unwrap_or_else(|| panic!("A missing from B's peers: {peers}"));
    assert_eq!(pa["shares_repo"], false, "{peers}");
    assert_eq!(
        pa["remote_repos"],
        serde_json::json!([repo_id(&a)]),
        "{peers}"
    );

    // Observed semantics: a sync with only foreign peers fails (exit 1) and says why.
    let out = b.fails_output(&["p2p", "sync"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no connected peer serves this repository"),
        "p2p sync stderr: {err}"
    );
    let out = b.fails_output(&["p2p", "sync", "--peer", &a_id[..12]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serves another repository"),
        "p2p sync --peer stderr: {err}"
    );

    // Let several background sync intervals pass with the connection up.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(db.peer_ids().contains(&a_id), "the connection stayed up");

    for (r, own, foreign, objects, name) in [
        (&b, &sb, &sa, b_objects, "B"),
        (&a, &sa, &sb, a_objects, "A"),
    ] {
        let tl = r.json(&["timeline", "list", "--json"]);
        let list = tl["timelines"].as_array().expect("timelines");
        assert_eq!(list.len(), 1, "{name} gained timelines: {tl}");
        assert_eq!(list[0]["head"], own.as_str(), "{name}'s main moved: {tl}");
        let err = r.fails(&["show", foreign]);
        assert!(!err.is_empty(), "{name} knows the other repository's seal");
        assert_eq!(
            verify_clean(r, name),
            objects,
            "{name}'s object count changed"
        );
        assert!(
            !r.dot().join("tracking").exists()
                || ivaldi_tests::dir_size(&r.dot().join("tracking")) == 0,
            "{name} recorded tracking heads of a foreign repository"
        );
    }
    for (d, name) in [(&da, "A"), (&db, "B")] {
        let st = d.status();
        assert_eq!(
            st["stats"]["objects_in"], 0,
            "{name} received objects: {st}"
        );
        assert_eq!(st["stats"]["objects_out"], 0, "{name} sent objects: {st}");
        assert_eq!(st["stats"]["violations"], 0, "{name}: {st}");
        let msgs = &st["stats"]["messages_in"];
        for kind in ["sync_request", "objects", "sync_complete"] {
            assert!(
                msgs[kind].as_u64().unwrap_or(0) == 0,
                "{name} got {kind} messages from a foreign repository: {st}"
            );
        }
    }
}

#[test]
fn killed_daemon_restarts_and_finishes_the_sync() {
    // Many files: a history that takes a while through a throttled relay.
    let files = scaled(40, 20);
    let a = p2p_forged();
    a.write("start.txt", "start\n");
    a.seal("start");
    configure_loopback(&a, &[]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    clone_from(&b, &da.invite());

    for batch in 0..4 {
        for i in 0..files / 4 {
            let n = batch * 100 + i;
            a.write(
                &format!("data/{batch}/file-{i:03}.bin"),
                pseudo_random_bytes(n as u64 + 1, MIB),
            );
        }
        a.seal(&format!("batch {batch}"));
    }
    let head = a.head_of("main").expect("A has a head");
    let total = (files * MIB) as u64;

    // B reaches A through a relay that throttles A's answers, so the transfer
    // is still running when B is killed.
    let rate = total / 4; // about four seconds for everything
    let relay = Relay::start(da.socket_addr(), rate);
    configure_loopback(&b, &[]);
    // The clone remembers A's own address; this test goes through the relay only.
    b.ok(&["p2p", "remove-peer", &da.addr()]);
    b.ok(&["p2p", "add-peer", &relay.addr().to_string()]);
    let db = Daemon::start("B", &b);
    let old_pid = db.pid();

    // Kill -9 once a good part (but not all) has arrived.
    wait_until(
        Duration::from_secs(20),
        "B to receive a quarter of the transfer",
        || {
            let st = db.status();
            st["stats"]["bytes_in"].as_u64().unwrap_or(0) > total / 4
        },
        || db.diagnostics(),
    );
    db.kill9();
    assert_ne!(
        b.head_of("main").as_deref(),
        Some(head.as_str()),
        "the transfer finished before B was killed; slow the relay down"
    );
    let p2p = b.dot().join("p2p");
    assert!(
        p2p.join("daemon.pid").exists() && p2p.join("control.sock").exists(),
        "a killed daemon leaves its pid file and socket behind"
    );
    let out = b.fails_output(&["p2p", "status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no daemon is running"),
        "status with a stale socket: {err}"
    );

    // Restart: the stale pid file and socket are cleaned up; the sync resumes.
    relay.set_rate(0);
    let out = db.restart();
    assert!(out.contains("Daemon started"), "restart printed: {out}");
    assert_ne!(db.pid(), old_pid);
    assert_eq!(
        db.pid_file(),
        Some(db.pid()),
        "the pid file names the new daemon"
    );
    let took = wait_head(
        &b,
        &head,
        "B's main to reach A's head after the restart",
        Duration::from_secs(30),
    );
    eprintln!("after the restart the sync finished in {took:?}");
    verify_clean(&b, "B after the interrupted sync");
    assert_eq!(history(&b), history(&a));
    b.ok(&["update"]);
    b.assert_tree(
        &a.snapshot_tree(),
        "B after the interrupted sync and update",
    );
    // The killed daemon's partial pack is debris once its pid is gone; the
    // next command that opens the repository removes it. (A zombie still has a
    // /proc entry, so wait for the reaper first.)
    let reaped = Instant::now();
    while ivaldi_tests::p2p::proc_state(old_pid).is_some()
        && reaped.elapsed() < Duration::from_secs(15)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    b.ok(&["verify"]);
    let tmp = b.dot().join("tmp");
    let leftovers: Vec<String> = std::fs::read_dir(&tmp)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "temporary files of the killed transfer (pid {old_pid}, state {:?}) are left in {}: {leftovers:?}",
        ivaldi_tests::p2p::proc_state(old_pid),
        tmp.display()
    );
}

/// A seal made on A: returns its id.
fn seal_on(r: &Repo, file: &str, text: &str) -> String {
    r.write(file, text);
    r.seal(&format!("edit {file}"))
}

#[test]
fn auto_sync_interval_and_seal_broadcast() {
    let interval = Duration::from_secs(1);
    let a = p2p_forged();
    a.write("base.txt", "base\n");
    a.seal("base");
    configure_loopback(&a, &["--sync-interval", "1s"]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    clone_from(&b, &da.invite());
    let c = p2p_empty();
    clone_from(&c, &da.invite());
    // C reaches A only through B: it forgets the address it cloned from,
    // and B and C trust each other.
    c.ok(&["p2p", "remove-peer", &da.addr()]);
    trust_each_other(&b, &c);
    configure_loopback(&b, &[]);
    configure_loopback(&c, &["--sync-interval", "1s"]);
    let db = Daemon::start("B", &b);
    let dc = Daemon::start("C", &c);
    // B gets its interval from `p2p interval` while running.
    let out = b.ok(&["p2p", "interval", "1s"]);
    assert!(
        out.contains("Sync interval set to 1s (applied to the running daemon)"),
        "p2p interval printed: {out}"
    );
    for d in [&da, &db, &dc] {
        let st = d.status();
        assert_eq!(st["sync_interval"], "1s", "{st}");
        assert_eq!(st["auto_sync"], true, "{st}");
    }
    b.ok(&["p2p", "add-peer", &da.addr()]);
    c.ok(&["p2p", "add-peer", &db.addr()]);
    let (a_id, b_id, c_id) = (da.node_id(), db.node_id(), dc.node_id());
    wait_connected(&db, &a_id, Duration::from_secs(10));
    wait_connected(&db, &c_id, Duration::from_secs(10));
    wait_connected(&dc, &b_id, Duration::from_secs(10));
    assert!(
        !dc.peer_ids().contains(&a_id),
        "C must only reach A through B"
    );

    for round in 0..2 {
        let head = seal_on(&a, "news.txt", &format!("round {round}\n"));
        let started = Instant::now();
        wait_head(
            &c,
            &head,
            "A's seal to reach C through B",
            interval * 2 + Duration::from_secs(10),
        );
        let took = started.elapsed();
        eprintln!("round {round}: A's seal reached C in {took:?}");
        assert!(
            took <= interval * 2,
            "A's seal took {took:?} to reach C, more than two sync intervals ({:?})",
            interval * 2
        );
        assert_eq!(b.head_of("main").as_deref(), Some(head.as_str()));
    }
    // Nothing was asked of B or C: they only moved their timelines.
    c.ok(&["update"]);
    c.assert_tree(&a.snapshot_tree(), "C after update");
}

#[test]
fn three_daemons_discover_each_other_and_auto_sync() {
    let dport = free_udp_port().to_string();
    let target = format!("127.255.255.255:{dport}");
    let discovery = [
        "--discovery",
        "on",
        "--discovery-port",
        &dport,
        "--discovery-addr",
        &target,
        "--discovery-interval",
        "1s",
        "--sync-interval",
        "1s",
    ];
    let a = p2p_forged();
    a.write("base.txt", "base\n");
    a.seal("base");
    configure_loopback(&a, &discovery);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    clone_from(&b, &da.invite());
    let c = p2p_empty();
    clone_from(&c, &da.invite());
    // Discovery alone brings them together: the clones forget A's address,
    // and B and C trust each other (each already trusts A and is trusted by it).
    for r in [&b, &c] {
        r.ok(&["p2p", "remove-peer", &da.addr()]);
    }
    trust_each_other(&b, &c);
    configure_loopback(&b, &discovery);
    configure_loopback(&c, &discovery);
    let db = Daemon::start("B", &b);
    let dc = Daemon::start("C", &c);
    for d in [&da, &db, &dc] {
        let cfg = d.repo().json(&["p2p", "config", "--json"]);
        assert_eq!(cfg["known_peers"], serde_json::json!([]), "{cfg}");
        assert_eq!(
            d.status()["discovery"]["enabled"],
            true,
            "discovery did not start:\n{}",
            d.diagnostics()
        );
    }

    let head = seal_on(&a, "news.txt", "found by discovery\n");
    let started = Instant::now();
    let discovered = |d: &Daemon| d.repo().ok(&["p2p", "discovered", "--json"]);
    for (r, name) in [(&b, "B"), (&c, "C")] {
        wait_until(
            Duration::from_secs(10),
            &format!("A's seal to reach {name} by discovery alone"),
            || r.head_of("main").as_deref() == Some(head.as_str()),
            || {
                format!(
                    "p2p discovered --json: A {}\nB {}\nC {}",
                    discovered(&da),
                    discovered(&db),
                    discovered(&dc)
                )
            },
        );
    }
    eprintln!(
        "A's seal reached B and C by discovery in {:?}",
        started.elapsed()
    );
    // Within a few announcement intervals every daemon lists the other two, as
    // serving the same repository.
    let ids = [da.node_id(), db.node_id(), dc.node_id()];
    let lists_others = |d: &Daemon, own: &str| {
        let v = d.repo().json(&["p2p", "discovered", "--json"]);
        let matching: Vec<String> = v["discovered"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|p| p["matching"] == true)
                    .filter_map(|p| p["node_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.iter()
            .filter(|i| i.as_str() != own)
            .all(|i| matching.contains(i))
    };
    for (d, own) in [(&da, &ids[0]), (&db, &ids[1]), (&dc, &ids[2])] {
        wait_until(
            Duration::from_secs(5),
            "every daemon to list the other two as discovered",
            || lists_others(d, own),
            || discovered(d),
        );
    }
}
