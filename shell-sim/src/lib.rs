//! `ivaldi-sim`: a deterministic simulator for the Ivaldi core.
//!
//! Any number of [`Node`](ivaldi_core::node::Node)s run in one thread, in
//! virtual time, over a virtual network, on in-memory stores, with one seeded
//! random stream. The same configuration gives the same run, event for event:
//! a failure is reproduced from its seed (and the command the report prints).
//!
//! - [`sim`]: the world: the event queue, the nodes, the pump that turns their
//!   outputs into events. Its children carry out what the leaves below
//!   decide: `sim/streams.rs` (dials, pipes, datagrams), `sim/faults_applied.rs`,
//!   `sim/users.rs`, `sim/routes.rs` (routes against the graph) and
//!   `sim/checks.rs` (invariants as the run goes, convergence at its end).
//! - [`net`]: addresses, broadcast domains, FIFO pipes, partitions and holds.
//! - [`graph`]: random-graph topologies (who may connect to whom) and the
//!   ground truth the mesh's routes are checked against.
//! - [`store`]: the store contract, in memory, with injected failures, delays
//!   and crashes between two writes.
//! - [`clock`]: per-node skewed clocks that never run backwards.
//! - [`faults`] and [`workload`]: what happens to the nodes, and what their
//!   users do, each with its own state type.
//!
//! The leaves ([`net`], [`graph`], [`store`], [`clock`], [`faults`],
//! [`workload`], [`trace`], [`invariants`], [`config`]) never import [`sim`]:
//! they decide, the world applies.
//! - [`invariants`]: closure, no seal lost, convergence, no panics, bounded
//!   queues.
//! - [`scenario`]: a run's phases (faults, heal, liveness) and its [`Report`].
//! - [`config`]: every parameter, with a command line that round-trips.
//!
//! `docs/simulator.md` describes the model, the invariants, the scenarios, the
//! command line and the benchmark.
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod faults;
pub mod graph;
pub mod invariants;
pub mod net;
pub mod scenario;
pub mod sim;
pub mod store;
pub mod trace;
pub mod workload;

pub use config::{Fault, FaultSet, Scenario, SimConfig, Topology, TraceMode, Workload};
pub use invariants::{Kind, Violation};
pub use scenario::{Report, run};
pub use sim::Sim;
