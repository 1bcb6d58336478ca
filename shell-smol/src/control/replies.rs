//! The data of each control reply, as types the daemon writes and the CLI
//! reads, so neither side spells a field name as a string.
//!
//! The JSON is the one the control socket always carried (tests and scripts
//! read `status --json` and friends), so field names are part of the format.
//! Records the core owns (connection status, counters, per-peer sync records,
//! discovery entries and counters, conflicts, rate caps) are sent as the core
//! types themselves, which read back as well as they are written; where the
//! daemon adds a field (how long ago a peer was seen, on the wall clock) a
//! thin wrapper flattens the record beside it.

use std::collections::BTreeMap;

use ivaldi_core::NodeId;
pub use ivaldi_core::config::RateSettings as Bandwidth;
use ivaldi_core::discovery::DiscoveredPeer;
pub use ivaldi_core::discovery::DiscoveryStats;
use ivaldi_core::mesh::Topology;
use ivaldi_core::node::PeerStatus;
pub use ivaldi_core::node::{Conflict, PeerRecord, Stats};
use ivaldi_core::trust::OpenMode;
use serde::{Deserialize, Serialize};

/// `whoami`: which daemon answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub node_id: String,
    pub port: u16,
    pub discovery_port: Option<u16>,
    pub pid: u32,
    pub repo: String,
}

/// The outcome of a command (`connect`, `sync`, `join`, `stop`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub message: String,
}

/// `events` and `trace` without `--follow`: how many are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub count: usize,
}

/// A `progress` line of a sync or refetch (the core's `ObjectReceived`
/// event): what arrived since the last line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default)]
    pub objects: u64,
    #[serde(default)]
    pub bytes: u64,
}

/// One connection (the core's `PeerStatus`), with how long ago the peer was
/// last heard from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    #[serde(flatten)]
    pub status: PeerStatus,
    /// Added by the daemon: the record's `last_seen` is on the node's clock.
    #[serde(default)]
    pub last_seen_ago_ms: u64,
}

/// `peers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peers {
    pub peers: Vec<PeerView>,
}

/// The unauthenticated pool and the frame memory budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    pub pool: usize,
    pub frame_budget_reserved: usize,
}

/// The mesh as `status` sums it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshStatus {
    pub routing_table_size: usize,
    pub relayed_bytes: u64,
    pub relayed_frames: u64,
    pub relay_dropped: u64,
    pub known_nodes: usize,
    pub forged_advertisements: u64,
}

/// Discovery as `status` sums it up. Fields in name order: the human
/// `status` prints it as JSON, as it always did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryStatus {
    pub enabled: bool,
    pub peers: usize,
    /// None while discovery is off.
    pub stats: Option<DiscoveryStats>,
    pub targets: Vec<String>,
}

/// The event fan-out's counters. Fields in name order, as for
/// [`DiscoveryStatus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub dropped: u64,
    pub emitted: u64,
    pub subscribers: usize,
}

/// `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub pid: u32,
    pub port: u16,
    pub discovery_port: Option<u16>,
    pub repo: String,
    pub started_unix: u64,
    pub uptime_secs: u64,
    pub open: OpenMode,
    pub trusted_peers: usize,
    pub pending: usize,
    pub auto_sync: bool,
    pub sync_interval: String,
    pub bandwidth: Bandwidth,
    pub peers: Vec<PeerView>,
    pub stats: Stats,
    pub admission: Admission,
    pub conflicts: usize,
    pub mesh: MeshStatus,
    pub discovery: DiscoveryStatus,
    pub events: EventCounts,
}

/// A peer heard on the LAN (the core's `DiscoveredPeer`), with how long ago.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredView {
    #[serde(flatten)]
    pub peer: DiscoveredPeer,
    #[serde(default)]
    pub last_seen_ago_ms: u64,
}

/// `discovered`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    pub discovered: Vec<DiscoveredView>,
    pub stats: Option<DiscoveryStats>,
}

/// `sync-status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Sync history per peer (the core's `PeerRecord`s).
    pub peers: BTreeMap<NodeId, PeerRecord>,
    pub stats: Stats,
    pub admission: Admission,
}

/// `conflicts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflicts {
    pub conflicts: Vec<Conflict>,
}

/// A key refused for want of trust.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingKey {
    pub id: NodeId,
    pub addr: String,
    pub attempts: u64,
    pub last_seen_ago_ms: u64,
}

/// `pending`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub pending: Vec<PendingKey>,
    /// Connections refused for want of trust since the start.
    pub refused: u64,
}

/// `topology`: the mesh graph, and the same as Graphviz text (none while
/// the mesh is off).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyReply {
    pub topology: Option<Topology>,
    pub dot: Option<String>,
}

/// `route`: the path through the mesh, this node first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub peer: String,
    pub path: Vec<String>,
    pub cost_micros: u64,
    pub hops: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivaldi_core::node::{ConnState, Direction};
    use ivaldi_core::time::Instant;

    /// The core records read back as they were written: the CLI sees every
    /// field the daemon sent, and the wrapper adds its own beside them.
    #[test]
    fn core_records_round_trip_through_the_reply_json() {
        let stats = Stats {
            bytes_in: 7,
            ..Stats::default()
        };
        let json = serde_json::to_string(&stats).expect("serialise");
        assert_eq!(serde_json::from_str::<Stats>(&json).ok(), Some(stats));
        let record = PeerRecord {
            syncs: 3,
            last_error: Some("gone".into()),
            ..PeerRecord::default()
        };
        let peers = BTreeMap::from([(NodeId([1; 32]), record)]);
        let json = serde_json::to_string(&peers).expect("serialise");
        assert_eq!(serde_json::from_str(&json).ok(), Some(peers));
        let view = PeerView {
            status: PeerStatus {
                conn: 4,
                peer: Some(NodeId([2; 32])),
                addr: "127.0.0.1:9000".parse().expect("address"),
                direction: Direction::Inbound,
                state: ConnState::Ready,
                rtt_micros: Some(1500),
                last_seen: Instant::ZERO,
                shares_repo: true,
                encrypted: true,
                syncing: false,
                queued_bytes: 0,
                remote_repos: vec!["repo".into()],
                routed_via_mesh: false,
                sync_phase: "idle".into(),
                serving: 0,
                features: vec!["lz4".into()],
                last_error: None,
            },
            last_seen_ago_ms: 12,
        };
        let value = serde_json::to_value(&view).expect("serialise");
        assert_eq!(value["direction"], "inbound");
        assert_eq!(value["state"], "ready");
        assert_eq!(value["last_seen_ago_ms"], 12);
        assert_eq!(serde_json::from_value::<PeerView>(value).ok(), Some(view));
    }
}
