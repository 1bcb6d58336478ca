//! The on-disk repository behind the core's store contract.
//!
//! [`DiskStore`] answers the core's reads from the repository (index probe plus
//! `pread`); [`DiskWriter`] carries out its writes. The daemon runs the writer on
//! its own thread, so fsyncing a pack never stalls heartbeats: a batch's objects
//! stream into a temporary pack as they arrive, and `Land` renames the pack into
//! place (after the closure check) and then moves heads by compare-and-set.
//!
//! Other processes (`ivaldi seal`, an import) add packs too. A seal writes its
//! pack before it moves the head, so the store reloads its pack list after
//! reading a head it cannot find, and once more before it answers that an
//! object is missing: every head it reports, and every object under one, can
//! be read (`DiskStore::heads`, `DiskStore::get`).

use std::cell::{Ref, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hashbrown::HashMap;
use ivaldi_core::store::{RefName, Store, StoreError, StoreRequest, UpdateResult};
use ivaldi_core::{ObjectId, TimelineName};

use crate::heads_cache::HeadsCache;
use crate::repo::{PackWriter, RepoError, Repository, heads_log};
use ivaldi_core::object::ObjectKind;

fn failed(e: RepoError) -> StoreError {
    StoreError::Failed(e.to_string())
}

/// A read failure as the core may pass it on to a peer: the serve path puts a
/// store error into the refusal it sends. The detail (file paths, OS errors)
/// is the local user's business, so it goes to the local log and the peer
/// gets only a generic reason.
fn read_failed(e: RepoError) -> StoreError {
    let reason = match &e {
        RepoError::CorruptObject { .. } | RepoError::CorruptPack { .. } => {
            "damaged data in the serving repository"
        }
        RepoError::Decode(_) | RepoError::Verify(_) | RepoError::WrongKind { .. } => {
            "an object in the serving repository is invalid"
        }
        RepoError::BadFile { .. } => "a damaged file in the serving repository",
        _ => "the serving repository could not be read",
    };
    tracing::warn!(error = %e, "store read failed; the peer is told only: {reason}");
    StoreError::Failed(reason.into())
}

/// Read access for the core.
pub struct DiskStore {
    /// In a cell: a read that misses reloads the pack list (`&self` reads).
    repo: RefCell<Repository>,
    id: String,
    /// The `objects/` directory's modification time at the last reload: a
    /// negative `has` reloads only when a pack was added or removed since.
    seen_mtime: RefCell<Option<SystemTime>>,
    /// Every head, read once (`heads_cache`): a sync costs what moved, not
    /// how many timelines exist.
    heads: HeadsCache,
}

impl DiskStore {
    /// Opens the repository at `root` for reading.
    pub fn open(root: &Path) -> Result<Self, RepoError> {
        let repo = Repository::open(root)?;
        let id = repo.info()?.id;
        let store = DiskStore {
            repo: RefCell::new(repo),
            id,
            seen_mtime: RefCell::new(None),
            heads: HeadsCache::default(),
        };
        store.note_mtime();
        Ok(store)
    }

    /// Picks up what another process changed (a local seal, a timeline
    /// command, `repair`): packs landed since the last look, and every head
    /// read again.
    pub fn refresh(&mut self) -> Result<(), RepoError> {
        self.heads.forget();
        self.reload()
    }

    /// Picks up packs this process's own [`DiskWriter`] landed. The heads it
    /// moved are already known if it shares this store's cache
    /// ([`DiskWriter::share_heads`]); otherwise they are read again.
    pub fn refresh_landed(&mut self) -> Result<(), RepoError> {
        self.reload()
    }

    /// The heads cache, for [`DiskWriter::share_heads`].
    pub fn heads_cache(&self) -> HeadsCache {
        self.heads.clone()
    }

    /// The repository.
    pub fn repo(&self) -> Ref<'_, Repository> {
        self.repo.borrow()
    }

    fn objects_mtime(&self) -> Option<SystemTime> {
        let dir = self.repo.borrow().store.dir().to_owned();
        std::fs::metadata(dir).and_then(|m| m.modified()).ok()
    }

    fn note_mtime(&self) {
        *self.seen_mtime.borrow_mut() = self.objects_mtime();
    }

    /// Reloads the pack list. The directory time is taken first, so a pack
    /// renamed in during the listing makes the next check reload again.
    fn reload(&self) -> Result<(), RepoError> {
        let mtime = self.objects_mtime();
        self.repo.borrow_mut().store.refresh()?;
        *self.seen_mtime.borrow_mut() = mtime;
        Ok(())
    }

    /// Reloads after a miss; a failure is logged and the miss stands.
    fn reload_on_miss(&self, why: &str) {
        if let Err(e) = self.reload() {
            tracing::warn!(error = %e, "cannot reload the pack list after {why}");
        }
    }

    /// Reloads only when `objects/` changed since the last reload.
    fn reload_if_changed(&self, why: &str) -> bool {
        let now = self.objects_mtime();
        if now.is_some() && now == *self.seen_mtime.borrow() {
            return false;
        }
        self.reload_on_miss(why);
        true
    }
}

impl Store for DiskStore {
    fn repo_id(&self) -> &str {
        &self.id
    }

    /// The heads, read before the pack list is reloaded: a head moved by
    /// another process names a seal whose pack was renamed in before, so
    /// after the reload every head reported is readable.
    fn heads(&self) -> Result<BTreeMap<TimelineName, ObjectId>, StoreError> {
        let heads = self.heads.heads(&self.repo.borrow()).map_err(read_failed)?;
        if heads
            .values()
            .any(|h| !self.repo.borrow().store.contains(h))
        {
            self.reload_on_miss("reading a new head");
        }
        Ok(heads)
    }

    fn head(&self, timeline: &TimelineName) -> Option<ObjectId> {
        let head = self
            .heads
            .head(&self.repo.borrow(), timeline)
            .ok()
            .flatten()?;
        if !self.repo.borrow().store.contains(&head) {
            self.reload_on_miss("reading a new head");
        }
        Some(head)
    }

    fn has(&self, id: &ObjectId) -> bool {
        // Each borrow ends with its statement: a reload borrows mutably.
        let held = self.repo.borrow().store.contains(id);
        if held || !self.reload_if_changed("an object was not found") {
            return held;
        }
        self.repo.borrow().store.contains(id)
    }

    fn get(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        let read = || self.repo.borrow().store.read_raw(id);
        let result = match read() {
            Err(RepoError::MissingObject(_)) => {
                self.reload_on_miss("an object was not found");
                read()
            }
            other => other,
        };
        match result {
            Ok(b) => Ok(b),
            Err(RepoError::MissingObject(i)) => Err(StoreError::Missing(i)),
            Err(e) => Err(read_failed(e)),
        }
    }

    fn get_stored(&self, id: &ObjectId) -> Result<ivaldi_core::codec::Stored, StoreError> {
        let read = || self.repo.borrow().store.read_stored_form(id);
        let result = match read() {
            Err(RepoError::MissingObject(_)) => {
                self.reload_on_miss("an object was not found");
                read()
            }
            other => other,
        };
        match result {
            Ok(s) => Ok(s),
            Err(RepoError::MissingObject(i)) => Err(StoreError::Missing(i)),
            Err(e) => Err(read_failed(e)),
        }
    }

    fn kind(&self, id: &ObjectId) -> Option<ObjectKind> {
        let kind = self.repo.borrow().store.kind(id);
        if kind.is_some() || !self.reload_if_changed("an object kind was not found") {
            return kind;
        }
        self.repo.borrow().store.kind(id)
    }

    /// The record `StoreRequest::Resume` wrote: one id a line. A missing,
    /// unreadable or garbled record reads as none (the pull then resends all);
    /// the core checks that each id is still held before naming it.
    fn resume_hints(&self, peer: &str) -> Vec<ObjectId> {
        let Some(path) = resume_path(&self.repo.borrow(), peer) else {
            return Vec::new();
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| l.trim().parse::<ObjectId>().ok())
            .take(ivaldi_core::sync::MAX_RESUME_HINTS)
            .collect()
    }

    /// `.ivaldi/tracking/<peer>/`: read when the peer connects. Unreadable
    /// names read as absent (the pull then rewrites them).
    fn tracking(&self, peer: &str) -> BTreeMap<TimelineName, ObjectId> {
        self.repo.borrow().tracking_of(peer).unwrap_or_default()
    }
}

/// Where the resume record for `peer` lives: `.ivaldi/p2p/resume/<node id>`.
/// Not a ref: gc ignores it, and an id it names that gc removed is simply not
/// offered. `None` for a peer name that is not a plain node id.
fn resume_path(repo: &Repository, peer: &str) -> Option<PathBuf> {
    let plain =
        !peer.is_empty() && peer.len() <= 128 && peer.bytes().all(|b| b.is_ascii_hexdigit());
    plain.then(|| repo.dot_dir().join("p2p").join("resume").join(peer))
}

/// A pull's objects land in checkpoints of about this size, so a transfer that
/// is interrupted (the daemon killed, the connection lost) keeps what arrived
/// before the last checkpoint on disk instead of dropping the whole batch.
/// Each costs fsyncs (see the core's `CHECKPOINT_BYTES`: half of it, so the
/// writer's own checkpoints land first); [`DiskWriter::set_checkpoint_bytes`]
/// changes it.
pub const CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;

/// Carries out the core's store requests against the repository.
pub struct DiskWriter {
    repo: Repository,
    batches: HashMap<u64, PackWriter>,
    /// Packs each unfinished batch has landed as checkpoints (file names), as
    /// recorded for gc in `tmp/pull-<pid>-<batch>.keep`.
    checkpoints: HashMap<u64, Vec<String>>,
    /// The reading store's heads cache, kept up to date by landings.
    heads: Option<HeadsCache>,
    checkpoint_bytes: u64,
}

impl DiskWriter {
    /// Opens its own handle on the repository at `root`.
    pub fn open(root: &Path) -> Result<Self, RepoError> {
        Ok(DiskWriter {
            repo: Repository::open(root)?,
            batches: HashMap::new(),
            checkpoints: HashMap::new(),
            heads: None,
            checkpoint_bytes: CHECKPOINT_BYTES,
        })
    }

    /// Lands a batch's closed prefix as a checkpoint every `bytes`.
    pub fn set_checkpoint_bytes(&mut self, bytes: u64) {
        self.checkpoint_bytes = bytes.max(1);
    }

    /// Keeps `cache` (a [`DiskStore`]'s) up to date with the heads this
    /// writer moves, so the store need not read every head after a landing.
    pub fn share_heads(&mut self, cache: HeadsCache) {
        self.heads = Some(cache);
    }

    /// The repository root, for messages.
    pub fn root(&self) -> PathBuf {
        self.repo.root().to_owned()
    }

    /// Performs one request. `Land` returns its answer for `handle_store_done`;
    /// `Put` and `Abort` return `None` unless they fail (a failed `Put` is reported
    /// against its batch, which will then not land).
    pub fn apply(
        &mut self,
        req: StoreRequest,
    ) -> Option<(u64, Result<Vec<UpdateResult>, StoreError>)> {
        match req {
            StoreRequest::Put {
                batch,
                objects,
                blobs,
                forms,
            } => {
                let writer = match self.batches.entry(batch) {
                    hashbrown::hash_map::Entry::Occupied(o) => o.into_mut(),
                    hashbrown::hash_map::Entry::Vacant(v) => {
                        // Forget objects `repair` took out since, so they are
                        // written again rather than skipped as held.
                        if let Err(e) = self.repo.store.refresh() {
                            return Some((batch, Err(failed(e))));
                        }
                        match self.repo.store.writer() {
                            Ok(w) => v.insert(w),
                            Err(e) => return Some((batch, Err(failed(e)))),
                        }
                    }
                };
                for (id, stored) in blobs {
                    if self.repo.store.contains(&id) {
                        continue;
                    }
                    // Decoded and verified here, off the connection thread;
                    // kept in the form it arrived in.
                    if let Err(e) = writer.add_received_blob(id, &stored, &self.repo.store) {
                        self.batches.remove(&batch);
                        let e = match e {
                            RepoError::Received(r) => StoreError::Invalid(r),
                            e => failed(e),
                        };
                        return Some((batch, Err(e)));
                    }
                }
                let forms: hashbrown::HashMap<ObjectId, ivaldi_core::codec::Stored> =
                    forms.into_iter().collect();
                for (id, bytes) in objects {
                    if self.repo.store.contains(&id) {
                        continue;
                    }
                    // The core verified every object; the writer checks kinds and
                    // sizes and records children for the closure check, and
                    // keeps a delta form as it came when it can.
                    let added = match forms.get(&id) {
                        Some(form) => writer.add_with_form(id, &bytes, form, &self.repo.store),
                        None => writer.add_trusted(id, &bytes),
                    };
                    if let Err(e) = added {
                        self.batches.remove(&batch);
                        return Some((batch, Err(failed(e))));
                    }
                }
                let full = writer.bytes() >= self.checkpoint_bytes;
                if full && self.repo.store.is_closed(writer) {
                    // Land what arrived so far (closed, so it keeps the closure
                    // invariant; unreachable until the heads move, so gc may
                    // collect it if the pull is never finished). The rest of
                    // the batch goes to a fresh pack.
                    if let Some(w) = self.batches.remove(&batch)
                        && let Err(e) = self.checkpoint(batch, w)
                    {
                        return Some((batch, Err(failed(e))));
                    }
                }
                None
            }
            StoreRequest::Abort { batch } => {
                self.batches.remove(&batch);
                self.forget_checkpoints(batch);
                None
            }
            StoreRequest::Resume { peer, roots } => {
                // Losing the record costs only a fuller resend: log, go on.
                if let Err(e) = self.write_resume(&peer, &roots) {
                    tracing::warn!(peer, error = %e, "cannot write the resume record");
                }
                None
            }
            StoreRequest::Land { batch, updates } => {
                let result = self.land(batch, updates);
                self.forget_checkpoints(batch);
                Some((batch, result))
            }
        }
    }

    /// Makes logged head updates durable (`repo::heads_log`): the daemon calls
    /// it when no store request is waiting. Skipped while another writer holds
    /// the lock (it settles them itself before changing a head).
    pub fn settle_heads(&mut self) {
        if !heads_log::pending(&self.repo) {
            return;
        }
        let Ok(lock) = crate::repo::RepoLock::acquire(
            &self.repo.dot_dir().join("lock"),
            std::time::Duration::ZERO,
        ) else {
            return;
        };
        // Settling rewrites heads with the values they have: still current.
        let current = self.heads.as_ref().is_some_and(HeadsCache::is_current);
        if let Err(e) = heads_log::settle(&self.repo, &lock) {
            tracing::warn!(error = %e, "cannot settle logged head updates");
        }
        if let Some(c) = &self.heads {
            c.landed(&self.repo, current, &[]);
        }
    }

    /// Lands a closed prefix of `batch` as a pack and records it, so `gc` keeps
    /// it while this process lives (its objects are unreachable until the
    /// batch's heads move).
    fn checkpoint(&mut self, batch: u64, writer: PackWriter) -> Result<(), RepoError> {
        let _lock = self.repo.lock()?;
        let n = self.repo.store.commit(writer)?;
        let packs = self.checkpoints.entry(batch).or_default();
        if let Some(name) = self
            .repo
            .store
            .pack_paths()
            .last()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
        {
            packs.push(name.to_owned());
        }
        let record = crate::repo::gc::checkpoint_record(&self.repo, batch);
        crate::repo::write_atomic(&record, packs.join("\n").as_bytes(), true)?;
        crate::repo::fault::point("sync.checkpoint-landed");
        tracing::debug!(objects = n, batch, "pull checkpoint landed");
        Ok(())
    }

    /// The batch landed or was given up: its checkpoints need no protection.
    fn forget_checkpoints(&mut self, batch: u64) {
        if self.checkpoints.remove(&batch).is_some() {
            let record = crate::repo::gc::checkpoint_record(&self.repo, batch);
            if let Err(e) = std::fs::remove_file(&record) {
                tracing::warn!(path = %record.display(), error = %e, "cannot remove a checkpoint record");
            }
        }
    }

    /// Replaces (or, for no roots, removes) the resume record for `peer`,
    /// atomically: a crash leaves the old record or the new.
    fn write_resume(&self, peer: &str, roots: &[ObjectId]) -> Result<(), RepoError> {
        let Some(path) = resume_path(&self.repo, peer) else {
            return Ok(());
        };
        if roots.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(RepoError::Io { path, source: e })
                }
                _ => Ok(()),
            };
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RepoError::Io {
                path: dir.to_owned(),
                source: e,
            })?;
        }
        let mut text = String::with_capacity(roots.len() * 65);
        for id in roots {
            text.push_str(&id.to_hex());
            text.push('\n');
        }
        crate::repo::write_atomic(&path, text.as_bytes(), true)
    }

    fn land(
        &mut self,
        batch: u64,
        updates: Vec<ivaldi_core::store::HeadUpdate>,
    ) -> Result<Vec<UpdateResult>, StoreError> {
        let lock = self.repo.lock().map_err(failed)?;
        if let Some(writer) = self.batches.remove(&batch) {
            self.repo.store.commit(writer).map_err(failed)?;
        }
        crate::repo::fault::point("sync.objects-landed");
        // A landing that moves no head is a checkpoint of a pull still
        // running: repacking now would rewrite the transfer's own packs
        // again at every checkpoint (and make the reading store reload its
        // indexes); the pull's last landing repacks once.
        let checkpoint = updates.is_empty();
        // Compare-and-set against the heads as this batch leaves them, then
        // move them all as one logged batch (`repo::heads_log`).
        let mut after: HashMap<TimelineName, Option<ObjectId>> = HashMap::new();
        let mut writes = Vec::with_capacity(updates.len());
        let mut results = Vec::with_capacity(updates.len());
        for u in updates {
            if self.repo.store.kind(&u.new) != Some(ObjectKind::Seal) {
                return Err(StoreError::Missing(u.new));
            }
            if let RefName::Timeline(t) = &u.name {
                let current = match after.get(t) {
                    Some(c) => *c,
                    None => self.repo.timeline(t).map_err(failed)?,
                };
                if current != u.expected {
                    results.push(UpdateResult::Moved(current));
                    continue;
                }
                after.insert(t.clone(), Some(u.new));
            }
            let rel = heads_log::ref_path(&self.repo, &u.name, &u.new).map_err(failed)?;
            writes.push((rel, u.new));
            results.push(UpdateResult::Applied);
        }
        let current = self.heads.as_ref().is_some_and(HeadsCache::is_current);
        let landed = heads_log::land(&self.repo, &lock, &writes).map_err(failed);
        if let Some(c) = &self.heads {
            let moved: Vec<(TimelineName, ObjectId)> = after
                .into_iter()
                .filter_map(|(t, h)| Some((t, h?)))
                .collect();
            c.landed(&self.repo, current && landed.is_ok(), &moved);
        }
        landed?;
        // Under the same lock: keep the pack count logarithmic (`repo::repack`).
        if !checkpoint {
            crate::repo::repack::after_write(&mut self.repo, &lock);
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_another_process_wrote_is_read_without_an_explicit_refresh() {
        let tmp = tempfile::tempdir().expect("tempdir");
        Repository::forge(tmp.path()).expect("forge");
        let store = DiskStore::open(tmp.path()).expect("open");
        // Another process (`ivaldi seal`) writes two packs after the daemon
        // opened the store.
        let mut other = Repository::open(tmp.path()).expect("open again");
        let mut add = |content: &[u8]| {
            let mut w = other.store.writer().expect("writer");
            let id = w.add_blob(content).expect("blob");
            other.store.commit(w).expect("commit");
            id
        };
        let (one, two) = (add(b"one"), add(b"two"));
        assert_eq!(store.get(&one).map(|b| ObjectId::hash(&b)), Ok(one));
        let three = add(b"three");
        assert!(store.has(&three));
        assert!(store.has(&two));
        // A miss that stays a miss is still reported as one.
        let absent = ObjectId::hash(b"never written");
        assert!(!store.has(&absent));
        assert_eq!(store.get(&absent), Err(StoreError::Missing(absent)));
    }

    #[test]
    fn a_store_error_a_peer_may_see_names_no_local_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut repo = Repository::forge(tmp.path()).expect("forge");
        let mut w = repo.store.writer().expect("writer");
        let id = w.add_blob(b"some content").expect("blob");
        repo.store.commit(w).expect("commit");
        let pack = repo.store.pack_paths()[0].clone();
        let mut bytes = std::fs::read(&pack).expect("read pack");
        bytes[10] ^= 0x40;
        std::fs::write(&pack, bytes).expect("write pack");
        // Locally the error says where to look...
        let local = repo.store.read_raw(&id).expect_err("damaged");
        assert!(
            local.to_string().contains(&*pack.to_string_lossy()),
            "{local}"
        );
        // ...but what the store hands the core (which may send it on) does not.
        let store = DiskStore::open(tmp.path()).expect("open");
        let err = store.get(&id).expect_err("damaged").to_string();
        assert!(!err.contains('/'), "{err}");
        assert!(!err.contains(&*tmp.path().to_string_lossy()), "{err}");
        assert!(err.contains("damaged"), "{err}");

        // A garbled timeline file (a BadFile naming its path) reads the same way.
        let tl = repo.dot_dir().join("timelines").join("main");
        std::fs::write(&tl, "not an id\n").expect("write timeline");
        let err = store.heads().expect_err("garbled").to_string();
        assert!(!err.contains('/'), "{err}");
    }
}
