//! Invariants and their violations, and the seal graph that keeps the checks
//! incremental.
//!
//! - **Closure** is checked on every mutation of every store, for the objects it
//!   adds only ([`SimStore`](crate::store::SimStore) refuses a batch that would
//!   break it, and the refusal is itself reported: the core asked for it).
//! - **No seal lost**: a ref that moves to a seal that does not contain its old
//!   target may drop history, and only then is the node's reachable set
//!   recomputed and checked against the seals the node's user made. After the
//!   heal, every seal must be reachable on every node that has its timeline.
//! - **Convergence**, **no panics** and **bounded queues** are checked by the
//!   simulator and reported here.

use std::fmt;

use ivaldi_core::id::{IdMap, IdSet, ObjectId};

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A store would have lost closure (the core asked to land an incomplete
    /// batch, or to point a ref at a missing seal).
    Closure,
    /// A seal became unreachable on a node that must keep it.
    SealLost,
    /// Heads were not identical within the liveness bound.
    Convergence,
    /// The core (or the simulator) panicked.
    Panic,
    /// A queue or buffer grew past its bound.
    Unbounded,
    /// A node asked to be woken at the same instant over and over.
    Livelock,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Closure => "closure",
            Kind::SealLost => "seal-lost",
            Kind::Convergence => "convergence",
            Kind::Panic => "panic",
            Kind::Unbounded => "unbounded",
            Kind::Livelock => "livelock",
        }
    }
}

/// One invariant violation, with where and when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Events processed before it (the step).
    pub step: u64,
    /// Virtual time, microseconds.
    pub time: u64,
    pub kind: Kind,
    pub node: Option<usize>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] step {} at {}",
            self.kind.name(),
            self.step,
            crate::trace::fmt_time(self.time)
        )?;
        if let Some(n) = self.node {
            write!(f, " on n{n}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

#[derive(Clone, Debug)]
struct SealInfo {
    parents: Vec<ObjectId>,
    height: u32,
}

/// Every seal that ever landed in any store, with its parents and its height
/// (longest path to a root), for cheap ancestry questions.
#[derive(Default)]
pub struct SealGraph {
    seals: IdMap<SealInfo>,
    /// Distinct seals with two or more parents (merges, whoever made them).
    merges: u64,
}

impl SealGraph {
    /// Registers new seals (any order within the batch).
    pub fn add(&mut self, seals: Vec<(ObjectId, Vec<ObjectId>)>) {
        let mut pending: Vec<(ObjectId, Vec<ObjectId>)> = seals
            .into_iter()
            .filter(|(id, _)| !self.seals.contains_key(id))
            .collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut rest = Vec::new();
            for (id, parents) in pending {
                let in_batch = |p: &ObjectId| !self.seals.contains_key(p);
                if parents.iter().any(in_batch) && before > 1 {
                    rest.push((id, parents));
                    continue;
                }
                let height = parents
                    .iter()
                    .filter_map(|p| self.seals.get(p))
                    .map(|i| i.height + 1)
                    .max()
                    .unwrap_or(0);
                if parents.len() >= 2 {
                    self.merges += 1;
                }
                self.seals.insert(id, SealInfo { parents, height });
            }
            if rest.len() == before {
                // Parents unknown anywhere (cannot happen with closure): register
                // with what is known so the graph stays total.
                for (id, parents) in rest {
                    if parents.len() >= 2 {
                        self.merges += 1;
                    }
                    self.seals.insert(id, SealInfo { parents, height: 0 });
                }
                break;
            }
            pending = rest;
        }
    }

    /// Number of distinct seals.
    pub fn len(&self) -> usize {
        self.seals.len()
    }

    /// Number of distinct seals with two or more parents: the bound on merge
    /// storms is checked against it (a storm makes merges of merges forever).
    pub fn merges(&self) -> u64 {
        self.merges
    }

    pub fn is_empty(&self) -> bool {
        self.seals.is_empty()
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &ObjectId, descendant: &ObjectId) -> bool {
        if ancestor == descendant {
            return true;
        }
        let Some(floor) = self.seals.get(ancestor).map(|i| i.height) else {
            return false;
        };
        let mut seen = IdSet::default();
        let mut stack = vec![*descendant];
        while let Some(id) = stack.pop() {
            if id == *ancestor {
                return true;
            }
            let Some(info) = self.seals.get(&id) else {
                continue;
            };
            if info.height <= floor {
                continue;
            }
            for p in &info.parents {
                if seen.insert(*p) {
                    stack.push(*p);
                }
            }
        }
        false
    }

    /// Every seal reachable from `roots`.
    pub fn reachable(&self, roots: impl Iterator<Item = ObjectId>) -> IdSet {
        let mut seen = IdSet::default();
        let mut stack: Vec<ObjectId> = roots.collect();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(info) = self.seals.get(&id) {
                stack.extend(info.parents.iter().copied());
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    #[test]
    fn ancestry_with_heights() {
        let mut g = SealGraph::default();
        // Out of order within one batch: 3 → 2 → 1, and 4 → 1.
        g.add(vec![
            (id(3), vec![id(2)]),
            (id(2), vec![id(1)]),
            (id(1), vec![]),
            (id(4), vec![id(1)]),
        ]);
        assert!(g.is_ancestor(&id(1), &id(3)));
        assert!(g.is_ancestor(&id(3), &id(3)));
        assert!(!g.is_ancestor(&id(3), &id(1)));
        assert!(!g.is_ancestor(&id(4), &id(3)));
        let r = g.reachable([id(3)].into_iter());
        assert!(r.contains(&id(1)) && !r.contains(&id(4)));
    }
}
