//! Ivaldi's I/O shell: everything that touches the disk (and, later, the network).
//!
//! [`repo`] is the on-disk repository the CLI works on and the daemon will serve
//! objects from.

pub mod clone_dir;
pub mod config;
pub mod control;
pub mod daemon;
pub mod heads_cache;
pub mod oneshot;
pub mod repo;
pub mod store;
