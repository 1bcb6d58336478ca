//! The node: one peer's whole protocol state machine.
//!
//! # Driving a node
//!
//! A [`Node`] never does I/O. Its owner (the smol daemon, the one-shot
//! client, the simulator, the test network, a benchmark) feeds it inputs and
//! carries out what it asks. The run loop, in this order:
//!
//! 0. **Start** it once with [`start`](Node::start), which reads what it
//!    announces from the store and builds its mesh, then **drain** (step 2):
//!    starting may already want dials and datagrams.
//! 1. **One input** at a time, each with the current time `now`:
//!    [`handle_accepted`](Node::handle_accepted) (an inbound connection),
//!    [`handle_connected`](Node::handle_connected) (a dial we asked for succeeded),
//!    [`handle_bytes`](Node::handle_bytes), [`handle_closed`](Node::handle_closed),
//!    [`handle_datagram`](Node::handle_datagram),
//!    [`handle_command`](Node::handle_command),
//!    [`handle_store_done`](Node::handle_store_done) and
//!    [`set_blocked`](Node::set_blocked)`(conn, false)` when a full socket
//!    has room again.
//! 2. **After every input, drain** with [`drain`], which every driver uses:
//!    it alternates [`poll_output`](Node::poll_output) (dials, closes, store
//!    writes, datagrams, events) and [`poll_transmit`](Node::poll_transmit)
//!    (bytes to write, one connection at a time) until both are empty, since
//!    carrying out an output may feed the node an input at once. The driver's
//!    [`Drive`] impl says what one output and one slice of bytes become; a
//!    connection whose socket is full is marked blocked, and the node then
//!    produces no bulk data for it, which bounds memory during a large
//!    transfer.
//! 3. **Sleep until** [`poll_timeout`](Node::poll_timeout) or the next input,
//!    whichever comes first. Only after a drain is the deadline current.
//! 4. **On waking** with the deadline passed, call
//!    [`handle_timeout`](Node::handle_timeout), then drain again (step 2).
//!    Calling it early is harmless: nothing is due, nothing happens.
//!
//! Reads go through the [`Store`] passed to each input; writes are
//! [`StoreRequest`]s in the output, answered by `handle_store_done`. Given the same
//! inputs, store answers and seed, a node produces the same outputs.
//!
//! # Parts
//!
//! `Node` routes inputs to small machines, each with its state in its own
//! type and file: `puller.rs` (pulls, the queue, checkpoints, store batches),
//! `landing.rs` (what a finished pull lands: a pure plan, then the results),
//! `server.rs` (serving sync requests), `transmit.rs` (framing, rate caps),
//! `session.rs` (handshake and message routing), `dialers.rs` (redial,
//! backoff), `admission.rs` (who gets in), `routed.rs` and `relay.rs` (the mesh
//! inside the node) and `timers.rs` (every deadline, in one place).

mod admission;
mod admit;
mod api;
mod budget;
mod close;
mod conn;
mod dialers;
mod drive;
mod frame_limits;
mod landing;
pub mod limits;
mod lz4;
mod puller;
mod rate;
mod reconfigure;
pub mod refetch;
mod relay;
mod routed;
mod serve_errors;
mod server;
mod session;
mod thin;
mod timers;
mod tracked;
mod transmit;

use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};

use crate::NodeId;
use crate::config::NodeConfig;
use crate::discovery::{
    self, DiscoveredPeer, Discovery, DiscoveryConfig, DiscoveryStats, NetworkFilter, OutcomeKind,
};
use crate::id::IdMap;
pub use crate::id::unhex32;
use crate::noise::{Keypair, Role, Session};
use crate::object::Seal;
use crate::rng::Rng;
use crate::store::{Store, StoreError, UpdateResult};
use crate::time::Instant;
use crate::wire::{self, Decoded};

use api::trace_record;
pub use api::{
    Command, CommandId, Conflict, ConnId, Event, Output, PeerRecord, PeerStatus, Stats,
    TimeoutReason, TraceMode, TraceRecord,
};
pub use close::CloseReason;
use conn::{Conn, Pull, PullState};
pub use conn::{ConnState, Direction};
use dialers::Dialers;
pub use drive::{Drive, drain};
pub use puller::CHECKPOINT_BYTES;
use puller::{Batch, Puller, SyncWaiter};
use routed::Routed;
use server::Server;
use timers::Timers;

/// Bytes produced for one connection per `poll_transmit` call.
pub(super) const TRANSMIT_CHUNK: usize = 256 * 1024;
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
    cfg: NodeConfig,
    me: Identity,
    rng: Rng,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    /// What the node hands its owner ([`Outbox`]).
    out: Outbox,
    timers: Timers,
    dialers: Dialers,
    admission: admission::Admission,
    puller: Puller,
    server: Server,
    discovery: Option<Discovery>,
    mesh: Option<crate::mesh::Mesh>,
    /// Routed sessions and relaying ([`routed`]).
    routed: Routed,
}

/// This node's static key, as its id and in hex (the envelope's `from`,
/// kept to not re-encode it per frame).
struct Identity {
    keypair: Keypair,
    node_id: NodeId,
    hex: String,
}

/// What the node reports to its owner: the outputs waiting to be polled,
/// whether messages are traced into them, and the counters `status` shows.
struct Outbox {
    queue: VecDeque<Output>,
    trace: TraceMode,
    stats: Stats,
}

impl Node {
    /// Lands pulls in checkpoints of `bytes` (tests of interrupted
    /// transfers use small ones; see [`CHECKPOINT_BYTES`]).
    pub fn set_checkpoint_bytes(&mut self, bytes: u64) {
        self.puller.checkpoint_bytes = bytes.max(1);
    }

    /// A node with its configuration, static identity, random seed and the
    /// time now; [`start`](Node::start) it before feeding it inputs.
    pub fn new(cfg: NodeConfig, keypair: Keypair, seed: [u8; 32], now: Instant) -> Node {
        let node_id = NodeId(keypair.public);
        let trust = crate::trust::Trust::new(cfg.access.open, &cfg.access.trusted_peers);
        let relay_rate = cfg.mesh.relay_rate;
        let mut node = Node {
            timers: Timers::new(now, now + cfg.sync.sync_interval),
            cfg,
            me: Identity {
                keypair,
                node_id,
                hex: node_id.to_hex(),
            },
            rng: Rng::from_seed(seed),
            conns: BTreeMap::new(),
            next_conn: 1,
            out: Outbox {
                queue: VecDeque::new(),
                trace: TraceMode::Off,
                stats: Stats::default(),
            },
            dialers: Dialers::default(),
            admission: admission::Admission::new(trust, Rng::from_seed(seed).child("pool", 0)),
            puller: Puller::default(),
            server: Server::new(now),
            discovery: None,
            mesh: None,
            routed: Routed::new(now, relay_rate),
        };
        node.configure_discovery(now);
        node.sync_known_peers(now);
        node
    }

    /// Starts the node: reads what it announces from `store` and builds its
    /// mesh. Call once, after [`Node::new`] and before any other input.
    pub fn start(&mut self, now: Instant, store: &dyn Store) {
        if self.mesh.is_some() {
            return;
        }
        if let Ok(h) = store.heads() {
            self.server.announced = h;
        }
        self.announce_local(now, store);
        self.mesh_init(now, store);
    }

    /// Work an input made possible that needs the store: pulls waiting for a
    /// slot (or a refetch turn) start before the input returns.
    fn run_queued(&mut self, now: Instant, store: &dyn Store) {
        if self.puller.restart {
            self.start_queued_pulls_with(now, store);
        }
    }

    // ----- getters -----

    /// This node's id: its static public key in hex.
    pub fn node_id(&self) -> NodeId {
        self.me.node_id
    }

    /// Turns message tracing on or off: with it on, every message sent or
    /// received is also reported as an [`Event::Message`] (for `p2p trace`).
    pub fn set_trace(&mut self, mode: TraceMode) {
        self.out.trace = mode;
    }

    /// The configuration in force.
    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.out.stats
    }

    /// When the node was created.
    pub fn started(&self) -> Instant {
        self.timers.started
    }

    /// Every connection.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.conns
            .values()
            .map(|c| {
                let mut s = c.status();
                s.last_error = c
                    .peer()
                    .as_ref()
                    .and_then(|p| self.puller.peers.get(p))
                    .and_then(|r| r.last_error.clone());
                s
            })
            .collect()
    }

    /// Per-peer sync state.
    pub fn peer_records(&self) -> &BTreeMap<NodeId, PeerRecord> {
        &self.puller.peers
    }

    /// Divergences seen and not since resolved by a later sync.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.puller.conflicts.values().cloned().collect()
    }

    /// Addresses the node keeps reconnecting to.
    pub fn known_addrs(&self) -> Vec<SocketAddr> {
        self.dialers.known_addrs()
    }

    /// Why the node last asked to be woken (for debugging).
    pub fn last_timeout_reason(&self) -> Option<TimeoutReason> {
        self.timers.last_reason
    }

    // ----- outputs -----

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(o) = self.out.queue.pop_front() {
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
    pub fn route_to(&mut self, now: Instant, peer: &NodeId) -> Option<(Vec<String>, u64)> {
        self.mesh.as_mut()?.route(&peer.to_hex(), now)
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
                tracing::debug!(peer = crate::node_id::short(&o.node_id), addr = %o.addr, kind = ?o.kind, "discovered");
                // Discovery checked the id; a text that does not parse is dropped.
                if let (true, Ok(node)) = (o.dial_due, o.node_id.parse::<NodeId>()) {
                    self.dial_discovered(now, &node, o.addr);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%from, error = %e, "dropped discovery datagram"),
        }
    }

    fn configure_discovery(&mut self, now: Instant) {
        // `NodeConfig::validate` refuses a bad list; should an unchecked config
        // get here anyway, admit nobody rather than everybody.
        self.admission.filter = NetworkFilter::parse(&self.cfg.access.allowed_networks)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "invalid allowed_networks: admitting no address");
                NetworkFilter::deny_all()
            });
        if !self.cfg.discovery.enabled {
            self.discovery = None;
            return;
        }
        let mut dc = DiscoveryConfig::from_config(&self.cfg);
        match self.discovery.as_mut() {
            Some(d) => {
                dc.targets = d.config().targets.clone();
                if let Err(e) = d.set_config(dc, now) {
                    tracing::warn!(error = %e, "discovery configuration refused");
                }
            }
            None => {
                let rng = self.rng.child("discovery", 0);
                match Discovery::new(dc, self.me.hex.clone(), self.cfg.connections.port, rng, now) {
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

    // ----- inputs -----

    /// An inbound connection was accepted. Returns its id, or `None` if the node
    /// refuses it (see [`admission`]); the owner then closes the socket.
    pub fn handle_accepted(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        let id = self.admit_inbound(now, addr)?;
        let (hb, max) = (
            self.cfg.connections.heartbeat_interval,
            admission::PRE_ADMISSION_FRAME,
        );
        let mut c = Conn::new(id, addr, Direction::Inbound, now, hb, max);
        match self.new_session(Role::Responder, id) {
            Ok(s) => c.noise = Some(s),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot create a session");
                self.forget_buffers(id);
                return None;
            }
        }
        c.set_state(ConnState::Handshaking);
        self.conns.insert(id, c);
        Some(id)
    }

    /// A dial the node asked for has connected.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId) {
        let session = self.new_session(Role::Initiator, conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state() != ConnState::Dialing {
            return;
        }
        match session {
            Ok(mut s) => {
                s.start(&mut c.out);
                c.noise = Some(s);
                c.set_state(ConnState::Handshaking);
                c.opened = now;
                c.last_rx = now;
            }
            Err(e) => self.close(conn, CloseReason::Session(e.to_string())),
        }
    }

    /// Bytes arrived on a connection.
    pub fn handle_bytes(&mut self, now: Instant, conn: ConnId, data: &[u8], store: &dyn Store) {
        self.receive(now, conn, data, store);
        self.run_queued(now, store);
    }

    fn receive(&mut self, now: Instant, conn: ConnId, data: &[u8], store: &dyn Store) {
        self.timers.last_now = self.timers.last_now.max(now);
        self.out.stats.bytes_in += data.len() as u64;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state(), ConnState::Closed | ConnState::Refusing) {
            // A refused peer's bytes are not even decrypted.
            return;
        }
        // Download caps: what was read is charged (see `read_budget`).
        c.down.charge(data.len() as u64, now);
        self.server.down.charge(data.len() as u64, now);
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
            return self.close(conn, CloseReason::Handshake(reason));
        }
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            if matches!(c.state(), ConnState::Closed | ConnState::Refusing) {
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
                        self.out.stats.unknown_messages += 1;
                        tracing::debug!(conn, kind, "ignoring unknown message type");
                    }
                    Err(e) => return self.violation(conn, e.to_string()),
                },
                Ok(None) => return self.hold_partial_frame(conn),
                Err(e) => return self.violation(conn, e.to_string()),
            }
        }
    }

    /// A connection closed (or a dial failed). Pulls that were waiting for
    /// a slot it held start at once, from `store`.
    pub fn handle_closed(
        &mut self,
        now: Instant,
        conn: ConnId,
        reason: &CloseReason,
        store: &dyn Store,
    ) {
        self.closed(now, conn, reason);
        self.run_queued(now, store);
    }

    /// Forgets a closed connection; what it frees is taken by `run_queued`.
    fn closed(&mut self, now: Instant, conn: ConnId, reason: &CloseReason) {
        self.timers.last_now = self.timers.last_now.max(now);
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        self.forget_buffers(conn);
        self.puller.redecide.remove(&conn);
        if c.was_ready && c.route.is_none() {
            self.update_links(now);
        }
        let was_closed = c.state() == ConnState::Closed;
        c.set_state(ConnState::Closed);
        if let Some(pull) = c.pull.take() {
            self.end_pull(now, &c, pull, Err(format!("connection closed: {reason}")));
        }
        if let Some(cmd) = self.dialers.connect_waiters.remove(&conn) {
            self.done(
                cmd,
                false,
                format!("connection to {} failed: {reason}", c.addr),
            );
        }
        self.release_waiters(conn, Some(format!("connection closed: {reason}")));
        if !c.was_ready {
            self.join_conn_ended(now, conn, c.peer().as_ref(), false, &reason.to_string());
        }
        let mut ready_before = false;
        if let Some(peer) = &c.peer() {
            ready_before = c.was_ready;
            if let Some(r) = self.puller.peers.get_mut(peer) {
                r.last_seen = Some(now);
            }
        }
        self.dialers.closed(
            conn,
            ready_before,
            now,
            &self.cfg.connections,
            &mut self.rng,
        );
        if c.was_ready || !was_closed {
            self.emit(Event::PeerDisconnected {
                peer: c.peer(),
                conn,
                reason: reason.to_string(),
            });
        }
        // Its pull slot, if it had one, is free: `run_queued` fills it.
        self.puller.restart = true;
    }

    /// A user command.
    pub fn handle_command(&mut self, now: Instant, id: CommandId, cmd: Command, store: &dyn Store) {
        self.command(now, id, cmd, store);
        self.run_queued(now, store);
    }

    fn command(&mut self, now: Instant, id: CommandId, cmd: Command, store: &dyn Store) {
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
                        self.dialers.connect_waiters.insert(conn, id);
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
                    .filter(|c| c.peer() == Some(peer))
                    .map(|c| c.id)
                    .collect();
                if conns.is_empty() {
                    self.done(id, false, format!("not connected to {peer}"));
                    return;
                }
                for c in &conns {
                    self.close(*c, CloseReason::ByUser);
                }
                self.done(id, true, format!("disconnected from {}", peer.short()));
            }
            Command::AddPeer(addr) => {
                self.dialers.remember(addr, now);
                let s = addr.to_string();
                if !self.cfg.connections.known_peers.contains(&s) {
                    self.cfg.connections.known_peers.push(s);
                }
                self.done(id, true, format!("added {addr}"));
            }
            Command::RemovePeer(addr) => {
                let s = addr.to_string();
                let before = self.cfg.connections.known_peers.len();
                self.cfg
                    .connections
                    .known_peers
                    .retain(|k| k.parse::<SocketAddr>() != Ok(addr) && *k != s);
                let removed =
                    self.dialers.forget(addr) || before != self.cfg.connections.known_peers.len();
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
                        conn.shares_repo && peer.is_none_or(|p| conn.peer() == Some(p))
                    })
                    .collect();
                if targets.is_empty() {
                    let what = match &peer {
                        Some(p) => format!(
                            "peer {} is not connected or serves another repository",
                            p.short()
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
                let msg = match self.reconfigure(now, *cfg, store) {
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
        self.store_done(now, batch, result, store);
        self.run_queued(now, store);
    }

    fn store_done(
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

    fn alloc_conn(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        id
    }

    fn ready_conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns
            .values()
            .filter(|c| c.state() == ConnState::Ready)
            .map(|c| c.id)
    }

    fn connected_to(&self, addr: SocketAddr) -> Option<ConnId> {
        self.conns
            .values()
            .filter(|c| c.addr == addr && c.direction == Direction::Outbound)
            .find(|c| c.state() != ConnState::Closed)
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
            &self.me.keypair,
            rng,
            self.cfg.connections.encryption,
            b"ivaldi".to_vec(),
        )
    }

    fn emit(&mut self, e: Event) {
        self.out.queue.push_back(Output::Event(e));
    }

    fn done(&mut self, id: CommandId, ok: bool, message: String) {
        self.emit(Event::CommandDone { id, ok, message });
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.state() == ConnState::Closed {
            return;
        }
        tracing::debug!(
            conn,
            peer = c.peer().map(|p| p.short()),
            %reason,
            "closing connection"
        );
        c.set_state(ConnState::Closed);
        if c.route.is_some() {
            // A routed session has no socket: it is gone as soon as it is closed.
            // One that died on its own (stalled, lost) blames its relays, so the
            // next session tries another path.
            let now = self.timers.last_now;
            if reason.blames_path() {
                self.suspect_path(now, conn);
            }
            self.closed(now, conn, &reason);
            return;
        }
        self.out.queue.push_back(Output::Close { conn, reason });
    }

    fn violation(&mut self, conn: ConnId, reason: String) {
        self.out.stats.violations += 1;
        let now = self.timers.last_now;
        self.suspect_path(now, conn);
        let peer = self.conns.get(&conn).and_then(|c| c.peer());
        tracing::warn!(conn, peer = peer.map(|p| p.short()), %reason, "protocol violation");
        self.emit(Event::ProtocolViolation {
            conn,
            peer,
            reason: reason.clone(),
        });
        self.close(conn, CloseReason::Violation(reason));
    }
}

#[allow(dead_code)]
type SealMap = IdMap<Seal>;
