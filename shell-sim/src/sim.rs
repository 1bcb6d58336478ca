//! The simulated world: nodes, the event queue, and the network that carries
//! their bytes.
//!
//! # The loop
//!
//! Everything that happens is an event in one queue ordered by `(virtual time,
//! sequence number)`, so ties resolve in the order events were scheduled and a
//! run is a pure function of its configuration. Handling an event gives one
//! node one input (`handle_bytes`, `handle_timeout`, …) and then **pumps** it:
//! drain `poll_output` and `poll_transmit` until both are empty (the core's
//! `node::drain`, through this module's `Pump`), turning each
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

use ivaldi_core::config::NodeConfig;
use ivaldi_core::id::ObjectId;
use ivaldi_core::node::{CloseReason, Command, ConnId, Drive, Event, Node, Output};
use ivaldi_core::noise::Keypair;
use ivaldi_core::rng::Rng;
use ivaldi_core::store::{Store, StoreRequest};
use ivaldi_core::time::Instant;
use ivaldi_core::timeline::TimelineName;

mod checks;
mod faults_applied;
mod routes;
mod streams;
mod users;

use crate::clock::Clock;
use crate::config::SimConfig;
use crate::faults::{FaultEv, Faults};
use crate::invariants::{Kind, SealGraph, Violation};
use crate::net::{self, Net, SockId};
use crate::store::{LandMode, Pool, SimStore};
use crate::trace::Trace;
use crate::workload::Users;

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
    pub cfg: NodeConfig,
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
        reason: CloseReason,
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
    users: Users,
    faults: Faults,
    /// Virtual time of the last heal.
    pub heal_at: u64,
    /// Heads differed at the last heal.
    pub diverged_at_heal: bool,
    next_cmd: u64,
    peak_queue: usize,
}

/// Node `i` as the core's drain loop sees it: outputs become future events,
/// bytes go into the connection's pipe.
struct Pump<'a> {
    sim: &'a mut Sim,
    i: usize,
}

impl Drive for Pump<'_> {
    fn parts(&mut self) -> Option<(&mut Node, &dyn Store)> {
        let sn = &mut self.sim.nodes[self.i];
        Some((sn.node.as_mut()?, &sn.store))
    }

    fn now(&self) -> Instant {
        self.sim.local(self.i)
    }

    fn perform(&mut self, out: Output) {
        self.sim.perform(self.i, out);
    }

    fn transmit(&mut self, conn: ConnId, bytes: &mut Vec<u8>) -> bool {
        self.sim.send(self.i, conn, std::mem::take(bytes))
    }
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
            users: Users::default(),
            faults: Faults::default(),
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
    pub fn node_config(&self, known: &[SocketAddr]) -> NodeConfig {
        NodeConfig::default().with(|c| {
            let conn = &mut c.connections;
            conn.known_peers = known.iter().map(|a| a.to_string()).collect();
            conn.max_peers = 16;
            conn.heartbeat_interval = self.cfg.heartbeat;
            conn.heartbeat_misses = 3;
            conn.handshake_timeout = Duration::from_secs(5);
            conn.reconnect_min = Duration::from_millis(500);
            conn.reconnect_max = Duration::from_secs(15);
            conn.encryption = self.cfg.encryption;
            c.sync.sync_interval = Duration::from_secs(20);
            c.sync.sync_timeout = Duration::from_secs(30);
            c.sync.max_concurrent_syncs = 3;
            c.sync.conflict_strategy = self.cfg.strategy;
            c.discovery.discovery_interval = Duration::from_secs(5);
            // The simulated network is one team that lets every member in:
            // listing every member's key in every node would cost memory
            // that grows with the square of the node count. Refusing
            // strangers is tested in core/tests/trust.rs and with real daemons.
            c.access.open = ivaldi_core::trust::OpenMode::Write;
        })
    }

    /// Adds a node that knows the given nodes' addresses, and starts it.
    pub(crate) fn spawn(&mut self, known: Vec<usize>) -> usize {
        let i = self.nodes.len();
        let ds = self.cfg.net.domain_size;
        let ip = net::node_ip(i, ds);
        let addr = SocketAddr::new(IpAddr::V4(ip), net::PORT);
        let keypair = Keypair::generate(&mut self.keys.child("node-key", i as u64));
        let id = ivaldi_core::NodeId(keypair.public).to_hex();
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
        ivaldi_core::node::drain(&mut Pump { sim: self, i });
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
            let ids = &self.ids;
            let name = |peer: &ivaldi_core::NodeId| match ids.get(&peer.to_hex()) {
                Some(i) => format!("n{i}"),
                None => peer.short(),
            };
            let text = crate::trace::describe(&e, &name);
            self.trace_line(Some(i), &text);
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

    /// Indexes of the nodes that are up.
    pub fn up_nodes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.is_up())
            .map(|n| n.index)
            .collect()
    }
}
