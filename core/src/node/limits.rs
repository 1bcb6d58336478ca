//! Limits on the timelines an accepted peer can create.
//!
//! A peer's handshake (and its announcements) may name any number of
//! timelines. Each name this node does not have would become a timeline here,
//! and from here spread to every other peer. So new names are rationed:
//!
//! - a sync creates at most `max_new_timelines_per_sync` of them;
//! - a peer creates at most `max_new_timelines_per_peer` of them while this
//!   node runs (the count restarts with the daemon).
//!
//! Timelines that already exist here are not limited: they update as always.
//!
//! **Never half-applied.** Which names a sync takes is decided once, when the
//! pull starts, from what the peer advertised: the taken names (in name order,
//! so every run decides alike) join the pull's targets; the others are dropped
//! from it before the sync request is sent. So no seal of a refused name is
//! asked for, no head and no tracking ref is written for it, and each taken
//! name lands whole, its objects and its head in the pull's one batch. A new
//! name is never partly created: it is there with its whole history, or not at
//! all.
//!
//! New names that fit the peer's budget but not this sync are *deferred*: the
//! node pulls again at once and takes the next ones. Names beyond the budget
//! are *refused*; the node counts each refused name once per connection
//! (`Stats::timelines_refused`) and reports them in one
//! [`Event::TimelinesRefused`](super::Event::TimelinesRefused) per sync.

use std::collections::BTreeMap;

use super::{ConnId, Event, Node};
use crate::id::ObjectId;
use crate::store::Store;
use crate::timeline::TimelineName;

/// The caps, as configured, and how many timelines the peer already created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    pub per_sync: u32,
    pub per_peer: u32,
    /// Timelines this peer created here since the node started.
    pub created: u64,
}

/// What one sync takes of a peer's advertised heads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelinePlan {
    /// The pull's targets: every advertised timeline that exists here, and the
    /// new names taken in this sync.
    pub targets: BTreeMap<TimelineName, ObjectId>,
    /// How many of the targets are new names.
    pub new_taken: usize,
    /// New names within the peer's budget, left for the next sync.
    pub deferred: usize,
    /// New names beyond the peer's budget, in name order.
    pub refused: Vec<TimelineName>,
}

/// Splits `offered` (the peer's advertised heads) into what this sync takes,
/// what waits and what is refused, given `local` (this node's timelines).
/// Pure and deterministic: new names are taken in name order.
pub fn plan(
    offered: &BTreeMap<TimelineName, ObjectId>,
    local: &BTreeMap<TimelineName, ObjectId>,
    caps: Caps,
) -> TimelinePlan {
    let budget = u64::from(caps.per_peer).saturating_sub(caps.created);
    let quota = budget.min(u64::from(caps.per_sync));
    let mut out = TimelinePlan::default();
    let mut new_seen: u64 = 0;
    for (name, head) in offered {
        if local.contains_key(name) {
            out.targets.insert(name.clone(), *head);
            continue;
        }
        if new_seen < quota {
            out.targets.insert(name.clone(), *head);
            out.new_taken += 1;
        } else if new_seen < budget {
            out.deferred += 1;
        } else {
            out.refused.push(name.clone());
        }
        new_seen += 1;
    }
    out
}

impl Node {
    /// The plan for a pull from `conn` now, against `local` (this node's heads).
    pub(super) fn timeline_plan(
        &self,
        conn: ConnId,
        local: &BTreeMap<TimelineName, ObjectId>,
    ) -> TimelinePlan {
        let Some(c) = self.conns.get(&conn) else {
            return TimelinePlan::default();
        };
        let created = c
            .peer()
            .as_ref()
            .and_then(|p| self.puller.peers.get(p))
            .map_or(0, |r| r.timelines_created);
        let caps = Caps {
            per_sync: self.cfg.limits.max_new_timelines_per_sync,
            per_peer: self.cfg.limits.max_new_timelines_per_peer,
            created,
        };
        plan(&c.remote_heads, local, caps)
    }

    /// The targets of pull `sync` from `conn`: plans it, counts and reports
    /// refused names (once per sync), and asks for another pull at once when
    /// names were deferred. `None` if the connection is gone.
    pub(super) fn limit_targets(
        &mut self,
        conn: ConnId,
        sync: u64,
        store: &dyn Store,
    ) -> Option<BTreeMap<TimelineName, ObjectId>> {
        let local = store.heads().unwrap_or_default();
        let p = self.timeline_plan(conn, &local);
        let c = self.conns.get_mut(&conn)?;
        let peer = c.peer()?;
        c.pull_again |= p.deferred > 0;
        let fresh = p
            .refused
            .iter()
            .filter(|n| c.refused_timelines.insert((*n).clone()))
            .count() as u64;
        if p.deferred > 0 {
            tracing::info!(
                peer = peer.short(),
                sync,
                taken = p.new_taken,
                deferred = p.deferred,
                "new timelines beyond max_new_timelines_per_sync wait for the next sync"
            );
        }
        if let (true, Some(first)) = (fresh > 0, p.refused.first()) {
            self.out.stats.timelines_refused += fresh;
            tracing::warn!(
                peer = peer.short(),
                sync,
                refused = p.refused.len(),
                first = %first,
                "new timelines beyond max_new_timelines_per_peer refused"
            );
            self.emit(Event::TimelinesRefused {
                peer,
                sync,
                refused: p.refused.len() as u64,
                first: first.clone(),
            });
        }
        Some(p.targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize) -> TimelineName {
        TimelineName::new(&format!("t{i:05}")).unwrap()
    }

    fn heads(range: std::ops::Range<usize>) -> BTreeMap<TimelineName, ObjectId> {
        range
            .map(|i| (name(i), ObjectId::hash(&i.to_le_bytes())))
            .collect()
    }

    fn caps(per_sync: u32, per_peer: u32, created: u64) -> Caps {
        Caps {
            per_sync,
            per_peer,
            created,
        }
    }

    #[test]
    fn a_small_offer_is_taken_whole() {
        let offered = heads(0..10);
        let p = plan(&offered, &BTreeMap::new(), caps(100, 1000, 0));
        assert_eq!(p.targets, offered);
        assert_eq!((p.new_taken, p.deferred), (10, 0));
        assert!(p.refused.is_empty());
    }

    #[test]
    fn five_thousand_names_take_the_sync_cap_defer_the_budget_refuse_the_rest() {
        let offered = heads(0..5000);
        let p = plan(&offered, &BTreeMap::new(), caps(100, 1000, 0));
        assert_eq!(p.new_taken, 100);
        assert_eq!(p.deferred, 900);
        assert_eq!(p.refused.len(), 4000);
        // Name order: the first hundred names are taken, the last 4000 refused.
        assert_eq!(p.targets.keys().cloned().collect::<Vec<_>>(), {
            (0..100).map(name).collect::<Vec<_>>()
        });
        assert_eq!(p.refused.first(), Some(&name(1000)));
        assert_eq!(p.refused.last(), Some(&name(4999)));
    }

    #[test]
    fn existing_timelines_always_update_even_with_the_budget_spent() {
        let offered = heads(0..50);
        let local = heads(10..20);
        let p = plan(&offered, &local, caps(100, 1000, 1000));
        assert_eq!(p.targets, heads(10..20));
        assert_eq!((p.new_taken, p.deferred), (0, 0));
        assert_eq!(p.refused.len(), 40);
        assert!(p.refused.iter().all(|n| !local.contains_key(n)));
    }

    #[test]
    fn the_budget_left_bounds_a_sync() {
        let p = plan(&heads(0..500), &BTreeMap::new(), caps(100, 1000, 950));
        assert_eq!((p.new_taken, p.deferred, p.refused.len()), (50, 0, 450));
        // Over budget already (the cap was lowered): nothing new, no underflow.
        let p = plan(&heads(0..5), &BTreeMap::new(), caps(100, 10, 20));
        assert_eq!((p.new_taken, p.refused.len()), (0, 5));
        // A zero budget refuses every new name.
        let p = plan(&heads(0..5), &BTreeMap::new(), caps(100, 0, 0));
        assert_eq!((p.new_taken, p.refused.len()), (0, 5));
    }

    #[test]
    fn every_offered_name_is_taken_deferred_or_refused_exactly_once() {
        for (n, local_n, per_sync, per_peer, created) in [
            (0, 0, 1, 1, 0),
            (7, 3, 2, 5, 1),
            (300, 120, 100, 1000, 999),
            (1200, 0, 1000, 1000, 0),
        ] {
            let offered = heads(0..n);
            let local = heads(0..local_n);
            let p = plan(&offered, &local, caps(per_sync, per_peer, created));
            let existing = offered.keys().filter(|k| local.contains_key(*k)).count();
            assert_eq!(p.targets.len(), existing + p.new_taken);
            assert_eq!(
                existing + p.new_taken + p.deferred + p.refused.len(),
                offered.len()
            );
            assert!(p.new_taken <= per_sync as usize);
            assert!(p.new_taken as u64 + created.min(per_peer as u64) <= per_peer as u64);
            // Deterministic.
            assert_eq!(p, plan(&offered, &local, caps(per_sync, per_peer, created)));
        }
    }
}
