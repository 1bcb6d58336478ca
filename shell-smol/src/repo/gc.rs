//! `ivaldi gc`: removes objects nothing can reach.
//!
//! Unreachable objects come from seals that were interrupted or discarded and
//! from syncs whose batch landed but whose heads were refused. They cost disk, and
//! nothing else: every read starts from a ref. The roots are every timeline head,
//! every kept head (`kept/<timeline>/<id>`), every tracking name, the working
//! tree's base (`BASE`) and a pending fuse's other parent (`FUSE_HEAD`); every
//! object reachable from them survives.
//!
//! Packs are immutable, so gc writes the live objects into one new pack (through
//! the same path as any batch: `tmp/`, fsync, closure check, rename, directory
//! fsync) and only then deletes the old packs. A crash before the rename leaves
//! the old packs; a crash after it leaves the new pack plus some old ones (the
//! same objects twice, which the index tolerates). No order of interruption loses
//! a reachable object.
//!
//! gc holds the writer lock throughout, like every writing command, so no seal,
//! landing sync or head move runs meanwhile. A writer that prepared a batch
//! before gc started and lands it after re-reads the pack list under the lock
//! (`Store::refresh` forgets removed packs): if its batch leaned on an object gc
//! removed, its closure check refuses the batch instead of landing a dangling one.
//!
//! A daemon's pull lands in checkpoints (closed prefixes, as packs) before its
//! heads move; it records them in `tmp/pull-<pid>-<batch>.keep`. While that
//! process lives, gc counts every object of those packs as a root and leaves the
//! packs themselves in place, so a pull in progress never loses what it landed.
//! The core also lands checkpoints of its own and names their roots in the
//! daemon's resume records (`.ivaldi/p2p/resume/<peer>`); while the daemon runs,
//! gc keeps what those name too. With no daemon running they are ordinary
//! garbage: losing them costs only a fuller resend.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use hashbrown::HashSet;
use ivaldi_core::ObjectId;
use ivaldi_core::object::Object;
use serde::Serialize;

use super::error::{IoContext, RepoError, Result};
use super::{Repository, fault, pack};

/// Crash points inside `gc`, in the order it reaches them.
pub const GC_POINTS: &[&str] = &[
    "pack.before-rename",
    "gc.pack-landed",
    "gc.old-pack-removed",
];

/// What `gc` found, and did unless `dry_run`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GcReport {
    /// Nothing was changed; the counts say what a real run would do.
    pub dry_run: bool,
    /// How many distinct seals the refs (timelines, kept heads, tracking names,
    /// BASE, FUSE_HEAD) name: the roots of the walk.
    pub roots: usize,
    pub objects_before: usize,
    pub objects_kept: usize,
    pub objects_removed: usize,
    /// Bytes of object encodings that are unreachable.
    pub object_bytes_removed: u64,
    pub packs_before: usize,
    pub packs_after: usize,
    /// Pack file sizes on disk, before and after (after is estimated on a dry run).
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    /// Objects the new pack stores as deltas, and the longest chain of bases
    /// (at most `pack::MAX_CHAIN`); zero on a dry run.
    pub deltas: usize,
    pub max_delta_depth: usize,
}

/// Where this process records the checkpoint packs of an unfinished pull.
pub fn checkpoint_record(repo: &Repository, batch: u64) -> PathBuf {
    repo.dot_dir()
        .join("tmp")
        .join(format!("pull-{}-{batch}.keep", std::process::id()))
}

/// Checkpoint packs of pulls whose process is still running.
pub(super) fn protected_packs(repo: &Repository) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(repo.dot_dir().join("tmp")) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let pid = name
            .strip_prefix("pull-")
            .and_then(|n| n.strip_suffix(".keep"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if !super::process_alive(pid) {
            continue;
        }
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            // Plain pack file names only: the record never points elsewhere.
            let plain = line.starts_with("pack-") && line.ends_with(".ivp") && !line.contains('/');
            if plain {
                out.push(repo.store.dir().join(line));
            }
        }
    }
    out
}

/// Objects the running daemon's resume records name (none if no daemon runs for
/// this repository; unreadable records and ids no longer stored are skipped).
fn resume_roots(repo: &Repository) -> Vec<ObjectId> {
    let running = crate::daemon::setup::P2pPaths::new(repo.root())
        .ok()
        .and_then(|p| fs::read_to_string(&p.pid).ok())
        .and_then(|t| t.trim().parse::<u32>().ok())
        .is_some_and(super::process_alive);
    if !running {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(repo.dot_dir().join("p2p").join("resume")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.trim().parse::<ObjectId>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|id| repo.store.contains(id))
        .collect()
}

/// Every root: the refs whose seals, and everything under them, must survive.
pub fn roots(repo: &Repository) -> Result<BTreeMap<ObjectId, String>> {
    let mut out = BTreeMap::new();
    for (name, id) in repo.timelines()? {
        out.entry(id).or_insert_with(|| format!("timeline {name}"));
    }
    for (name, id) in repo.kept()? {
        out.entry(id)
            .or_insert_with(|| format!("kept head of {name}"));
    }
    for ((peer, name), id) in repo.tracking()? {
        out.entry(id)
            .or_insert_with(|| format!("tracking {name} of peer {peer}"));
    }
    if let Some(id) = repo.base()? {
        out.entry(id).or_insert_with(|| "BASE".into());
    }
    if let Some(id) = repo.fuse_head()? {
        out.entry(id).or_insert_with(|| "FUSE_HEAD".into());
    }
    Ok(out)
}

/// Every object reachable from the roots. A root or child that is missing is an
/// error: gc never runs on a repository `verify` would reject, since it could
/// not tell what that missing object would have kept alive.
pub fn reachable(
    repo: &Repository,
    roots: &BTreeMap<ObjectId, String>,
) -> Result<HashSet<ObjectId>> {
    let mut seen = HashSet::new();
    let mut stack: Vec<ObjectId> = roots.keys().copied().collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if !repo.store.contains(&id) {
            return Err(RepoError::Refused(format!(
                "gc refused: reachable object {id} is missing (root: {}); run `ivaldi verify`",
                roots
                    .get(&id)
                    .map(String::as_str)
                    .unwrap_or("a descendant of a ref")
            )));
        }
        // Blobs have no children; reading them would only cost time.
        if repo.store.kind(&id) == Some(ivaldi_core::object::ObjectKind::Blob) {
            continue;
        }
        match repo.store.read(&id)? {
            Object::Blob(_) => {}
            obj => stack.extend(obj.children()),
        }
    }
    Ok(seen)
}

fn pack_sizes(paths: &[PathBuf]) -> Result<u64> {
    let mut total = 0;
    for p in paths {
        total += fs::metadata(p).at(p)?.len();
    }
    Ok(total)
}

/// Removes unreachable objects. With `dry_run`, only counts them.
pub fn gc(repo: &mut Repository, dry_run: bool) -> Result<GcReport> {
    let _lock = repo.lock()?;
    let mut roots = roots(repo)?;
    let protected = protected_packs(repo);
    for p in &protected {
        if !Path::exists(p) {
            continue;
        }
        for id in pack::pack_ids(p)? {
            roots
                .entry(id)
                .or_insert_with(|| "a checkpoint of a running pull".into());
        }
    }
    for id in resume_roots(repo) {
        roots
            .entry(id)
            .or_insert_with(|| "the running daemon's resume record".into());
    }
    let live = reachable(repo, &roots)?;
    let old_packs = repo.store.pack_paths();
    let pack_bytes_before = pack_sizes(&old_packs)?;
    let objects_before = repo.store.len();
    let dead: Vec<ObjectId> = repo
        .store
        .ids()
        .filter(|id| !live.contains(*id))
        .copied()
        .collect();
    let object_bytes_removed: u64 = dead
        .iter()
        .filter_map(|id| repo.store.encoded_len(id))
        .sum();
    let live_bytes: u64 = live
        .iter()
        .filter_map(|id| repo.store.encoded_len(id))
        .sum();
    let mut report = GcReport {
        dry_run,
        roots: roots.len(),
        objects_before,
        objects_kept: live.len(),
        objects_removed: dead.len(),
        object_bytes_removed,
        packs_before: old_packs.len(),
        packs_after: old_packs.len(),
        pack_bytes_before,
        pack_bytes_after: pack_bytes_before,
        deltas: 0,
        max_delta_depth: 0,
    };
    // Version-1 packs (raw objects) are rewritten compressed even when
    // nothing is garbage: that finishes a repository's upgrade to format 2.
    let upgrade = old_packs.iter().any(|p| pack::is_v1(p));
    // A full repack: several packs (other than a running pull's) become one,
    // with the deeper delta search of `gc_delta`.
    let unprotected = old_packs.iter().filter(|p| !protected.contains(p)).count();
    if dead.is_empty() && !upgrade && unprotected <= 1 {
        tracing::info!("gc: every object is reachable; nothing to do");
        return Ok(report);
    }
    if dry_run {
        // One pack: magic, the live objects as stored, an index entry each, the trailer.
        report.packs_after = usize::from(!live.is_empty());
        report.pack_bytes_after = if live.is_empty() {
            0
        } else {
            8 + live_bytes + pack::INDEX_ENTRY as u64 * live.len() as u64 + 56
        };
        return Ok(report);
    }

    // Write the live objects into one new pack. Order does not matter for the
    // closure check at commit: every child is either in the batch or still in
    // the (not yet removed) old packs.
    let new_pack = if live.is_empty() {
        None
    } else {
        let mut writer = repo.store.writer()?;
        let stats = super::gc_delta::write_live(repo, &live, &mut writer)?;
        report.deltas = stats.deltas;
        report.max_delta_depth = stats.max_depth;
        repo.store.commit(writer)?;
        repo.store.pack_paths().last().cloned()
    };
    fault::point("gc.pack-landed");

    // The new pack is durable and visible; the old ones are now redundant.
    let mut removed = 0;
    for p in &old_packs {
        if Some(p) == new_pack.as_ref() || protected.contains(p) {
            continue;
        }
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(p),
        }
        removed += 1;
        if removed == 1 {
            fault::point("gc.old-pack-removed");
        }
    }
    pack::sync_dir(repo.store.dir())?;
    repo.store.refresh()?;
    let after = repo.store.pack_paths();
    report.packs_after = after.len();
    report.pack_bytes_after = pack_sizes(&after)?;
    tracing::info!(
        removed = report.objects_removed,
        bytes = report.object_bytes_removed,
        packs_before = report.packs_before,
        packs_after = report.packs_after,
        "gc finished"
    );
    Ok(report)
}
