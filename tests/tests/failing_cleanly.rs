//! Failing cleanly (issue 12, section 6), through the CLI: a clone that fails
//! or is killed leaves no half-made repository; one damaged pack does not stop
//! the repository, `verify` lists every problem and `repair` quarantines the
//! damage; `timeline delete` keeps the head it removes under `kept/`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use ivaldi_tests::p2p::{
    Daemon, configure_loopback, free_tcp_port, p2p_empty, p2p_forged, wait_until,
};
use ivaldi_tests::{Repo, describe_output, pseudo_random_bytes};

const SIGABRT: i32 = 6;

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A repository with two seals on main, one with a file big enough to be chunked.
fn origin() -> Repo {
    let a = p2p_forged();
    a.write("a.txt", "first\n");
    a.write("big.bin", pseudo_random_bytes(7, (1 << 20) + 300_000));
    a.seal("first");
    a.write("a.txt", "second\n");
    a.seal("second");
    a
}

#[test]
fn a_failed_or_killed_clone_leaves_no_half_made_repository() {
    let a = origin();
    configure_loopback(&a, &[]);
    let b = p2p_empty();
    let dir = b.path().join("copy");

    // Nobody listens: the clone fails, and the target never appears.
    let nobody = format!("127.0.0.1:{}", free_tcp_port());
    b.fails(&["p2p", "clone", &nobody, "copy"]);
    assert!(!dir.exists(), "a failed clone made {}", dir.display());
    assert!(names(b.path()).is_empty(), "left: {:?}", names(b.path()));

    // An empty target directory stays exactly as it was.
    std::fs::create_dir(&dir).expect("mkdir copy");
    b.fails(&["p2p", "clone", &nobody, "copy"]);
    assert!(names(&dir).is_empty(), "left in copy: {:?}", names(&dir));

    let da = Daemon::start("A", &a);
    // Killed in the middle of the transfer (as its first pack lands), then
    // killed just before the finished repository would move into place.
    for point in ["pack.before-rename", "clone.before-rename"] {
        let out = b.run_env(
            &["p2p", "clone", &da.invite(), "copy"],
            &[("IVALDI_CRASH_AT", point)],
        );
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "clone should crash at {point}\n{}",
            describe_output(&out)
        );
        assert!(
            names(&dir).is_empty(),
            "killed at {point}, copy holds {:?}",
            names(&dir)
        );
        let debris: Vec<String> = names(b.path())
            .into_iter()
            .filter(|n| n != "copy")
            .collect();
        assert_eq!(debris.len(), 1, "one staging directory: {debris:?}");
        assert!(debris[0].starts_with(".copy.ivaldi-clone-"), "{debris:?}");
    }

    // A second attempt into the same directory works, and clears the debris.
    b.ok(&["p2p", "clone", &da.invite(), "copy"]);
    assert_eq!(names(b.path()), vec!["copy".to_owned()]);
    assert_eq!(
        std::fs::read(dir.join("a.txt")).expect("a.txt"),
        b"second\n"
    );
    assert_eq!(
        std::fs::read(dir.join("big.bin")).expect("big.bin"),
        a.read("big.bin")
    );
    let verify = b.run_at(&dir, &["verify"]);
    assert!(verify.status.success(), "{}", describe_output(&verify));

    // A target that is already a repository (or not empty) is refused untouched.
    let err = b.fails(&["p2p", "clone", &da.invite(), "copy"]);
    assert!(err.contains("already"), "{err}");
}

/// How a test damages a pack.
#[derive(Clone, Copy, Debug)]
enum Harm {
    /// Cut the last bytes off (the trailer and part of the index are gone).
    Truncate,
    /// Flip a bit in the first index entry's id.
    FlipIndex,
    /// Flip a bit in the first object's bytes.
    FlipObject,
}

fn harm(pack: &Path, how: Harm) {
    let mut bytes = std::fs::read(pack).expect("read pack");
    let len = bytes.len();
    match how {
        Harm::Truncate => bytes.truncate(len - 70),
        Harm::FlipIndex => {
            let t = &bytes[len - 56..];
            let index_offset = u64::from_be_bytes(t[8..16].try_into().expect("8 bytes")) as usize;
            bytes[index_offset + 5] ^= 0x40;
        }
        // After the 8-byte magic: the first object's kind byte, then its body.
        Harm::FlipObject => bytes[10] ^= 0x40,
    }
    std::fs::write(pack, bytes).expect("write pack");
}

/// main with two seals (one chunked file), and a timeline `side` whose one new
/// seal sits alone in the newest pack; returns the repository, side's head
/// and that pack.
fn with_side() -> (Repo, String, std::path::PathBuf) {
    let r = origin();
    r.ok(&["timeline", "create", "side"]);
    r.ok(&["timeline", "switch", "side"]);
    r.write("side.txt", "only on side\n");
    // Incompressible, so side's pack sits between main's two in size by more
    // than a factor 2 each way: the geometric repack leaves it alone.
    r.write("side.bin", pseudo_random_bytes(8, 64 << 10));
    let before = r.pack_files();
    let side = r.seal("side");
    let new: Vec<_> = r
        .pack_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "the side seal made one pack: {new:?}");
    r.ok(&["timeline", "switch", "main"]);
    (r, side, new[0].clone())
}

#[test]
fn one_damaged_pack_does_not_stop_the_repository_and_repair_quarantines_it() {
    for how in [Harm::Truncate, Harm::FlipIndex, Harm::FlipObject] {
        let (r, side, pack) = with_side();
        let main_before = r.head_of("main").expect("main has a head");
        harm(&pack, how);

        // What does not need the damaged objects keeps working.
        assert_eq!(r.log(Some("main")).len(), 2, "{how:?}");
        r.ok(&["status"]);
        r.write("c.txt", "after the damage\n");
        r.seal("sealed despite the damage");
        assert_ne!(r.head_of("main").as_deref(), Some(main_before.as_str()));

        // verify lists every problem, to the end, and fails.
        let out = r.fails_output(&["verify"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("timeline side"), "{how:?}: {stderr}");
        let report = r.run(&["verify", "--json"]);
        assert!(!report.status.success());
        let v: serde_json::Value =
            serde_json::from_slice(&report.stdout).expect("verify --json is JSON");
        assert!(
            v["problems"].as_array().is_some_and(|p| p.len() >= 2),
            "{how:?}: {v}"
        );
        let damaged: Vec<String> = v["damage"]
            .as_array()
            .expect("damage list")
            .iter()
            .map(|d| d["reference"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(damaged, vec!["timeline side".to_owned()], "{how:?}: {v}");

        // repair moves the pack aside, keeps what it still holds intact, and
        // names what is missing (exit 1: the repository is still incomplete).
        let out = r.run(&["repair", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
        let rep: serde_json::Value = serde_json::from_slice(&out.stdout).expect("repair JSON");
        let q = &rep["quarantined"];
        assert_eq!(q.as_array().map(Vec::len), Some(1), "{how:?}: {rep}");
        let name = pack.file_name().expect("pack name").to_string_lossy();
        assert_eq!(q[0]["pack"], serde_json::json!(name), "{rep}");
        assert!(!pack.exists());
        assert!(r.dot().join("quarantine").join(&*name).exists());
        let missing = rep["damage"][0]["missing"].as_array().map(Vec::len);
        match how {
            // No index left: nothing to save, side's seal itself is gone.
            Harm::Truncate => {
                assert_eq!(q[0]["salvaged"], 0, "{rep}");
                assert!(
                    rep["damage"][0]["missing"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|x| x == &serde_json::json!(side))),
                    "{rep}"
                );
            }
            // One object lost, the other three (of two blobs, tree, seal) saved.
            Harm::FlipIndex | Harm::FlipObject => {
                assert_eq!(q[0]["salvaged"], 3, "{how:?}: {rep}");
                assert_eq!(missing, Some(1), "{how:?}: {rep}");
            }
        }
        if matches!(how, Harm::FlipObject) {
            // The damaged object was one of side's blobs: its history is intact.
            assert_eq!(r.log(Some("side")).len(), 3, "{rep}");
        }

        // Afterwards: no damaged pack is left, main works, and verify still
        // names exactly what side lacks.
        let out = r.fails_output(&["verify"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("damaged pack"), "{how:?}: {stderr}");
        assert!(stderr.contains("timeline side"), "{how:?}: {stderr}");
        assert_eq!(r.log(Some("main")).len(), 3);
        r.write("d.txt", "after repair\n");
        r.seal("sealed after repair");
        // A second repair finds nothing more to quarantine.
        let out = r.run(&["repair"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("No damaged packs"),
            "{}",
            describe_output(&out)
        );
    }
}

/// Whether `r`'s timeline list (plain, without `--all`) names `name`.
fn lists_timeline(r: &Repo, name: &str) -> bool {
    let v = r.json(&["timeline", "list", "--json"]);
    v["timelines"]
        .as_array()
        .is_some_and(|l| l.iter().any(|t| t["name"] == serde_json::json!(name)))
}

#[test]
fn timeline_delete_keeps_the_head_and_is_local() {
    let (a, side, _) = with_side();
    // The checked-out timeline and unknown ones are refused, untouched.
    let err = a.fails(&["timeline", "delete", "main"]);
    assert!(err.contains("checked-out"), "{err}");
    let err = a.fails(&["timeline", "delete", "nope"]);
    assert!(err.contains("nope"), "{err}");

    // Deleted and restored from the kept head, with no daemon running.
    a.ok(&["timeline", "delete", "side"]);
    assert!(!lists_timeline(&a, "side"));
    a.ok(&["timeline", "create", "side", "--from", &side[..12]]);
    assert_eq!(a.head_of("side").as_deref(), Some(side.as_str()));

    configure_loopback(&a, &[]);
    let da = Daemon::start("A", &a);
    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    assert_eq!(b.head_of("side").as_deref(), Some(side.as_str()));
    configure_loopback(&b, &[]);
    let db = Daemon::start("B", &b);
    b.ok(&["p2p", "add-peer", &da.addr()]);
    let a_id = da.node_id();
    wait_until(
        Duration::from_secs(20),
        "B connected to A",
        || db.peer_ids().contains(&a_id),
        || db.diagnostics(),
    );

    // Deleted on A while its daemon runs: the head is kept under kept/side.
    let out = a.ok(&["timeline", "delete", "side"]);
    assert!(
        out.contains(&format!("--from {}", &side[..12])),
        "the restore command is shown: {out}"
    );
    assert!(!lists_timeline(&a, "side"));
    let all = a.json(&["timeline", "list", "--all", "--json"]);
    assert!(
        all["kept"].as_array().is_some_and(|k| k
            .iter()
            .any(|e| e["timeline"] == "side" && e["head"] == *side)),
        "{all}"
    );
    let v = a.json(&["verify", "--json"]);
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");

    // Peers are not asked to delete: a later change on A reaches B, and B
    // still has side where it was.
    a.write("after.txt", "after the delete\n");
    let head = a.seal("after the delete");
    a.ok(&["p2p", "sync"]);
    wait_until(
        Duration::from_secs(30),
        "A's new main head on B",
        || b.head_of("main").as_deref() == Some(head.as_str()),
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );
    assert_eq!(b.head_of("side").as_deref(), Some(side.as_str()));

    // B still serves side, so A's sync brings it back like any timeline it
    // lacks: deleting is local, and the other copies are untouched (README,
    // limitations).
    wait_until(
        Duration::from_secs(30),
        "side back on A from B",
        || a.head_of("side").as_deref() == Some(side.as_str()),
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );
}
