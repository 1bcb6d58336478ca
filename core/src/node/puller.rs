//! The puller: which pulls run, which wait for a slot, and what each store
//! batch the node asked for is for.
//!
//! A pull asks a peer for what this node lacks ([`Node::request_pull`]),
//! receives objects in batches, lands them in checkpoints on the way
//! ([`CHECKPOINT_BYTES`]) and finally lands the last batch with its head
//! updates (`landing.rs`). At most `max_concurrent_syncs` pulls run; the rest
//! wait with `pull_wanted` on their connection and start from the next tick
//! that has the store ([`Puller::restart`]).
//!
//! Every batch id the node hands the store is registered here with its
//! purpose ([`Batch`]), so an answer is routed by one look-up.

use super::CloseReason;
use std::collections::{BTreeMap, BTreeSet};

use super::conn::{self, Conn, Pull, PullState};
use super::lz4::decompress;
use super::refetch::Refetch;
use super::{CommandId, Conflict, ConnId, ConnState, Event, Node, Output, PeerRecord, thin};
use crate::NodeId;
use crate::id::ObjectId;
use crate::object::{self, ObjectKind, Seal};
use crate::store::{Store, StoreError, StoreRequest, UpdateResult};
use crate::sync;
use crate::time::Instant;
use crate::timeline::TimelineName;
use crate::wire::{self, Message};

/// A pull lands what it received so far once this many bytes of objects
/// arrived (a checkpoint), so an interrupted transfer keeps them. Each landing
/// costs fsyncs that stall the pull; at 8 MiB a 256 MiB transfer ran at 140
/// MB/s, at 32 MiB at 210 MB/s (`docs/benchmarks.md`). An interruption costs
/// at most this much resent. [`Node::set_checkpoint_bytes`] changes it.
pub const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;
/// ... or this many objects, for histories of many small ones.
const CHECKPOINT_OBJECTS: usize = 16_384;

/// Objects of a checkpoint with their children, in landing order.
pub(super) type Landed = Vec<(ObjectId, Vec<ObjectId>)>;

/// What a store batch is for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Batch {
    /// The objects a pull on this connection puts; landed when it finishes.
    Pull(ConnId),
    /// A checkpoint of a pull on `conn`. Kept here, not in the pull, so a
    /// checkpoint that lands after its pull was cut still counts for resuming.
    Checkpoint {
        conn: ConnId,
        peer: NodeId,
        objects: Landed,
    },
    /// A merge seal built by `auto_merge` for a divergence with `conn`'s peer.
    Merge { conflict: Conflict, conn: ConnId },
}

/// A `Command::Sync` waiting for the pulls it started.
pub(super) struct SyncWaiter {
    pub id: CommandId,
    pub remaining: BTreeSet<ConnId>,
    pub failed: Vec<String>,
    pub objects: u64,
}

/// The node-wide state of pulling; the per-connection part is [`Pull`].
pub(super) struct Puller {
    /// Bytes of a pull landed as one checkpoint ([`CHECKPOINT_BYTES`]).
    pub checkpoint_bytes: u64,
    /// Sync ids and batch ids: one counter, so neither repeats.
    next_id: u64,
    /// Pulls waiting for a slot (or a refetch) may move: set where no store
    /// is at hand, acted on before the input returns (`Node::run_queued`).
    pub restart: bool,
    batches: BTreeMap<u64, Batch>,
    /// Per peer, the roots of what landed from pulls that did not finish
    /// (persisted through `StoreRequest::Resume`; read back on first use).
    pub resume: BTreeMap<NodeId, sync::LandedRoots>,
    /// Connections whose divergence was left undecided (see `start_merge`):
    /// the next interval sync with them is forced.
    pub redecide: BTreeSet<ConnId>,
    pub waiters: Vec<SyncWaiter>,
    pub refetch: Option<Refetch>,
    /// Divergences seen and not since resolved, by timeline and peer.
    pub conflicts: BTreeMap<(TimelineName, NodeId), Conflict>,
    /// Per-peer sync state, kept across reconnects.
    pub peers: BTreeMap<NodeId, PeerRecord>,
}

impl Default for Puller {
    fn default() -> Puller {
        Puller {
            checkpoint_bytes: CHECKPOINT_BYTES,
            next_id: 1,
            restart: false,
            batches: BTreeMap::new(),
            resume: BTreeMap::new(),
            redecide: BTreeSet::new(),
            waiters: Vec::new(),
            refetch: None,
            conflicts: BTreeMap::new(),
            peers: BTreeMap::new(),
        }
    }
}

impl Puller {
    /// A fresh sync or batch id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// `batch` holds the objects of the pull on `conn`.
    pub fn pull_batch(&mut self, batch: u64, conn: ConnId) {
        self.batches.insert(batch, Batch::Pull(conn));
    }

    /// `batch` lands a checkpoint of the pull on `conn`.
    pub fn checkpoint(&mut self, batch: u64, conn: ConnId, peer: NodeId, objects: Landed) {
        let c = Batch::Checkpoint {
            conn,
            peer,
            objects,
        };
        self.batches.insert(batch, c);
    }

    /// `batch` lands a merge seal.
    pub fn merge(&mut self, batch: u64, conflict: Conflict, conn: ConnId) {
        self.batches.insert(batch, Batch::Merge { conflict, conn });
    }

    pub fn batch(&self, batch: u64) -> Option<&Batch> {
        self.batches.get(&batch)
    }

    pub fn take(&mut self, batch: u64) -> Option<Batch> {
        self.batches.remove(&batch)
    }

    /// The connection whose pull a batch (objects or checkpoint) belongs to.
    pub fn owner(&self, batch: u64) -> Option<ConnId> {
        match self.batches.get(&batch)? {
            Batch::Pull(conn) | Batch::Checkpoint { conn, .. } => Some(*conn),
            Batch::Merge { .. } => None,
        }
    }

    /// The pull on `conn` whose objects went to `batch` ended: its batch will
    /// not be answered. Its checkpoints stay: one may still land.
    pub fn pull_ended(&mut self, conn: ConnId, batch: u64) {
        if self.batches.get(&batch) == Some(&Batch::Pull(conn)) {
            self.batches.remove(&batch);
        }
    }

    /// Whether a pull with this much staged since its last checkpoint should
    /// land a checkpoint now.
    pub fn checkpoint_due(&self, staged_bytes: u64, staged_objects: usize) -> bool {
        staged_bytes >= self.checkpoint_bytes || staged_objects >= CHECKPOINT_OBJECTS
    }

    /// A checkpoint from `peer` landed: its objects join the peer's resume
    /// roots, which are returned (to persist).
    pub fn landed_roots(&mut self, peer: &NodeId, objects: &Landed) -> Vec<ObjectId> {
        let roots = self.resume.entry(peer.to_owned()).or_default();
        for (id, children) in objects {
            roots.land(*id, children);
        }
        roots.ids()
    }

    /// The pull on `conn` (or the wish for one) settled: every sync command
    /// waiting on it counts its objects and its failure, if any.
    pub fn settle(&mut self, conn: ConnId, objects: u64, failure: Option<String>) {
        for w in self.waiters.iter_mut() {
            if w.remaining.remove(&conn) {
                w.objects += objects;
                if let Some(f) = &failure {
                    w.failed.push(f.clone());
                }
            }
        }
    }

    /// Sync commands with nothing left to wait for: id, success, message.
    pub fn finished(&mut self) -> Vec<(CommandId, bool, String)> {
        let mut finished = Vec::new();
        self.waiters.retain(|w| {
            if !w.remaining.is_empty() {
                return true;
            }
            finished.push(if w.failed.is_empty() {
                let objects = w.objects;
                (
                    w.id,
                    true,
                    format!("sync complete: {objects} objects received"),
                )
            } else {
                (w.id, false, format!("sync failed: {}", w.failed.join("; ")))
            });
            false
        });
        finished
    }
}

impl Node {
    /// Starts (or queues) a pull from a connection. With `force`, reconciles even
    /// when nothing is missing (a user-requested sync).
    pub(super) fn request_pull(
        &mut self,
        now: Instant,
        conn: ConnId,
        store: &dyn Store,
        force: bool,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state() != ConnState::Ready || !c.shares_repo {
            return;
        }
        if c.pull.is_some() {
            c.pull_again = true;
            return;
        }
        let Some(peer) = c.ready_peer() else { return };
        let local = store.heads().unwrap_or_default();
        let seen = self
            .puller
            .peers
            .get(&peer)
            .map(|r| r.heads_seen.clone())
            .unwrap_or_default();
        let c = &self.conns[&conn];
        let needs_work = self
            .timeline_plan(conn, &local)
            .targets
            .iter()
            .any(|(t, h)| !store.has(h) || (local.get(t) != Some(h) && seen.get(t) != Some(h)));
        // A divergence the user (or a peer) already resolved: both heads agree now.
        let agreed: Vec<TimelineName> = c
            .remote_heads
            .iter()
            .filter(|(t, h)| local.get(*t) == Some(*h))
            .map(|(t, _)| t.clone())
            .collect();
        for t in agreed {
            self.puller.conflicts.remove(&(t, peer));
        }
        if !needs_work && !force {
            self.release_waiters(conn, None);
            return;
        }
        let active = self.conns.values().filter(|c| c.pull.is_some()).count();
        if active >= self.cfg.sync.max_concurrent_syncs {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.pull_wanted = true;
            }
            return;
        }
        self.start_pull(now, conn, store);
    }

    pub(super) fn start_pull(&mut self, now: Instant, conn: ConnId, store: &dyn Store) {
        let sync = self.puller.next_id();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.pull_wanted = false;
        c.pull_again = false;
        let Some(peer) = c.ready_peer() else { return };
        let Some(targets) = self.limit_targets(conn, sync, store) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let wants: Vec<ObjectId> = {
            let mut w: Vec<ObjectId> = targets
                .values()
                .filter(|h| !store.has(h))
                .copied()
                .collect();
            w.sort();
            w.dedup();
            w
        };
        c.pull = Some(Pull::new(peer, sync, sync, targets, now));
        self.puller.pull_batch(sync, conn);
        self.emit(Event::SyncStarted { peer, sync });
        if wants.is_empty() {
            // Everything is here already: only the heads need deciding.
            return self.finish_pull(now, conn, store);
        }
        let haves = match self.pull_haves(&peer, store) {
            Ok(h) => h,
            Err(e) => {
                let c = self.conns.get_mut(&conn);
                if let Some(pull) = c.and_then(|c| c.pull.take()) {
                    let snap = self.conns[&conn].snapshot();
                    self.end_pull_with(now, &snap, pull, Err(format!("store: {e}")));
                }
                return;
            }
        };
        // Resuming: name the roots of what landed from this peer's interrupted
        // pulls (read back from the store after a restart).
        let resume: Vec<ObjectId> = self
            .puller
            .resume
            .entry(peer)
            .or_insert_with(|| sync::LandedRoots::from_ids(&store.resume_hints(&peer.to_hex())))
            .ids()
            .into_iter()
            .filter(|id| store.has(id))
            .collect();
        if !resume.is_empty() {
            tracing::debug!(
                peer = peer.short(),
                sync,
                roots = resume.len(),
                "resuming an interrupted pull"
            );
        }
        self.send(
            now,
            conn,
            Message::SyncRequest(wire::SyncRequest {
                sync,
                repo: store.repo_id().to_owned(),
                wants,
                haves,
                resume,
                refetch: Vec::new(),
            }),
        );
    }

    pub(super) fn on_sync_response(
        &mut self,
        now: Instant,
        conn: ConnId,
        r: wire::SyncResponse,
        _store: &dyn Store,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(pull) = c
            .pull
            .as_mut()
            .filter(|p| p.sync == r.sync && p.state == PullState::Requested)
        else {
            return self.violation(conn, format!("unexpected sync_response {}", r.sync));
        };
        pull.last_progress = now;
        match r.error {
            Some(e) => {
                let pull = c.pull.take();
                let snap = c.snapshot();
                if let Some(pull) = pull {
                    self.end_pull_with(now, &snap, pull, Err(format!("peer refused: {e}")));
                }
            }
            None => {
                pull.expected = r.objects;
                pull.state = PullState::Receiving;
            }
        }
    }

    pub(super) fn on_objects(
        &mut self,
        now: Instant,
        conn: ConnId,
        h: wire::ObjectsHeader,
        bin: &[u8],
        store: &dyn Store,
    ) {
        let max = self.frame_limits().frame as usize;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let zdelta = c.zdelta;
        let Some(pull) = c
            .pull
            .as_mut()
            .filter(|p| p.sync == h.sync && p.state == PullState::Receiving)
        else {
            return self.violation(conn, format!("objects for unexpected sync {}", h.sync));
        };
        let peer = pull.peer;
        let decompressed;
        let data: &[u8] = match h.compression.as_deref() {
            None => bin,
            Some("lz4") => match decompress(bin, max) {
                Ok(d) => {
                    decompressed = d;
                    &decompressed
                }
                Err(e) => return self.violation(conn, e),
            },
            Some(other) => return self.violation(conn, format!("unknown compression {other:?}")),
        };
        let received = if h.format.as_deref() == Some(wire::FORMAT_STORED) {
            if !zdelta {
                return self.violation(conn, "stored objects without zstd-delta".into());
            }
            let entries = match wire::split_stored(data, h.count, max as u32) {
                Ok(e) => e,
                Err(e) => return self.violation(conn, e.to_string()),
            };
            match pull.thin.receive(store, entries) {
                Ok(r) => r,
                Err(e) => return self.violation(conn, e),
            }
        } else if let Some(f) = &h.format {
            return self.violation(conn, format!("unknown objects format {f:?}"));
        } else {
            let objects = match wire::split_objects(data, h.count) {
                Ok(o) => o,
                Err(e) => return self.violation(conn, e.to_string()),
            };
            let mut out = Vec::with_capacity(objects.len());
            for (id, enc) in objects {
                match object::verify(&id, enc) {
                    Ok(kind) => out.push(thin::Received::Object(id, enc.to_vec(), kind, None)),
                    Err(e) => return self.violation(conn, format!("bad object {id}: {e}")),
                }
            }
            out
        };
        let mut batch = Vec::with_capacity(received.len());
        let mut blobs = Vec::new();
        let mut forms = Vec::new();
        let mut bytes = 0u64;
        for r in received {
            let (id, kind) = match &r {
                thin::Received::Object(id, _, kind, _) => (*id, *kind),
                thin::Received::Blob(id, _) => (*id, ObjectKind::Blob),
            };
            if kind != ObjectKind::Seal && pull.refetch.as_ref().is_some_and(|a| !a.contains(&id)) {
                return self.violation(conn, format!("object {id} was not asked for"));
            }
            match r {
                thin::Received::Object(id, enc, kind, form) => {
                    if let Some(f) = form {
                        forms.push((id, f));
                    }
                    if kind == ObjectKind::Seal
                        && let Ok(s) = Seal::decode(&enc)
                    {
                        pull.seals.insert(id, s);
                    }
                    bytes += enc.len() as u64;
                    batch.push((id, enc));
                }
                thin::Received::Blob(id, stored) => {
                    bytes += u64::from(stored.len);
                    blobs.push((id, stored));
                }
            }
        }
        pull.received += (batch.len() + blobs.len()) as u64;
        pull.bytes += bytes;
        pull.last_progress = now;
        if pull.received > pull.expected {
            return self.violation(conn, "more objects than announced".into());
        }
        // Blobs have no children, and the store writes them first.
        for (id, _) in &blobs {
            pull.staged.push((*id, Vec::new()));
        }
        for (id, enc) in &batch {
            let children = if object::kind_of(enc) == Ok(ObjectKind::Blob) {
                Vec::new()
            } else {
                object::Object::decode(enc)
                    .map(|o| o.children())
                    .unwrap_or_default()
            };
            pull.staged.push((*id, children));
        }
        pull.staged_bytes += bytes;
        let (sync, batch_id, count) = (pull.sync, pull.batch, (batch.len() + blobs.len()) as u64);
        self.out.stats.objects_in += count;
        if let Some(r) = self.puller.peers.get_mut(&peer) {
            r.objects_in += count;
            r.bytes_in += bytes;
        }
        self.out.queue.push_back(Output::Store(StoreRequest::Put {
            batch: batch_id,
            objects: batch,
            blobs,
            forms,
        }));
        // A checkpoint: land what arrived so far on its own, so a cut transfer
        // keeps it. Objects arrive children first, so every prefix of the
        // stream is closed given what the store already holds (the store
        // checks closure again). One checkpoint at a time: a later batch never
        // refers to objects of one whose landing might still fail. No head
        // moves; the last batch lands in `finish_pull`.
        let due = self
            .puller
            .checkpoint_due(pull.staged_bytes, pull.staged.len());
        if due
            && pull.checkpoint.is_none()
            && pull.received < pull.expected
            && pull.refetch.is_none()
        {
            let landing = pull.batch;
            pull.batch = self.puller.next_id();
            self.puller.pull_batch(pull.batch, conn);
            pull.checkpoint = Some(landing);
            pull.staged_bytes = 0;
            let objects = std::mem::take(&mut pull.staged);
            tracing::debug!(
                conn,
                sync,
                batch = landing,
                objects = objects.len(),
                "landing a checkpoint"
            );
            self.puller.checkpoint(landing, conn, peer, objects);
            self.out.queue.push_back(Output::Store(StoreRequest::Land {
                batch: landing,
                updates: Vec::new(),
            }));
        }
        self.emit(Event::ObjectReceived {
            peer,
            sync,
            objects: count,
            bytes,
        });
    }

    /// A checkpoint's landing finished. On success its objects join the peer's
    /// resume record (persisted, so even a restart resumes); the pull, if it
    /// is still running, may land its next checkpoint or finish. On failure the
    /// pull fails: its later objects may refer to the checkpoint's.
    pub(super) fn checkpoint_landed(
        &mut self,
        now: Instant,
        batch: u64,
        conn: ConnId,
        (peer, objects): (NodeId, Landed),
        result: Result<Vec<UpdateResult>, StoreError>,
        store: &dyn Store,
    ) {
        // The pull may have been cut (or replaced) since: then only the
        // resume record gains.
        let conn = self
            .conns
            .get(&conn)
            .and_then(|c| c.pull.as_ref())
            .is_some_and(|p| p.checkpoint == Some(batch))
            .then_some(conn);
        match result {
            Ok(_) => {
                let roots = self.puller.landed_roots(&peer, &objects);
                tracing::debug!(
                    peer = peer.short(),
                    batch,
                    objects = objects.len(),
                    roots = roots.len(),
                    "checkpoint landed"
                );
                self.out
                    .queue
                    .push_back(Output::Store(StoreRequest::Resume {
                        peer: peer.to_hex(),
                        roots,
                    }));
                let Some(conn) = conn else { return };
                let Some(pull) = self.conns.get_mut(&conn).and_then(|c| c.pull.as_mut()) else {
                    return;
                };
                pull.checkpoint = None;
                pull.last_progress = now;
                if pull.complete {
                    self.finish_pull(now, conn, store);
                }
            }
            Err(e) => {
                let Some(conn) = conn else { return };
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let pull = c.pull.take();
                let snap = c.snapshot();
                if let Some(pull) = pull {
                    self.end_pull_with(now, &snap, pull, Err(format!("store: {e}")));
                }
                self.close(conn, CloseReason::SyncFailed);
            }
        }
    }

    pub(super) fn on_sync_complete(
        &mut self,
        now: Instant,
        conn: ConnId,
        s: wire::SyncComplete,
        store: &dyn Store,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let ok = c.pull.as_ref().is_some_and(|p| {
            p.sync == s.sync && p.state == PullState::Receiving && p.received == p.expected
        });
        if s.error.is_some() && self.pull_ended_by_peer(now, conn, &s) {
            return;
        } else if !ok || s.error.is_some() {
            return self.violation(conn, format!("unexpected sync_complete {}", s.sync));
        }
        self.finish_pull(now, conn, store);
    }

    pub(super) fn end_pull(
        &mut self,
        now: Instant,
        c: &Conn,
        pull: Pull,
        result: Result<(), String>,
    ) {
        let snap = c.snapshot();
        self.end_pull_with(now, &snap, pull, result);
    }

    pub(super) fn end_pull_with(
        &mut self,
        now: Instant,
        c: &conn::Snapshot,
        pull: Pull,
        result: Result<(), String>,
    ) {
        self.puller.pull_ended(c.id, pull.batch);
        let peer = pull.peer;
        let record = self.puller.peers.entry(peer).or_default();
        match &result {
            Ok(()) => {
                record.syncs += 1;
                record.last_sync = Some(now);
                record.last_error = None;
                self.out.stats.syncs_completed += 1;
                self.emit(Event::SyncCompleted {
                    peer,
                    sync: pull.sync,
                    objects: pull.received,
                    bytes: pull.bytes,
                });
            }
            Err(reason) => {
                record.failures += 1;
                record.last_error = Some(reason.clone());
                self.out.stats.syncs_failed += 1;
                if pull.state != PullState::Landing {
                    self.out
                        .queue
                        .push_back(Output::Store(StoreRequest::Abort { batch: pull.batch }));
                }
                self.puller.restart = true;
                self.emit(Event::SyncFailed {
                    peer,
                    sync: pull.sync,
                    reason: reason.clone(),
                });
            }
        }
        let failure = result.err().map(|e| format!("{}: {e}", peer.short()));
        self.puller.settle(c.id, pull.received, failure);
        self.finish_waiters();
    }

    pub(super) fn release_waiters(&mut self, conn: ConnId, failure: Option<String>) {
        self.puller.settle(conn, 0, failure);
        self.finish_waiters();
    }

    pub(super) fn finish_waiters(&mut self) {
        for (id, ok, message) in self.puller.finished() {
            self.done(id, ok, message);
        }
    }

    /// Starts pulls that wait for a slot, and moves a refetch on.
    pub(super) fn start_queued_pulls_with(&mut self, now: Instant, store: &dyn Store) {
        self.puller.restart = false;
        self.refetch_step(now, store);
        let again: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.pull.is_none() && (c.pull_wanted || c.pull_again))
            .map(|c| c.id)
            .collect();
        for id in again {
            self.request_pull(now, id, store, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict() -> Conflict {
        let id = ObjectId([1; 32]);
        Conflict {
            timeline: TimelineName::new("main").expect("a valid name"),
            local: id,
            remote: id,
            base: None,
            peer: NodeId([1; 32]),
        }
    }

    #[test]
    fn sync_and_batch_ids_never_repeat() {
        let mut p = Puller::default();
        let ids: BTreeSet<u64> = (0..100).map(|_| p.next_id()).collect();
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn every_batch_is_found_by_one_look_up() {
        let mut p = Puller::default();
        p.pull_batch(1, 10);
        p.checkpoint(2, 11, NodeId([2; 32]), Vec::new());
        p.merge(3, conflict(), 12);
        assert_eq!(
            (p.owner(1), p.owner(2), p.owner(3)),
            (Some(10), Some(11), None)
        );
        assert!(matches!(p.take(3), Some(Batch::Merge { conn: 12, .. })));
        assert_eq!(p.take(3), None);
        assert_eq!(p.owner(4), None);
    }

    #[test]
    fn an_ended_pull_forgets_its_batch_but_not_its_checkpoint() {
        let mut p = Puller::default();
        p.pull_batch(1, 10);
        p.checkpoint(2, 10, NodeId([2; 32]), Vec::new());
        p.pull_ended(10, 1);
        p.pull_ended(10, 2);
        assert_eq!(p.batch(1), None);
        assert!(matches!(p.batch(2), Some(Batch::Checkpoint { .. })));
        // Another connection's end does not touch a batch it does not own.
        p.pull_batch(5, 20);
        p.pull_ended(21, 5);
        assert_eq!(p.owner(5), Some(20));
    }

    #[test]
    fn a_checkpoint_is_due_by_bytes_or_by_objects() {
        let p = Puller {
            checkpoint_bytes: 100,
            ..Puller::default()
        };
        assert!(!p.checkpoint_due(99, 1));
        assert!(p.checkpoint_due(100, 1));
        assert!(p.checkpoint_due(0, CHECKPOINT_OBJECTS));
    }

    #[test]
    fn landed_checkpoints_accumulate_resume_roots_per_peer() {
        let mut p = Puller::default();
        let (leaf, top) = (ObjectId([1; 32]), ObjectId([2; 32]));
        let (a, b) = (NodeId([0xa; 32]), NodeId([0xb; 32]));
        assert_eq!(p.landed_roots(&a, &vec![(leaf, Vec::new())]), vec![leaf]);
        // A parent landing later covers its child: one root remains.
        assert_eq!(p.landed_roots(&a, &vec![(top, vec![leaf])]), vec![top]);
        assert!(!p.resume.contains_key(&b));
    }

    #[test]
    fn a_sync_command_finishes_when_its_last_connection_settles() {
        let mut p = Puller::default();
        p.waiters.push(SyncWaiter {
            id: 7,
            remaining: [1, 2].into_iter().collect(),
            failed: Vec::new(),
            objects: 0,
        });
        p.settle(1, 5, None);
        assert!(p.finished().is_empty());
        p.settle(2, 3, None);
        assert_eq!(
            p.finished(),
            vec![(7, true, "sync complete: 8 objects received".to_owned())]
        );
        p.waiters.push(SyncWaiter {
            id: 8,
            remaining: [1].into_iter().collect(),
            failed: Vec::new(),
            objects: 0,
        });
        p.settle(1, 0, Some("x: refused".into()));
        assert_eq!(
            p.finished(),
            vec![(8, false, "sync failed: x: refused".to_owned())]
        );
    }
}
