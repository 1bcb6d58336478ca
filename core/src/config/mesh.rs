//! This node's part in the mesh: whether it relays, how much, how often it
//! re-announces its links, and whom it reaches only through the mesh.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{self, WEEK};
use super::{ConfigError, RelayFault, duration_text};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MeshSettings {
    /// Relay frames of other nodes' sessions through this node.
    pub relay: bool,
    /// Most bytes per second this node relays for others (0: no cap). Frames
    /// over the cap are dropped; the sessions' end-to-end channels notice.
    pub relay_rate: u64,
    /// Fault injection for tests and the simulator: this node misbehaves as a
    /// relay (drops, corrupts or replays the frames it relays). Never set it in a
    /// real deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_relay: Option<RelayFault>,
    /// How often the mesh re-announces this node's links when nothing changed
    /// (changes are announced at once, and a new neighbour gets the whole
    /// topology on connect). Advertisements not refreshed for three intervals
    /// age out. Every refresh floods the whole mesh, so this is long by default.
    #[serde(with = "duration_text")]
    pub topology_interval: Duration,
    /// Node ids this node refuses direct connections with; they are still
    /// reached through the mesh. (A policy knob, and how tests build topologies.)
    pub no_direct: Vec<crate::NodeId>,
}

impl Default for MeshSettings {
    fn default() -> Self {
        MeshSettings {
            relay: true,
            relay_rate: 0,
            fault_relay: None,
            topology_interval: Duration::from_secs(1800),
            no_direct: Vec::new(),
        }
    }
}

impl crate::mesh::MeshConfig {
    /// The mesh defaults with this node's topology interval; advertisements
    /// age out after three missed refreshes. Written here so the mesh does not
    /// depend on the node's configuration.
    pub fn from_settings(s: &MeshSettings) -> Self {
        crate::mesh::MeshConfig {
            announce_interval: s.topology_interval,
            max_age: s.topology_interval * 3,
            ..Self::default()
        }
    }
}

impl MeshSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check::durations(&[("topology_interval", self.topology_interval, WEEK)])?;
        check::counts(&[("relay_rate", self.relay_rate, check::MAX_RATE)])
    }
}
