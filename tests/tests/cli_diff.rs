//! `ivaldi diff`: the working tree against its base or a revision, two
//! revisions, paths, `--stat` and `--json`, binary files and mode changes.

use ivaldi_tests::Repo;

fn base_repo() -> Repo {
    let r = Repo::forged();
    let lines: String = (1..=9).map(|i| format!("{i}\n")).collect();
    r.write("a.txt", &lines);
    r.write("gone.txt", "bye\n");
    r.write("run.sh", "echo hi\n");
    r.write("bin.dat", b"\0\x01\x02");
    r.seal("base");
    r
}

#[test]
fn working_tree_against_its_base() {
    let r = base_repo();
    assert_eq!(r.ok(&["diff"]), "", "a clean tree has no diff");
    r.write("a.txt", "1\n2\n3\n4\nfive\n6\n7\n8\n9\n");
    r.remove("gone.txt");
    r.write("new.txt", "hello\nworld");
    r.chmod_x("run.sh");
    r.write("bin.dat", b"\0\x01\x03");
    let out = r.ok(&["diff"]);
    let expected = "\
diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -2,7 +2,7 @@
 2
 3
 4
-5
+five
 6
 7
 8
diff --git a/bin.dat b/bin.dat
Binary files a/bin.dat and b/bin.dat differ
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/new.txt b/new.txt
new file mode 100644
--- /dev/null
+++ b/new.txt
@@ -0,0 +1,2 @@
+hello
+world
\\ No newline at end of file
diff --git a/run.sh b/run.sh
old mode 100644
new mode 100755
";
    assert_eq!(out, expected);
    // Paths after --.
    let out = r.ok(&["diff", "--", "gone.txt", "run.sh"]);
    assert!(out.contains("gone.txt") && out.contains("run.sh"), "{out}");
    assert!(!out.contains("a.txt") && !out.contains("new.txt"), "{out}");
    // --stat.
    let stat = r.ok(&["diff", "--stat"]);
    assert!(stat.contains(" a.txt    |    2 +-"), "{stat}");
    assert!(stat.contains("bin.dat  | Bin 3 -> 3 bytes"), "{stat}");
    assert!(
        stat.ends_with(" 5 files changed, 3 insertions(+), 2 deletions(-)\n"),
        "{stat}"
    );
    // --json.
    let v = r.json(&["diff", "--json"]);
    let files = v.as_array().expect("an array");
    assert_eq!(files.len(), 5);
    assert_eq!(files[0]["path"], "a.txt");
    assert_eq!(files[0]["status"], "modified");
    assert_eq!(files[0]["hunks"][0]["header"], "@@ -2,7 +2,7 @@");
    assert_eq!(files[0]["hunks"][0]["lines"][3], "-5");
    assert_eq!(files[1]["binary"], true);
    assert_eq!(files[2]["status"], "deleted");
    assert_eq!(files[4]["old_mode"], "100644");
    assert_eq!(files[4]["new_mode"], "100755");
}

#[test]
fn between_revisions_and_against_one() {
    let r = base_repo();
    r.write("a.txt", "one\n");
    r.seal("second");
    let two = r.ok(&["diff", "HEAD~1", "HEAD"]);
    assert!(two.starts_with("diff --git a/a.txt b/a.txt\n"), "{two}");
    assert!(two.contains("@@ -1,9 +1 @@\n-1\n"), "{two}");
    assert!(two.ends_with("-9\n+one\n"), "{two}");
    // The working tree (clean) against HEAD~1 is the same diff.
    assert_eq!(r.ok(&["diff", "HEAD~1"]), two);
    // Reversed.
    let back = r.ok(&["diff", "HEAD", "HEAD~1"]);
    assert!(back.contains("@@ -1 +1,9 @@\n-one\n+1\n"), "{back}");
    // A symlink replacing a file is a removal and an addition.
    r.remove("run.sh");
    r.symlink("a.txt", "run.sh");
    let out = r.ok(&["diff", "--", "run.sh"]);
    assert!(out.contains("deleted file mode 100644"), "{out}");
    assert!(out.contains("new file mode 120000"), "{out}");
    assert!(
        out.contains("+a.txt\n\\ No newline at end of file"),
        "{out}"
    );
}

#[test]
fn bad_revisions_and_too_many_are_refused() {
    let r = base_repo();
    let err = r.fails(&["diff", "main~5"]);
    assert!(err.contains("\"main~5\""), "{err}");
    let err = r.fails(&["diff", "nope"]);
    assert!(err.contains("nope"), "{err}");
    let err = r.fails(&["diff", "HEAD", "HEAD", "HEAD"]);
    assert!(!err.is_empty());
}

/// git as an oracle for the hunks, where it is installed.
#[test]
fn hunks_match_git_diff_no_index() {
    let git = std::process::Command::new("git").arg("--version").output();
    if git.map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("SKIP: git is not installed");
        return;
    }
    let r = Repo::forged();
    let old: String = (0..60).map(|i| format!("line {}\n", i % 7)).collect();
    let new: String = (0..60)
        .filter(|i| i % 11 != 3)
        .map(|i| {
            if i % 13 == 5 {
                format!("changed {i}\n")
            } else {
                format!("line {}\n", i % 7)
            }
        })
        .collect();
    r.write("f.txt", &old);
    r.seal("old");
    r.write("f.txt", &new);
    let ours = r.ok(&["diff"]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a"), &old).expect("write");
    std::fs::write(dir.path().join("b"), &new).expect("write");
    let out = std::process::Command::new("git")
        .args(["diff", "--no-index", "--no-color", "a", "b"])
        .current_dir(dir.path())
        .output()
        .expect("git runs");
    let theirs = String::from_utf8_lossy(&out.stdout);
    let hunks = |s: &str| -> Vec<String> {
        s.lines()
            .skip_while(|l| !l.starts_with("@@"))
            .filter(|l| !l.starts_with("@@"))
            .map(str::to_owned)
            .collect()
    };
    // The same lines added and removed (Myers may break ties differently
    // from git's, so compare the changed lines as sets of counts).
    let count = |s: &str, sign: char| hunks(s).iter().filter(|l| l.starts_with(sign)).count();
    assert_eq!(count(&ours, '+'), count(&theirs, '+'), "{ours}\n{theirs}");
    assert_eq!(count(&ours, '-'), count(&theirs, '-'), "{ours}\n{theirs}");
}
