//! The simulated world: nodes, the event queue, and the network that carries
//! their bytes.
//!
//! # The loop
//!
//! Everything that happens is an event in one queue ordered by `(virtual time,
//! sequence number)`, so ties resolve in the order events were scheduled and a
//! run is a pure function of its configuration. Handling an event gives one
//! node one input (`handle_bytes`, `handle_timeout`, …) and then **pumps** it:
//! drain `poll_output` and `poll_transmit` until both are empty, turning each
//! output into future events (a dial arrives after the link latency, bytes after
//! latency plus serialisation time, a store write after its delay). Finally the
//! node's `poll_timeout` becomes a timer event. No output is ever acted on inside
//! another node's input: every input is its own event.
//!
//! The world never reads a clock or the OS random source: time is the queue's,
//! randomness one seeded [`Rng`], maps are ordered.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use ivaldi_core::config::{Config, ConflictStrategy};
use ivaldi_core::id::ObjectId;
use ivaldi_core::node::{Command, ConnId, Event, Node, Output};
use ivaldi_core::noise::Keypair;
use ivaldi_core::rng::Rng;
use ivaldi_core::store::{Store, StoreRequest};
use ivaldi_core::time::Instant;
use ivaldi_core::timeline::TimelineName;

use crate::clock::Clock;
use crate::config::{SimConfig, Workload};
use crate::faults::FaultEv;
use crate::invariants::{Kind, SealGraph, Violation};
use crate::net::{self, End, HeldDatagram, Net, Pipe, Seg, SegKind, SockId, Socket};
use crate::store::{Changes, LandMode, Pool, SimStore};
use crate::trace::Trace;

/// The repository every simulated node serves.
pub const REPO_ID: &str = "ivaldi-sim-repo";

/// Bytes a node may hold queued for one connection (`PeerStatus::queued_bytes`).
pub const QUEUED_BOUND: usize = 8 * 1024 * 1024;
/// Bytes of staged (put, not landed) objects a store may hold.
pub const STAGED_BOUND: usize = 512 * 1024 * 1024;
/// Pending writes in one node's store queue.
pub const STORE_QUEUE_BOUND: usize = 100_000;
/// Above the window, the bytes one `poll_transmit` may add to a pipe.
pub const PIPE_SLACK: usize = 512 * 1024;
/// Timer wake-ups of one node within one virtual second that count as a
/// livelock (a node asking to be woken at once, over and over).
pub const WAKES_PER_SECOND: u32 = 2_000;
/// Most violations of one kind on one node that are recorded.
const VIOLATIONS_PER_KEY: usize = 1;
const MAX_VIOLATIONS: usize = 200;

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    Up,
    Crashed,
    /// Left the network for good.
    Left,
}

/// Counters carried over a node's incarnations.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub messages_out: BTreeMap<String, u64>,
    pub bytes_out: u64,
    pub syncs_completed: u64,
    pub syncs_failed: u64,
    pub conflicts: u64,
    pub protocol_violations: u64,
    pub duplicate_messages: u64,
    pub objects_in: u64,
}

impl Totals {
    fn absorb(&mut self, s: &ivaldi_core::node::Stats) {
        for (k, v) in &s.messages_out {
            *self.messages_out.entry(k.clone()).or_default() += v;
        }
        self.bytes_out += s.bytes_out;
        self.syncs_completed += s.syncs_completed;
        self.syncs_failed += s.syncs_failed;
        self.conflicts += s.conflicts;
        self.protocol_violations += s.violations;
        self.duplicate_messages += s.duplicate_messages;
        self.objects_in += s.objects_in;
    }

    pub fn messages(&self) -> u64 {
        self.messages_out.values().sum()
    }
}

/// One simulated machine: a node (while up), its durable store, its clock.
pub struct SimNode {
    pub index: usize,
    pub addr: SocketAddr,
    pub id: String,
    pub keypair: Keypair,
    pub cfg: Config,
    pub node: Option<Node>,
    pub life: Life,
    /// Incremented at every crash and leave: events for an older incarnation
    /// are dropped.
    pub inc: u32,
    pub store: SimStore,
    pub clock: Clock,
    timer: Option<u64>,
    timer_gen: u64,
    wake_window: u64,
    wakes: u32,
    throttled_until: u64,
    store_q: VecDeque<(u64, StoreRequest)>,
    store_ready: u64,
    socks: BTreeMap<ConnId, (SockId, usize)>,
    /// Seals this node's user made: they must stay reachable here.
    pub made: Vec<ObjectId>,
    pub past: Totals,
    own_timelines: u32,
}

impl SimNode {
    pub fn is_up(&self) -> bool {
        self.life == Life::Up
    }
}

/// Run-wide counters.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub seals: u64,
    pub large_seals: u64,
    pub new_timelines: u64,
    pub stream_bytes: u64,
    pub segments: u64,
    pub datagrams_sent: u64,
    pub datagrams_delivered: u64,
    pub datagrams_lost: u64,
    pub datagrams_duplicated: u64,
    pub dials: u64,
    pub dials_failed: u64,
    pub faults: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub joins: u64,
    pub leaves: u64,
    pub partial_lands: u64,
    pub lost_batches: u64,
    pub land_failures: u64,
    pub lands: u64,
    /// Conflicts the simulated users resolved (each a seal with both heads as
    /// parents; see `workload.rs`).
    pub resolutions: u64,
}

pub(crate) enum Ev {
    Timer {
        node: usize,
        generation: u64,
    },
    Deliver {
        sock: SockId,
        side: usize,
    },
    DialArrive {
        sock: SockId,
    },
    DialOk {
        sock: SockId,
    },
    DialFail {
        sock: SockId,
        reason: &'static str,
    },
    LocalClose {
        node: usize,
        inc: u32,
        conn: ConnId,
        reason: String,
    },
    Datagram {
        to: usize,
        inc: u32,
        from: SocketAddr,
        data: Rc<[u8]>,
    },
    StoreStep {
        node: usize,
        inc: u32,
    },
    Workload,
    Fault(FaultEv),
    Audit,
}

/// The world.
pub struct Sim {
    pub cfg: SimConfig,
    /// Virtual time, microseconds.
    pub now: u64,
    /// Events handled so far.
    pub step: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    pub(crate) rng: Rng,
    keys: Rng,
    pub nodes: Vec<SimNode>,
    pub(crate) net: Net,
    pub(crate) pool: Pool,
    pub graph: SealGraph,
    pub trace: Trace,
    pub counters: Counters,
    pub violations: Vec<Violation>,
    /// Seals made by users: `(seal, maker, timeline)`.
    pub made: Vec<(ObjectId, usize, TimelineName)>,
    ids: BTreeMap<String, usize>,
    pub(crate) workload_on: bool,
    pub(crate) faults_on: bool,
    pub(crate) heal_epoch: u64,
    /// Virtual time of the last heal.
    pub heal_at: u64,
    /// Heads differed at the last heal.
    pub diverged_at_heal: bool,
    next_cmd: u64,
    peak_queue: usize,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Sim {
    /// A world with `cfg.nodes` nodes, none started yet (they start at the first
    /// event).
    pub fn new(cfg: SimConfig) -> Sim {
        let base = Rng::from_u64(cfg.seed);
        let mut sim = Sim {
            rng: base.child("world", 0),
            keys: base.child("keys", 0),
            trace: Trace::new(cfg.trace),
            cfg,
            now: 0,
            step: 0,
            queue: BTreeMap::new(),
            seq: 0,
            nodes: Vec::new(),
            net: Net::default(),
            pool: Pool::default(),
            graph: SealGraph::default(),
            counters: Counters::default(),
            violations: Vec::new(),
            made: Vec::new(),
            ids: BTreeMap::new(),
            workload_on: false,
            faults_on: false,
            heal_epoch: 0,
            heal_at: 0,
            diverged_at_heal: false,
            next_cmd: 1,
            peak_queue: 0,
        };
        if sim.trace.enabled() {
            let c = &sim.cfg;
            let line = format!(
                "START seed {} nodes {} scenario {} faults {} workload {} strategy {:?}",
                c.seed,
                c.nodes,
                c.scenario.name(),
                c.faults,
                c.workload.name(),
                c.strategy
            );
            sim.trace_line(None, &line);
        }
        sim.net.graph = crate::graph::for_config(&sim.cfg);
        for i in 0..sim.cfg.nodes {
            // Under a graph topology, a node knows its earlier neighbours.
            if let Some(g) = &sim.net.graph {
                let known = g.neighbours(i).filter(|j| *j < i).collect();
                sim.spawn(known);
                continue;
            }
            // A random connected graph: every node knows some earlier ones.
            let mut known = Vec::new();
            if i > 0 {
                for _ in 0..sim.cfg.net.known_degree.max(1) {
                    let j = sim.rng.below(i as u64) as usize;
                    if !known.contains(&j) {
                        known.push(j);
                    }
                }
            }
            sim.spawn(known);
        }
        sim.schedule(sim.cfg.audit_every, Ev::Audit);
        sim
    }

    // ----- the queue -----

    pub(crate) fn schedule_at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), ev);
    }

    pub(crate) fn schedule(&mut self, after: Duration, ev: Ev) {
        self.schedule_at(self.now.saturating_add(us(after)), ev);
    }

    /// Handles every event due up to virtual time `end` (microseconds), then
    /// sets the clock to `end`.
    pub fn run_until(&mut self, end: u64) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > end {
                break;
            }
            let ((at, _), ev) = entry.remove_entry();
            self.now = at;
            self.step += 1;
            self.handle(ev);
        }
        self.now = self.now.max(end);
        self.peak_queue = self.peak_queue.max(self.queue.len());
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now.saturating_add(us(d)));
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Timer { node, generation } => self.on_timer(node, generation),
            Ev::Deliver { sock, side } => self.deliver(sock, side),
            Ev::DialArrive { sock } => self.dial_arrive(sock),
            Ev::DialOk { sock } => self.dial_ok(sock),
            Ev::DialFail { sock, reason } => self.dial_fail(sock, reason),
            Ev::LocalClose {
                node,
                inc,
                conn,
                reason,
            } => {
                if self.alive(node, inc) {
                    self.input(node, |n, s, now| n.handle_closed(now, conn, &reason, s));
                }
            }
            Ev::Datagram {
                to,
                inc,
                from,
                data,
            } => {
                if self.alive(to, inc) {
                    self.counters.datagrams_delivered += 1;
                    self.input(to, |n, _, now| n.handle_datagram(now, from, &data));
                }
            }
            Ev::StoreStep { node, inc } => self.store_step(node, inc),
            Ev::Workload => self.workload_tick(),
            Ev::Fault(f) => self.on_fault(f),
            Ev::Audit => self.audit(),
        }
    }

    // ----- nodes -----

    /// Whether node `i` is up in incarnation `inc`.
    pub(crate) fn alive(&self, i: usize, inc: u32) -> bool {
        self.nodes
            .get(i)
            .is_some_and(|n| n.life == Life::Up && n.inc == inc)
    }

    /// The node's local time now.
    pub(crate) fn local(&self, i: usize) -> Instant {
        Instant(self.nodes[i].clock.local(self.now))
    }

    /// The configuration every simulated node runs with.
    pub fn node_config(&self, known: &[SocketAddr]) -> Config {
        Config {
            known_peers: known.iter().map(|a| a.to_string()).collect(),
            max_peers: 16,
            heartbeat_interval: self.cfg.heartbeat,
            heartbeat_misses: 3,
            sync_interval: Duration::from_secs(20),
            sync_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(15),
            discovery_interval: Duration::from_secs(5),
            max_concurrent_syncs: 3,
            encryption: self.cfg.encryption,
            conflict_strategy: self.cfg.strategy,
            // The simulated network is one team that lets every member in:
            // listing every member's key in every node would cost memory
            // that grows with the square of the node count. Refusing
            // strangers is tested in core/tests/trust.rs and with real daemons.
            open: ivaldi_core::trust::OpenMode::Write,
            ..Config::default()
        }
    }

    /// Adds a node that knows the given nodes' addresses, and starts it.
    pub(crate) fn spawn(&mut self, known: Vec<usize>) -> usize {
        let i = self.nodes.len();
        let ds = self.cfg.net.domain_size;
        let ip = net::node_ip(i, ds);
        let addr = SocketAddr::new(IpAddr::V4(ip), net::PORT);
        let keypair = Keypair::generate(&mut self.keys.child("node-key", i as u64));
        let id = ivaldi_core::node::hex(&keypair.public);
        let known_addrs: Vec<SocketAddr> = known.iter().map(|j| self.nodes[*j].addr).collect();
        let cfg = self.node_config(&known_addrs);
        // Clocks start anywhere in the first minute of their own time line.
        let origin = 1_000_000 + self.rng.below(60_000_000);
        let store_seed = self.rng.next_u64();
        self.nodes.push(SimNode {
            index: i,
            addr,
            id: id.clone(),
            keypair,
            cfg,
            node: None,
            life: Life::Crashed,
            inc: 0,
            store: SimStore::new(&self.repo_of(i), store_seed),
            clock: Clock::new(self.now, origin),
            timer: None,
            timer_gen: 0,
            wake_window: 0,
            wakes: 0,
            throttled_until: 0,
            store_q: VecDeque::new(),
            store_ready: 0,
            socks: BTreeMap::new(),
            made: Vec::new(),
            past: Totals::default(),
            own_timelines: 0,
        });
        self.ids.insert(id, i);
        self.net.groups.push(0);
        self.net.by_ip.insert(IpAddr::V4(ip), i);
        self.net.admit(i, &known);
        self.start(i);
        i
    }

    /// Starts (or restarts) node `i` with a fresh volatile state.
    pub(crate) fn start(&mut self, i: usize) {
        let local = self.local(i);
        let seed = {
            let sn = &self.nodes[i];
            let mut r = self
                .keys
                .child("node-seed", ((i as u64) << 24) | u64::from(sn.inc));
            let mut s = [0u8; 32];
            r.fill(&mut s);
            s
        };
        let ds = self.cfg.net.domain_size;
        let sn = &mut self.nodes[i];
        let mut node = Node::new(sn.cfg.clone(), sn.keypair.clone(), seed, local);
        node.start(local, &sn.store);
        node.set_discovery_targets(local, vec![net::broadcast_of(i, ds)]);
        sn.node = Some(node);
        sn.life = Life::Up;
        sn.timer = None;
        sn.timer_gen += 1;
        sn.store_ready = self.now;
        self.pump(i);
    }

    /// Gives node `i` one input, then pumps it.
    pub(crate) fn input(&mut self, i: usize, f: impl FnOnce(&mut Node, &SimStore, Instant)) {
        let local = self.local(i);
        let sn = &mut self.nodes[i];
        let Some(node) = sn.node.as_mut() else {
            return;
        };
        f(node, &sn.store, local);
        self.pump(i);
    }

    /// Sends a user command to node `i`.
    pub fn command(&mut self, i: usize, cmd: Command) {
        let id = self.next_cmd;
        self.next_cmd += 1;
        self.input(i, |n, s, now| n.handle_command(now, id, cmd, s));
    }

    /// Drains the node's outputs and transmissions, then re-arms its timer.
    pub(crate) fn pump(&mut self, i: usize) {
        loop {
            let mut progress = false;
            while let Some(out) = self.nodes[i].node.as_mut().and_then(Node::poll_output) {
                progress = true;
                self.perform(i, out);
            }
            loop {
                let local = self.local(i);
                let sn = &mut self.nodes[i];
                let Some(node) = sn.node.as_mut() else { break };
                let mut buf = Vec::new();
                let Some(conn) = node.poll_transmit(local, &sn.store, &mut buf) else {
                    break;
                };
                progress = true;
                self.send(i, conn, buf);
            }
            if !progress {
                break;
            }
        }
        self.arm_timer(i);
    }

    fn arm_timer(&mut self, i: usize) {
        let now = self.now;
        let sn = &mut self.nodes[i];
        let Some(node) = sn.node.as_mut() else {
            sn.timer = None;
            return;
        };
        let Some(t) = node.poll_timeout() else {
            return;
        };
        let at = sn
            .clock
            .virtual_at(t.as_micros())
            .max(now)
            .max(sn.throttled_until);
        // An earlier wake-up already queued covers this one: waking early is
        // harmless, and the node is re-armed then.
        if sn.timer.is_some_and(|s| s <= at) {
            return;
        }
        sn.timer = Some(at);
        sn.timer_gen += 1;
        let generation = sn.timer_gen;
        self.schedule_at(
            at,
            Ev::Timer {
                node: i,
                generation,
            },
        );
    }

    fn on_timer(&mut self, i: usize, generation: u64) {
        let now = self.now;
        let sn = &mut self.nodes[i];
        if sn.timer_gen != generation || sn.life != Life::Up {
            return;
        }
        sn.timer = None;
        // A node that keeps asking to be woken (almost) at once spins: count its
        // wake-ups per virtual second.
        if now >= sn.wake_window + 1_000_000 {
            sn.wake_window = now;
            sn.wakes = 0;
        }
        sn.wakes += 1;
        if sn.wakes == WAKES_PER_SECOND {
            let reason = sn.node.as_mut().and_then(|n| {
                let t = n.poll_timeout();
                n.last_timeout_reason().map(|r| (r, t))
            });
            let detail = match reason {
                Some((r, t)) => format!(
                    "woken {WAKES_PER_SECOND} times within one virtual second (timeout reason {r:?}, next deadline {t:?})"
                ),
                None => format!("woken {WAKES_PER_SECOND} times within one virtual second"),
            };
            self.violation(Kind::Livelock, Some(i), detail);
        }
        let sn = &mut self.nodes[i];
        if sn.wakes > WAKES_PER_SECOND {
            // Already reported: throttle it to ten wake-ups per virtual second
            // so the run goes on (and finds whatever else there is).
            sn.throttled_until = now + 100_000;
        }
        self.input(i, |n, s, now| n.handle_timeout(now, s));
    }

    fn perform(&mut self, i: usize, out: Output) {
        match out {
            Output::Event(e) => self.on_event(i, e),
            Output::Datagram { to, data } => self.send_datagram(i, to, data),
            Output::Store(req) => self.enqueue_store(i, req),
            Output::Dial { conn, addr } => self.dial(i, conn, addr),
            Output::Close { conn, reason } => self.close_end(i, conn, reason),
            #[allow(unreachable_patterns)]
            other => self.violation(
                Kind::Panic,
                Some(i),
                format!("the simulator does not know output {other:?}"),
            ),
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        if self.trace.enabled() {
            let text = self.describe(&e);
            self.trace_line(Some(i), &text);
        }
    }

    /// Short name of a peer for the trace.
    fn name(&self, peer: &str) -> String {
        match self.ids.get(peer) {
            Some(i) => format!("n{i}"),
            None => ivaldi_core::node::short(peer).to_owned(),
        }
    }

    fn describe(&self, e: &Event) -> String {
        let short = |o: &Option<ObjectId>| o.map_or("none".to_owned(), |id| id.short());
        match e {
            Event::PeerConnected {
                peer,
                conn,
                direction,
                ..
            } => format!("connected {} conn {conn} {direction:?}", self.name(peer)),
            Event::PeerDisconnected { peer, conn, reason } => format!(
                "disconnected {} conn {conn}: {reason}",
                peer.as_deref().map_or("?".to_owned(), |p| self.name(p))
            ),
            Event::TimelineUpdated {
                timeline,
                old,
                new,
                peer,
            } => format!(
                "timeline {timeline} {} -> {} from {}",
                short(old),
                new.short(),
                self.name(peer)
            ),
            Event::SyncStarted { peer, sync } => {
                format!("sync {sync} started with {}", self.name(peer))
            }
            Event::SyncCompleted {
                peer,
                sync,
                objects,
                bytes,
            } => format!(
                "sync {sync} completed with {}: {objects} objects, {bytes} bytes",
                self.name(peer)
            ),
            Event::SyncFailed { peer, sync, reason } => {
                format!("sync {sync} failed with {}: {reason}", self.name(peer))
            }
            Event::ConflictDetected {
                timeline,
                local,
                remote,
                base,
                peer,
            } => format!(
                "conflict on {timeline}: local {} remote {} base {} from {}",
                local.short(),
                remote.short(),
                short(base),
                self.name(peer)
            ),
            Event::ObjectReceived {
                peer,
                sync,
                objects,
                bytes,
            } => format!(
                "sync {sync} received {objects} objects, {bytes} bytes from {}",
                self.name(peer)
            ),
            Event::ProtocolViolation { conn, peer, reason } => format!(
                "protocol violation by {} conn {conn}: {reason}",
                peer.as_deref().map_or("?".to_owned(), |p| self.name(p))
            ),
            Event::CommandDone { id, ok, message } => {
                format!("command {id} done ok={ok}: {message}")
            }
            // Events the core may add later are traced as they debug-print.
            #[allow(unreachable_patterns)]
            other => format!("{other:?}"),
        }
    }

    pub(crate) fn trace_line(&mut self, node: Option<usize>, text: &str) {
        let now = self.now;
        self.trace.line(now, node, text);
    }

    /// Records a violation (bounded per kind and node).
    pub fn violation(&mut self, kind: Kind, node: Option<usize>, detail: String) {
        let same = self
            .violations
            .iter()
            .filter(|v| v.kind == kind && v.node == node)
            .count();
        if same >= VIOLATIONS_PER_KEY || self.violations.len() >= MAX_VIOLATIONS {
            return;
        }
        if self.trace.enabled() {
            self.trace_line(node, &format!("VIOLATION {}: {detail}", kind.name()));
        }
        self.violations.push(Violation {
            step: self.step,
            time: self.now,
            kind,
            node,
            detail,
        });
    }

    // ----- streams -----

    /// One-way latency between two nodes, microseconds.
    pub(crate) fn latency(&self, a: usize, b: usize) -> u64 {
        let ds = self.cfg.net.domain_size;
        if a / ds == b / ds {
            return us(self.cfg.net.lan_latency);
        }
        let (lo, hi) = (
            us(self.cfg.net.wan_latency.0),
            us(self.cfg.net.wan_latency.1),
        );
        let key = ((a.min(b) as u64) << 32) | a.max(b) as u64;
        lo + mix(self.cfg.seed ^ mix(key)) % (hi.saturating_sub(lo) + 1)
    }

    fn dial(&mut self, i: usize, conn: ConnId, addr: SocketAddr) {
        self.counters.dials += 1;
        let target = (addr.port() == net::PORT)
            .then(|| self.net.by_ip.get(&addr.ip()).copied())
            .flatten();
        let sock = self.net.next_sock;
        self.net.next_sock += 1;
        let inc = self.nodes[i].inc;
        self.net.socks.insert(
            sock,
            Socket {
                ends: [
                    End {
                        node: i,
                        inc,
                        conn: Some(conn),
                        open: true,
                        pipe: Pipe::default(),
                    },
                    End {
                        node: target.unwrap_or(i),
                        inc: 0,
                        conn: None,
                        open: false,
                        pipe: Pipe::default(),
                    },
                ],
                dialled_at: self.now,
                accepted: false,
            },
        );
        self.nodes[i].socks.insert(conn, (sock, 0));
        match target {
            Some(t) => {
                let lat = self.latency(i, t);
                self.schedule_at(self.now + lat, Ev::DialArrive { sock });
            }
            None => self.schedule_at(
                self.now + 1000,
                Ev::DialFail {
                    sock,
                    reason: "connection refused (no such host)",
                },
            ),
        }
    }

    fn dial_arrive(&mut self, sock: SockId) {
        let Some(s) = self.net.socks.get(&sock) else {
            return;
        };
        let (a, t) = (s.ends[0].node, s.ends[1].node);
        if !s.ends[0].open {
            self.net.socks.remove(&sock);
            return;
        }
        let dialled_at = s.dialled_at;
        if !(self.net.passes(a, t) && self.net.passes(t, a)) {
            let at = (dialled_at + us(self.cfg.net.connect_timeout)).max(self.now);
            self.schedule_at(
                at,
                Ev::DialFail {
                    sock,
                    reason: "connection timed out",
                },
            );
            return;
        }
        let back = self.now + self.latency(t, a);
        if !self.nodes[t].is_up() {
            self.schedule_at(
                back,
                Ev::DialFail {
                    sock,
                    reason: "connection refused",
                },
            );
            return;
        }
        let from = SocketAddr::new(self.nodes[a].addr.ip(), 32768 + (sock % 28_000) as u16);
        let local = self.local(t);
        let sn = &mut self.nodes[t];
        let accepted = sn
            .node
            .as_mut()
            .and_then(|n| n.handle_accepted(local, from));
        match accepted {
            Some(c) => {
                let inc = sn.inc;
                sn.socks.insert(c, (sock, 1));
                if let Some(s) = self.net.socks.get_mut(&sock) {
                    s.ends[1] = End {
                        node: t,
                        inc,
                        conn: Some(c),
                        open: true,
                        pipe: Pipe::default(),
                    };
                    s.accepted = true;
                }
                self.pump(t);
                self.schedule_at(back, Ev::DialOk { sock });
            }
            None => self.schedule_at(
                back,
                Ev::DialFail {
                    sock,
                    reason: "connection reset by peer",
                },
            ),
        }
    }

    fn dial_ok(&mut self, sock: SockId) {
        let Some(s) = self.net.socks.get(&sock) else {
            return;
        };
        let e = &s.ends[0];
        if !e.open {
            return;
        }
        let (i, inc, conn) = (e.node, e.inc, e.conn.unwrap_or_default());
        if self.alive(i, inc) {
            self.input(i, |n, _, now| n.handle_connected(now, conn));
        }
    }

    fn dial_fail(&mut self, sock: SockId, reason: &'static str) {
        let Some(s) = self.net.socks.remove(&sock) else {
            return;
        };
        let e = &s.ends[0];
        if !e.open {
            return;
        }
        self.counters.dials_failed += 1;
        let (i, inc, conn) = (e.node, e.inc, e.conn.unwrap_or_default());
        if self.alive(i, inc) {
            self.nodes[i].socks.remove(&conn);
            self.input(i, |n, s, now| n.handle_closed(now, conn, reason, s));
        }
    }

    /// Queues a segment on a pipe and makes sure a delivery is scheduled.
    fn push_seg(&mut self, sock: SockId, side: usize, kind: SegKind) {
        let now = self.now;
        let bw = self.cfg.net.bandwidth.max(1);
        let Some(s) = self.net.socks.get(&sock) else {
            return;
        };
        let lat = self.latency(s.ends[side].node, s.ends[1 - side].node);
        let Some(s) = self.net.socks.get_mut(&sock) else {
            return;
        };
        let p = &mut s.ends[side].pipe;
        let len = match &kind {
            SegKind::Data(d) => d.len(),
            _ => 0,
        };
        let start = p.busy_until.max(now);
        p.busy_until = start + (len as u64 * 1_000_000).div_ceil(bw);
        let arrive = (p.busy_until + lat).max(p.last_arrive);
        p.last_arrive = arrive;
        p.bytes += len;
        p.segs.push_back(Seg { arrive, kind });
        if !p.scheduled {
            p.scheduled = true;
            let at = p.segs.front().map_or(arrive, |g| g.arrive);
            self.schedule_at(at, Ev::Deliver { sock, side });
        }
    }

    fn send(&mut self, i: usize, conn: ConnId, data: Vec<u8>) {
        let Some(&(sock, side)) = self.nodes[i].socks.get(&conn) else {
            // Bytes for a connection the network no longer has: dropped.
            return;
        };
        let len = data.len();
        self.counters.stream_bytes += len as u64;
        self.counters.segments += 1;
        self.push_seg(sock, side, SegKind::Data(data));
        let window = self.cfg.net.window;
        let Some(s) = self.net.socks.get_mut(&sock) else {
            return;
        };
        let p = &mut s.ends[side].pipe;
        let in_flight = p.bytes;
        if in_flight >= window && !p.blocked {
            p.blocked = true;
            if let Some(n) = self.nodes[i].node.as_mut() {
                n.set_blocked(conn, true);
            }
        }
        if in_flight > window + PIPE_SLACK {
            self.violation(
                Kind::Unbounded,
                Some(i),
                format!("{in_flight} bytes in flight on conn {conn}, window {window}"),
            );
        }
    }

    fn deliver(&mut self, sock: SockId, side: usize) {
        let now = self.now;
        let Some(s) = self.net.socks.get_mut(&sock) else {
            return;
        };
        s.ends[side].pipe.scheduled = false;
        let (from, to) = (s.ends[side].node, s.ends[1 - side].node);
        if !self.net.passes(from, to) {
            // Stalled: kicked again on heal or release.
            return;
        }
        let Some(s) = self.net.socks.get_mut(&sock) else {
            return;
        };
        let mut due = Vec::new();
        {
            let p = &mut s.ends[side].pipe;
            while p.segs.front().is_some_and(|g| g.arrive <= now) {
                let Some(g) = p.segs.pop_front() else { break };
                if let SegKind::Data(d) = &g.kind {
                    p.bytes -= d.len();
                }
                due.push(g.kind);
            }
        }
        let rx = &s.ends[1 - side];
        let (rx_inc, rx_conn) = (rx.inc, rx.conn.unwrap_or_default());
        let mut touched = false;
        for kind in due {
            let open = self
                .net
                .socks
                .get(&sock)
                .is_some_and(|s| s.ends[1 - side].open);
            if !open || !self.alive(to, rx_inc) {
                continue;
            }
            match kind {
                SegKind::Data(d) => {
                    let local = self.local(to);
                    let sn = &mut self.nodes[to];
                    if let Some(n) = sn.node.as_mut() {
                        n.handle_bytes(local, rx_conn, &d, &sn.store);
                        touched = true;
                    }
                }
                SegKind::Fin(reason) | SegKind::Rst(reason) => {
                    if let Some(s) = self.net.socks.get_mut(&sock) {
                        s.ends[1 - side].open = false;
                    }
                    self.nodes[to].socks.remove(&rx_conn);
                    let local = self.local(to);
                    let sn = &mut self.nodes[to];
                    if let Some(n) = sn.node.as_mut() {
                        let reason = format!("closed by peer: {reason}");
                        n.handle_closed(local, rx_conn, &reason, &sn.store);
                        touched = true;
                    }
                }
            }
        }
        if touched {
            self.pump(to);
        }
        // Room in the window again: unblock the sender.
        let window = self.cfg.net.window;
        let mut unblock = None;
        if let Some(s) = self.net.socks.get_mut(&sock) {
            let e = &mut s.ends[side];
            if e.pipe.blocked && e.pipe.bytes < window {
                e.pipe.blocked = false;
                if e.open {
                    unblock = Some((e.node, e.inc, e.conn.unwrap_or_default()));
                }
            }
        }
        if let Some((i, inc, conn)) = unblock
            && self.alive(i, inc)
        {
            if let Some(n) = self.nodes[i].node.as_mut() {
                n.set_blocked(conn, false);
            }
            self.pump(i);
        }
        self.reschedule_pipe(sock, side);
    }

    /// Schedules the next delivery on a pipe if it has segments and none is queued.
    pub(crate) fn reschedule_pipe(&mut self, sock: SockId, side: usize) {
        let now = self.now;
        let Some(s) = self.net.socks.get_mut(&sock) else {
            return;
        };
        if s.finished() {
            self.net.socks.remove(&sock);
            return;
        }
        let p = &mut s.ends[side].pipe;
        if p.scheduled {
            return;
        }
        if let Some(front) = p.segs.front() {
            let at = front.arrive.max(now);
            p.scheduled = true;
            self.schedule_at(at, Ev::Deliver { sock, side });
        }
    }

    /// Node `i` closes its end: the close follows the data in flight; the node
    /// itself learns at once.
    fn close_end(&mut self, i: usize, conn: ConnId, reason: String) {
        if let Some((sock, side)) = self.nodes[i].socks.remove(&conn) {
            let accepted = match self.net.socks.get_mut(&sock) {
                Some(s) => {
                    s.ends[side].open = false;
                    s.accepted
                }
                None => false,
            };
            if accepted {
                self.push_seg(sock, side, SegKind::Fin(reason.clone()));
            }
            if self.net.socks.get(&sock).is_some_and(Socket::finished) {
                self.net.socks.remove(&sock);
            }
        }
        let inc = self.nodes[i].inc;
        self.schedule_at(
            self.now,
            Ev::LocalClose {
                node: i,
                inc,
                conn,
                reason,
            },
        );
    }

    /// Every end of node `i` dies (a crash or a departure): with a reset or a
    /// close sent to the peers, or silently (power loss).
    pub(crate) fn kill_ends(&mut self, i: usize, signal: Option<SegKind>) {
        let socks = std::mem::take(&mut self.nodes[i].socks);
        for (_, (sock, side)) in socks {
            let accepted = match self.net.socks.get_mut(&sock) {
                Some(s) => {
                    s.ends[side].open = false;
                    s.accepted
                }
                None => continue,
            };
            if accepted && let Some(sig) = &signal {
                let kind = match sig {
                    SegKind::Fin(r) => SegKind::Fin(r.clone()),
                    SegKind::Rst(r) => SegKind::Rst(r.clone()),
                    SegKind::Data(_) => continue,
                };
                self.push_seg(sock, side, kind);
            }
            if self.net.socks.get(&sock).is_some_and(Socket::finished) {
                self.net.socks.remove(&sock);
            }
        }
    }

    /// Resets every connection between `a` and `b`: both ends learn at once and
    /// whatever was in flight is lost.
    pub(crate) fn reset_pair(&mut self, a: usize, b: usize, reason: &str) {
        let ids: Vec<SockId> = self
            .net
            .socks
            .iter()
            .filter(|(_, s)| {
                let (x, y) = (s.ends[0].node, s.ends[1].node);
                (x == a && y == b) || (x == b && y == a)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(s) = self.net.socks.remove(&id) else {
                continue;
            };
            for e in &s.ends {
                if e.open
                    && let Some(conn) = e.conn
                    && self.alive(e.node, e.inc)
                {
                    self.nodes[e.node].socks.remove(&conn);
                    self.schedule_at(
                        self.now,
                        Ev::LocalClose {
                            node: e.node,
                            inc: e.inc,
                            conn,
                            reason: reason.to_owned(),
                        },
                    );
                }
            }
        }
    }

    /// Reschedules every stalled pipe and releases held datagrams (after a heal
    /// or a release).
    pub(crate) fn kick(&mut self) {
        let ids: Vec<SockId> = self.net.socks.keys().copied().collect();
        for id in ids {
            for side in 0..2 {
                self.reschedule_pipe(id, side);
            }
        }
        let held = std::mem::take(&mut self.net.held_datagrams);
        let mut keep = Vec::new();
        for d in held {
            if !self.net.open(d.from_node, d.to_node) {
                continue;
            }
            if self.net.is_held(d.from_node, d.to_node) {
                keep.push(d);
                continue;
            }
            let delay =
                self.latency(d.from_node, d.to_node) + self.rng.below(us(self.cfg.net.jitter) + 1);
            let inc = self.nodes[d.to_node].inc;
            self.schedule_at(
                self.now + delay,
                Ev::Datagram {
                    to: d.to_node,
                    inc,
                    from: d.from,
                    data: d.data,
                },
            );
        }
        self.net.held_datagrams = keep;
    }

    // ----- datagrams -----

    fn send_datagram(&mut self, i: usize, to: SocketAddr, data: Vec<u8>) {
        self.counters.datagrams_sent += 1;
        let ds = self.cfg.net.domain_size;
        let recipients: Vec<usize> = match to.ip() {
            IpAddr::V4(v4) if v4.octets()[3] == 255 && v4.octets()[0] == 10 => {
                let o = v4.octets();
                let d = (usize::from(o[1]) << 8) | usize::from(o[2]);
                (d * ds..((d + 1) * ds).min(self.nodes.len())).collect()
            }
            ip => self.net.by_ip.get(&ip).copied().into_iter().collect(),
        };
        if to.port() != net::DISCOVERY_PORT {
            return;
        }
        let from = SocketAddr::new(self.nodes[i].addr.ip(), net::DISCOVERY_PORT);
        let data: Rc<[u8]> = Rc::from(data);
        let (loss, dup) = (self.cfg.net.loss_ppm, self.cfg.net.dup_ppm);
        let jitter = us(self.cfg.net.jitter);
        for r in recipients {
            if r == i || !self.nodes[r].is_up() {
                continue;
            }
            if !self.net.open(i, r) || self.chance(loss) {
                self.counters.datagrams_lost += 1;
                continue;
            }
            let copies = if self.chance(dup) {
                self.counters.datagrams_duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                if self.net.is_held(i, r) {
                    self.net.held_datagrams.push(HeldDatagram {
                        from_node: i,
                        to_node: r,
                        from,
                        data: data.clone(),
                    });
                    continue;
                }
                let delay = self.latency(i, r) + self.rng.below(jitter + 1);
                let inc = self.nodes[r].inc;
                self.schedule_at(
                    self.now + delay,
                    Ev::Datagram {
                        to: r,
                        inc,
                        from,
                        data: data.clone(),
                    },
                );
            }
        }
    }

    /// True with probability `ppm` / 10⁶ (draws only when `ppm` > 0).
    pub(crate) fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.below(1_000_000) < u64::from(ppm)
    }

    /// Uniform in `lo..=hi` (durations).
    pub(crate) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (us(lo), us(hi));
        Duration::from_micros(lo + self.rng.below(hi.saturating_sub(lo) + 1))
    }

    // ----- store -----

    fn enqueue_store(&mut self, i: usize, req: StoreRequest) {
        let max_delay = self.nodes[i].store.faults.max_delay_us;
        let delay = if max_delay > 0 {
            self.rng.below(max_delay + 1)
        } else {
            0
        };
        let now = self.now;
        let sn = &mut self.nodes[i];
        let ready = sn.store_ready.max(now) + delay;
        sn.store_ready = ready;
        sn.store_q.push_back((ready, req));
        let inc = sn.inc;
        let len = sn.store_q.len();
        if len == 1 {
            self.schedule_at(ready, Ev::StoreStep { node: i, inc });
        }
        if len > STORE_QUEUE_BOUND {
            self.violation(
                Kind::Unbounded,
                Some(i),
                format!("{len} writes queued in the store"),
            );
        }
    }

    fn store_step(&mut self, i: usize, inc: u32) {
        if !self.alive(i, inc) {
            return;
        }
        let Some((_, req)) = self.nodes[i].store_q.pop_front() else {
            return;
        };
        match req {
            StoreRequest::Put {
                batch,
                objects,
                blobs,
                forms: _,
            } => {
                let sn = &mut self.nodes[i];
                let resolved = {
                    let store = &sn.store;
                    ivaldi_core::store::resolve_blobs(blobs, &|b| store.lookup(batch, b))
                };
                match resolved {
                    Ok(r) => {
                        sn.store.put(batch, r);
                        sn.store.put(batch, objects);
                        let (_, bytes) = sn.store.staged();
                        if bytes > STAGED_BOUND {
                            self.violation(
                                Kind::Unbounded,
                                Some(i),
                                format!("{bytes} bytes staged in the store"),
                            );
                        }
                    }
                    // A peer's blob that does not verify: answered like any
                    // failed put, so the node can blame the peer.
                    Err(e) => self.input(i, |n, s, now| n.handle_store_done(now, batch, Err(e), s)),
                }
            }
            StoreRequest::Abort { batch } => self.nodes[i].store.abort(batch),
            // Resume records are not simulated: a crashed node forgets them
            // and resends in full, which is still correct.
            StoreRequest::Resume { .. } => {}
            StoreRequest::Land { batch, updates } => {
                self.counters.lands += 1;
                let fail = self.nodes[i].store.faults.land_fail_ppm;
                let mode = if self.chance(fail) {
                    self.counters.land_failures += 1;
                    LandMode::Fail
                } else {
                    LandMode::Normal
                };
                let sn = &mut self.nodes[i];
                let (result, changes) = sn.store.land(batch, updates, &mut self.pool, mode);
                self.after_changes(i, changes);
                self.input(i, |n, s, now| n.handle_store_done(now, batch, result, s));
            }
        }
        if let Some(&(ready, _)) = self.nodes[i].store_q.front() {
            let inc = self.nodes[i].inc;
            self.schedule_at(ready, Ev::StoreStep { node: i, inc });
        }
    }

    /// Runs the invariant checks a store mutation calls for.
    pub(crate) fn after_changes(&mut self, i: usize, changes: Changes) {
        if let Some(why) = changes.refused {
            self.violation(
                Kind::Closure,
                Some(i),
                format!("store refused a write that would break closure: {why}"),
            );
        }
        self.graph.add(changes.seals);
        let mut full = false;
        for (name, old, new) in &changes.moves {
            if let Some(old) = old
                && !self.graph.is_ancestor(old, new)
            {
                if self.trace.enabled() {
                    self.trace_line(
                        Some(i),
                        &format!(
                            "ref {name:?} moved off its history: {} -> {}",
                            old.short(),
                            new.short()
                        ),
                    );
                }
                full = true;
            }
        }
        if full {
            self.check_made(i);
        }
    }

    /// Every seal node `i`'s user made must be reachable from its refs.
    pub(crate) fn check_made(&mut self, i: usize) {
        let sn = &self.nodes[i];
        if sn.made.is_empty() {
            return;
        }
        let reach = self.graph.reachable(sn.store.ref_targets());
        let lost: Vec<ObjectId> = sn
            .made
            .iter()
            .filter(|s| !reach.contains(*s))
            .copied()
            .collect();
        if let Some(first) = lost.first() {
            self.violation(
                Kind::SealLost,
                Some(i),
                format!(
                    "{} seal(s) made here are no longer reachable from any ref, e.g. {}",
                    lost.len(),
                    first.short()
                ),
            );
        }
    }

    // ----- lifecycle -----

    /// Crashes node `i`. Volatile state is lost, and so are staged batches and
    /// queued writes; a `Land` being written may be cut short after its objects
    /// and some of its head updates. `silent`: the machine lost power, so peers
    /// get no reset and find out by their heartbeats.
    pub fn crash(&mut self, i: usize, silent: bool) {
        if !self.nodes[i].is_up() {
            return;
        }
        self.counters.crashes += 1;
        if let Some(n) = self.nodes[i].node.take() {
            self.nodes[i].past.absorb(n.stats());
        }
        let mut partial = None;
        if let Some((_, StoreRequest::Land { .. })) = self.nodes[i].store_q.front()
            && self.rng.below(2) == 0
            && let Some((_, StoreRequest::Land { batch, updates })) =
                self.nodes[i].store_q.pop_front()
        {
            let k = self.rng.below(updates.len() as u64 + 1) as usize;
            partial = Some((k, updates.len()));
            self.counters.partial_lands += 1;
            let sn = &mut self.nodes[i];
            let (_, changes) = sn
                .store
                .land(batch, updates, &mut self.pool, LandMode::Partial(k));
            self.after_changes(i, changes);
        }
        let sn = &mut self.nodes[i];
        sn.store_q.clear();
        let lost = sn.store.crash();
        self.counters.lost_batches += lost as u64;
        sn.life = Life::Crashed;
        sn.inc += 1;
        sn.timer = None;
        sn.timer_gen += 1;
        let signal = (!silent).then(|| SegKind::Rst("connection reset (peer crashed)".into()));
        self.kill_ends(i, signal);
        if self.trace.enabled() {
            let how = if silent {
                "power loss"
            } else {
                "process crash"
            };
            let cut = partial.map_or(String::new(), |(k, m)| {
                format!(", a landing cut short after its objects and {k} of {m} head updates")
            });
            self.trace_line(
                Some(i),
                &format!("CRASH ({how}): {lost} staged batch(es) lost{cut}"),
            );
        }
    }

    /// Restarts a crashed node: same key and store, new volatile state.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].life != Life::Crashed {
            return;
        }
        self.counters.restarts += 1;
        self.trace_line(Some(i), "RESTART");
        self.start(i);
    }

    /// Node `i` leaves for good: connections closed, pending writes dropped.
    pub fn leave(&mut self, i: usize) {
        if !self.nodes[i].is_up() {
            return;
        }
        self.counters.leaves += 1;
        if let Some(n) = self.nodes[i].node.take() {
            self.nodes[i].past.absorb(n.stats());
        }
        let sn = &mut self.nodes[i];
        sn.store_q.clear();
        sn.store.crash();
        sn.life = Life::Left;
        sn.inc += 1;
        sn.timer = None;
        sn.timer_gen += 1;
        self.kill_ends(i, Some(SegKind::Fin("peer shut down".into())));
        self.trace_line(Some(i), "LEAVE");
    }

    /// A new node joins, knowing a few random nodes that are up.
    pub fn join(&mut self) -> usize {
        let ups: Vec<usize> = self.up_nodes();
        let mut known = Vec::new();
        for _ in 0..self.cfg.net.known_degree.max(1) {
            if ups.is_empty() {
                break;
            }
            let j = ups[self.rng.below(ups.len() as u64) as usize];
            if !known.contains(&j) {
                known.push(j);
            }
        }
        self.counters.joins += 1;
        let i = self.nodes.len();
        self.now_trace(Some(i), format!("JOIN knowing {known:?}"));
        self.spawn(known)
    }

    fn now_trace(&mut self, node: Option<usize>, text: String) {
        if self.trace.enabled() {
            self.trace_line(node, &text);
        }
    }

    /// Indexes of the nodes that are up.
    pub fn up_nodes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.is_up())
            .map(|n| n.index)
            .collect()
    }

    // ----- checks -----

    fn audit(&mut self) {
        let mut found = Vec::new();
        for sn in &self.nodes {
            let Some(node) = sn.node.as_ref() else {
                continue;
            };
            let peers = node.peers();
            let max_peers = sn.cfg.max_peers;
            if peers.len() > 2 * max_peers + 8 {
                found.push((
                    sn.index,
                    format!("{} connections (max_peers {max_peers})", peers.len()),
                ));
            }
            if let Some(p) = peers.iter().max_by_key(|p| p.queued_bytes)
                && p.queued_bytes > QUEUED_BOUND
            {
                found.push((
                    sn.index,
                    format!("{} bytes queued on conn {}", p.queued_bytes, p.conn),
                ));
            }
            let (batches, _) = sn.store.staged();
            let limit = 2 * sn.cfg.max_concurrent_syncs + 4;
            if batches > limit {
                found.push((
                    sn.index,
                    format!("{batches} staged batches in the store (limit {limit}): a leak"),
                ));
            }
            // The discovery table is copied to be counted: check it less often.
            if self.step.is_multiple_of(16) && node.discovered().len() > 1024 {
                found.push((sn.index, "discovery table above 1024 entries".into()));
            }
        }
        let events_bound = 20_000 * self.nodes.len() + 100_000;
        if self.queue.len() > events_bound {
            found.push((usize::MAX, format!("{} events queued", self.queue.len())));
        }
        for (i, detail) in found {
            let node = (i != usize::MAX).then_some(i);
            self.violation(Kind::Unbounded, node, detail);
        }
        let every = self.cfg.audit_every;
        self.schedule(every, Ev::Audit);
    }

    /// Whether every node that is up (and holds the repository) holds
    /// identical timeline heads.
    pub fn converged(&self) -> bool {
        let mut ups = self
            .nodes
            .iter()
            .filter(|n| n.is_up() && self.holds_repo(n.index));
        let Some(first) = ups.next() else {
            return true;
        };
        let heads = first.store.timelines();
        ups.all(|n| n.store.timelines() == heads)
    }

    /// The first difference between two up nodes' heads, for a report.
    pub fn divergence(&self) -> Option<String> {
        let ups: Vec<&SimNode> = self
            .nodes
            .iter()
            .filter(|n| n.is_up() && self.holds_repo(n.index))
            .collect();
        let first = ups.first()?;
        let a = first.store.timelines();
        for n in &ups[1..] {
            let b = n.store.timelines();
            if a == b {
                continue;
            }
            for t in a.keys().chain(b.keys()) {
                if a.get(t) != b.get(t) {
                    let show = |x: Option<&ObjectId>| x.map_or("none".into(), |i| i.short());
                    return Some(format!(
                        "timeline {t}: n{} has {}, n{} has {} ({} of {} nodes differ from n{})",
                        first.index,
                        show(a.get(t)),
                        n.index,
                        show(b.get(t)),
                        ups.iter().filter(|m| m.store.timelines() != a).count(),
                        ups.len(),
                        first.index
                    ));
                }
            }
        }
        None
    }

    /// After the heal: every seal made by a node still in the network is
    /// reachable on every up node that has its timeline.
    pub fn check_all_seals(&mut self) {
        let mut problems = Vec::new();
        for sn in self.nodes.iter().filter(|n| n.is_up()) {
            let reach = self.graph.reachable(sn.store.ref_targets());
            let mut missing = 0usize;
            let mut example = None;
            for (seal, maker, tl) in &self.made {
                if self.nodes[*maker].life == Life::Left || !sn.store.knows_timeline(tl) {
                    continue;
                }
                if !reach.contains(seal) {
                    missing += 1;
                    example.get_or_insert((*seal, *maker, tl.clone()));
                }
            }
            if let Some((seal, maker, tl)) = example {
                problems.push((
                    sn.index,
                    format!(
                        "after the heal, {missing} seal(s) of timelines it has are unreachable, e.g. {} made by n{maker} on {tl}",
                        seal.short()
                    ),
                ));
            }
        }
        for (i, d) in problems {
            self.violation(Kind::SealLost, Some(i), d);
        }
    }

    /// Whether the liveness phase must reach identical heads: always for
    /// non-diverging workloads, and for diverging ones only under a strategy
    /// that resolves divergence, or with users who resolve conflicts.
    pub fn convergence_expected(&self) -> bool {
        self.cfg.workload == Workload::Own
            || self.cfg.resolvers
            || matches!(
                self.cfg.strategy,
                ConflictStrategy::AutoMerge
                    | ConflictStrategy::PreferRemote
                    | ConflictStrategy::PreferLocal
            )
    }

    /// Counters of every incarnation of every node, live ones included.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for sn in &self.nodes {
            for (k, v) in &sn.past.messages_out {
                *t.messages_out.entry(k.clone()).or_default() += v;
            }
            t.bytes_out += sn.past.bytes_out;
            t.syncs_completed += sn.past.syncs_completed;
            t.syncs_failed += sn.past.syncs_failed;
            t.conflicts += sn.past.conflicts;
            t.protocol_violations += sn.past.protocol_violations;
            t.duplicate_messages += sn.past.duplicate_messages;
            t.objects_in += sn.past.objects_in;
            if let Some(n) = &sn.node {
                t.absorb(n.stats());
            }
        }
        t
    }

    /// Largest number of events ever queued at once.
    pub fn peak_queue(&self) -> usize {
        self.peak_queue
    }

    /// Distinct objects and bytes in the shared pool.
    pub fn pool_size(&self) -> (usize, usize) {
        self.pool.size()
    }

    /// Reads that failed by injection, over all stores.
    pub fn read_failures(&self) -> u64 {
        self.nodes.iter().map(|n| n.store.reads_failed()).sum()
    }

    /// Head of a timeline on a node.
    pub fn head(&self, i: usize, timeline: &str) -> Option<ObjectId> {
        let t = TimelineName::new(timeline).ok()?;
        self.nodes[i].store.heads().ok()?.get(&t).copied()
    }

    /// Whether the next write node `i`'s store carries out is a `Land`.
    pub fn landing_next(&self, i: usize) -> bool {
        matches!(
            self.nodes[i].store_q.front(),
            Some((_, StoreRequest::Land { .. }))
        )
    }

    /// Writes queued in node `i`'s store, not yet carried out.
    pub fn pending_writes(&self, i: usize) -> usize {
        self.nodes[i].store_q.len()
    }

    /// Queues a store write on node `i` as if its node had asked for it (a test
    /// hook: this is how a test makes a buggy core's request to check that the
    /// invariants catch it).
    #[doc(hidden)]
    pub fn inject_store_request(&mut self, i: usize, req: StoreRequest) {
        self.enqueue_store(i, req);
    }

    /// Sets node `i`'s store faults (failures, delays).
    pub fn set_store_faults(&mut self, i: usize, faults: crate::store::StoreFaults) {
        self.nodes[i].store.faults = faults;
    }

    pub(crate) fn next_own_timeline(&mut self, i: usize) -> u32 {
        let sn = &mut self.nodes[i];
        sn.own_timelines += 1;
        sn.own_timelines - 1
    }
}
