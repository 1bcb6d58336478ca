//! The invariant checks the world runs as it goes (closure and lost seals
//! after every store change, bounded queues at every audit) and the ones a
//! scenario runs at its end (convergence, every seal reachable), with the
//! counters a report reads.

use ivaldi_core::config::ConflictStrategy;
use ivaldi_core::id::ObjectId;
use ivaldi_core::store::{Store, StoreRequest};
use ivaldi_core::timeline::TimelineName;

use super::{Ev, Life, QUEUED_BOUND, Sim, SimNode, Totals};
use crate::config::Workload;
use crate::invariants::Kind;
use crate::store::Changes;

impl Sim {
    /// Runs the invariant checks a store mutation calls for.
    pub(crate) fn after_changes(&mut self, i: usize, changes: Changes) {
        if let Some(why) = changes.refused {
            self.violation(
                Kind::Closure,
                Some(i),
                format!("store refused a write that would break closure: {why}"),
            );
        }
        self.graph.add(changes.seals);
        let mut full = false;
        for (name, old, new) in &changes.moves {
            if let Some(old) = old
                && !self.graph.is_ancestor(old, new)
            {
                if self.trace.enabled() {
                    self.trace_line(
                        Some(i),
                        &format!(
                            "ref {name:?} moved off its history: {} -> {}",
                            old.short(),
                            new.short()
                        ),
                    );
                }
                full = true;
            }
        }
        if full {
            self.check_made(i);
        }
    }

    /// Every seal node `i`'s user made must be reachable from its refs.
    pub(crate) fn check_made(&mut self, i: usize) {
        let sn = &self.nodes[i];
        if sn.made.is_empty() {
            return;
        }
        let reach = self.graph.reachable(sn.store.ref_targets());
        let lost: Vec<ObjectId> = sn
            .made
            .iter()
            .filter(|s| !reach.contains(*s))
            .copied()
            .collect();
        if let Some(first) = lost.first() {
            self.violation(
                Kind::SealLost,
                Some(i),
                format!(
                    "{} seal(s) made here are no longer reachable from any ref, e.g. {}",
                    lost.len(),
                    first.short()
                ),
            );
        }
    }

    pub(super) fn audit(&mut self) {
        let mut found = Vec::new();
        for sn in &self.nodes {
            let Some(node) = sn.node.as_ref() else {
                continue;
            };
            let peers = node.peers();
            let max_peers = sn.cfg.connections.max_peers;
            if peers.len() > 2 * max_peers + 8 {
                found.push((
                    sn.index,
                    format!("{} connections (max_peers {max_peers})", peers.len()),
                ));
            }
            if let Some(p) = peers.iter().max_by_key(|p| p.queued_bytes)
                && p.queued_bytes > QUEUED_BOUND
            {
                found.push((
                    sn.index,
                    format!("{} bytes queued on conn {}", p.queued_bytes, p.conn),
                ));
            }
            let (batches, _) = sn.store.staged();
            let limit = 2 * sn.cfg.sync.max_concurrent_syncs + 4;
            if batches > limit {
                found.push((
                    sn.index,
                    format!("{batches} staged batches in the store (limit {limit}): a leak"),
                ));
            }
            // The discovery table is copied to be counted: check it less often.
            if self.step.is_multiple_of(16) && node.discovered().len() > 1024 {
                found.push((sn.index, "discovery table above 1024 entries".into()));
            }
        }
        let events_bound = 20_000 * self.nodes.len() + 100_000;
        if self.queue.len() > events_bound {
            found.push((usize::MAX, format!("{} events queued", self.queue.len())));
        }
        for (i, detail) in found {
            let node = (i != usize::MAX).then_some(i);
            self.violation(Kind::Unbounded, node, detail);
        }
        let every = self.cfg.audit_every;
        self.schedule(every, Ev::Audit);
    }

    /// Whether every node that is up (and holds the repository) holds
    /// identical timeline heads.
    pub fn converged(&self) -> bool {
        let mut ups = self
            .nodes
            .iter()
            .filter(|n| n.is_up() && self.holds_repo(n.index));
        let Some(first) = ups.next() else {
            return true;
        };
        let heads = first.store.timelines();
        ups.all(|n| n.store.timelines() == heads)
    }

    /// The first difference between two up nodes' heads, for a report.
    pub fn divergence(&self) -> Option<String> {
        let ups: Vec<&SimNode> = self
            .nodes
            .iter()
            .filter(|n| n.is_up() && self.holds_repo(n.index))
            .collect();
        let first = ups.first()?;
        let a = first.store.timelines();
        for n in &ups[1..] {
            let b = n.store.timelines();
            if a == b {
                continue;
            }
            for t in a.keys().chain(b.keys()) {
                if a.get(t) != b.get(t) {
                    let show = |x: Option<&ObjectId>| x.map_or("none".into(), |i| i.short());
                    return Some(format!(
                        "timeline {t}: n{} has {}, n{} has {} ({} of {} nodes differ from n{})",
                        first.index,
                        show(a.get(t)),
                        n.index,
                        show(b.get(t)),
                        ups.iter().filter(|m| m.store.timelines() != a).count(),
                        ups.len(),
                        first.index
                    ));
                }
            }
        }
        None
    }

    /// After the heal: every seal made by a node still in the network is
    /// reachable on every up node that has its timeline.
    pub fn check_all_seals(&mut self) {
        let mut problems = Vec::new();
        for sn in self.nodes.iter().filter(|n| n.is_up()) {
            let reach = self.graph.reachable(sn.store.ref_targets());
            let mut missing = 0usize;
            let mut example = None;
            for (seal, maker, tl) in &self.made {
                if self.nodes[*maker].life == Life::Left || !sn.store.knows_timeline(tl) {
                    continue;
                }
                if !reach.contains(seal) {
                    missing += 1;
                    example.get_or_insert((*seal, *maker, tl.clone()));
                }
            }
            if let Some((seal, maker, tl)) = example {
                problems.push((
                    sn.index,
                    format!(
                        "after the heal, {missing} seal(s) of timelines it has are unreachable, e.g. {} made by n{maker} on {tl}",
                        seal.short()
                    ),
                ));
            }
        }
        for (i, d) in problems {
            self.violation(Kind::SealLost, Some(i), d);
        }
    }

    /// Whether the liveness phase must reach identical heads: always for
    /// non-diverging workloads, and for diverging ones only under a strategy
    /// that resolves divergence, or with users who resolve conflicts.
    pub fn convergence_expected(&self) -> bool {
        self.cfg.workload == Workload::Own
            || self.cfg.resolvers
            || matches!(
                self.cfg.strategy,
                ConflictStrategy::AutoMerge
                    | ConflictStrategy::PreferRemote
                    | ConflictStrategy::PreferLocal
            )
    }

    /// Counters of every incarnation of every node, live ones included.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for sn in &self.nodes {
            for (k, v) in &sn.past.messages_out {
                *t.messages_out.entry(k.clone()).or_default() += v;
            }
            t.bytes_out += sn.past.bytes_out;
            t.syncs_completed += sn.past.syncs_completed;
            t.syncs_failed += sn.past.syncs_failed;
            t.conflicts += sn.past.conflicts;
            t.protocol_violations += sn.past.protocol_violations;
            t.duplicate_messages += sn.past.duplicate_messages;
            t.objects_in += sn.past.objects_in;
            if let Some(n) = &sn.node {
                t.absorb(n.stats());
            }
        }
        t
    }

    /// Largest number of events ever queued at once.
    pub fn peak_queue(&self) -> usize {
        self.peak_queue
    }

    /// Distinct objects and bytes in the shared pool.
    pub fn pool_size(&self) -> (usize, usize) {
        self.pool.size()
    }

    /// Reads that failed by injection, over all stores.
    pub fn read_failures(&self) -> u64 {
        self.nodes.iter().map(|n| n.store.reads_failed()).sum()
    }

    /// Head of a timeline on a node.
    pub fn head(&self, i: usize, timeline: &str) -> Option<ObjectId> {
        let t = TimelineName::new(timeline).ok()?;
        self.nodes[i].store.heads().ok()?.get(&t).copied()
    }

    /// Whether the next write node `i`'s store carries out is a `Land`.
    pub fn landing_next(&self, i: usize) -> bool {
        matches!(
            self.nodes[i].store_q.front(),
            Some((_, StoreRequest::Land { .. }))
        )
    }

    /// Writes queued in node `i`'s store, not yet carried out.
    pub fn pending_writes(&self, i: usize) -> usize {
        self.nodes[i].store_q.len()
    }

    /// Queues a store write on node `i` as if its node had asked for it (a test
    /// hook: this is how a test makes a buggy core's request to check that the
    /// invariants catch it).
    #[doc(hidden)]
    pub fn inject_store_request(&mut self, i: usize, req: StoreRequest) {
        self.enqueue_store(i, req);
    }

    /// Sets node `i`'s store faults (failures, delays).
    pub fn set_store_faults(&mut self, i: usize, faults: crate::store::StoreFaults) {
        self.nodes[i].store.faults = faults;
    }
}
