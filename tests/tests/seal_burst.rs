//! Bursts of seals do not break connections (issue 13).
//!
//! Two daemons on loopback, B cloned from A, auto-sync on. A script makes 300
//! seals on A in quick succession; each `ivaldi seal` writes its pack, moves
//! the head and tells A's daemon. A's daemon must see each pack before it
//! announces or serves its seal, so no sync fails, no connection drops, and B
//! is on A's last head within a second of the last seal.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ivaldi_tests::Repo;
use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_empty, p2p_forged, wait_until};
use serde_json::Value;

const SEALS: usize = 300;

/// Everything `p2p events --follow --json` prints while the test runs (the
/// daemon keeps only the last 1,000 events; a burst makes more).
struct Follower {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    reader: Option<JoinHandle<()>>,
    /// Events before this index (the replay of earlier ones, such as the
    /// clone's own connection closing) are not counted.
    from: usize,
}

impl Follower {
    fn start(r: &Repo) -> Follower {
        let mut child = r
            .command(&["p2p", "events", "--follow", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn p2p events --follow");
        let out = child.stdout.take().expect("piped stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("events lock").push(v);
                }
            }
        });
        Follower {
            child,
            events,
            reader: Some(reader),
            from: 0,
        }
    }

    /// Counts only events from now on.
    fn mark(&mut self) {
        self.from = self.events.lock().expect("events lock").len();
    }

    /// Events named `kind` seen since [`Follower::mark`].
    fn of(&self, kind: &str) -> Vec<Value> {
        self.events.lock().expect("events lock")[self.from..]
            .iter()
            .filter(|e| e["event"] == kind)
            .cloned()
            .collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn stats(r: &Repo) -> Value {
    r.json(&["p2p", "sync-status", "--json"])["stats"].clone()
}

#[test]
fn a_burst_of_300_seals_syncs_without_failures_or_disconnects() {
    let a = p2p_forged();
    a.write("base.txt", "base\n");
    a.seal("base");
    configure_loopback(&a, &[]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 temp path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    configure_loopback(&b, &[]);
    let db = Daemon::start("B", &b);
    let a_id = da.node_id();
    wait_until(
        Duration::from_secs(10),
        "B connected to A",
        || db.peer_ids().contains(&a_id),
        String::new,
    );
    for d in [&da, &db] {
        assert_eq!(d.status()["auto_sync"], true);
    }
    let (mut fa, mut fb) = (Follower::start(&a), Follower::start(&b));
    // The followers are subscribed once each sees its first replayed event.
    wait_until(
        Duration::from_secs(10),
        "both event followers subscribed",
        || !fa.events.lock().unwrap().is_empty() && !fb.events.lock().unwrap().is_empty(),
        String::new,
    );
    // The replay comes in one go; what follows is live.
    std::thread::sleep(Duration::from_millis(300));
    fa.mark();
    fb.mark();

    let started = Instant::now();
    for i in 0..SEALS {
        a.write("burst.txt", format!("seal {i}\n"));
        a.ok(&["seal", "-m", &format!("burst {i}")]);
    }
    let last_seal = Instant::now();
    eprintln!(
        "{SEALS} seals took {:?} ({:?} each)",
        last_seal - started,
        (last_seal - started) / SEALS as u32
    );
    let head = a.head_of("main").expect("A has main");
    // Measured conservatively: from the end of the last `seal` to the end of
    // the `head_of` call that first sees B on it.
    let behind = loop {
        if b.head_of("main").as_deref() == Some(head.as_str()) {
            break last_seal.elapsed();
        }
        assert!(
            last_seal.elapsed() < Duration::from_secs(30),
            "B's main is {:?}, A's is {head}",
            b.head_of("main")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("B was on A's last head {behind:?} after the last seal");

    // Let late events arrive before counting.
    std::thread::sleep(Duration::from_millis(500));
    let mut problems = Vec::new();
    for (name, f, r) in [("A", &fa, &a), ("B", &fb, &b)] {
        let failed = f.of("sync_failed");
        let gone = f.of("peer_disconnected");
        let s = stats(r);
        eprintln!(
            "{name}: {} syncs completed, {} failed, {} serves failed, {} disconnects",
            s["syncs_completed"],
            failed.len(),
            s["serves_failed"],
            gone.len()
        );
        if !failed.is_empty() || !gone.is_empty() || s["serves_failed"] != 0 {
            problems.push(format!(
                "{name}: failed syncs {failed:?}, disconnects {gone:?}, {s}"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(db.peer_ids().contains(&a_id), "B is still connected to A");
    assert!(
        behind <= Duration::from_secs(1),
        "B reached A's last head {behind:?} after the last seal (at most 1 s)"
    );
}
