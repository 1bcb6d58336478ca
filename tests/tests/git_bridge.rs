//! `ivaldi git import|export` (issue 15), with the `git` command line as the
//! oracle: a generated history with every kind of thing the bridge must keep
//! goes into Ivaldi and back out, and must come back with the same commit and
//! tag ids, pass `git fsck --strict`, and check out exactly as `git archive`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use ivaldi_tests::{Repo, assert_same_tree, empty_dirs, snapshot_dir};

/// Runs `git ARGS` in `dir` with a fixed identity and clock and no user or
/// system configuration; panics on failure; returns stdout.
#[track_caller]
fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_cmd(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir);
    fixed_env(&mut c);
    c
}

/// No user or system git configuration, a fixed identity and clock.
fn fixed_env(c: &mut Command) {
    c.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Ada Lovelace")
        .env("GIT_AUTHOR_EMAIL", "ada@example.org")
        .env("GIT_COMMITTER_NAME", "Bob")
        .env("GIT_COMMITTER_EMAIL", "bob@example.org")
        .env("GIT_AUTHOR_DATE", "1700000000 +0530")
        .env("GIT_COMMITTER_DATE", "1700000100 -0700");
}

/// Runs a shell script in `dir` with the same git environment.
#[track_caller]
fn sh(dir: &Path, script: &str) {
    let mut c = Command::new("sh");
    fixed_env(&mut c);
    let out = c
        .current_dir(dir)
        .args(["-ec", script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "script failed in {}:\n{script}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A history with merges (an octopus among them), a rename, a symlink, an
/// executable, a submodule entry, non-ASCII names, a large file (chunked in
/// Ivaldi), empty commits, a message without a trailing newline, a latin-1
/// message with an `encoding` header, a `gpgsig` header and a `-0000` zone
/// (a commit written raw), lightweight and annotated tags (one on a
/// commit no branch reaches), and branch names Ivaldi must map.
const HISTORY: &str = r#"
git init -q -b main .
git config core.symlinks true
echo hello > a.txt; mkdir -p dir/sub; echo x > dir/sub/deep.txt
printf '#!/bin/sh\necho hi\n' > run.sh; chmod +x run.sh
ln -s a.txt link
echo ü > "ünïcödé.txt"
seq 1 300000 > big.txt
git add -A; git commit -q -m "first"
git mv a.txt b.txt; echo more >> big.txt; git commit -q -am "rename, and grow the big file"
git commit -q --allow-empty -m "empty commit"
git update-index --add --cacheinfo 160000,1234567890123456789012345678901234567890,sub/module
git commit -q -m "a submodule"
printf 'no trailing newline' > ../msg; git commit -q --allow-empty -F ../msg --cleanup=verbatim
git -c i18n.commitEncoding=ISO-8859-1 commit -q --allow-empty -m "$(printf 'latin-1: \351t\351')"
tree=$(git rev-parse 'HEAD^{tree}'); parent=$(git rev-parse HEAD)
printf 'tree %s\nparent %s\nauthor Eve <eve@example.org> 1700000200 -0000\ncommitter Eve <eve@example.org> 1700000300 +1400\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEEnotreallyasignature\n -----END PGP SIGNATURE-----\n\nsigned, with a -0000 zone\n' "$tree" "$parent" > ../raw
git update-ref refs/heads/main "$(git hash-object -t commit -w ../raw)"
git checkout -q -b side1; echo s1 > s1; git add s1; git commit -q -m s1
git checkout -q main; git checkout -q -b side2; echo s2 > s2; git add s2; git commit -q -m s2
git checkout -q main; git checkout -q -b side3; echo s3 > s3; chmod +x s3; git add s3; git commit -q -m s3
git checkout -q main; echo m > m; git add m; git commit -q -m m
git merge -q --no-edit side1
git merge -q --no-edit side2 side3
git tag light
git tag -a -m "annotated" v1.0
git branch "fix-ü"
git branch "odd#name"
git checkout -q -b gone; echo t > t; git add t; git commit -q -m "only tagged"
git tag -a -m "on a deleted branch" orphan
git checkout -q main; git branch -q -D gone
"#;

/// `git for-each-ref`: every branch and tag with its object id.
fn refs(dir: &Path) -> String {
    git(dir, &["for-each-ref", "--format=%(refname) %(objectname)"])
}

/// Every commit id reachable from any ref.
fn commits(dir: &Path) -> BTreeSet<String> {
    git(dir, &["rev-list", "--all"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The bridge's map: git commit id → seal id (format in docs/git-bridge.md).
fn map(r: &Repo) -> BTreeMap<String, String> {
    std::fs::read_to_string(r.dot().join("git/map"))
        .expect("the map exists")
        .lines()
        .map(|l| {
            let (g, s) = l.split_once(' ').expect("two ids");
            (g.to_owned(), s.to_owned())
        })
        .collect()
}

fn json(r: &Repo, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&r.ok(args)).expect("JSON output")
}

fn source() -> tempfile::TempDir {
    let src = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(src.path().join("repo")).expect("mkdir");
    sh(&src.path().join("repo"), HISTORY);
    src
}

#[test]
fn a_history_round_trips_to_the_same_commit_ids_and_trees() {
    let src = source();
    let g = src.path().join("repo");
    let r = Repo::forged();
    let report = json(&r, &["git", "import", g.to_str().unwrap(), "--json"]);
    let all = commits(&g);
    assert_eq!(
        report["commits_imported"].as_u64(),
        Some(all.len() as u64),
        "{report}"
    );
    let renamed = report["renamed"].to_string();
    assert!(
        renamed.contains("fix-@C3@BC") && renamed.contains("odd@23name"),
        "{report}"
    );

    // Export into a fresh directory: the same refs (so the same commit and
    // annotated tag ids), the same commits, and git finds nothing wrong.
    let out = tempfile::tempdir().expect("temp dir");
    let dest = out.path().join("exported.git");
    let exported = json(&r, &["git", "export", dest.to_str().unwrap(), "--json"]);
    assert_eq!(exported["created"], true, "{exported}");
    assert_eq!(refs(&dest), refs(&g));
    assert_eq!(commits(&dest), all);
    git(&dest, &["fsck", "--strict", "--no-dangling"]);
    let signed = git(&dest, &["cat-file", "commit", "main~3"]);
    assert!(
        signed.contains("gpgsig -----BEGIN PGP SIGNATURE-----"),
        "{signed}"
    );

    // gc keeps what export needs, the commit only a tag reaches included.
    r.ok(&["gc"]);
    let again = out.path().join("after-gc.git");
    json(&r, &["git", "export", again.to_str().unwrap(), "--json"]);
    assert_eq!(refs(&again), refs(&g));

    // Every seal checks out exactly as `git archive` of its commit: contents,
    // exec bits, symlinks, and the submodule as an empty directory.
    let m = map(&r);
    for (i, commit) in all.iter().enumerate() {
        let seal = m
            .get(commit)
            .unwrap_or_else(|| panic!("{commit} not in the map"));
        let t = format!("check/{i}");
        r.ok(&["timeline", "create", &t, "--from", seal]);
        r.ok(&["timeline", "switch", &t]);
        let expected = tempfile::tempdir().expect("temp dir");
        sh(
            &g,
            &format!(
                "git archive --format=tar {commit} | tar -x -C '{}'",
                expected.path().display()
            ),
        );
        assert_same_tree(
            &snapshot_dir(expected.path()),
            &snapshot_dir(r.path()),
            &format!("commit {commit}"),
        );
        assert_eq!(
            empty_dirs(expected.path()),
            empty_dirs(r.path()),
            "{commit}"
        );
        let status = json(&r, &["status", "--json"]);
        for k in ["added", "modified", "deleted"] {
            assert_eq!(
                status["changes"][k],
                serde_json::json!([]),
                "{commit}: {status}"
            );
        }
    }
    r.ok(&["verify"]);
}

#[test]
fn import_and_export_are_incremental_and_native_seals_export_deterministically() {
    let src = source();
    let g = src.path().join("repo");
    let r = Repo::forged();
    let gs = g.to_str().unwrap();
    json(&r, &["git", "import", gs, "--json"]);
    let before = map(&r).len();

    // Two new git commits and a new branch: only those are imported.
    sh(
        &g,
        "echo new > new.txt; git add new.txt; git commit -q -m new1; \
         git commit -q --allow-empty -m new2; git branch later",
    );
    let again = json(&r, &["git", "import", gs, "--json"]);
    assert_eq!(again["commits_imported"], 2, "{again}");
    assert_eq!(map(&r).len(), before + 2);
    let outcomes: BTreeMap<String, String> = again["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| {
            (
                b["branch"].as_str().unwrap_or("").to_owned(),
                b["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(outcomes["main"], "moved");
    assert_eq!(outcomes["later"], "created");
    assert_eq!(outcomes["side1"], "unchanged");
    let nothing = json(&r, &["git", "import", gs, "--json"]);
    assert_eq!(nothing["commits_imported"], 0, "{nothing}");

    // A native seal on a timeline of its own.
    r.ok(&["update"]);
    r.ok(&["timeline", "create", "native"]);
    r.ok(&["timeline", "switch", "native"]);
    r.write("native.txt", "made in ivaldi\n");
    r.seal("native work");

    let out = tempfile::tempdir().expect("temp dir");
    let d1 = out.path().join("one.git");
    let d2 = out.path().join("two.git");
    let e1 = json(&r, &["git", "export", d1.to_str().unwrap(), "--json"]);
    assert_eq!(
        e1["commits_written"].as_u64(),
        Some(commits(&g).len() as u64 + 1)
    );
    git(&d1, &["fsck", "--strict", "--no-dangling"]);
    // The git side's refs are all there, unchanged.
    let git_refs = refs(&g);
    let d1_refs = refs(&d1);
    for line in git_refs.lines() {
        assert!(d1_refs.contains(line), "{line} missing from\n{d1_refs}");
    }
    // Exporting again writes nothing; a second repository gets the same
    // commit for the native seal.
    let e1b = json(&r, &["git", "export", d1.to_str().unwrap(), "--json"]);
    assert_eq!(e1b["commits_written"], 0, "{e1b}");
    json(&r, &["git", "export", d2.to_str().unwrap(), "--json"]);
    let native = git(&d1, &["rev-parse", "refs/heads/native"]);
    assert_eq!(git(&d2, &["rev-parse", "refs/heads/native"]), native);
    // The working tree showed the submodule as an empty directory; the
    // native seal kept it as a submodule.
    let entry = git(&d1, &["ls-tree", native.trim(), "sub/module"]);
    assert!(
        entry.starts_with("160000 commit 1234567890123456789012345678901234567890"),
        "{entry}"
    );
    let shown = git(&d1, &["cat-file", "commit", native.trim()]);
    assert!(shown.contains("\n\nnative work"), "{shown}");
    // Importing the export adds nothing: the native seal's commit is mapped.
    let back = json(&r, &["git", "import", d1.to_str().unwrap(), "--json"]);
    assert_eq!(back["commits_imported"], 0, "{back}");

    // A commit made in git on top of the exported native commit comes back
    // as a seal on the native timeline.
    sh(
        &d1,
        "git worktree add -q ../wt native && cd ../wt && echo g > g.txt && git add g.txt && git commit -q -m 'from git'",
    );
    let more = json(&r, &["git", "import", d1.to_str().unwrap(), "--json"]);
    assert_eq!(more["commits_imported"], 1, "{more}");
    let e1c = json(&r, &["git", "export", d1.to_str().unwrap(), "--json"]);
    assert_eq!(e1c["commits_written"], 0, "{e1c}");
}

#[test]
fn a_name_ivaldi_cannot_hold_is_refused_naming_the_commit_and_the_path() {
    let src = tempfile::tempdir().expect("temp dir");
    let g = src.path();
    sh(
        g,
        "git init -q -b main . && echo ok > ok.txt && git add ok.txt && git commit -q -m ok && \
         mkdir d && printf x > \"d/$(printf 'bad\\377name')\" && git add d && git commit -q -m bad",
    );
    let bad = git(g, &["rev-parse", "HEAD"]);
    let r = Repo::forged();
    let before = snapshot_dir(&r.dot());
    let err = r.fails(&["git", "import", g.to_str().unwrap()]);
    assert!(err.contains(bad.trim()), "{err}");
    assert!(err.contains("d/bad"), "{err}");
    assert!(err.contains("not UTF-8"), "{err}");
    assert_eq!(snapshot_dir(&r.dot()), before, "nothing was written");
}

#[test]
fn a_directory_that_is_not_a_git_repository_is_a_clear_error_and_nothing_is_written() {
    let r = Repo::forged();
    let before = snapshot_dir(&r.dot());
    let not_git = tempfile::tempdir().expect("temp dir");
    std::fs::write(not_git.path().join("file"), "x").expect("write");
    let err = r.fails(&["git", "import", not_git.path().to_str().unwrap()]);
    assert!(err.contains("is not a git repository"), "{err}");
    let missing = not_git.path().join("missing");
    let err = r.fails(&["git", "import", missing.to_str().unwrap()]);
    assert!(err.contains("is not a git repository"), "{err}");
    // Export refuses a directory that holds something else, and leaves it be.
    let err = r.fails(&["git", "export", not_git.path().to_str().unwrap()]);
    assert!(err.contains("is not a git repository"), "{err}");
    assert_eq!(
        std::fs::read_dir(not_git.path()).expect("read").count(),
        1,
        "the directory was left alone"
    );
    assert_eq!(snapshot_dir(&r.dot()), before, "nothing was written");
}

#[test]
fn diverged_work_moves_no_ref_on_either_side() {
    let src = source();
    let g = src.path().join("repo");
    let gs = g.to_str().unwrap();
    let r = Repo::forged();
    json(&r, &["git", "import", gs, "--json"]);
    r.ok(&["update"]);
    // Both sides add a commit on main.
    r.write("ivaldi.txt", "ivaldi side\n");
    r.seal("ivaldi side");
    let ivaldi_main = r.json(&["timeline", "list", "--json"]).to_string();
    sh(&g, "git commit -q --allow-empty -m 'git side'");
    let git_main = git(&g, &["rev-parse", "main"]);

    let report = json(&r, &["git", "import", gs, "--json"]);
    assert_eq!(report["commits_imported"], 1, "{report}");
    let main = report["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .find(|b| b["branch"] == "main")
        .expect("main")
        .clone();
    assert_eq!(main["outcome"], "diverged", "{report}");
    assert_eq!(
        r.json(&["timeline", "list", "--json"]).to_string(),
        ivaldi_main,
        "the timeline did not move"
    );

    // Export refuses to move git's main (its commit is not in the timeline)
    // and says so with a failing exit code; the other refs are written.
    let err = r.fails_output(&["git", "export", gs]);
    let stdout = String::from_utf8_lossy(&err.stdout);
    assert!(
        stdout.contains("refused") && stdout.contains("refs/heads/main"),
        "{stdout}"
    );
    assert_eq!(git(&g, &["rev-parse", "main"]), git_main);
    git(&g, &["fsck", "--strict", "--no-dangling"]);
}

#[test]
fn a_reserved_name_is_refused_naming_the_commit_and_the_path() {
    let src = tempfile::tempdir().expect("temp dir");
    let g = src.path();
    sh(
        g,
        "git init -q -b main . && mkdir -p sub/.ivaldi && echo x > sub/.ivaldi/config && \
         git add sub && git commit -q -m reserved",
    );
    let bad = git(g, &["rev-parse", "HEAD"]);
    let r = Repo::forged();
    let before = snapshot_dir(&r.dot());
    let err = r.fails(&["git", "import", g.to_str().unwrap()]);
    assert!(err.contains(bad.trim()), "{err}");
    assert!(err.contains("sub/.ivaldi"), "{err}");
    assert!(err.contains("reserved"), "{err}");
    assert_eq!(snapshot_dir(&r.dot()), before, "nothing was written");
}
