//! The sans-IO core of Ivaldi P2P.
//!
//! Everything here is pure: no sockets, files, clocks or OS randomness. The shells
//! (`ivaldi-shell-smol` for real I/O, `ivaldi-sim` for deterministic simulation)
//! drive it. This crate holds Ivaldi's object model ([`object`]), large-file
//! chunking ([`chunk`]), validated timeline names ([`timeline`]) and three-way
//! merging ([`merge`]).
#![forbid(unsafe_code)]

pub mod access;
pub mod chunk;
pub mod codec;
pub mod config;
pub mod conflict;
pub mod diff;
pub mod discovery;
pub mod history;
pub mod id;
pub mod merge;
pub mod mesh;
pub mod network;
pub mod node;
pub mod node_id;
pub mod noise;
pub mod object;
pub mod rate;
pub mod repo_id;
pub mod revision;
pub mod rng;
pub mod store;
pub mod sync;
// Test drivers and fixtures: for tests and benchmarks only, so a release
// build of the daemon does not carry them.
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;
pub mod timeline;
pub mod trust;
pub mod wire;

pub use id::ObjectId;
pub use node_id::NodeId;
pub use object::{ChunkList, Mode, Object, ObjectKind, Seal, Timestamp, Tree, TreeEntry};
pub use timeline::TimelineName;
