//! A whole run: the fault phase (safety), the heal, the liveness phase, the final
//! checks, and the report.

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::config::{Scenario, SimConfig};
use crate::invariants::{Kind, Violation};
use crate::sim::{Counters, Sim, Totals};
use crate::trace::fmt_time;

/// When users start sealing (nodes have found each other by then).
pub const WORKLOAD_START: Duration = Duration::from_secs(5);
/// How often the liveness phase checks for identical heads.
pub const CONVERGENCE_POLL: Duration = Duration::from_millis(200);

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct Report {
    pub config: SimConfig,
    pub steps: u64,
    /// Virtual time at the end, microseconds.
    pub end: u64,
    /// Virtual time of the heal, microseconds.
    pub heal_at: u64,
    /// Virtual time from the heal to identical heads, microseconds.
    pub converged_after: Option<u64>,
    pub convergence_expected: bool,
    /// Heads differed between nodes when the network healed (the scenario did
    /// split the network's state).
    pub diverged_at_heal: bool,
    pub nodes_total: usize,
    pub nodes_up: usize,
    pub timelines: usize,
    pub counters: Counters,
    pub totals: Totals,
    pub read_failures: u64,
    pub peak_queue: usize,
    pub pool_objects: usize,
    pub pool_bytes: usize,
    pub seals_total: usize,
    /// Merge seals the nodes' conflict strategy made (seals with two or more
    /// parents that no simulated user made): what the no-merge-storm bounds of
    /// the diverging scenarios are checked against.
    pub merge_seals: u64,
    pub violations: Vec<Violation>,
    pub trace_hash: String,
    pub trace_lines: u64,
}

impl Report {
    /// No invariant was violated.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Messages sent over connections, all types.
    pub fn messages(&self) -> u64 {
        self.totals.messages()
    }

    /// The summary the command line prints.
    pub fn summary(&self) -> String {
        let c = &self.counters;
        let t = &self.totals;
        let mut s = String::new();
        let _ = writeln!(s, "== summary (seed {}) ==", self.config.seed);
        let _ = writeln!(
            s,
            "virtual time    {} ({} steps); heal at {}",
            fmt_time(self.end),
            self.steps,
            fmt_time(self.heal_at)
        );
        let _ = writeln!(
            s,
            "nodes           {} up of {} ({} joined, {} left, {} crashes, {} restarts)",
            self.nodes_up, self.nodes_total, c.joins, c.leaves, c.crashes, c.restarts
        );
        let _ = writeln!(
            s,
            "workload        {} seals ({} with a large file), {} new timelines, {} timelines at the end",
            c.seals, c.large_seals, c.new_timelines, self.timelines
        );
        let hb = t.messages_out.get("heartbeat").copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "messages        {} ({} heartbeats), {} stream bytes in {} segments",
            self.messages(),
            hb,
            c.stream_bytes,
            c.segments
        );
        let mut kinds: Vec<String> = t
            .messages_out
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        kinds.sort();
        let _ = writeln!(s, "  by type       {}", kinds.join(", "));
        let _ = writeln!(
            s,
            "datagrams       {} sent, {} delivered, {} lost, {} duplicated",
            c.datagrams_sent, c.datagrams_delivered, c.datagrams_lost, c.datagrams_duplicated
        );
        let _ = writeln!(
            s,
            "syncs           {} completed, {} failed; {} conflicts; {} protocol violations; {} duplicate frames",
            t.syncs_completed,
            t.syncs_failed,
            t.conflicts,
            t.protocol_violations,
            t.duplicate_messages
        );
        let _ = writeln!(
            s,
            "merges          {} merge seals made by the strategy; {} conflicts resolved by users",
            self.merge_seals, c.resolutions
        );
        let _ = writeln!(
            s,
            "store           {} landings ({} failed by injection, {} cut by a crash), {} staged batches lost, {} reads failed",
            c.lands, c.land_failures, c.partial_lands, c.lost_batches, self.read_failures
        );
        let _ = writeln!(
            s,
            "faults          {} injected; dials {} ({} failed)",
            c.faults, c.dials, c.dials_failed
        );
        let conv = match (self.converged_after, self.convergence_expected) {
            (Some(us), _) => format!(
                "identical heads {} after the heal (bound {})",
                fmt_time(us),
                fmt_time(self.config.bound.as_micros() as u64)
            ),
            (None, true) => format!(
                "NOT reached within {}",
                fmt_time(self.config.bound.as_micros() as u64)
            ),
            (None, false) => {
                "not reached (not expected: diverging edits under a strategy that keeps both heads)"
                    .into()
            }
        };
        let _ = writeln!(s, "convergence     {conv}");
        let _ = writeln!(
            s,
            "memory          {} distinct objects ({} bytes) shared by the stores; peak {} queued events",
            self.pool_objects, self.pool_bytes, self.peak_queue
        );
        let _ = writeln!(
            s,
            "trace           {} lines, blake3 {}",
            self.trace_lines, self.trace_hash
        );
        let _ = writeln!(s, "violations      {}", self.violations.len());
        for v in &self.violations {
            let _ = writeln!(s, "  {v}");
        }
        s
    }

    /// The failure message a test prints: every violation and the command that
    /// reproduces the run.
    pub fn failure(&self) -> String {
        let mut s = format!(
            "simulation seed {} failed with {} invariant violation(s):\n",
            self.config.seed,
            self.violations.len()
        );
        for v in &self.violations {
            let _ = writeln!(s, "  {v}");
        }
        let _ = write!(s, "reproduce with:\n  {}", self.config.command());
        s
    }
}

/// Runs a configuration from start to report. Panics inside are caught and
/// reported as violations.
pub fn run(cfg: &SimConfig) -> Report {
    let mut sim = Sim::new(cfg.clone());
    let outcome = catch_unwind(AssertUnwindSafe(|| run_phases(&mut sim)));
    let mut converged_after = None;
    match outcome {
        Ok(c) => converged_after = c,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            sim.violation(Kind::Panic, None, format!("panic: {msg}"));
        }
    }
    sim.report(converged_after)
}

fn run_phases(sim: &mut Sim) -> Option<u64> {
    let cfg = sim.cfg.clone();
    let phase_end = cfg.duration.as_micros() as u64;
    let warmup = (cfg.duration / 4).min(Duration::from_secs(20));
    match cfg.scenario {
        Scenario::Random => {
            if !cfg.faults.is_empty() {
                sim.start_faults(cfg.fault_every);
            }
        }
        Scenario::Partition => {
            let mut groups = vec![0u32; cfg.nodes];
            groups[0] = 1;
            sim.split_at(warmup, groups);
        }
        Scenario::SplitBrain => {
            let groups = (0..cfg.nodes)
                .map(|i| u32::from(i >= cfg.nodes / 2))
                .collect();
            sim.split_at(warmup, groups);
        }
    }
    sim.start_workload(WORKLOAD_START);
    sim.run_until(phase_end);
    sim.liveness(cfg.bound)
}

impl Sim {
    /// The liveness phase: users stop, faults stop, the network heals; then
    /// runs until every up node holds identical heads or `bound` passes. Records
    /// a violation if convergence was expected and not reached, and checks that
    /// no seal is missing anywhere once it is. Returns the time from the heal
    /// to convergence, in microseconds.
    pub fn liveness(&mut self, bound: Duration) -> Option<u64> {
        self.stop_workload();
        self.stop_faults();
        self.heal();
        let heal_at = self.now;
        self.heal_at = heal_at;
        self.diverged_at_heal = !self.converged();
        let bound = bound.as_micros() as u64;
        let poll = CONVERGENCE_POLL.as_micros() as u64;
        let mut converged = None;
        loop {
            if self.converged() {
                converged = Some(self.now - heal_at);
                break;
            }
            if self.now >= heal_at + bound {
                break;
            }
            self.run_until((self.now + poll).min(heal_at + bound));
        }
        match converged {
            Some(_) => self.check_all_seals(),
            None if self.convergence_expected() => {
                let detail = self.divergence().unwrap_or_default();
                self.violation(
                    Kind::Convergence,
                    None,
                    format!(
                        "heads not identical {} after the heal: {detail}",
                        fmt_time(bound)
                    ),
                );
            }
            None => {}
        }
        converged
    }

    /// The report of the run so far.
    pub fn report(&mut self, converged_after: Option<u64>) -> Report {
        self.trace.flush();
        let (pool_objects, pool_bytes) = self.pool_size();
        let ups = self.up_nodes();
        let timelines = ups
            .first()
            .map_or(0, |i| self.nodes[*i].store.timelines().len());
        Report {
            config: self.cfg.clone(),
            steps: self.step,
            end: self.now,
            heal_at: self.heal_at,
            converged_after,
            convergence_expected: self.convergence_expected(),
            diverged_at_heal: self.diverged_at_heal,
            nodes_total: self.nodes.len(),
            nodes_up: ups.len(),
            timelines,
            counters: self.counters.clone(),
            totals: self.totals(),
            read_failures: self.read_failures(),
            peak_queue: self.peak_queue(),
            pool_objects,
            pool_bytes,
            seals_total: self.graph.len(),
            merge_seals: self
                .graph
                .merges()
                .saturating_sub(self.counters.resolutions),
            violations: self.violations.clone(),
            trace_hash: self.trace.hash(),
            trace_lines: self.trace.lines(),
        }
    }
}
