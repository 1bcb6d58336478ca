//! `ivaldi repair`: takes damaged packs out of the store without losing what
//! they still hold intact, and says exactly what is gone and which refs it breaks.
//!
//! A pack is damaged when its trailer, index or checksum is wrong (a file cut
//! short, a flipped bit). Every object of it whose bytes still hash to its id is
//! copied into one fresh pack first (through the usual `tmp/`, fsync, rename,
//! directory fsync path); only then is the damaged pack moved to
//! `.ivaldi/quarantine/` (renamed, both directories fsynced). Killed before the
//! salvage pack lands, nothing changed; killed after, the intact objects are
//! stored twice (which the index tolerates) and the next `repair` finishes the
//! move. The quarantined file is kept for forensics, never read again.
//!
//! The salvage pack skips the closure check (see
//! [`super::Store::commit_salvage`]): a seal whose blob was damaged is kept,
//! so the only objects missing afterwards are the ones the damage destroyed.
//! The report names them and the refs that need them; the CLI then asks a
//! running daemon to fetch them again from its peers (`Command::Refetch`,
//! `core/src/node/refetch.rs`) and reports with [`recheck`] what is still
//! missing.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use hashbrown::{HashMap, HashSet};
use ivaldi_core::ObjectId;
use ivaldi_core::object::{Object, ObjectKind};
use serde::Serialize;

use super::error::{IoContext, Result};
use super::{Repository, fault, pack};

/// The directory damaged packs are moved to, inside `.ivaldi`.
pub const QUARANTINE: &str = "quarantine";

/// One pack `repair` took out of the store.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Quarantined {
    /// The pack's file name (now under `.ivaldi/quarantine/`).
    pub pack: String,
    pub reason: String,
    /// Intact objects copied into the salvage pack.
    pub salvaged: usize,
    /// Indexed objects whose bytes no longer match their id. A pack cut short
    /// has no index left, so what it held is counted under [`Damage`] instead.
    pub unreadable: usize,
}

/// A ref (timeline, kept head, tracking name, `BASE`, `FUSE_HEAD`) that reaches
/// objects the store does not hold intact.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Damage {
    /// Which ref, such as `timeline side`.
    pub reference: String,
    pub head: ObjectId,
    /// The objects it reaches that are missing or damaged, sorted.
    pub missing: Vec<ObjectId>,
}

/// What `repair` did, and what is still missing after it.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub quarantined: Vec<Quarantined>,
    /// The fresh pack holding the salvaged objects, if any were salvaged.
    pub salvage_pack: Option<String>,
    pub damage: Vec<Damage>,
}

/// Every ref with a name for messages, in a stable order.
fn named_refs(repo: &Repository) -> Result<Vec<(String, ObjectId)>> {
    let mut out = Vec::new();
    for (name, id) in repo.timelines()? {
        out.push((format!("timeline {name}"), id));
    }
    for (name, id) in repo.kept()? {
        out.push((format!("kept head {} of {name}", id.short()), id));
    }
    for ((peer, name), id) in repo.tracking()? {
        out.push((
            format!(
                "tracking {name} of peer {}",
                peer.get(..12).unwrap_or(&peer)
            ),
            id,
        ));
    }
    if let Some(id) = repo.base()? {
        out.push(("BASE".into(), id));
    }
    if let Some(id) = repo.fuse_head()? {
        out.push(("FUSE_HEAD".into(), id));
    }
    Ok(out)
}

/// The refs that reach objects missing from the store or in `bad` (objects
/// `verify` could not read), each with those objects. Walks every ref's
/// closure, reading each object with children once.
pub fn damage(repo: &Repository, bad: &HashSet<ObjectId>) -> Result<Vec<Damage>> {
    // None: missing or unreadable; Some(children) otherwise.
    let mut children: HashMap<ObjectId, Option<Vec<ObjectId>>> = HashMap::new();
    let mut lookup = |id: &ObjectId| -> Option<Vec<ObjectId>> {
        if let Some(c) = children.get(id) {
            return c.clone();
        }
        let c = if !repo.store.contains(id) || bad.contains(id) {
            None
        } else if repo.store.kind(id) == Some(ObjectKind::Blob) {
            Some(Vec::new())
        } else {
            match repo.store.read(id) {
                Ok(Object::Blob(_)) => Some(Vec::new()),
                Ok(obj) => Some(obj.children()),
                Err(_) => None,
            }
        };
        children.insert(*id, c.clone());
        c
    };
    let mut out = Vec::new();
    for (reference, head) in named_refs(repo)? {
        let mut seen = HashSet::new();
        let mut missing = BTreeSet::new();
        let mut stack = vec![head];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            match lookup(&id) {
                Some(c) => stack.extend(c),
                None => {
                    missing.insert(id);
                }
            }
        }
        if !missing.is_empty() {
            out.push(Damage {
                reference,
                head,
                missing: missing.into_iter().collect(),
            });
        }
    }
    Ok(out)
}

/// The refs still reaching missing or unreadable objects, after other
/// processes (a daemon refetching them) added packs.
pub fn recheck(repo: &mut Repository) -> Result<Vec<Damage>> {
    repo.store.refresh()?;
    let mut problems = Vec::new();
    let mut bad = HashSet::new();
    repo.store.verify_all(&mut problems, &mut bad);
    damage(repo, &bad)
}

/// Every pack file in the store's directory, loaded or not.
fn pack_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let path = e.at(dir)?.path();
        if path.extension().is_some_and(|x| x == "ivp") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// A free name for `name` in `dir` (a second copy of the same pack name gets a
/// numbered suffix rather than replacing the first).
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let mut path = dir.join(name);
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    path
}

/// Quarantines every damaged pack (after saving its intact objects), then
/// reports what is still missing.
pub fn repair(repo: &mut Repository) -> Result<RepairReport> {
    let _lock = repo.lock()?;
    let objects = repo.store.dir().to_owned();
    let mut good = Vec::new();
    let mut damaged = Vec::new();
    for path in pack_files(&objects)? {
        match pack::check_pack(&path) {
            Ok(()) => good.push(path),
            Err(e) => {
                let reason = match e {
                    super::RepoError::CorruptPack { reason, .. } => reason,
                    other => other.to_string(),
                };
                damaged.push((path, reason));
            }
        }
    }
    let mut report = RepairReport {
        quarantined: Vec::new(),
        salvage_pack: None,
        damage: Vec::new(),
    };
    if !damaged.is_empty() {
        // Objects a whole pack already holds need no saving.
        let mut held = HashSet::new();
        for p in &good {
            held.extend(pack::pack_ids(p)?);
        }
        let mut writer = repo.store.writer()?;
        for (path, reason) in &damaged {
            let mut salvaged = 0;
            let unreadable = match pack::for_each_intact(path, &repo.store, |id, bytes| {
                if held.contains(&id) || writer.holds(&id) {
                    return Ok(());
                }
                // An object that decodes badly was stored that way; it is not
                // worth keeping, and it would stop the salvage.
                if writer.add_trusted(id, bytes).is_ok() {
                    salvaged += 1;
                }
                Ok(())
            }) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(pack = %path.display(), error = %e, "no usable index: nothing to salvage");
                    0
                }
            };
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            report.quarantined.push(Quarantined {
                pack: name,
                reason: reason.clone(),
                salvaged,
                unreadable,
            });
        }
        let before: BTreeSet<PathBuf> = repo.store.pack_paths().into_iter().collect();
        if repo.store.commit_salvage(writer)? > 0 {
            report.salvage_pack = repo
                .store
                .pack_paths()
                .into_iter()
                .find(|p| !before.contains(p))
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
        fault::point("repair.salvage-landed");
        let quarantine = repo.dot_dir().join(QUARANTINE);
        fs::create_dir_all(&quarantine).at(&quarantine)?;
        for (path, _) in &damaged {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pack".into());
            let dest = free_name(&quarantine, &name);
            fs::rename(path, &dest).at(&dest)?;
            tracing::info!(from = %path.display(), to = %dest.display(), "quarantined a damaged pack");
        }
        pack::sync_dir(&quarantine)?;
        pack::sync_dir(&objects)?;
        repo.store.refresh()?;
    }
    let mut problems = Vec::new();
    let mut bad = HashSet::new();
    repo.store.verify_all(&mut problems, &mut bad);
    report.damage = damage(repo, &bad)?;
    Ok(report)
}
