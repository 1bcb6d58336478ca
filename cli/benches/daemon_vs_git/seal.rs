//! Sealing against committing, the foundation benchmark's cases 1–2 in compact
//! form: seal a fresh tree of `cfg.files` files against `git add -A && git
//! commit`, then a change of 50 of them. Fresh repositories every repetition,
//! ivaldi and git alternating.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::data::{Rng, apply_edits, generate_tree, plan_edits};
use crate::procs::{git, git_quiet_config, ivaldi, run};
use crate::stats::{Samples, ms};
use crate::{Config, IVALDI};

/// Files changed in the second case.
pub const CHANGED: usize = 50;
/// Time between writing a tree and its seal/commit: ivaldi's stat cache
/// distrusts entries modified < 100 ms before the scan that recorded them; git
/// (without USE_NSEC) distrusts entries whose mtime is in the same second as
/// the index it wrote. Waiting past both keeps the change measurement fair.
const SETTLE: Duration = Duration::from_millis(1100);

fn sync_all() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn timed_all(cmds: &mut [&mut Command]) -> f64 {
    let t = Instant::now();
    for c in cmds {
        run(c);
    }
    ms(t.elapsed())
}

/// Pushes "4 ivaldi new ms", "4 git new ms", "4 ivaldi change ms", "4 git change ms".
pub fn measure(cfg: &Config, work: &Path, s: &mut Samples) {
    let dir = work.join("seal");
    let template = dir.join("template");
    let (paths, bytes) = generate_tree(&[&template], cfg.files);
    s.push("4 tree bytes", bytes as f64);
    let mut rng = Rng(0xC4A1_6E50);
    let changes = plan_edits(&mut rng, &template, &paths, CHANGED);
    let mut keep = Vec::new();
    for rep in 0..cfg.reps_small {
        let r = dir.join(format!("rep{rep}"));
        let (idir, gdir) = (r.join("ivaldi"), r.join("git"));
        run(Command::new(IVALDI).arg("forge").arg(&idir));
        fs::create_dir_all(&gdir).expect("create git dir");
        run(git(&gdir).args(["init", "-q", "-b", "main"]));
        git_quiet_config(&gdir);
        for d in [&idir, &gdir] {
            run(Command::new("cp").arg("-a").arg(template.join(".")).arg(d));
        }
        sync_all();
        std::thread::sleep(SETTLE);
        s.push(
            "4 ivaldi new ms",
            timed_all(&mut [ivaldi(&idir).args(["seal", "-m", "import"])]),
        );
        s.push(
            "4 git new ms",
            timed_all(&mut [
                git(&gdir).args(["add", "-A"]),
                git(&gdir).args(["commit", "-q", "-m", "import"]),
            ]),
        );
        apply_edits(&idir, &changes);
        apply_edits(&gdir, &changes);
        sync_all();
        s.push(
            "4 ivaldi change ms",
            timed_all(&mut [ivaldi(&idir).args(["seal", "-m", "change"])]),
        );
        s.push(
            "4 git change ms",
            timed_all(&mut [
                git(&gdir).args(["add", "-A"]),
                git(&gdir).args(["commit", "-q", "-m", "change"]),
            ]),
        );
        let changed = run(git(&gdir).args(["diff", "--name-only", "HEAD~1", "HEAD"]))
            .lines()
            .count();
        assert_eq!(changed, changes.len(), "git committed a different change");
        eprintln!(
            "  rep {rep}: seal     new {:>9} vs git {:>9}; change {:>9} vs git {:>9}",
            crate::stats::fmt_ms(s.0["4 ivaldi new ms"][rep]),
            crate::stats::fmt_ms(s.0["4 git new ms"][rep]),
            crate::stats::fmt_ms(s.0["4 ivaldi change ms"][rep]),
            crate::stats::fmt_ms(s.0["4 git change ms"][rep]),
        );
        // Deleted after the loop: on ext4 without a journal, creating files soon
        // after thousands were freed is slower, which would tax the next rep.
        keep.push(r);
    }
    for r in keep {
        let _ = fs::remove_dir_all(r);
    }
    let _ = fs::remove_dir_all(&dir);
}
