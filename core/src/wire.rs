//! The wire format: length-prefixed frames, each a JSON envelope with an optional
//! binary section.
//!
//! ```text
//! frame  = len:u32be  json_len:u32be  json[json_len]  binary[len - 4 - json_len]
//! json   = {"id": u64, "type": "...", "from": "<node id>", "ts": u64, "payload": {...}}
//! ```
//!
//! Object bytes travel in the binary section (never base64 inside JSON): per object
//! its id (32 bytes), its length (u32be) and its canonical encoding. A frame whose
//! length exceeds the configured maximum is refused from its first four bytes,
//! before anything is allocated. Unknown message types parse as
//! [`Decoded::Unknown`], so a newer peer's extra messages are counted and ignored.
//! `docs/protocol.md` is the full description.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::NodeId;
use crate::id::ObjectId;
use crate::timeline::TimelineName;

/// The protocol version this core speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Bytes before the JSON in every frame.
pub const FRAME_HEADER: usize = 8;
/// The most objects one `objects` frame may carry.
pub const MAX_OBJECTS_PER_FRAME: usize = 65_536;

/// Why bytes are not a valid frame.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: u64 },
    #[error("frame length {0} is too short for its header")]
    TooShort(u32),
    #[error("JSON length {json} exceeds the frame's {frame} bytes")]
    JsonLength { json: u32, frame: u32 },
    #[error("malformed envelope: {0}")]
    Envelope(String),
    #[error("malformed {kind} payload: {reason}")]
    Payload { kind: String, reason: String },
    #[error("malformed object section: {0}")]
    Objects(&'static str),
}

/// One repository a node serves, with its timeline heads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoAdvert {
    /// The repository id fixed at `forge`; only equal ids sync.
    pub id: String,
    /// Every timeline's head.
    pub heads: BTreeMap<TimelineName, ObjectId>,
}

/// The first message on an established channel: who we are and what we serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// Versions this node speaks; the highest common one is used.
    pub versions: Vec<u32>,
    /// The TCP port this node accepts connections on (0 if none), so a peer that
    /// learned of us from an inbound connection can dial back.
    pub listen_port: u16,
    pub repos: Vec<RepoAdvert>,
    /// Optional features, such as `"lz4"` for compressed object frames.
    pub features: Vec<String>,
    /// Free text naming the implementation, for diagnostics.
    pub agent: String,
    /// How this node resolves diverged timelines, so two peers with "prefer"
    /// strategies agree on one head. Absent from peers that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<StrategyAdvert>,
}

/// A node's conflict strategies, as advertised in its handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategyAdvert {
    pub default: crate::conflict::ConflictStrategy,
    #[serde(default)]
    pub timelines: BTreeMap<String, crate::conflict::ConflictStrategy>,
}

/// A request for the objects behind some seals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The requester's id for this sync; echoed in every reply.
    pub sync: u64,
    pub repo: String,
    /// Seals the requester lacks.
    pub wants: Vec<ObjectId>,
    /// Seals the requester has (heads and exponentially spaced ancestors), so the
    /// sender can skip what is already there.
    pub haves: Vec<ObjectId>,
    /// Resuming an interrupted pull: objects of any kind (seals, trees, chunk
    /// lists, blobs) that landed from it, each held with everything it refers
    /// to, so the sender skips them and all beneath them. Optional on the wire
    /// (absent means none) so a peer that predates it still syncs: it ignores
    /// the field and resends everything. At most
    /// [`crate::sync::MAX_RESUME_HINTS`] ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resume: Vec<ObjectId>,
    /// Repairing a damaged store: objects of any kind the requester lost
    /// below its own heads. The sender sends exactly those it holds and the
    /// requester may read, children first, and nothing else; `wants` and
    /// `haves` are then empty. Optional like `resume` (a peer that predates
    /// it sends nothing). At most [`crate::node::refetch::MAX_REFETCH`] ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refetch: Vec<ObjectId>,
}

/// The answer to a [`SyncRequest`], sent before its objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub sync: u64,
    /// `None` when objects follow; otherwise why the request was refused.
    pub error: Option<String>,
    /// How many objects and encoded bytes will follow, for progress displays.
    pub objects: u64,
    pub bytes: u64,
}

/// Header of a frame whose binary section carries objects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectsHeader {
    pub sync: u64,
    pub count: u32,
    /// `Some("lz4")` when the binary section is LZ4-compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// `Some("stored")` (capability `zstd-delta`): each object is in its
    /// stored form ([`push_stored`]) instead of `id · length · encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// [`ObjectsHeader::format`] of a section of stored forms.
pub const FORMAT_STORED: &str = "stored";

/// The end of a sync's object stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncComplete {
    pub sync: u64,
    pub objects: u64,
    pub bytes: u64,
    /// Set when the sender could not read an object it had planned to send:
    /// the sync ends here, incomplete, and the connection stays up. `objects`
    /// is then how many were sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A timeline's head moved on the sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineUpdate {
    pub repo: String,
    pub timeline: TimelineName,
    pub head: ObjectId,
    pub previous: Option<ObjectId>,
}

/// A seal was just made on the sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealBroadcast {
    pub repo: String,
    pub timeline: TimelineName,
    pub seal: ObjectId,
}

/// Keepalive and round-trip measurement: a `ping` is answered by a `pong` with the
/// same number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pong: Option<u64>,
}

/// A peer the sender knows of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Either case is read, as when this was text parsed with `FromStr`: it
    /// is only an address hint, never compared as text or signed.
    pub node: NodeId,
    pub addr: String,
}

/// Peer-list exchange, so nodes learn of peers they were not told about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDiscovery {
    pub peers: Vec<PeerInfo>,
}

/// Coordination of a diverged timeline's resolution between peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictResolve {
    pub repo: String,
    pub timeline: TimelineName,
    pub local: ObjectId,
    pub remote: ObjectId,
    pub strategy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ObjectId>,
}

/// The first message of a newcomer holding an invitation ticket: which
/// invitation, and the proof that it holds the ticket's secret, bound to this
/// session (see [`crate::trust::proof`]). Both fields are hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redeem {
    pub invite: String,
    pub proof: String,
}

/// Why the sender will not exchange data on this connection; it closes the
/// connection after sending it. Plain words meant for a person.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub reason: String,
}

/// Addressing of a routed frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedHeader {
    /// Chosen by the session's initiator; with `src` it names the session.
    pub session: u64,
    #[serde(with = "crate::node_id::canonical")]
    pub src: NodeId,
    #[serde(with = "crate::node_id::canonical")]
    pub dst: NodeId,
    /// Relays left before the frame is dropped.
    pub hops_left: u8,
}

/// Every message type this version understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Message {
    Handshake(Handshake),
    SyncRequest(SyncRequest),
    SyncResponse(SyncResponse),
    Objects(ObjectsHeader),
    SyncComplete(SyncComplete),
    TimelineUpdate(TimelineUpdate),
    SealBroadcast(SealBroadcast),
    Heartbeat(Heartbeat),
    PeerDiscovery(PeerDiscovery),
    /// A link-state advertisement, flooded through the mesh.
    Topology(crate::mesh::Lsa),
    /// What the sender's link-state database holds, sent once on connect; the
    /// receiver answers with the `topology` messages the sender lacks.
    TopologySummary(crate::mesh::DatabaseSummary),
    /// A frame of an end-to-end session between two nodes that are not directly
    /// connected; the binary section is that session's (encrypted) stream.
    Routed(RoutedHeader),
    ConflictResolve(ConflictResolve),
    Redeem(Redeem),
    Refused(Refused),
}

/// The wire names of [`Message`]'s variants.
pub const MESSAGE_TYPES: &[&str] = &[
    "handshake",
    "sync_request",
    "sync_response",
    "objects",
    "sync_complete",
    "timeline_update",
    "seal_broadcast",
    "heartbeat",
    "peer_discovery",
    "conflict_resolve",
    "topology",
    "topology_summary",
    "routed",
    "redeem",
    "refused",
];

impl Message {
    /// The wire name of this message's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Handshake(_) => "handshake",
            Message::SyncRequest(_) => "sync_request",
            Message::SyncResponse(_) => "sync_response",
            Message::Objects(_) => "objects",
            Message::SyncComplete(_) => "sync_complete",
            Message::TimelineUpdate(_) => "timeline_update",
            Message::SealBroadcast(_) => "seal_broadcast",
            Message::Heartbeat(_) => "heartbeat",
            Message::PeerDiscovery(_) => "peer_discovery",
            Message::ConflictResolve(_) => "conflict_resolve",
            Message::Topology(_) => "topology",
            Message::TopologySummary(_) => "topology_summary",
            Message::Routed(_) => "routed",
            Message::Redeem(_) => "redeem",
            Message::Refused(_) => "refused",
        }
    }
}

/// A message with its envelope fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Unique per sender, for tracking and deduplication.
    pub id: u64,
    /// The sender's node id, which must be the session's peer.
    pub from: NodeId,
    /// The sender's clock when sent, in microseconds (informational).
    pub ts: u64,
    pub message: Message,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    id: u64,
    #[serde(rename = "type")]
    kind: String,
    from: String,
    ts: u64,
    /// Left unparsed until the type is known: parsed once, straight into
    /// its struct (no intermediate `serde_json::Value` tree).
    #[serde(default, borrow)]
    payload: Option<&'a serde_json::value::RawValue>,
}

/// The payload of a message of type `kind` (one of [`MESSAGE_TYPES`]).
fn decode_payload(kind: &str, payload: &str) -> Result<Message, serde_json::Error> {
    use serde_json::from_str as p;
    Ok(match kind {
        "handshake" => Message::Handshake(p(payload)?),
        "sync_request" => Message::SyncRequest(p(payload)?),
        "sync_response" => Message::SyncResponse(p(payload)?),
        "objects" => Message::Objects(p(payload)?),
        "sync_complete" => Message::SyncComplete(p(payload)?),
        "timeline_update" => Message::TimelineUpdate(p(payload)?),
        "seal_broadcast" => Message::SealBroadcast(p(payload)?),
        "heartbeat" => Message::Heartbeat(p(payload)?),
        "peer_discovery" => Message::PeerDiscovery(p(payload)?),
        "conflict_resolve" => Message::ConflictResolve(p(payload)?),
        "topology" => Message::Topology(p(payload)?),
        "topology_summary" => Message::TopologySummary(p(payload)?),
        "routed" => Message::Routed(p(payload)?),
        "redeem" => Message::Redeem(p(payload)?),
        "refused" => Message::Refused(p(payload)?),
        // Callers check MESSAGE_TYPES first; a test checks that every type
        // listed there has an arm here.
        _ => {
            return Err(serde::de::Error::custom(format!(
                "no decoder for message type {kind:?}"
            )));
        }
    })
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn every_listed_type_has_a_decoder() {
        for kind in MESSAGE_TYPES {
            if let Err(e) = decode_payload(kind, "{}") {
                assert!(!e.to_string().contains("no decoder"), "{kind}: {e}");
            }
        }
        assert!(decode_payload("nope", "{}").is_err());
    }
}

/// A parsed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A message of a known type, and the frame's binary section.
    Message(Box<Envelope>, Vec<u8>),
    /// A well-formed envelope of a type this version does not know.
    Unknown { kind: String, id: u64 },
}

/// Appends one frame to `out`.
pub fn encode_frame(env: &Envelope, binary: &[u8], out: &mut Vec<u8>) {
    let message = encode_message(&env.message);
    encode_frame_with(env.id, &env.from.to_hex(), env.ts, &message, binary, out);
}

/// A message as JSON, `{"type":...,"payload":...}`: serialised once when the
/// same message goes to several peers (a flooded advertisement), then framed
/// per peer by [`encode_frame_with`].
pub fn encode_message(message: &Message) -> Vec<u8> {
    // Serialising our own plain structs (strings, numbers, maps with string
    // keys) cannot fail.
    serde_json::to_vec(message).unwrap_or_default()
}

/// Appends one frame to `out`: the envelope fields, then `message` (from
/// [`encode_message`]) spliced in, then the binary section. `from` is the
/// sender's id in hex, kept as text by the caller so the hot path does not
/// format it per frame. The same bytes as
/// serialising the whole envelope, without serde's slower `flatten`.
pub fn encode_frame_with(
    id: u64,
    from: &str,
    ts: u64,
    message: &[u8],
    binary: &[u8],
    out: &mut Vec<u8>,
) {
    let head = serde_json::to_vec(&EnvelopeHead { id, from, ts }).unwrap_or_default();
    // `head` is `{...}` and `message` is `{...}`: join them as one object.
    let body = message.get(1..).unwrap_or_default();
    let json_len = head.len() - 1 + 1 + body.len();
    let len = 4 + json_len + binary.len();
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&(json_len as u32).to_be_bytes());
    out.extend_from_slice(&head[..head.len() - 1]);
    out.push(b',');
    out.extend_from_slice(body);
    out.extend_from_slice(binary);
}

#[derive(Serialize)]
struct EnvelopeHead<'a> {
    id: u64,
    from: &'a str,
    ts: u64,
}

/// The size of the frame [`encode_frame`] would write, without the binary section.
pub fn frame_len(json_len: usize, binary_len: usize) -> usize {
    FRAME_HEADER + json_len + binary_len
}

/// Parses one complete frame body (everything after the length prefix).
pub fn parse_frame(body: &[u8]) -> Result<Decoded, WireError> {
    if body.len() < 4 {
        return Err(WireError::TooShort(body.len() as u32));
    }
    let json_len = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    if json_len as usize > rest.len() {
        return Err(WireError::JsonLength {
            json: json_len,
            frame: body.len() as u32,
        });
    }
    let (json, binary) = rest.split_at(json_len as usize);
    let env: EnvelopeIn =
        serde_json::from_slice(json).map_err(|e| WireError::Envelope(e.to_string()))?;
    if !MESSAGE_TYPES.contains(&env.kind.as_str()) {
        return Ok(Decoded::Unknown {
            kind: env.kind,
            id: env.id,
        });
    }
    // Checked only for known types: an unknown message is ignored whole, as
    // it was when `from` was text. Lowercase only, as the session compared it.
    let from = NodeId::parse_canonical(&env.from)
        .map_err(|e| WireError::Envelope(format!("from: {e}")))?;
    let payload = env.payload.map_or("null", |r| r.get());
    let message: Message = decode_payload(&env.kind, payload).map_err(|e| WireError::Payload {
        kind: env.kind.clone(),
        reason: e.to_string(),
    })?;
    Ok(Decoded::Message(
        Box::new(Envelope {
            id: env.id,
            from,
            ts: env.ts,
            message,
        }),
        binary.to_vec(),
    ))
}

/// Splits a byte stream into frames, refusing oversized ones before buffering them.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: u32,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_message_size` bytes.
    pub fn new(max_message_size: u32) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max: max_message_size,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.push_with(|buf| buf.extend_from_slice(data));
    }

    /// Lets `fill` append received bytes straight into the buffer (a decrypting
    /// channel writes plaintext here without an intermediate copy).
    pub fn push_with<R>(&mut self, fill: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        fill(&mut self.buf)
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Changes the largest frame accepted from now on (a connection's limit
    /// is raised once its peer is admitted).
    pub fn set_max(&mut self, max_message_size: u32) {
        self.max = max_message_size;
    }

    /// The largest frame accepted.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// What the frame being received will hold once complete (its length
    /// prefix included), or what is buffered when that is more or the prefix
    /// has not arrived: the memory this decoder is about to need.
    pub fn pending(&self) -> usize {
        let avail = &self.buf[self.start..];
        let declared = match avail {
            [a, b, c, d, ..] => 4 + u32::from_be_bytes([*a, *b, *c, *d]).min(self.max) as usize,
            _ => 0,
        };
        declared.max(avail.len())
    }

    /// The next complete frame body, if one has arrived. An error is final: the
    /// stream cannot be resynchronised, so the caller closes the connection.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        Ok(self.next_frame_ref()?.map(<[u8]>::to_vec))
    }

    /// Like [`next_frame`](Self::next_frame), without copying the frame out.
    pub fn next_frame_ref(&mut self) -> Result<Option<&[u8]>, WireError> {
        let avail = &self.buf[self.start..];
        if avail.len() < 4 {
            self.compact();
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]);
        if len > self.max {
            return Err(WireError::TooLarge {
                len: u64::from(len),
                max: u64::from(self.max),
            });
        }
        if len < 4 {
            return Err(WireError::TooShort(len));
        }
        let total = 4 + len as usize;
        if avail.len() < total {
            self.compact();
            return Ok(None);
        }
        let begin = self.start + 4;
        self.start += total;
        Ok(Some(&self.buf[begin..begin + total - 4]))
    }

    fn compact(&mut self) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Appends one object (id, length, encoding) to an objects frame's binary section.
pub fn push_object(out: &mut Vec<u8>, id: &ObjectId, encoding: &[u8]) {
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&(encoding.len() as u32).to_be_bytes());
    out.extend_from_slice(encoding);
}

/// Appends one object in its stored form to an objects frame's binary section:
/// `kind u8 · [id (32), blobs only] · codec u8 · encoding length u32 · [base id
/// (32), deltas only] · stored length u32 · stored bytes`. A tree, seal or
/// chunk list goes without its id: the receiver decodes it anyway, and hashes
/// it to learn the id (32 bytes saved on each).
///
/// `back` names a delta's base by its distance back in the stream instead
/// (codec byte 3, then the distance as u16): 2 bytes instead of 32, for the
/// common case of a base sent earlier in the same sync.
pub fn push_stored(out: &mut Vec<u8>, id: &ObjectId, s: &crate::codec::Stored, back: Option<u16>) {
    out.push(s.kind as u8);
    if s.kind == crate::object::ObjectKind::Blob {
        out.extend_from_slice(id.as_bytes());
    }
    let delta = s.codec == crate::codec::Codec::Delta;
    match back.filter(|d| delta && *d > 0) {
        Some(_) => out.push(CODEC_DELTA_BACK),
        None => out.push(s.codec as u8),
    }
    out.extend_from_slice(&s.len.to_be_bytes());
    match (back.filter(|d| delta && *d > 0), s.base.filter(|_| delta)) {
        (Some(d), _) => out.extend_from_slice(&d.to_be_bytes()),
        (None, Some(b)) => out.extend_from_slice(b.as_bytes()),
        (None, None) => {}
    }
    out.extend_from_slice(&(s.bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&s.bytes);
}

/// The wire-only codec byte of a delta whose base is named by distance.
const CODEC_DELTA_BACK: u8 = 3;

/// One object of a section of stored forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// Blobs only: everything else is hashed on arrival.
    pub id: Option<ObjectId>,
    pub stored: crate::codec::Stored,
    /// A delta whose base is the object this many places back in the stream
    /// (`stored.base` is then unset until the receiver fills it in).
    pub back: Option<u16>,
}

/// Splits a section of stored forms ([`push_stored`]): each blob with its id,
/// everything else without (`None`: the receiver hashes it). Checks the
/// framing, the kind and codec bytes, that only blobs and trees come as
/// deltas, and that no object claims more than `max_len` bytes decoded;
/// decoding and the check against the id come later.
pub fn split_stored(
    mut data: &[u8],
    count: u32,
    max_len: u32,
) -> Result<Vec<StoredEntry>, WireError> {
    use crate::codec::{Codec, Stored};
    use crate::object::ObjectKind;
    if count as usize > MAX_OBJECTS_PER_FRAME {
        return Err(WireError::Objects("too many objects in one frame"));
    }
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
        if data.len() < n {
            return Err(WireError::Objects("stored object cut short"));
        }
        let (head, rest) = data.split_at(n);
        *data = rest;
        Ok(head)
    }
    fn id_of(b: &[u8]) -> ObjectId {
        let mut id = [0u8; 32];
        id.copy_from_slice(b);
        ObjectId(id)
    }
    fn u32_of(b: &[u8]) -> u32 {
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    let mut out = Vec::with_capacity((count as usize).min(data.len() / 10));
    for _ in 0..count {
        let kind = ObjectKind::from_byte(take(&mut data, 1)?[0])
            .ok_or(WireError::Objects("unknown object kind"))?;
        let id = if kind == ObjectKind::Blob {
            Some(id_of(take(&mut data, 32)?))
        } else {
            None
        };
        let head = take(&mut data, 5)?;
        let by_distance = head[0] == CODEC_DELTA_BACK;
        let codec = if by_distance {
            Codec::Delta
        } else {
            Codec::from_byte(head[0]).ok_or(WireError::Objects("unknown codec"))?
        };
        let len = u32_of(&head[1..5]);
        if len > max_len {
            return Err(WireError::Objects("object larger than the frame limit"));
        }
        let base = if codec == Codec::Delta {
            if !matches!(kind, ObjectKind::Blob | ObjectKind::Tree) {
                return Err(WireError::Objects(
                    "a delta that is neither a blob nor a tree",
                ));
            }
            if by_distance {
                None
            } else {
                let b = id_of(take(&mut data, 32)?);
                if Some(b) == id {
                    return Err(WireError::Objects(
                        "an object sent as a delta against itself",
                    ));
                }
                Some(b)
            }
        } else {
            None
        };
        let back = if by_distance {
            let d = take(&mut data, 2)?;
            match u16::from_be_bytes([d[0], d[1]]) {
                0 => return Err(WireError::Objects("a delta against itself (distance 0)")),
                d => Some(d),
            }
        } else {
            None
        };
        let stored_len = u32_of(take(&mut data, 4)?) as usize;
        let bytes = take(&mut data, stored_len)?.to_vec();
        if codec == Codec::Raw && bytes.len() != len as usize {
            return Err(WireError::Objects(
                "a raw object whose length is not its size",
            ));
        }
        out.push(StoredEntry {
            id,
            stored: Stored {
                kind,
                codec,
                len,
                base,
                bytes,
            },
            back,
        });
    }
    if !data.is_empty() {
        return Err(WireError::Objects("bytes after the last object"));
    }
    Ok(out)
}

/// Splits an objects frame's binary section into `(id, encoding)` pairs; the
/// encodings still have to be verified against their ids.
pub fn split_objects(mut data: &[u8], count: u32) -> Result<Vec<(ObjectId, &[u8])>, WireError> {
    if count as usize > MAX_OBJECTS_PER_FRAME {
        return Err(WireError::Objects("too many objects in one frame"));
    }
    let mut out = Vec::with_capacity((count as usize).min(data.len() / 36));
    for _ in 0..count {
        if data.len() < 36 {
            return Err(WireError::Objects("object header cut short"));
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&data[..32]);
        let len = u32::from_be_bytes([data[32], data[33], data[34], data[35]]) as usize;
        data = &data[36..];
        if data.len() < len {
            return Err(WireError::Objects("object cut short"));
        }
        out.push((ObjectId(id), &data[..len]));
        data = &data[len..];
    }
    if !data.is_empty() {
        return Err(WireError::Objects("bytes after the last object"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(message: Message) -> Envelope {
        Envelope {
            id: 7,
            from: NodeId([0xab; 32]),
            ts: 123,
            message,
        }
    }

    #[test]
    fn frames_round_trip_in_any_split() {
        let m = env(Message::Heartbeat(Heartbeat {
            ping: Some(3),
            pong: None,
        }));
        let mut out = Vec::new();
        encode_frame(&m, b"bin", &mut out);
        encode_frame(&m, b"", &mut out);
        for split in 1..out.len() {
            let mut d = FrameDecoder::new(1 << 20);
            d.push(&out[..split]);
            let mut frames = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            d.push(&out[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            assert_eq!(frames.len(), 2);
            assert_eq!(
                parse_frame(&frames[0]).unwrap(),
                Decoded::Message(Box::new(m.clone()), b"bin".to_vec())
            );
        }
    }

    #[test]
    fn pending_reports_the_declared_frame_and_the_limit_can_be_raised() {
        let mut d = FrameDecoder::new(100);
        assert_eq!(d.pending(), 0);
        d.push(&[0, 0]);
        assert_eq!(d.pending(), 2);
        d.push(&[0, 50, b'x']);
        assert_eq!(d.pending(), 54);
        let mut big = FrameDecoder::new(100);
        big.push(&1000u32.to_be_bytes());
        assert!(matches!(big.next_frame(), Err(WireError::TooLarge { .. })));
        let mut raised = FrameDecoder::new(100);
        raised.set_max(2000);
        raised.push(&1000u32.to_be_bytes());
        assert_eq!(raised.next_frame().unwrap(), None);
        assert_eq!(raised.pending(), 1004);
        assert_eq!(raised.max(), 2000);
    }

    #[test]
    fn oversized_frame_refused_from_its_prefix() {
        let mut d = FrameDecoder::new(1000);
        d.push(&u32::MAX.to_be_bytes());
        assert!(matches!(d.next_frame(), Err(WireError::TooLarge { .. })));
        assert!(d.buffered() <= 4);
    }

    #[test]
    fn unknown_types_are_reported_not_rejected() {
        let json = br#"{"id":1,"type":"future_thing","from":"x","ts":0,"payload":{"a":1}}"#;
        let mut body = (json.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(json);
        assert_eq!(
            parse_frame(&body).unwrap(),
            Decoded::Unknown {
                kind: "future_thing".into(),
                id: 1
            }
        );
    }

    #[test]
    fn hostile_timeline_names_are_malformed() {
        let json = format!(
            r#"{{"id":1,"type":"timeline_update","from":"{A}","ts":0,"payload":{{"repo":"r","timeline":"../../etc","head":"{}","previous":null}}}}"#,
            "0".repeat(64)
        );
        assert!(matches!(
            parse_frame(&body(&json)),
            Err(WireError::Payload { .. })
        ));
    }

    #[test]
    fn timeline_names_longer_than_the_limit_are_malformed() {
        let frame = |name: &str| {
            let json = format!(
                r#"{{"id":1,"type":"timeline_update","from":"{A}","ts":0,"payload":{{"repo":"r","timeline":"{name}","head":"{}","previous":null}}}}"#,
                "0".repeat(64)
            );
            parse_frame(&body(&json))
        };
        let longest = "a".repeat(crate::timeline::MAX_TIMELINE_NAME);
        assert!(matches!(frame(&longest), Ok(Decoded::Message(..))));
        let over = "a".repeat(crate::timeline::MAX_TIMELINE_NAME + 1);
        assert!(matches!(frame(&over), Err(WireError::Payload { .. })));
    }

    /// A frame body (no length prefix) holding `json`.
    fn body(json: &str) -> Vec<u8> {
        let mut body = (json.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(json.as_bytes());
        body
    }

    const A: &str = "abababababababababababababababababababababababababababababababab";
    const B: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";

    fn b() -> NodeId {
        B.parse().unwrap()
    }

    #[test]
    fn typed_ids_encode_to_the_bytes_the_text_fields_did() {
        // The exact frame the `String` version wrote for this envelope.
        let mut out = Vec::new();
        let m = env(Message::Heartbeat(Heartbeat {
            ping: Some(3),
            pong: None,
        }));
        encode_frame(&m, b"", &mut out);
        let json = format!(
            r#"{{"id":7,"from":"{A}","ts":123,"type":"heartbeat","payload":{{"ping":3}}}}"#
        );
        let mut want = ((json.len() + 4) as u32).to_be_bytes().to_vec();
        want.extend_from_slice(&body(&json));
        assert_eq!(out, want);

        let routed = Message::Routed(RoutedHeader {
            session: 5,
            src: NodeId([0xab; 32]),
            dst: b(),
            hops_left: 8,
        });
        assert_eq!(
            String::from_utf8(encode_message(&routed)).unwrap(),
            format!(
                r#"{{"type":"routed","payload":{{"session":5,"src":"{A}","dst":"{B}","hops_left":8}}}}"#
            )
        );
        let peers = Message::PeerDiscovery(PeerDiscovery {
            peers: vec![PeerInfo {
                node: b(),
                addr: "127.0.0.1:9".into(),
            }],
        });
        assert_eq!(
            String::from_utf8(encode_message(&peers)).unwrap(),
            format!(
                r#"{{"type":"peer_discovery","payload":{{"peers":[{{"node":"{B}","addr":"127.0.0.1:9"}}]}}}}"#
            )
        );
        for message in [routed, peers] {
            let mut out = Vec::new();
            encode_frame(&env(message.clone()), b"", &mut out);
            let Decoded::Message(back, _) = parse_frame(&out[4..]).unwrap() else {
                panic!("not a message");
            };
            assert_eq!(back.message, message);
        }
    }

    #[test]
    fn an_invalid_node_id_from_a_peer_is_a_decode_error() {
        let frame = |from: &str, kind: &str, payload: &str| {
            parse_frame(&body(&format!(
                r#"{{"id":1,"type":"{kind}","from":"{from}","ts":0,"payload":{payload}}}"#
            )))
        };
        let hb = r#"{"ping":1}"#;
        assert!(matches!(
            frame(A, "heartbeat", hb),
            Ok(Decoded::Message(..))
        ));
        for bad in ["x", "", &A[..63], &"g".repeat(64), &A.to_uppercase()] {
            let e = frame(bad, "heartbeat", hb).unwrap_err();
            assert!(
                matches!(&e, WireError::Envelope(r) if r.contains("from")),
                "{bad:?}: {e}"
            );
        }
        let routed = |src: &str, dst: &str| {
            frame(
                A,
                "routed",
                &format!(r#"{{"session":1,"src":"{src}","dst":"{dst}","hops_left":1}}"#),
            )
        };
        assert!(matches!(routed(A, B), Ok(Decoded::Message(..))));
        for (src, dst) in [
            ("x", B),
            (A, "x"),
            (&A.to_uppercase()[..], B),
            (A, &B.to_uppercase()[..]),
        ] {
            assert!(
                matches!(routed(src, dst), Err(WireError::Payload { ref kind, .. }) if kind == "routed"),
                "{src} {dst}"
            );
        }
        let peers = |node: &str| {
            frame(
                A,
                "peer_discovery",
                &format!(r#"{{"peers":[{{"node":"{node}","addr":"127.0.0.1:9"}}]}}"#),
            )
        };
        assert!(matches!(peers("nope"), Err(WireError::Payload { .. })));
        // An address hint, read in either case as before.
        let Ok(Decoded::Message(upper, _)) = peers(&B.to_uppercase()) else {
            panic!("upper-case peer info refused");
        };
        assert_eq!(
            upper.message,
            Message::PeerDiscovery(PeerDiscovery {
                peers: vec![PeerInfo {
                    node: b(),
                    addr: "127.0.0.1:9".into()
                }]
            })
        );
    }

    #[test]
    fn object_sections_round_trip_and_reject_garbage() {
        let mut bin = Vec::new();
        let a = ObjectId::hash(b"a");
        push_object(&mut bin, &a, b"hello");
        push_object(&mut bin, &a, b"");
        let objs = split_objects(&bin, 2).unwrap();
        assert_eq!(objs, vec![(a, &b"hello"[..]), (a, &b""[..])]);
        assert!(split_objects(&bin, 3).is_err());
        assert!(split_objects(&bin, 1).is_err());
        assert!(split_objects(&bin[..40], 1).is_err());
    }
}
