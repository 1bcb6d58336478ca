//! Landing a finished pull: deciding each timeline against the peer's head,
//! asking the store to land the batch with its head updates, and recording
//! what moved, diverged or was resolved when the store answers. Divergences
//! whose strategy merges get a merge seal landed on its own batch.

use super::CloseReason;
use super::conn::PullState;
use std::collections::BTreeMap;

use super::{Conflict, ConnId, ConnState, Event, Node, Output};
use crate::NodeId;
use crate::config::ConflictStrategy;
use crate::conflict::{self, Resolution};
use crate::history::{self, Relation};
use crate::id::ObjectId;
use crate::object::Seal;
use crate::store::{HeadUpdate, RefName, Store, StoreError, StoreRequest, UpdateResult};
use crate::time::Instant;
use crate::timeline::TimelineName;
use crate::wire::{self, Message};

/// The heads a landing decides between.
#[derive(Clone, Copy)]
pub(super) struct Heads<'a> {
    /// The peer's heads the pull brought in.
    pub targets: &'a BTreeMap<TimelineName, ObjectId>,
    /// This node's heads.
    pub local: &'a BTreeMap<TimelineName, ObjectId>,
    /// The peer's heads already recorded here (its tracking names).
    pub seen: &'a BTreeMap<TimelineName, ObjectId>,
}

/// The conflict strategies in force: ours, per timeline, and the peer's.
pub(super) struct Strategies<'a> {
    pub default: ConflictStrategy,
    pub timelines: &'a BTreeMap<String, ConflictStrategy>,
    pub theirs: Option<&'a wire::StrategyAdvert>,
}

/// What a finished pull lands, decided timeline by timeline.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct LandingPlan {
    /// Head and tracking-name updates, in the order the store applies them.
    pub updates: Vec<HeadUpdate>,
    /// Divergences left for the user.
    pub conflicts: Vec<Conflict>,
    /// Divergences the strategies resolved, with the head that won.
    pub resolved: Vec<(Conflict, ObjectId)>,
    /// Divergences to merge once the batch has landed.
    pub merges: Vec<Conflict>,
    /// Timelines where this node has the peer's head (or is ahead): a
    /// divergence recorded with the peer there is over.
    pub settled: Vec<TimelineName>,
    /// Why the pull cannot land, and whether the fault is local (a store
    /// read) rather than the peer's. Decisions before it are kept (only
    /// `settled` is acted on).
    pub failure: Option<(String, bool)>,
}

/// Decides what a finished pull from `peer` lands: for each of its heads,
/// the tracking name if it moved, then fast-forward, keep, or a divergence
/// settled by the two sides' strategies. `has` says whether an object is
/// here (stored or received), `lookup` reads a seal.
pub(super) fn plan_landing(
    peer: &NodeId,
    heads: Heads<'_>,
    strategies: &Strategies<'_>,
    has: &dyn Fn(&ObjectId) -> bool,
    lookup: &mut dyn FnMut(&ObjectId) -> Result<Seal, StoreError>,
) -> LandingPlan {
    let mut plan = LandingPlan::default();
    for (timeline, remote) in heads.targets {
        if !has(remote) {
            plan.failure = Some((
                format!("peer did not send seal {remote} of {timeline}"),
                false,
            ));
            break;
        }
        if heads.seen.get(timeline) != Some(remote) {
            plan.updates.push(HeadUpdate {
                name: RefName::Tracking {
                    peer: peer.to_hex(),
                    timeline: timeline.clone(),
                },
                expected: None,
                new: *remote,
            });
        }
        let l = heads.local.get(timeline).copied();
        match history::relate(l, *remote, &mut *lookup) {
            Ok(Relation::Missing) => plan.updates.push(HeadUpdate {
                name: RefName::Timeline(timeline.clone()),
                expected: None,
                new: *remote,
            }),
            Ok(Relation::Behind) => plan.updates.push(HeadUpdate {
                name: RefName::Timeline(timeline.clone()),
                expected: l,
                new: *remote,
            }),
            Ok(Relation::Same | Relation::Ahead) => plan.settled.push(timeline.clone()),
            Ok(Relation::Diverged { base }) => {
                let Some(l) = l else { continue };
                let conflict = Conflict {
                    timeline: timeline.clone(),
                    local: l,
                    remote: *remote,
                    base,
                    peer: peer.to_owned(),
                };
                let ours =
                    conflict::strategy_for(timeline, strategies.default, strategies.timelines);
                let theirs = strategies
                    .theirs
                    .map(|a| conflict::strategy_for(timeline, a.default, &a.timelines));
                let key = |id: ObjectId, lookup: &mut dyn FnMut(&ObjectId) -> Result<Seal, StoreError>| {
                    let time = lookup(&id)?.time.seconds;
                    Ok::<_, StoreError>((history::generation(id, lookup)?, time))
                };
                let keys = (key(l, &mut *lookup), key(*remote, &mut *lookup));
                let (Ok(tl), Ok(tr)) = keys else {
                    plan.failure = Some(("reading the diverged heads".into(), true));
                    break;
                };
                match conflict::decide(ours, theirs, (&l, tl), (remote, tr)) {
                    Resolution::Record => plan.conflicts.push(conflict),
                    Resolution::KeepLocal => plan.resolved.push((conflict, l)),
                    Resolution::TakeRemote => {
                        // The replaced head becomes a timeline of its own,
                        // `kept/<timeline>/<id>`, which syncs like any other:
                        // every node that shares the timeline keeps it too.
                        let kept = TimelineName::new(&format!("kept/{timeline}/{}", l.short()))
                            .map(RefName::Timeline)
                            .unwrap_or(RefName::Kept {
                                timeline: timeline.clone(),
                            });
                        plan.updates.push(HeadUpdate {
                            name: kept,
                            expected: None,
                            new: l,
                        });
                        plan.updates.push(HeadUpdate {
                            name: RefName::Timeline(timeline.clone()),
                            expected: Some(l),
                            new: *remote,
                        });
                        plan.resolved.push((conflict, *remote));
                    }
                    Resolution::Merge => plan.merges.push(conflict),
                }
            }
            Err(e) => {
                plan.failure = Some((format!("reading history: {e}"), true));
                break;
            }
        }
    }
    plan
}

impl Node {
    /// All objects are in (or were already): decide each timeline and ask the store
    /// to land the batch and move heads.
    pub(super) fn finish_pull(&mut self, now: Instant, conn: ConnId, store: &dyn Store) {
        if self.refetch_round_end(conn, store) {
            return;
        }
        let local = store.heads().unwrap_or_default();
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer()) else {
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
        let strategies = Strategies {
            default: self.cfg.sync.conflict_strategy,
            timelines: &self.cfg.sync.timeline_strategies,
            theirs: c.remote_strategy.as_ref(),
        };
        let has = |id: &ObjectId| store.has(id) || seals.contains_key(id);
        let heads = Heads {
            targets: &pull.targets,
            local: &local,
            seen: &seen,
        };
        let plan = plan_landing(&peer, heads, &strategies, &has, &mut lookup);
        for t in &plan.settled {
            self.puller.conflicts.remove(&(t.clone(), peer));
        }
        if let Some((e, local_fault)) = plan.failure {
            self.pull_failed_locally(now, conn, e);
            if !local_fault {
                self.close(conn, CloseReason::SyncFailed);
            }
            return;
        }
        let Some(pull) = self.conns.get_mut(&conn).and_then(|c| c.pull.as_mut()) else {
            return;
        };
        let LandingPlan {
            updates,
            conflicts,
            resolved,
            merges,
            ..
        } = plan;
        pull.state = PullState::Landing;
        pull.updates = updates.clone();
        pull.conflicts = conflicts;
        pull.resolved = resolved;
        pull.merges = merges;
        self.out.queue.push_back(Output::Store(StoreRequest::Land {
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
            self.cfg.sync.conflict_strategy,
            &self.cfg.sync.timeline_strategies,
        );
        let name = serde_json::to_value(strategy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.emit(Event::ConflictResolved {
            timeline: c.timeline.clone(),
            strategy: name.clone(),
            head,
            peer: c.peer,
        });
        if self
            .conns
            .get(&conn)
            .is_some_and(|x| x.state() == ConnState::Ready)
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
                self.out.queue.push_back(Output::Store(StoreRequest::Put {
                    batch,
                    objects: m.objects,
                    blobs: Vec::new(),
                    forms: Vec::new(),
                }));
                self.out.queue.push_back(Output::Store(StoreRequest::Land {
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
        let key = (conflict.timeline.clone(), conflict.peer);
        if self.puller.conflicts.get(&key) != Some(&conflict) {
            self.out.stats.conflicts += 1;
            self.emit(Event::ConflictDetected {
                timeline: conflict.timeline.clone(),
                local: conflict.local,
                remote: conflict.remote,
                base: conflict.base,
                peer: conflict.peer,
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
                self.puller.conflicts.remove(&(c.timeline.clone(), c.peer));
                self.emit(Event::TimelineUpdated {
                    timeline: c.timeline.clone(),
                    old: Some(c.local),
                    new: c.remote,
                    peer: c.peer,
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
        let peer = pull.peer;
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
                                self.puller.peers.entry(peer).or_default().timelines_created += 1;
                            }
                            self.emit(Event::TimelineUpdated {
                                timeline: t.clone(),
                                old: u.expected,
                                new: u.new,
                                peer,
                            });
                            self.puller.conflicts.remove(&(t.clone(), peer));
                        }
                        (RefName::Tracking { timeline, .. }, UpdateResult::Applied) => {
                            self.tracking_landed(&peer, timeline, u.new)
                        }
                        (RefName::Kept { .. }, UpdateResult::Applied) => {}
                        (_, UpdateResult::Moved(_)) => retry = true,
                    }
                }
                if let Some(rec) = self.puller.peers.get_mut(&peer) {
                    for t in moved {
                        rec.heads_seen.remove(&t);
                    }
                }
                for conflict in &pull.conflicts {
                    let key = (conflict.timeline.clone(), peer);
                    if self.puller.conflicts.get(&key) != Some(conflict) {
                        self.out.stats.conflicts += 1;
                        self.puller.conflicts.insert(key, conflict.clone());
                        self.emit(Event::ConflictDetected {
                            timeline: conflict.timeline.clone(),
                            local: conflict.local,
                            remote: conflict.remote,
                            base: conflict.base,
                            peer,
                        });
                    }
                }
                for (conflict, head) in &pull.resolved {
                    self.puller
                        .conflicts
                        .remove(&(conflict.timeline.clone(), peer));
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
                    self.out
                        .queue
                        .push_back(Output::Store(StoreRequest::Resume {
                            peer: peer.to_hex(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdMap;
    use crate::object::Timestamp;

    /// A history: `root` ← `ours` and `root` ← `theirs` (diverged), and
    /// `ahead` on top of `theirs`.
    struct History {
        seals: IdMap<Seal>,
        root: ObjectId,
        ours: ObjectId,
        theirs: ObjectId,
        ahead: ObjectId,
    }

    fn history() -> History {
        let id = |n: u8| ObjectId([n; 32]);
        let seal = |parents: Vec<ObjectId>, seconds: i64| Seal {
            git: None,
            tree: ObjectId([0; 32]),
            parents,
            author: "a".into(),
            time: Timestamp {
                seconds,
                offset_minutes: 0,
            },
            message: String::new(),
        };
        let mut seals = IdMap::default();
        seals.insert(id(1), seal(vec![], 1));
        seals.insert(id(2), seal(vec![id(1)], 2));
        seals.insert(id(3), seal(vec![id(1)], 3));
        seals.insert(id(4), seal(vec![id(3)], 4));
        History {
            seals,
            root: id(1),
            ours: id(2),
            theirs: id(3),
            ahead: id(4),
        }
    }

    fn name(s: &str) -> TimelineName {
        TimelineName::new(s).expect("a valid name")
    }

    fn plan(
        h: &History,
        targets: &[(&str, ObjectId)],
        local: &[(&str, ObjectId)],
        seen: &[(&str, ObjectId)],
        default: ConflictStrategy,
    ) -> LandingPlan {
        let map = |v: &[(&str, ObjectId)]| -> BTreeMap<TimelineName, ObjectId> {
            v.iter().map(|(t, id)| (name(t), *id)).collect()
        };
        let (targets, local, seen) = (map(targets), map(local), map(seen));
        let timelines = BTreeMap::new();
        let strategies = Strategies {
            default,
            timelines: &timelines,
            theirs: None,
        };
        let has = |id: &ObjectId| h.seals.contains_key(id);
        let mut lookup = |id: &ObjectId| h.seals.get(id).cloned().ok_or(StoreError::Missing(*id));
        let heads = Heads {
            targets: &targets,
            local: &local,
            seen: &seen,
        };
        plan_landing(&NodeId([7; 32]), heads, &strategies, &has, &mut lookup)
    }

    fn timeline_update(p: &LandingPlan, t: &str) -> Option<(Option<ObjectId>, ObjectId)> {
        p.updates
            .iter()
            .find(|u| u.name == RefName::Timeline(name(t)))
            .map(|u| (u.expected, u.new))
    }

    #[test]
    fn a_new_timeline_is_created_and_an_old_one_fast_forwarded() {
        let h = history();
        let p = plan(
            &h,
            &[("new", h.theirs), ("main", h.ahead)],
            &[("main", h.theirs)],
            &[],
            ConflictStrategy::Manual,
        );
        assert_eq!(timeline_update(&p, "new"), Some((None, h.theirs)));
        assert_eq!(timeline_update(&p, "main"), Some((Some(h.theirs), h.ahead)));
        // Both tracking names are recorded too, and nothing diverged.
        assert_eq!(p.updates.len(), 4);
        assert!(p.conflicts.is_empty() && p.failure.is_none());
    }

    #[test]
    fn a_head_already_seen_writes_no_tracking_name_and_ours_ahead_settles() {
        let h = history();
        let p = plan(
            &h,
            &[("main", h.theirs)],
            &[("main", h.ahead)],
            &[("main", h.theirs)],
            ConflictStrategy::Manual,
        );
        assert!(p.updates.is_empty());
        assert_eq!(p.settled, vec![name("main")]);
    }

    #[test]
    fn a_divergence_follows_the_strategy() {
        let h = history();
        let diverged = |s| plan(&h, &[("main", h.theirs)], &[("main", h.ours)], &[], s);
        let manual = diverged(ConflictStrategy::Manual);
        assert_eq!(manual.conflicts.len(), 1);
        assert_eq!(manual.conflicts[0].base, Some(h.root));
        assert_eq!(timeline_update(&manual, "main"), None);
        let local = diverged(ConflictStrategy::PreferLocal);
        assert_eq!(local.resolved[0].1, h.ours);
        assert_eq!(timeline_update(&local, "main"), None);
        // Taking theirs keeps ours under `kept/...`: nothing is lost.
        let remote = diverged(ConflictStrategy::PreferRemote);
        assert_eq!(
            timeline_update(&remote, "main"),
            Some((Some(h.ours), h.theirs))
        );
        let kept = format!("kept/main/{}", h.ours.short());
        assert_eq!(timeline_update(&remote, &kept), Some((None, h.ours)));
        assert_eq!(diverged(ConflictStrategy::AutoMerge).merges.len(), 1);
    }

    #[test]
    fn a_seal_the_peer_did_not_send_is_its_fault_and_stops_the_plan() {
        let h = history();
        let missing = ObjectId([9; 32]);
        let p = plan(
            &h,
            &[("a", h.theirs), ("b", missing)],
            &[("a", h.ahead)],
            &[],
            ConflictStrategy::Manual,
        );
        let (reason, local) = p.failure.expect("a failure");
        assert!(reason.contains("did not send") && !local, "{reason}");
        // What was decided before the failure is still reported.
        assert_eq!(p.settled, vec![name("a")]);
    }
}
