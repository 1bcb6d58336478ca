//! The everyday operations behind the CLI: seal, status, switch, create, fuse,
//! verify. Each takes the repository lock for as long as it writes, lands objects
//! before it moves a head, and moves heads only by compare-and-set.

use std::collections::BTreeSet;

use ivaldi_core::merge::{self, ConflictKind, MergeLabels};
use ivaldi_core::object::{Mode, ObjectKind};
use ivaldi_core::{ObjectId, Seal, TimelineName, Timestamp};
use serde::Serialize;

use super::error::{RepoError, Result};
use super::fault;
use super::worktree::{self, Changes, Flat};
use super::{RepoLock, Repository};

/// Who and when, for a new seal.
#[derive(Clone, Debug)]
pub struct Signature {
    pub author: String,
    pub time: Timestamp,
}

/// What `seal` did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SealOutcome {
    /// A new seal now heads the timeline.
    Sealed {
        id: ObjectId,
        timeline: TimelineName,
        changes: Changes,
        new_objects: usize,
        /// The head this seal replaced without descending from it (seals that
        /// arrived by sync after the working tree was checked out); it is kept.
        diverged_from: Option<ObjectId>,
    },
    /// The working tree matches its base and no fuse is pending.
    NothingToSeal,
}

fn flat_of(repo: &Repository, seal: Option<&ObjectId>) -> Result<Flat> {
    match seal {
        Some(id) => {
            let s = repo.store.seal(id)?;
            worktree::flatten(&repo.store, &s.tree)
        }
        None => Ok(Flat::new()),
    }
}

/// Checks that the checked-out timeline still points at the working tree's base.
fn check_head_matches_base(
    repo: &Repository,
    timeline: &TimelineName,
    base: Option<&ObjectId>,
) -> Result<Option<ObjectId>> {
    let head = repo.timeline(timeline)?;
    if head.as_ref() != base {
        let show = |o: Option<&ObjectId>| o.map(|i| i.short()).unwrap_or_else(|| "(none)".into());
        return Err(RepoError::Refused(format!(
            "timeline {timeline} is at {} but the working tree is based on {}; \
             run `ivaldi update` to bring the working tree forward (nothing was changed)",
            show(head.as_ref()),
            show(base)
        )));
    }
    Ok(head)
}

/// Repairs the window between moving a head and recording the working tree's
/// base (a crash in a seal, switch or fuse): when the working tree is exactly the
/// head's tree, the head is its base, and nothing can be lost by saying so. A
/// pending fuse whose other parent the base already contains is finished too.
/// Returns the (possibly repaired) base.
fn reconcile_base(
    repo: &Repository,
    lock: &RepoLock,
    head: Option<&ObjectId>,
    files: &Flat,
) -> Result<Option<ObjectId>> {
    let mut base = repo.base()?;
    if let Some(h) = head
        && base.as_ref() != Some(h)
    {
        let seal = repo.store.seal(h)?;
        if worktree::tree_id(files)? == seal.tree {
            tracing::info!(head = %h.short(), "working tree matches the timeline head; recording it as the base");
            repo.set_base(lock, Some(h))?;
            base = Some(*h);
        }
    }
    if let (Some(f), Some(b)) = (repo.fuse_head()?, base.as_ref())
        && repo.is_ancestor(&f, b)?
    {
        repo.set_fuse_head(lock, None)?;
    }
    Ok(base)
}

/// Snapshots the working tree onto the checked-out timeline.
///
/// The new seal's parent is the working tree's base. If the timeline moved on
/// meanwhile (a sync brought seals in), the seal still lands and heads the
/// timeline; the head it replaced is kept (under `kept/` and the peer's tracking
/// name), and the result is an ordinary divergence for the conflict machinery.
pub fn seal(repo: &mut Repository, message: &str, sig: &Signature) -> Result<SealOutcome> {
    let lock = repo.lock()?;
    let timeline = repo.head_timeline()?;
    let head = repo.timeline(&timeline)?;
    let mut writer = repo.store.writer()?;
    // Each path's previous blob is the natural delta base of its new version.
    let recorded_base = repo.base()?;
    let recorded_flat = flat_of(repo, recorded_base.as_ref())?;
    writer.set_path_bases(
        recorded_flat
            .iter()
            .filter(|(_, (mode, _))| *mode != Mode::Symlink)
            .map(|(p, (_, id))| (p.clone(), *id))
            .collect(),
    );
    let mut scan = worktree::scan(repo, Some(&mut writer))?;
    let base = reconcile_base(repo, &lock, head.as_ref(), &scan.files)?;
    let fuse = repo.fuse_head()?;
    fault::point("seal.scanned");
    let base_flat = if base == recorded_base {
        recorded_flat
    } else {
        flat_of(repo, base.as_ref())?
    };
    worktree::keep_gitlinks(repo.root(), &base_flat, &mut scan.files);
    let changes = worktree::diff(&base_flat, &scan.files);
    if changes.is_empty() && fuse.is_none() && (base.is_some() || scan.files.is_empty()) {
        scan.save_cache(repo)?;
        return Ok(SealOutcome::NothingToSeal);
    }
    let old_root = match base.as_ref() {
        Some(b) => Some(repo.store.seal(b)?.tree),
        None => None,
    };
    let tree = worktree::build_tree(&scan.files, &repo.store, &mut writer, old_root.as_ref())?;
    let seal = Seal {
        git: None,
        tree,
        parents: base.iter().chain(fuse.iter()).copied().collect(),
        author: sig.author.clone(),
        time: sig.time,
        message: message.to_owned(),
    };
    let bytes = seal.encode()?;
    let id = ObjectId::hash(&bytes);
    writer.add_trusted(id, &bytes)?;
    let new_objects = repo.store.commit(writer)?;
    fault::point("seal.pack-landed");
    let diverged_from = match head {
        Some(h) if Some(h) != base && !seal.parents.contains(&h) => {
            repo.keep(&lock, &timeline, &h)?;
            Some(h)
        }
        _ => None,
    };
    repo.update_timeline(&lock, &timeline, head.as_ref(), &id)?;
    fault::point("seal.timeline-moved");
    repo.set_base(&lock, Some(&id))?;
    repo.set_fuse_head(&lock, None)?;
    fault::point("seal.base-written");
    scan.save_cache(repo)?;
    // The seal is complete; consolidating packs can only fail harmlessly.
    super::repack::after_write(repo, &lock);
    Ok(SealOutcome::Sealed {
        id,
        timeline,
        changes,
        new_objects,
        diverged_from,
    })
}

/// The working tree's state, for `ivaldi status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub timeline: TimelineName,
    pub base: Option<ObjectId>,
    pub head: Option<ObjectId>,
    pub changes: Changes,
    pub fuse_pending: Option<ObjectId>,
    /// Seals that arrived on the timeline after the working tree was checked out.
    pub arrived: Option<Arrived>,
}

/// Seals a sync brought onto the checked-out timeline, not yet in the working tree.
#[derive(Debug, Clone, Serialize)]
pub struct Arrived {
    pub seals: usize,
    /// Peers whose last offered head is the timeline's head.
    pub from_peers: Vec<String>,
    /// False when the head does not descend from the base (it was replaced).
    pub fast_forward: bool,
}

/// Compares the working tree with its base seal.
pub fn status(repo: &mut Repository) -> Result<Status> {
    let timeline = repo.head_timeline()?;
    let head = repo.timeline(&timeline)?;
    let mut scan = worktree::scan(repo, None)?;
    // Repairs and the cache refresh need the lock; skip them if a writer is busy.
    let lock = RepoLock::acquire(&repo.dot_dir().join("lock"), std::time::Duration::ZERO).ok();
    let base = match &lock {
        Some(l) => reconcile_base(repo, l, head.as_ref(), &scan.files)?,
        None => repo.base()?,
    };
    let base_flat = flat_of(repo, base.as_ref())?;
    worktree::keep_gitlinks(repo.root(), &base_flat, &mut scan.files);
    let changes = worktree::diff(&base_flat, &scan.files);
    if lock.is_some() {
        scan.save_cache(repo)?;
    }
    let arrived = match (head, base) {
        (Some(h), b) if Some(h) != b => {
            let head_anc = repo.ancestors(&h)?;
            let (seals, fast_forward) = match b {
                Some(b) if head_anc.contains(&b) => {
                    (head_anc.len() - repo.ancestors(&b)?.len(), true)
                }
                Some(_) => (head_anc.len(), false),
                None => (head_anc.len(), true),
            };
            let from_peers = repo
                .tracking()?
                .into_iter()
                .filter(|((_, t), id)| *t == timeline && *id == h)
                .map(|((p, _), _)| p)
                .collect();
            Some(Arrived {
                seals,
                from_peers,
                fast_forward,
            })
        }
        _ => None,
    };
    Ok(Status {
        timeline,
        base,
        head,
        changes,
        fuse_pending: repo.fuse_head()?,
        arrived,
    })
}

/// What `update` did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum UpdateOutcome {
    UpToDate,
    Updated {
        from: Option<ObjectId>,
        to: ObjectId,
    },
}

/// Brings the working tree forward to its timeline's head (after a sync moved
/// it), carrying uncommitted changes along and refusing to overwrite any.
pub fn update(repo: &mut Repository) -> Result<UpdateOutcome> {
    let lock = repo.lock()?;
    let timeline = repo.head_timeline()?;
    let Some(head) = repo.timeline(&timeline)? else {
        return Ok(UpdateOutcome::UpToDate);
    };
    let scan = worktree::scan(repo, None)?;
    let base = reconcile_base(repo, &lock, Some(&head), &scan.files)?;
    if base == Some(head) {
        return Ok(UpdateOutcome::UpToDate);
    }
    if repo.fuse_head()?.is_some() {
        return Err(RepoError::Refused(
            "a fuse is in progress: resolve the conflicts and seal first".into(),
        ));
    }
    let target = flat_of(repo, Some(&head))?;
    move_worktree(repo, base.as_ref(), &target, "updating")?;
    repo.set_base(&lock, Some(&head))?;
    Ok(UpdateOutcome::Updated {
        from: base,
        to: head,
    })
}

/// Paths of uncommitted work that a change to `changed` paths would overwrite:
/// the same path, or one that is a directory prefix of the other.
fn blocked(dirty: &Changes, changed: &Changes) -> Vec<String> {
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    for p in changed.paths() {
        touched.insert(p);
        let mut s = p.as_str();
        while let Some(i) = s.rfind('/') {
            s = &s[..i];
            touched.insert(s);
        }
    }
    let mut out = Vec::new();
    for d in dirty.paths() {
        let mut hit = touched.contains(d.as_str());
        let mut s = d.as_str();
        while !hit && let Some(i) = s.rfind('/') {
            s = &s[..i];
            hit = changed.paths().any(|c| c == s);
        }
        if hit {
            out.push(d.clone());
        }
    }
    out
}

fn refuse_blocked(what: &str, paths: &[String]) -> RepoError {
    let mut list: Vec<&str> = paths.iter().map(String::as_str).take(10).collect();
    if paths.len() > 10 {
        list.push("…");
    }
    RepoError::Refused(format!(
        "{what} would overwrite uncommitted changes in: {}\n  seal them first (`ivaldi seal -m ...`); nothing was changed",
        list.join(", ")
    ))
}

/// Moves the working tree from its base to `target`, refusing if uncommitted work
/// is in the way. Returns the working tree's changes that were carried along.
fn move_worktree(
    repo: &Repository,
    base: Option<&ObjectId>,
    target: &Flat,
    what: &str,
) -> Result<()> {
    let base_flat = flat_of(repo, base)?;
    let mut scan = worktree::scan(repo, None)?;
    worktree::keep_gitlinks(repo.root(), &base_flat, &mut scan.files);
    let dirty = worktree::diff(&base_flat, &scan.files);
    let changed = worktree::diff(&base_flat, target);
    let blocked = blocked(&dirty, &changed);
    if !blocked.is_empty() {
        return Err(refuse_blocked(what, &blocked));
    }
    worktree::checkout(repo, &base_flat, target)
}

/// Checks out another timeline.
pub fn switch(repo: &mut Repository, name: &TimelineName) -> Result<ObjectId> {
    let lock = repo.lock()?;
    if repo.fuse_head()?.is_some() {
        return Err(RepoError::Refused(
            "a fuse is in progress: resolve the conflicts and seal first".into(),
        ));
    }
    let target = repo
        .timeline(name)?
        .ok_or_else(|| RepoError::UnknownTimeline(name.to_string()))?;
    let current = repo.head_timeline()?;
    let head = repo.timeline(&current)?;
    let scan = worktree::scan(repo, None)?;
    let base = reconcile_base(repo, &lock, head.as_ref(), &scan.files)?;
    let target_flat = flat_of(repo, Some(&target))?;
    move_worktree(repo, base.as_ref(), &target_flat, "switching")?;
    repo.set_head_timeline(&lock, name)?;
    repo.set_base(&lock, Some(&target))?;
    Ok(target)
}

/// Creates a timeline at `from` (a seal or timeline), or at the working tree's base.
pub fn create_timeline(
    repo: &mut Repository,
    name: &TimelineName,
    from: Option<&str>,
) -> Result<ObjectId> {
    let lock = repo.lock()?;
    if repo.timeline(name)?.is_some() {
        return Err(RepoError::TimelineExists(name.to_string()));
    }
    let at = match from {
        Some(spec) => repo.resolve_seal(spec)?,
        None => repo.base()?.ok_or_else(|| {
            RepoError::Refused("nothing to start a timeline from: seal something first".into())
        })?,
    };
    repo.update_timeline(&lock, name, None, &at)?;
    Ok(at)
}

/// Deletes a timeline, a local operation: its head is kept under
/// `kept/<name>/<id>` first (so `timeline create NAME --from <id>` restores it
/// and gc keeps its seals), and only then is the timeline's file removed. Peers
/// are not told; a running daemon simply stops announcing it. The checked-out
/// timeline cannot be deleted, since the working tree's next seal would land on it.
pub fn delete_timeline(repo: &mut Repository, name: &TimelineName) -> Result<ObjectId> {
    let lock = repo.lock()?;
    if repo.head_timeline()? == *name {
        return Err(RepoError::Refused(format!(
            "{name} is the checked-out timeline; switch to another one first"
        )));
    }
    let head = repo
        .timeline(name)?
        .ok_or_else(|| RepoError::UnknownTimeline(name.to_string()))?;
    repo.keep(&lock, name, &head)?;
    fault::point("timeline-delete.kept");
    repo.remove_timeline(&lock, name, &head)?;
    Ok(head)
}

/// What `fuse` did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FuseOutcome {
    /// The other timeline holds nothing new.
    UpToDate,
    /// The current timeline moved forward to the other's head.
    FastForward { to: ObjectId },
    /// A clean merge, sealed with both parents.
    Merged { id: ObjectId },
    /// Conflicts were written to the working tree; the next seal records both parents.
    Conflicted { paths: Vec<String> },
}

/// Merges `other` into the checked-out timeline.
/// `other` is a timeline name or any seal spec (a short id, such as a kept head
/// or a peer's tracking head).
pub fn fuse(repo: &mut Repository, other: &str, sig: &Signature) -> Result<FuseOutcome> {
    let lock = repo.lock()?;
    if repo.fuse_head()?.is_some() {
        return Err(RepoError::Refused(
            "a fuse is already in progress: resolve the conflicts and seal first".into(),
        ));
    }
    let timeline = repo.head_timeline()?;
    let base = repo.base()?;
    let ours = check_head_matches_base(repo, &timeline, base.as_ref())?
        .ok_or_else(|| RepoError::Refused("nothing sealed on this timeline yet".into()))?;
    let theirs = match repo.resolve_seal(other) {
        Ok(id) => id,
        // Not a seal: report it the way a bad timeline name is reported.
        Err(RepoError::UnknownSeal(_)) if !ivaldi_core::id::is_hex(other) || other.len() < 4 => {
            return Err(match TimelineName::new(other) {
                Err(e) => RepoError::BadTimelineName(e),
                Ok(_) => RepoError::UnknownTimeline(other.to_owned()),
            });
        }
        // An empty name is reported the same way.
        Err(RepoError::BadRevision(ivaldi_core::revision::RevisionError::Empty)) => {
            return Err(RepoError::BadTimelineName(
                ivaldi_core::timeline::TimelineNameError::Empty,
            ));
        }
        Err(e) => return Err(e),
    };
    let ours_flat = flat_of(repo, Some(&ours))?;
    let mut scan = worktree::scan(repo, None)?;
    worktree::keep_gitlinks(repo.root(), &ours_flat, &mut scan.files);
    let dirty = worktree::diff(&ours_flat, &scan.files);
    if !dirty.is_empty() {
        let paths: Vec<String> = dirty.paths().cloned().collect();
        return Err(refuse_blocked("fusing", &paths));
    }
    if repo.is_ancestor(&theirs, &ours)? {
        return Ok(FuseOutcome::UpToDate);
    }
    let theirs_flat = flat_of(repo, Some(&theirs))?;
    if repo.is_ancestor(&ours, &theirs)? {
        worktree::checkout(repo, &ours_flat, &theirs_flat)?;
        repo.update_timeline(&lock, &timeline, Some(&ours), &theirs)?;
        repo.set_base(&lock, Some(&theirs))?;
        return Ok(FuseOutcome::FastForward { to: theirs });
    }
    let mb = repo.merge_base(&ours, &theirs)?;
    let base_flat = flat_of(repo, mb.as_ref())?;
    let labels = MergeLabels {
        ours: timeline.to_string(),
        theirs: other.to_string(),
    };
    let result = merge_snapshots(repo, &base_flat, &ours_flat, &theirs_flat, &labels)?;
    let mut writer = result.writer;
    if result.conflicted.is_empty() {
        let old_root = repo.store.seal(&ours)?.tree;
        let tree = worktree::build_tree(&result.files, &repo.store, &mut writer, Some(&old_root))?;
        let seal = Seal {
            git: None,
            tree,
            parents: vec![ours, theirs],
            author: sig.author.clone(),
            time: sig.time,
            message: format!("Fuse {other} into {timeline}"),
        };
        let bytes = seal.encode()?;
        let id = ObjectId::hash(&bytes);
        writer.add_trusted(id, &bytes)?;
        repo.store.commit(writer)?;
        repo.update_timeline(&lock, &timeline, Some(&ours), &id)?;
        worktree::checkout(repo, &ours_flat, &result.files)?;
        repo.set_base(&lock, Some(&id))?;
        super::repack::after_write(repo, &lock);
        return Ok(FuseOutcome::Merged { id });
    }
    repo.store.commit(writer)?;
    worktree::checkout(repo, &ours_flat, &result.files)?;
    repo.set_fuse_head(&lock, Some(&theirs))?;
    super::repack::after_write(repo, &lock);
    Ok(FuseOutcome::Conflicted {
        paths: result.conflicted,
    })
}

/// The outcome of merging three snapshots: the files to check out (with conflict
/// markers where needed), the paths still in conflict, and the new blobs.
pub struct SnapshotMerge {
    pub files: Flat,
    pub conflicted: Vec<String>,
    pub writer: super::PackWriter,
}

/// Three-way merges snapshots; content conflicts in text files get a line-level
/// merge, and what stays conflicted is written with markers (or as our version
/// for binary files), so the user sees every conflict in the working tree.
pub fn merge_snapshots(
    repo: &Repository,
    base: &Flat,
    ours: &Flat,
    theirs: &Flat,
    labels: &MergeLabels,
) -> Result<SnapshotMerge> {
    let tm = merge::merge_trees(base, ours, theirs);
    let mut files = tm.merged;
    let mut conflicted = Vec::new();
    let mut writer = repo.store.writer()?;
    for c in tm.conflicts {
        let text_sides = match (c.kind, c.ours, c.theirs) {
            (ConflictKind::Content | ConflictKind::AddAdd, Some(o), Some(t))
                if o.0.is_file() && t.0.is_file() =>
            {
                Some((o, t))
            }
            _ => None,
        };
        if let Some((o, t)) = text_sides {
            let small = |id: &ObjectId| repo.store.kind(id) == Some(ObjectKind::Blob);
            if small(&o.1) && small(&t.1) && c.base.is_none_or(|b| small(&b.1)) {
                let base_bytes = match c.base {
                    Some(b) if b.0.is_file() => repo.store.file_content(&b.1)?,
                    _ => Vec::new(),
                };
                let m = merge::merge_text(
                    &base_bytes,
                    &repo.store.file_content(&o.1)?,
                    &repo.store.file_content(&t.1)?,
                    labels,
                );
                let id = writer.add_blob(&m.content)?;
                let mode = if o.0 == t.0 { o.0 } else { Mode::File };
                files.insert(c.path.clone(), (mode, id));
                if m.conflicts > 0 {
                    conflicted.push(c.path);
                }
                continue;
            }
        }
        // Not mergeable line by line: keep our side (or theirs if we deleted it),
        // so nothing either side wrote vanishes from the working tree.
        if let Some(keep) = c.ours.or(c.theirs) {
            files.insert(c.path.clone(), keep);
        }
        conflicted.push(c.path);
    }
    // A file/directory clash may leave both a file and files beneath it; keep the
    // directory's files (and report the path) so the tree stays buildable.
    let clashing: Vec<String> = files
        .keys()
        .filter(|p| {
            let prefix = format!("{p}/");
            files
                .range(prefix.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&prefix))
        })
        .cloned()
        .collect();
    for p in clashing {
        files.remove(&p);
        if !conflicted.contains(&p) {
            conflicted.push(p);
        }
    }
    conflicted.sort();
    Ok(SnapshotMerge {
        files,
        conflicted,
        writer,
    })
}

/// The result of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub objects: usize,
    pub packs: usize,
    pub timelines: usize,
    pub problems: Vec<String>,
    /// Refs that reach missing or damaged objects, and which.
    pub damage: Vec<super::repair::Damage>,
}

/// Checks the whole repository: every pack and object, the closure of every
/// object, and that every head names a stored seal.
pub fn verify(repo: &Repository) -> Result<VerifyReport> {
    let mut problems = Vec::new();
    let mut bad = hashbrown::HashSet::new();
    let objects = repo.store.verify_all(&mut problems, &mut bad);
    let mut timelines = 0;
    match repo.timelines() {
        Ok(t) => {
            for (name, id) in t {
                timelines += 1;
                if repo.store.kind(&id) != Some(ObjectKind::Seal) {
                    problems.push(format!(
                        "timeline {name} points at {id}, which is not a stored seal"
                    ));
                }
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if let Err(e) = repo.head_timeline() {
        problems.push(e.to_string());
    }
    for (what, r) in [("BASE", repo.base()), ("FUSE_HEAD", repo.fuse_head())] {
        match r {
            Ok(Some(id)) if repo.store.kind(&id) != Some(ObjectKind::Seal) => {
                problems.push(format!("{what} points at {id}, which is not a stored seal"));
            }
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    // Which refs the problems break, so the user knows what still works.
    let damage = match super::repair::damage(repo, &bad) {
        Ok(d) => d,
        Err(e) => {
            problems.push(e.to_string());
            Vec::new()
        }
    };
    for d in &damage {
        problems.push(format!(
            "{} ({}) reaches {} missing or damaged objects, such as {}",
            d.reference,
            d.head.short(),
            d.missing.len(),
            d.missing.first().map(|m| m.short()).unwrap_or_default()
        ));
    }
    Ok(VerifyReport {
        damage,
        objects,
        packs: repo.store.pack_paths().len(),
        timelines,
        problems,
    })
}

/// Which side `resolve` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Take {
    Local,
    Remote,
    Merge,
}

/// What `resolve` did.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub timeline: TimelineName,
    pub local: ObjectId,
    pub remote: ObjectId,
    /// The new head (a seal descending from both), or `None` when a merge left
    /// conflicts in the working tree to finish with `seal`.
    pub head: Option<ObjectId>,
    pub conflicted: Vec<String>,
}

/// The diverged remote heads of a timeline: tracking heads that the local head
/// does not contain, by peer.
pub fn diverged_remotes(
    repo: &Repository,
    timeline: &TimelineName,
) -> Result<Vec<(String, ObjectId)>> {
    let Some(local) = repo.timeline(timeline)? else {
        return Ok(Vec::new());
    };
    let local_anc = repo.ancestors(&local)?;
    let mut out = Vec::new();
    for ((peer, t), id) in repo.tracking()? {
        if t == *timeline && !local_anc.contains(&id) && !repo.is_ancestor(&local, &id)? {
            out.push((peer, id));
        }
    }
    Ok(out)
}

/// Resolves a diverged timeline by hand. `local` and `remote` keep one side's
/// content in a seal whose parents are both heads, so every peer then simply
/// fast-forwards to it and no seal leaves the history; `merge` is a `fuse` of the
/// remote head (the timeline must be checked out for it).
pub fn resolve(
    repo: &mut Repository,
    timeline: &TimelineName,
    remote: &ObjectId,
    take: Take,
    sig: &Signature,
) -> Result<Resolved> {
    if take == Take::Merge {
        if repo.head_timeline()? != *timeline {
            return Err(RepoError::Refused(format!(
                "switch to {timeline} first: a merge may leave conflicts in the working tree"
            )));
        }
        let local = repo
            .timeline(timeline)?
            .ok_or_else(|| RepoError::UnknownTimeline(timeline.to_string()))?;
        let outcome = fuse(repo, &remote.to_hex(), sig)?;
        let (head, conflicted) = match outcome {
            FuseOutcome::Merged { id } => (Some(id), Vec::new()),
            FuseOutcome::FastForward { to } => (Some(to), Vec::new()),
            FuseOutcome::UpToDate => (Some(local), Vec::new()),
            FuseOutcome::Conflicted { paths } => (None, paths),
        };
        return Ok(Resolved {
            timeline: timeline.clone(),
            local,
            remote: *remote,
            head,
            conflicted,
        });
    }
    let lock = repo.lock()?;
    let local = repo
        .timeline(timeline)?
        .ok_or_else(|| RepoError::UnknownTimeline(timeline.to_string()))?;
    let checked_out = repo.head_timeline()? == *timeline;
    let base = repo.base()?;
    if checked_out && base != Some(local) {
        return Err(RepoError::Refused(
            "the working tree is not at the timeline's head; run `ivaldi update` first".into(),
        ));
    }
    let kept_tree = match take {
        Take::Local => repo.store.seal(&local)?.tree,
        _ => repo.store.seal(remote)?.tree,
    };
    let seal = Seal {
        git: None,
        tree: kept_tree,
        parents: vec![local, *remote],
        author: sig.author.clone(),
        time: sig.time,
        message: format!(
            "Resolve {timeline}: keep {} ({} over {})",
            if take == Take::Local {
                "local"
            } else {
                "remote"
            },
            if take == Take::Local {
                local.short()
            } else {
                remote.short()
            },
            if take == Take::Local {
                remote.short()
            } else {
                local.short()
            },
        ),
    };
    let bytes = seal.encode()?;
    let id = ObjectId::hash(&bytes);
    if checked_out && take == Take::Remote {
        // Check before anything lands that no uncommitted work is in the way.
        let target = flat_of(repo, Some(remote))?;
        move_worktree(repo, Some(&local), &target, "resolving")?;
    }
    let mut writer = repo.store.writer()?;
    writer.add_trusted(id, &bytes)?;
    repo.store.commit(writer)?;
    repo.update_timeline(&lock, timeline, Some(&local), &id)?;
    if checked_out {
        repo.set_base(&lock, Some(&id))?;
    }
    super::repack::after_write(repo, &lock);
    Ok(Resolved {
        timeline: timeline.clone(),
        local,
        remote: *remote,
        head: Some(id),
        conflicted: Vec::new(),
    })
}
