//! Errors name the file or argument at fault and exit non-zero, never panicking.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ivaldi_core::object::blob_id;
use ivaldi_core::{ObjectId, Seal, Timestamp};
use ivaldi_tests::{AUTHOR, Repo, describe_output};

/// A repository with one seal holding `a.txt`.
fn one_seal() -> (Repo, String) {
    let r = Repo::forged();
    r.write("a.txt", "a\n");
    let s = r.seal("one");
    (r, s)
}

#[test]
fn outside_a_repository() {
    let r = Repo::empty();
    let dir = r.path().canonicalize().expect("canonical temp dir");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["seal", "-m", "x"],
        &["log"],
        &["timeline", "list"],
        &["timeline", "create", "x"],
        &["timeline", "switch", "main"],
        &["show", "abcd"],
        &["fuse", "main"],
        &["verify"],
    ] {
        let err = r.fails(args);
        assert!(err.contains("not an Ivaldi repository"), "{args:?}: {err}");
        assert!(
            err.contains(&*dir.to_string_lossy()),
            "{args:?} must name the directory: {err}"
        );
        assert!(
            err.contains("ivaldi forge"),
            "{args:?} should say how to make one: {err}"
        );
    }
    // -C to a directory that does not exist.
    let missing = r.path().join("no such dir");
    let out = r.run_at(&missing, &["status"]);
    ivaldi_tests::assert_no_panic(&["status"], &out);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such dir"), "{err}");
    // Nothing was created.
    assert!(!r.exists(".ivaldi"));
}

#[test]
fn commands_work_from_a_subdirectory() {
    let (r, s) = one_seal();
    r.write("deep/er/file.txt", "x\n");
    let out = r.run_at(&r.abs("deep/er"), &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        ivaldi_tests::describe_output(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["base"], s.as_str());
    assert_eq!(
        v["changes"]["added"],
        serde_json::json!(["deep/er/file.txt"])
    );
}

#[test]
fn unknown_timeline() {
    let (r, _) = one_seal();
    let err = r.fails(&["timeline", "switch", "nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = r.fails(&["fuse", "nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = r.fails(&["log", "nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = r.fails(&["timeline", "create", "x", "--from", "nope"]);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(r.head_of("x"), None, "nothing created");
    let err = r.fails(&["timeline", "create", "main"]);
    assert!(err.contains("main") && err.contains("exists"), "{err}");
}

#[test]
fn invalid_timeline_names() {
    let (r, _) = one_seal();
    for name in [
        "../x", "a/../b", "/abs", ".hidden", "x.lock", "a b", "ä", "a//b", "",
    ] {
        let err = r.fails(&["timeline", "create", name]);
        assert!(err.contains("invalid timeline name"), "{name:?}: {err}");
        if !name.is_empty() {
            assert!(err.contains(name), "{name:?} must be named: {err}");
        }
        let err = r.fails(&["timeline", "switch", name]);
        assert!(err.contains("invalid timeline name"), "{name:?}: {err}");
        let err = r.fails(&["fuse", name]);
        assert!(err.contains("invalid timeline name"), "{name:?}: {err}");
    }
    // Nothing escaped .ivaldi/timelines.
    assert!(!r.dot().join("x").exists() && !r.path().join("x").exists());
    let listed = r.json(&["timeline", "list", "--json"]);
    assert_eq!(
        listed["timelines"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}

#[test]
fn unknown_seal_prefix() {
    let (r, s) = one_seal();
    // Pick a 6-digit prefix that is not the seal's.
    let unknown = if s.starts_with("000000") {
        "ffffff"
    } else {
        "000000"
    };
    for spec in [unknown, "not-hex-at-all", "zzzz", &"e".repeat(64)] {
        let err = r.fails(&["show", spec]);
        assert!(err.contains(spec), "{spec}: {err}");
        let err = r.fails(&["log", spec]);
        assert!(err.contains(spec), "{spec}: {err}");
    }
    // Too short to be a prefix.
    let err = r.fails(&["show", &s[..3]]);
    assert!(err.contains(&s[..3]), "{err}");
    // A tree id is not a seal.
    let tree = r.json(&["show", &s, "--json"])["tree"]
        .as_str()
        .expect("tree")
        .to_owned();
    let err = r.fails(&["show", &tree]);
    assert!(err.contains(&tree), "{err}");
}

/// Finds a message whose seal (tree, parent, pinned time, test author) has an id
/// starting with the same four hex digits as `target`.
fn colliding_message(
    tree: &ObjectId,
    parent: &ObjectId,
    seconds: i64,
    target: &str,
) -> (String, String) {
    for n in 0u64..50_000_000 {
        let message = format!("collide {n}");
        let seal = Seal {
            git: None,
            tree: *tree,
            parents: vec![*parent],
            author: AUTHOR.to_owned(),
            time: Timestamp {
                seconds,
                offset_minutes: 0,
            },
            message: message.clone(),
        };
        let id = ObjectId::hash(&seal.encode().expect("encodable seal"));
        let hex = id.to_hex();
        if hex[..4] == target[..4] && hex != target {
            return (message, hex);
        }
    }
    panic!("no colliding message found");
}

#[test]
fn ambiguous_seal_prefix() {
    let (r, base) = one_seal();
    // Two seals with the same tree and parent on two timelines, their messages
    // chosen so the ids share four hex digits.
    r.ok(&["timeline", "create", "other"]);
    r.write("b.txt", "b\n");
    let first = r.seal("first");
    let tree: ObjectId = r.json(&["show", &first, "--json"])["tree"]
        .as_str()
        .expect("tree")
        .parse()
        .expect("tree id");
    r.ok(&["timeline", "switch", "other"]);
    r.write("b.txt", "b\n");
    let at = ivaldi_tests::EPOCH + 1_000;
    let (message, predicted) = colliding_message(&tree, &base.parse().expect("id"), at, &first);
    r.set_clock(at);
    let second = r.seal(&message);
    assert_eq!(
        second, predicted,
        "the seal encoding changed; the prediction no longer holds"
    );

    let prefix = &first[..4];
    let err = r.fails(&["show", prefix]);
    assert!(err.contains(prefix) && err.contains("ambiguous"), "{err}");
    let err = r.fails(&["timeline", "create", "x", "--from", prefix]);
    assert!(err.contains("ambiguous"), "{err}");
    // One more digit may still collide; the full short ids never do here.
    assert_eq!(
        r.json(&["show", &first[..12], "--json"])["id"],
        first.as_str()
    );
    assert_eq!(
        r.json(&["show", &second[..12], "--json"])["id"],
        second.as_str()
    );
}

#[test]
fn damaged_timeline_file() {
    let (r, _) = one_seal();
    let path = r.dot().join("timelines").join("main");
    fs::write(&path, "this is not a seal id\n").expect("write garbage");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["log"],
        &["seal", "-m", "x"],
        &["timeline", "list"],
    ] {
        let err = r.fails(args);
        assert!(
            err.contains(".ivaldi/timelines/main"),
            "{args:?} must name the file: {err}"
        );
    }
    let err = r.fails(&["verify"]);
    assert!(err.contains(".ivaldi/timelines/main"), "{err}");

    // A timeline naming an id the store does not hold.
    fs::write(&path, format!("{}\n", "ab".repeat(32))).expect("write");
    let err = r.fails(&["verify"]);
    assert!(
        err.contains("main") && err.contains(&"ab".repeat(32)),
        "{err}"
    );
    let err = r.fails(&["log"]);
    assert!(err.contains(&"ab".repeat(32)), "{err}");

    // Binary garbage in HEAD.
    let (r, _) = one_seal();
    fs::write(r.dot().join("HEAD"), [0xffu8, 0, 1, 2]).expect("write");
    let err = r.fails(&["status"]);
    assert!(err.contains(".ivaldi/HEAD"), "{err}");
    let err = r.fails(&["verify"]);
    assert!(err.contains("HEAD"), "{err}");

    // A BASE file pointing nowhere.
    let (r, _) = one_seal();
    fs::write(r.dot().join("BASE"), "garbage\n").expect("write");
    let err = r.fails(&["status"]);
    assert!(err.contains(".ivaldi/BASE"), "{err}");
}

/// Where `needle` first occurs in `path`'s bytes.
fn find_in_file(path: &Path, needle: &[u8]) -> Option<usize> {
    let bytes = fs::read(path).expect("read pack");
    bytes.windows(needle.len()).position(|w| w == needle)
}

fn flip_byte(path: &Path, at: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open pack");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read byte");
    b[0] ^= 0x20;
    f.write_all_at(&b, at).expect("write byte");
}

/// A repository whose `feature` timeline holds a file only it has, and the pack
/// holding that file's blob.
fn repo_with_feature_blob(content: &str) -> (Repo, PathBuf) {
    // Main's pack is made much larger than the feature seal's (incompressible
    // padding), so the geometric repack after the feature seal leaves it
    // alone and the feature's objects are alone in their pack.
    let r = Repo::forged();
    r.write("a.txt", "a\n");
    r.write(
        "padding.bin",
        ivaldi_tests::pseudo_random_bytes(5, 16 << 10),
    );
    r.seal("one");
    r.ok(&["timeline", "create", "feature"]);
    r.ok(&["timeline", "switch", "feature"]);
    let before = r.pack_files();
    r.write("feature.txt", content);
    r.seal("feature");
    r.ok(&["timeline", "switch", "main"]);
    let new: Vec<PathBuf> = r
        .pack_files()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "one seal, one pack: {new:?}");
    (r, new[0].clone())
}

#[test]
fn corrupt_object_is_reported_by_verify_and_checkout() {
    let content = "UNIQUE feature content that only one blob holds\n";
    let (r, pack) = repo_with_feature_blob(content);
    let at = find_in_file(&pack, content.as_bytes())
        .expect("the blob is stored uncompressed in the pack");
    assert!(at >= 8, "inside the object area, after the header");
    flip_byte(&pack, at as u64 + 7);
    let pack_name = pack
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let blob = blob_id(content.as_bytes()).to_hex();

    let out = r.fails_output(&["verify"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains(&blob),
        "verify must name the damaged object {blob}:\n{all}"
    );
    assert!(
        all.contains(&pack_name),
        "verify must name the pack:\n{all}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&r.fails_output(&["verify", "--json"]).stdout)
            .expect("verify --json prints JSON even when it fails");
    let problems = v["problems"].as_array().expect("problems");
    assert!(problems.len() >= 2, "the pack checksum and the object: {v}");

    let before = r.snapshot_tree();
    let err = r.fails(&["timeline", "switch", "feature"]);
    assert!(
        err.contains(&blob),
        "switch must name the damaged object {blob}: {err}"
    );
    assert_eq!(
        r.current_timeline(),
        "main",
        "a failed switch stays on main"
    );
    // Nothing half-written is left behind, and main's files are intact.
    let after = r.snapshot_tree();
    for (p, e) in &before {
        assert_eq!(after.get(p), Some(e), "{p} changed by a failed switch");
    }
    assert!(
        after.keys().all(|p| !p.contains("ivaldi-tmp")),
        "temporary files left: {:?}",
        after.keys().collect::<Vec<_>>()
    );
    let err = r.fails(&["fuse", "feature"]);
    assert!(
        err.contains(&blob),
        "fuse must name the damaged object: {err}"
    );
}

#[test]
fn corrupt_seal_object_is_named() {
    let r = Repo::forged();
    r.write("a.txt", "a\n");
    let s = r.seal("UNIQUE-SEAL-MESSAGE");
    let pack = r.pack_files().pop().expect("a pack");
    let at = find_in_file(&pack, b"UNIQUE-SEAL-MESSAGE").expect("the seal message is in the pack");
    flip_byte(&pack, at as u64);
    let err = r.fails(&["log"]);
    assert!(err.contains(&s), "log must name the damaged seal: {err}");
    let err = r.fails(&["show", &s[..12]]);
    assert!(err.contains(&s), "{err}");
    let err = r.fails(&["verify"]);
    assert!(err.contains(&s), "{err}");
}

#[test]
fn truncated_pack() {
    for cut in [1u64, 60, 100_000] {
        let (r, pack) = repo_with_feature_blob("feature\n");
        let len = fs::metadata(&pack).expect("stat").len();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(&pack)
            .expect("open");
        f.set_len(len.saturating_sub(cut)).expect("truncate");
        drop(f);
        let name = pack
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        // What needs the pack fails; every command names the pack.
        for args in [&["verify"][..], &["timeline", "switch", "feature"]] {
            let err = r.fails(args);
            assert!(
                err.contains(&name),
                "cut {cut}, {args:?} must name the pack: {err}"
            );
        }
        // What does not need it keeps working (`tests/tests/failing_cleanly.rs`),
        // with a warning that names the pack.
        for args in [&["status"][..], &["log"]] {
            let out = r.run(args);
            assert!(
                out.status.success(),
                "cut {cut}, {args:?}\n{}",
                describe_output(&out)
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&name), "cut {cut}, {args:?} must warn: {err}");
        }
    }
}

#[test]
fn garbage_pack_file() {
    let (r, _) = one_seal();
    let bogus = r.dot().join("objects").join("pack-bogus.ivp");
    fs::write(&bogus, b"not a pack at all").expect("write");
    let err = r.fails(&["verify"]);
    assert!(err.contains("pack-bogus.ivp"), "{err}");
}

#[test]
fn forge_twice() {
    let r = Repo::forged();
    let before = fs::read(r.dot().join("repo.json")).expect("repo.json");
    let err = r.fails(&["forge"]);
    assert!(err.contains("already an Ivaldi repository"), "{err}");
    let dir = r.path().canonicalize().expect("canonical");
    assert!(err.contains(&*dir.to_string_lossy()), "{err}");
    assert_eq!(
        fs::read(r.dot().join("repo.json")).expect("repo.json"),
        before,
        "the repository id is kept"
    );
    // forge DIR into an existing repository, too.
    let err = r.fails(&["forge", "."]);
    assert!(err.contains("already an Ivaldi repository"), "{err}");
    // A nested forge in a subdirectory is allowed (a separate repository).
    r.ok(&["forge", "sub"]);
    assert!(r.abs("sub/.ivaldi/format").is_file());
}

#[test]
fn empty_seal_message() {
    let r = Repo::forged();
    r.write("a.txt", "a\n");
    for msg in ["", "   ", "\n\t\n"] {
        let err = r.fails(&["seal", "-m", msg]);
        assert!(err.contains("message"), "{msg:?}: {err}");
    }
    let out = r.run(&["seal"]);
    ivaldi_tests::assert_no_panic(&["seal"], &out);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--message"));
    assert_eq!(r.head_of("main"), None, "nothing sealed");
    assert_eq!(r.pack_files(), Vec::<PathBuf>::new(), "nothing stored");
}

#[test]
fn bad_arguments_and_environment() {
    let (r, _) = one_seal();
    let out = r.run(&["no-such-command"]);
    assert!(!out.status.success());
    ivaldi_tests::assert_no_panic(&["no-such-command"], &out);
    r.write("a.txt", "changed\n");
    let out = r.run_env(&["seal", "-m", "x"], &[("IVALDI_TIME", "yesterday")]);
    ivaldi_tests::assert_no_panic(&["seal"], &out);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("IVALDI_TIME"),
        "{}",
        ivaldi_tests::describe_output(&out)
    );
    let err = r.fails(&["log", "-n", "many"]);
    assert!(err.contains("many"), "{err}");
}

#[test]
fn unreadable_and_special_working_tree_entries() {
    let (r, _) = one_seal();
    // A file name that is not UTF-8 is refused by name.
    let raw = r.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    fs::write(&raw, "x").expect("write non-UTF-8 name");
    let err = r.fails(&["seal", "-m", "x"]);
    assert!(err.contains("UTF-8"), "{err}");
    let err = r.fails(&["status"]);
    assert!(err.contains("UTF-8"), "{err}");
}
