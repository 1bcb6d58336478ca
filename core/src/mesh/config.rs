//! The mesh's settings, and the nearest valid ones when a setting is out of
//! range: the machine never fails to start over configuration, but loading one
//! does.

use std::time::Duration;

use super::{MAX_HOPS_LIMIT, MIN_ANNOUNCE_GAP, MeshError, RTT_ANNOUNCE_GAP};

/// How the mesh behaves. [`Default`] gives the documented values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// Time between regular re-advertisements of our own links, which keep
    /// them from ageing out elsewhere.
    pub announce_interval: Duration,
    /// An advertisement not refreshed for this long is dropped, with the links
    /// and repositories it listed. Three intervals tolerate two lost refreshes.
    pub max_age: Duration,
    /// Radius of the mesh: advertisements travel at most this many hops, and
    /// routes are at most this long.
    pub max_hops: u8,
    /// The route cache is recomputed at least this often, even when no
    /// advertisement changed (a safety net; every change invalidates it anyway).
    pub route_ttl: Duration,
    /// Most origins held in the link-state database. Beyond it, advertisements
    /// from new origins are dropped until old ones age out.
    pub max_nodes: usize,
    /// Most links one advertisement may list. Every node of a mesh should use
    /// the same value: a larger advertisement is refused as malformed.
    pub max_links_per_node: usize,
    /// Least time between two advertisements caused by links coming or going
    /// (default `MIN_ANNOUNCE_GAP`, 1 s): a burst of changes floods once.
    pub link_announce_gap: Duration,
    /// Least time between two advertisements caused only by round-trip times
    /// moving (default [`RTT_ANNOUNCE_GAP`]).
    pub rtt_announce_gap: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self::with_interval(Duration::from_secs(30))
    }
}

impl MeshConfig {
    /// The defaults with another announce interval; `max_age` (three
    /// intervals) follows it.
    pub fn with_interval(announce_interval: Duration) -> Self {
        MeshConfig {
            announce_interval,
            max_age: announce_interval.saturating_mul(3),
            max_hops: 8,
            route_ttl: Duration::from_secs(10),
            max_nodes: 4096,
            max_links_per_node: 256,
            link_announce_gap: MIN_ANNOUNCE_GAP,
            rtt_announce_gap: RTT_ANNOUNCE_GAP,
        }
    }

    /// Checks every value. [`Mesh::new`] does not fail; it clamps what this
    /// rejects, so call this where configuration is loaded.
    pub fn validate(&self) -> Result<(), MeshError> {
        let invalid = |field, reason: &str| {
            Err(MeshError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.announce_interval < Duration::from_millis(10) {
            return invalid("announce_interval", "must be at least 10ms");
        }
        if self.max_age <= self.announce_interval {
            return invalid("max_age", "must exceed announce_interval");
        }
        if self.max_hops == 0 || self.max_hops > MAX_HOPS_LIMIT {
            return invalid("max_hops", "must be between 1 and 64");
        }
        if self.route_ttl.is_zero() {
            return invalid("route_ttl", "must be positive");
        }
        if self.max_nodes == 0 {
            return invalid("max_nodes", "must be at least 1");
        }
        if self.max_links_per_node == 0 {
            return invalid("max_links_per_node", "must be at least 1");
        }
        if self.link_announce_gap > self.announce_interval
            || self.rtt_announce_gap > self.announce_interval
        {
            return invalid("announce gaps", "must not exceed announce_interval");
        }
        Ok(())
    }

    /// The nearest valid configuration.
    pub(super) fn clamped(mut self) -> Self {
        self.announce_interval = self.announce_interval.max(Duration::from_millis(10));
        self.max_age = self
            .max_age
            .max(self.announce_interval + Duration::from_millis(1));
        self.max_hops = self.max_hops.clamp(1, MAX_HOPS_LIMIT);
        self.route_ttl = self.route_ttl.max(Duration::from_micros(1));
        self.max_nodes = self.max_nodes.max(1);
        self.max_links_per_node = self.max_links_per_node.max(1);
        self.link_announce_gap = self.link_announce_gap.min(self.announce_interval);
        self.rtt_announce_gap = self.rtt_announce_gap.min(self.announce_interval);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_max_age_follows_the_interval() {
        assert_eq!(MeshConfig::default().validate(), Ok(()));
        let c = MeshConfig::with_interval(Duration::from_secs(60));
        assert_eq!(c.max_age, Duration::from_secs(180));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn each_bad_value_is_named() {
        let field = |c: MeshConfig| match c.validate() {
            Err(MeshError::InvalidConfig { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        };
        let d = MeshConfig::default;
        assert_eq!(
            field(MeshConfig {
                announce_interval: Duration::from_millis(9),
                ..d()
            }),
            "announce_interval"
        );
        assert_eq!(
            field(MeshConfig {
                max_age: d().announce_interval,
                ..d()
            }),
            "max_age"
        );
        assert_eq!(field(MeshConfig { max_hops: 0, ..d() }), "max_hops");
        assert_eq!(
            field(MeshConfig {
                max_hops: MAX_HOPS_LIMIT + 1,
                ..d()
            }),
            "max_hops"
        );
        assert_eq!(
            field(MeshConfig {
                route_ttl: Duration::ZERO,
                ..d()
            }),
            "route_ttl"
        );
        assert_eq!(
            field(MeshConfig {
                max_nodes: 0,
                ..d()
            }),
            "max_nodes"
        );
        assert_eq!(
            field(MeshConfig {
                max_links_per_node: 0,
                ..d()
            }),
            "max_links_per_node"
        );
        assert_eq!(
            field(MeshConfig {
                rtt_announce_gap: d().announce_interval + Duration::from_secs(1),
                ..d()
            }),
            "announce gaps"
        );
    }

    #[test]
    fn clamping_yields_a_valid_config_and_keeps_a_valid_one() {
        let bad = MeshConfig {
            announce_interval: Duration::ZERO,
            max_age: Duration::ZERO,
            max_hops: 200,
            route_ttl: Duration::ZERO,
            max_nodes: 0,
            max_links_per_node: 0,
            link_announce_gap: Duration::from_secs(60),
            rtt_announce_gap: Duration::from_secs(60),
        };
        assert_eq!(bad.clamped().validate(), Ok(()));
        assert_eq!(MeshConfig::default().clamped(), MeshConfig::default());
    }
}
