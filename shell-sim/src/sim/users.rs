//! The users' writes carried out: [`Users`](crate::workload::Users) and the
//! builders in `workload.rs` decide what a user writes; the world commits it
//! to the node's store, checks the invariants and tells the node.

use std::time::Duration;

use ivaldi_core::id::ObjectId;
use ivaldi_core::node::Command;
use ivaldi_core::timeline::TimelineName;

use super::{Ev, Sim};
use crate::workload::{self, Objects};

impl Sim {
    /// Starts the users: the first seal comes after `after`.
    pub fn start_workload(&mut self, after: Duration) {
        self.users.on = true;
        self.schedule(after, Ev::Workload);
    }

    /// Stops the users.
    pub fn stop_workload(&mut self) {
        self.users.on = false;
    }

    /// Whether node `i` has a sealing user: with `writers` = k, one node in
    /// every `nodes / k` (nodes joining later never write).
    pub fn is_writer(&self, i: usize) -> bool {
        workload::is_writer(&self.cfg, i)
    }

    pub(super) fn workload_tick(&mut self) {
        // Users who resolve conflicts keep at it after the heal: that is when
        // most conflicts are found.
        if !self.users.on && !self.cfg.resolvers {
            return;
        }
        let ups: Vec<usize> = self
            .up_nodes()
            .into_iter()
            .filter(|i| self.is_writer(*i))
            .collect();
        if self.users.on && !ups.is_empty() {
            let n = ups[self.rng.below(ups.len() as u64) as usize];
            let timeline =
                self.users
                    .pick_timeline(self.cfg.workload, &mut self.rng, n, &self.nodes[n].store);
            let large =
                self.cfg.large_every > 0 && self.rng.below(u64::from(self.cfg.large_every)) == 0;
            self.seal(n, &timeline, large);
        }
        if self.cfg.resolvers {
            self.resolve_one(&ups);
        }
        let mean = self.cfg.seal_every;
        let next = self.between(Duration::ZERO, mean * 2);
        self.schedule(next, Ev::Workload);
    }

    /// Node `n`'s user edits a few files (and, if `large`, writes a large file)
    /// and seals on `timeline`. A timeline that does not exist yet branches off
    /// the node's main line. Returns the seal.
    pub fn seal(&mut self, n: usize, timeline: &TimelineName, large: bool) -> Option<ObjectId> {
        if !self.nodes[n].is_up() {
            return None;
        }
        let store = &self.nodes[n].store;
        let parent = workload::parent_of(store, n, timeline);
        if !store.timelines().contains_key(timeline) {
            self.counters.new_timelines += 1;
        }
        let local = self.local(n).as_micros();
        let (objects, seal) = workload::build_seal(
            &self.nodes[n].store,
            &self.cfg,
            &mut self.rng,
            n,
            timeline,
            parent,
            large,
            self.counters.seals,
            local,
        );
        let count = objects.len();
        self.counters.seals += 1;
        if large {
            self.counters.large_seals += 1;
        }
        self.commit_user(n, timeline, objects, seal);
        if self.trace.enabled() {
            self.trace_line(
                Some(n),
                &format!(
                    "SEAL {} on {timeline} ({count} objects{})",
                    seal.short(),
                    if large { ", large file" } else { "" }
                ),
            );
        }
        self.command(n, Command::LocalHeadsChanged);
        Some(seal)
    }

    /// One user resolves one conflict its node recorded. The user is drawn
    /// at random among those whose node lists a divergence that is still
    /// real, so with a tick every few seconds users act some seconds after
    /// the conflict, one at a time, as people do.
    fn resolve_one(&mut self, users: &[usize]) {
        let mut open = workload::open_conflicts(users.iter().filter_map(|&n| {
            let sn = &self.nodes[n];
            sn.node.as_ref().map(|node| (n, node, &sn.store))
        }));
        if open.is_empty() {
            return;
        }
        let c = open.swap_remove(self.rng.below(open.len() as u64) as usize);
        let n = c.0;
        let local = self.local(n).as_micros();
        let Some((objects, id, how)) =
            workload::resolution(&self.nodes[n].store, &mut self.rng, &c, local)
        else {
            return;
        };
        self.counters.resolutions += 1;
        let timeline = c.1;
        self.commit_user(n, &timeline, objects, id);
        if self.trace.enabled() {
            self.trace_line(
                Some(n),
                &format!("RESOLVE {timeline}: take {how} -> {}", id.short()),
            );
        }
        self.command(n, Command::LocalHeadsChanged);
    }

    /// Writes a user's seal into node `n`'s store, moving `timeline` to it.
    fn commit_user(&mut self, n: usize, timeline: &TimelineName, objects: Objects, seal: ObjectId) {
        let changes =
            self.nodes[n]
                .store
                .commit_local(objects, timeline.clone(), seal, &mut self.pool);
        self.after_changes(n, changes);
        self.nodes[n].made.push(seal);
        self.made.push((seal, n, timeline.clone()));
    }
}
