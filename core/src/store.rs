//! The store callbacks: how the core reads a repository, and how it asks for writes.
//!
//! Reads are a synchronous trait ([`Store`]): they are cheap (an index probe and a
//! `pread`), the sync engine makes many of them, and a continuation per read would
//! make every machine harder to follow. Writes are effects: the core emits
//! [`StoreRequest`]s and continues when the shell reports the result through
//! `Node::handle_store_done`. That keeps slow disk work (fsyncing a pack) off the
//! event loop, lets the simulator delay or fail a write, or crash a node between
//! two writes, and keeps the core deterministic given the store's answers.
//! `docs/architecture.md` records this choice.

use std::collections::BTreeMap;

use crate::id::{IdMap, IdSet};
use thiserror::Error;

use crate::codec::Stored;
use crate::id::ObjectId;
use crate::object::{self, ObjectKind, Seal};
use crate::timeline::TimelineName;

/// A store failure, reported by the shell.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("object {0} is not in the store")]
    Missing(ObjectId),
    #[error("store failure: {0}")]
    Failed(String),
    /// An object a peer sent did not verify (a bad hash, a wrong kind, a
    /// delta that does not decode or whose base is missing). The peer's
    /// fault, not the store's: the core treats it as a protocol violation.
    #[error("invalid object from the peer: {0}")]
    Invalid(String),
}

/// Read access to one repository.
pub trait Store {
    /// The repository id; peers sync only equal ids.
    fn repo_id(&self) -> &str;
    /// Every timeline's head.
    fn heads(&self) -> Result<BTreeMap<TimelineName, ObjectId>, StoreError>;
    /// One timeline's head (a store may answer it more cheaply than [`Store::heads`]).
    fn head(&self, timeline: &TimelineName) -> Option<ObjectId> {
        self.heads().ok()?.get(timeline).copied()
    }
    /// Whether an object is present (and therefore, by the closure invariant, all
    /// it refers to).
    fn has(&self, id: &ObjectId) -> bool;
    /// An object's canonical encoding.
    fn get(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError>;

    /// The resume record last written for `peer` by [`StoreRequest::Resume`]:
    /// roots of objects that landed from a pull that did not finish. Lets a
    /// pull cut by a crash resume after a restart. A store that does not
    /// persist records answers nothing, which only costs a full resend.
    fn resume_hints(&self, _peer: &str) -> Vec<ObjectId> {
        Vec::new()
    }

    /// The tracking names recorded for `peer` ([`RefName::Tracking`]): the
    /// heads last seen from it. Read once per peer per run, so a pull need not
    /// rewrite the ones that did not move. A store that answers nothing only
    /// costs rewriting them.
    fn tracking(&self, _peer: &str) -> BTreeMap<TimelineName, ObjectId> {
        BTreeMap::new()
    }

    /// An object as stored, so a server can send compressed and delta forms
    /// as they are. A raw answer means "compression does not pay" and is sent
    /// raw; a store that keeps encodings whole compresses them here.
    fn get_stored(&self, id: &ObjectId) -> Result<Stored, StoreError> {
        let raw = self.get(id)?;
        let kind = object::kind_of(&raw).map_err(|e| StoreError::Failed(format!("{id}: {e}")))?;
        Stored::encode(kind, &raw, None)
            .ok_or_else(|| StoreError::Failed(format!("object {id} is too large")))
    }

    /// An object's kind, without reading its content where the store can.
    fn kind(&self, id: &ObjectId) -> Option<ObjectKind> {
        self.get(id).ok().and_then(|b| object::kind_of(&b).ok())
    }

    /// Reads and decodes a seal.
    fn seal(&self, id: &ObjectId) -> Result<Seal, StoreError> {
        let raw = self.get(id)?;
        Seal::decode(&raw).map_err(|e| StoreError::Failed(format!("seal {id}: {e}")))
    }
}

/// Which reference a head update moves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefName {
    /// A timeline of the repository.
    Timeline(TimelineName),
    /// The last head seen from a peer for a timeline, kept so nothing a peer
    /// offered is ever lost. Tracking names are overwritten without a check.
    Tracking {
        peer: String,
        timeline: TimelineName,
    },
    /// A head replaced by a strategy, kept so it stays reachable. Never removed by
    /// the core; `new` is the seal kept.
    Kept { timeline: TimelineName },
}

/// One reference change, applied after the batch's objects have landed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadUpdate {
    pub name: RefName,
    /// For timelines: the head the core based its decision on; the update must be
    /// refused if the head is no longer this (compare-and-set). `None` means the
    /// timeline must not exist yet.
    pub expected: Option<ObjectId>,
    pub new: ObjectId,
}

/// Writes the core asks the shell to perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreRequest {
    /// Verified objects of batch `batch`, in landing order (children first). They
    /// need not be visible before `Land`.
    Put {
        batch: u64,
        objects: Vec<(ObjectId, Vec<u8>)>,
        /// Blobs as they arrived from a peer with `zstd-delta`, still in
        /// their stored form and NOT yet verified: the store decodes each
        /// (a delta's base is in the store, or earlier in the same pull),
        /// checks it against its id and kind, and fails the batch with
        /// [`StoreError::Invalid`] if one does not. Blobs have no children,
        /// so they may be written before `objects`. Decoding and hashing
        /// bulk data here keeps it off the thread that drives connections.
        blobs: Vec<(ObjectId, Stored)>,
        /// The compressed forms (zstd or delta) some of `objects` arrived in
        /// (verified by the core with the rest of `objects`): a store may
        /// keep them as they are instead of compressing those objects again.
        forms: Vec<(ObjectId, Stored)>,
    },
    /// Make the batch's objects durable and visible (checking closure), then apply
    /// `updates` in order. Answered by `Node::handle_store_done` with one result per
    /// update.
    Land {
        batch: u64,
        updates: Vec<HeadUpdate>,
    },
    /// Forget a batch that will not land (its sync failed).
    Abort { batch: u64 },
    /// Replace the resume record for `peer` (empty: delete it). Not a ref: the
    /// roots need not stay reachable (gc may remove them; the core checks
    /// `has` before naming one). Answered only on failure, like `Put`; losing
    /// it in a crash only costs a fuller resend.
    Resume { peer: String, roots: Vec<ObjectId> },
}

/// The outcome of one head update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateResult {
    Applied,
    /// The compare-and-set failed: the head had moved to this.
    Moved(Option<ObjectId>),
}

/// Decodes and verifies blobs that arrived in stored form
/// ([`StoreRequest::Put`]'s `blobs`), in order: a delta's base is found with
/// `lookup` (the store and its staged objects) or among the blobs before it.
/// The first that does not verify fails them all with [`StoreError::Invalid`].
pub fn resolve_blobs(
    blobs: Vec<(ObjectId, Stored)>,
    lookup: &dyn Fn(&ObjectId) -> Option<Vec<u8>>,
) -> Result<Vec<(ObjectId, Vec<u8>)>, StoreError> {
    let mut out: Vec<(ObjectId, Vec<u8>)> = Vec::with_capacity(blobs.len());
    let mut here: IdMap<usize> = IdMap::default();
    for (id, stored) in blobs {
        let base = match stored.base {
            Some(b) if stored.codec == crate::codec::Codec::Delta => {
                match here
                    .get(&b)
                    .map(|i| out[*i].1.clone())
                    .or_else(|| lookup(&b))
                {
                    Some(v) => Some(v),
                    None => {
                        return Err(StoreError::Invalid(format!(
                            "the delta base {b} of blob {id} is neither held nor sent before it"
                        )));
                    }
                }
            }
            _ => None,
        };
        let enc = stored
            .decode(base.as_deref())
            .map_err(|e| StoreError::Invalid(format!("blob {id}: {e}")))?;
        match object::verify(&id, &enc) {
            Ok(ObjectKind::Blob) => {}
            Ok(k) => {
                return Err(StoreError::Invalid(format!(
                    "{id} was sent as a blob but is a {k:?}"
                )));
            }
            Err(e) => return Err(StoreError::Invalid(format!("bad object {id}: {e}"))),
        }
        here.insert(id, out.len());
        out.push((id, enc));
    }
    Ok(out)
}

/// An in-memory store: the reference implementation of the store contract, used by
/// the core's tests and by the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    pub id: String,
    pub objects: IdMap<Vec<u8>>,
    pub timelines: BTreeMap<TimelineName, ObjectId>,
    pub tracking: BTreeMap<(String, TimelineName), ObjectId>,
    pub kept: std::collections::BTreeSet<(TimelineName, ObjectId)>,
    /// Batches put but not landed.
    pub staged: BTreeMap<u64, Vec<(ObjectId, Vec<u8>)>>,
    /// Resume records by peer ([`StoreRequest::Resume`]).
    pub resume: BTreeMap<String, Vec<ObjectId>>,
}

impl MemStore {
    /// An empty repository with the given id.
    pub fn new(id: &str) -> Self {
        MemStore {
            id: id.to_owned(),
            ..Default::default()
        }
    }

    /// Adds an object directly (for building test histories); the caller keeps
    /// closure by adding children first.
    pub fn insert(&mut self, encoding: Vec<u8>) -> ObjectId {
        let id = ObjectId::hash(&encoding);
        self.objects.insert(id, encoding);
        id
    }

    /// Performs a write request; returns the per-update results for `Land`.
    pub fn apply(&mut self, req: StoreRequest) -> Result<Vec<UpdateResult>, StoreError> {
        match req {
            StoreRequest::Put {
                batch,
                objects,
                blobs,
                forms: _,
            } => {
                let staged = self.staged.entry(batch).or_default();
                let held: IdMap<usize> = staged.iter().enumerate().map(|(i, o)| (o.0, i)).collect();
                let resolved = resolve_blobs(blobs, &|b| {
                    self.objects
                        .get(b)
                        .cloned()
                        .or_else(|| held.get(b).map(|i| staged[*i].1.clone()))
                })?;
                staged.extend(resolved);
                staged.extend(objects);
                Ok(Vec::new())
            }
            StoreRequest::Abort { batch } => {
                self.staged.remove(&batch);
                Ok(Vec::new())
            }
            StoreRequest::Resume { peer, roots } => {
                if roots.is_empty() {
                    self.resume.remove(&peer);
                } else {
                    self.resume.insert(peer, roots);
                }
                Ok(Vec::new())
            }
            StoreRequest::Land { batch, updates } => {
                let staged = self.staged.remove(&batch).unwrap_or_default();
                let ids: IdSet = staged.iter().map(|o| o.0).collect();
                for (id, bytes) in &staged {
                    if object::kind_of(bytes) == Ok(ObjectKind::Blob) {
                        continue;
                    }
                    let obj = object::Object::decode(bytes)
                        .map_err(|e| StoreError::Failed(format!("{id}: {e}")))?;
                    for child in obj.children() {
                        if !self.objects.contains_key(&child) && !ids.contains(&child) {
                            return Err(StoreError::Failed(format!(
                                "closure: {id} refers to missing {child}"
                            )));
                        }
                    }
                }
                self.objects.extend(staged);
                let mut results = Vec::with_capacity(updates.len());
                for u in updates {
                    if self.kind(&u.new) != Some(ObjectKind::Seal) {
                        return Err(StoreError::Missing(u.new));
                    }
                    match u.name {
                        RefName::Tracking { peer, timeline } => {
                            self.tracking.insert((peer, timeline), u.new);
                            results.push(UpdateResult::Applied);
                        }
                        RefName::Kept { timeline } => {
                            self.kept.insert((timeline, u.new));
                            results.push(UpdateResult::Applied);
                        }
                        RefName::Timeline(t) => {
                            let cur = self.timelines.get(&t).copied();
                            if cur == u.expected {
                                self.timelines.insert(t, u.new);
                                results.push(UpdateResult::Applied);
                            } else {
                                results.push(UpdateResult::Moved(cur));
                            }
                        }
                    }
                }
                Ok(results)
            }
        }
    }

    /// The kind of a stored object.
    pub fn kind(&self, id: &ObjectId) -> Option<ObjectKind> {
        self.objects.get(id).and_then(|b| object::kind_of(b).ok())
    }
}

impl Store for MemStore {
    fn repo_id(&self) -> &str {
        &self.id
    }
    fn heads(&self) -> Result<BTreeMap<TimelineName, ObjectId>, StoreError> {
        Ok(self.timelines.clone())
    }
    fn has(&self, id: &ObjectId) -> bool {
        self.objects.contains_key(id)
    }
    fn get(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        self.objects
            .get(id)
            .cloned()
            .ok_or(StoreError::Missing(*id))
    }
    fn resume_hints(&self, peer: &str) -> Vec<ObjectId> {
        self.resume.get(peer).cloned().unwrap_or_default()
    }
    fn tracking(&self, peer: &str) -> BTreeMap<TimelineName, ObjectId> {
        self.tracking
            .iter()
            .filter(|((p, _), _)| p == peer)
            .map(|((_, t), h)| (t.clone(), *h))
            .collect()
    }
}
