//! The node: one peer's whole protocol state machine.
//!
//! # Driving a node
//!
//! A [`Node`] never does I/O. Its owner (the smol daemon, the simulator, a test)
//! feeds it inputs and carries out what it asks:
//!
//! 1. **Inputs**, each with the current time `now`:
//!    [`handle_accepted`](Node::handle_accepted) (an inbound connection),
//!    [`handle_connected`](Node::handle_connected) (a dial we asked for succeeded),
//!    [`handle_bytes`](Node::handle_bytes), [`handle_closed`](Node::handle_closed),
//!    [`handle_timeout`](Node::handle_timeout), [`handle_command`](Node::handle_command)
//!    and [`handle_store_done`](Node::handle_store_done).
//! 2. **After every input, drain**: call [`poll_output`](Node::poll_output) until it
//!    returns `None` (dial, close, store writes, events), and
//!    [`poll_transmit`](Node::poll_transmit) until it returns `None` (bytes to write,
//!    one connection at a time). A connection whose socket is full is marked with
//!    [`set_blocked`](Node::set_blocked); the node then produces no bulk data for it,
//!    which is what bounds memory during a large transfer.
//! 3. **Sleep until** [`poll_timeout`](Node::poll_timeout), then call
//!    `handle_timeout`. Calling it early is harmless: nothing is due, nothing happens.
//!
//! Reads go through the [`Store`] passed to each input; writes are
//! [`StoreRequest`]s in the output, answered by `handle_store_done`. Given the same
//! inputs, store answers and seed, a node produces the same outputs.

mod admission;
mod admit;
mod api;
mod budget;
mod conn;
mod landing;
pub mod limits;
mod lz4;
mod puller;
mod rate;
pub mod refetch;
mod relay;
mod serve_errors;
mod thin;
mod tracked;

use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::access::{self, Access};
use crate::config::Config;
use crate::discovery::{
    self, DiscoveredPeer, Discovery, DiscoveryConfig, DiscoveryStats, NetworkFilter, OutcomeKind,
};
pub use crate::id::unhex32;
use crate::id::{IdMap, IdSet, ObjectId};
use crate::noise::{Keypair, Role, Session};
use crate::object::Seal;
use crate::rng::Rng;
use crate::store::{Store, StoreError, UpdateResult};
use crate::sync;
use crate::time::Instant;
use crate::timeline::TimelineName;
use crate::wire::{self, Decoded, Envelope, Message, PROTOCOL_VERSION};

use api::trace_record;
pub use api::{
    Command, CommandId, Conflict, ConnId, Event, Output, PeerRecord, PeerStatus, Stats,
    TimeoutReason, TraceMode, TraceRecord,
};
use conn::{Conn, Pull, PullState, Serve};
pub use conn::{ConnState, Direction};
use lz4::compress;
pub use puller::CHECKPOINT_BYTES;
use puller::{Batch, Puller, SyncWaiter};

struct Dialer {
    conn: Option<ConnId>,
    failures: u32,
    retry_at: Instant,
    /// Dialled only because of a `Connect` command: not redialled.
    once: bool,
    /// The address turned out to be this node itself.
    is_self: bool,
}

/// Largest objects frame the node builds (bounded further by `max_message_size`).
const OBJECT_FRAME_TARGET: usize = 1024 * 1024;
/// Bytes produced for one connection per `poll_transmit` call.
const TRANSMIT_CHUNK: usize = 256 * 1024;
/// Concurrent sync requests one peer may have the node serve.
const MAX_SERVES_PER_CONN: usize = 4;
/// Least bytes a connection may have queued before its peer counts as not
/// reading (the limit is twice `max_message_size` when that is larger): a
/// whole frame must fit, with room for the replies queued behind it.
const MAX_QUEUED_MIN: usize = 16 * 1024 * 1024;
/// Protocol features this version offers in its handshake. A feature is used
/// on a connection only when both ends offer it, so nodes lacking one still
/// sync over the common subset: `lz4` compresses object frames;
/// `topology-summary` exchanges database summaries on connect instead of the
/// whole link-state database; `zstd-delta` sends objects in stored form,
/// compressed and as deltas against objects the puller holds (`thin.rs`).
pub const FEATURES: &[&str] = &["lz4", "topology-summary", thin::FEATURE];

/// The protocol state machine of one peer. See the module documentation for how
/// to drive it.
pub struct Node {
    cfg: Config,
    keypair: Keypair,
    node_id: String,
    rng: Rng,
    started: Instant,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    next_msg: u64,
    dialers: BTreeMap<SocketAddr, Dialer>,
    peers: BTreeMap<String, PeerRecord>,
    announced: BTreeMap<TimelineName, ObjectId>,
    connect_waiters: BTreeMap<ConnId, CommandId>,
    next_auto_sync: Instant,
    outputs: VecDeque<Output>,
    stats: Stats,
    last_rr: ConnId,
    last_timeout_reason: Option<TimeoutReason>,
    initialised: bool,
    discovery: Option<Discovery>,
    filter: NetworkFilter,
    puller: Puller,
    /// Addresses of nodes other peers told us about (`peer_discovery`), for
    /// healing a split mesh.
    heard: BTreeMap<String, (SocketAddr, Instant)>,
    /// When a heard-of node may next be dialled.
    heal_retry: BTreeMap<String, Instant>,
    /// Token bucket for relayed bytes: (tokens, last refill).
    relay_bucket: (f64, Instant),
    mesh: Option<crate::mesh::Mesh>,
    /// Relays avoided until the given time (a routed session through them failed).
    suspects: BTreeMap<String, Instant>,
    /// When a routed session to a node may next be attempted.
    routed_retry: BTreeMap<String, Instant>,
    /// The latest `now` handed in, for internal closes of routed sessions.
    last_now: Instant,
    /// When routed sessions and healing are next reconsidered.
    next_mesh_check: Instant,
    /// When the next anti-entropy summary goes to a random neighbour.
    next_summary: Instant,
    /// Routed frames waiting for the `relay_rate` allowance: next hop,
    /// header, data; and their total size.
    relay_backlog: VecDeque<(ConnId, wire::RoutedHeader, Vec<u8>)>,
    relay_backlog_bytes: usize,
    /// Per-IP allowance of inbound connections, in millionths, and when it
    /// was last topped up (see `accept_allowed`).
    accept_buckets: BTreeMap<core::net::IpAddr, (u64, Instant)>,
    /// The node-wide upload and download caps (`upload_rate`, `download_rate`);
    /// each connection has its own per-peer buckets as well.
    up_bucket: rate::Bucket,
    down_bucket: rate::Bucket,
    /// Whether (and how) every message is reported as [`Event::Message`].
    trace: TraceMode,
    /// Who is admitted, open invitations, refused keys.
    trust: crate::trust::Trust,
    /// An invitation being redeemed on our side (`Command::Join`).
    joining: Option<admit::Joining>,
    /// Unauthenticated inbound connections, and the frame memory budget.
    pool: admission::Pool,
    budget: budget::Budget,
}

impl Node {
    /// A node with its configuration, static identity, random seed and the time now.
    /// Lands pulls in checkpoints of `bytes` (tests of interrupted
    /// transfers use small ones; see [`CHECKPOINT_BYTES`]).
    pub fn set_checkpoint_bytes(&mut self, bytes: u64) {
        self.puller.checkpoint_bytes = bytes.max(1);
    }

    pub fn new(cfg: Config, keypair: Keypair, seed: [u8; 32], now: Instant) -> Node {
        let node_id = hex(&keypair.public);
        let trust = crate::trust::Trust::new(cfg.open, &cfg.trusted_peers);
        let mut node = Node {
            next_auto_sync: now + cfg.sync_interval,
            cfg,
            keypair,
            node_id,
            rng: Rng::from_seed(seed),
            started: now,
            conns: BTreeMap::new(),
            next_conn: 1,
            next_msg: 1,
            dialers: BTreeMap::new(),
            peers: BTreeMap::new(),
            announced: BTreeMap::new(),
            connect_waiters: BTreeMap::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            last_rr: 0,
            last_timeout_reason: None,
            initialised: false,
            discovery: None,
            filter: NetworkFilter::default(),
            puller: Puller::default(),
            mesh: None,
            heard: BTreeMap::new(),
            heal_retry: BTreeMap::new(),
            relay_bucket: (0.0, now),
            suspects: BTreeMap::new(),
            routed_retry: BTreeMap::new(),
            last_now: now,
            next_mesh_check: now,
            next_summary: now,
            relay_backlog: VecDeque::new(),
            relay_backlog_bytes: 0,
            accept_buckets: BTreeMap::new(),
            up_bucket: rate::Bucket::new(0, now),
            down_bucket: rate::Bucket::new(0, now),
            trace: TraceMode::Off,
            trust,
            joining: None,
            pool: admission::Pool::new(Default::default(), Rng::from_seed(seed).child("pool", 0)),
            budget: budget::Budget::new(budget::DEFAULT_LIMIT),
        };
        node.configure_discovery(now);
        node.sync_known_peers(now);
        node
    }

    // ----- getters -----

    /// This node's id: its static public key in hex.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Turns message tracing on or off: with it on, every message sent or
    /// received is also reported as an [`Event::Message`] (for `p2p trace`).
    pub fn set_trace(&mut self, mode: TraceMode) {
        self.trace = mode;
    }

    /// Reports a message for the trace, when tracing is on.
    fn trace_message(
        &mut self,
        conn: ConnId,
        dir: &'static str,
        message: &Message,
        msg_id: u64,
        bytes: usize,
    ) {
        let peer = self.conns.get(&conn).and_then(|c| c.peer.as_ref());
        if let Some(r) = trace_record(self.trace, conn, peer, dir, message, msg_id, bytes) {
            self.emit(Event::Message(r));
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// When the node was created.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Every connection.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.conns
            .values()
            .map(|c| {
                let mut s = c.status();
                s.last_error = c
                    .peer
                    .as_ref()
                    .and_then(|p| self.peers.get(p))
                    .and_then(|r| r.last_error.clone());
                s
            })
            .collect()
    }

    /// Per-peer sync state.
    pub fn peer_records(&self) -> &BTreeMap<String, PeerRecord> {
        &self.peers
    }

    /// Divergences seen and not since resolved by a later sync.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.puller.conflicts.values().cloned().collect()
    }

    /// Addresses the node keeps reconnecting to.
    pub fn known_addrs(&self) -> Vec<SocketAddr> {
        self.dialers
            .iter()
            .filter(|(_, d)| !d.once)
            .map(|(a, _)| *a)
            .collect()
    }

    /// Why the node last asked to be woken (for debugging).
    pub fn last_timeout_reason(&self) -> Option<TimeoutReason> {
        self.last_timeout_reason
    }

    // ----- outputs -----

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(o) = self.outputs.pop_front() {
            return Some(o);
        }
        let (to, data) = self.discovery.as_mut()?.poll_datagram()?;
        Some(Output::Datagram { to, data })
    }

    /// Where discovery announcements go (the shell works out the broadcast
    /// addresses of its interfaces, or the configured ones).
    pub fn set_discovery_targets(&mut self, now: Instant, targets: Vec<SocketAddr>) {
        if let Some(d) = self.discovery.as_mut() {
            d.set_targets(targets, now);
        }
    }

    /// The mesh graph as this node sees it (`None` before the first tick).
    pub fn topology(&self) -> Option<crate::mesh::Topology> {
        self.mesh.as_ref().map(|m| m.graph())
    }

    /// The mesh graph in Graphviz DOT.
    pub fn topology_dot(&self) -> Option<String> {
        self.mesh.as_ref().map(|m| m.to_dot())
    }

    /// The path to a node through the mesh and its cost in microseconds.
    pub fn route_to(&mut self, now: Instant, peer: &str) -> Option<(Vec<String>, u64)> {
        self.mesh.as_mut()?.route(peer, now)
    }

    /// How many destinations the routing table holds.
    pub fn routing_table_size(&mut self, now: Instant) -> usize {
        self.mesh
            .as_mut()
            .map(|m| m.routing_table_size(now))
            .unwrap_or(0)
    }

    /// Peers heard through discovery.
    pub fn discovered(&self) -> Vec<DiscoveredPeer> {
        self.discovery
            .as_ref()
            .map(|d| d.peers().cloned().collect())
            .unwrap_or_default()
    }

    /// Discovery counters (`None` when discovery is off).
    pub fn discovery_stats(&self) -> Option<DiscoveryStats> {
        self.discovery.as_ref().map(|d| d.stats().clone())
    }

    /// A discovery datagram arrived. Junk is counted and dropped; a newly found
    /// peer that serves our repository is dialled (within `max_peers`).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(d) = self.discovery.as_mut() else {
            return;
        };
        match d.handle_datagram(now, from, data) {
            Ok(Some(o)) if o.kind != OutcomeKind::NonMatching => {
                tracing::debug!(peer = short(&o.node_id), addr = %o.addr, kind = ?o.kind, "discovered");
                if o.dial_due {
                    self.dial_discovered(now, &o.node_id, o.addr);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%from, error = %e, "dropped discovery datagram"),
        }
    }

    fn dial_discovered(&mut self, now: Instant, node: &str, addr: SocketAddr) {
        let connected = self.has_session_with(node)
            || self
                .conns
                .values()
                .any(|c| c.state != ConnState::Closed && c.addr == addr);
        if connected || self.peer_slots_used() >= self.cfg.max_peers {
            return;
        }
        if let Some(d) = self.discovery.as_mut() {
            d.mark_dialed(node, now);
        }
        if self.trust.admits(node).is_none() {
            // Discovery is a hint about addresses of nodes we would accept;
            // dialling anyone else would only hand our handshake to strangers.
            tracing::debug!(peer = short(node), %addr, "not dialling a discovered node that is not trusted");
            return;
        }
        tracing::info!(peer = short(node), %addr, "auto-connecting to a discovered peer");
        self.dial(now, addr);
    }

    fn configure_discovery(&mut self, now: Instant) {
        // `Config::validate` refuses a bad list; should an unchecked config
        // get here anyway, admit nobody rather than everybody.
        self.filter = NetworkFilter::parse(&self.cfg.allowed_networks).unwrap_or_else(|e| {
            tracing::error!(error = %e, "invalid allowed_networks: admitting no address");
            NetworkFilter::deny_all()
        });
        if !self.cfg.discovery {
            self.discovery = None;
            return;
        }
        let mut dc = DiscoveryConfig::from_config(&self.cfg);
        dc.interval = self.cfg.discovery_interval;
        dc.stale_after = self.cfg.discovery_interval * 3;
        dc.jitter = dc.jitter.min(self.cfg.discovery_interval / 4);
        // Many daemons can share one host (and so one source address): allow a
        // few announcements a second per address, still bounding a flood.
        dc.rate_burst = dc.rate_burst.max(30);
        dc.rate_per_sec = dc.rate_per_sec.max(10);
        match self.discovery.as_mut() {
            Some(d) => {
                dc.targets = d.config().targets.clone();
                if let Err(e) = d.set_config(dc, now) {
                    tracing::warn!(error = %e, "discovery configuration refused");
                }
            }
            None => {
                let rng = self.rng.child("discovery", 0);
                match Discovery::new(dc, self.node_id.clone(), self.cfg.port, rng, now) {
                    Ok(d) => self.discovery = Some(d),
                    Err(e) => tracing::warn!(error = %e, "discovery disabled"),
                }
            }
        }
    }

    fn announce_local(&mut self, now: Instant, store: &dyn Store) {
        let Some(d) = self.discovery.as_mut() else {
            return;
        };
        let digest = discovery::heads_digest(&store.heads().unwrap_or_default());
        d.set_local(vec![(store.repo_id().to_owned(), digest)], now);
    }

    /// The next deadline at which `handle_timeout` must be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut best: Option<(Instant, TimeoutReason)> = None;
        let mut consider = |t: Instant, r: TimeoutReason| {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, r));
            }
        };
        if !self.initialised {
            consider(self.started, TimeoutReason::Reconnect);
        }
        if self.puller.restart {
            consider(self.started, TimeoutReason::QueuedSync);
        }
        if let Some(t) = self.discovery.as_ref().and_then(|d| d.poll_timeout()) {
            consider(t, TimeoutReason::Discovery);
        }
        if let Some(t) = self.mesh.as_ref().and_then(|m| m.poll_timeout()) {
            consider(t, TimeoutReason::Mesh);
        }
        if let Some(t) = self.relay_backlog_due() {
            consider(t, TimeoutReason::Mesh);
        }
        for c in self.conns.values() {
            match c.state {
                ConnState::Dialing
                | ConnState::Handshaking
                | ConnState::Admission
                | ConnState::Refusing
                | ConnState::AwaitHello => {
                    let due = admission::conn_deadline(c, self.cfg.handshake_timeout);
                    consider(due, TimeoutReason::Handshake);
                }
                ConnState::Ready => {
                    consider(c.next_ping, TimeoutReason::Heartbeat);
                    consider(c.last_rx + self.lost_after(), TimeoutReason::PeerLost);
                    if let Some(t) = self.rate_wake(c) {
                        consider(t, TimeoutReason::RateLimit);
                    }
                    if let Some(p) = &c.pull {
                        consider(
                            p.last_progress + self.cfg.sync_timeout,
                            TimeoutReason::SyncTimeout,
                        );
                    }
                }
                ConnState::Closed => {}
            }
        }
        if self.cfg.auto_sync {
            consider(self.next_auto_sync, TimeoutReason::AutoSync);
        }
        for d in self.dialers.values() {
            if d.conn.is_none() && !d.is_self && !d.once {
                consider(d.retry_at, TimeoutReason::Reconnect);
            }
        }
        self.last_timeout_reason = best.map(|b| b.1);
        best.map(|b| b.0)
    }

    /// Appends bytes to send on one connection to `buf` and returns that
    /// connection, or `None` when no unblocked connection has anything to send.
    /// Control messages go first, so heartbeats are never starved by bulk data.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        store: &dyn Store,
        buf: &mut Vec<u8>,
    ) -> Option<ConnId> {
        self.last_now = self.last_now.max(now);
        self.pump_routed(now, store);
        let ids: Vec<ConnId> = self
            .conns
            .range(self.last_rr + 1..)
            .chain(self.conns.range(..=self.last_rr))
            .filter(|(_, c)| c.route.is_none())
            .map(|(id, _)| *id)
            .collect();
        self.apply_rates(now);
        for id in ids {
            let produced = self.fill_transmit(now, id, store);
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if c.out.len() == c.out_pos || c.blocked {
                if c.state == ConnState::Refusing && c.ctrl.is_empty() && c.out.len() == c.out_pos {
                    // The `refused` message is out: now close.
                    let reason = c.refusing.take().unwrap_or_default();
                    self.close(id, &format!("refused: {reason}"));
                }
                if produced.is_err() {
                    continue;
                }
                continue;
            }
            let n = Self::sendable(c, &mut self.up_bucket, now).min(TRANSMIT_CHUNK);
            if n == 0 {
                // Bulk data waiting for the upload cap; `poll_timeout` wakes
                // the owner when the allowance refills.
                continue;
            }
            buf.extend_from_slice(&c.out[c.out_pos..c.out_pos + n]);
            c.consume_out(n);
            c.up.charge(n as u64, now);
            self.up_bucket.charge(n as u64, now);
            self.stats.bytes_out += n as u64;
            self.last_rr = id;
            return Some(id);
        }
        None
    }

    /// How many of a connection's pending bytes may go out now. Control
    /// traffic always may, together with any bulk data queued ahead of it (the
    /// bytes are encrypted in order, so a heartbeat behind an object frame can
    /// only leave after it): the debt this leaves is paid back by holding the
    /// next bulk data. Bulk data on its own waits for the upload allowance.
    fn sendable(c: &mut Conn, global: &mut rate::Bucket, now: Instant) -> usize {
        let pending = c.pending_out();
        let bulk = c.bulk_pending();
        if bulk == 0 || c.out.len() > c.bulk_end {
            return pending;
        }
        if c.out_pos < c.bulk_start {
            return c.bulk_start - c.out_pos;
        }
        let avail = c.up.available(now).min(global.available(now));
        let need = (bulk as u64).min(rate::QUANTUM);
        if avail >= need {
            bulk.min(usize::try_from(avail).unwrap_or(usize::MAX))
        } else {
            0
        }
    }

    /// The upload cap that applies to a connection's own bucket.
    fn peer_caps(cfg: &Config, c: &Conn) -> (u64, u64) {
        if c.route.is_some() {
            // A routed session's bytes travel as frames on a neighbour's
            // connection and are counted there.
            return (0, 0);
        }
        match c.peer.as_deref() {
            Some(p) => (cfg.peer_upload_cap(p), cfg.peer_download_cap(p)),
            None => (cfg.peer_upload_rate, cfg.peer_download_rate),
        }
    }

    /// Brings every bucket's rate in line with the configuration, so a rate
    /// changed at run time (`SetConfig`) or a peer identified by its handshake
    /// gets its cap at once.
    fn apply_rates(&mut self, now: Instant) {
        self.up_bucket.set_rate(self.cfg.upload_rate, now);
        self.down_bucket.set_rate(self.cfg.download_rate, now);
        for c in self.conns.values_mut() {
            let (up, down) = Self::peer_caps(&self.cfg, c);
            c.up.set_rate(up, now);
            c.down.set_rate(down, now);
        }
    }

    /// Applies the configured rates and tops every bucket up to `now`, so the
    /// deadlines `poll_timeout` derives from them are fresh.
    fn refill_rates(&mut self, now: Instant) {
        self.apply_rates(now);
        self.up_bucket.available(now);
        self.down_bucket.available(now);
        for c in self.conns.values_mut() {
            c.up.available(now);
            c.down.available(now);
        }
    }

    /// Whether a connection's upload is capped (by its peer's cap or the node's).
    fn upload_capped(&self, c: &Conn) -> bool {
        c.route.is_none() && !(c.up.unlimited() && self.up_bucket.unlimited())
    }

    /// When a connection held back by a rate cap can move again: bulk data
    /// waiting for upload tokens, or a socket the owner stopped reading.
    fn rate_wake(&self, c: &Conn) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut later = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.max(t)));
            }
        };
        if self.upload_capped(c) && !c.blocked {
            let bulk = c.bulk_pending();
            let waiting = if bulk > 0 {
                c.out.len() == c.bulk_end && c.out_pos >= c.bulk_start
            } else {
                !c.serving.is_empty()
            };
            if waiting {
                let need = if bulk > 0 {
                    (bulk as u64).min(rate::QUANTUM)
                } else {
                    rate::QUANTUM
                };
                later(c.up.ready_at(need));
                later(self.up_bucket.ready_at(need));
            }
        }
        let mut down: Option<Instant> = None;
        for b in [&c.down, &self.down_bucket] {
            if let Some(t) = b.ready_at(rate::QUANTUM) {
                down = Some(down.map_or(t, |d: Instant| d.max(t)));
            }
        }
        match (wake, down) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many bytes the owner may read from a connection's socket now:
    /// `None` when no download cap applies, `Some(0)` when it should stop
    /// reading until the next [`poll_timeout`](Node::poll_timeout). The core
    /// cannot hold back a peer's bytes itself; the owner pausing the socket
    /// lets TCP flow control slow the sender. Bytes handed to
    /// [`handle_bytes`](Node::handle_bytes) are charged, so an owner that reads
    /// a little more than allowed only borrows from the next allowance.
    pub fn read_budget(&mut self, conn: ConnId, now: Instant) -> Option<usize> {
        if self.budget_paused(conn) {
            return Some(0);
        }
        let c = self.conns.get_mut(&conn)?;
        let (_, down) = Self::peer_caps(&self.cfg, c);
        c.down.set_rate(down, now);
        self.down_bucket.set_rate(self.cfg.download_rate, now);
        if c.down.unlimited() && self.down_bucket.unlimited() {
            return None;
        }
        let avail = c.down.available(now).min(self.down_bucket.available(now));
        if avail < rate::QUANTUM {
            return Some(0);
        }
        Some(usize::try_from(avail).unwrap_or(usize::MAX))
    }

    /// Marks a connection's socket as full (or drained again).
    pub fn set_blocked(&mut self, conn: ConnId, blocked: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.blocked = blocked;
        }
    }

    // ----- inputs -----

    /// An inbound connection was accepted. Returns its id, or `None` if the node
    /// refuses it (see [`admission`]); the owner then closes the socket.
    pub fn handle_accepted(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        let id = self.admit_inbound(now, addr)?;
        let (hb, max) = (self.cfg.heartbeat_interval, admission::PRE_ADMISSION_FRAME);
        let mut c = Conn::new(id, addr, Direction::Inbound, now, hb, max);
        match self.new_session(Role::Responder, id) {
            Ok(s) => c.noise = Some(s),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot create a session");
                self.forget_buffers(id);
                return None;
            }
        }
        c.state = ConnState::Handshaking;
        self.conns.insert(id, c);
        Some(id)
    }

    /// A dial the node asked for has connected.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        let session = self.new_session(Role::Initiator, conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state != ConnState::Dialing {
            return;
        }
        match session {
            Ok(mut s) => {
                s.start(&mut c.out);
                c.noise = Some(s);
                c.state = ConnState::Handshaking;
                c.opened = now;
                c.last_rx = now;
            }
            Err(e) => self.close(conn, &format!("cannot create a session: {e}")),
        }
    }

    /// Bytes arrived on a connection.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, data: &[u8], store: &dyn Store) {
        self.last_now = self.last_now.max(now);
        self.stats.bytes_in += data.len() as u64;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closed | ConnState::Refusing) {
            // A refused peer's bytes are not even decrypted.
            return;
        }
        // Download caps: what was read is charged (see `read_budget`).
        c.down.charge(data.len() as u64, now);
        self.down_bucket.charge(data.len() as u64, now);
        c.last_rx = now;
        let Some(noise) = c.noise.as_mut() else {
            return self.violation(conn, "bytes before the connection was set up".into());
        };
        let was_established = noise.is_established();
        let out = &mut c.out;
        if let Err(e) = c.frames.push_with(|buf| noise.receive(data, buf, out)) {
            return self.violation(conn, format!("secure channel: {e}"));
        }
        if !was_established
            && noise.is_established()
            && let Err(reason) = self.on_established(now, conn, store)
        {
            return self.close(conn, &reason);
        }
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if matches!(c.state, ConnState::Closed | ConnState::Refusing) {
                return;
            }
            match c.frames.next_frame_ref() {
                Ok(Some(body)) => match wire::parse_frame(body) {
                    Ok(Decoded::Message(env, bin)) => {
                        let len = body.len();
                        self.trace_message(conn, "in", &env.message, env.id, len);
                        self.on_message(now, conn, *env, bin, store)
                    }
                    Ok(Decoded::Unknown { kind, .. }) => {
                        self.stats.unknown_messages += 1;
                        tracing::debug!(conn, kind, "ignoring unknown message type");
                    }
                    Err(e) => return self.violation(conn, e.to_string()),
                },
                Ok(None) => return self.hold_partial_frame(conn),
                Err(e) => return self.violation(conn, e.to_string()),
            }
        }
    }

    /// A connection closed (or a dial failed).
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId, reason: &str) {
        self.last_now = self.last_now.max(now);
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        self.forget_buffers(conn);
        self.puller.redecide.remove(&conn);
        if c.was_ready && c.route.is_none() {
            self.update_links(now);
        }
        let was_closed = c.state == ConnState::Closed;
        c.state = ConnState::Closed;
        if let Some(pull) = c.pull.take() {
            self.end_pull(now, &c, pull, Err(format!("connection closed: {reason}")));
        }
        if let Some(cmd) = self.connect_waiters.remove(&conn) {
            self.done(
                cmd,
                false,
                format!("connection to {} failed: {reason}", c.addr),
            );
        }
        self.release_waiters(conn, Some(format!("connection closed: {reason}")));
        if !c.was_ready {
            self.join_conn_ended(now, conn, c.peer.as_deref(), false, reason);
        }
        let mut ready_before = false;
        if let Some(peer) = &c.peer {
            ready_before = c.was_ready;
            if let Some(r) = self.peers.get_mut(peer) {
                r.last_seen = Some(now);
            }
        }
        for (addr, d) in self.dialers.iter_mut() {
            if d.conn == Some(conn) {
                d.conn = None;
                if !ready_before {
                    d.failures = d.failures.saturating_add(1);
                }
                let delay = backoff(&self.cfg, d.failures, &mut self.rng);
                d.retry_at = now + delay;
                tracing::debug!(%addr, ?delay, "will redial");
            }
        }
        self.dialers.retain(|_, d| !(d.once && d.conn.is_none()));
        if c.was_ready || !was_closed {
            self.emit(Event::PeerDisconnected {
                peer: c.peer.clone(),
                conn,
                reason: reason.to_owned(),
            });
        }
        self.start_queued_pulls(now);
    }

    /// Time passed; does whatever is due.
    pub fn handle_timeout(&mut self, now: Instant, store: &dyn Store) {
        if !self.initialised {
            self.initialised = true;
            if let Ok(h) = store.heads() {
                self.announced = h;
            }
            self.announce_local(now, store);
            self.mesh_init(now, store);
        }
        self.last_now = self.last_now.max(now);
        self.refill_rates(now);
        self.mesh_timeout(now, store);
        if let Some(d) = self.discovery.as_mut() {
            d.handle_timeout(now);
            let candidates = d.dial_candidates(now);
            for (node, addr) in candidates {
                self.dial_discovered(now, &node, addr);
            }
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        let lost_after = self.lost_after();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            match c.state {
                ConnState::Dialing
                | ConnState::Handshaking
                | ConnState::Admission
                | ConnState::Refusing
                | ConnState::AwaitHello => {
                    if now >= admission::conn_deadline(c, self.cfg.handshake_timeout) {
                        self.close(id, "handshake timed out");
                    }
                }
                ConnState::Ready => {
                    if now >= c.last_rx + lost_after {
                        self.close(id, "peer lost: no traffic for too many heartbeat intervals");
                        continue;
                    }
                    if let Some(p) = &c.pull
                        && now >= p.last_progress + self.cfg.sync_timeout
                    {
                        self.close(id, "sync timed out");
                        continue;
                    }
                    if now >= c.next_ping {
                        let seq = self.rng.next_u64() >> 11;
                        if let Some(c) = self.conns.get_mut(&id) {
                            c.ping = Some((seq, now));
                            c.next_ping = now + self.cfg.heartbeat_interval;
                        }
                        self.send(
                            now,
                            id,
                            Message::Heartbeat(wire::Heartbeat {
                                ping: Some(seq),
                                pong: None,
                            }),
                        );
                    }
                }
                ConnState::Closed => {}
            }
        }
        if self.cfg.auto_sync && now >= self.next_auto_sync {
            self.next_auto_sync = now + self.cfg.sync_interval;
            self.announce_heads(now, store);
            let ready: Vec<ConnId> = self.ready_conns().collect();
            for id in ready {
                // Where a decision was left undone (a merge skipped because
                // the head moved, or its landing failed), pull even though
                // nothing is new, so the strategy decides again.
                let again = self.puller.redecide.remove(&id);
                self.request_pull(now, id, store, again);
            }
        }
        if self.puller.restart {
            self.start_queued_pulls_with(now, store);
        }
        let due: Vec<SocketAddr> = self
            .dialers
            .iter()
            .filter(|(_, d)| d.conn.is_none() && !d.is_self && !d.once && now >= d.retry_at)
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            if self.dial(now, addr).is_none() {
                // No room (max_peers): try again later rather than at once.
                let delay = backoff(&self.cfg, 0, &mut self.rng);
                if let Some(d) = self.dialers.get_mut(&addr) {
                    d.retry_at = now + delay;
                }
            }
        }
    }

    /// A user command.
    pub fn handle_command(&mut self, now: Instant, id: CommandId, cmd: Command, store: &dyn Store) {
        match cmd {
            Command::Connect(addr) => {
                if let Some(conn) = self.connected_to(addr) {
                    self.done(
                        id,
                        true,
                        format!("already connected to {addr} (connection {conn})"),
                    );
                    return;
                }
                match self.dial_once(now, addr) {
                    Some(conn) => {
                        self.connect_waiters.insert(conn, id);
                    }
                    None => self.done(
                        id,
                        false,
                        format!("cannot dial {addr}: too many connections"),
                    ),
                }
            }
            Command::Disconnect { peer } => {
                let conns: Vec<ConnId> = self
                    .conns
                    .values()
                    .filter(|c| c.peer.as_deref() == Some(peer.as_str()))
                    .map(|c| c.id)
                    .collect();
                if conns.is_empty() {
                    self.done(id, false, format!("not connected to {peer}"));
                    return;
                }
                for c in &conns {
                    self.close(*c, "disconnected by the user");
                }
                self.done(id, true, format!("disconnected from {}", short(&peer)));
            }
            Command::AddPeer(addr) => {
                let entry = self.dialers.entry(addr).or_insert(Dialer {
                    conn: None,
                    failures: 0,
                    retry_at: now,
                    once: false,
                    is_self: false,
                });
                entry.once = false;
                entry.retry_at = now;
                let s = addr.to_string();
                if !self.cfg.known_peers.contains(&s) {
                    self.cfg.known_peers.push(s);
                }
                self.done(id, true, format!("added {addr}"));
            }
            Command::RemovePeer(addr) => {
                let s = addr.to_string();
                let before = self.cfg.known_peers.len();
                self.cfg
                    .known_peers
                    .retain(|k| k.parse::<SocketAddr>() != Ok(addr) && *k != s);
                let removed =
                    self.dialers.remove(&addr).is_some() || before != self.cfg.known_peers.len();
                if removed {
                    self.done(id, true, format!("removed {addr}"));
                } else {
                    self.done(id, false, format!("{addr} is not a known peer"));
                }
            }
            Command::Sync { peer } => {
                let targets: Vec<ConnId> = self
                    .ready_conns()
                    .filter(|c| {
                        let conn = &self.conns[c];
                        conn.shares_repo
                            && peer.as_ref().is_none_or(|p| conn.peer.as_ref() == Some(p))
                    })
                    .collect();
                if targets.is_empty() {
                    let what = match &peer {
                        Some(p) => format!(
                            "peer {} is not connected or serves another repository",
                            short(p)
                        ),
                        None => "no connected peer serves this repository".to_string(),
                    };
                    self.done(id, false, what);
                    return;
                }
                self.puller.waiters.push(SyncWaiter {
                    id,
                    remaining: targets.iter().copied().collect(),
                    failed: Vec::new(),
                    objects: 0,
                });
                self.announce_heads(now, store);
                for c in targets {
                    self.request_pull(now, c, store, true);
                }
            }
            Command::Refetch { peer, missing } => self.start_refetch(now, id, peer, missing, store),
            Command::LocalHeadsChanged => {
                self.announce_heads(now, store);
                self.done(id, true, "announced".into());
            }
            Command::SetConfig(cfg) => {
                let auto_was = self.cfg.auto_sync;
                let narrowed = self.retrust(&cfg);
                self.cfg = *cfg;
                self.apply_rates(now);
                if self.cfg.auto_sync
                    && (!auto_was || self.next_auto_sync > now + self.cfg.sync_interval)
                {
                    self.next_auto_sync = now + self.cfg.sync_interval;
                }
                self.sync_known_peers(now);
                self.configure_discovery(now);
                let closed = self.enforce_trust() + self.enforce_access(narrowed);
                self.announce_local(now, store);
                let msg = match closed {
                    0 => "configuration applied".to_owned(),
                    n => format!(
                        "configuration applied; {n} connection(s) no longer allowed were closed"
                    ),
                };
                self.done(id, true, msg);
            }
            Command::Join(ticket) => {
                if ticket.repo != store.repo_id() {
                    return self.done(
                        id,
                        false,
                        format!(
                            "the ticket is for repository {}, this is {}",
                            ticket.repo,
                            store.repo_id()
                        ),
                    );
                }
                self.start_join(now, id, *ticket);
            }
        }
    }

    /// The owner finished a store write the node asked for. The batch's
    /// purpose is one look-up in the puller's registry.
    pub fn handle_store_done(
        &mut self,
        now: Instant,
        batch: u64,
        result: Result<Vec<UpdateResult>, StoreError>,
        store: &dyn Store,
    ) {
        if let Some(Batch::Merge { .. }) = self.puller.batch(batch) {
            if let Some(Batch::Merge { conflict, conn }) = self.puller.take(batch) {
                self.merge_landed(now, conn, conflict, result, store);
            }
            return;
        }
        if let Err(StoreError::Invalid(reason)) = &result
            && self.invalid_from_peer(batch, reason)
        {
            return;
        }
        match self.puller.batch(batch) {
            Some(Batch::Checkpoint { .. }) => {
                if let Some(Batch::Checkpoint {
                    conn,
                    peer,
                    objects,
                }) = self.puller.take(batch)
                {
                    self.checkpoint_landed(now, batch, conn, (peer, objects), result, store);
                }
            }
            Some(Batch::Pull(conn)) => {
                let conn = *conn;
                // A failed `Put` answered while the pull still receives is
                // not its landing: the `Land` answer is still to come.
                let landing = self
                    .conns
                    .get(&conn)
                    .and_then(|c| c.pull.as_ref())
                    .is_some_and(|p| p.batch == batch && p.state == PullState::Landing);
                if landing {
                    self.puller.take(batch);
                    self.pull_landed(now, conn, result, store);
                }
            }
            _ => {}
        }
    }

    // ----- internals -----

    fn lost_after(&self) -> Duration {
        self.cfg.heartbeat_interval * self.cfg.heartbeat_misses
    }

    fn alloc_conn(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        id
    }

    fn ready_conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns
            .values()
            .filter(|c| c.state == ConnState::Ready)
            .map(|c| c.id)
    }

    fn connected_to(&self, addr: SocketAddr) -> Option<ConnId> {
        self.conns
            .values()
            .find(|c| {
                c.addr == addr && c.direction == Direction::Outbound && c.state != ConnState::Closed
            })
            .map(|c| c.id)
    }

    fn new_session(
        &mut self,
        role: Role,
        conn: ConnId,
    ) -> Result<Session, crate::noise::NoiseError> {
        let rng = self.rng.child("session", conn);
        Session::new(
            role,
            &self.keypair,
            rng,
            self.cfg.encryption,
            b"ivaldi".to_vec(),
        )
    }

    fn sync_known_peers(&mut self, now: Instant) {
        for k in self.cfg.known_peers.clone() {
            match k.parse::<SocketAddr>() {
                Ok(addr) => {
                    let d = self.dialers.entry(addr).or_insert(Dialer {
                        conn: None,
                        failures: 0,
                        retry_at: now,
                        once: false,
                        is_self: false,
                    });
                    d.once = false;
                }
                Err(_) => tracing::warn!(peer = %k, "ignoring known peer that is not ip:port"),
            }
        }
    }

    /// Dials `addr` for a command: not redialled later unless it is a known peer.
    fn dial_once(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        let conn = self.dial(now, addr)?;
        if let Some(d) = self.dialers.get_mut(&addr)
            && d.conn == Some(conn)
            && !self.cfg.known_peers.iter().any(|k| k.parse() == Ok(addr))
        {
            d.once = true;
        }
        Some(conn)
    }

    fn dial(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        if self.peer_slots_used() >= self.cfg.max_peers
            || self.pending_dials() >= admission::MAX_PENDING_DIALS
        {
            return None;
        }
        let id = self.alloc_conn();
        let (hb, max) = (self.cfg.heartbeat_interval, admission::PRE_ADMISSION_FRAME);
        let c = Conn::new(id, addr, Direction::Outbound, now, hb, max);
        self.conns.insert(id, c);
        let d = self.dialers.entry(addr).or_insert(Dialer {
            conn: None,
            failures: 0,
            retry_at: now,
            once: true,
            is_self: false,
        });
        d.conn = Some(id);
        self.outputs.push_back(Output::Dial { conn: id, addr });
        Some(id)
    }

    fn emit(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn done(&mut self, id: CommandId, ok: bool, message: String) {
        self.emit(Event::CommandDone { id, ok, message });
    }

    fn close(&mut self, conn: ConnId, reason: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state == ConnState::Closed {
            return;
        }
        tracing::debug!(
            conn,
            peer = c.peer.as_deref().map(short),
            reason,
            "closing connection"
        );
        c.state = ConnState::Closed;
        if c.route.is_some() {
            // A routed session has no socket: it is gone as soon as it is closed.
            // One that died on its own (stalled, lost) blames its relays, so the
            // next session tries another path.
            let now = self.last_now;
            if !reason.starts_with("duplicate") && !reason.contains("by the user") {
                self.suspect_path(now, conn);
            }
            self.handle_closed(now, conn, reason);
            return;
        }
        self.outputs.push_back(Output::Close {
            conn,
            reason: reason.to_owned(),
        });
    }

    fn violation(&mut self, conn: ConnId, reason: String) {
        self.stats.violations += 1;
        let now = self.last_now;
        self.suspect_path(now, conn);
        let peer = self.conns.get(&conn).and_then(|c| c.peer.clone());
        tracing::warn!(conn, peer = peer.as_deref().map(short), %reason, "protocol violation");
        self.emit(Event::ProtocolViolation {
            conn,
            peer,
            reason: reason.clone(),
        });
        self.close(conn, &format!("protocol violation: {reason}"));
    }

    /// Queues a message on a connection (encrypted when `poll_transmit` runs).
    fn send(&mut self, now: Instant, conn: ConnId, message: Message) {
        self.send_with(now, conn, message, &[]);
    }

    fn send_with(&mut self, now: Instant, conn: ConnId, message: Message, binary: &[u8]) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let json = wire::encode_message(&message);
        self.send_encoded(now, conn, &message, &json, binary);
    }

    /// Queues `message`, already serialised as `json` (see
    /// [`wire::encode_message`]): a message flooded to several peers is
    /// serialised once.
    fn send_encoded(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: &Message,
        json: &[u8],
        binary: &[u8],
    ) {
        let id = self.next_msg;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        self.next_msg += 1;
        let kind = message.type_name();
        let mut frame = Vec::new();
        wire::encode_frame_with(id, &self.node_id, now.as_micros(), json, binary, &mut frame);
        *self
            .stats
            .bytes_out_by_type
            .entry(kind.to_owned())
            .or_default() += frame.len() as u64;
        let len = frame.len();
        c.ctrl.push_back(frame);
        let queued = c.queued();
        *self.stats.messages_out.entry(kind.to_owned()).or_default() += 1;
        self.trace_message(conn, "out", message, id, len);
        // Object data is produced only when the socket has room, but replies
        // (pongs, refusals, topology) are queued whatever happens: a peer that
        // keeps asking and never reads would grow this without bound.
        let limit = (self.cfg.max_message_size as usize)
            .saturating_mul(2)
            .max(MAX_QUEUED_MIN);
        if queued > limit {
            self.stats.queue_overflows += 1;
            self.close(
                conn,
                &format!("peer is not reading: {queued} bytes queued for it (limit {limit})"),
            );
        }
    }

    fn on_established(
        &mut self,
        now: Instant,
        conn: ConnId,
        store: &dyn Store,
    ) -> Result<(), String> {
        let own = self.keypair.public;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let Some(remote) = c.noise.as_ref().and_then(|n| n.remote_static()) else {
            return Err("handshake finished without a peer key".into());
        };
        if remote == own {
            let addr = c.addr;
            if let Some(d) = self.dialers.get_mut(&addr) {
                d.is_self = true;
            }
            return Err("connected to itself".into());
        }
        let peer = hex(&remote);
        match &c.route {
            Some(r) if r.dst != peer => {
                return Err(format!(
                    "routed session to {} was answered by {}",
                    short(&r.dst),
                    short(&peer)
                ));
            }
            None if self
                .cfg
                .no_direct
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&peer)) =>
            {
                return Err(format!(
                    "no direct connection with {} (no_direct)",
                    short(&peer)
                ));
            }
            _ => {}
        }
        c.peer = Some(peer.clone());
        c.state = ConnState::AwaitHello;
        if self.admit_established(now, conn, &peer) {
            self.send_hello(now, conn, &peer, store);
        }
        Ok(())
    }

    /// What `peer` may do with `timeline` (see [`crate::access`]).
    fn access(&self, peer: &str, timeline: &TimelineName) -> Access {
        let whole = self.trust.admits(peer).unwrap_or(Access::None);
        if self.cfg.access.is_empty() {
            return whole;
        }
        whole.min(access::access_for(
            &self.cfg.access,
            &self.cfg.peer_groups,
            peer,
            timeline.as_str(),
        ))
    }

    /// Records a head a peer announced for a timeline it may not write.
    fn refuse_head(&mut self, peer: &str, timeline: TimelineName, head: ObjectId) {
        self.stats.access_refused += 1;
        let what = format!("head {head} for {timeline}, which it may not write");
        tracing::warn!(peer = short(peer), "refused {what}");
        self.emit(Event::AccessRefused {
            peer: peer.to_owned(),
            timeline: Some(timeline),
            what,
        });
    }

    fn hello(&self, store: &dyn Store, peer: &str) -> wire::Handshake {
        let mut heads = store.heads().unwrap_or_default();
        heads.retain(|t, _| self.access(peer, t) >= Access::Read);
        let features = FEATURES
            .iter()
            .filter(|f| **f != "lz4" || self.cfg.compression)
            .filter(|f| !self.cfg.features_off.iter().any(|o| o == *f))
            .map(|f| (*f).to_owned())
            .collect();
        wire::Handshake {
            versions: vec![PROTOCOL_VERSION],
            listen_port: self.cfg.port,
            repos: vec![wire::RepoAdvert {
                id: store.repo_id().to_owned(),
                heads,
            }],
            features,
            agent: concat!("ivaldi/", env!("CARGO_PKG_VERSION")).to_owned(),
            conflict: Some(wire::StrategyAdvert {
                default: self.cfg.conflict_strategy,
                timelines: self.cfg.timeline_strategies.clone(),
            }),
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        env: Envelope,
        bin: Vec<u8>,
        store: &dyn Store,
    ) {
        let kind = env.message.type_name();
        *self.stats.messages_in.entry(kind.to_owned()).or_default() += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if env.id <= c.last_msg_id {
            self.stats.duplicate_messages += 1;
            return;
        }
        c.last_msg_id = env.id;
        if c.peer.as_deref() != Some(env.from.as_str()) {
            return self.violation(
                conn,
                format!("message claims to be from {}", short(&env.from)),
            );
        }
        let ready = c.state == ConnState::Ready;
        match c.state {
            ConnState::Refusing => return,
            ConnState::Admission => {
                return self.on_admission_message(now, conn, env.message, store);
            }
            _ => {}
        }
        match env.message {
            Message::Refused(r) => self.on_refused(conn, r),
            // A newcomer already trusted here redeems for nothing.
            Message::Redeem(_) if c.state == ConnState::AwaitHello => {}
            Message::Redeem(_) => self.violation(conn, "redeem after the handshake".into()),
            Message::Handshake(h) if c.state == ConnState::AwaitHello => {
                self.on_hello(now, conn, h, store)
            }
            Message::Handshake(_) => self.violation(conn, "second handshake".into()),
            _ if !ready => self.violation(conn, format!("{kind} before the handshake")),
            Message::Heartbeat(hb) => {
                if let Some(seq) = hb.ping {
                    self.send(
                        now,
                        conn,
                        Message::Heartbeat(wire::Heartbeat {
                            ping: None,
                            pong: Some(seq),
                        }),
                    );
                }
                if let Some(seq) = hb.pong
                    && let Some(c) = self.conns.get_mut(&conn)
                    && let Some((want, sent)) = c.ping
                    && want == seq
                {
                    c.rtt = Some(now.saturating_since(sent));
                    c.ping = None;
                    let direct = c.route.is_none();
                    if direct {
                        self.update_links(now);
                    }
                }
            }
            Message::TimelineUpdate(u) => {
                self.on_remote_head(now, conn, &u.repo, u.timeline, u.head, store)
            }
            Message::SealBroadcast(b) => {
                self.on_remote_head(now, conn, &b.repo, b.timeline, b.seal, store)
            }
            Message::SyncRequest(r) => self.on_sync_request(now, conn, r, store),
            Message::SyncResponse(r) => self.on_sync_response(now, conn, r, store),
            Message::Objects(h) => self.on_objects(now, conn, h, &bin, store),
            Message::SyncComplete(s) => self.on_sync_complete(now, conn, s, store),
            Message::ConflictResolve(r) => {
                // A peer resolved a divergence with us: its result is its new head.
                if let Some(head) = r.resolution {
                    self.on_remote_head(now, conn, &r.repo, r.timeline, head, store);
                }
            }
            Message::Topology(lsa) => self.on_lsa(now, conn, lsa, store),
            Message::TopologySummary(summary) => self.on_topology_summary(now, conn, summary),
            Message::Routed(h) => self.on_routed(now, conn, h, bin, store),
            Message::PeerDiscovery(list) => self.on_peer_list(now, list),
        }
    }

    fn on_hello(&mut self, now: Instant, conn: ConnId, h: wire::Handshake, store: &dyn Store) {
        if !h.versions.contains(&PROTOCOL_VERSION) {
            return self.close(
                conn,
                &format!("no common protocol version (peer speaks {:?})", h.versions),
            );
        }
        let repo = store.repo_id().to_owned();
        let restricted = self.access_restricted();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(peer) = c.peer.clone() else { return };
        c.state = ConnState::Ready;
        c.was_ready = true;
        // Ping at once, so the round-trip time is known from the start.
        c.next_ping = now;
        c.lz4 = self.cfg.compression
            && !self.cfg.features_off.iter().any(|f| f == "lz4")
            && h.features.iter().any(|f| f == "lz4");
        c.zdelta = !self.cfg.features_off.iter().any(|f| f == thin::FEATURE)
            && h.features.iter().any(|f| f == thin::FEATURE);
        c.remote_features = h.features.clone();
        c.encrypted = c.noise.as_ref().is_some_and(|n| n.encrypted());
        c.remote_repos = h.repos.iter().map(|r| r.id.clone()).collect();
        c.remote_strategy = h.conflict.clone();
        // Where the peer can be dialled: the address we dialled, or its source
        // address with the port it says it listens on.
        c.dial_addr = match (c.direction, c.route.is_some(), h.listen_port) {
            (_, true, _) | (Direction::Inbound, _, 0) => None,
            (Direction::Outbound, false, _) => Some(c.addr),
            (Direction::Inbound, false, port) => Some(SocketAddr::new(c.addr.ip(), port)),
        };
        let mut refused = Vec::new();
        if let Some(advert) = h.repos.iter().find(|r| r.id == repo) {
            c.shares_repo = true;
            c.remote_heads = advert.heads.clone();
            if restricted {
                let mut heads = core::mem::take(&mut c.remote_heads);
                heads.retain(|t, h| {
                    let ok = self.access(&peer, t) == Access::Write;
                    if !ok {
                        refused.push((t.clone(), *h));
                    }
                    ok
                });
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.remote_heads = heads;
                }
            }
        }
        for (t, h) in refused {
            self.refuse_head(&peer, t, h);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let addr = c.addr;
        let direction = c.direction;
        // Two connections to one peer (both dialled at once): keep the one opened by
        // the node with the smaller id, which both ends compute alike.
        let initiator = |c: &Conn| match c.direction {
            Direction::Outbound => self.node_id.clone(),
            Direction::Inbound => c.peer.clone().unwrap_or_default(),
        };
        let mine = initiator(&self.conns[&conn]);
        let dup = self
            .conns
            .values()
            .find(|o| {
                o.id != conn
                    && o.state == ConnState::Ready
                    && o.peer.as_deref() == Some(peer.as_str())
            })
            .map(|o| (o.id, initiator(o), o.route.is_some()));
        let new_routed = self.conns[&conn].route.is_some();
        if let Some((other, their_init, other_routed)) = dup {
            // A direct connection always beats a routed session to the same peer.
            let keep_new = if new_routed != other_routed {
                !new_routed
            } else {
                mine < their_init || (mine == their_init && conn < other)
            };
            let loser = if keep_new { other } else { conn };
            let winner = if keep_new { conn } else { other };
            self.close(loser, "duplicate connection to the same peer");
            // A Connect whose own dial lost the tie is still connected.
            if let Some(cmd) = self.connect_waiters.remove(&loser) {
                self.done(
                    cmd,
                    true,
                    format!("connected to {} (connection {winner})", short(&peer)),
                );
            }
            if loser == conn {
                return;
            }
        }
        if let Some(d) = self.discovery.as_mut() {
            d.mark_connected(&peer);
        }
        if !new_routed {
            self.update_links(now);
            self.send_database(now, conn);
            self.send_peer_list(now, conn);
        }
        self.load_tracked(&peer, store);
        let record = self.peers.entry(peer.clone()).or_default();
        record.last_seen = Some(now);
        for d in self.dialers.values_mut() {
            if d.conn == Some(conn) {
                d.failures = 0;
            }
        }
        self.emit(Event::PeerConnected {
            peer: peer.clone(),
            conn,
            addr,
            direction,
        });
        if let Some(cmd) = self.connect_waiters.remove(&conn) {
            self.done(
                cmd,
                true,
                format!("connected to {} at {addr}", short(&peer)),
            );
        }
        self.join_conn_ended(now, conn, Some(&peer), true, "");
        self.announce_since_hello(now, conn, store);
        if self.cfg.auto_sync {
            self.request_pull(now, conn, store, false);
        }
    }

    fn on_remote_head(
        &mut self,
        now: Instant,
        conn: ConnId,
        repo: &str,
        timeline: TimelineName,
        head: ObjectId,
        store: &dyn Store,
    ) {
        if repo != store.repo_id() {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.shares_repo {
            return;
        }
        let peer = c.peer.clone().unwrap_or_default();
        if self.access(&peer, &timeline) < Access::Write {
            return self.refuse_head(&peer, timeline, head);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // A head we already have costs one file read, not a look at every
        // timeline (a peer announcing 1,000 of them would cost a million).
        let ours = store.has(&head) && store.head(&timeline) == Some(head);
        c.remote_heads.insert(timeline.clone(), head);
        if ours {
            // Both heads agree now: a divergence with this peer is resolved
            // (what `request_pull` would have found).
            self.puller.conflicts.remove(&(timeline, peer));
        } else if self.cfg.auto_sync {
            self.request_pull(now, conn, store, false);
        }
    }

    fn on_sync_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        r: wire::SyncRequest,
        store: &dyn Store,
    ) {
        let refuse = |reason: String| wire::SyncResponse {
            sync: r.sync,
            error: Some(reason),
            objects: 0,
            bytes: 0,
        };
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if r.repo != store.repo_id() || !c.shares_repo {
            return self.send(
                now,
                conn,
                Message::SyncResponse(refuse("repository not served here".into())),
            );
        }
        if c.serving.len() >= MAX_SERVES_PER_CONN {
            return self.send(
                now,
                conn,
                Message::SyncResponse(refuse("too many sync requests in flight".into())),
            );
        }
        if r.wants.len() > 4096 || r.haves.len() > 65_536 {
            return self.violation(conn, "sync request lists too many seals".into());
        }
        if r.resume.len() > sync::MAX_RESUME_HINTS {
            return self.violation(conn, "sync request lists too many resume roots".into());
        }
        if !r.refetch.is_empty() {
            return self.serve_refetch(now, conn, r, store);
        }
        if self.access_restricted() {
            let peer = c.peer.clone().unwrap_or_default();
            let readable: IdSet = store
                .heads()
                .unwrap_or_default()
                .into_iter()
                .filter(|(t, _)| self.access(&peer, t) >= Access::Read)
                .map(|(_, h)| h)
                .collect();
            if let Some(w) = r
                .wants
                .iter()
                .find(|w| !readable.contains(*w) && !c.advertised.contains(*w))
            {
                let what = format!("sync request for seal {w}, not a head it may read");
                self.stats.access_refused += 1;
                tracing::warn!(peer = short(&peer), "{what}");
                self.emit(Event::AccessRefused {
                    peer,
                    timeline: None,
                    what,
                });
                return self.send(
                    now,
                    conn,
                    Message::SyncResponse(refuse(format!("no seal {w} here"))),
                );
            }
        }
        let plan = match serve_errors::plan_serve(store, &r) {
            Ok(p) => p,
            Err(reason) => return self.send(now, conn, Message::SyncResponse(refuse(reason))),
        };
        // With the puller's `sync started`/`completed` events (same peer pair,
        // same sync id) this lets one sync be followed across both logs.
        tracing::info!(
            peer = short(
                self.conns
                    .get(&conn)
                    .and_then(|c| c.peer.as_deref())
                    .unwrap_or("?")
            ),
            sync = r.sync,
            conn,
            objects = plan.order.len(),
            "serving sync request"
        );
        self.accept_serve(now, conn, r.sync, plan);
    }

    /// Accepts a sync request: the response announces `plan`'s size, and the
    /// objects go out as the socket drains (`fill_transmit`).
    fn accept_serve(&mut self, now: Instant, conn: ConnId, sync: u64, plan: sync::SendPlan) {
        self.send(
            now,
            conn,
            Message::SyncResponse(wire::SyncResponse {
                sync,
                error: None,
                objects: plan.order.len() as u64,
                bytes: 0,
            }),
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            let thin = c.zdelta.then(|| thin::ThinSender::new(&plan));
            c.serving.push_back(Serve::new(sync, plan.order, thin));
        }
    }

    /// Announces to a connection that just became ready the heads that moved
    /// since its handshake advertised them. `announce_heads` skips connections
    /// that are not ready yet and counts such a head as announced, so without
    /// this a seal made while the handshakes cross would reach that peer only
    /// with the timeline's next seal, or never.
    fn announce_since_hello(&mut self, now: Instant, conn: ConnId, store: &dyn Store) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let sent = core::mem::take(&mut c.hello_heads);
        if !c.shares_repo {
            return;
        }
        let peer = c.peer.clone().unwrap_or_default();
        let Ok(heads) = store.heads() else { return };
        let repo = store.repo_id().to_owned();
        for (timeline, head) in heads {
            let previous = sent.get(&timeline).copied();
            if previous == Some(head) || self.access(&peer, &timeline) < Access::Read {
                continue;
            }
            if self.access_restricted()
                && let Some(c) = self.conns.get_mut(&conn)
            {
                c.advertised.insert(head);
            }
            tracing::debug!(
                peer = short(&peer),
                %timeline,
                head = %head.short(),
                "announcing a head that moved during the handshake"
            );
            self.send(
                now,
                conn,
                Message::TimelineUpdate(wire::TimelineUpdate {
                    repo: repo.clone(),
                    timeline,
                    head,
                    previous,
                }),
            );
        }
    }

    /// Tells every peer about heads that changed since last announced.
    fn announce_heads(&mut self, now: Instant, store: &dyn Store) {
        let Ok(heads) = store.heads() else { return };
        let changed: Vec<(TimelineName, ObjectId, Option<ObjectId>)> = heads
            .iter()
            .filter(|(t, h)| self.announced.get(*t) != Some(*h))
            .map(|(t, h)| (t.clone(), *h, self.announced.get(t).copied()))
            .collect();
        self.announced = heads;
        if changed.is_empty() {
            return;
        }
        self.announce_local(now, store);
        let repo = store.repo_id().to_owned();
        let targets: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.state == ConnState::Ready && c.shares_repo)
            .map(|c| c.id)
            .collect();
        for conn in targets {
            let peer = self.conns[&conn].peer.clone().unwrap_or_default();
            for (timeline, head, previous) in &changed {
                if self.access(&peer, timeline) < Access::Read {
                    continue;
                }
                if self.access_restricted()
                    && let Some(c) = self.conns.get_mut(&conn)
                {
                    c.advertised.insert(*head);
                }
                self.send(
                    now,
                    conn,
                    Message::TimelineUpdate(wire::TimelineUpdate {
                        repo: repo.clone(),
                        timeline: timeline.clone(),
                        head: *head,
                        previous: *previous,
                    }),
                );
            }
        }
    }

    /// Moves queued frames and, when the socket has room, freshly read objects
    /// into the connection's outgoing (encrypted) buffer.
    fn fill_transmit(&mut self, now: Instant, conn: ConnId, store: &dyn Store) -> Result<(), ()> {
        let mut max_frame =
            (self.cfg.max_message_size as usize / 2).clamp(64 * 1024, OBJECT_FRAME_TARGET);
        // Under an upload cap, bulk data is produced one frame at a time, only
        // when the allowance is there, and in frames of about a quarter
        // second of the slowest cap: a heartbeat queued behind a frame waits
        // for that frame only.
        let mut capped = None;
        if let Some(c) = self.conns.get_mut(&conn)
            && c.route.is_none()
            && !(c.up.unlimited() && self.up_bucket.unlimited())
        {
            let slowest = [c.up.rate(), self.up_bucket.rate()]
                .into_iter()
                .filter(|r| *r != 0)
                .min()
                .unwrap_or(0);
            max_frame = max_frame.min(usize::try_from(rate::burst(slowest)).unwrap_or(max_frame));
            capped = Some(c.up.available(now).min(self.up_bucket.available(now)));
        }
        let mut produced_bulk = false;
        let node_id = self.node_id.clone();
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let Some(noise) = c.noise.as_mut() else {
            return Ok(());
        };
        if !noise.is_established() || c.state == ConnState::Closed {
            return Ok(());
        }
        while let Some(frame) = c.ctrl.pop_front() {
            if noise.send(&frame, &mut c.out).is_err() {
                return Err(());
            }
        }
        if c.blocked || c.state != ConnState::Ready {
            return Ok(());
        }
        let mut objects_sent = 0u64;
        let mut bytes_sent = 0u64;
        let mut failure = None;
        if c.out_pos > 0 {
            // Keep the buffer from growing: drop what was already handed out
            // (`Conn::compact_out`, inlined: `noise` borrows `c`).
            c.out.drain(..c.out_pos);
            c.bulk_start = c.bulk_start.saturating_sub(c.out_pos);
            c.bulk_end = c.bulk_end.saturating_sub(c.out_pos);
            c.out_pos = 0;
        }
        while c.out.len() < TRANSMIT_CHUNK {
            if let Some(avail) = capped {
                if c.serving.is_empty()
                    || produced_bulk
                    || c.bulk_end > c.bulk_start
                    || avail < rate::QUANTUM
                {
                    break;
                }
                produced_bulk = true;
                c.bulk_start = c.out.len();
            }
            let Some(job) = c.serving.front_mut() else {
                break;
            };
            let mut bin = std::mem::take(&mut c.bin_buf);
            bin.clear();
            let mut count = 0u32;
            let stored_form = job.thin.is_some();
            if stored_form {
                let (n, b, e) = job.fill_stored(store, &mut bin, max_frame);
                count = n;
                bytes_sent += b;
                failure = e;
            }
            while let Some(id) = job.plan.get(job.next).copied().filter(|_| !stored_form) {
                let enc = match store.get(&id) {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(format!("store: {e}"));
                        break;
                    }
                };
                if count > 0 && bin.len() + enc.len() + 36 > max_frame {
                    break;
                }
                wire::push_object(&mut bin, &id, &enc);
                count += 1;
                job.next += 1;
                bytes_sent += enc.len() as u64;
                if count as usize >= wire::MAX_OBJECTS_PER_FRAME || bin.len() >= max_frame {
                    break;
                }
            }
            if failure.is_some() {
                break;
            }
            let sync = job.sync;
            let done = job.next >= job.plan.len() && job.carry.is_empty();
            if count > 0 {
                objects_sent += u64::from(count);
                let compressed = if c.lz4 && !stored_form && job.try_compress() {
                    let z = compress(&bin);
                    if z.is_none() {
                        job.compress_failed();
                    }
                    z
                } else {
                    None
                };
                let compression = compressed.as_ref().map(|_| "lz4".to_owned());
                let payload: &[u8] = compressed.as_deref().unwrap_or(&bin);
                let env = Envelope {
                    id: self.next_msg,
                    from: node_id.clone(),
                    ts: now.as_micros(),
                    message: Message::Objects(wire::ObjectsHeader {
                        sync,
                        count,
                        compression,
                        format: stored_form.then(|| wire::FORMAT_STORED.to_owned()),
                    }),
                };
                self.next_msg += 1;
                *self.stats.messages_out.entry("objects".into()).or_default() += 1;
                let mut frame = std::mem::take(&mut c.frame_buf);
                frame.clear();
                wire::encode_frame(&env, payload, &mut frame);
                // Not through `trace_message`: `c` is borrowed here.
                if let Some(r) = trace_record(
                    self.trace,
                    conn,
                    c.peer.as_ref(),
                    "out",
                    &env.message,
                    env.id,
                    frame.len(),
                ) {
                    self.outputs.push_back(Output::Event(Event::Message(r)));
                }
                let sent = noise.send(&frame, &mut c.out);
                c.frame_buf = frame;
                if sent.is_err() {
                    return Err(());
                }
            }
            c.bin_buf = bin;
            if done {
                let total = job.plan.len() as u64;
                c.serving.pop_front();
                let env = Envelope {
                    id: self.next_msg,
                    from: node_id.clone(),
                    ts: now.as_micros(),
                    message: Message::SyncComplete(wire::SyncComplete {
                        sync,
                        objects: total,
                        bytes: 0,
                        error: None,
                    }),
                };
                self.next_msg += 1;
                *self
                    .stats
                    .messages_out
                    .entry("sync_complete".into())
                    .or_default() += 1;
                let mut frame = Vec::new();
                wire::encode_frame(&env, &[], &mut frame);
                if let Some(r) = trace_record(
                    self.trace,
                    conn,
                    c.peer.as_ref(),
                    "out",
                    &env.message,
                    env.id,
                    frame.len(),
                ) {
                    self.outputs.push_back(Output::Event(Event::Message(r)));
                }
                if noise.send(&frame, &mut c.out).is_err() {
                    return Err(());
                }
            }
        }
        if produced_bulk {
            c.bulk_end = c.out.len();
        }
        let peer = c.peer.clone().unwrap_or_default();
        self.stats.objects_out += objects_sent;
        if objects_sent > 0
            && let Some(r) = self.peers.get_mut(&peer)
        {
            r.objects_out += objects_sent;
            r.bytes_out += bytes_sent;
        }
        match failure {
            Some(f) => {
                self.serve_failed(now, conn, f);
                self.fill_transmit(now, conn, store)
            }
            None => Ok(()),
        }
    }
}

fn backoff(cfg: &Config, failures: u32, rng: &mut Rng) -> Duration {
    let base = cfg
        .reconnect_min
        .saturating_mul(1u32 << failures.min(16))
        .min(cfg.reconnect_max);
    let jitter_max = (base.as_micros() / 4) as u64;
    base + Duration::from_micros(rng.below(jitter_max.max(1)))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The first 12 digits of a node id, for logs.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[allow(dead_code)]
type SealMap = IdMap<Seal>;
