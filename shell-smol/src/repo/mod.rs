//! The on-disk repository: objects, timelines, the checked-out timeline and the
//! working tree's base seal, all under `.ivaldi/` (layout in `docs/repository.md`).

pub mod codec;
pub mod error;
pub mod fault;
pub mod gc;
pub mod gc_delta;
pub mod heads_log;
pub mod lock;
pub mod ops;
pub mod pack;
pub mod pack_files;
pub mod repack;
pub mod repair;
pub mod worktree;

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet as StdHashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ivaldi_core::id::{self, ObjectId};
use ivaldi_core::object::ObjectKind;
use ivaldi_core::revision::{Base, Revision, WalkError};
use ivaldi_core::{Seal, TimelineName};
use serde::{Deserialize, Serialize};

use error::IoContext;
pub use error::{RepoError, Result};
pub use lock::RepoLock;
pub use pack::{PackWriter, Store};

/// The name of the repository directory inside a working tree.
pub const DOT_DIR: &str = ".ivaldi";
/// Version 2: packs may hold compressed objects and deltas (`IVPACK02`).
const FORMAT: &str = "ivaldi-repository 2\n";
/// Version 1: raw packs only (`IVPACK01`). Still read; upgraded on open.
const FORMAT_V1: &str = "ivaldi-repository 1\n";
/// The timeline a new repository starts on.
pub const DEFAULT_TIMELINE: &str = "main";
/// How long a writer waits for another writer before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Facts about the repository that never change after `forge`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoInfo {
    /// A random id made by `forge`. Peers sync only repositories with the same id,
    /// so two unrelated repositories never exchange seals.
    pub id: String,
}

/// Per-repository settings a user may edit.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserConfig {
    /// Author recorded in seals, such as `Ada <ada@example.org>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    root: PathBuf,
    dir: PathBuf,
    /// The object store.
    pub store: Store,
}

impl Repository {
    /// Creates a repository in `root` (made if missing) with a fresh id.
    pub fn forge(root: &Path) -> Result<Self> {
        Self::forge_with_id(root, &random_id()?)
    }

    /// Creates a repository with a given id; `clone` uses this to join a peer's.
    pub fn forge_with_id(root: &Path, id: &str) -> Result<Self> {
        fs::create_dir_all(root).at(root)?;
        let root = root.canonicalize().at(root)?;
        let dir = root.join(DOT_DIR);
        if dir.exists() {
            return Err(RepoError::AlreadyExists(root));
        }
        // Build the layout in a temporary sibling and rename it into place, so an
        // interrupted forge never leaves a half-made `.ivaldi`.
        let staging = root.join(format!(".ivaldi-forge-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        for sub in ["objects", "timelines", "tmp"] {
            fs::create_dir_all(staging.join(sub)).at(&staging)?;
        }
        let info = RepoInfo { id: id.to_owned() };
        let json =
            serde_json::to_vec_pretty(&info).map_err(|e| RepoError::Refused(e.to_string()))?;
        fs::write(staging.join("repo.json"), json).at(&staging)?;
        fs::write(staging.join("HEAD"), format!("{DEFAULT_TIMELINE}\n")).at(&staging)?;
        fs::write(staging.join("format"), FORMAT).at(&staging)?;
        fs::rename(&staging, &dir).at(&dir)?;
        pack::sync_dir(&root)?;
        Self::open(&root)
    }

    /// Opens the repository whose working tree is `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join(DOT_DIR);
        let format_path = dir.join("format");
        match fs::read_to_string(&format_path) {
            Ok(f) if f == FORMAT => {}
            Ok(f) if f == FORMAT_V1 => {
                // Version-2 readers read version-1 packs as they are, so the
                // upgrade is one atomic rewrite of `format`; `gc` later rewrites
                // the old packs compressed.
                fault::point("upgrade.started");
                write_atomic(&format_path, FORMAT.as_bytes(), true)?;
                fault::point("upgrade.format-written");
                eprintln!(
                    "ivaldi: upgraded the repository at {} to format 2 (compressed packs); \
                     run `ivaldi gc` to compress existing history",
                    root.display()
                );
            }
            Ok(f) => {
                return Err(RepoError::BadFile {
                    path: format_path,
                    reason: format!("unknown repository format {:?}", f.trim()),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RepoError::NotARepository(root.to_owned()));
            }
            Err(e) => return Err(e).at(format_path),
        }
        let store = Store::open(&dir.join("objects"), &dir.join("tmp"))?;
        let repo = Repository {
            root: root.to_owned(),
            dir,
            store,
        };
        repo.clean_tmp();
        Ok(repo)
    }

    /// Finds the repository containing `start` (or a parent of it).
    pub fn discover(start: &Path) -> Result<Self> {
        Self::open(&Self::find_root(start)?)
    }

    /// The root of the repository containing `start` (or a parent of it),
    /// without opening it: for commands that only talk to the daemon, which
    /// owns the repository (opening it walks every head's directory for
    /// leftovers of interrupted writes).
    pub fn find_root(start: &Path) -> Result<PathBuf> {
        let start = start.canonicalize().at(start)?;
        let mut cur: &Path = &start;
        loop {
            if cur.join(DOT_DIR).join("format").exists() {
                return Ok(cur.to_owned());
            }
            match cur.parent() {
                Some(p) => cur = p,
                None => return Err(RepoError::NotARepository(start)),
            }
        }
    }

    /// Removes temporary files a crashed writer left, if no writer is active now:
    /// partial packs in `tmp/`, and the temporary siblings of small files written
    /// atomically (`.NAME.PID.tmp` next to `HEAD`, `BASE`, timelines, tracking and
    /// kept refs, the stat cache and the p2p config). Such a sibling was never
    /// renamed into place, so the file it would have replaced still holds the old
    /// content: removing it completes the interrupted write as "not done".
    fn clean_tmp(&self) {
        let Ok(lock) = RepoLock::acquire(&self.dir.join("lock"), Duration::ZERO) else {
            return;
        };
        // Head updates a crashed daemon logged but did not make durable.
        if heads_log::left_by_dead_writer(self)
            && let Err(e) = heads_log::settle(self, &lock).map(|_| ())
        {
            tracing::warn!(error = %e, "cannot settle logged head updates");
        }
        if let Ok(entries) = fs::read_dir(self.dir.join("tmp")) {
            for e in entries.flatten() {
                // A pack being written by a live process (the daemon receiving a
                // sync) is named after its pid; only a dead writer's file is debris.
                let name = e.file_name();
                let pid = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("pack-").or_else(|| n.strip_prefix("pull-")))
                    .and_then(|n| n.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if let Some(pid) = pid
                    && process_alive(pid)
                {
                    continue;
                }
                tracing::info!(path = %e.path().display(), "removing partial file left by an interrupted write");
                let _ = fs::remove_file(e.path());
            }
        }
        // Small-file siblings: a handful of directories, walked a few levels deep
        // (timeline names may contain '/').
        let mut stack: Vec<(PathBuf, usize)> = vec![(self.dir.clone(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let Ok(ft) = e.file_type() else { continue };
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if ft.is_dir() {
                    let descend = if depth == 0 {
                        matches!(
                            name,
                            "timelines" | "tracking" | "kept" | "p2p" | "heads-log"
                        )
                    } else {
                        depth < 16
                    };
                    if descend {
                        stack.push((path, depth + 1));
                    }
                    continue;
                }
                if let Some(pid) = atomic_tmp_pid(name)
                    && !process_alive(pid)
                {
                    tracing::info!(path = %path.display(), "removing partial file left by an interrupted write");
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }

    /// The working tree's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `.ivaldi` directory.
    pub fn dot_dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the writer lock; every change to refs or the working tree holds it.
    pub fn lock(&mut self) -> Result<RepoLock> {
        let lock = RepoLock::acquire(&self.dir.join("lock"), LOCK_WAIT)?;
        // Another process may have landed packs while we waited.
        self.store.refresh()?;
        Ok(lock)
    }

    /// The repository's fixed facts.
    pub fn info(&self) -> Result<RepoInfo> {
        let path = self.dir.join("repo.json");
        let bytes = fs::read(&path).at(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| RepoError::BadFile {
            path,
            reason: e.to_string(),
        })
    }

    /// The user's settings (author), defaulted when the file is absent.
    pub fn user_config(&self) -> Result<UserConfig> {
        let path = self.dir.join("config.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RepoError::BadFile {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserConfig::default()),
            Err(e) => Err(e).at(path),
        }
    }

    /// Saves the user's settings.
    pub fn set_user_config(&self, cfg: &UserConfig) -> Result<()> {
        let json = serde_json::to_vec_pretty(cfg).map_err(|e| RepoError::Refused(e.to_string()))?;
        write_atomic(&self.dir.join("config.json"), &json, true)
    }

    /// The checked-out timeline.
    pub fn head_timeline(&self) -> Result<TimelineName> {
        let path = self.dir.join("HEAD");
        let text = fs::read_to_string(&path).at(&path)?;
        TimelineName::new(text.trim()).map_err(|e| RepoError::BadFile {
            path,
            reason: e.to_string(),
        })
    }

    /// Records the checked-out timeline.
    pub fn set_head_timeline(&self, _lock: &RepoLock, name: &TimelineName) -> Result<()> {
        write_atomic(&self.dir.join("HEAD"), format!("{name}\n").as_bytes(), true)
    }

    fn read_id_file(&self, path: &Path) -> Result<Option<ObjectId>> {
        match fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(None),
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: id::ParseIdError| RepoError::BadFile {
                    path: path.to_owned(),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(path),
        }
    }

    fn write_id_file(&self, path: &Path, id: Option<&ObjectId>) -> Result<()> {
        match id {
            Some(id) => write_atomic(path, format!("{id}\n").as_bytes(), true),
            None => match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
                _ => Ok(()),
            },
        }
    }

    /// The seal the working tree was last checked out or sealed from; `None`
    /// before the first seal.
    pub fn base(&self) -> Result<Option<ObjectId>> {
        self.read_id_file(&self.dir.join("BASE"))
    }

    /// Records the working tree's base seal.
    pub fn set_base(&self, _lock: &RepoLock, id: Option<&ObjectId>) -> Result<()> {
        self.write_id_file(&self.dir.join("BASE"), id)
    }

    /// The other parent of an unfinished conflicted `fuse`, recorded by the next seal.
    pub fn fuse_head(&self) -> Result<Option<ObjectId>> {
        self.read_id_file(&self.dir.join("FUSE_HEAD"))
    }

    /// Records or clears the pending fuse parent.
    pub fn set_fuse_head(&self, _lock: &RepoLock, id: Option<&ObjectId>) -> Result<()> {
        self.write_id_file(&self.dir.join("FUSE_HEAD"), id)
    }

    pub(crate) fn timeline_path(&self, name: &TimelineName) -> PathBuf {
        self.dir.join("timelines").join(name.as_str())
    }

    /// The head of a timeline, `None` if it does not exist (or has no seal yet).
    pub fn timeline(&self, name: &TimelineName) -> Result<Option<ObjectId>> {
        self.read_id_file(&self.timeline_path(name))
    }

    /// Every timeline and its head.
    pub fn timelines(&self) -> Result<BTreeMap<TimelineName, ObjectId>> {
        let mut out = BTreeMap::new();
        let base = self.dir.join("timelines");
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).at(&dir)? {
                let entry = entry.at(&dir)?;
                let path = entry.path();
                let ft = entry.file_type().at(&path)?;
                if ft.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(&base).unwrap_or(&path);
                let Some(rel) = rel.to_str() else { continue };
                // Lock files and stray names are not timelines.
                let Ok(name) = TimelineName::new(rel) else {
                    continue;
                };
                if let Some(id) = self.read_id_file(&path)? {
                    out.insert(name, id);
                }
            }
        }
        Ok(out)
    }

    /// Moves a timeline from `expected` to `new`, refusing if it has moved since the
    /// caller read it: the only way any head ever changes. `expected = None` means
    /// the timeline must not exist yet. The target must be a stored seal.
    pub fn update_timeline(
        &self,
        lock: &RepoLock,
        name: &TimelineName,
        expected: Option<&ObjectId>,
        new: &ObjectId,
    ) -> Result<()> {
        heads_log::settle_pending(self, lock)?;
        match self.store.kind(new) {
            Some(ObjectKind::Seal) => {}
            Some(k) => {
                return Err(RepoError::WrongKind {
                    id: *new,
                    expected: "seal",
                    found: k.name(),
                });
            }
            None => return Err(RepoError::MissingObject(*new)),
        }
        let current = self.timeline(name)?;
        if current.as_ref() != expected {
            let show =
                |o: Option<&ObjectId>| o.map(|i| i.short()).unwrap_or_else(|| "(none)".into());
            return Err(RepoError::HeadMoved {
                name: name.to_string(),
                expected: show(expected),
                found: show(current.as_ref()),
            });
        }
        let path = self.timeline_path(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        self.write_id_file(&path, Some(new))
    }

    /// Removes a timeline if it still points at `expected` (compare-and-set, like
    /// every head change). Callers keep the head first (see `ops::delete_timeline`).
    pub fn remove_timeline(
        &self,
        lock: &RepoLock,
        name: &TimelineName,
        expected: &ObjectId,
    ) -> Result<()> {
        heads_log::settle_pending(self, lock)?;
        let current = self.timeline(name)?;
        if current.as_ref() != Some(expected) {
            return Err(RepoError::HeadMoved {
                name: name.to_string(),
                expected: expected.short(),
                found: current
                    .map(|c| c.short())
                    .unwrap_or_else(|| "(none)".into()),
            });
        }
        let path = self.timeline_path(name);
        self.write_id_file(&path, None)?;
        if let Some(parent) = path.parent() {
            pack::sync_dir(parent)?;
        }
        Ok(())
    }

    pub(crate) fn tracking_path(&self, peer: &str, name: &TimelineName) -> Result<PathBuf> {
        Ok(self.tracking_dir(peer)?.join(name.as_str()))
    }

    fn tracking_dir(&self, peer: &str) -> Result<PathBuf> {
        if peer.parse::<ivaldi_core::NodeId>().is_err() {
            return Err(RepoError::Refused(format!("{peer:?} is not a node id")));
        }
        Ok(self.dir.join("tracking").join(peer))
    }

    /// Records the head a peer last offered for a timeline. Tracking names keep
    /// every remote head reachable, so nothing a peer sent is ever lost.
    pub fn set_tracking(
        &self,
        lock: &RepoLock,
        peer: &str,
        name: &TimelineName,
        id: &ObjectId,
    ) -> Result<()> {
        heads_log::settle_pending(self, lock)?;
        if self.store.kind(id) != Some(ObjectKind::Seal) {
            return Err(RepoError::MissingObject(*id));
        }
        let path = self.tracking_path(peer, name)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        self.write_id_file(&path, Some(id))
    }

    /// The tracking names of one peer: timeline → head.
    pub fn tracking_of(&self, peer: &str) -> Result<BTreeMap<TimelineName, ObjectId>> {
        let root = self.tracking_dir(peer)?;
        let mut out = BTreeMap::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&dir),
            };
            for entry in entries {
                let entry = entry.at(&dir)?;
                let path = entry.path();
                if entry.file_type().at(&path)?.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path.strip_prefix(&root).ok().and_then(|r| r.to_str());
                let Some(name) = rel.and_then(|r| TimelineName::new(r).ok()) else {
                    continue;
                };
                if let Some(id) = self.read_id_file(&path)? {
                    out.insert(name, id);
                }
            }
        }
        Ok(out)
    }

    /// Every tracking name: (peer, timeline) → head.
    pub fn tracking(&self) -> Result<BTreeMap<(String, TimelineName), ObjectId>> {
        let mut out = BTreeMap::new();
        let base = self.dir.join("tracking");
        let peers = match fs::read_dir(&base) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).at(base),
        };
        for peer in peers {
            let peer = peer.at(&base)?;
            let Some(peer_name) = peer.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Only directories named by a node id hold tracking names
            // (`set_tracking` makes no others).
            if peer_name.parse::<ivaldi_core::NodeId>().is_err() {
                continue;
            }
            for (name, id) in self.tracking_of(&peer_name)? {
                out.insert((peer_name.clone(), name), id);
            }
        }
        Ok(out)
    }

    /// Keeps a head that is being replaced by something that does not descend
    /// from it, under `kept/<timeline>/<id>`, so no seal ever becomes unreachable.
    pub fn keep(&self, lock: &RepoLock, name: &TimelineName, id: &ObjectId) -> Result<()> {
        heads_log::settle_pending(self, lock)?;
        let path = self.dir.join("kept").join(name.as_str()).join(id.to_hex());
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        self.write_id_file(&path, Some(id))
    }

    /// Every kept head: (timeline, seal).
    pub fn kept(&self) -> Result<Vec<(TimelineName, ObjectId)>> {
        let base = self.dir.join("kept");
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(dir),
            };
            for entry in entries {
                let entry = entry.at(&dir)?;
                let path = entry.path();
                if entry.file_type().at(&path)?.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Some(parent) = path.parent().and_then(|p| p.strip_prefix(&base).ok()) else {
                    continue;
                };
                let (Some(rel), Some(id)) = (parent.to_str(), self.read_id_file(&path)?) else {
                    continue;
                };
                if let Ok(name) = TimelineName::new(rel) {
                    out.push((name, id));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Resolves a revision as a user types it ([`ivaldi_core::revision`]): `HEAD`
    /// or `@` (the working tree's base seal), a timeline name or a unique hex
    /// prefix (at least four digits) of a seal id, each followed by any `~N`
    /// and `^N` steps (`main~2^2`).
    pub fn resolve_seal(&self, spec: &str) -> Result<ObjectId> {
        let rev = Revision::parse(spec)?;
        let start = match &rev.base {
            Base::Head => self.base()?.ok_or_else(|| {
                RepoError::Refused(format!(
                    "{spec:?} names the working tree's base, and nothing is sealed yet"
                ))
            })?,
            Base::Name(name) => match self.resolve_base(name) {
                Err(RepoError::UnknownSeal(_)) if !rev.steps.is_empty() => {
                    return Err(RepoError::Refused(format!(
                        "revision {spec:?}: no timeline or seal matches {name:?}"
                    )));
                }
                r => r?,
            },
        };
        rev.walk(start, |id| self.store.seal(id).map(|s| s.parents))
            .map_err(|e| match e {
                WalkError::Lookup(e) => e,
                missing => RepoError::Refused(missing.to_string()),
            })
    }

    /// A revision's base: a timeline name, or a unique hex prefix of a seal id.
    fn resolve_base(&self, spec: &str) -> Result<ObjectId> {
        if let Ok(name) = TimelineName::new(spec)
            && let Some(id) = self.timeline(&name)?
        {
            return Ok(id);
        }
        if spec.len() >= 4 && id::is_hex(spec) {
            let lower = spec.to_ascii_lowercase();
            let matches: Vec<&ObjectId> = self
                .store
                .ids()
                .filter(|i| {
                    i.has_hex_prefix(&lower) && self.store.kind(i) == Some(ObjectKind::Seal)
                })
                .take(2)
                .collect();
            match matches.as_slice() {
                [one] => return Ok(**one),
                [] => {}
                _ => {
                    let count = self
                        .store
                        .ids()
                        .filter(|i| {
                            i.has_hex_prefix(&lower) && self.store.kind(i) == Some(ObjectKind::Seal)
                        })
                        .count();
                    return Err(RepoError::AmbiguousPrefix {
                        prefix: spec.to_owned(),
                        count,
                    });
                }
            }
        }
        Err(RepoError::UnknownSeal(spec.to_owned()))
    }

    /// Seals reachable from `heads`, newest first (by time, then id), each once.
    pub fn history(
        &self,
        heads: &[ObjectId],
        limit: Option<usize>,
    ) -> Result<Vec<(ObjectId, Seal)>> {
        let mut out = Vec::new();
        let mut seen = StdHashSet::new();
        let mut pending = std::collections::HashMap::new();
        // Newest first; among equal times, the one found first (children are found
        // before their parents), so a burst of seals within a second stays in order.
        let mut queue = BinaryHeap::new();
        let mut found = 0usize;
        for h in heads {
            if seen.insert(*h) {
                let s = self.store.seal(h)?;
                queue.push((s.time.seconds, std::cmp::Reverse(found), *h));
                found += 1;
                pending.insert(*h, s);
            }
        }
        while let Some((_, _, id)) = queue.pop() {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let Some(seal) = pending.remove(&id) else {
                continue;
            };
            for p in &seal.parents {
                if seen.insert(*p) {
                    let ps = self.store.seal(p)?;
                    queue.push((ps.time.seconds, std::cmp::Reverse(found), *p));
                    found += 1;
                    pending.insert(*p, ps);
                }
            }
            out.push((id, seal));
        }
        Ok(out)
    }

    /// Every ancestor of `id`, itself included.
    pub fn ancestors(&self, id: &ObjectId) -> Result<BTreeSet<ObjectId>> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![*id];
        while let Some(s) = stack.pop() {
            if seen.insert(s) {
                stack.extend(self.store.seal(&s)?.parents);
            }
        }
        Ok(seen)
    }

    /// Whether `a` is an ancestor of (or equal to) `b`.
    pub fn is_ancestor(&self, a: &ObjectId, b: &ObjectId) -> Result<bool> {
        Ok(self.ancestors(b)?.contains(a))
    }

    /// The best common ancestor of two seals: a common ancestor that no other
    /// common ancestor descends from, chosen by latest time when there are several.
    pub fn merge_base(&self, a: &ObjectId, b: &ObjectId) -> Result<Option<ObjectId>> {
        let ours = self.ancestors(a)?;
        let theirs = self.ancestors(b)?;
        let common: Vec<ObjectId> = ours.intersection(&theirs).copied().collect();
        let mut best: Option<(i64, ObjectId)> = None;
        for c in &common {
            // Skip any common ancestor that is a proper ancestor of another one.
            let dominated = common
                .iter()
                .any(|o| o != c && self.is_ancestor(c, o).unwrap_or(false));
            if dominated {
                continue;
            }
            let t = self.store.seal(c)?.time.seconds;
            if best.is_none_or(|(bt, bid)| (t, *c) > (bt, bid)) {
                best = Some((t, *c));
            }
        }
        Ok(best.map(|b| b.1))
    }
}

/// Whether a process is running (a zombie, dead but not yet reaped, is not).
pub(crate) fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The writer's pid if `name` is a temporary sibling made by [`write_atomic`]
/// (`.NAME.PID.tmp`).
fn atomic_tmp_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, pid) = inner.rsplit_once('.')?;
    pid.parse().ok()
}

/// Replaces `path` atomically: write a temporary sibling, optionally fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = File::create(&tmp).at(&tmp)?;
    f.write_all(bytes).at(&tmp)?;
    if durable {
        f.sync_all().at(&tmp)?;
    }
    drop(f);
    if name == "config.json" {
        // Both config files (the user's and the daemon's) share this point.
        fault::point("config.before-rename");
    } else if name == "format" {
        fault::point("upgrade.before-rename");
    }
    fs::rename(&tmp, path).at(path)?;
    if durable {
        pack::sync_dir(dir)?;
    }
    Ok(())
}

/// 128 random bits from the OS, hex-encoded: a fresh repository id.
fn random_id() -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut buf = [0u8; 16];
    use std::io::Read;
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .at(path)?;
    Ok(id::to_hex(&buf))
}

#[cfg(test)]
mod tests {
    use super::atomic_tmp_pid;

    #[test]
    fn atomic_write_leftovers_are_recognised_by_name() {
        assert_eq!(atomic_tmp_pid(".HEAD.1234.tmp"), Some(1234));
        assert_eq!(atomic_tmp_pid(".config.json.77.tmp"), Some(77));
        assert_eq!(atomic_tmp_pid(".main.9.tmp"), Some(9));
        // Real files and other temporaries are never taken for leftovers.
        for name in [
            "HEAD",
            "config.json",
            ".HEAD.tmp",
            ".HEAD.x1.tmp",
            "a.1.tmp",
            ".1.tmp2",
        ] {
            assert_eq!(atomic_tmp_pid(name), None, "{name}");
        }
    }
}
