//! When and how timelines are synchronised: auto-sync, its interval, the
//! stall timeout, the conflict strategies and how many pulls run at once.
//! Read by the puller, landing and the auto-sync timer.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{self, DAY, WEEK};
use super::{ConfigError, ConflictStrategy, duration_text, invalid};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncSettings {
    pub auto_sync: bool,
    #[serde(with = "duration_text")]
    pub sync_interval: Duration,
    /// A sync that makes no progress for this long fails.
    #[serde(with = "duration_text")]
    pub sync_timeout: Duration,
    pub conflict_strategy: ConflictStrategy,
    /// Per-timeline strategies: exact names or `prefix/*` patterns.
    pub timeline_strategies: BTreeMap<String, ConflictStrategy>,
    pub max_concurrent_syncs: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            auto_sync: true,
            sync_interval: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(60),
            conflict_strategy: ConflictStrategy::Manual,
            timeline_strategies: BTreeMap::new(),
            max_concurrent_syncs: 5,
        }
    }
}

impl SyncSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_syncs == 0 {
            return Err(invalid("max_concurrent_syncs", "must be at least 1"));
        }
        check::durations(&[
            ("sync_interval", self.sync_interval, WEEK),
            ("sync_timeout", self.sync_timeout, DAY),
        ])?;
        check::counts(&[(
            "max_concurrent_syncs",
            self.max_concurrent_syncs as u64,
            check::MAX_CONCURRENT_SYNCS as u64,
        )])
    }
}
