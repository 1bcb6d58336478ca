//! The simulated store: an in-memory repository that implements the core's store
//! contract and can misbehave on request.
//!
//! - **Durable** state (landed objects, timelines, tracking and any other refs)
//!   survives a crash; **staged** batches (put, not landed) do not.
//! - `Land` checks closure and applies head updates by compare-and-set, like
//!   [`MemStore`](ivaldi_core::store::MemStore). It can be made to fail (an
//!   injected error: nothing is applied), or be cut short by a crash after its
//!   objects and some of its head updates (`LandOutcome::Partial`).
//! - Reads (`get`, `seal`) can fail at a configured rate.
//!
//! Object bytes are interned in a [`Pool`] shared by every store of a run, so a
//! large file replicated on 200 nodes is held once.
//!
//! Every mutation returns a [`Changes`] record: the new objects and the ref moves,
//! which the invariant checker uses to stay incremental.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use ivaldi_core::id::{IdMap, IdSet, ObjectId};
use ivaldi_core::object::{self, ObjectKind, Seal};
use ivaldi_core::store::{HeadUpdate, RefName, Store, StoreError, UpdateResult};
use ivaldi_core::timeline::TimelineName;

/// Object bytes shared by every store of a run, by id.
#[derive(Default)]
pub struct Pool {
    objects: IdMap<Rc<[u8]>>,
    bytes: usize,
}

impl Pool {
    /// The shared copy of an object, adding it if new.
    pub fn intern(&mut self, id: ObjectId, bytes: Vec<u8>) -> Rc<[u8]> {
        if let Some(b) = self.objects.get(&id) {
            return b.clone();
        }
        self.bytes += bytes.len();
        let rc: Rc<[u8]> = Rc::from(bytes);
        self.objects.insert(id, rc.clone());
        rc
    }

    /// Distinct objects and bytes held.
    pub fn size(&self) -> (usize, usize) {
        (self.objects.len(), self.bytes)
    }
}

/// Injected store misbehaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreFaults {
    /// `Land` fails with this probability (parts per million).
    pub land_fail_ppm: u32,
    /// `get`/`seal` fail with this probability (parts per million).
    pub read_fail_ppm: u32,
    /// Each write completes up to this many microseconds after the previous one.
    pub max_delay_us: u64,
}

/// One ref that moved: `(name, old, new)`.
pub type RefMove = (RefName, Option<ObjectId>, ObjectId);

/// What a mutation did, for the invariant checker.
#[derive(Debug, Default)]
pub struct Changes {
    /// Objects that were not in the store before.
    pub new_objects: Vec<ObjectId>,
    /// New seals with their parents.
    pub seals: Vec<(ObjectId, Vec<ObjectId>)>,
    pub moves: Vec<RefMove>,
    /// The request would have broken closure (or named a missing seal): refused.
    pub refused: Option<String>,
}

/// How a `Land` is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LandMode {
    Normal,
    /// An injected error: nothing is applied, the batch is dropped.
    Fail,
    /// A crash in the middle: objects land, then only this many head updates.
    Partial(usize),
}

/// A simulated repository.
pub struct SimStore {
    repo: String,
    objects: IdMap<Rc<[u8]>>,
    timelines: BTreeMap<TimelineName, ObjectId>,
    /// Tracking refs: overwritten without a check.
    tracking: BTreeMap<RefName, ObjectId>,
    /// Every other kind of ref (heads a strategy replaced, `RefName::Kept`, and
    /// whatever the core adds later): a set, never overwritten or removed, so
    /// everything they ever named stays reachable.
    kept: BTreeSet<(RefName, ObjectId)>,
    staged: BTreeMap<u64, Vec<(ObjectId, Vec<u8>)>>,
    staged_bytes: usize,
    pub faults: StoreFaults,
    read_rng: Cell<u64>,
    reads_failed: Cell<u64>,
}

impl SimStore {
    /// An empty repository with the given id; `seed` drives read faults.
    pub fn new(repo: &str, seed: u64) -> SimStore {
        SimStore {
            repo: repo.to_owned(),
            objects: IdMap::default(),
            timelines: BTreeMap::new(),
            tracking: BTreeMap::new(),
            kept: BTreeSet::new(),
            staged: BTreeMap::new(),
            staged_bytes: 0,
            faults: StoreFaults::default(),
            read_rng: Cell::new(seed | 1),
            reads_failed: Cell::new(0),
        }
    }

    /// Timelines and their heads.
    pub fn timelines(&self) -> &BTreeMap<TimelineName, ObjectId> {
        &self.timelines
    }

    /// Every ref: timelines, then tracking refs, then kept (and other) refs.
    pub fn refs(&self) -> impl Iterator<Item = (RefName, ObjectId)> + '_ {
        self.timelines
            .iter()
            .map(|(t, id)| (RefName::Timeline(t.clone()), *id))
            .chain(self.tracking.iter().map(|(r, id)| (r.clone(), *id)))
            .chain(self.kept.iter().cloned())
    }

    /// Ref targets only.
    pub fn ref_targets(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.timelines
            .values()
            .chain(self.tracking.values())
            .chain(self.kept.iter().map(|(_, id)| id))
            .copied()
    }

    /// Whether the node has this timeline, or a peer's head of it.
    pub fn knows_timeline(&self, t: &TimelineName) -> bool {
        self.timelines.contains_key(t)
            || self.tracking.keys().any(|r| match r {
                RefName::Tracking { timeline, .. } => timeline == t,
                _ => false,
            })
    }

    /// Number of objects held.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Staged (unflushed) batches and their bytes.
    pub fn staged(&self) -> (usize, usize) {
        (self.staged.len(), self.staged_bytes)
    }

    /// Reads that failed by injection.
    pub fn reads_failed(&self) -> u64 {
        self.reads_failed.get()
    }

    /// A crash: staged batches are lost. Returns how many.
    pub fn crash(&mut self) -> usize {
        let n = self.staged.len();
        self.staged.clear();
        self.staged_bytes = 0;
        n
    }

    /// `Put`: stage objects of a batch.
    pub fn put(&mut self, batch: u64, objects: Vec<(ObjectId, Vec<u8>)>) {
        self.staged_bytes += objects.iter().map(|o| o.1.len()).sum::<usize>();
        self.staged.entry(batch).or_default().extend(objects);
    }

    /// An object's encoding, landed or staged in `batch`: where the blobs of a
    /// `zstd-delta` pull find their delta bases.
    pub fn lookup(&self, batch: u64, id: &ObjectId) -> Option<Vec<u8>> {
        if let Some(b) = self.objects.get(id) {
            return Some(b.to_vec());
        }
        self.staged
            .get(&batch)?
            .iter()
            .rev()
            .find(|o| o.0 == *id)
            .map(|o| o.1.clone())
    }

    /// `Abort`: drop a staged batch.
    pub fn abort(&mut self, batch: u64) {
        if let Some(b) = self.staged.remove(&batch) {
            self.staged_bytes -= b.iter().map(|o| o.1.len()).sum::<usize>();
        }
    }

    /// `Land`: make a batch durable and visible (closure checked), then apply the
    /// head updates in order.
    pub fn land(
        &mut self,
        batch: u64,
        updates: Vec<HeadUpdate>,
        pool: &mut Pool,
        mode: LandMode,
    ) -> (Result<Vec<UpdateResult>, StoreError>, Changes) {
        let staged = self.staged.remove(&batch).unwrap_or_default();
        self.staged_bytes -= staged.iter().map(|o| o.1.len()).sum::<usize>();
        let mut changes = Changes::default();
        if mode == LandMode::Fail {
            return (
                Err(StoreError::Failed("injected store failure".into())),
                changes,
            );
        }
        let incoming = self.new_objects(staged, pool);
        if let Err(e) = self.check_closure(&incoming, &mut changes) {
            changes.seals.clear();
            changes.refused = Some(e.clone());
            return (Err(StoreError::Failed(e)), changes);
        }
        // Every update must name a seal the store will hold.
        for u in &updates {
            let present = self.objects.get(&u.new).map(|b| &b[..]).or_else(|| {
                incoming
                    .iter()
                    .find(|(id, _)| *id == u.new)
                    .map(|(_, b)| &b[..])
            });
            if present.and_then(|b| object::kind_of(b).ok()) != Some(ObjectKind::Seal) {
                changes.seals.clear();
                changes.refused = Some(format!("head update {:?} names missing seal", u.name));
                return (Err(StoreError::Missing(u.new)), changes);
            }
        }
        for (id, b) in incoming {
            if self.objects.insert(id, b).is_none() {
                changes.new_objects.push(id);
            }
        }
        let limit = match mode {
            LandMode::Partial(k) => k.min(updates.len()),
            _ => updates.len(),
        };
        let mut results = Vec::with_capacity(updates.len());
        for u in updates.into_iter().take(limit) {
            match u.name {
                RefName::Timeline(t) => {
                    let cur = self.timelines.get(&t).copied();
                    if cur == u.expected {
                        self.timelines.insert(t.clone(), u.new);
                        if cur != Some(u.new) {
                            changes.moves.push((RefName::Timeline(t), cur, u.new));
                        }
                        results.push(UpdateResult::Applied);
                    } else {
                        results.push(UpdateResult::Moved(cur));
                    }
                }
                name @ RefName::Tracking { .. } => {
                    let old = self.tracking.insert(name.clone(), u.new);
                    if old != Some(u.new) {
                        changes.moves.push((name, old, u.new));
                    }
                    results.push(UpdateResult::Applied);
                }
                other => {
                    // Added, never moved: nothing it named before is dropped.
                    self.kept.insert((other, u.new));
                    results.push(UpdateResult::Applied);
                }
            }
        }
        (Ok(results), changes)
    }

    /// A user's local write (a seal being made): objects children first, then
    /// the timeline moved to `head`. Closure is checked like a landing.
    pub fn commit_local(
        &mut self,
        objects: Vec<(ObjectId, Vec<u8>)>,
        timeline: TimelineName,
        head: ObjectId,
        pool: &mut Pool,
    ) -> Changes {
        let mut changes = Changes::default();
        let incoming = self.new_objects(objects, pool);
        if let Err(e) = self.check_closure(&incoming, &mut changes) {
            changes.refused = Some(e);
            return changes;
        }
        for (id, b) in incoming {
            if self.objects.insert(id, b).is_none() {
                changes.new_objects.push(id);
            }
        }
        let old = self.timelines.insert(timeline.clone(), head);
        if old != Some(head) {
            changes.moves.push((RefName::Timeline(timeline), old, head));
        }
        changes
    }

    /// The objects this store does not hold yet, interned in the shared pool.
    fn new_objects(
        &self,
        objects: Vec<(ObjectId, Vec<u8>)>,
        pool: &mut Pool,
    ) -> Vec<(ObjectId, Rc<[u8]>)> {
        objects
            .into_iter()
            .filter(|(id, _)| !self.objects.contains_key(id))
            .map(|(id, b)| {
                let rc = pool.intern(id, b);
                (id, rc)
            })
            .collect()
    }

    /// Checks that every incoming object refers only to objects already held or
    /// incoming; records incoming seals' parents.
    fn check_closure(
        &self,
        incoming: &[(ObjectId, Rc<[u8]>)],
        changes: &mut Changes,
    ) -> Result<(), String> {
        let ids: IdSet = incoming.iter().map(|o| o.0).collect();
        for (id, bytes) in incoming {
            let kind = object::kind_of(bytes).map_err(|e| format!("{id}: {e}"))?;
            if kind == ObjectKind::Blob {
                continue;
            }
            let obj = object::Object::decode(bytes).map_err(|e| format!("{id}: {e}"))?;
            for child in obj.children() {
                if !self.objects.contains_key(&child) && !ids.contains(&child) {
                    return Err(format!(
                        "closure: {} {} refers to missing {}",
                        kind.name(),
                        id.short(),
                        child.short()
                    ));
                }
            }
            if let object::Object::Seal(s) = obj {
                changes.seals.push((*id, s.parents));
            }
        }
        Ok(())
    }

    /// The raw bytes of an object, without copying or fault injection.
    pub fn raw(&self, id: &ObjectId) -> Option<&[u8]> {
        self.objects.get(id).map(|b| &b[..])
    }

    fn read_fault(&self) -> bool {
        if self.faults.read_fail_ppm == 0 {
            return false;
        }
        // splitmix64: the read path has only `&self`.
        let mut z = self.read_rng.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.read_rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let hit = z % 1_000_000 < u64::from(self.faults.read_fail_ppm);
        if hit {
            self.reads_failed.set(self.reads_failed.get() + 1);
        }
        hit
    }
}

impl Store for SimStore {
    fn repo_id(&self) -> &str {
        &self.repo
    }

    fn heads(&self) -> Result<BTreeMap<TimelineName, ObjectId>, StoreError> {
        Ok(self.timelines.clone())
    }

    fn has(&self, id: &ObjectId) -> bool {
        self.objects.contains_key(id)
    }

    fn get(&self, id: &ObjectId) -> Result<Vec<u8>, StoreError> {
        if self.read_fault() {
            return Err(StoreError::Failed(format!(
                "injected read failure on {}",
                id.short()
            )));
        }
        self.objects
            .get(id)
            .map(|b| b.to_vec())
            .ok_or(StoreError::Missing(*id))
    }

    fn seal(&self, id: &ObjectId) -> Result<Seal, StoreError> {
        if self.read_fault() {
            return Err(StoreError::Failed(format!(
                "injected read failure on {}",
                id.short()
            )));
        }
        let raw = self.objects.get(id).ok_or(StoreError::Missing(*id))?;
        Seal::decode(raw).map_err(|e| StoreError::Failed(format!("seal {id}: {e}")))
    }
}
