//! Whether and how often this node announces itself on the LAN. Where the
//! announcements go (addresses, the UDP port) is the daemon's business, not
//! the core's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{self, DAY};
use super::{ConfigError, duration_text};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoverySettings {
    /// Turn discovery (sending and listening) off entirely.
    #[serde(rename = "discovery")]
    pub enabled: bool,
    /// How often discovery announces this node.
    #[serde(with = "duration_text")]
    pub discovery_interval: Duration,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            enabled: true,
            discovery_interval: Duration::from_secs(5),
        }
    }
}

impl DiscoverySettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check::durations(&[("discovery_interval", self.discovery_interval, DAY)])
    }
}
