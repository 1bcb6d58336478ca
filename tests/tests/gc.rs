//! `ivaldi gc`: unreachable objects go; everything a timeline, a kept head, a
//! tracking name or the working tree's base reaches stays, also when gc is killed
//! at any of its fault points; a repository after gc verifies, seals and syncs.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use ivaldi_shell_smol::repo::gc::GC_POINTS;
use ivaldi_tests::p2p::{Daemon, Relay, configure_loopback, p2p_empty, p2p_repo, wait_until};
use ivaldi_tests::{Repo, describe_output, pseudo_random_bytes};
use serde_json::Value;

const SIGABRT: i32 = 6;
/// A made-up peer id for a tracking name.
const PEER: &str = "abababababababababababababababababababababababababababababababab";

/// A repository with garbage, and the seals that must survive it.
struct Garbage {
    r: Repo,
    /// (what keeps it alive, seal id)
    live: Vec<(&'static str, String)>,
    /// A seal whose pack landed but whose timeline never moved (a crashed seal).
    dead: String,
}

fn write_ref(r: &Repo, rel: &str, id: &str) {
    let path = r.dot().join(rel);
    std::fs::create_dir_all(path.parent().expect("ref has a parent")).expect("mkdir ref dir");
    std::fs::write(&path, format!("{id}\n")).expect("write ref");
}

/// main (two seals, a chunked file), a kept head and a tracking head reachable
/// from nothing else, and a crashed seal's objects.
fn garbage() -> Garbage {
    let r = p2p_repo(Repo::forged());
    r.write("a.txt", "a\n");
    r.write("big.bin", pseudo_random_bytes(3, (1 << 20) + 200_000));
    let first = r.seal("first");
    r.write("a.txt", "a, second\n");
    let main = r.seal("second");

    // A side timeline whose first seal is only kept and whose second is only
    // tracked; the timeline itself is then removed.
    r.ok(&["timeline", "create", "side"]);
    r.ok(&["timeline", "switch", "side"]);
    r.write("side.txt", "side\n");
    let kept = r.seal("side one");
    r.write("side.txt", "side two\n");
    r.write("side-big.bin", pseudo_random_bytes(5, (1 << 20) + 50_000));
    let tracked = r.seal("side two");
    r.ok(&["timeline", "switch", "main"]);
    write_ref(&r, &format!("kept/side/{kept}"), &kept);
    write_ref(&r, &format!("tracking/{PEER}/side"), &tracked);
    std::fs::remove_file(r.dot().join("timelines/side")).expect("remove the side timeline");

    // A seal that crashes after its pack landed: its objects are unreachable.
    r.write("doomed.txt", "only in the crashed seal\n");
    let mut big = r.read("big.bin");
    big[700_000..700_100].fill(b'#');
    r.write("big.bin", big);
    let dead = r.copy_of().seal("doomed");
    let out = r.run_env(
        &["seal", "-m", "doomed"],
        &[("IVALDI_CRASH_AT", "seal.pack-landed")],
    );
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "{}",
        describe_output(&out)
    );
    assert_eq!(r.head_of("main").as_deref(), Some(main.as_str()));
    r.ok(&["show", &dead]);

    Garbage {
        r,
        live: vec![
            ("main's first seal", first),
            ("main", main),
            ("a kept head", kept),
            ("a tracking name", tracked),
        ],
        dead,
    }
}

fn verify_json(r: &Repo) -> Value {
    let v = r.json(&["verify", "--json"]);
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(0),
        "verify found problems: {v}"
    );
    v
}

fn objects(r: &Repo) -> u64 {
    verify_json(r)["objects"]
        .as_u64()
        .expect("verify reports objects")
}

fn packs(r: &Repo) -> Vec<(PathBuf, u64)> {
    r.pack_files()
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect()
}

#[track_caller]
fn assert_live(g: &Garbage, what: &str) {
    for (why, id) in &g.live {
        let out = g.r.run(&["show", id, "--json"]);
        assert!(
            out.status.success(),
            "{what}: the seal of {why} ({id}) is gone\n{}",
            describe_output(&out)
        );
    }
}

#[test]
fn gc_removes_unreachable_objects_and_keeps_every_root() {
    let g = garbage();
    let r = &g.r;
    let before = objects(r);
    let packs_before = packs(r);

    let dry = r.json(&["gc", "--dry-run", "--json"]);
    assert_eq!(dry["dry_run"], true);
    let removed = dry["objects_removed"].as_u64().expect("objects_removed");
    // The crashed seal, its root tree and doomed.txt's blob at least; the edited
    // big file adds chunks and chunk lists.
    assert!(removed >= 4, "dry run: {dry}");
    assert!(dry["object_bytes_removed"].as_u64() > Some(0), "{dry}");
    assert_eq!(dry["objects_before"].as_u64(), Some(before), "{dry}");
    assert_eq!(
        dry["objects_kept"].as_u64(),
        Some(before - removed),
        "{dry}"
    );
    assert_eq!(
        dry["roots"].as_u64(),
        Some(3),
        "main (also BASE), the kept head, the tracking head: {dry}"
    );
    assert_eq!(packs(r), packs_before, "a dry run changes nothing");
    assert_eq!(objects(r), before);
    let text = r.ok(&["gc", "--dry-run"]);
    assert!(
        text.contains(&format!("Would remove {removed} unreachable objects")),
        "{text}"
    );

    let real = r.json(&["gc", "--json"]);
    assert_eq!(real["dry_run"], false);
    assert_eq!(real["objects_removed"].as_u64(), Some(removed), "{real}");
    assert_eq!(real["packs_after"].as_u64(), Some(1), "{real}");
    assert_eq!(
        real["pack_bytes_after"], dry["pack_bytes_after"],
        "the dry run's estimate is exact: {dry} vs {real}"
    );
    assert!(real["pack_bytes_after"].as_u64() < real["pack_bytes_before"].as_u64());
    assert_eq!(objects(r), before - removed);
    assert_live(&g, "after gc");
    assert!(
        !r.run(&["show", &g.dead]).status.success(),
        "the crashed seal {} is still there",
        g.dead
    );
    let list = r.json(&["timeline", "list", "--all", "--json"]);
    assert!(
        list.to_string().contains(&g.live[2].1),
        "kept head listed: {list}"
    );
    assert!(
        list.to_string().contains(&g.live[3].1),
        "tracking head listed: {list}"
    );

    // Nothing left to do.
    let again = r.json(&["gc", "--json"]);
    assert_eq!(again["objects_removed"], 0, "{again}");

    // The stat cache still names the removed blobs of doomed.txt and big.bin;
    // sealing them again must store them again.
    let st = r.json(&["status", "--json"]);
    assert!(st.to_string().contains("doomed.txt"), "{st}");
    let next = r.seal("after gc");
    verify_json(r);
    assert_eq!(r.head_of("main").as_deref(), Some(next.as_str()));
}

#[test]
fn gc_killed_at_every_fault_point_loses_nothing_reachable() {
    assert!(!GC_POINTS.is_empty());
    let mut failures = Vec::new();
    for &point in GC_POINTS {
        let g = garbage();
        let r = &g.r;
        let before = objects(r);
        let removed = r.json(&["gc", "--dry-run", "--json"])["objects_removed"]
            .as_u64()
            .expect("objects_removed");
        let out = r.run_env(&["gc"], &[("IVALDI_CRASH_AT", point)]);
        if out.status.signal() != Some(SIGABRT) {
            failures.push(format!(
                "{point}: gc did not stop there\n{}",
                describe_output(&out)
            ));
            continue;
        }
        let v = r.run(&["verify"]);
        if !v.status.success() {
            failures.push(format!("{point}: verify rejects\n{}", describe_output(&v)));
            continue;
        }
        assert_live(&g, point);
        // Running gc again finishes the job.
        r.ok(&["gc"]);
        let after = objects(r);
        if after != before - removed {
            failures.push(format!(
                "{point}: {after} objects after the second gc, expected {}",
                before - removed
            ));
        }
        assert_live(&g, point);
        let tmp: Vec<_> = std::fs::read_dir(r.dot().join("tmp"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if !tmp.is_empty() {
            failures.push(format!("{point}: partial files left in tmp: {tmp:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_repository_after_gc_serves_a_clone_and_syncs() {
    let g = garbage();
    let a = &g.r;
    a.ok(&["gc"]);
    configure_loopback(a, &[]);
    let da = Daemon::start("A", a);

    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 temp path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    assert_eq!(b.head_of("main"), a.head_of("main"));
    verify_json(&b);

    // B collects too (nothing of its own is garbage), then an incremental sync.
    b.ok(&["gc"]);
    a.write("later.txt", "after gc\n");
    let head = a.seal("after gc");
    configure_loopback(&b, &[]);
    b.ok(&["p2p", "add-peer", &da.addr()]);
    let db = Daemon::start("B", &b);
    wait_until(
        Duration::from_secs(30),
        "B to sync A's seal made after gc",
        || {
            let _ = b.run(&["p2p", "sync"]);
            b.head_of("main").as_deref() == Some(head.as_str())
        },
        || format!("{}\n{}", da.diagnostics(), db.diagnostics()),
    );
    verify_json(&b);
    verify_json(a);
}

#[test]
fn gc_during_a_landing_sync_loses_nothing_and_the_sync_completes() {
    let g = garbage();
    let a = &g.r;
    configure_loopback(a, &[]);
    let da = Daemon::start("A", a);
    let b = p2p_empty();
    let dir = b.path().to_str().expect("UTF-8 temp path").to_owned();
    b.ok(&["p2p", "clone", &da.invite(), &dir]);
    // Garbage on B too: a crashed seal.
    b.write("junk.txt", "junk\n");
    let out = b.run_env(
        &["seal", "-m", "junk"],
        &[("IVALDI_CRASH_AT", "seal.pack-landed")],
    );
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "{}",
        describe_output(&out)
    );

    for i in 0..8 {
        a.write(
            &format!("more/{i}.bin"),
            pseudo_random_bytes(40 + i, 2 << 20),
        );
        a.seal(&format!("more {i}"));
    }
    let head = a.head_of("main").expect("A has a head");
    // Through a slow relay, so gc runs while B's daemon is receiving, after
    // its pull landed a checkpoint (more than 4 MiB arrived).
    let relay = Relay::start(da.socket_addr(), 500_000);
    configure_loopback(&b, &[]);
    // The clone remembers A's own address; this test goes through the relay only.
    b.ok(&["p2p", "remove-peer", &da.addr()]);
    b.ok(&["p2p", "add-peer", &relay.addr().to_string()]);
    // The writer's checkpoints at 4 MiB (the old default), so one lands
    // well before the end.
    b.set_env("IVALDI_CHECKPOINT_MIB", "8");
    let db = Daemon::start("B", &b);
    let record = || -> Option<PathBuf> {
        std::fs::read_dir(b.dot().join("tmp"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "keep"))
    };
    wait_until(
        Duration::from_secs(60),
        "B's pull to land a checkpoint",
        || record().is_some(),
        || db.diagnostics(),
    );
    let checkpoint_packs: Vec<PathBuf> = record()
        .and_then(|r| std::fs::read_to_string(r).ok())
        .unwrap_or_default()
        .lines()
        .map(|l| b.dot().join("objects").join(l.trim()))
        .collect();
    assert!(!checkpoint_packs.is_empty(), "the record names its packs");
    let report = b.json(&["gc", "--json"]);
    assert!(
        report["objects_removed"].as_u64() > Some(0),
        "B's crashed seal is garbage: {report}"
    );
    for p in &checkpoint_packs {
        assert!(
            p.exists(),
            "gc removed the running pull's checkpoint {}",
            p.display()
        );
    }
    assert_ne!(
        b.head_of("main").as_deref(),
        Some(head.as_str()),
        "the transfer ended before gc ran; slow the relay down"
    );
    relay.set_rate(0);
    wait_until(
        Duration::from_secs(60),
        "B's sync to complete after gc",
        || {
            let _ = b.run(&["p2p", "sync"]);
            b.head_of("main").as_deref() == Some(head.as_str())
        },
        || db.diagnostics(),
    );
    verify_json(&b);
    b.ok(&["update"]);
    assert_eq!(b.read("more/7.bin"), a.read("more/7.bin"));
}
