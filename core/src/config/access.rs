//! Who may connect and what each may do: trusted keys, open mode, the
//! networks peers may come from, peer groups and per-timeline rules. Every
//! change applies to open connections at once (`node::admit`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AccessSettings {
    /// Keys this node exchanges repository data with, each with the access
    /// it grants (see [`crate::trust`]).
    pub trusted_peers: Vec<crate::trust::TrustedPeer>,
    /// Whether keys that are not trusted are let in: `off` (the default),
    /// `read` or `write`. Only for a throwaway LAN.
    pub open: crate::trust::OpenMode,
    /// CIDR ranges peers may connect from and be discovered in; empty means any.
    pub allowed_networks: Vec<String>,
    /// Named groups of peers (node ids), for `access` rules as `@name`.
    pub peer_groups: BTreeMap<String, Vec<crate::NodeId>>,
    /// Per-timeline access for peers, first match wins; timelines no rule
    /// matches are writable by every peer allowed to connect (see
    /// [`crate::access`]).
    #[serde(rename = "access")]
    pub rules: Vec<crate::access::AccessRule>,
}

impl AccessSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::discovery::NetworkFilter::parse(&self.allowed_networks)
            .map_err(|e| invalid("allowed_networks", e.to_string()))?;
        crate::access::validate(&self.rules, &self.peer_groups)?;
        for p in &self.trusted_peers {
            if p.access == crate::access::Access::None {
                return Err(invalid(
                    "trusted_peers",
                    format!("{}: access must be read or write (use untrust)", p.id),
                ));
            }
        }
        Ok(())
    }
}
