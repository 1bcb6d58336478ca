//! `ivaldi repair` heals from peers (issue 12, section 6): B cloned A with an
//! invitation, a pack of B is damaged, and `repair` in B quarantines it and
//! fetches what it lost again from A through B's running daemon. Afterwards
//! `verify` is clean and the working tree and log are as before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_empty, p2p_forged, wait_until};
use ivaldi_tests::{Repo, describe_output, pseudo_random_bytes};

#[derive(Clone, Copy, Debug)]
enum Harm {
    /// Cut the last bytes off: the pack's index is gone, nothing is salvaged.
    Truncate,
    /// Flip a bit in the first object's bytes: that object alone is lost.
    FlipObject,
}

fn harm(pack: &Path, how: Harm) {
    let mut bytes = std::fs::read(pack).expect("read pack");
    let len = bytes.len();
    match how {
        Harm::Truncate => bytes.truncate(len - 70),
        // After the 8-byte magic: the first object's kind byte, then its body.
        Harm::FlipObject => bytes[10] ^= 0x40,
    }
    std::fs::write(pack, bytes).expect("write pack");
}

/// A with two seals on main: one file big enough to be chunked, one in a
/// subdirectory.
fn origin() -> Repo {
    let a = p2p_forged();
    a.write("a.txt", "first\n");
    a.write("dir/sub/notes.txt", "notes\n");
    a.write("big.bin", pseudo_random_bytes(11, (1 << 20) + 300_000));
    a.seal("first");
    a.write("a.txt", "second\n");
    a.write("dir/sub/more.txt", "more\n");
    a.seal("second");
    configure_loopback(&a, &[]);
    a
}

/// B, cloned from A's running daemon with an invitation.
fn clone_of(da: &Daemon) -> Repo {
    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    // No pull of its own when B connects: what comes back is the refetch's.
    configure_loopback(&b, &["--auto-sync", "off"]);
    b
}

/// B's largest pack: the one the clone wrote.
fn largest_pack(r: &Repo) -> PathBuf {
    r.pack_files()
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("B has a pack")
}

fn wait_connected(db: &Daemon, a_id: &str) {
    wait_until(
        Duration::from_secs(20),
        "B connected to A",
        || db.peer_ids().iter().any(|p| p == a_id),
        || format!("B's peers: {:?}", db.peer_ids()),
    );
}

#[test]
fn repair_fetches_what_a_damaged_pack_lost_from_a_trusted_peer() {
    for how in [Harm::FlipObject, Harm::Truncate] {
        let a = origin();
        let da = Daemon::start("A", &a);
        let a_id = da.node_id();
        let b = clone_of(&da);
        let log_before = b.log(Some("main"));
        assert_eq!(log_before.len(), 2);
        let tree_before = b.snapshot_tree();
        let pack = largest_pack(&b);
        harm(&pack, how);
        assert!(!b.run(&["verify"]).status.success(), "{how:?}: damaged");

        if matches!(how, Harm::Truncate) {
            // No daemon in B: repair quarantines and says how to finish.
            let out = b.run(&["repair"]);
            assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("Quarantined"), "{stdout}");
            assert!(
                stdout.contains("start the daemon and run repair again to fetch the")
                    && stdout.contains("missing objects from peers"),
                "{stdout}"
            );
            assert!(!pack.exists(), "the damaged pack was moved aside");
        }

        let db = Daemon::start("B", &b);
        wait_connected(&db, &a_id);
        let out = b.run(&["repair", "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{how:?}: {}\nB's log:\n{}",
            describe_output(&out),
            ivaldi_tests::p2p::tail(&db.log_path(), 40)
        );
        let rep: serde_json::Value = serde_json::from_slice(&out.stdout).expect("repair JSON");
        assert_eq!(rep["damage"], serde_json::json!([]), "{how:?}: {rep}");
        assert_eq!(rep["refetch"]["daemon"], true, "{rep}");
        assert_eq!(rep["refetch"]["still_missing"], 0, "{rep}");
        match how {
            Harm::FlipObject => {
                // Quarantined now, with the intact objects saved; the one lost
                // object lies below B's heads, so only a refetch brings it back.
                assert_eq!(rep["quarantined"].as_array().map(Vec::len), Some(1));
                assert_eq!(rep["refetch"]["asked"], 1, "{rep}");
                assert_eq!(rep["refetch"]["received"], 1, "{rep}");
            }
            // Quarantined by the first run; this one only fetched: the head
            // seal (all the damage report can see), then in further rounds
            // everything below it.
            Harm::Truncate => {
                assert_eq!(rep["quarantined"], serde_json::json!([]), "{rep}");
                assert!(rep["refetch"]["received"].as_u64() > Some(10), "{rep}");
            }
        }
        assert!(!pack.exists());

        // Whole again: verify is clean, history and working tree unchanged.
        b.ok(&["verify"]);
        assert_eq!(b.log(Some("main")), log_before, "{how:?}");
        b.assert_tree(&tree_before, &format!("{how:?}: working tree after repair"));
        b.ok(&["status"]);
        // A second repair has nothing left to do.
        let out = b.run(&["repair"]);
        assert!(out.status.success(), "{}", describe_output(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("No damaged packs"));
        drop(db);
        drop(da);
    }
}
