//! Fault injection: partitions (by groups and one-way), cut links, held
//! messages, crashes and restarts, store errors and delays, clock skew, and
//! nodes joining and leaving.
//!
//! `Faults` decides: whether faults are on, which random fault comes next
//! (a `Plan`, drawn from the world's one random stream and a `View` of the
//! world), and whether an undo is still current. The world
//! (`sim/faults_applied.rs`) carries a plan out and schedules its undo. Every
//! fault the random scenario injects schedules its own undo; a heal undoes
//! everything at once and makes pending undos stale (they carry the heal epoch
//! they were made in). The network-level effects are applied here, on the
//! `Net` alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ivaldi_core::rng::Rng;

use crate::config::Fault;
use crate::net::Net;
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

/// How a fault is undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Undo {
    Partition(u64),
    OneWay(u64),
    Uncut(usize, usize),
    Release(usize),
    Restart(usize),
    StoreOk(usize),
}

/// One random fault, as drawn; the world carries it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `groups[i]` is node `i`'s group.
    Partition(Vec<u32>),
    /// Traffic from (`outbound`) or to the nodes in `set` is dropped.
    OneWay {
        set: BTreeSet<usize>,
        outbound: bool,
    },
    Cut(usize, usize),
    Hold(usize),
    Crash {
        node: usize,
        silent: bool,
    },
    Store(usize),
    SkewRate {
        node: usize,
        ppm: i64,
    },
    SkewJump {
        node: usize,
        by: Duration,
    },
    Leave(usize),
    Join,
}

/// What the fault chooser needs to know of the world.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    /// Nodes ever spawned.
    pub nodes: usize,
    /// Nodes at the start.
    pub initial: usize,
    pub up: Vec<usize>,
    pub crashed: usize,
    /// Open, accepted connections between two distinct nodes.
    pub live_links: Vec<(usize, usize)>,
    /// Up nodes whose next store write is a landing.
    pub landing: Vec<usize>,
    /// Up nodes with writes queued or staged.
    pub busy: Vec<usize>,
    pub joins: u64,
    pub leaves: u64,
}

/// The store faults of [`Plan::Store`].
pub(crate) const FAILING_STORE: StoreFaults = StoreFaults {
    land_fail_ppm: 300_000,
    read_fail_ppm: 2_000,
    max_delay_us: 3_000_000,
};

/// Whether random faults are on, and the heal epoch.
#[derive(Clone, Debug, Default)]
pub(crate) struct Faults {
    pub on: bool,
    epoch: u64,
}

impl Faults {
    /// Makes every undo scheduled so far stale.
    pub(crate) fn heal(&mut self) {
        self.epoch += 1;
    }

    /// The event that undoes a fault, unless a heal comes first.
    pub(crate) fn undo_event(&self, undo: Undo) -> FaultEv {
        FaultEv::Undo {
            epoch: self.epoch,
            undo,
        }
    }

    /// Whether an undo made in `epoch` still applies (no heal since).
    pub(crate) fn is_current(&self, epoch: u64) -> bool {
        epoch == self.epoch
    }

    /// Draws the next random fault of the enabled `kinds`; `None` when the
    /// draw falls on one that cannot happen now (say, a crash with enough
    /// nodes down already).
    pub(crate) fn choose(&self, kinds: &[Fault], w: &View, rng: &mut Rng) -> Option<Plan> {
        if kinds.is_empty() {
            return None;
        }
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let n = w.nodes;
        let random_up =
            |rng: &mut Rng| (!w.up.is_empty()).then(|| w.up[rng.below(w.up.len() as u64) as usize]);
        let plan = match kind {
            Fault::Partition => {
                let k = 2 + rng.below(2) as u32;
                Plan::Partition((0..n).map(|_| rng.below(u64::from(k)) as u32).collect())
            }
            Fault::OneWay => {
                let size = 1 + rng.below((n as u64 / 3).max(1)) as usize;
                let mut set = BTreeSet::new();
                while set.len() < size.min(n) {
                    set.insert(rng.below(n as u64) as usize);
                }
                let outbound = rng.below(2) == 0;
                Plan::OneWay { set, outbound }
            }
            Fault::Cut => {
                // Prefer a link that exists.
                let pair = if w.live_links.is_empty() {
                    let a = rng.below(n as u64) as usize;
                    let b = rng.below(n as u64) as usize;
                    (a, b)
                } else {
                    w.live_links[rng.below(w.live_links.len() as u64) as usize]
                };
                if pair.0 == pair.1 {
                    return None;
                }
                Plan::Cut(pair.0.min(pair.1), pair.0.max(pair.1))
            }
            Fault::Hold => Plan::Hold(random_up(rng)?),
            Fault::Crash => {
                if w.crashed >= (n / 5).max(1) {
                    return None;
                }
                // Aim at a node in the middle of a write half the time, and at
                // one about to land a batch half of that: that is where crashes
                // find bugs ("buggify").
                let pick = |rng: &mut Rng, v: &[usize]| v[rng.below(v.len() as u64) as usize];
                let node = if !w.landing.is_empty() && rng.below(4) == 0 {
                    pick(rng, &w.landing)
                } else if !w.busy.is_empty() && rng.below(3) == 0 {
                    pick(rng, &w.busy)
                } else {
                    random_up(rng)?
                };
                let silent = rng.below(2) == 0;
                Plan::Crash { node, silent }
            }
            Fault::Store => Plan::Store(random_up(rng)?),
            Fault::Skew => {
                let node = random_up(rng)?;
                if rng.below(2) == 0 {
                    let ppm = 100 + rng.below(50_000) as i64;
                    let ppm = if rng.below(2) == 0 { ppm } else { -ppm };
                    Plan::SkewRate { node, ppm }
                } else {
                    let by = between(rng, Duration::from_millis(100), Duration::from_secs(10));
                    Plan::SkewJump { node, by }
                }
            }
            Fault::Churn => {
                let leave = rng.below(2) == 0;
                if leave && w.up.len() > 3 && (w.leaves as usize) < w.initial / 4 {
                    Plan::Leave(random_up(rng)?)
                } else if (w.joins as usize) < w.initial / 2 + 1 {
                    Plan::Join
                } else {
                    return None;
                }
            }
        };
        Some(plan)
    }
}

impl Plan {
    /// How long the fault lasts (drawn uniformly in this window), for those
    /// that are undone.
    pub(crate) fn lasts(&self) -> Option<(Duration, Duration)> {
        let s = Duration::from_secs;
        match self {
            Plan::Partition(_) => Some((s(10), s(60))),
            Plan::OneWay { .. } => Some((s(10), s(40))),
            Plan::Cut(..) => Some((s(5), s(30))),
            Plan::Hold(_) => Some((s(1), s(25))),
            Plan::Crash { .. } => Some((s(2), s(60))),
            Plan::Store(_) => Some((s(10), s(60))),
            Plan::SkewRate { .. } | Plan::SkewJump { .. } | Plan::Leave(_) | Plan::Join => None,
        }
    }
}

/// Uniform in `lo..=hi`, as the world draws durations.
pub(crate) fn between(rng: &mut Rng, lo: Duration, hi: Duration) -> Duration {
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let (lo, hi) = (us(lo), us(hi));
    Duration::from_micros(lo + rng.below(hi.saturating_sub(lo) + 1))
}

/// Partitions the network: `groups[i]` is node `i`'s group (missing: 0).
/// Returns the groups as text, for the trace.
pub(crate) fn partition(net: &mut Net, groups: &[u32]) -> String {
    for (i, g) in net.groups.iter_mut().enumerate() {
        *g = groups.get(i).copied().unwrap_or(0);
    }
    net.partition_epoch += 1;
    let mut sets: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, g) in net.groups.iter().enumerate() {
        sets.entry(*g).or_default().push(i);
    }
    let text: Vec<String> = sets.values().map(|v| format!("{v:?}")).collect();
    text.join(" | ")
}

/// Drops traffic from (`outbound`) or to the nodes in `set`, among `n` nodes.
/// Returns the epoch an undo must match.
pub(crate) fn one_way(net: &mut Net, n: usize, set: &BTreeSet<usize>, outbound: bool) -> u64 {
    net.blocked.clear();
    for a in set {
        for b in (0..n).filter(|b| !set.contains(b)) {
            let pair = if outbound { (*a, b) } else { (b, *a) };
            net.blocked.insert(pair);
        }
    }
    net.oneway_epoch += 1;
    net.oneway_epoch
}

/// Lifts every network fault: partitions, one-way blocks, cuts and holds.
pub(crate) fn lift_all(net: &mut Net) {
    net.groups.iter_mut().for_each(|g| *g = 0);
    net.partition_epoch += 1;
    net.blocked.clear();
    net.oneway_epoch += 1;
    net.cut.clear();
    net.held.clear();
    net.held_from.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: usize) -> View {
        View {
            nodes: n,
            initial: n,
            up: (0..n).collect(),
            ..View::default()
        }
    }

    #[test]
    fn an_undo_from_before_a_heal_is_stale() {
        let mut f = Faults::default();
        let FaultEv::Undo { epoch, .. } = f.undo_event(Undo::Release(1)) else {
            panic!("an undo event");
        };
        assert!(f.is_current(epoch));
        f.heal();
        assert!(!f.is_current(epoch));
    }

    #[test]
    fn crashes_stop_at_a_fifth_of_the_nodes() {
        let f = Faults::default();
        let mut w = view(10);
        w.crashed = 2;
        let mut rng = Rng::from_u64(1);
        for _ in 0..50 {
            assert_eq!(f.choose(&[Fault::Crash], &w, &mut rng), None);
        }
        w.crashed = 1;
        assert!(matches!(
            f.choose(&[Fault::Crash], &w, &mut rng),
            Some(Plan::Crash { node, .. }) if node < 10
        ));
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let f = Faults::default();
        let w = view(12);
        let kinds = [Fault::Partition, Fault::OneWay, Fault::Hold, Fault::Skew];
        let draw = |seed| {
            let mut rng = Rng::from_u64(seed);
            (0..20)
                .map(|_| f.choose(&kinds, &w, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn one_way_blocks_one_direction_and_lift_all_clears_it() {
        let mut net = Net {
            groups: vec![0; 4],
            ..Net::default()
        };
        let set = BTreeSet::from([1]);
        one_way(&mut net, 4, &set, true);
        assert!(net.blocked.contains(&(1, 0)) && !net.blocked.contains(&(0, 1)));
        assert_eq!(partition(&mut net, &[0, 1, 1]), "[0, 3] | [1, 2]");
        lift_all(&mut net);
        assert!(net.blocked.is_empty() && net.groups.iter().all(|g| *g == 0));
    }
}
