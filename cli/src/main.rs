//! `ivaldi`: the command line.
//!
//! Thin by design: parsing, formatting and exit codes live here; every operation
//! lives in `ivaldi_shell_smol::repo` where tests and benches call it directly.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ivaldi_core::{ObjectId, Seal, TimelineName, Timestamp};
use ivaldi_shell_smol::repo::ops::{self, FuseOutcome, SealOutcome, Signature};
use ivaldi_shell_smol::repo::worktree::{self, Changes};
use ivaldi_shell_smol::repo::{RepoError, Repository};
use serde_json::json;

mod author;
mod clone_log;
mod diff;
mod git;
#[cfg(test)]
mod help_tests;
mod p2p;
mod pairing;

#[derive(Parser, Debug)]
#[command(
    name = "ivaldi",
    version,
    about = "Ivaldi version control with peer-to-peer sync"
)]
struct Cli {
    /// Run as if started in this directory.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    chdir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a repository (in DIR, or here).
    Forge { dir: Option<PathBuf> },
    /// Show what changed since the working tree's base seal.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Snapshot the working tree onto the current timeline.
    Seal {
        /// The seal's message.
        #[arg(short, long)]
        message: String,
        /// Override the author (default: $IVALDI_AUTHOR, the repository's config, the global config, git's user.name).
        #[arg(long)]
        author: Option<String>,
    },
    /// List seals, newest first.
    Log {
        /// A revision to start from (default: the current timeline): a timeline,
        /// a seal id, HEAD or @, with any ~N and ^N steps.
        #[arg(value_name = "REV")]
        start: Option<String>,
        #[arg(long)]
        json: bool,
        /// Show at most N seals.
        #[arg(short = 'n', long)]
        limit: Option<usize>,
    },
    /// Manage timelines.
    Timeline {
        #[command(subcommand)]
        cmd: TimelineCmd,
    },
    /// Show one seal and what it changed.
    Show {
        /// A revision: a seal id, a timeline, HEAD or @, with any ~N and ^N steps.
        #[arg(value_name = "REV")]
        seal: String,
        #[arg(long)]
        json: bool,
    },
    /// Show changes as a unified diff: the working tree against its base, against REV, or between two revisions.
    Diff {
        /// No revision: the working tree against its base; one: the working
        /// tree against it; two: the first against the second.
        #[arg(value_name = "REV", num_args = 0..=2)]
        revs: Vec<String>,
        /// Only these paths (files or directories), after `--`.
        #[arg(last = true, value_name = "PATHS")]
        paths: Vec<String>,
        /// A summary: lines added and removed per file.
        #[arg(long, conflicts_with = "json")]
        stat: bool,
        #[arg(long)]
        json: bool,
    },
    /// Merge another timeline (or any seal, such as a kept or a peer's head) into the current one.
    Fuse {
        /// A revision: a timeline, a seal id, or either with ~N and ^N steps.
        #[arg(value_name = "REV")]
        timeline: String,
    },
    /// Check every object, pack and timeline in the repository.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Move damaged packs to .ivaldi/quarantine (keeping their intact objects), then fetch the missing objects again from peers through the running daemon.
    Repair {
        #[arg(long)]
        json: bool,
    },
    /// Remove objects no timeline, kept head, tracking name or the working tree's base can reach.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show or set who you are: user.name and user.email, for this repository or (--global) every one.
    Config {
        /// Write the user's config (~/.config/ivaldi/config.json) instead of the repository's.
        #[arg(long)]
        global: bool,
        /// user.name or user.email.
        key: String,
        /// The new value; without it, the current one is printed.
        value: Option<String>,
    },
    /// Bring the working tree forward to its timeline's head (after a sync).
    Update,
    /// Peer-to-peer networking: the daemon, pairing, peers and sync.
    P2p {
        #[command(subcommand)]
        cmd: Box<p2p::P2pCmd>,
    },
    /// Move history between git and Ivaldi: import a git repository, export to one.
    Git {
        #[command(subcommand)]
        cmd: git::GitCmd,
    },
}

#[derive(Subcommand, Debug)]
enum TimelineCmd {
    /// List timelines; the current one is marked with '*'.
    List {
        #[arg(long)]
        json: bool,
        /// Also list peers' tracking heads and kept (replaced) heads.
        #[arg(long)]
        all: bool,
    },
    /// Create a timeline at a seal (default: the working tree's base).
    Create {
        name: String,
        /// A revision to start at (a seal id, a timeline, HEAD or @, with any
        /// ~N and ^N steps).
        #[arg(long, value_name = "REV")]
        from: Option<String>,
    },
    /// Check out another timeline.
    Switch { name: String },
    /// Delete a timeline here (not on peers); its head is kept under kept/ and
    /// `ivaldi timeline create NAME --from <kept head>` restores it.
    Delete { name: String },
}

/// A failure already explained to the user; carries the exit code.
pub(crate) struct Failed(pub(crate) u8);

impl From<RepoError> for Failed {
    fn from(e: RepoError) -> Self {
        eprintln!("error: {e}");
        Failed(1)
    }
}

pub(crate) fn fail(msg: impl std::fmt::Display) -> Failed {
    eprintln!("error: {msg}");
    Failed(1)
}

fn main() -> ExitCode {
    // Like every Unix filter, die quietly when the reader of our output goes away
    // (`ivaldi log | head`) instead of panicking on a failed print.
    // SAFETY: restoring a signal's default disposition at start, before any
    // thread exists, has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // The daemon logs to its own file; everything else logs warnings to stderr.
    let daemon = matches!(
        &cli.cmd,
        Cmd::P2p {
            cmd
        } if matches!(**cmd, p2p::P2pCmd::Start { foreground: true })
    );
    let clone = matches!(
        &cli.cmd,
        Cmd::P2p { cmd } if matches!(**cmd, p2p::P2pCmd::Clone { .. })
    );
    if clone {
        clone_log::install();
    } else if !daemon {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(code)) => ExitCode::from(code),
    }
}

fn cwd(cli_dir: &Option<PathBuf>) -> Result<PathBuf, Failed> {
    match cli_dir {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir().map_err(|e| fail(format!("current directory: {e}"))),
    }
}

fn timeline_arg(s: &str) -> Result<TimelineName, Failed> {
    TimelineName::new(s).map_err(|e| fail(format!("invalid timeline name: {e}")))
}

fn run(cli: Cli) -> Result<(), Failed> {
    let here = cwd(&cli.chdir)?;
    if let Cmd::Forge { dir } = &cli.cmd {
        let target = match dir {
            Some(d) if d.is_absolute() => d.clone(),
            Some(d) => here.join(d),
            None => here,
        };
        let repo = Repository::forge(&target)?;
        println!(
            "Forged an empty Ivaldi repository in {} (timeline main)",
            repo.root().display()
        );
        return Ok(());
    }
    if let Cmd::Config { global, key, value } = &cli.cmd {
        let dot = if *global {
            None
        } else {
            Some(Repository::discover(&here)?.dot_dir().to_owned())
        };
        return author::config(dot.as_deref(), key, value.as_deref());
    }
    if let Cmd::P2p { cmd } = &cli.cmd
        && let p2p::P2pCmd::Clone { source, dir } = &**cmd
    {
        return p2p::clone_cmd(&here, source, dir.as_deref());
    }
    let cmd = match cli.cmd {
        // The daemon owns the repository: find it, do not open it.
        Cmd::P2p { cmd } => return p2p::run(&Repository::find_root(&here)?, *cmd),
        cmd => cmd,
    };
    let mut repo = Repository::discover(&here)?;
    match cmd {
        Cmd::Forge { .. } | Cmd::P2p { .. } | Cmd::Config { .. } => Ok(()),
        Cmd::Status { json } => status(&mut repo, json),
        Cmd::Seal { message, author } => {
            seal(&mut repo, &message, author)?;
            p2p::notify_local_change(repo.root());
            Ok(())
        }
        Cmd::Log { start, json, limit } => log(&repo, start.as_deref(), json, limit),
        Cmd::Timeline { cmd } => {
            timeline(&mut repo, cmd)?;
            p2p::notify_local_change(repo.root());
            Ok(())
        }
        Cmd::Show { seal, json } => show(&repo, &seal, json),
        Cmd::Diff {
            revs,
            paths,
            stat,
            json,
        } => diff::run(&repo, &revs, &paths, stat, json),
        Cmd::Fuse { timeline } => {
            let r = fuse(&mut repo, &timeline);
            p2p::notify_local_change(repo.root());
            r
        }
        Cmd::Verify { json } => verify(&repo, json),
        Cmd::Repair { json } => {
            let r = repair(&mut repo, json);
            // A running daemon re-reads the pack list, so it stops reading the
            // quarantined packs.
            p2p::notify_local_change(repo.root());
            r
        }
        Cmd::Gc { dry_run, json } => {
            gc(&mut repo, dry_run, json)?;
            // A running daemon re-reads the pack list, so it stops counting
            // removed objects as present.
            if !dry_run {
                p2p::notify_local_change(repo.root());
            }
            Ok(())
        }
        Cmd::Git { cmd } => {
            let r = git::run(&mut repo, &here, cmd);
            p2p::notify_local_change(repo.root());
            r
        }
        Cmd::Update => {
            match ops::update(&mut repo)? {
                ops::UpdateOutcome::UpToDate => println!("Already up to date"),
                ops::UpdateOutcome::Updated { from, to } => println!(
                    "Updated the working tree from {} to {}",
                    from.map(|f| f.short())
                        .unwrap_or_else(|| "(nothing)".into()),
                    to.short()
                ),
            }
            Ok(())
        }
    }
}

pub(crate) fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn status(repo: &mut Repository, json: bool) -> Result<(), Failed> {
    let st = ops::status(repo)?;
    if json {
        print_json(&serde_json::to_value(&st).unwrap_or_default());
        return Ok(());
    }
    println!("On timeline {}", st.timeline);
    match &st.base {
        Some(b) => println!("Based on seal {}", b.short()),
        None => println!("No seals yet"),
    }
    if let Some(f) = &st.fuse_pending {
        println!(
            "Fusing {}: resolve the conflicts, then `ivaldi seal` records both parents",
            f.short()
        );
    }
    if let Some(a) = &st.arrived {
        let from = if a.from_peers.is_empty() {
            String::new()
        } else {
            let ids: Vec<&str> = a
                .from_peers
                .iter()
                .map(|p| p.get(..12).unwrap_or(p))
                .collect();
            format!(" from peer {}", ids.join(", "))
        };
        if a.fast_forward {
            println!(
                "Timeline {} is {} seal(s) ahead of the working tree{from}; run `ivaldi update` to bring it forward",
                st.timeline, a.seals
            );
        } else {
            println!(
                "Timeline {} moved to {} (not a descendant of the working tree's base){from}",
                st.timeline,
                st.head.map(|h| h.short()).unwrap_or_default()
            );
        }
    }
    if st.changes.is_empty() {
        println!("Nothing to seal, working tree matches its base");
    } else {
        print_changes(&st.changes);
    }
    Ok(())
}

fn print_changes(c: &Changes) {
    for p in &c.added {
        println!("  added:    {p}");
    }
    for p in &c.modified {
        println!("  modified: {p}");
    }
    for p in &c.deleted {
        println!("  deleted:  {p}");
    }
}

pub(crate) fn signature(repo: &Repository, author: Option<String>) -> Result<Signature, Failed> {
    let author = author::author(repo, author)?;
    let now = chrono::Local::now();
    let time = match std::env::var("IVALDI_TIME") {
        // Tests pin the clock for reproducible ids: "SECONDS" or "SECONDS+MINUTES".
        Ok(t) => parse_time_override(&t).ok_or_else(|| fail(format!("bad IVALDI_TIME {t:?}")))?,
        Err(_) => Timestamp {
            seconds: now.timestamp(),
            offset_minutes: (now.offset().local_minus_utc() / 60) as i16,
        },
    };
    Ok(Signature { author, time })
}

fn parse_time_override(t: &str) -> Option<Timestamp> {
    let (secs, off) = match t.split_once(['+', '~']) {
        Some((s, o)) => (s, o.parse().ok()?),
        None => (t, 0),
    };
    Some(Timestamp {
        seconds: secs.parse().ok()?,
        offset_minutes: off,
    })
}

fn seal(repo: &mut Repository, message: &str, author: Option<String>) -> Result<(), Failed> {
    if message.trim().is_empty() {
        return Err(fail("the seal message is empty; say what changed with -m"));
    }
    let sig = signature(repo, author)?;
    match ops::seal(repo, message, &sig)? {
        SealOutcome::Sealed {
            id,
            timeline,
            changes,
            diverged_from,
            ..
        } => {
            if let Some(h) = diverged_from {
                println!(
                    "Note: {timeline} had moved to {} (seals that arrived by sync); that head is kept, \
                     and your seal diverges from it: fuse it when ready",
                    h.short()
                );
            }
            println!(
                "[{timeline} {}] {} ({} added, {} modified, {} deleted)",
                id.short(),
                message.lines().next().unwrap_or(""),
                changes.added.len(),
                changes.modified.len(),
                changes.deleted.len()
            );
        }
        SealOutcome::NothingToSeal => println!("Nothing to seal, working tree matches its base"),
    }
    Ok(())
}

fn format_time(t: &Timestamp) -> String {
    let offset = chrono::FixedOffset::east_opt(i32::from(t.offset_minutes) * 60)
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset is valid"));
    match chrono::DateTime::from_timestamp(t.seconds, 0) {
        Some(dt) => dt
            .with_timezone(&offset)
            .format("%Y-%m-%d %H:%M:%S %z")
            .to_string(),
        None => format!("@{}", t.seconds),
    }
}

fn seal_json(id: &ObjectId, s: &Seal) -> serde_json::Value {
    json!({
        "id": id,
        "short": id.short(),
        "tree": s.tree,
        "parents": s.parents,
        "author": s.author,
        "time": s.time.seconds,
        "offset_minutes": s.time.offset_minutes,
        "date": format_time(&s.time),
        "message": s.message,
    })
}

fn print_seal_header(id: &ObjectId, s: &Seal) {
    println!("seal {}", id.short());
    if s.parents.len() > 1 {
        let ps: Vec<String> = s.parents.iter().map(|p| p.short()).collect();
        println!("Fuse:   {}", ps.join(" "));
    }
    println!("Author: {}", s.author);
    println!("Date:   {}", format_time(&s.time));
    println!();
    for line in s.message.lines() {
        println!("    {line}");
    }
}

fn log(
    repo: &Repository,
    start: Option<&str>,
    json: bool,
    limit: Option<usize>,
) -> Result<(), Failed> {
    let head = match start {
        Some(spec) => repo.resolve_seal(spec)?,
        None => {
            let t = repo.head_timeline()?;
            match repo.timeline(&t)? {
                Some(h) => h,
                None => {
                    if json {
                        print_json(&json!([]));
                    } else {
                        println!("No seals yet on timeline {t}");
                    }
                    return Ok(());
                }
            }
        }
    };
    let history = repo.history(&[head], limit)?;
    if json {
        print_json(&serde_json::Value::Array(
            history.iter().map(|(id, s)| seal_json(id, s)).collect(),
        ));
        return Ok(());
    }
    for (i, (id, s)) in history.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_seal_header(id, s);
    }
    Ok(())
}

fn timeline(repo: &mut Repository, cmd: TimelineCmd) -> Result<(), Failed> {
    match cmd {
        TimelineCmd::List {
            json,
            all: show_all,
        } => {
            let current = repo.head_timeline()?;
            let all = repo.timelines()?;
            let tracking = if show_all {
                repo.tracking()?
            } else {
                Default::default()
            };
            let kept = if show_all { repo.kept()? } else { Vec::new() };
            if json {
                let list: Vec<_> = all
                    .iter()
                    .map(|(n, id)| json!({"name": n, "head": id, "current": *n == current}))
                    .collect();
                let tracking: Vec<_> = tracking
                    .iter()
                    .map(|((p, t), id)| json!({"peer": p, "timeline": t, "head": id}))
                    .collect();
                let kept: Vec<_> = kept
                    .iter()
                    .map(|(t, id)| json!({"timeline": t, "head": id}))
                    .collect();
                print_json(
                    &json!({"current": current, "timelines": list, "tracking": tracking, "kept": kept}),
                );
                return Ok(());
            }
            for ((p, t), id) in &tracking {
                println!(
                    "  {}/{t} {} (peer's head)",
                    p.get(..12).unwrap_or(p),
                    id.short()
                );
            }
            for (t, id) in &kept {
                println!(
                    "  kept/{t} {} (replaced or deleted head; restore with `ivaldi timeline create {t} --from {}`)",
                    id.short(),
                    id.short()
                );
            }
            if !all.contains_key(&current) {
                println!("* {current} (no seals yet)");
            }
            for (n, id) in &all {
                let mark = if *n == current { '*' } else { ' ' };
                println!("{mark} {n} {}", id.short());
            }
            Ok(())
        }
        TimelineCmd::Create { name, from } => {
            if name == "HEAD" || name == "@" {
                return Err(fail(format!(
                    "{name} names the working tree's base seal in revisions; choose another timeline name"
                )));
            }
            let name = timeline_arg(&name)?;
            let at = ops::create_timeline(repo, &name, from.as_deref())?;
            println!("Created timeline {name} at {}", at.short());
            Ok(())
        }
        TimelineCmd::Switch { name } => {
            let name = timeline_arg(&name)?;
            let at = ops::switch(repo, &name)?;
            println!("Switched to timeline {name} ({})", at.short());
            Ok(())
        }
        TimelineCmd::Delete { name } => {
            let name = timeline_arg(&name)?;
            let head = ops::delete_timeline(repo, &name)?;
            println!(
                "Deleted timeline {name} (was {}); its head is kept: restore it with \
                 `ivaldi timeline create {name} --from {}`",
                head.short(),
                head.short()
            );
            Ok(())
        }
    }
}

fn show(repo: &Repository, spec: &str, json: bool) -> Result<(), Failed> {
    let id = repo.resolve_seal(spec)?;
    let s = repo.store.seal(&id)?;
    let new = worktree::flatten(&repo.store, &s.tree)?;
    let old = match s.parents.first() {
        Some(p) => worktree::flatten(&repo.store, &repo.store.seal(p)?.tree)?,
        None => worktree::Flat::new(),
    };
    let changes = worktree::diff(&old, &new);
    if json {
        let mut v = seal_json(&id, &s);
        v["changes"] = serde_json::to_value(&changes).unwrap_or_default();
        print_json(&v);
        return Ok(());
    }
    print_seal_header(&id, &s);
    println!();
    print_changes(&changes);
    Ok(())
}

fn fuse(repo: &mut Repository, other: &str) -> Result<(), Failed> {
    let sig = signature(repo, None)?;
    match ops::fuse(repo, other, &sig)? {
        FuseOutcome::UpToDate => println!("Already up to date with {other}"),
        FuseOutcome::FastForward { to } => println!("Fast-forwarded to {other} ({})", to.short()),
        FuseOutcome::Merged { id } => println!("Fused {other}: seal {}", id.short()),
        FuseOutcome::Conflicted { paths } => {
            println!("Fusing {other} left conflicts in:");
            for p in &paths {
                println!("  {p}");
            }
            println!("Resolve them, then `ivaldi seal -m ...` records both parents.");
            return Err(Failed(1));
        }
    }
    Ok(())
}

fn verify(repo: &Repository, json: bool) -> Result<(), Failed> {
    let r = ops::verify(repo)?;
    if json {
        print_json(&serde_json::to_value(&r).unwrap_or_default());
    } else {
        for p in &r.problems {
            eprintln!("problem: {p}");
        }
        println!(
            "Checked {} objects in {} packs and {} timelines: {}",
            r.objects,
            r.packs,
            r.timelines,
            if r.problems.is_empty() {
                "all good".to_string()
            } else {
                format!("{} problems", r.problems.len())
            }
        );
    }
    if r.problems.is_empty() {
        Ok(())
    } else {
        Err(Failed(1))
    }
}

fn repair(repo: &mut Repository, json: bool) -> Result<(), Failed> {
    use ivaldi_shell_smol::repo::repair;
    let mut r = repair::repair(repo)?;
    let missing: std::collections::BTreeSet<ObjectId> = r
        .damage
        .iter()
        .flat_map(|d| d.missing.iter().copied())
        .collect();
    let mut fetched = None;
    if !missing.is_empty() {
        if !json {
            print_repair(&r);
        }
        let n = missing.len();
        let outcome = p2p::refetch(repo.root(), missing.into_iter().collect(), json)?;
        if let p2p::Refetched::Answered { .. } = outcome {
            r.damage = repair::recheck(repo)?;
        }
        let still: usize = r
            .damage
            .iter()
            .flat_map(|d| d.missing.iter())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        fetched = Some(match outcome {
            p2p::Refetched::NotRunning => json!({
                "daemon": false,
                "asked": n,
                "message": format!(
                    "no daemon is running: start the daemon and run repair again \
                     to fetch the {n} missing objects from peers"
                ),
            }),
            p2p::Refetched::Answered {
                message, objects, ..
            } => json!({
                "daemon": true,
                "asked": n,
                "received": objects,
                "still_missing": still,
                "message": message,
            }),
        });
    }
    if json {
        let mut v = serde_json::to_value(&r).unwrap_or_default();
        v["refetch"] = fetched.unwrap_or(serde_json::Value::Null);
        print_json(&v);
    } else if let Some(f) = &fetched {
        if f["daemon"] == true {
            println!("Peers: {}", f["message"].as_str().unwrap_or_default());
            if r.damage.is_empty() {
                println!(
                    "Restored all {} missing objects from peers; the repository is complete",
                    f["asked"]
                );
            } else {
                for d in &r.damage {
                    println!(
                        "{} ({}) is still incomplete: {} objects missing",
                        d.reference,
                        d.head.short(),
                        d.missing.len()
                    );
                }
                println!(
                    "{} objects are still missing; run repair again when a peer that has them is connected",
                    f["still_missing"]
                );
            }
        } else {
            println!(
                "No daemon is running: start the daemon and run repair again to fetch the {} missing objects from peers",
                f["asked"]
            );
        }
    } else {
        print_repair(&r);
    }
    if r.damage.is_empty() {
        Ok(())
    } else {
        Err(Failed(1))
    }
}

/// What `repair` found, before anything is fetched.
fn print_repair(r: &ivaldi_shell_smol::repo::repair::RepairReport) {
    for q in &r.quarantined {
        println!(
            "Quarantined {} ({}): {} intact objects saved, {} unreadable",
            q.pack, q.reason, q.salvaged, q.unreadable
        );
    }
    if let Some(p) = &r.salvage_pack {
        println!("Intact objects from damaged packs are now in {p}");
    }
    if r.quarantined.is_empty() {
        println!("No damaged packs");
    }
    for d in &r.damage {
        println!(
            "{} ({}) is incomplete: {} objects missing:",
            d.reference,
            d.head.short(),
            d.missing.len()
        );
        for m in &d.missing {
            println!("  {m}");
        }
    }
}

fn gc(repo: &mut Repository, dry_run: bool, json: bool) -> Result<(), Failed> {
    let r = ivaldi_shell_smol::repo::gc::gc(repo, dry_run)?;
    if json {
        print_json(&serde_json::to_value(&r).unwrap_or_default());
        return Ok(());
    }
    let verb = if r.dry_run { "Would remove" } else { "Removed" };
    println!(
        "{verb} {} unreachable objects ({} bytes); kept {} objects reachable from {} refs",
        r.objects_removed, r.object_bytes_removed, r.objects_kept, r.roots
    );
    println!(
        "Packs: {} ({} bytes) -> {} ({} bytes){}",
        r.packs_before,
        r.pack_bytes_before,
        r.packs_after,
        r.pack_bytes_after,
        if r.dry_run { ", estimated" } else { "" }
    );
    Ok(())
}
