//! Objects at rest are compressed and delta-encoded: a text file edited across
//! many seals costs a fraction of its versions' raw sum, and every old version
//! still reads back byte for byte. A version-1 repository (raw `IVPACK01`
//! packs) is read, upgraded on open, and compressed by `gc`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use ivaldi_core::ObjectId;
use ivaldi_shell_smol::repo::Store;
use ivaldi_shell_smol::repo::gc::GC_POINTS;
use ivaldi_shell_smol::repo::pack::write_v1_pack;
use ivaldi_tests::{Repo, describe_output, dir_size, pseudo_random_bytes};

const SIGABRT: i32 = 6;

/// Version `n` of a source-like file: 4000 lines, a few of them edited per version.
fn version(n: usize) -> String {
    let mut s = String::new();
    for i in 0..4000 {
        if i % 97 == n % 97 || i == n * 13 % 4000 {
            s.push_str(&format!(
                "    let edited_{i} = compute({n}, {i}); // change {n}\n"
            ));
        } else {
            s.push_str(&format!(
                "    let value_{i} = compute(base, {i}); // line {i}\n"
            ));
        }
    }
    s
}

fn objects_size(r: &Repo) -> u64 {
    dir_size(&r.dot().join("objects"))
}

fn pack_magics(r: &Repo) -> Vec<Vec<u8>> {
    std::fs::read_dir(r.dot().join("objects"))
        .expect("list objects")
        .map(|e| {
            let bytes = std::fs::read(e.expect("entry").path()).expect("read pack");
            bytes[..8].to_vec()
        })
        .collect()
}

#[test]
fn fifty_seals_of_an_edited_file_take_a_fraction_of_their_raw_size() {
    let r = Repo::forged();
    let mut seals = Vec::new();
    let mut raw_sum = 0u64;
    for n in 0..50 {
        let text = version(n);
        raw_sum += text.len() as u64;
        r.write("src/main.rs", &text);
        seals.push(r.seal(&format!("version {n}")));
    }
    let stored = objects_size(&r);
    eprintln!("50 versions: {raw_sum} bytes raw, objects/ is {stored} bytes");
    assert!(
        stored * 10 < raw_sum,
        "objects/ is {stored} bytes for {raw_sum} raw bytes"
    );
    r.ok(&["verify"]);
    assert_eq!(r.log(None).len(), 50);
    for (n, seal) in seals.iter().enumerate().step_by(7) {
        r.ok(&["show", seal]);
        let name = format!("old{n}");
        r.ok(&["timeline", "create", &name, "--from", seal]);
        r.ok(&["timeline", "switch", &name]);
        assert_eq!(r.read_string("src/main.rs"), version(n), "seal {n}");
    }
    r.ok(&["timeline", "switch", "main"]);
    assert_eq!(r.read_string("src/main.rs"), version(49));

    // gc keeps the deltas whose bases it keeps.
    r.ok(&["gc"]);
    r.ok(&["verify"]);
    let after = objects_size(&r);
    eprintln!("after gc: {after} bytes");
    assert!(after * 10 < raw_sum, "after gc objects/ is {after} bytes");
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
fn a_version_1_repository_is_upgraded_on_open_and_compressed_by_gc() {
    let r = Repo::forged();
    let mut seals = Vec::new();
    for n in 0..10 {
        r.write("notes.txt", version(n));
        seals.push(r.seal(&format!("v{n}")));
    }
    downgrade_to_v1(&r.dot());
    assert_eq!(pack_magics(&r), vec![b"IVPACK01".to_vec()]);
    let v1_size = objects_size(&r);

    let out = r.run(&["verify"]);
    assert!(out.status.success(), "verify of a v1 repository failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upgraded the repository"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(r.dot().join("format")).expect("format"),
        "ivaldi-repository 2\n"
    );
    // Said once: the next command finds format 2.
    let again = r.run(&["log"]);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("upgraded"));

    // Old packs read as they are; a new seal writes a v2 pack beside them.
    r.ok(&["show", &seals[3]]);
    r.write("notes.txt", version(10));
    r.seal("v10");
    r.ok(&["gc"]);
    assert_eq!(pack_magics(&r), vec![b"IVPACK02".to_vec()]);
    r.ok(&["verify"]);
    let v2_size = objects_size(&r);
    eprintln!("v1 packs: {v1_size} bytes; after upgrade and gc: {v2_size} bytes");
    assert!(v2_size * 4 < v1_size, "{v2_size} vs {v1_size}");
    r.ok(&["timeline", "create", "old", "--from", &seals[2]]);
    r.ok(&["timeline", "switch", "old"]);
    assert_eq!(r.read_string("notes.txt"), version(2));
}

#[test]
fn the_upgrading_gc_killed_at_every_fault_point_leaves_a_readable_repository() {
    for &point in GC_POINTS {
        let r = Repo::forged();
        let mut seals = Vec::new();
        for n in 0..3 {
            r.write("notes.txt", version(n));
            seals.push(r.seal(&format!("v{n}")));
        }
        downgrade_to_v1(&r.dot());
        r.write("notes.txt", version(3));
        seals.push(r.seal("v3"));
        let out = r.run_env(&["gc"], &[("IVALDI_CRASH_AT", point)]);
        assert_eq!(
            out.status.signal(),
            Some(SIGABRT),
            "{point}: gc did not stop there\n{}",
            describe_output(&out)
        );
        r.ok(&["verify"]);
        for (n, seal) in seals.iter().enumerate() {
            let name = format!("at{n}");
            r.ok(&["timeline", "create", &name, "--from", seal]);
            r.ok(&["timeline", "switch", &name]);
            assert_eq!(r.read_string("notes.txt"), version(n), "{point}: seal {n}");
        }
        r.ok(&["timeline", "switch", "main"]);
        r.ok(&["gc"]);
        assert_eq!(pack_magics(&r), vec![b"IVPACK02".to_vec()], "{point}");
        r.ok(&["verify"]);
    }
}

#[test]
fn a_large_random_file_is_stored_raw_and_a_large_text_file_compressed() {
    let r = Repo::forged();
    let random = pseudo_random_bytes(11, 8 << 20);
    r.write("random.bin", &random);
    r.seal("random");
    let stored = objects_size(&r);
    eprintln!("8 MiB random file: objects/ is {stored} bytes");
    // Raw chunks plus small chunk lists, seal and tree: no zstd framing bloat.
    assert!(stored < (8 << 20) + (64 << 10), "{stored}");
    assert!(stored > 8 << 20, "random data cannot shrink: {stored}");

    let text = version(1).repeat(20);
    r.write("big.txt", &text);
    let with_text = r.seal("text");
    let grown = objects_size(&r) - stored;
    eprintln!(
        "{} byte text file: objects/ grew by {grown} bytes",
        text.len()
    );
    assert!(grown * 5 < text.len() as u64, "{grown}");
    r.ok(&["verify"]);
    r.remove("random.bin");
    r.remove("big.txt");
    r.seal("both gone");
    r.ok(&["timeline", "create", "copy", "--from", &with_text]);
    r.ok(&["timeline", "switch", "copy"]);
    assert!(r.read("random.bin") == random, "random file changed");
    assert!(r.read_string("big.txt") == text, "text file changed");
}

/// A wide tree where each seal edits one file: the new versions of the
/// directories on that file's path are stored as deltas against their
/// previous versions, so a seal costs about its change, not the size of its
/// directories (their 32-byte ids do not compress otherwise).
#[test]
fn directories_are_stored_as_deltas_against_their_previous_versions() {
    let r = Repo::forged();
    for d in 0..4 {
        for f in 0..150 {
            r.write(
                &format!("src/dir{d}/file{f:03}.rs"),
                format!("fn f{d}_{f}() {{}}\n"),
            );
        }
    }
    r.seal("wide tree");
    let before = objects_size(&r);
    for n in 0..30 {
        r.write(
            &format!("src/dir{}/file007.rs", n % 4),
            format!("fn edit() {{ {n} }}\n"),
        );
        r.seal(&format!("edit {n}"));
    }
    let grown = objects_size(&r) - before;
    // Each seal rewrites a 150-entry directory (about 7 KB, ids included),
    // `src` and the root: whole, 30 seals would add well over 200 KB.
    eprintln!("30 one-file seals added {grown} bytes to objects/");
    assert!(grown < 60_000, "30 one-file seals added {grown} bytes");
    r.ok(&["verify"]);
}
