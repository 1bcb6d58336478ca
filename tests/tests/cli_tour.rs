//! End-to-end tour of the everyday CLI.
//!
//! The issue's requirement: "A CLI end-to-end test that forges, seals three times
//! across two timelines, switches back and forth, and compares the working tree
//! byte for byte. It covers an empty file, an executable bit, a symlink, a nested
//! directory, and a file name with spaces and non-ASCII characters."

use ivaldi_tests::{Entry, Repo, empty_dirs, id_of, parents_of, pseudo_random_bytes, strings};

const SPACED: &str = "naïve café/résumé — final ✓.txt";
const NESTED: &str = "docs/deep/er/nested.txt";
const ONLY_FEATURE: &str = "feature only/ünïcödé notes.md";

fn timeline_heads(r: &Repo) -> Vec<(String, String, bool)> {
    let v = r.json(&["timeline", "list", "--json"]);
    v["timelines"]
        .as_array()
        .expect("timelines array")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_owned(),
                t["head"].as_str().expect("head").to_owned(),
                t["current"].as_bool().expect("current"),
            )
        })
        .collect()
}

#[test]
fn tour_three_seals_two_timelines_byte_for_byte() {
    let r = Repo::forged();
    assert_eq!(r.current_timeline(), "main");

    // Seal 1 on main: every kind of entry the issue lists.
    r.write("empty", "");
    r.write("bin/run.sh", "#!/bin/sh\necho hello\n");
    r.chmod_x("bin/run.sh");
    r.write("docs/readme.txt", "Read me.\n");
    r.write(NESTED, "deep inside\n");
    r.write(SPACED, "spaces and non-ASCII: ü ✓ 漢字\n");
    r.write("plain.bin", [0u8, 1, 2, 255, 254, 0, b'\n', b'\r']);
    r.symlink("docs/readme.txt", "link-to-readme");
    r.symlink("docs", "link-to-dir");
    r.symlink("does/not/exist", "dangling");
    let s1 = r.seal("first: every kind of entry");
    let snap1 = r.snapshot_tree();
    assert!(matches!(snap1["bin/run.sh"], Entry::Exec(_)), "{snap1:?}");
    assert!(
        matches!(snap1["link-to-dir"], Entry::Symlink(_)),
        "{snap1:?}"
    );
    assert_eq!(snap1["empty"], Entry::File(Vec::new()));
    assert_eq!(snap1.len(), 9, "{snap1:?}");
    let shown = r.json(&["show", &s1, "--json"]);
    assert_eq!(
        strings(&shown["changes"]["added"]),
        snap1.keys().cloned().collect::<Vec<_>>(),
        "the first seal adds every path"
    );

    // Nothing changed: sealing again is a no-op that says so.
    let out = r.ok(&["seal", "-m", "nothing"]);
    assert!(out.contains("Nothing to seal"), "{out}");
    assert_eq!(r.head_of("main").as_deref(), Some(s1.as_str()));

    // Seal 2 on a new timeline: flip exec bits, retarget a link, delete a nested
    // directory's only file, add a file in a new directory with a non-ASCII name.
    let created = r.ok(&["timeline", "create", "feature"]);
    assert!(created.contains(&s1[..12]), "{created}");
    r.ok(&["timeline", "switch", "feature"]);
    assert_eq!(r.current_timeline(), "feature");
    r.assert_tree(&snap1, "after switching to a new timeline at the same seal");
    r.chmod_no_x("bin/run.sh");
    r.write("docs/readme.txt", "Read me, on feature.\n");
    r.chmod_x("docs/readme.txt");
    r.symlink("plain.bin", "link-to-readme");
    r.remove(NESTED);
    std::fs::remove_dir_all(r.abs("docs/deep")).expect("rm docs/deep");
    r.write(ONLY_FEATURE, "only on feature\n");
    r.write("empty", "no longer empty\n");
    let s2 = r.seal("second: on feature");
    let snap2 = r.snapshot_tree();
    assert!(!snap2.contains_key(NESTED));
    assert!(matches!(snap2["bin/run.sh"], Entry::File(_)));
    assert!(matches!(snap2["docs/readme.txt"], Entry::Exec(_)));
    let shown = r.json(&["show", &s2, "--json"]);
    assert_eq!(parents_of(&shown), vec![s1.clone()]);
    assert_eq!(
        strings(&shown["changes"]["added"]),
        vec![ONLY_FEATURE.to_owned()]
    );
    assert_eq!(
        strings(&shown["changes"]["deleted"]),
        vec![NESTED.to_owned()]
    );
    assert_eq!(
        strings(&shown["changes"]["modified"]),
        vec!["bin/run.sh", "docs/readme.txt", "empty", "link-to-readme"],
        "a mode change alone is a modification"
    );

    // Back to main: the nested file reappears, feature's directory vanishes.
    r.ok(&["timeline", "switch", "main"]);
    r.assert_tree(&snap1, "main after feature's seal");
    assert!(
        !r.exists("feature only"),
        "a directory only feature has must vanish"
    );
    assert!(r.exists(NESTED));
    assert_eq!(empty_dirs(r.path()), Vec::<String>::new());

    // Seal 3 on main.
    r.write(SPACED, "edited on main: ü ✓\n");
    r.write("bin/second tool", "#!/bin/sh\nexit 0\n");
    r.chmod_x("bin/second tool");
    r.remove("dangling");
    let s3 = r.seal("third: on main");
    let snap3 = r.snapshot_tree();
    assert_ne!(snap3, snap1);
    assert_eq!(
        parents_of(&r.json(&["show", &s3, "--json"])),
        vec![s1.clone()],
        "main's second seal follows its first"
    );

    // Back and forth, several times, byte for byte.
    for round in 0..3 {
        r.ok(&["timeline", "switch", "feature"]);
        r.assert_tree(&snap2, &format!("feature, round {round}"));
        assert!(!r.exists(NESTED) && !r.exists("docs/deep"), "round {round}");
        assert!(!r.exists("bin/second tool"), "round {round}");
        assert_eq!(r.base().as_deref(), Some(s2.as_str()));
        let st = r.json(&["status", "--json"]);
        assert_eq!(st["timeline"], "feature");
        assert!(strings(&st["changes"]["added"]).is_empty(), "{st}");
        assert!(strings(&st["changes"]["modified"]).is_empty(), "{st}");
        assert!(strings(&st["changes"]["deleted"]).is_empty(), "{st}");

        r.ok(&["timeline", "switch", "main"]);
        r.assert_tree(&snap3, &format!("main, round {round}"));
        assert!(
            !r.exists(ONLY_FEATURE) && !r.exists("feature only"),
            "round {round}"
        );
        assert_eq!(r.base().as_deref(), Some(s3.as_str()));
        assert_eq!(empty_dirs(r.path()), Vec::<String>::new(), "round {round}");
    }

    // Switching to the timeline already checked out changes nothing.
    r.ok(&["timeline", "switch", "main"]);
    r.assert_tree(&snap3, "switch to the current timeline");

    // Each timeline's history.
    let main_log: Vec<String> = r.log(Some("main")).iter().map(id_of).collect();
    assert_eq!(main_log, vec![s3.clone(), s1.clone()]);
    let feature_log: Vec<String> = r.log(Some("feature")).iter().map(id_of).collect();
    assert_eq!(feature_log, vec![s2.clone(), s1.clone()]);
    r.ok(&["verify"]);

    // A timeline made from the first seal reproduces its tree exactly.
    r.ok(&["timeline", "create", "old", "--from", &s1[..12]]);
    r.ok(&["timeline", "switch", "old"]);
    r.assert_tree(&snap1, "timeline created from the first seal");
}

#[test]
fn status_json_reports_added_modified_deleted() {
    let r = Repo::forged();
    let st = r.json(&["status", "--json"]);
    assert_eq!(st["timeline"], "main");
    assert!(st["base"].is_null() && st["head"].is_null(), "{st}");
    assert!(st["fuse_pending"].is_null(), "{st}");

    r.write("keep.txt", "keep\n");
    r.write("edit.txt", "before\n");
    r.write("gone.txt", "gone soon\n");
    r.write("dir/gone too.txt", "gone soon\n");
    r.write("mode.sh", "echo\n");
    r.symlink("keep.txt", "link");
    let st = r.json(&["status", "--json"]);
    assert_eq!(
        strings(&st["changes"]["added"]),
        vec![
            "dir/gone too.txt",
            "edit.txt",
            "gone.txt",
            "keep.txt",
            "link",
            "mode.sh"
        ]
    );
    let s1 = r.seal("base");

    let st = r.json(&["status", "--json"]);
    assert_eq!(st["base"], s1.as_str());
    assert_eq!(st["head"], s1.as_str());
    for k in ["added", "modified", "deleted"] {
        assert!(strings(&st["changes"][k]).is_empty(), "{k}: {st}");
    }
    let text = r.ok(&["status"]);
    assert!(
        text.contains("On timeline main") && text.contains(&s1[..12]),
        "{text}"
    );
    assert!(text.contains("Nothing to seal"), "{text}");

    r.write("edit.txt", "after\n");
    r.remove("gone.txt");
    r.remove("dir/gone too.txt");
    r.write("new/ñew file.txt", "new\n");
    r.chmod_x("mode.sh");
    r.symlink("edit.txt", "link");
    // Same size, same second: must still be seen (the racy stat-cache case).
    r.write("keep.txt", "KEEP\n");
    let st = r.json(&["status", "--json"]);
    assert_eq!(strings(&st["changes"]["added"]), vec!["new/ñew file.txt"]);
    assert_eq!(
        strings(&st["changes"]["modified"]),
        vec!["edit.txt", "keep.txt", "link", "mode.sh"]
    );
    assert_eq!(
        strings(&st["changes"]["deleted"]),
        vec!["dir/gone too.txt", "gone.txt"]
    );
    // Asking twice gives the same answer (the stat cache must not hide anything).
    let again = r.json(&["status", "--json"]);
    assert_eq!(st["changes"], again["changes"]);

    let text = r.ok(&["status"]);
    for line in [
        "added:    new/ñew file.txt",
        "modified: edit.txt",
        "modified: mode.sh",
        "deleted:  gone.txt",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    let out = r.ok(&["seal", "-m", "changes"]);
    assert!(out.contains("(1 added, 4 modified, 2 deleted)"), "{out}");
    let st = r.json(&["status", "--json"]);
    for k in ["added", "modified", "deleted"] {
        assert!(strings(&st["changes"][k]).is_empty(), "{k}: {st}");
    }
}

#[test]
fn log_json_lists_seals_newest_first_with_full_parent_ids() {
    let r = Repo::forged();
    assert_eq!(
        r.log(None),
        Vec::<serde_json::Value>::new(),
        "log of an empty timeline"
    );
    let mut ids = Vec::new();
    for i in 0..4 {
        r.write("counter.txt", format!("{i}\n"));
        ids.push(r.seal(&format!("seal number {i}\n\nwith a body")));
    }
    let log = r.log(None);
    let got: Vec<String> = log.iter().map(id_of).collect();
    let mut want = ids.clone();
    want.reverse();
    assert_eq!(got, want, "newest first");
    for (i, entry) in log.iter().enumerate() {
        let id = id_of(entry);
        assert_eq!(id.len(), 64, "full ids: {entry}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(entry["short"], &id[..12]);
        assert_eq!(entry["author"], ivaldi_tests::AUTHOR);
        let parents = parents_of(entry);
        if i + 1 < log.len() {
            assert_eq!(
                parents,
                vec![id_of(&log[i + 1])],
                "parents by full id: {entry}"
            );
        } else {
            assert!(parents.is_empty(), "the first seal has no parent: {entry}");
        }
        assert!(
            entry["message"]
                .as_str()
                .is_some_and(|m| m.contains("with a body"))
        );
        assert!(entry["tree"].as_str().is_some_and(|t| t.len() == 64));
    }
    // Times are the pinned ones, increasing.
    let times: Vec<i64> = log
        .iter()
        .map(|e| e["time"].as_i64().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "{times:?}");

    let limited = r.json(&["log", "--json", "-n", "2"]);
    let limited: Vec<String> = limited
        .as_array()
        .expect("array")
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(limited, want[..2]);

    // Starting at a seal, by short id.
    let from_second: Vec<String> = r.log(Some(&ids[1][..12])).iter().map(id_of).collect();
    assert_eq!(from_second, vec![ids[1].clone(), ids[0].clone()]);

    let text = r.ok(&["log"]);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("seal ")).count(),
        4,
        "{text}"
    );
    assert!(
        text.find(&ids[3][..12]) < text.find(&ids[0][..12]),
        "{text}"
    );
}

#[test]
fn show_accepts_short_ids_and_prefixes() {
    let r = Repo::forged();
    r.write("a.txt", "a\n");
    let s1 = r.seal("one");
    r.write("b.txt", "b\n");
    r.write("a.txt", "a2\n");
    let s2 = r.seal("two");

    for spec in [
        &s2[..],
        &s2[..12],
        &s2[..6],
        &s2[..6].to_ascii_uppercase(),
        "main",
    ] {
        let v = r.json(&["show", spec, "--json"]);
        assert_eq!(id_of(&v), s2, "show {spec}");
        assert_eq!(parents_of(&v), vec![s1.clone()], "show {spec}");
        assert_eq!(
            strings(&v["changes"]["added"]),
            vec!["b.txt"],
            "show {spec}"
        );
        assert_eq!(
            strings(&v["changes"]["modified"]),
            vec!["a.txt"],
            "show {spec}"
        );
        assert_eq!(v["message"], "two");
    }
    let v = r.json(&["show", &s1[..6], "--json"]);
    assert_eq!(id_of(&v), s1);
    assert!(parents_of(&v).is_empty());

    let text = r.ok(&["show", &s2[..12]]);
    assert!(text.starts_with(&format!("seal {}", &s2[..12])), "{text}");
    assert!(
        text.contains("added:    b.txt") && text.contains("modified: a.txt"),
        "{text}"
    );
    assert!(text.contains(ivaldi_tests::AUTHOR), "{text}");
}

#[test]
fn timeline_list_json() {
    let r = Repo::forged();
    let v = r.json(&["timeline", "list", "--json"]);
    assert_eq!(v["current"], "main");
    assert_eq!(v["timelines"], serde_json::json!([]));
    let text = r.ok(&["timeline", "list"]);
    assert!(text.contains("* main (no seals yet)"), "{text}");

    r.write("f", "1\n");
    let s1 = r.seal("one");
    r.ok(&["timeline", "create", "zeta"]);
    r.ok(&["timeline", "create", "alpha/nested-name_1.0"]);
    r.ok(&["timeline", "switch", "zeta"]);
    r.write("f", "2\n");
    let s2 = r.seal("two");

    let heads = timeline_heads(&r);
    assert_eq!(
        heads,
        vec![
            ("alpha/nested-name_1.0".to_owned(), s1.clone(), false),
            ("main".to_owned(), s1.clone(), false),
            ("zeta".to_owned(), s2.clone(), true),
        ]
    );
    assert_eq!(r.json(&["timeline", "list", "--json"])["current"], "zeta");
    let text = r.ok(&["timeline", "list"]);
    assert!(text.contains(&format!("* zeta {}", &s2[..12])), "{text}");
    assert!(text.contains(&format!("  main {}", &s1[..12])), "{text}");

    // A nested timeline name can be checked out and sealed on.
    r.ok(&["timeline", "switch", "alpha/nested-name_1.0"]);
    assert_eq!(r.read_string("f"), "1\n");
    r.write("g", "g\n");
    let s3 = r.seal("three");
    assert_eq!(
        r.head_of("alpha/nested-name_1.0").as_deref(),
        Some(s3.as_str())
    );
    r.ok(&["verify"]);
}

#[test]
fn ignore_files_are_honoured() {
    let r = Repo::forged();
    r.write(".ivaldiignore", "*.log\nbuild/\n/top-only.txt\n");
    r.write("src/main.rs", "fn main() {}\n");
    r.write("src/debug.log", "noise\n");
    r.write("build/out.o", "binary\n");
    r.write(
        "src/build/gen.rs",
        "also ignored: build/ matches at any depth\n",
    );
    r.write("top-only.txt", "ignored at the top\n");
    r.write("src/top-only.txt", "tracked: the pattern is anchored\n");
    r.write("sub/.ivaldiignore", "secret.txt\n!keep.log\n");
    r.write("sub/secret.txt", "hidden\n");
    r.write("sub/deeper/secret.txt", "hidden too\n");
    r.write("sub/keep.log", "re-included by the nested file\n");
    r.write(
        "other/secret.txt",
        "tracked: the nested ignore file does not reach here\n",
    );

    // Whether the top-level ignore file itself is sealed is checked by
    // `top_level_ignore_file_is_sealed`; here only what the rules exclude.
    let tracked = vec![
        "other/secret.txt",
        "src/main.rs",
        "src/top-only.txt",
        "sub/.ivaldiignore",
        "sub/keep.log",
    ];
    let without_root_ignore = |v: &serde_json::Value| -> Vec<String> {
        strings(v)
            .into_iter()
            .filter(|p| p != ".ivaldiignore")
            .collect()
    };
    let st = r.json(&["status", "--json"]);
    assert_eq!(without_root_ignore(&st["changes"]["added"]), tracked);
    let s1 = r.seal("with ignores");
    let shown = r.json(&["show", &s1, "--json"]);
    assert_eq!(
        without_root_ignore(&shown["changes"]["added"]),
        tracked,
        "ignored files must not be sealed"
    );

    // Changing an ignored file is not a change.
    r.write("src/debug.log", "more noise\n");
    r.write("sub/secret.txt", "changed\n");
    let out = r.ok(&["seal", "-m", "nothing"]);
    assert!(out.contains("Nothing to seal"), "{out}");

    // Switching timelines leaves ignored files alone.
    let before = r.snapshot_tree();
    r.ok(&["timeline", "create", "other"]);
    r.ok(&["timeline", "switch", "other"]);
    r.write("src/main.rs", "fn main() { other() }\n");
    r.seal("on other");
    r.ok(&["timeline", "switch", "main"]);
    r.assert_tree(&before, "ignored files survive switching");
}

#[test]
fn switch_refuses_to_overwrite_uncommitted_work_but_carries_the_rest() {
    let r = Repo::forged();
    r.write("differs.txt", "main\n");
    r.write("same.txt", "same everywhere\n");
    r.write("dir/inner.txt", "inner\n");
    let s1 = r.seal("base");
    r.ok(&["timeline", "create", "feature"]);
    r.ok(&["timeline", "switch", "feature"]);
    r.write("differs.txt", "feature\n");
    r.write("added-on-feature.txt", "feature\n");
    let s2 = r.seal("feature");
    r.ok(&["timeline", "switch", "main"]);
    assert_eq!(r.base().as_deref(), Some(s1.as_str()));

    // An uncommitted edit to a file that differs between the timelines.
    r.write("differs.txt", "uncommitted on main\n");
    let before = r.snapshot_tree();
    let err = r.fails(&["timeline", "switch", "feature"]);
    assert!(
        err.contains("differs.txt"),
        "the error must name the file:\n{err}"
    );
    r.assert_tree(&before, "a refused switch touches nothing");
    assert_eq!(r.current_timeline(), "main");
    assert_eq!(r.base().as_deref(), Some(s1.as_str()));

    // An untracked file where the other timeline has a file.
    r.write("differs.txt", "main\n");
    r.write("added-on-feature.txt", "untracked on main\n");
    let before = r.snapshot_tree();
    let err = r.fails(&["timeline", "switch", "feature"]);
    assert!(err.contains("added-on-feature.txt"), "{err}");
    r.assert_tree(&before, "a refused switch touches nothing");
    r.remove("added-on-feature.txt");

    // A deleted file the other timeline changes.
    r.remove("differs.txt");
    let err = r.fails(&["timeline", "switch", "feature"]);
    assert!(err.contains("differs.txt"), "{err}");
    assert!(!r.exists("differs.txt"));
    r.write("differs.txt", "main\n");

    // Uncommitted work on files the timelines agree on is carried along.
    r.write("same.txt", "edited, not sealed\n");
    r.write("untracked.txt", "untracked\n");
    r.ok(&["timeline", "switch", "feature"]);
    assert_eq!(r.current_timeline(), "feature");
    assert_eq!(r.base().as_deref(), Some(s2.as_str()));
    assert_eq!(r.read_string("same.txt"), "edited, not sealed\n");
    assert_eq!(r.read_string("untracked.txt"), "untracked\n");
    assert_eq!(r.read_string("differs.txt"), "feature\n");
    let st = r.json(&["status", "--json"]);
    assert_eq!(strings(&st["changes"]["modified"]), vec!["same.txt"]);
    assert_eq!(strings(&st["changes"]["added"]), vec!["untracked.txt"]);
    assert!(strings(&st["changes"]["deleted"]).is_empty(), "{st}");

    // And back again.
    r.ok(&["timeline", "switch", "main"]);
    assert_eq!(r.read_string("same.txt"), "edited, not sealed\n");
    assert_eq!(r.read_string("differs.txt"), "main\n");
    assert!(!r.exists("added-on-feature.txt"));
}

#[test]
fn timeline_create_from_a_seal() {
    let r = Repo::forged();
    r.write("v.txt", "1\n");
    let s1 = r.seal("one");
    let snap1 = r.snapshot_tree();
    r.write("v.txt", "2\n");
    r.write("w.txt", "w\n");
    let s2 = r.seal("two");
    r.write("v.txt", "3\n");
    let s3 = r.seal("three");

    let out = r.ok(&["timeline", "create", "from-first", "--from", &s1[..12]]);
    assert!(out.contains(&s1[..12]), "{out}");
    assert_eq!(r.head_of("from-first").as_deref(), Some(s1.as_str()));
    r.ok(&["timeline", "create", "from-full", "--from", &s2]);
    assert_eq!(r.head_of("from-full").as_deref(), Some(s2.as_str()));
    r.ok(&["timeline", "create", "from-timeline", "--from", "main"]);
    assert_eq!(r.head_of("from-timeline").as_deref(), Some(s3.as_str()));
    // Without --from: the working tree's base.
    r.ok(&["timeline", "create", "from-base"]);
    assert_eq!(r.head_of("from-base").as_deref(), Some(s3.as_str()));
    // Creating does not switch.
    assert_eq!(r.current_timeline(), "main");

    r.ok(&["timeline", "switch", "from-first"]);
    r.assert_tree(&snap1, "timeline created from the first seal");
    assert!(!r.exists("w.txt"));
    r.write("x.txt", "diverge\n");
    let s4 = r.seal("diverged");
    assert_eq!(
        parents_of(&r.json(&["show", &s4, "--json"])),
        vec![s1.clone()]
    );
    assert_eq!(
        r.head_of("main").as_deref(),
        Some(s3.as_str()),
        "main did not move"
    );
    r.ok(&["verify"]);
}

#[test]
fn large_file_round_trips_and_small_edits_store_little() {
    const SIZE: usize = 3 << 20;
    let r = Repo::forged();
    let original = pseudo_random_bytes(0x1a2b_3c4d, SIZE);
    r.write("big/blob.bin", &original);
    r.write("small.txt", "small\n");
    r.seal("a 3 MiB file");
    let after_first = r.objects_size();
    assert!(
        after_first >= SIZE as u64,
        "the file's bytes are stored: {after_first}"
    );
    assert!(
        after_first < SIZE as u64 + (256 << 10),
        "stored once: {after_first}"
    );

    r.ok(&["timeline", "create", "pristine"]);

    // Overwrite 100 bytes in the middle and insert a few bytes near the start.
    let mut edited = original.clone();
    edited[SIZE / 2..SIZE / 2 + 100].fill(b'E');
    edited.splice(1000..1000, b"inserted".iter().copied());
    r.write("big/blob.bin", &edited);
    let before = r.objects_size();
    let out = r.ok(&["seal", "-m", "small edits in the big file"]);
    assert!(out.contains("1 modified"), "{out}");
    let growth = r.objects_size() - before;
    assert!(
        growth < 1 << 20,
        "a small edit to a chunked 3 MiB file stored {growth} new bytes (should be far less than 1 MiB)"
    );
    let edited_snap = r.snapshot_tree();

    for round in 0..2 {
        r.ok(&["timeline", "switch", "pristine"]);
        assert!(
            r.read("big/blob.bin") == original,
            "pristine big file differs, round {round}"
        );
        r.ok(&["timeline", "switch", "main"]);
        assert!(
            r.read("big/blob.bin") == edited,
            "edited big file differs, round {round}"
        );
        r.assert_tree(&edited_snap, &format!("main, round {round}"));
    }
    let st = r.json(&["status", "--json"]);
    assert!(strings(&st["changes"]["modified"]).is_empty(), "{st}");
    r.ok(&["verify"]);

    // Exactly at the threshold and one byte below take different paths.
    for (name, len) in [("at.bin", 1usize << 20), ("below.bin", (1 << 20) - 1)] {
        r.write(name, pseudo_random_bytes(len as u64, len));
    }
    r.seal("threshold files");
    r.ok(&["timeline", "switch", "pristine"]);
    assert!(!r.exists("at.bin"));
    r.ok(&["timeline", "switch", "main"]);
    assert_eq!(r.read("at.bin"), pseudo_random_bytes(1 << 20, 1 << 20));
    assert_eq!(
        r.read("below.bin"),
        pseudo_random_bytes((1 << 20) - 1, (1 << 20) - 1)
    );
    r.ok(&["verify"]);
}

#[test]
fn switch_carries_an_uncommitted_deletion_of_a_file_both_timelines_share() {
    let r = Repo::forged();
    r.write("differs.txt", "main\n");
    r.write("dir/shared.txt", "shared\n");
    r.write("shared.txt", "shared\n");
    r.seal("base");
    r.ok(&["timeline", "create", "feature"]);
    r.ok(&["timeline", "switch", "feature"]);
    r.write("differs.txt", "feature\n");
    r.seal("feature");
    r.ok(&["timeline", "switch", "main"]);

    // Deleting a file is uncommitted work like editing one: a switch that does
    // not touch the file must keep it deleted, not resurrect it.
    r.remove("shared.txt");
    r.remove("dir/shared.txt");
    r.ok(&["timeline", "switch", "feature"]);
    assert_eq!(r.read_string("differs.txt"), "feature\n");
    let st = r.json(&["status", "--json"]);
    assert_eq!(
        strings(&st["changes"]["deleted"]),
        vec!["dir/shared.txt", "shared.txt"],
        "the uncommitted deletions were not carried along: {st}"
    );
    assert!(!r.exists("shared.txt") && !r.exists("dir/shared.txt"));
}

#[test]
fn switch_between_a_file_a_directory_and_a_symlink_at_the_same_path() {
    let r = Repo::forged();
    r.write("real/inside.txt", "real\n");
    r.write("x", "x is a file on main\n");
    r.symlink("real", "d");
    r.seal("main: x is a file, d links to real/");
    let main_snap = r.snapshot_tree();
    r.ok(&["timeline", "create", "feature"]);
    r.ok(&["timeline", "switch", "feature"]);
    r.remove("x");
    r.write("x/y.txt", "x is a directory on feature\n");
    r.remove("d");
    r.write("d/own.txt", "d is a real directory on feature\n");
    r.seal("feature: x and d are directories");
    let feature_snap = r.snapshot_tree();

    for round in 0..2 {
        r.ok(&["timeline", "switch", "main"]);
        r.assert_tree(&main_snap, &format!("main, round {round}"));
        r.ok(&["timeline", "switch", "feature"]);
        r.assert_tree(&feature_snap, &format!("feature, round {round}"));
        // Nothing was written through the symlink into real/.
        assert!(!r.exists("real/own.txt"), "round {round}");
    }
    assert_eq!(empty_dirs(r.path()), Vec::<String>::new());
    r.ok(&["verify"]);
}

#[test]
fn top_level_ignore_file_is_sealed() {
    // An ignore file is an ordinary file: sealed, shown by status, and switched
    // with its timeline (nested ones already are).
    let r = Repo::forged();
    r.write(".ivaldiignore", "*.log\n");
    r.write("sub/.ivaldiignore", "*.tmp\n");
    r.write("a.txt", "a\n");
    let st = r.json(&["status", "--json"]);
    assert_eq!(
        strings(&st["changes"]["added"]),
        vec![".ivaldiignore", "a.txt", "sub/.ivaldiignore"],
        "status must list the top-level .ivaldiignore like the nested one: {st}"
    );
    let s1 = r.seal("ignore rules");
    let shown = r.json(&["show", &s1, "--json"]);
    assert_eq!(
        strings(&shown["changes"]["added"]),
        vec![".ivaldiignore", "a.txt", "sub/.ivaldiignore"],
        "the top-level .ivaldiignore must be sealed"
    );
    // Other top-level names that merely start with ".ivaldi" are files too.
    r.write(".ivaldi-notes.md", "notes\n");
    let st = r.json(&["status", "--json"]);
    assert_eq!(
        strings(&st["changes"]["added"]),
        vec![".ivaldi-notes.md"],
        "{st}"
    );
}
