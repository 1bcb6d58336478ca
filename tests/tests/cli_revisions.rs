//! Revision names through the CLI: `HEAD`, `@`, `TIMELINE~N`, `TIMELINE^N`,
//! their combinations and short ids, in every command that takes a seal.

use ivaldi_tests::Repo;

/// main: a1 <- a2 <- a3 <- m (fuse of side: s1 on a1), then checked out on main.
/// Returns the repository and the ids (a1, a2, a3, s1, m).
fn history() -> (Repo, [String; 5]) {
    let r = Repo::forged();
    r.write("a.txt", "1\n");
    let a1 = r.seal("a1");
    r.ok(&["timeline", "create", "side"]);
    r.write("a.txt", "2\n");
    let a2 = r.seal("a2");
    r.write("a.txt", "3\n");
    let a3 = r.seal("a3");
    r.ok(&["timeline", "switch", "side"]);
    r.write("s.txt", "side\n");
    let s1 = r.seal("s1");
    r.ok(&["timeline", "switch", "main"]);
    r.ok(&["fuse", "side"]);
    let m = r.head_of("main").expect("main has a head");
    assert_ne!(m, a3, "fusing side made a fuse seal");
    (r, [a1, a2, a3, s1, m])
}

fn show_id(r: &Repo, rev: &str) -> String {
    r.json(&["show", rev, "--json"])["id"]
        .as_str()
        .unwrap_or_else(|| panic!("show {rev} has an id"))
        .to_owned()
}

#[test]
fn head_tilde_and_caret_name_the_expected_seals() {
    let (r, [a1, a2, a3, s1, m]) = history();
    for (rev, want) in [
        ("HEAD", &m),
        ("@", &m),
        ("main", &m),
        ("HEAD~", &a3),
        ("HEAD~1", &a3),
        ("@~2", &a2),
        ("main~3", &a1),
        ("main^", &a3),
        ("main^1", &a3),
        ("main^2", &s1),
        ("HEAD^2~1", &a1),
        ("main~1^0", &a3),
        ("side", &s1),
        ("side~1", &a1),
    ] {
        assert_eq!(&show_id(&r, rev), want, "show {rev}");
    }
    // A short id with steps.
    assert_eq!(show_id(&r, &format!("{}~2", &a3[..8])), a1);
    // `main~2^2`: a combination along the way (a2 has one parent: refused).
    let err = r.fails(&["show", "main~2^2"]);
    assert!(err.contains("\"main~2^2\""), "{err}");
    assert!(err.contains("main~2") && err.contains("1 parent"), "{err}");
}

#[test]
fn log_fuse_and_timeline_create_take_revisions() {
    let (r, [a1, a2, a3, _, _]) = history();
    // log from HEAD~1: a3, a2, a1.
    let ids: Vec<String> = r
        .log(Some("HEAD~1"))
        .iter()
        .map(ivaldi_tests::id_of)
        .collect();
    assert_eq!(ids, [a3.clone(), a2.clone(), a1.clone()]);
    // timeline create --from main~2.
    let out = r.ok(&["timeline", "create", "old", "--from", "main~2"]);
    assert!(out.contains(&a2[..12]), "{out}");
    assert_eq!(r.head_of("old").as_deref(), Some(a2.as_str()));
    // fuse a revision: on `old` (a2), fuse main~1 (a3) fast-forwards.
    r.ok(&["timeline", "switch", "old"]);
    let out = r.ok(&["fuse", "main~1"]);
    assert!(out.contains("Fast-forwarded"), "{out}");
    assert_eq!(r.head_of("old").as_deref(), Some(a3.as_str()));
    assert_eq!(show_id(&r, "HEAD"), a3);
}

#[test]
fn bad_revisions_are_refused_naming_them() {
    let (r, _) = history();
    for (rev, needle) in [
        ("main~9", "no parent"),
        ("main~x", "'x'"),
        ("~1", "nothing before"),
        ("nope~1", "\"nope\""),
        ("HEAD^3", "2 parents"),
        ("main~99999999999", "too large"),
    ] {
        for cmd in [&["show", rev][..], &["log", rev], &["fuse", rev]] {
            let err = r.fails(cmd);
            assert!(err.contains(needle), "{cmd:?}: {err}");
        }
        let err = r.fails(&["timeline", "create", "t", "--from", rev]);
        assert!(err.contains(needle), "create --from {rev}: {err}");
    }
    assert!(
        r.fails(&["show", "nope"])
            .contains("no seal matches \"nope\"")
    );
    // Nothing was created by the refusals.
    assert_eq!(r.head_of("t"), None);
    // HEAD and @ cannot become timeline names.
    for name in ["HEAD", "@"] {
        let err = r.fails(&["timeline", "create", name]);
        assert!(err.contains("working tree's base"), "{err}");
    }
}

#[test]
fn head_in_an_empty_repository_says_nothing_is_sealed() {
    let r = Repo::forged();
    let err = r.fails(&["show", "HEAD"]);
    assert!(err.contains("nothing is sealed yet"), "{err}");
}
