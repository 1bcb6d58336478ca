//! Named crash points for fault-injection tests.
//!
//! A test sets `IVALDI_CRASH_AT=<point>` and the process aborts (as abruptly as a
//! `kill -9`) when it reaches that point, so the test can check that every
//! interruption leaves a repository `verify` accepts. Unset, a point costs one
//! environment lookup, cached.

use std::sync::OnceLock;

static TARGET: OnceLock<Option<String>> = OnceLock::new();

/// Aborts the process if `name` is the configured crash point.
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| std::env::var("IVALDI_CRASH_AT").ok());
    if target.as_deref() == Some(name) {
        eprintln!("ivaldi: crashing at fault point {name} (IVALDI_CRASH_AT)");
        std::process::abort();
    }
}

/// Every crash point, for tests that visit them all.
pub const POINTS: &[&str] = &[
    "seal.scanned",
    "pack.before-rename",
    "seal.pack-landed",
    "seal.timeline-moved",
    "seal.base-written",
];

/// Crash points on the receiving side of a sync (the daemon).
pub const SYNC_POINTS: &[&str] = &[
    "pack.before-rename",
    "sync.checkpoint-landed",
    "sync.objects-landed",
    "sync.heads-logged",
    "sync.head-moved",
];

/// Crash point of an atomic config write (`config.json`, the user's or the
/// daemon's): the new content is durable in a temporary sibling, not yet renamed.
pub const CONFIG_POINTS: &[&str] = &["config.before-rename"];

/// Crash points of the upgrade from format 1 to 2 on open, in order. The
/// upgrade is one atomic rewrite of `.ivaldi/format` (version-2 code reads
/// version-1 packs as they are), so any interruption leaves format 1 or 2,
/// each of which opens.
pub const UPGRADE_POINTS: &[&str] = &[
    "upgrade.started",
    "upgrade.before-rename",
    "upgrade.format-written",
];
