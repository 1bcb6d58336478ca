//! Packs are consolidated geometrically: every seal writes a pack, and the
//! seal that wrote it merges the smallest ones, so the number of packs grows
//! with the logarithm of the number of seals. A repack killed at any of its
//! fault points loses nothing and the next seal finishes it; the upgrade from
//! format 1 killed at any of its points leaves a repository that opens.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Instant;

use ivaldi_core::ObjectId;
use ivaldi_shell_smol::repo::Store;
use ivaldi_shell_smol::repo::fault::UPGRADE_POINTS;
use ivaldi_shell_smol::repo::pack::{pack_ids, write_v1_pack};
use ivaldi_shell_smol::repo::repack::REPACK_POINTS;
use ivaldi_tests::{Repo, describe_output};

const SIGABRT: i32 = 6;

/// Objects stored in more than one pack (what an interrupted repack leaves).
fn duplicates(r: &Repo) -> usize {
    let mut seen = HashSet::new();
    let mut dups = 0;
    for p in r.pack_files() {
        for id in pack_ids(&p).expect("pack index") {
            if !seen.insert(id) {
                dups += 1;
            }
        }
    }
    dups
}

/// The bound the issue sets: at most about 2·log2(seals) packs, plus a few.
fn bound(seals: usize) -> usize {
    2 * (seals as f64).log2().ceil() as usize + 3
}

#[test]
fn three_hundred_seals_leave_a_logarithmic_number_of_packs() {
    const SEALS: usize = 300;
    let r = Repo::forged();
    for i in 0..20 {
        r.write(
            &format!("src/file{i}.txt"),
            format!("file {i}\n").repeat(50),
        );
    }
    let started = Instant::now();
    let mut most = 0;
    for n in 1..=SEALS {
        r.write(
            &format!("src/file{}.txt", n % 20),
            format!("file {n}, edit {n}\n").repeat(50),
        );
        r.write("counter.txt", format!("{n}\n"));
        r.seal(&format!("seal {n}"));
        let packs = r.pack_files().len();
        most = most.max(packs);
        assert!(
            packs <= bound(n),
            "after {n} seals: {packs} packs (bound {})",
            bound(n)
        );
    }
    let took = started.elapsed();
    let packs = r.pack_files().len();
    eprintln!(
        "{SEALS} seals: {packs} packs at the end, at most {most} along the way (bound {}); \
         {took:?} in all ({:?} a seal, through the CLI)",
        bound(SEALS),
        took / SEALS as u32
    );
    assert_eq!(duplicates(&r), 0, "no object is stored twice");
    r.ok(&["verify"]);
    assert_eq!(r.log(None).len(), SEALS);
}

#[test]
fn a_repack_killed_at_each_fault_point_loses_nothing_and_the_next_seal_finishes_it() {
    for &point in REPACK_POINTS {
        let r = Repo::forged();
        r.write("a.txt", "first\n".repeat(100));
        let mut seals = vec![r.seal("first")];
        // Seal until one of them repacks, and is killed while it does.
        let mut crashed = false;
        for n in 0..12 {
            r.write("a.txt", format!("version {n}\n").repeat(100));
            r.write(&format!("new/{n}.txt"), format!("{n}\n"));
            let out = r.run_env(
                &["seal", "-m", &format!("v{n}")],
                &[("IVALDI_CRASH_AT", point)],
            );
            let head = r.head_of("main").expect("main has a head");
            // The seal is complete before the repack starts.
            assert_ne!(seals.last(), Some(&head), "{point}: seal {n} did not land");
            seals.push(head);
            if out.status.signal() == Some(SIGABRT) {
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains(point),
                    "{}",
                    describe_output(&out)
                );
                crashed = true;
                break;
            }
            assert!(out.status.success(), "{}", describe_output(&out));
        }
        assert!(crashed, "{point}: no seal reached it");
        assert!(
            r.dot().join("repack-pending").exists(),
            "{point}: the record of the interrupted repack"
        );
        assert!(duplicates(&r) > 0, "{point}: the merged pack landed");
        r.ok(&["verify"]);
        assert_eq!(
            r.log(None).len(),
            seals.len(),
            "{point}: every seal is there"
        );
        for (n, s) in seals.iter().enumerate() {
            r.ok(&["show", s]);
            let name = format!("at{n}");
            r.ok(&["timeline", "create", &name, "--from", s]);
        }

        // The next writing command deletes what the crash left.
        r.write("after.txt", "after\n");
        r.seal("after the crash");
        assert!(!r.dot().join("repack-pending").exists(), "{point}");
        assert_eq!(duplicates(&r), 0, "{point}: the consolidation is finished");
        r.ok(&["verify"]);
        assert_eq!(r.log(None).len(), seals.len() + 1);
    }
}

/// Rewrites every object of the repository at `dot` into one version-1 pack
/// and marks the repository as format 1, as a version-1 binary left it.
fn downgrade_to_v1(dot: &Path) {
    let objects = dot.join("objects");
    let store = Store::open(&objects, &dot.join("tmp")).expect("open store");
    let all: Vec<(ObjectId, Vec<u8>)> = store
        .ids()
        .map(|id| (*id, store.read_raw(id).expect("read object")))
        .collect();
    let old = store.pack_paths();
    drop(store);
    write_v1_pack(&objects.join("pack-v1.ivp"), &all).expect("write v1 pack");
    for p in old {
        std::fs::remove_file(p).expect("remove v2 pack");
    }
    std::fs::write(dot.join("format"), "ivaldi-repository 1\n").expect("write format");
}

#[test]
fn the_upgrade_killed_at_each_fault_point_leaves_a_repository_that_opens() {
    for &point in UPGRADE_POINTS {
        let r = Repo::forged();
        let mut seals = Vec::new();
        for n in 0..3 {
            r.write("notes.txt", format!("version {n}\n").repeat(200));
            seals.push(r.seal(&format!("v{n}")));
        }
        downgrade_to_v1(&r.dot());
        let out = r.run_env(&["log"], &[("IVALDI_CRASH_AT", point)]);
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{point}: the upgrade did not stop there\n{}",
            describe_output(&out)
        );
        let format = std::fs::read_to_string(r.dot().join("format")).expect("format");
        assert!(
            format == "ivaldi-repository 1\n" || format == "ivaldi-repository 2\n",
            "{point}: format is {format:?}"
        );
        r.ok(&["verify"]);
        assert_eq!(
            std::fs::read_to_string(r.dot().join("format")).expect("format"),
            "ivaldi-repository 2\n",
            "{point}: the next open finishes the upgrade"
        );
        let leftovers: Vec<_> = std::fs::read_dir(r.dot())
            .expect("list .ivaldi")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .map(|e| e.path())
            .collect();
        assert!(leftovers.is_empty(), "{point}: {leftovers:?}");
        assert_eq!(r.log(None).len(), 3, "{point}");
        for (n, s) in seals.iter().enumerate() {
            let name = format!("at{n}");
            r.ok(&["timeline", "create", &name, "--from", s]);
            r.ok(&["timeline", "switch", &name]);
            assert_eq!(
                r.read_string("notes.txt"),
                format!("version {n}\n").repeat(200),
                "{point}"
            );
        }
        r.ok(&["timeline", "switch", "main"]);
        r.write("notes.txt", "after\n");
        r.seal("after the upgrade");
        r.ok(&["verify"]);
    }
}

/// Version `n` of a source-like file: 2000 lines, a few edited per version.
fn source(n: usize) -> String {
    (0..2000)
        .map(|i| {
            if i % 89 == n % 89 || i == n * 13 % 2000 {
                format!("    let edited_{i} = compute({n}, {i}); // change {n}\n")
            } else {
                format!("    let value_{i} = compute(base, {i}); // line {i}\n")
            }
        })
        .collect()
}

#[test]
fn gc_with_its_deeper_delta_search_is_no_bigger_and_keeps_chains_bounded() {
    const VERSIONS: usize = 60;
    let r = Repo::forged();
    let mut seals = Vec::new();
    for n in 0..VERSIONS {
        // Every third version goes back to the one before last (a revert the
        // previous version is a worse base for), and from version 20 a copy
        // of the file lives under a second name (a base only the size window
        // finds).
        let main = if n % 3 == 2 { source(n - 2) } else { source(n) };
        r.write("src/main.rs", &main);
        if n >= 20 {
            r.write("src/copy.rs", format!("// copy {n}\n{main}"));
        }
        seals.push(r.seal(&format!("version {n}")));
    }
    let before = r.objects_size();
    let report = r.json(&["gc", "--json"]);
    let after = r.objects_size();
    eprintln!(
        "{VERSIONS} versions: objects/ {before} bytes before gc, {after} after; {} deltas, \
         longest chain {}",
        report["deltas"], report["max_delta_depth"]
    );
    assert!(after <= before, "gc grew objects/ from {before} to {after}");
    assert_eq!(r.pack_files().len(), 1, "gc repacks fully");
    let depth = report["max_delta_depth"].as_u64().expect("max_delta_depth");
    assert!(
        (1..=ivaldi_shell_smol::repo::pack::MAX_CHAIN as u64).contains(&depth),
        "{report}"
    );
    // The chains as the store reads them, independently of the report.
    let store = Store::open(&r.dot().join("objects"), &r.dot().join("tmp")).expect("open");
    let deepest = store.ids().map(|id| store.delta_depth(id)).max();
    assert!(
        deepest <= Some(ivaldi_shell_smol::repo::pack::MAX_CHAIN),
        "{deepest:?}"
    );
    drop(store);
    r.ok(&["verify"]);
    for n in (0..VERSIONS).step_by(7) {
        let name = format!("v{n}");
        r.ok(&["timeline", "create", &name, "--from", &seals[n]]);
        r.ok(&["timeline", "switch", &name]);
        let main = if n % 3 == 2 { source(n - 2) } else { source(n) };
        assert_eq!(r.read_string("src/main.rs"), main, "version {n}");
    }
}
