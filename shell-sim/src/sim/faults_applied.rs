//! Faults carried out: [`Faults`](crate::faults::Faults) draws them, the
//! world applies them to its nodes and network and schedules their undo.
//! Crashes, restarts, leaves and joins are here too, as the scripted
//! scenarios and tests use them directly.

use std::time::Duration;

use ivaldi_core::store::StoreRequest;

use super::{Ev, Life, Sim};
use crate::faults::{self, FAILING_STORE, FaultEv, Plan, Undo, View};
use crate::net::SegKind;
use crate::store::{LandMode, StoreFaults};

impl Sim {
    pub(super) fn on_fault(&mut self, f: FaultEv) {
        match f {
            FaultEv::Random => {
                if !self.faults.on {
                    return;
                }
                self.random_fault();
                let mean = self.cfg.fault_every;
                let next = self.between(Duration::from_millis(1), mean * 2);
                self.schedule(next, Ev::Fault(FaultEv::Random));
            }
            FaultEv::Split(groups) => self.partition(&groups),
            FaultEv::Undo { epoch, undo } => {
                if self.faults.is_current(epoch) {
                    self.undo(undo);
                }
            }
        }
    }

    /// Starts injecting random faults from the enabled set.
    pub fn start_faults(&mut self, after: Duration) {
        self.faults.on = true;
        self.schedule(after, Ev::Fault(FaultEv::Random));
    }

    /// Stops injecting random faults (those in force stay until healed).
    pub fn stop_faults(&mut self) {
        self.faults.on = false;
    }

    /// Schedules a partition into the given groups (one group id per node).
    pub fn split_at(&mut self, after: Duration, groups: Vec<u32>) {
        self.schedule(after, Ev::Fault(FaultEv::Split(groups)));
    }

    fn undo_later(&mut self, (lo, hi): (Duration, Duration), undo: Undo) {
        let after = self.between(lo, hi);
        let ev = self.faults.undo_event(undo);
        self.schedule(after, Ev::Fault(ev));
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Partition(epoch) => {
                if self.net.partition_epoch == epoch {
                    self.net.groups.iter_mut().for_each(|g| *g = 0);
                    self.trace_line(None, "partition healed");
                    self.kick();
                }
            }
            Undo::OneWay(epoch) => {
                if self.net.oneway_epoch == epoch {
                    self.net.blocked.clear();
                    self.trace_line(None, "one-way partition healed");
                    self.kick();
                }
            }
            Undo::Uncut(a, b) => self.restore_link(a, b),
            Undo::Release(a) => {
                self.net.held_from.remove(&a);
                self.trace_line(Some(a), "held messages released");
                self.kick();
            }
            Undo::Restart(i) => self.restart(i),
            Undo::StoreOk(i) => {
                self.nodes[i].store.faults = StoreFaults::default();
                self.trace_line(Some(i), "store healthy again");
            }
        }
    }

    /// Partitions the nodes: `groups[i]` is node `i`'s group (missing: 0).
    pub fn partition(&mut self, groups: &[u32]) {
        let text = faults::partition(&mut self.net, groups);
        self.trace_line(None, &format!("PARTITION {text}"));
    }

    /// Cuts the link between `a` and `b` until [`restore_link`](Self::restore_link)
    /// or the heal: every connection between them is reset (both ends told at
    /// once, in-flight bytes lost) and the pair is blocked both ways.
    pub fn cut_link(&mut self, a: usize, b: usize) {
        let (a, b) = (a.min(b), a.max(b));
        if a == b {
            return;
        }
        self.net.cut.insert((a, b));
        self.trace_line(None, &format!("CUT link n{a}-n{b}"));
        self.reset_pair(a, b, "connection reset (link cut)");
    }

    /// Lifts the cut between `a` and `b` (the nodes redial by themselves).
    pub fn restore_link(&mut self, a: usize, b: usize) {
        let (a, b) = (a.min(b), a.max(b));
        self.net.cut.remove(&(a, b));
        self.trace_line(None, &format!("link n{a}-n{b} restored"));
        self.kick();
    }

    /// Ends every fault: partitions, one-way blocks, cuts and holds are lifted,
    /// crashed nodes restart, stores become healthy. Clock rates stay as they are
    /// (a real clock keeps its skew). Pending undos become no-ops.
    pub fn heal(&mut self) {
        self.faults.heal();
        faults::lift_all(&mut self.net);
        for sn in &mut self.nodes {
            sn.store.faults = StoreFaults::default();
        }
        self.trace_line(None, "HEAL: all faults lifted");
        let crashed: Vec<usize> = self
            .nodes
            .iter()
            .filter(|n| n.life == Life::Crashed)
            .map(|n| n.index)
            .collect();
        for i in crashed {
            self.restart(i);
        }
        self.kick();
    }

    /// What the fault chooser needs to know of the world now.
    fn fault_view(&self) -> View {
        let up = self.up_nodes();
        View {
            nodes: self.nodes.len(),
            initial: self.cfg.nodes,
            crashed: self
                .nodes
                .iter()
                .filter(|x| x.life == Life::Crashed)
                .count(),
            live_links: self
                .net
                .socks
                .values()
                .filter(|s| s.accepted && s.ends.iter().all(|e| e.open))
                .map(|s| (s.ends[0].node, s.ends[1].node))
                .filter(|(a, b)| a != b)
                .collect(),
            landing: up
                .iter()
                .copied()
                .filter(|i| self.landing_next(*i))
                .collect(),
            busy: up
                .iter()
                .copied()
                .filter(|i| self.pending_writes(*i) > 0 || self.nodes[*i].store.staged().0 > 0)
                .collect(),
            joins: self.counters.joins,
            leaves: self.counters.leaves,
            up,
        }
    }

    fn random_fault(&mut self) {
        let kinds = self.cfg.faults.list();
        if kinds.is_empty() {
            return;
        }
        let view = self.fault_view();
        // Counted when drawn, as before: a draw that cannot happen now counts.
        self.counters.faults += 1;
        let Some(plan) = self.faults.choose(&kinds, &view, &mut self.rng) else {
            return;
        };
        let lasts = plan.lasts();
        let undo = self.apply(plan);
        if let (Some(window), Some(undo)) = (lasts, undo) {
            self.undo_later(window, undo);
        }
    }

    /// Carries out a drawn fault; returns how to undo it.
    fn apply(&mut self, plan: Plan) -> Option<Undo> {
        match plan {
            Plan::Partition(groups) => {
                self.partition(&groups);
                Some(Undo::Partition(self.net.partition_epoch))
            }
            Plan::OneWay { set, outbound } => {
                let epoch = faults::one_way(&mut self.net, self.nodes.len(), &set, outbound);
                let dir = if outbound { "to" } else { "from" };
                self.trace_line(
                    None,
                    &format!("ONE-WAY: traffic {dir} the others dropped for {set:?}"),
                );
                Some(Undo::OneWay(epoch))
            }
            Plan::Cut(a, b) => {
                self.cut_link(a, b);
                Some(Undo::Uncut(a, b))
            }
            Plan::Hold(a) => {
                self.net.held_from.insert(a);
                self.trace_line(Some(a), "HOLD: messages in flight from here held");
                Some(Undo::Release(a))
            }
            Plan::Crash { node, silent } => {
                self.crash(node, silent);
                Some(Undo::Restart(node))
            }
            Plan::Store(a) => {
                self.nodes[a].store.faults = FAILING_STORE;
                self.trace_line(Some(a), "STORE faults: failing landings and reads, delays");
                Some(Undo::StoreOk(a))
            }
            Plan::SkewRate { node, ppm } => {
                let now = self.now;
                self.nodes[node].clock.set_rate(now, ppm);
                self.trace_line(Some(node), &format!("SKEW: clock rate {ppm:+} ppm"));
                // Deadlines moved in virtual time: wake the node to re-arm.
                self.input(node, |_, _, _| {});
                None
            }
            Plan::SkewJump { node, by } => {
                let now = self.now;
                self.nodes[node].clock.jump(now, by.as_micros() as u64);
                self.trace_line(Some(node), &format!("SKEW: clock jumps {by:?} forward"));
                self.input(node, |_, _, _| {});
                None
            }
            Plan::Leave(a) => {
                self.leave(a);
                None
            }
            Plan::Join => {
                self.join();
                None
            }
        }
    }

    /// Crashes node `i`. Volatile state is lost, and so are staged batches and
    /// queued writes; a `Land` being written may be cut short after its objects
    /// and some of its head updates. `silent`: the machine lost power, so peers
    /// get no reset and find out by their heartbeats.
    pub fn crash(&mut self, i: usize, silent: bool) {
        if !self.nodes[i].is_up() {
            return;
        }
        self.counters.crashes += 1;
        if let Some(n) = self.nodes[i].node.take() {
            self.nodes[i].past.absorb(n.stats());
        }
        let mut partial = None;
        if let Some((_, StoreRequest::Land { .. })) = self.nodes[i].store_q.front()
            && self.rng.below(2) == 0
            && let Some((_, StoreRequest::Land { batch, updates })) =
                self.nodes[i].store_q.pop_front()
        {
            let k = self.rng.below(updates.len() as u64 + 1) as usize;
            partial = Some((k, updates.len()));
            self.counters.partial_lands += 1;
            let sn = &mut self.nodes[i];
            let (_, changes) = sn
                .store
                .land(batch, updates, &mut self.pool, LandMode::Partial(k));
            self.after_changes(i, changes);
        }
        let sn = &mut self.nodes[i];
        sn.store_q.clear();
        let lost = sn.store.crash();
        self.counters.lost_batches += lost as u64;
        sn.life = Life::Crashed;
        sn.inc += 1;
        sn.timer = None;
        sn.timer_gen += 1;
        let signal = (!silent).then(|| SegKind::Rst("connection reset (peer crashed)".into()));
        self.kill_ends(i, signal);
        if self.trace.enabled() {
            let how = if silent {
                "power loss"
            } else {
                "process crash"
            };
            let cut = partial.map_or(String::new(), |(k, m)| {
                format!(", a landing cut short after its objects and {k} of {m} head updates")
            });
            self.trace_line(
                Some(i),
                &format!("CRASH ({how}): {lost} staged batch(es) lost{cut}"),
            );
        }
    }

    /// Restarts a crashed node: same key and store, new volatile state.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].life != Life::Crashed {
            return;
        }
        self.counters.restarts += 1;
        self.trace_line(Some(i), "RESTART");
        self.start(i);
    }

    /// Node `i` leaves for good: connections closed, pending writes dropped.
    pub fn leave(&mut self, i: usize) {
        if !self.nodes[i].is_up() {
            return;
        }
        self.counters.leaves += 1;
        if let Some(n) = self.nodes[i].node.take() {
            self.nodes[i].past.absorb(n.stats());
        }
        let sn = &mut self.nodes[i];
        sn.store_q.clear();
        sn.store.crash();
        sn.life = Life::Left;
        sn.inc += 1;
        sn.timer = None;
        sn.timer_gen += 1;
        self.kill_ends(i, Some(SegKind::Fin("peer shut down".into())));
        self.trace_line(Some(i), "LEAVE");
    }

    /// A new node joins, knowing a few random nodes that are up.
    pub fn join(&mut self) -> usize {
        let ups: Vec<usize> = self.up_nodes();
        let mut known = Vec::new();
        for _ in 0..self.cfg.net.known_degree.max(1) {
            if ups.is_empty() {
                break;
            }
            let j = ups[self.rng.below(ups.len() as u64) as usize];
            if !known.contains(&j) {
                known.push(j);
            }
        }
        self.counters.joins += 1;
        let i = self.nodes.len();
        self.now_trace(Some(i), format!("JOIN knowing {known:?}"));
        self.spawn(known)
    }

    fn now_trace(&mut self, node: Option<usize>, text: String) {
        if self.trace.enabled() {
            self.trace_line(node, &text);
        }
    }
}
