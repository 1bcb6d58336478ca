//! The data of each control reply, as types the daemon writes and the CLI
//! reads, so neither side spells a field name as a string.
//!
//! The JSON is the one the control socket always carried (tests and scripts
//! read `status --json` and friends), so field names are part of the format.
//! Records the core owns (connection status, counters, per-peer sync records,
//! discovery entries) are shown through views: the fields the CLI reads,
//! typed, and every other field of the record kept as it is in `more`. A
//! view is made from the record's own JSON ([`view`]), so it cannot drift
//! from the core's field names without a test noticing.

use std::collections::BTreeMap;

use ivaldi_core::config::PeerRates;
use ivaldi_core::mesh::Topology;
use ivaldi_core::trust::OpenMode;
use ivaldi_core::{NodeId, ObjectId, TimelineName};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The rest of a core record: fields the CLI only passes on (`--json`).
pub type More = serde_json::Map<String, serde_json::Value>;

/// Reads a core record through a view of it.
pub fn view<V: DeserializeOwned>(record: &impl Serialize) -> Result<V, serde_json::Error> {
    serde_json::to_value(record).and_then(serde_json::from_value)
}

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
    pub peer: Option<String>,
    pub addr: String,
    pub direction: String,
    pub state: String,
    pub rtt_micros: Option<u64>,
    pub sync_phase: String,
    pub serving: usize,
    pub queued_bytes: usize,
    pub encrypted: bool,
    pub routed_via_mesh: bool,
    pub features: Vec<String>,
    pub last_error: Option<String>,
    /// Added by the daemon: the record's `last_seen` is on the node's clock.
    #[serde(default)]
    pub last_seen_ago_ms: u64,
    #[serde(flatten)]
    pub more: More,
}

/// `peers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peers {
    pub peers: Vec<PeerView>,
}

/// The node's counters (the core's `Stats`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: BTreeMap<String, u64>,
    pub messages_out: BTreeMap<String, u64>,
    pub syncs_completed: u64,
    pub syncs_failed: u64,
    pub access_refused: u64,
    pub untrusted_refused: u64,
    pub relayed_bytes: u64,
    pub relayed_frames: u64,
    pub relay_dropped: u64,
    #[serde(flatten)]
    pub more: More,
}

/// The unauthenticated pool and the frame memory budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    pub pool: usize,
    pub frame_budget_reserved: usize,
}

/// The configured rate caps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub upload_rate: u64,
    pub download_rate: u64,
    pub peer_upload_rate: u64,
    pub peer_download_rate: u64,
    pub peer_rates: BTreeMap<NodeId, PeerRates>,
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
    /// The core's `DiscoveryStats`, shown whole (none while discovery is off).
    pub stats: Option<More>,
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
    pub stats: StatsView,
    pub admission: Admission,
    pub conflicts: usize,
    pub mesh: MeshStatus,
    pub discovery: DiscoveryStatus,
    pub events: EventCounts,
}

/// A peer heard on the LAN (the core's `DiscoveredPeer`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredView {
    pub node_id: String,
    pub addr: String,
    /// Our repositories it serves: id to heads digest.
    pub repos: BTreeMap<String, String>,
    pub unknown_repos: usize,
    #[serde(default)]
    pub last_seen_ago_ms: u64,
    #[serde(flatten)]
    pub more: More,
}

/// `discovered`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    pub discovered: Vec<DiscoveredView>,
    pub stats: Option<More>,
}

/// Sync history with one peer (the core's `PeerRecord`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRecordView {
    pub syncs: u64,
    pub failures: u64,
    pub objects_in: u64,
    pub bytes_in: u64,
    pub objects_out: u64,
    pub bytes_out: u64,
    pub last_error: Option<String>,
    #[serde(flatten)]
    pub more: More,
}

/// `sync-status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub peers: BTreeMap<String, SyncRecordView>,
    pub stats: StatsView,
    pub admission: Admission,
}

/// A recorded divergence (the core's `Conflict`, whole).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictView {
    pub timeline: TimelineName,
    pub local: ObjectId,
    pub remote: ObjectId,
    pub base: Option<ObjectId>,
    pub peer: String,
}

/// `conflicts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflicts {
    pub conflicts: Vec<ConflictView>,
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
    use ivaldi_core::node::{PeerRecord, Stats};

    /// The views read the core's records as the core writes them; a renamed
    /// field shows up here, not as a CLI that prints nothing.
    #[test]
    fn views_read_the_core_records_and_keep_every_field() {
        let stats = Stats {
            bytes_in: 7,
            ..Stats::default()
        };
        let v: StatsView = view(&stats).expect("Stats reads as StatsView");
        assert_eq!(v.bytes_in, 7);
        assert_eq!(
            serde_json::to_value(&v).ok(),
            serde_json::to_value(&stats).ok(),
            "the wire keeps every field"
        );
        let record = PeerRecord {
            syncs: 3,
            last_error: Some("gone".into()),
            ..PeerRecord::default()
        };
        let v: SyncRecordView = view(&record).expect("PeerRecord reads as SyncRecordView");
        assert_eq!((v.syncs, v.last_error.as_deref()), (3, Some("gone")));
        assert_eq!(
            serde_json::to_value(&v).ok(),
            serde_json::to_value(&record).ok()
        );
    }
}
