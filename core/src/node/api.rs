//! The node's public vocabulary: what its owner hands in ([`Command`]), what
//! it gets back ([`Output`], [`Event`]) and what it can read ([`Stats`],
//! [`PeerStatus`], [`PeerRecord`]). Kept apart from the logic so the shells,
//! which depend on these types only, can be read without the state machine.

use core::net::SocketAddr;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::admission;
use super::close::CloseReason;
use super::conn::{ConnState, Direction};
use crate::NodeId;
use crate::access::Access;
use crate::config::NodeConfig;
use crate::id::ObjectId;
use crate::store::StoreRequest;
use crate::time::Instant;
use crate::timeline::TimelineName;
use crate::wire::Message;

/// A connection, numbered by the node.
pub type ConnId = u64;
/// A user command's id, chosen by the caller and echoed in its completion event.
pub type CommandId = u64;

/// What a user (through the CLI and daemon) can ask of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Dial an address once; completes when the peer is connected or the dial fails.
    Connect(SocketAddr),
    /// Close every connection to a peer (full node id).
    Disconnect { peer: NodeId },
    /// Remember an address and keep reconnecting to it with backoff.
    AddPeer(SocketAddr),
    /// Forget a remembered address.
    RemovePeer(SocketAddr),
    /// Pull from one peer (full node id) or from every connected peer, and
    /// complete when those syncs end.
    Sync { peer: Option<NodeId> },
    /// The local repository's heads changed (a seal, a switch): announce them.
    LocalHeadsChanged,
    /// Replace the configuration (already validated by the caller).
    /// Connections the new settings no longer allow are closed at once.
    SetConfig(Box<NodeConfig>),
    /// Join through an invitation ticket: dial its addresses in turn and
    /// redeem the invitation; completes when the inviter has admitted us.
    Join(Box<crate::trust::Ticket>),
    /// Fetch objects this store lost below its own heads (`ivaldi repair`)
    /// from one peer or each connected one in turn; moves no head (`refetch.rs`).
    Refetch {
        peer: Option<NodeId>,
        missing: Vec<ObjectId>,
    },
}

/// Something the owner should know; the daemon fans these out to subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PeerConnected {
        peer: NodeId,
        conn: ConnId,
        addr: SocketAddr,
        direction: Direction,
    },
    PeerDisconnected {
        peer: Option<NodeId>,
        conn: ConnId,
        reason: String,
    },
    /// A node that is not trusted was refused (see `ivaldi p2p pending`).
    PeerRefused {
        peer: NodeId,
        addr: SocketAddr,
        reason: String,
    },
    /// A newcomer proved an invitation and is now trusted; the owner records
    /// it in `trusted_peers` and spends one use of the invitation.
    InviteRedeemed {
        peer: NodeId,
        invite: String,
        access: Access,
        uses_left: u32,
    },
    TimelineUpdated {
        timeline: TimelineName,
        old: Option<ObjectId>,
        new: ObjectId,
        peer: NodeId,
    },
    SyncStarted {
        peer: NodeId,
        sync: u64,
    },
    SyncCompleted {
        peer: NodeId,
        sync: u64,
        objects: u64,
        bytes: u64,
    },
    SyncFailed {
        peer: NodeId,
        sync: u64,
        reason: String,
    },
    /// A divergence was resolved by the timeline's strategy.
    ConflictResolved {
        timeline: TimelineName,
        strategy: String,
        head: ObjectId,
        peer: NodeId,
    },
    ConflictDetected {
        timeline: TimelineName,
        local: ObjectId,
        remote: ObjectId,
        base: Option<ObjectId>,
        peer: NodeId,
    },
    ObjectReceived {
        peer: NodeId,
        sync: u64,
        objects: u64,
        bytes: u64,
    },
    /// A peer broke the protocol (bad frame, bad object, wrong order); its
    /// connection was closed.
    ProtocolViolation {
        conn: ConnId,
        peer: Option<NodeId>,
        reason: String,
    },
    CommandDone {
        id: CommandId,
        ok: bool,
        message: String,
    },
    /// New timelines a peer offered beyond its `max_new_timelines_per_peer`
    /// budget were refused (once per sync, not per name; see [`super::limits`]).
    TimelinesRefused {
        peer: NodeId,
        sync: u64,
        refused: u64,
        first: TimelineName,
    },
    /// A protocol message passed (only while tracing is on, see
    /// [`super::Node::set_trace`]).
    Message(TraceRecord),
    /// A peer announced a head for a timeline it may not write, or asked for
    /// a seal it may not read; the head or request was refused.
    AccessRefused {
        peer: NodeId,
        timeline: Option<TimelineName>,
        what: String,
    },
}

/// Which messages [`Event::Message`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceMode {
    /// No message events (the default: they cost an allocation per message).
    #[default]
    Off,
    /// Type, size, direction, peer and sync id of every message.
    Headers,
    /// As `Headers`, plus each message's JSON payload (object data is never
    /// included, only its size).
    Payloads,
}

/// One protocol message as it passed, for `ivaldi p2p trace`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceRecord {
    pub conn: ConnId,
    pub peer: Option<NodeId>,
    /// `in` or `out`.
    pub dir: &'static str,
    /// The wire type name (`sync_request`, `objects`, ...).
    pub kind: String,
    /// Frame size in bytes (before encryption), binary section included.
    pub bytes: u64,
    /// The envelope's message id (per sender).
    pub msg_id: u64,
    /// The sync this message belongs to, for sync messages.
    pub sync: Option<u64>,
    /// The message as JSON, in [`TraceMode::Payloads`] only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// The sync a message belongs to, if it is a sync message.
pub(super) fn sync_of(m: &Message) -> Option<u64> {
    match m {
        Message::SyncRequest(r) => Some(r.sync),
        Message::SyncResponse(r) => Some(r.sync),
        Message::Objects(h) => Some(h.sync),
        Message::SyncComplete(c) => Some(c.sync),
        _ => None,
    }
}

/// The trace record for `message` under `mode`, if tracing is on: the one
/// place that builds them, for frames queued through `send_encoded` and for
/// the object frames `fill_transmit` writes directly.
pub(super) fn trace_record(
    mode: TraceMode,
    conn: ConnId,
    peer: Option<NodeId>,
    dir: &'static str,
    message: &Message,
    msg_id: u64,
    bytes: usize,
) -> Option<TraceRecord> {
    if mode == TraceMode::Off {
        return None;
    }
    Some(TraceRecord {
        conn,
        peer,
        dir,
        kind: message.type_name().to_owned(),
        bytes: bytes as u64,
        msg_id,
        sync: sync_of(message),
        payload: (mode == TraceMode::Payloads)
            .then(|| serde_json::to_string(message).unwrap_or_default()),
    })
}

/// What the node asks its owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection; answer with `handle_connected` or `handle_closed`.
    Dial {
        conn: ConnId,
        addr: SocketAddr,
    },
    /// Send a discovery datagram (UDP) to `to`.
    Datagram {
        to: SocketAddr,
        data: Vec<u8>,
    },
    /// Close a connection (after writing what `poll_transmit` already returned).
    Close {
        conn: ConnId,
        reason: CloseReason,
    },
    Store(StoreRequest),
    Event(Event),
}

/// Why the node wants to wake up next; shown in diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutReason {
    Handshake,
    Heartbeat,
    PeerLost,
    SyncTimeout,
    AutoSync,
    Reconnect,
    /// A pull waiting for a free slot can start now. No longer reported:
    /// such pulls start within the input that frees the slot.
    QueuedSync,
    Discovery,
    Mesh,
    /// An upload or download cap's allowance refills: held object data can
    /// go out, or a paused socket can be read again.
    RateLimit,
}

/// Counters for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Messages in and out per type.
    pub messages_in: BTreeMap<String, u64>,
    pub messages_out: BTreeMap<String, u64>,
    /// Frame bytes out per message type, before encryption (what each kind of
    /// traffic costs, e.g. the mesh's `topology` floods).
    pub bytes_out_by_type: BTreeMap<String, u64>,
    pub unknown_messages: u64,
    pub duplicate_messages: u64,
    pub violations: u64,
    pub syncs_completed: u64,
    pub syncs_failed: u64,
    /// Serves ended early because the local store could not read an object.
    pub serves_failed: u64,
    pub objects_in: u64,
    pub objects_out: u64,
    pub conflicts: u64,
    /// Bytes and frames of other nodes' sessions relayed through this node.
    pub relayed_bytes: u64,
    pub relayed_frames: u64,
    /// Routed frames dropped (no route, hop limit, full buffers, relaying off).
    pub relay_dropped: u64,
    /// Heads refused because the peer may not write the timeline, and sync
    /// requests refused because it may not read what it asked for.
    pub access_refused: u64,
    /// Inbound connections refused by the per-source rate limit.
    pub accepts_rate_limited: u64,
    /// Connections closed because their peer stopped reading while replies
    /// piled up for it.
    pub queue_overflows: u64,
    /// Connections refused because their key is not trusted.
    pub untrusted_refused: u64,
    /// New timeline names refused by `max_new_timelines_per_peer`, each
    /// counted once per connection.
    pub timelines_refused: u64,
    pub admission: admission::AdmissionStats,
}

/// Per-peer sync state, kept across reconnects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub last_sync: Option<Instant>,
    pub last_seen: Option<Instant>,
    pub heads_seen: BTreeMap<TimelineName, ObjectId>,
    pub syncs: u64,
    pub failures: u64,
    pub objects_in: u64,
    pub bytes_in: u64,
    pub objects_out: u64,
    pub bytes_out: u64,
    pub last_error: Option<String>,
    /// Timelines this peer created here since the node started ([`super::limits`]).
    pub timelines_created: u64,
    /// Its tracking names here, once read from the store ([`super::tracked`]).
    #[serde(skip)]
    pub tracked: Option<BTreeMap<TimelineName, ObjectId>>,
}

/// A recorded divergence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub timeline: TimelineName,
    pub local: ObjectId,
    pub remote: ObjectId,
    pub base: Option<ObjectId>,
    pub peer: NodeId,
}

/// One connection as `status` and `peers` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub conn: ConnId,
    pub peer: Option<NodeId>,
    pub addr: SocketAddr,
    pub direction: Direction,
    pub state: ConnState,
    pub rtt_micros: Option<u64>,
    pub last_seen: Instant,
    pub shares_repo: bool,
    pub encrypted: bool,
    pub syncing: bool,
    pub queued_bytes: usize,
    /// Repository ids the peer serves (from its handshake).
    pub remote_repos: Vec<String>,
    /// A session carried through relays rather than a direct socket.
    pub routed_via_mesh: bool,
    /// Where this connection's pull is: `idle`, `requested` (sync_request
    /// sent), `receiving N/M objects`, or `landing` (verified objects being
    /// written), with the sync id; for `peers --verbose`.
    pub sync_phase: String,
    /// Sync requests from the peer being served on this connection.
    pub serving: usize,
    /// Protocol features the peer offered.
    pub features: Vec<String>,
    /// The last sync error with this peer, if any.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    fn heartbeat() -> Message {
        Message::Heartbeat(wire::Heartbeat {
            ping: Some(7),
            pong: None,
        })
    }

    #[test]
    fn no_trace_record_while_tracing_is_off() {
        assert_eq!(
            trace_record(TraceMode::Off, 1, None, "in", &heartbeat(), 3, 10),
            None
        );
    }

    #[test]
    fn headers_leave_out_the_payload_and_payloads_carry_it() {
        let h = trace_record(
            TraceMode::Headers,
            1,
            Some(NodeId([0xab; 32])),
            "out",
            &heartbeat(),
            3,
            10,
        );
        let h = h.expect("tracing is on");
        assert_eq!(
            (h.kind.as_str(), h.bytes, h.msg_id, h.sync),
            ("heartbeat", 10, 3, None)
        );
        assert_eq!(h.payload, None);
        let p = trace_record(TraceMode::Payloads, 1, None, "out", &heartbeat(), 3, 10);
        assert!(
            p.and_then(|p| p.payload)
                .is_some_and(|j| j.contains("ping"))
        );
    }

    #[test]
    fn sync_messages_name_their_sync() {
        let m = Message::SyncComplete(wire::SyncComplete {
            sync: 42,
            objects: 0,
            bytes: 0,
            error: None,
        });
        assert_eq!(sync_of(&m), Some(42));
        assert_eq!(sync_of(&heartbeat()), None);
    }

    #[test]
    fn events_serialise_with_a_snake_case_tag() {
        let e = Event::CommandDone {
            id: 1,
            ok: true,
            message: "x".into(),
        };
        let json = serde_json::to_string(&e).unwrap_or_default();
        assert!(json.starts_with(r#"{"event":"command_done""#), "{json}");
    }
}
