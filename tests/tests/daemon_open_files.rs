//! Open files stay bounded (issue "Compact history").
//!
//! A daemon used to keep every pack open twice (its reading store and its
//! writing store each held a `File` per pack), and every seal and every sync
//! landing adds a pack, so a long-running daemon ran out of descriptors.
//! Two daemons on loopback, B cloned from A, auto-sync on. 1,000 seals on A,
//! one small edit each; B follows. Both daemons' `/proc/<pid>/fd` counts are
//! sampled along the way: they stay under a fixed bound and do not grow with
//! the history, and B ends on A's last head.

use std::time::{Duration, Instant};

use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_empty, p2p_forged, wait_until};

const SEALS: usize = 1000;
/// Descriptors a daemon may hold whatever the history: two stores of at most
/// 32 open packs each, plus sockets, the log, the lock and the like.
const FD_BOUND: usize = 128;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
}

#[test]
fn a_thousand_seals_keep_both_daemons_open_files_bounded() {
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

    let started = Instant::now();
    let mut samples: Vec<(usize, usize, usize)> = Vec::new();
    for i in 1..=SEALS {
        a.write(&format!("dir{}/f.txt", i % 7), format!("edit {i}\n"));
        a.ok(&["seal", "-m", &format!("edit {i}")]);
        if i % 100 == 0 {
            let s = (i, open_fds(da.pid()), open_fds(db.pid()));
            eprintln!(
                "after {i} seals ({:?}): A holds {} fds, B {}; A has {} packs, B {}",
                started.elapsed(),
                s.1,
                s.2,
                a.pack_files().len(),
                b.pack_files().len()
            );
            samples.push(s);
        }
    }
    let head = a.head_of("main").expect("A has main");
    wait_until(
        Duration::from_secs(30),
        "B on A's last head",
        || b.head_of("main").as_deref() == Some(head.as_str()),
        || format!("B's main is {:?}, A's is {head}", b.head_of("main")),
    );
    let end = (SEALS, open_fds(da.pid()), open_fds(db.pid()));
    eprintln!(
        "{SEALS} seals and B following took {:?}; at the end A holds {} fds, B {}; \
         A has {} packs, B {}",
        started.elapsed(),
        end.1,
        end.2,
        a.pack_files().len(),
        b.pack_files().len()
    );
    samples.push(end);
    for &(i, fa, fb) in &samples {
        assert!(
            fa < FD_BOUND && fb < FD_BOUND,
            "after {i} seals A holds {fa} fds and B {fb} (bound {FD_BOUND})"
        );
    }
    // Not growing with history: the last sample is within a small margin of
    // the first (at 100 seals), though the history is ten times longer.
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    for (name, f0, f1) in [("A", first.1, last.1), ("B", first.2, last.2)] {
        assert!(
            f1 <= f0 + 16,
            "{name}'s descriptors grew from {f0} at 100 seals to {f1} at {SEALS}"
        );
    }
    b.ok(&["verify"]);
    assert_eq!(b.log(None).len(), SEALS + 1);
}
