//! Memory stays bounded, whatever the size of a file or a history (issue
//! "Compact history").
//!
//! Two daemons on loopback, auto-sync on. B starts empty (a clone of A's first
//! seal) and pulls, in one sync each: a 96 MiB incompressible file, then a
//! history of 200 seals of ten 20 KB text files. Each daemon's peak resident
//! size (`VmHWM`) stays under a fixed bound that does not depend on either: the
//! transfer is streamed (frames, checkpoints, a bounded disk queue, a bounded
//! read-ahead), never held whole.

use std::time::Duration;

use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_empty, p2p_forged, wait_until};
use ivaldi_tests::pseudo_random_bytes;

/// Peak resident memory a daemon may reach: the daemon's own goal (64 MiB)
/// with room for a debug build's larger code and stacks.
const RSS_BOUND_KIB: u64 = 96 * 1024;

fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

#[test]
fn a_large_file_and_a_long_history_sync_in_bounded_memory() {
    let a = p2p_forged();
    a.write("base.txt", "base\n");
    a.seal("base");
    configure_loopback(&a, &[]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 temp path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);

    // A large file, pulled in one sync when B's daemon starts.
    a.write("big.bin", pseudo_random_bytes(5, 96 << 20));
    a.seal("a large file");
    let big_head = a.head_of("main").expect("A has main");
    configure_loopback(&b, &[]);
    let db = Daemon::start("B", &b);
    wait_until(
        Duration::from_secs(120),
        "B on the large file's seal",
        || b.head_of("main").as_deref() == Some(big_head.as_str()),
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );
    let after_big = (peak_kib(da.pid()), peak_kib(db.pid()));
    eprintln!(
        "96 MiB file: peak RSS A {} KiB, B {} KiB",
        after_big.0, after_big.1
    );

    // A long history, made while B is stopped so it arrives in one pull.
    drop(db);
    let text = |f: usize, v: usize| -> String {
        (0..400)
            .map(|i| {
                if i == v % 400 {
                    format!("line {i} of file {f}: version {v}\n")
                } else {
                    format!("line {i} of file {f}: the same text\n")
                }
            })
            .collect()
    };
    for v in 0..200 {
        a.write(&format!("src/file{}.txt", v % 10), text(v % 10, v));
        a.ok(&["seal", "-m", &format!("version {v}")]);
    }
    let head = a.head_of("main").expect("A has main");
    let db = Daemon::start("B", &b);
    wait_until(
        Duration::from_secs(120),
        "B on the long history's last seal",
        || b.head_of("main").as_deref() == Some(head.as_str()),
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );
    let after_history = (peak_kib(da.pid()), peak_kib(db.pid()));
    eprintln!(
        "200 seals: peak RSS A {} KiB, B {} KiB",
        after_history.0, after_history.1
    );
    for (who, kib) in [
        ("A (serving the file)", after_big.0),
        ("B (receiving the file)", after_big.1),
        ("A (serving the history)", after_history.0),
        ("B (receiving the history)", after_history.1),
    ] {
        assert!(
            kib < RSS_BOUND_KIB,
            "{who} peaked at {kib} KiB, above {RSS_BOUND_KIB} KiB"
        );
    }
    b.ok(&["verify"]);
}
