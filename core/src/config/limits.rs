//! Sizes and counts a peer may not exceed: the frame size and how many new
//! timelines a peer may create. Enforced by the frame codec (through
//! `node::frame_limits`, derived once from here) and by landing.

use serde::{Deserialize, Serialize};

use super::check;
use super::{ConfigError, MIN_MESSAGE_SIZE, invalid};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitSettings {
    /// Largest frame accepted or sent, in bytes.
    pub max_message_size: u32,
    /// Most timelines one sync may create on this node; new names a peer
    /// offers beyond it wait for the next sync (see `node::limits`).
    pub max_new_timelines_per_sync: u32,
    /// Most timelines one peer may create on this node while the daemon runs
    /// (the count restarts with the daemon); new names beyond it are refused,
    /// counted in `timelines_refused` and reported once per sync.
    pub max_new_timelines_per_peer: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_message_size: 10 * 1024 * 1024,
            max_new_timelines_per_sync: 100,
            max_new_timelines_per_peer: 1_000,
        }
    }
}

impl LimitSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_new_timelines_per_sync == 0 {
            // 0 per peer refuses every new name; 0 per sync would defer them forever.
            return Err(invalid("max_new_timelines_per_sync", "must be at least 1"));
        }
        if self.max_message_size < MIN_MESSAGE_SIZE {
            return Err(invalid(
                "max_message_size",
                format!("must be at least {MIN_MESSAGE_SIZE} bytes"),
            ));
        }
        check::counts(&[
            (
                "max_message_size",
                self.max_message_size.into(),
                check::MAX_MESSAGE_SIZE.into(),
            ),
            (
                "max_new_timelines_per_sync",
                self.max_new_timelines_per_sync.into(),
                check::MAX_NEW_TIMELINES.into(),
            ),
            (
                "max_new_timelines_per_peer",
                self.max_new_timelines_per_peer.into(),
                check::MAX_NEW_TIMELINES.into(),
            ),
        ])
    }
}
