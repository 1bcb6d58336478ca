//! Bandwidth caps, for all peers together and for each peer. Applied to the
//! node's buckets and to every open connection's (`node::transmit`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::check;
use super::{ConfigError, invalid, rate_text};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RateSettings {
    /// Most bytes per second this node sends to all peers together (0: no
    /// cap). Bulk object data waits for the allowance; control messages
    /// (heartbeats, announcements, sync replies) never wait but are counted,
    /// so sessions stay alive on a saturated link. Written as a number of
    /// bytes or as text with a binary suffix (`"500K"`, `"10M"`, `"1G"`).
    #[serde(with = "rate_text")]
    pub upload_rate: u64,
    /// Most bytes per second this node reads from all peers together (0: no
    /// cap). The daemon stops reading a socket while the allowance is spent,
    /// which lets TCP flow control slow the sender down.
    #[serde(with = "rate_text")]
    pub download_rate: u64,
    /// Upload cap for each peer on its own (0: no cap), on top of `upload_rate`.
    #[serde(with = "rate_text")]
    pub peer_upload_rate: u64,
    /// Download cap for each peer on its own (0: no cap), on top of `download_rate`.
    #[serde(with = "rate_text")]
    pub peer_download_rate: u64,
    /// Per-peer caps by node id, replacing `peer_upload_rate` and
    /// `peer_download_rate` for that peer (0 there means no cap for it).
    pub peer_rates: BTreeMap<crate::NodeId, PeerRates>,
}

/// Rate caps for one peer (bytes per second, 0: no cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PeerRates {
    #[serde(with = "rate_text")]
    pub upload: u64,
    #[serde(with = "rate_text")]
    pub download: u64,
}

impl RateSettings {
    /// The upload cap for one peer (0: none): its `peer_rates` entry, else
    /// `peer_upload_rate`.
    pub fn peer_upload_cap(&self, peer: &crate::NodeId) -> u64 {
        self.peer_rates
            .get(peer)
            .map_or(self.peer_upload_rate, |r| r.upload)
    }

    /// The download cap for one peer (0: none), like [`RateSettings::peer_upload_cap`].
    pub fn peer_download_cap(&self, peer: &crate::NodeId) -> u64 {
        self.peer_rates
            .get(peer)
            .map_or(self.peer_download_rate, |r| r.download)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check::counts(&[
            ("upload_rate", self.upload_rate, check::MAX_RATE),
            ("download_rate", self.download_rate, check::MAX_RATE),
            ("peer_upload_rate", self.peer_upload_rate, check::MAX_RATE),
            (
                "peer_download_rate",
                self.peer_download_rate,
                check::MAX_RATE,
            ),
        ])?;
        for r in self.peer_rates.values() {
            if r.upload > check::MAX_RATE || r.download > check::MAX_RATE {
                return Err(invalid(
                    "peer_rates",
                    format!("a rate above {} bytes per second", check::MAX_RATE),
                ));
            }
        }
        Ok(())
    }
}
