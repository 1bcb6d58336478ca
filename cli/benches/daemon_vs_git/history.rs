//! The cached history.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::data::{Rng, apply_edits, generate_tree, plan_edits};
use crate::procs::{git, git_at, git_head, git_quiet_config, ivaldi, ivaldi_at, ivaldi_head, run};
use crate::{Config, GENERATOR, IVALDI, T0};

pub struct History {
    pub ivaldi: PathBuf,
    pub git: PathBuf,
    pub paths: Vec<String>,
    pub ivaldi_head: String,
    pub git_head: String,
    pub tree_bytes: u64,
}

/// Removes the caches other binaries wrote for the same parameters (`prefix`)
/// more than a day ago; younger ones may belong to a run in progress.
pub fn prune_stale(cache: &Path, prefix: &str, keep: &Path) {
    let Ok(rd) = fs::read_dir(cache) else { return };
    let day = std::time::Duration::from_secs(24 * 3600);
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old = fs::metadata(e.path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if name.starts_with(prefix) && e.path() != keep && old {
            eprintln!("- removing the stale cache {}", e.path().display());
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

pub fn history(cfg: &Config, cache: &Path, key: &str) -> History {
    let prefix = format!("{}f-{}s-{}t-{GENERATOR}-", cfg.files, cfg.seals, cfg.touch);
    let dir = cache.join(format!("{prefix}{key}"));
    let h = History {
        ivaldi: dir.join("ivaldi"),
        git: dir.join("git"),
        paths: Vec::new(),
        ivaldi_head: String::new(),
        git_head: String::new(),
        tree_bytes: 0,
    };
    if dir.join("complete").exists() {
        let paths: Vec<String> = fs::read_to_string(dir.join("paths.txt"))
            .expect("read paths.txt")
            .lines()
            .map(str::to_owned)
            .collect();
        let meta = fs::read_to_string(dir.join("complete")).expect("read marker");
        let mut it = meta.split_whitespace();
        let (ih, gh, bytes) = (it.next(), it.next(), it.next());
        if let (Some(ih), Some(gh), Some(bytes)) = (ih, gh, bytes)
            && ivaldi_head(&h.ivaldi).as_deref() == Some(ih)
            && git_head(&h.git, "HEAD") == gh
        {
            eprintln!("- using the cached history in {}", dir.display());
            return History {
                paths,
                ivaldi_head: ih.to_owned(),
                git_head: gh.to_owned(),
                tree_bytes: bytes.parse().unwrap_or(0),
                ..h
            };
        }
        eprintln!("- the cached history is damaged; regenerating");
    }
    prune_stale(cache, &prefix, &dir);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create cache dir");
    let t = Instant::now();
    run(Command::new(IVALDI).arg("forge").arg(&h.ivaldi));
    fs::create_dir_all(&h.git).expect("create git dir");
    run(git(&h.git).args(["init", "-q", "-b", "main"]));
    git_quiet_config(&h.git);
    let (paths, tree_bytes) = generate_tree(&[&h.ivaldi, &h.git], cfg.files);
    commit_both(&h.ivaldi, &h.git, "initial import", T0);
    let mut rng = Rng(0x5EA1_5EED);
    for i in 1..=cfg.seals {
        let edits = plan_edits(&mut rng, &h.ivaldi, &paths, cfg.touch);
        apply_edits(&h.ivaldi, &edits);
        apply_edits(&h.git, &edits);
        commit_both(
            &h.ivaldi,
            &h.git,
            &format!("change {i}"),
            T0 + 60 * i as i64,
        );
        if i % 50 == 0 {
            eprintln!(
                "  generated {i}/{} seals ({:.0} s)",
                cfg.seals,
                t.elapsed().as_secs_f64()
            );
        }
    }
    // A server's repository is packed; so is this one.
    run(git(&h.git).args(["repack", "-a", "-d", "-q"]));
    let n_seals = run(ivaldi(&h.ivaldi).args(["log", "--json"]))
        .parse::<Value>()
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    let n_commits: usize = run(git(&h.git).args(["rev-list", "--count", "HEAD"]))
        .trim()
        .parse()
        .unwrap_or(0);
    assert_eq!(n_seals, cfg.seals + 1, "ivaldi history length");
    assert_eq!(n_commits, cfg.seals + 1, "git history length");
    let ih = ivaldi_head(&h.ivaldi).expect("ivaldi head");
    let gh = git_head(&h.git, "HEAD");
    fs::write(dir.join("paths.txt"), paths.join("\n")).expect("write paths.txt");
    fs::write(dir.join("complete"), format!("{ih} {gh} {tree_bytes}\n")).expect("write marker");
    eprintln!(
        "- generated the history in {:.0} s into {}",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    History {
        paths,
        ivaldi_head: ih,
        git_head: gh,
        tree_bytes,
        ..h
    }
}

/// Seals and commits the same change, both at time `t`, in parallel.
pub fn commit_both(idir: &Path, gdir: &Path, msg: &str, t: i64) {
    let seal = ivaldi_at(idir, t)
        .args(["seal", "-m", msg])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ivaldi seal");
    run(git_at(gdir, t).args(["add", "-A"]));
    run(git_at(gdir, t).args(["commit", "-q", "-m", msg]));
    let out = seal.wait_with_output().expect("wait for ivaldi seal");
    assert!(
        out.status.success(),
        "ivaldi seal failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
