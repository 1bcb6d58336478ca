//! Fault injection: partitions (by groups and one-way), cut links, held
//! messages, crashes and restarts, store errors and delays, clock skew, and
//! nodes joining and leaving.
//!
//! Every fault the random scenario injects schedules its own undo; [`Sim::heal`]
//! undoes everything at once and makes pending undos stale (they carry the heal
//! epoch they were made in).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::config::Fault;
use crate::sim::{Ev, Life, Sim};
use crate::store::StoreFaults;

/// A fault event.
pub(crate) enum FaultEv {
    /// Inject one random fault, and schedule the next.
    Random,
    /// Split into groups (scripted scenarios).
    Split(Vec<u32>),
    Undo {
        epoch: u64,
        undo: Undo,
    },
}

pub(crate) enum Undo {
    Partition(u64),
    OneWay(u64),
    Uncut(usize, usize),
    Release(usize),
    Restart(usize),
    StoreOk(usize),
}

impl Sim {
    pub(crate) fn on_fault(&mut self, f: FaultEv) {
        match f {
            FaultEv::Random => {
                if !self.faults_on {
                    return;
                }
                self.random_fault();
                let mean = self.cfg.fault_every;
                let next = self.between(Duration::from_millis(1), mean * 2);
                self.schedule(next, Ev::Fault(FaultEv::Random));
            }
            FaultEv::Split(groups) => self.partition(&groups),
            FaultEv::Undo { epoch, undo } => {
                if epoch == self.heal_epoch {
                    self.undo(undo);
                }
            }
        }
    }

    /// Starts injecting random faults from the enabled set.
    pub fn start_faults(&mut self, after: Duration) {
        self.faults_on = true;
        self.schedule(after, Ev::Fault(FaultEv::Random));
    }

    /// Schedules a partition into the given groups (one group id per node).
    pub fn split_at(&mut self, after: Duration, groups: Vec<u32>) {
        self.schedule(after, Ev::Fault(FaultEv::Split(groups)));
    }

    fn undo_later(&mut self, lo: Duration, hi: Duration, undo: Undo) {
        let after = self.between(lo, hi);
        let epoch = self.heal_epoch;
        self.schedule(after, Ev::Fault(FaultEv::Undo { epoch, undo }));
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
        for (i, g) in self.net.groups.iter_mut().enumerate() {
            *g = groups.get(i).copied().unwrap_or(0);
        }
        self.net.partition_epoch += 1;
        if self.trace.enabled() {
            let mut sets: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
            for (i, g) in self.net.groups.iter().enumerate() {
                sets.entry(*g).or_default().push(i);
            }
            let text: Vec<String> = sets.values().map(|v| format!("{v:?}")).collect();
            self.trace_line(None, &format!("PARTITION {}", text.join(" | ")));
        }
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
        self.heal_epoch += 1;
        self.net.groups.iter_mut().for_each(|g| *g = 0);
        self.net.partition_epoch += 1;
        self.net.blocked.clear();
        self.net.oneway_epoch += 1;
        self.net.cut.clear();
        self.net.held.clear();
        self.net.held_from.clear();
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

    fn random_up(&mut self) -> Option<usize> {
        let ups = self.up_nodes();
        (!ups.is_empty()).then(|| ups[self.rng.below(ups.len() as u64) as usize])
    }

    fn random_fault(&mut self) {
        let kinds = self.cfg.faults.list();
        if kinds.is_empty() {
            return;
        }
        let kind = kinds[self.rng.below(kinds.len() as u64) as usize];
        self.counters.faults += 1;
        let n = self.nodes.len();
        match kind {
            Fault::Partition => {
                let k = 2 + self.rng.below(2) as u32;
                let groups: Vec<u32> = (0..n)
                    .map(|_| self.rng.below(u64::from(k)) as u32)
                    .collect();
                self.partition(&groups);
                let epoch = self.net.partition_epoch;
                self.undo_later(
                    Duration::from_secs(10),
                    Duration::from_secs(60),
                    Undo::Partition(epoch),
                );
            }
            Fault::OneWay => {
                let size = 1 + self.rng.below((n as u64 / 3).max(1)) as usize;
                let mut set = BTreeSet::new();
                while set.len() < size.min(n) {
                    set.insert(self.rng.below(n as u64) as usize);
                }
                let outbound = self.rng.below(2) == 0;
                self.net.blocked.clear();
                for a in &set {
                    for b in (0..n).filter(|b| !set.contains(b)) {
                        let pair = if outbound { (*a, b) } else { (b, *a) };
                        self.net.blocked.insert(pair);
                    }
                }
                self.net.oneway_epoch += 1;
                let epoch = self.net.oneway_epoch;
                let dir = if outbound { "to" } else { "from" };
                self.trace_line(
                    None,
                    &format!("ONE-WAY: traffic {dir} the others dropped for {set:?}"),
                );
                self.undo_later(
                    Duration::from_secs(10),
                    Duration::from_secs(40),
                    Undo::OneWay(epoch),
                );
            }
            Fault::Cut => {
                // Prefer a link that exists.
                let live: Vec<(usize, usize)> = self
                    .net
                    .socks
                    .values()
                    .filter(|s| s.accepted && s.ends.iter().all(|e| e.open))
                    .map(|s| (s.ends[0].node, s.ends[1].node))
                    .filter(|(a, b)| a != b)
                    .collect();
                let pair = if live.is_empty() {
                    let a = self.rng.below(n as u64) as usize;
                    let b = self.rng.below(n as u64) as usize;
                    (a, b)
                } else {
                    live[self.rng.below(live.len() as u64) as usize]
                };
                if pair.0 == pair.1 {
                    return;
                }
                let (a, b) = (pair.0.min(pair.1), pair.0.max(pair.1));
                self.cut_link(a, b);
                self.undo_later(
                    Duration::from_secs(5),
                    Duration::from_secs(30),
                    Undo::Uncut(a, b),
                );
            }
            Fault::Hold => {
                let Some(a) = self.random_up() else { return };
                self.net.held_from.insert(a);
                self.trace_line(Some(a), "HOLD: messages in flight from here held");
                self.undo_later(
                    Duration::from_secs(1),
                    Duration::from_secs(25),
                    Undo::Release(a),
                );
            }
            Fault::Crash => {
                let down = self
                    .nodes
                    .iter()
                    .filter(|x| x.life == Life::Crashed)
                    .count();
                if down >= (n / 5).max(1) {
                    return;
                }
                // Aim at a node in the middle of a write half the time, and at
                // one about to land a batch half of that: that is where crashes
                // find bugs ("buggify").
                let ups = self.up_nodes();
                let landing: Vec<usize> = ups
                    .iter()
                    .copied()
                    .filter(|i| self.landing_next(*i))
                    .collect();
                let busy: Vec<usize> = ups
                    .iter()
                    .copied()
                    .filter(|i| self.pending_writes(*i) > 0 || self.nodes[*i].store.staged().0 > 0)
                    .collect();
                let pick = |sim: &mut Sim, v: &[usize]| v[sim.rng.below(v.len() as u64) as usize];
                let a = if !landing.is_empty() && self.rng.below(4) == 0 {
                    pick(self, &landing)
                } else if !busy.is_empty() && self.rng.below(3) == 0 {
                    pick(self, &busy)
                } else {
                    let Some(a) = self.random_up() else { return };
                    a
                };
                let silent = self.rng.below(2) == 0;
                self.crash(a, silent);
                self.undo_later(
                    Duration::from_secs(2),
                    Duration::from_secs(60),
                    Undo::Restart(a),
                );
            }
            Fault::Store => {
                let Some(a) = self.random_up() else { return };
                self.nodes[a].store.faults = StoreFaults {
                    land_fail_ppm: 300_000,
                    read_fail_ppm: 2_000,
                    max_delay_us: 3_000_000,
                };
                self.trace_line(Some(a), "STORE faults: failing landings and reads, delays");
                self.undo_later(
                    Duration::from_secs(10),
                    Duration::from_secs(60),
                    Undo::StoreOk(a),
                );
            }
            Fault::Skew => {
                let Some(a) = self.random_up() else { return };
                let now = self.now;
                if self.rng.below(2) == 0 {
                    let ppm = 100 + self.rng.below(50_000) as i64;
                    let ppm = if self.rng.below(2) == 0 { ppm } else { -ppm };
                    self.nodes[a].clock.set_rate(now, ppm);
                    self.trace_line(Some(a), &format!("SKEW: clock rate {ppm:+} ppm"));
                } else {
                    let jump = self.between(Duration::from_millis(100), Duration::from_secs(10));
                    self.nodes[a].clock.jump(now, jump.as_micros() as u64);
                    self.trace_line(Some(a), &format!("SKEW: clock jumps {jump:?} forward"));
                }
                // Deadlines moved in virtual time: wake the node to re-arm.
                self.input(a, |_, _, _| {});
            }
            Fault::Churn => {
                let ups = self.up_nodes().len();
                let initial = self.cfg.nodes;
                let leave = self.rng.below(2) == 0;
                if leave && ups > 3 && (self.counters.leaves as usize) < initial / 4 {
                    if let Some(a) = self.random_up() {
                        self.leave(a);
                    }
                } else if (self.counters.joins as usize) < initial / 2 + 1 {
                    self.join();
                }
            }
        }
    }
}
