//! `ivaldi fuse`: "A fuse with no conflict and one with a conflict", plus the
//! fast-forward and already-up-to-date cases.

use ivaldi_tests::{Repo, id_of, parents_of, strings};

/// Ten numbered lines, with line `n` (1-based) replaced where asked.
fn lines(edits: &[(usize, &str)]) -> String {
    (1..=10)
        .map(|i| match edits.iter().find(|(n, _)| *n == i) {
            Some((_, s)) => format!("{s}\n"),
            None => format!("line {i}\n"),
        })
        .collect()
}

/// A repository with a base seal and a `feature` timeline made from it, on main.
fn diverging_repo() -> (Repo, String) {
    let r = Repo::forged();
    r.write("text.txt", lines(&[]));
    r.write("ours.txt", "ours, base\n");
    r.write("theirs.txt", "theirs, base\n");
    r.write("dir/nested.txt", "nested, base\n");
    let base = r.seal("base");
    r.ok(&["timeline", "create", "feature"]);
    (r, base)
}

fn assert_clean_status(r: &Repo) {
    let st = r.json(&["status", "--json"]);
    for k in ["added", "modified", "deleted"] {
        assert!(strings(&st["changes"][k]).is_empty(), "{k} not empty: {st}");
    }
    assert!(st["fuse_pending"].is_null(), "{st}");
}

#[test]
fn fuse_without_conflict_seals_both_parents() {
    let (r, base) = diverging_repo();
    r.ok(&["timeline", "switch", "feature"]);
    r.write("text.txt", lines(&[(2, "line 2 from feature")]));
    r.write("theirs.txt", "theirs, changed on feature\n");
    r.write("dir/from-feature.txt", "new on feature\n");
    r.chmod_x("dir/from-feature.txt");
    let theirs = r.seal("feature work");
    r.ok(&["timeline", "switch", "main"]);
    r.write("text.txt", lines(&[(9, "line 9 from main")]));
    r.write("ours.txt", "ours, changed on main\n");
    r.remove("dir/nested.txt");
    let ours = r.seal("main work");

    let out = r.ok(&["fuse", "feature"]);
    assert!(out.contains("Fused feature"), "{out}");
    let merged = r.head_of("main").expect("main has a head");
    assert!(out.contains(&merged[..12]), "{out}");
    assert_ne!(merged, ours);
    assert_eq!(
        r.head_of("feature").as_deref(),
        Some(theirs.as_str()),
        "feature did not move"
    );
    assert_eq!(r.base().as_deref(), Some(merged.as_str()));

    let log = r.log(None);
    assert_eq!(id_of(&log[0]), merged);
    assert_eq!(
        parents_of(&log[0]),
        vec![ours.clone(), theirs.clone()],
        "ours first, then theirs"
    );
    let mut all: Vec<String> = log.iter().map(id_of).collect();
    all.sort();
    let mut want = vec![merged.clone(), ours.clone(), theirs.clone(), base.clone()];
    want.sort();
    assert_eq!(all, want, "log lists every seal once");
    let shown = r.json(&["show", &merged[..12], "--json"]);
    assert_eq!(parents_of(&shown), vec![ours.clone(), theirs.clone()]);
    assert!(
        shown["message"]
            .as_str()
            .is_some_and(|m| m.contains("feature")),
        "{shown}"
    );
    // Changes are shown against the first parent: what feature brought in.
    assert_eq!(
        strings(&shown["changes"]["added"]),
        vec!["dir/from-feature.txt"]
    );
    assert_eq!(
        strings(&shown["changes"]["modified"]),
        vec!["text.txt", "theirs.txt"]
    );
    let text = r.ok(&["show", &merged]);
    assert!(
        text.contains(&format!("Fuse:   {} {}", &ours[..12], &theirs[..12])),
        "{text}"
    );

    // The working tree holds both sides' changes.
    assert_eq!(
        r.read_string("text.txt"),
        lines(&[(2, "line 2 from feature"), (9, "line 9 from main")])
    );
    assert_eq!(r.read_string("ours.txt"), "ours, changed on main\n");
    assert_eq!(r.read_string("theirs.txt"), "theirs, changed on feature\n");
    assert_eq!(r.read_string("dir/from-feature.txt"), "new on feature\n");
    let snap = r.snapshot_tree();
    assert!(
        matches!(snap["dir/from-feature.txt"], ivaldi_tests::Entry::Exec(_)),
        "{snap:?}"
    );
    assert!(
        !r.exists("dir/nested.txt"),
        "main's deletion survives the fuse"
    );
    assert_clean_status(&r);
    r.ok(&["verify"]);

    // Fusing again is a no-op; so is fusing back the other way once fast-forwarded.
    let out = r.ok(&["fuse", "feature"]);
    assert!(out.contains("Already up to date"), "{out}");
    r.ok(&["timeline", "switch", "feature"]);
    let out = r.ok(&["fuse", "main"]);
    assert!(out.contains("Fast-forwarded"), "{out}");
    assert_eq!(r.head_of("feature").as_deref(), Some(merged.as_str()));
    r.assert_tree(&snap, "feature fast-forwarded to the fuse");
}

#[test]
fn fuse_with_conflict_writes_markers_and_the_next_seal_records_both_parents() {
    let (r, _base) = diverging_repo();
    r.ok(&["timeline", "switch", "feature"]);
    r.write("text.txt", lines(&[(5, "line 5 as feature wants it")]));
    r.write("theirs.txt", "theirs, changed on feature\n");
    let theirs = r.seal("feature edits line 5");
    r.ok(&["timeline", "switch", "main"]);
    r.write("text.txt", lines(&[(5, "line 5 as main wants it")]));
    r.write("ours.txt", "ours, changed on main\n");
    let ours = r.seal("main edits line 5");

    let out = r.fails_output(&["fuse", "feature"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("text.txt") || stderr.contains("text.txt"),
        "the conflicted file must be listed:\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("theirs.txt") && !stderr.contains("theirs.txt"),
        "{stdout}{stderr}"
    );
    assert_eq!(
        r.head_of("main").as_deref(),
        Some(ours.as_str()),
        "a conflicted fuse seals nothing"
    );

    let text = r.read_string("text.txt");
    let marker_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("<<<<<<<") || *l == "=======" || l.starts_with(">>>>>>>"))
        .collect();
    assert_eq!(
        marker_lines.len(),
        3,
        "one conflict, three markers:\n{text}"
    );
    assert!(
        marker_lines[0].starts_with("<<<<<<<") && marker_lines[0].contains("main"),
        "{text}"
    );
    assert_eq!(marker_lines[1], "=======");
    assert!(
        marker_lines[2].starts_with(">>>>>>>") && marker_lines[2].contains("feature"),
        "{text}"
    );
    let ours_at = text
        .find("line 5 as main wants it")
        .expect("ours' line present");
    let theirs_at = text
        .find("line 5 as feature wants it")
        .expect("theirs' line present");
    assert!(ours_at < theirs_at, "ours above theirs:\n{text}");
    assert!(
        text.starts_with("line 1\nline 2\nline 3\nline 4\n<<<<<<<"),
        "{text}"
    );
    assert!(
        text.ends_with("line 6\nline 7\nline 8\nline 9\nline 10\n"),
        "{text}"
    );
    // The clean part of the fuse is in the working tree already.
    assert_eq!(r.read_string("theirs.txt"), "theirs, changed on feature\n");
    assert_eq!(r.read_string("ours.txt"), "ours, changed on main\n");

    let st = r.json(&["status", "--json"]);
    assert_eq!(st["fuse_pending"], theirs.as_str(), "{st}");
    assert_eq!(
        strings(&st["changes"]["modified"]),
        vec!["text.txt", "theirs.txt"],
        "{st}"
    );
    let text_status = r.ok(&["status"]);
    assert!(
        text_status.contains(&format!("Fusing {}", &theirs[..12])),
        "{text_status}"
    );

    // Nothing else may start while the fuse is pending.
    let err = r.fails(&["timeline", "switch", "feature"]);
    assert!(err.contains("fuse"), "{err}");
    let err = r.fails(&["fuse", "feature"]);
    assert!(err.contains("fuse"), "{err}");
    r.ok(&["verify"]);

    // Resolve and seal.
    r.write("text.txt", lines(&[(5, "line 5, resolved")]));
    let resolved = r.seal("resolve the fuse");
    let shown = r.json(&["show", &resolved, "--json"]);
    assert_eq!(parents_of(&shown), vec![ours.clone(), theirs.clone()]);
    assert_eq!(
        strings(&shown["changes"]["modified"]),
        vec!["text.txt", "theirs.txt"]
    );
    assert_eq!(parents_of(&r.log(None)[0]), vec![ours, theirs.clone()]);
    assert_clean_status(&r);
    r.ok(&["verify"]);

    // After that, feature is part of main's history.
    let out = r.ok(&["fuse", "feature"]);
    assert!(out.contains("Already up to date"), "{out}");
    assert_eq!(r.read_string("text.txt"), lines(&[(5, "line 5, resolved")]));
}

#[test]
fn fuse_fast_forwards_when_main_has_nothing_new() {
    let (r, base) = diverging_repo();
    let snap_base = r.snapshot_tree();
    r.ok(&["timeline", "switch", "feature"]);
    r.write("text.txt", lines(&[(1, "first")]));
    r.write("added/file.txt", "added\n");
    r.remove("ours.txt");
    r.seal("feature 1");
    r.write("text.txt", lines(&[(1, "first"), (10, "last")]));
    let tip = r.seal("feature 2");
    let snap_tip = r.snapshot_tree();
    r.ok(&["timeline", "switch", "main"]);
    r.assert_tree(&snap_base, "main before the fuse");

    let out = r.ok(&["fuse", "feature"]);
    assert!(
        out.contains("Fast-forwarded") && out.contains(&tip[..12]),
        "{out}"
    );
    assert_eq!(r.head_of("main").as_deref(), Some(tip.as_str()));
    assert_eq!(r.base().as_deref(), Some(tip.as_str()));
    r.assert_tree(&snap_tip, "main fast-forwarded to feature");
    let log: Vec<String> = r.log(None).iter().map(id_of).collect();
    assert_eq!(log.len(), 3, "no new seal for a fast-forward: {log:?}");
    assert_eq!(log.last(), Some(&base));
    assert_clean_status(&r);
    r.ok(&["verify"]);
}

#[test]
fn fuse_reports_already_up_to_date() {
    let (r, base) = diverging_repo();
    // feature is main's ancestor (equal, here).
    let out = r.ok(&["fuse", "feature"]);
    assert!(out.contains("Already up to date"), "{out}");
    r.write("ours.txt", "moved on\n");
    let ours = r.seal("main moves on");
    let out = r.ok(&["fuse", "feature"]);
    assert!(out.contains("Already up to date"), "{out}");
    // Fusing the current timeline into itself.
    let out = r.ok(&["fuse", "main"]);
    assert!(out.contains("Already up to date"), "{out}");
    assert_eq!(r.head_of("main").as_deref(), Some(ours.as_str()));
    assert_eq!(r.head_of("feature").as_deref(), Some(base.as_str()));
    assert_eq!(r.log(None).len(), 2);
    assert_clean_status(&r);
}

#[test]
fn fuse_refuses_with_uncommitted_changes() {
    let (r, _) = diverging_repo();
    r.ok(&["timeline", "switch", "feature"]);
    r.write("theirs.txt", "theirs, changed on feature\n");
    r.seal("feature");
    r.ok(&["timeline", "switch", "main"]);
    r.write("ours.txt", "ours, changed on main\n");
    let ours = r.seal("main");
    r.write("ours.txt", "uncommitted\n");
    let before = r.snapshot_tree();
    let err = r.fails(&["fuse", "feature"]);
    assert!(err.contains("ours.txt"), "{err}");
    r.assert_tree(&before, "a refused fuse touches nothing");
    assert_eq!(r.head_of("main").as_deref(), Some(ours.as_str()));
}

#[test]
fn fuse_with_a_binary_or_delete_modify_conflict_keeps_both_sides_visible() {
    let (r, _) = diverging_repo();
    r.write("bin.dat", [0u8, 1, 2, 3, 0, 0]);
    r.seal("binary");
    r.ok(&["timeline", "create", "other"]);
    r.ok(&["timeline", "switch", "other"]);
    r.write("bin.dat", [0u8, 9, 9, 9, 0, 0]);
    r.remove("theirs.txt");
    r.seal("other: binary change, delete theirs.txt");
    r.ok(&["timeline", "switch", "main"]);
    r.write("bin.dat", [0u8, 7, 7, 7, 0, 0]);
    r.write("theirs.txt", "theirs, modified on main\n");
    let ours = r.seal("main: binary change, modify theirs.txt");

    let out = r.fails_output(&["fuse", "other"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("bin.dat") && stdout.contains("theirs.txt"),
        "{stdout}"
    );
    // Our side of each conflict stays in the working tree.
    assert_eq!(r.read("bin.dat"), vec![0u8, 7, 7, 7, 0, 0]);
    assert_eq!(r.read_string("theirs.txt"), "theirs, modified on main\n");
    let resolved = r.seal("keep ours");
    assert_eq!(
        parents_of(&r.json(&["show", &resolved, "--json"])).first(),
        Some(&ours)
    );
    assert_eq!(parents_of(&r.json(&["show", &resolved, "--json"])).len(), 2);
    r.ok(&["verify"]);
}
