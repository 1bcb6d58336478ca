//! `ivaldi git import|export`: the git bridge (`ivaldi-git-bridge`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use ivaldi_git_bridge::{ImportOptions, Progress};
use ivaldi_shell_smol::repo::Repository;

use crate::{Failed, fail, print_json};

#[derive(Subcommand, Debug)]
pub(crate) enum GitCmd {
    /// Import a git repository (bare or not): every branch becomes a timeline,
    /// every commit a seal, every tag a record `export` restores.
    ///
    /// Run again to import only new commits.
    Import {
        git_dir: PathBuf,
        /// Put this before every timeline name made from a branch (e.g. `git/`).
        #[arg(long, value_name = "P", default_value = "")]
        timeline_prefix: String,
        #[arg(long)]
        json: bool,
    },
    /// Export every timeline as a branch and every seal as a commit into a git
    /// repository (created bare if absent).
    ///
    /// Seals from git get their original commit ids back.
    Export {
        git_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn absolute(here: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        here.join(p)
    }
}

pub(crate) fn run(repo: &mut Repository, here: &Path, cmd: GitCmd) -> Result<(), Failed> {
    match cmd {
        GitCmd::Import {
            git_dir,
            timeline_prefix,
            json,
        } => {
            let started = Instant::now();
            let tty = std::io::stderr().is_terminal() && !json;
            let mut last = Instant::now();
            let mut show = |p: Progress| {
                if tty && (last.elapsed().as_millis() >= 100 || p.commits_done == p.commits_total) {
                    last = Instant::now();
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    eprint!(
                        "\rimporting: {}/{} commits, {} objects, {:.0} commits/s   ",
                        p.commits_done,
                        p.commits_total,
                        p.objects,
                        p.commits_done as f64 / secs
                    );
                    if p.commits_done == p.commits_total {
                        eprintln!();
                    }
                }
            };
            let opts = ImportOptions { timeline_prefix };
            let report =
                ivaldi_git_bridge::import(repo, &absolute(here, &git_dir), &opts, &mut show)
                    .map_err(fail)?;
            if json {
                print_json(&report);
                return Ok(());
            }
            println!(
                "Imported {} new commits ({} new objects) from {}",
                report.commits_imported,
                report.objects_stored,
                git_dir.display()
            );
            for b in &report.branches {
                let note = match b.outcome {
                    "diverged" => " (not moved: the timeline has seals the branch lacks)",
                    _ => "",
                };
                println!(
                    "  {} {} -> timeline {} at {}{note}",
                    b.outcome, b.branch, b.timeline, b.seal
                );
            }
            for (branch, timeline) in &report.renamed {
                println!(
                    "  branch {branch:?} is timeline {timeline} (names mapped; export restores the branch name)"
                );
            }
            if !report.tags.is_empty() {
                println!("  tags recorded: {}", report.tags.join(", "));
            }
            for s in &report.skipped {
                println!("  skipped {s}");
            }
            Ok(())
        }
        GitCmd::Export { git_dir, json } => {
            let report =
                ivaldi_git_bridge::export(repo, &absolute(here, &git_dir)).map_err(fail)?;
            if json {
                print_json(&report);
                return Ok(());
            }
            println!(
                "{} {}: {} commits written",
                if report.created {
                    "Created"
                } else {
                    "Exported to"
                },
                git_dir.display(),
                report.commits_written
            );
            let mut refused = false;
            for r in &report.refs {
                refused |= r.outcome.starts_with("refused");
                println!("  {} {} {}", r.outcome, r.name, r.commit);
            }
            if refused {
                return Err(fail("some refs were not moved (see above)"));
            }
            Ok(())
        }
    }
}
