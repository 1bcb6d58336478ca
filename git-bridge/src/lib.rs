//! The git bridge: `ivaldi git import` and `ivaldi git export`.
//!
//! Import reads a git repository (bare or not) with gitoxide and turns every
//! commit reachable from its branches and tags into a seal with the same
//! parents, every branch into a timeline and every tag into a record export
//! restores. Export writes timelines back as branches and seals as commits; a
//! seal that came from git gets its original commit id back, because the seal
//! keeps what git needs to rebuild the commit byte for byte (its optional git
//! part, [`ivaldi_core::object::GitCommit`]) and trees keep git's modes,
//! submodules included ([`ivaldi_core::Mode::Gitlink`]).
//!
//! Both directions are incremental through one map of commit ids to seal ids
//! stored in the repository (see [`state`]). The mapping rules are in
//! `docs/git-bridge.md`. The product never runs `git`; the tests use it as
//! the oracle.

pub mod error;
pub mod export;
pub mod gitobj;
pub mod import;
pub mod names;
pub mod state;

pub use error::{BridgeError, Result};
pub use export::{ExportReport, export};
pub use import::{ImportOptions, ImportReport, Progress, import};
