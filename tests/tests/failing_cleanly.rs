//! Failing cleanly (issue 12, section 6), through the CLI: a clone that fails
//! or is killed leaves no half-made repository; one damaged pack does not stop
//! the repository, `verify` lists every problem and `repair` quarantines the
//! damage; `timeline delete` keeps the head it removes under `kept/`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use ivaldi_tests::p2p::{Daemon, configure_loopback, free_tcp_port, p2p_empty, p2p_forged};
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
            &["p2p", "clone", &da.addr(), "copy"],
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
    b.ok(&["p2p", "clone", &da.addr(), "copy"]);
    assert_eq!(names(b.path()), vec!["copy".to_owned()]);
    assert_eq!(std::fs::read(dir.join("a.txt")).expect("a.txt"), b"second\n");
    assert_eq!(
        std::fs::read(dir.join("big.bin")).expect("big.bin"),
        a.read("big.bin")
    );
    let verify = b.run_at(&dir, &["verify"]);
    assert!(verify.status.success(), "{}", describe_output(&verify));

    // A target that is already a repository (or not empty) is refused untouched.
    let err = b.fails(&["p2p", "clone", &da.addr(), "copy"]);
    assert!(err.contains("already"), "{err}");
}
