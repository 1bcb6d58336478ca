//! Landing a finished pull: deciding each timeline against the peer's head,
//! asking the store to land the batch with its head updates, and recording
//! what moved, diverged or was resolved when the store answers. Divergences
//! whose strategy merges get a merge seal landed on its own batch.

use super::conn::PullState;
use super::{Conflict, ConnId, ConnState, Event, Node, Output};
use crate::conflict::{self, Resolution};
use crate::id::ObjectId;
use crate::object::Seal;
use crate::store::{HeadUpdate, RefName, Store, StoreError, StoreRequest, UpdateResult};
use crate::sync::{self, Relation};
use crate::time::Instant;
use crate::timeline::TimelineName;
use crate::wire::{self, Message};

impl Node {
    /// All objects are in (or were already): decide each timeline and ask the store
    /// to land the batch and move heads.
    pub(super) fn finish_pull(&mut self, now: Instant, conn: ConnId, store: &dyn Store) {
        if self.refetch_round_end(conn, store) {
            return;
        }
        let local = store.heads().unwrap_or_default();
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer.clone()) else {
            return;
        };
        let seen = self.tracked(&peer, store);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(pull) = c.pull.as_mut() else { return };
        pull.last_progress = now;
        if pull.checkpoint.is_some() {
            // The last batch may refer to the checkpoint's objects: land it
            // only once the checkpoint has (`checkpoint_landed`).
            pull.complete = true;
            return;
        }
        pull.staged = Vec::new();
        let seals = &pull.seals;
        let mut lookup = |id: &ObjectId| -> Result<Seal, StoreError> {
            match seals.get(id) {
                Some(s) => Ok(s.clone()),
                None => store.seal(id),
            }
        };
        let mut updates = Vec::new();
        let mut conflicts = Vec::new();
        let mut resolved = Vec::new();
        let mut merges = Vec::new();
        let (mut error, mut local_fault) = (None, false);
        for (timeline, remote) in &pull.targets {
            if !store.has(remote) && !seals.contains_key(remote) {
                error = Some(format!("peer did not send seal {remote} of {timeline}"));
                break;
            }
            if seen.get(timeline) != Some(remote) {
                updates.push(HeadUpdate {
                    name: RefName::Tracking {
                        peer: peer.clone(),
                        timeline: timeline.clone(),
                    },
                    expected: None,
                    new: *remote,
                });
            }
            let l = local.get(timeline).copied();
            match sync::relate(l, *remote, &mut lookup) {
                Ok(Relation::Missing) => updates.push(HeadUpdate {
                    name: RefName::Timeline(timeline.clone()),
                    expected: None,
                    new: *remote,
                }),
                Ok(Relation::Behind) => updates.push(HeadUpdate {
                    name: RefName::Timeline(timeline.clone()),
                    expected: l,
                    new: *remote,
                }),
                Ok(Relation::Same | Relation::Ahead) => {
                    self.puller
                        .conflicts
                        .remove(&(timeline.clone(), peer.clone()));
                }
                Ok(Relation::Diverged { base }) => {
                    let Some(l) = l else { continue };
                    let conflict = Conflict {
                        timeline: timeline.clone(),
                        local: l,
                        remote: *remote,
                        base,
                        peer: peer.clone(),
                    };
                    let ours = conflict::strategy_for(
                        timeline,
                        self.cfg.conflict_strategy,
                        &self.cfg.timeline_strategies,
                    );
                    let theirs = c
                        .remote_strategy
                        .as_ref()
                        .map(|a| conflict::strategy_for(timeline, a.default, &a.timelines));
                    let key = |id: ObjectId, lookup: &mut dyn FnMut(&ObjectId) -> Result<Seal, StoreError>| {
                        let time = lookup(&id)?.time.seconds;
                        Ok::<_, StoreError>((sync::generation(id, lookup)?, time))
                    };
                    let keys = (key(l, &mut lookup), key(*remote, &mut lookup));
                    let (Ok(tl), Ok(tr)) = keys else {
                        error = Some("reading the diverged heads".into());
                        local_fault = true;
                        break;
                    };
                    match conflict::decide(ours, theirs, (&l, tl), (remote, tr)) {
                        Resolution::Record => conflicts.push(conflict),
                        Resolution::KeepLocal => resolved.push((conflict, l)),
                        Resolution::TakeRemote => {
                            // The replaced head becomes a timeline of its own,
                            // `kept/<timeline>/<id>`, which syncs like any other:
                            // every node that shares the timeline keeps it too.
                            let kept = TimelineName::new(&format!("kept/{timeline}/{}", l.short()))
                                .map(RefName::Timeline)
                                .unwrap_or(RefName::Kept {
                                    timeline: timeline.clone(),
                                });
                            updates.push(HeadUpdate {
                                name: kept,
                                expected: None,
                                new: l,
                            });
                            updates.push(HeadUpdate {
                                name: RefName::Timeline(timeline.clone()),
                                expected: Some(l),
                                new: *remote,
                            });
                            resolved.push((conflict, *remote));
                        }
                        Resolution::Merge => merges.push(conflict),
                    }
                }
                Err(e) => {
                    (error, local_fault) = (Some(format!("reading history: {e}")), true);
                    break;
                }
            }
        }
        if let Some(e) = error {
            self.pull_failed_locally(now, conn, e);
            if !local_fault {
                self.close(conn, "sync failed");
            }
            return;
        }
        pull.state = PullState::Landing;
        pull.updates = updates.clone();
        pull.conflicts = conflicts;
        pull.resolved = resolved;
        pull.merges = merges;
        self.outputs.push_back(Output::Store(StoreRequest::Land {
            batch: pull.batch,
            updates,
        }));
    }

    /// Tells the peer how a divergence with it was resolved, so it adopts the
    /// same head at once instead of at its next sync.
    pub(super) fn tell_resolution(
        &mut self,
        now: Instant,
        conn: ConnId,
        store: &dyn Store,
        c: &Conflict,
        head: ObjectId,
    ) {
        let strategy = conflict::strategy_for(
            &c.timeline,
            self.cfg.conflict_strategy,
            &self.cfg.timeline_strategies,
        );
        let name = serde_json::to_value(strategy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.emit(Event::ConflictResolved {
            timeline: c.timeline.clone(),
            strategy: name.clone(),
            head,
            peer: c.peer.clone(),
        });
        if self
            .conns
            .get(&conn)
            .is_some_and(|x| x.state == ConnState::Ready)
        {
            self.send(
                now,
                conn,
                Message::ConflictResolve(wire::ConflictResolve {
                    repo: store.repo_id().to_owned(),
                    timeline: c.timeline.clone(),
                    local: c.local,
                    remote: c.remote,
                    strategy: name,
                    resolution: Some(head),
                }),
            );
        }
    }

    /// Builds the deterministic merge of a divergence and asks the store to land
    /// it; a merge that is not clean is recorded for the user instead.
    pub(super) fn start_merge(
        &mut self,
        now: Instant,
        conn: ConnId,
        c: Conflict,
        store: &dyn Store,
    ) {
        // The head may have moved since the divergence was seen.
        let current = store.heads().ok().and_then(|h| h.get(&c.timeline).copied());
        if current != Some(c.local) {
            // Decide again against the new head at the next interval sync.
            self.puller.redecide.insert(conn);
            return;
        }
        match conflict::auto_merge(store, &c.local, &c.remote) {
            Ok(Some(m)) => {
                let batch = self.puller.next_id();
                self.outputs.push_back(Output::Store(StoreRequest::Put {
                    batch,
                    objects: m.objects,
                    blobs: Vec::new(),
                    forms: Vec::new(),
                }));
                self.outputs.push_back(Output::Store(StoreRequest::Land {
                    batch,
                    updates: vec![HeadUpdate {
                        name: RefName::Timeline(c.timeline.clone()),
                        expected: Some(c.local),
                        new: m.seal,
                    }],
                }));
                let mut c = c;
                c.remote = m.seal;
                self.puller.merge(batch, c, conn);
            }
            Ok(None) => self.record_conflict(c),
            Err(e) => {
                tracing::warn!(timeline = %c.timeline, error = %e, "automatic merge failed; recording the conflict");
                self.record_conflict(c);
            }
        }
        let _ = now;
    }

    pub(super) fn record_conflict(&mut self, conflict: Conflict) {
        let key = (conflict.timeline.clone(), conflict.peer.clone());
        if self.puller.conflicts.get(&key) != Some(&conflict) {
            self.stats.conflicts += 1;
            self.emit(Event::ConflictDetected {
                timeline: conflict.timeline.clone(),
                local: conflict.local,
                remote: conflict.remote,
                base: conflict.base,
                peer: conflict.peer.clone(),
            });
            self.puller.conflicts.insert(key, conflict);
        }
    }

    pub(super) fn merge_landed(
        &mut self,
        now: Instant,
        conn: ConnId,
        c: Conflict,
        result: Result<Vec<UpdateResult>, StoreError>,
        store: &dyn Store,
    ) {
        match result {
            Ok(r) if r.first() == Some(&UpdateResult::Applied) => {
                self.puller
                    .conflicts
                    .remove(&(c.timeline.clone(), c.peer.clone()));
                self.emit(Event::TimelineUpdated {
                    timeline: c.timeline.clone(),
                    old: Some(c.local),
                    new: c.remote,
                    peer: c.peer.clone(),
                });
                let merge = c.remote;
                self.tell_resolution(now, conn, store, &c, merge);
                self.announce_heads(now, store);
            }
            Ok(_) => {
                // The head moved meanwhile; the next sync decides again.
                self.puller.restart = true;
                self.puller.redecide.insert(conn);
            }
            Err(e) => {
                tracing::warn!(timeline = %c.timeline, error = %e, "landing a merge failed; retrying at the next interval sync");
                self.puller.redecide.insert(conn);
            }
        }
    }

    /// A pull's last batch landed (or failed to): record what moved, what
    /// diverged and what was resolved, then start merges and any retry.
    pub(super) fn pull_landed(
        &mut self,
        now: Instant,
        conn: ConnId,
        result: Result<Vec<UpdateResult>, StoreError>,
        store: &dyn Store,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(pull) = c.pull.take() else { return };
        let peer = c.peer.clone().unwrap_or_default();
        match result {
            Err(e) => {
                let c = &self.conns[&conn];
                let snapshot = c.snapshot();
                self.end_pull_with(now, &snapshot, pull, Err(format!("store: {e}")));
            }
            Ok(results) => {
                let mut retry = false;
                // Timelines whose head update lost its compare-and-set (another
                // landing moved the head in between): the peer's head there was
                // not decided, so it must not count as seen. Otherwise the
                // retry below, and every later interval sync, would find
                // nothing to do (the objects are here, the head "seen") and the
                // node would stay on the older head for good.
                let moved: Vec<TimelineName> = pull
                    .updates
                    .iter()
                    .zip(results.iter())
                    .filter_map(|(u, r)| match (&u.name, r) {
                        (RefName::Timeline(t), UpdateResult::Moved(_)) => Some(t.clone()),
                        _ => None,
                    })
                    .collect();
                for (u, r) in pull.updates.iter().zip(results.iter()) {
                    match (&u.name, r) {
                        (RefName::Timeline(t), UpdateResult::Applied) => {
                            if u.expected.is_none() {
                                self.peers
                                    .entry(peer.clone())
                                    .or_default()
                                    .timelines_created += 1;
                            }
                            self.emit(Event::TimelineUpdated {
                                timeline: t.clone(),
                                old: u.expected,
                                new: u.new,
                                peer: peer.clone(),
                            });
                            self.puller.conflicts.remove(&(t.clone(), peer.clone()));
                        }
                        (RefName::Tracking { timeline, .. }, UpdateResult::Applied) => {
                            self.tracking_landed(&peer, timeline, u.new)
                        }
                        (RefName::Kept { .. }, UpdateResult::Applied) => {}
                        (_, UpdateResult::Moved(_)) => retry = true,
                    }
                }
                if let Some(rec) = self.peers.get_mut(&peer) {
                    for t in moved {
                        rec.heads_seen.remove(&t);
                    }
                }
                for conflict in &pull.conflicts {
                    let key = (conflict.timeline.clone(), peer.clone());
                    if self.puller.conflicts.get(&key) != Some(conflict) {
                        self.stats.conflicts += 1;
                        self.puller.conflicts.insert(key, conflict.clone());
                        self.emit(Event::ConflictDetected {
                            timeline: conflict.timeline.clone(),
                            local: conflict.local,
                            remote: conflict.remote,
                            base: conflict.base,
                            peer: peer.clone(),
                        });
                    }
                }
                for (conflict, head) in &pull.resolved {
                    self.puller
                        .conflicts
                        .remove(&(conflict.timeline.clone(), peer.clone()));
                    self.tell_resolution(now, conn, store, conflict, *head);
                }
                // Everything the peer offered has landed, under its heads or
                // tracking names: nothing is left to resume.
                if pull.refetch.is_none()
                    && self
                        .puller
                        .resume
                        .remove(&peer)
                        .is_some_and(|r| !r.is_empty())
                {
                    self.outputs.push_back(Output::Store(StoreRequest::Resume {
                        peer: peer.clone(),
                        roots: Vec::new(),
                    }));
                }
                let merges = pull.merges.clone();
                let snapshot = self.conns[&conn].snapshot();
                self.end_pull_with(now, &snapshot, pull, Ok(()));
                for m in merges {
                    self.start_merge(now, conn, m, store);
                }
                self.announce_heads(now, store);
                if retry {
                    self.request_pull(now, conn, store, false);
                }
            }
        }
        self.start_queued_pulls_with(now, store);
    }
}
