//! Many timelines from one peer, with real daemons on loopback: a sync that
//! creates 1,000 timelines does not hold up another peer's seal or the
//! heartbeats (heads land as one logged batch, `repo::heads_log`), and a peer
//! offering 5,000 names creates at most its budget (`max_new_timelines_per_peer`)
//! while the daemon keeps answering.

use std::time::{Duration, Instant};

use ivaldi_tests::Repo;
use ivaldi_tests::p2p::{
    Daemon, configure_loopback, disconnects, edit_config_file, p2p_forged, p2p_repo, trust_pairs,
    wait_until,
};

/// A forged repository with one seal, and `copies` copies of it made before
/// any node identity exists (so each copy gets its own).
fn base_and_copies(copies: usize) -> (Repo, Vec<Repo>, String) {
    let a = p2p_forged();
    a.write("f.txt", "base\n");
    let head = a.seal("base");
    let others = (0..copies).map(|_| p2p_repo(a.copy_of())).collect();
    (a, others, head)
}

/// Adds `n` timelines `many/NNNNN` at `head` by writing their head files, as
/// `timeline create` would, without a process per name.
fn add_timelines(r: &Repo, n: usize, head: &str) {
    let dir = r.dot().join("timelines").join("many");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..n {
        std::fs::write(dir.join(format!("{i:05}")), format!("{head}\n")).expect("write head");
    }
}

fn timelines(r: &Repo) -> usize {
    let dir = r.dot().join("timelines").join("many");
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

#[test]
fn a_thousand_timeline_sync_does_not_delay_another_peers_seal() {
    let (a, copies, _) = base_and_copies(2);
    let (b, c) = (&copies[0], &copies[1]);
    add_timelines(&a, 1000, &a.head_of("main").expect("main"));
    for r in [&a, b, c] {
        configure_loopback(r, &[]);
        edit_config_file(r, |cfg| {
            cfg.insert("heartbeat_interval".into(), "1s".into());
            cfg.insert("heartbeat_misses".into(), 3.into());
        });
    }
    // B takes all 1,000 in one sync: one landing of 2,000 heads (timelines
    // and tracking names).
    edit_config_file(b, |cfg| {
        cfg.insert("max_new_timelines_per_sync".into(), 1000.into());
        cfg.insert("max_new_timelines_per_peer".into(), 1000.into());
    });
    trust_pairs(&[(&a, b), (b, c)]);
    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", b);
    let dc = Daemon::start("C", c);
    let (a_id, c_id) = (da.node_id(), dc.node_id());
    c.ok(&["p2p", "add-peer", &db.addr()]);
    wait_until(
        Duration::from_secs(20),
        "B and C to connect",
        || db.peer_ids().contains(&c_id),
        || format!("{}\n{}", db.diagnostics(), dc.diagnostics()),
    );
    // The big sync starts, and C seals while it runs.
    b.ok(&["p2p", "add-peer", &da.addr()]);
    c.write("c.txt", "from C\n");
    let started = Instant::now();
    let c_head = c.seal("C's seal");
    wait_until(
        Duration::from_secs(30),
        "C's seal to reach B",
        || b.head_of("main").as_deref() == Some(c_head.as_str()),
        || {
            format!(
                "{}\n{}\n{}",
                da.diagnostics(),
                db.diagnostics(),
                dc.diagnostics()
            )
        },
    );
    let seal_took = started.elapsed();
    wait_until(
        Duration::from_secs(60),
        "B to hold A's 1,000 timelines",
        || timelines(b) == 1000,
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );
    let all_took = started.elapsed();
    eprintln!("C's seal reached B in {seal_took:?}; 1,000 timelines in {all_took:?}");
    assert!(
        seal_took < Duration::from_secs(2),
        "C's seal took {seal_took:?} to reach B during the 1,000-timeline sync\n{}\n{}",
        db.diagnostics(),
        dc.diagnostics()
    );
    // Heartbeats kept both sessions alive throughout.
    let peers = db.peer_ids();
    assert!(peers.contains(&a_id) && peers.contains(&c_id), "{peers:?}");
    assert_eq!(
        disconnects(&db),
        Vec::<String>::new(),
        "{}",
        db.diagnostics()
    );
    let st = db.status();
    assert_eq!(st["stats"]["timelines_refused"], 0, "{st}");
    // The landing's heads log is settled once the writer is idle.
    wait_until(
        Duration::from_secs(20),
        "B's heads log to be settled",
        || std::fs::read_dir(b.dot().join("heads-log")).map_or(0, |d| d.flatten().count()) == 0,
        || db.diagnostics(),
    );
    let v = b.run(&["verify"]);
    assert!(v.status.success(), "verify: {v:?}");
}

#[test]
fn five_thousand_offered_timelines_create_at_most_the_cap_and_status_answers() {
    let (a, copies, head) = base_and_copies(1);
    let b = &copies[0];
    add_timelines(&a, 5000, &head);
    configure_loopback(&a, &[]);
    configure_loopback(b, &[]);
    trust_pairs(&[(&a, b)]);
    let da = Daemon::start("A", &a);
    let db = Daemon::start("B", b);
    let a_id = da.node_id();
    b.ok(&["p2p", "add-peer", &da.addr()]);
    // Defaults: 100 per sync, 1,000 per peer. `status` answers promptly all
    // along (the slowest answer is checked, not only the last).
    let mut slowest = Duration::ZERO;
    let mut refused = 0;
    wait_until(
        Duration::from_secs(120),
        "B to take its 1,000 timelines and refuse the rest",
        || {
            let t = Instant::now();
            let st = db.status();
            slowest = slowest.max(t.elapsed());
            refused = st["stats"]["timelines_refused"].as_u64().unwrap_or(0);
            timelines(b) == 1000 && refused == 4000
        },
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );
    // Nothing more arrives later, from this peer or on a forced sync.
    b.ok(&["p2p", "sync"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(timelines(b), 1000);
    let st = db.status();
    assert_eq!(st["stats"]["timelines_refused"], 4000, "{st}");
    // Name order: the first thousand names, none after.
    assert!(b.dot().join("timelines/many/00999").exists());
    assert!(!b.dot().join("timelines/many/01000").exists());
    // Reported once, with the count, not once per name (read from the
    // daemon's log: the 1,000 timeline events push it out of `p2p events`).
    let log = std::fs::read_to_string(db.log_path()).expect("B's log");
    let reports: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""event":"timelines_refused""#))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains(r#""refused":4000"#), "{}", reports[0]);
    assert!(reports[0].contains(&a_id), "{}", reports[0]);
    let t = Instant::now();
    b.ok(&["p2p", "status"]);
    slowest = slowest.max(t.elapsed());
    eprintln!("slowest status answer during the flood: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "status took {slowest:?}");
    assert!(db.peer_ids().contains(&a_id));
}
