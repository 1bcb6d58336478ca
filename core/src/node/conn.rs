//! Per-connection state: the secure channel, frame decoding, queues, and the
//! sync jobs running on it in each direction.

use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::{Conflict, ConnId, PeerStatus};
use crate::NodeId;
use crate::id::{IdMap, IdSet, ObjectId};
use crate::noise::Session;
use crate::object::Seal;
use crate::store::HeadUpdate;
use crate::time::Instant;
use crate::timeline::TimelineName;
use crate::wire::FrameDecoder;

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Outbound, waiting for the TCP connection.
    Dialing,
    /// Running the Noise handshake.
    Handshaking,
    /// Authenticated but not trusted: waiting for a `redeem` that proves an
    /// invitation (only while some invitation is open). Nothing is sent.
    Admission,
    /// Refused: the `refused` message is being flushed, then the connection
    /// closes. Everything the peer sends is ignored.
    Refusing,
    /// Authenticated; waiting for the peer's capabilities.
    AwaitHello,
    /// Exchanging protocol messages.
    Ready,
    /// Closed by the node; waiting for the owner to report it gone.
    Closed,
}

impl ConnState {
    /// Whether the Noise handshake has proved the peer's key in this state.
    fn authenticated(self) -> bool {
        matches!(
            self,
            ConnState::Admission | ConnState::Refusing | ConnState::AwaitHello | ConnState::Ready
        )
    }
}

/// A connection's [`ConnState`] with what that state has proven: from the end
/// of the Noise handshake on, the peer's key. Keeping the key inside the
/// states that have one means a ready connection cannot lack a peer, so no
/// stand-in key is ever needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Dialling or running the Noise handshake: no key yet.
    Opening(ConnState),
    /// Admission, refusing, waiting for the hello, or ready.
    Authenticated(ConnState, NodeId),
    /// Closed, with the key if the handshake got that far.
    Closed(Option<NodeId>),
}

impl Phase {
    pub fn state(self) -> ConnState {
        match self {
            Phase::Opening(s) | Phase::Authenticated(s, _) => s,
            Phase::Closed(_) => ConnState::Closed,
        }
    }

    /// The proven key; `None` only before the handshake finished.
    pub fn peer(self) -> Option<NodeId> {
        match self {
            Phase::Opening(_) => None,
            Phase::Authenticated(_, p) => Some(p),
            Phase::Closed(p) => p,
        }
    }
}

/// The phases of a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PullState {
    Requested,
    Receiving,
    Landing,
}

/// A pull from the peer on this connection.
pub(super) struct Pull {
    /// Pulls run on ready connections only, so they always know whom from.
    pub peer: NodeId,
    pub sync: u64,
    pub batch: u64,
    /// The peer's heads this pull brings in.
    pub targets: BTreeMap<TimelineName, ObjectId>,
    pub state: PullState,
    pub expected: u64,
    pub received: u64,
    pub bytes: u64,
    pub last_progress: Instant,
    /// Seals received in this batch, for ancestry checks before it lands.
    pub seals: IdMap<Seal>,
    pub updates: Vec<HeadUpdate>,
    pub conflicts: Vec<Conflict>,
    /// Divergences to merge once the batch has landed (auto_merge).
    pub merges: Vec<Conflict>,
    /// Resolutions to tell the peer about once the batch has landed.
    pub resolved: Vec<(Conflict, ObjectId)>,
    /// Objects put into `batch` since the last checkpoint, with their
    /// children, in landing order.
    pub staged: Vec<(ObjectId, Vec<ObjectId>)>,
    /// Encoded bytes of `staged`.
    pub staged_bytes: u64,
    /// The checkpoint batch being landed, if any: at most one is in flight, so
    /// a failed checkpoint never leaves a later batch referring to its objects.
    pub checkpoint: Option<u64>,
    /// `sync_complete` arrived while a checkpoint was in flight: finish when
    /// it lands.
    pub complete: bool,
    /// A refetch round (`refetch.rs`): the ids asked; no other object is taken.
    pub refetch: Option<IdSet>,
    /// Decodes stored forms (`zstd-delta`).
    pub thin: super::thin::ThinReceiver,
}

impl Pull {
    pub fn new(
        peer: NodeId,
        sync: u64,
        batch: u64,
        targets: BTreeMap<TimelineName, ObjectId>,
        now: Instant,
    ) -> Pull {
        Pull {
            peer,
            sync,
            batch,
            targets,
            state: PullState::Requested,
            expected: 0,
            received: 0,
            bytes: 0,
            last_progress: now,
            seals: IdMap::default(),
            updates: Vec::new(),
            conflicts: Vec::new(),
            merges: Vec::new(),
            resolved: Vec::new(),
            staged: Vec::new(),
            staged_bytes: 0,
            checkpoint: None,
            complete: false,
            refetch: None,
            thin: Default::default(),
        }
    }
}

/// A sync this node serves: the planned objects, sent lazily as the socket drains.
pub(super) struct Serve {
    pub sync: u64,
    pub plan: Vec<ObjectId>,
    pub next: usize,
    /// With `zstd-delta`: how each object is encoded for the puller.
    pub thin: Option<super::thin::ThinSender>,
    /// An object already encoded (and counted by `thin`) that did not fit the
    /// last frame: it opens the next one.
    pub carry: Vec<u8>,

    /// Frames to skip before trying compression again after it did not pay.
    skip_compression: u32,
}

impl Serve {
    pub fn new(sync: u64, plan: Vec<ObjectId>, thin: Option<super::thin::ThinSender>) -> Serve {
        Serve {
            sync,
            plan,
            next: 0,
            thin,
            carry: Vec::new(),

            skip_compression: 0,
        }
    }

    /// Whether to try compressing the next frame: incompressible data (a video,
    /// random bytes) is only re-tried every 16 frames, so it costs little.
    pub fn try_compress(&mut self) -> bool {
        if self.skip_compression > 0 {
            self.skip_compression -= 1;
            false
        } else {
            true
        }
    }

    pub fn compress_failed(&mut self) {
        self.skip_compression = 16;
    }
}

/// Where a routed session goes: the far end and the session number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: NodeId,
    pub session: u64,
}

/// The identifying part of a connection, kept after it is removed.
pub(super) struct Snapshot {
    pub id: ConnId,
}

pub(super) struct Conn {
    pub id: ConnId,
    pub addr: SocketAddr,
    pub direction: Direction,
    pub opened: Instant,
    /// Read through [`Conn::state`] and [`Conn::peer`]; moved by
    /// [`Conn::set_state`] and [`Conn::authenticated`].
    phase: Phase,
    pub was_ready: bool,
    pub noise: Option<Session>,
    pub frames: FrameDecoder,
    /// Reused buffers for building object frames, so a long transfer does not
    /// allocate (and page-fault) a fresh megabyte per frame.
    pub bin_buf: Vec<u8>,
    pub frame_buf: Vec<u8>,
    /// Encrypted bytes waiting for `poll_transmit`.
    pub out: Vec<u8>,
    /// How much of `out` was already handed to the owner.
    pub out_pos: usize,
    /// Encoded frames waiting for the channel.
    pub ctrl: VecDeque<Vec<u8>>,
    /// Where the one batch of bulk (object) data produced under an upload
    /// cap sits in `out`: bytes before and after it are control traffic,
    /// which is never held for tokens (see `Node::sendable`).
    pub bulk_start: usize,
    pub bulk_end: usize,
    /// This connection's own upload and download caps (per peer).
    pub up: super::rate::Bucket,
    pub down: super::rate::Bucket,
    pub blocked: bool,
    /// The invitation secret this (outbound) connection redeems once
    /// established, as the newcomer's side of `ivaldi p2p join`.
    pub redeem: Option<[u8; 32]>,
    /// Why the connection closes once its `refused` message is out.
    pub refusing: Option<String>,
    pub shares_repo: bool,
    pub encrypted: bool,
    pub lz4: bool,
    /// Both sides speak `zstd-delta`: objects travel in stored form (`thin.rs`).
    pub zdelta: bool,
    pub remote_heads: BTreeMap<TimelineName, ObjectId>,
    /// New timeline names from this peer already refused and counted
    /// (`limits`), so each is counted once per connection.
    pub refused_timelines: std::collections::BTreeSet<TimelineName>,
    pub remote_repos: Vec<String>,
    pub remote_strategy: Option<crate::wire::StrategyAdvert>,
    /// Protocol features the peer offered in its handshake.
    pub remote_features: Vec<String>,
    /// Heads we announced to this peer, when access rules are configured:
    /// the only seals it may ask for (see `Node::on_sync_request`).
    pub advertised: crate::id::IdSet,
    /// The heads our handshake advertised, kept until the peer's handshake
    /// makes the connection ready: heads that move in between are announced
    /// then (`announce_heads` only reaches ready connections).
    pub hello_heads: BTreeMap<TimelineName, ObjectId>,
    /// Where this peer accepts connections, when known.
    pub dial_addr: Option<SocketAddr>,
    pub last_rx: Instant,
    pub last_msg_id: u64,
    pub next_ping: Instant,
    pub ping: Option<(u64, Instant)>,
    pub rtt: Option<Duration>,
    pub pull: Option<Pull>,
    pub pull_wanted: bool,
    pub pull_again: bool,
    pub serving: VecDeque<Serve>,
    /// Set for a routed session (no socket; carried through the mesh).
    pub route: Option<Route>,
}

impl Conn {
    pub fn new(
        id: ConnId,
        addr: SocketAddr,
        direction: Direction,
        now: Instant,
        heartbeat: Duration,
        max_message_size: u32,
    ) -> Conn {
        Conn {
            id,
            addr,
            direction,
            opened: now,
            phase: Phase::Opening(ConnState::Dialing),
            was_ready: false,
            noise: None,
            frames: FrameDecoder::new(max_message_size),
            bin_buf: Vec::new(),
            frame_buf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            ctrl: VecDeque::new(),
            bulk_start: 0,
            bulk_end: 0,
            up: super::rate::cap(0, now),
            down: super::rate::cap(0, now),
            blocked: false,
            redeem: None,
            refusing: None,
            shares_repo: false,
            encrypted: true,
            lz4: false,
            zdelta: false,
            remote_heads: BTreeMap::new(),
            refused_timelines: Default::default(),
            remote_repos: Vec::new(),
            remote_strategy: None,
            remote_features: Vec::new(),
            advertised: crate::id::IdSet::default(),
            hello_heads: BTreeMap::new(),
            dial_addr: None,
            last_rx: now,
            last_msg_id: 0,
            next_ping: now + heartbeat,
            ping: None,
            rtt: None,
            pull: None,
            pull_wanted: false,
            pull_again: false,
            serving: VecDeque::new(),
            route: None,
        }
    }

    /// Encrypted bytes not yet handed on.
    pub fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Everything queued on this connection: encrypted bytes and frames waiting.
    pub fn queued(&self) -> usize {
        self.pending_out() + self.ctrl.iter().map(Vec::len).sum::<usize>()
    }

    /// Takes up to `max` encrypted bytes (for carrying them in routed frames).
    pub fn take_out(&mut self, max: usize) -> Vec<u8> {
        let n = self.pending_out().min(max);
        let chunk = self.out[self.out_pos..self.out_pos + n].to_vec();
        self.consume_out(n);
        chunk
    }

    /// Marks `n` bytes of `out` as handed on, emptying it when all were.
    pub fn consume_out(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos >= self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            self.bulk_start = 0;
            self.bulk_end = 0;
        }
    }

    /// Bulk bytes of `out` not yet handed on.
    pub fn bulk_pending(&self) -> usize {
        self.bulk_end
            .saturating_sub(self.out_pos.max(self.bulk_start))
    }

    pub fn state(&self) -> ConnState {
        self.phase.state()
    }

    /// The key the Noise handshake proved; `None` only before it finished
    /// (or for a connection closed before that).
    pub fn peer(&self) -> Option<NodeId> {
        self.phase.peer()
    }

    /// The peer of a ready connection: `None` in every other state.
    pub fn ready_peer(&self) -> Option<NodeId> {
        match self.phase {
            Phase::Authenticated(ConnState::Ready, p) => Some(p),
            _ => None,
        }
    }

    /// The Noise handshake proved `peer`'s key: the connection waits for its
    /// hello.
    pub fn authenticated(&mut self, peer: NodeId) {
        self.phase = Phase::Authenticated(ConnState::AwaitHello, peer);
    }

    /// Moves to `to`, keeping the proven key. Entering an authenticated state
    /// before any key is proven would be a bug in the node (every caller acts
    /// on a message or a decision about a proven peer); the connection is
    /// then closed rather than given a stand-in key.
    pub fn set_state(&mut self, to: ConnState) {
        self.phase = match (to, self.phase.peer()) {
            (ConnState::Closed, peer) => Phase::Closed(peer),
            (s, Some(peer)) if s.authenticated() => Phase::Authenticated(s, peer),
            (s, None) if s.authenticated() => Phase::Closed(None),
            (s, _) => Phase::Opening(s),
        };
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot { id: self.id }
    }

    pub fn status(&self) -> PeerStatus {
        PeerStatus {
            conn: self.id,
            peer: self.peer(),
            addr: self.addr,
            direction: self.direction,
            state: self.state(),
            rtt_micros: self.rtt.map(|r| r.as_micros() as u64),
            last_seen: self.last_rx,
            shares_repo: self.shares_repo,
            encrypted: self.encrypted,
            syncing: self.pull.is_some() || !self.serving.is_empty(),
            queued_bytes: self.out.len() - self.out_pos
                + self.ctrl.iter().map(Vec::len).sum::<usize>(),
            remote_repos: self.remote_repos.clone(),
            routed_via_mesh: self.route.is_some(),
            sync_phase: match &self.pull {
                None => "idle".to_owned(),
                Some(p) => match p.state {
                    PullState::Requested => format!("sync {} requested", p.sync),
                    PullState::Receiving => format!(
                        "sync {} receiving {}/{} objects",
                        p.sync, p.received, p.expected
                    ),
                    PullState::Landing => format!("sync {} landing", p.sync),
                },
            },
            serving: self.serving.len(),
            features: self.remote_features.clone(),
            last_error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        let addr = "127.0.0.1:1".parse().expect("an address");
        let hb = Duration::from_secs(1);
        Conn::new(1, addr, Direction::Inbound, Instant::ZERO, hb, 1 << 20)
    }

    #[test]
    fn the_key_is_known_from_the_handshake_on_and_kept_when_closed() {
        let peer = NodeId([7; 32]);
        let mut c = conn();
        assert_eq!(
            (c.state(), c.peer(), c.ready_peer()),
            (ConnState::Dialing, None, None)
        );
        c.set_state(ConnState::Handshaking);
        assert_eq!(c.peer(), None);
        c.authenticated(peer);
        assert_eq!((c.state(), c.peer()), (ConnState::AwaitHello, Some(peer)));
        assert_eq!(c.ready_peer(), None);
        for s in [
            ConnState::Admission,
            ConnState::AwaitHello,
            ConnState::Ready,
        ] {
            c.set_state(s);
            assert_eq!((c.state(), c.peer()), (s, Some(peer)));
        }
        assert_eq!(c.ready_peer(), Some(peer));
        c.set_state(ConnState::Refusing);
        assert_eq!((c.peer(), c.ready_peer()), (Some(peer), None));
        c.set_state(ConnState::Closed);
        assert_eq!(
            (c.state(), c.peer(), c.ready_peer()),
            (ConnState::Closed, Some(peer), None)
        );
        assert_eq!(c.status().peer, Some(peer));
    }

    #[test]
    fn an_authenticated_state_without_a_key_closes_instead_of_inventing_one() {
        for s in [
            ConnState::Admission,
            ConnState::Refusing,
            ConnState::AwaitHello,
            ConnState::Ready,
        ] {
            let mut c = conn();
            c.set_state(s);
            assert_eq!((c.state(), c.peer()), (ConnState::Closed, None), "{s:?}");
        }
    }
}
