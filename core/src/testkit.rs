//! A small deterministic network for driving nodes in tests and benchmarks: virtual
//! time, in-memory stores, per-link FIFO delivery with latency and a send window.
//!
//! It is the core's own harness (issue 3); the full simulator with fault
//! injection lives in `ivaldi-sim`.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::config::NodeConfig;
use crate::node::{CloseReason, Command, CommandId, ConnId, Drive, Event, Node, Output, drain};
use crate::noise::Keypair;
use crate::rng::Rng;
use crate::store::{MemStore, Store, StoreRequest};
use crate::time::Instant;

/// One node with its store and everything it reported.
pub struct TestNode {
    pub node: Node,
    pub store: MemStore,
    pub addr: SocketAddr,
    pub events: Vec<(Instant, Event)>,
    /// Store writes are applied this long after being requested.
    pub store_delay: Duration,
    /// Highest number of bytes the node held queued for one connection.
    pub peak_queued: usize,
    /// Dials the node asked for (`Output::Dial`), successful or not.
    pub dials: u64,
    /// Most bytes one `poll_transmit` call handed over: what the node held ready
    /// for one connection at that moment.
    pub peak_transmit: usize,
    /// Head updates (timelines, tracking and kept names) the node landed.
    pub head_updates: u64,
}

/// Node `i` as the core's drain loop sees it: outputs act on the net at
/// once, bytes go onto the link with its latency.
struct Pump<'a> {
    net: &'a mut TestNet,
    i: usize,
    /// Whether the node had anything to do, so the net knows when all idle.
    progress: bool,
}

impl Drive for Pump<'_> {
    fn parts(&mut self) -> Option<(&mut Node, &dyn Store)> {
        let n = &mut self.net.nodes[self.i];
        Some((&mut n.node, &n.store))
    }

    fn now(&self) -> Instant {
        self.net.now
    }

    fn perform(&mut self, out: Output) {
        self.progress = true;
        self.net.perform(self.i, out);
    }

    fn transmit(&mut self, conn: ConnId, bytes: &mut Vec<u8>) -> bool {
        self.progress = true;
        let net = &mut *self.net;
        let n = &mut net.nodes[self.i];
        n.peak_transmit = n.peak_transmit.max(bytes.len());
        let arrive = net.now + net.model.latency;
        let Some(link) = net.links.get_mut(&(self.i, conn)) else {
            return true;
        };
        link.in_flight_bytes += bytes.len();
        net.peak_in_flight = net.peak_in_flight.max(link.in_flight_bytes);
        link.in_flight.push_back((arrive, std::mem::take(bytes)));
        link.in_flight_bytes < net.model.window
    }
}

struct Link {
    /// The other end: node index and its connection id.
    peer: (usize, ConnId),
    /// Bytes on the way to the other end, with their arrival times.
    in_flight: VecDeque<(Instant, Vec<u8>)>,
    in_flight_bytes: usize,
    closing: Option<CloseReason>,
    /// The sender was already told its close completed (its peer could not take
    /// delivery: frozen, or the link held); the peer's end closes later.
    closed_locally: bool,
    delivered: u64,
}

/// Link behaviour.
#[derive(Clone, Copy, Debug)]
pub struct LinkModel {
    pub latency: Duration,
    /// Bytes a sender may have in flight before it is told its socket is full.
    pub window: usize,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            latency: Duration::from_millis(1),
            window: 1 << 20,
        }
    }
}

/// A network of test nodes.
pub struct TestNet {
    pub now: Instant,
    pub nodes: Vec<TestNode>,
    links: BTreeMap<(usize, ConnId), Link>,
    pending_store: Vec<(Instant, usize, StoreRequest)>,
    pub model: LinkModel,
    /// Node pairs that refuse to connect (a dial between them fails).
    pub blocked_pairs: Vec<(usize, usize)>,
    next_cmd: CommandId,
    /// Largest number of bytes in flight on any one link.
    pub peak_in_flight: usize,
    /// Record every delivered byte per direction (see [`TestNet::captured`]).
    pub capture: bool,
    captured: BTreeMap<(usize, usize), Vec<u8>>,
    /// Bytes delivered per direction since the network was made, over every link
    /// ever opened (cut links included).
    delivered_total: BTreeMap<(usize, usize), u64>,
    /// Nodes that neither receive, time out, nor run their store writes.
    frozen: BTreeSet<usize>,
    /// Directions `(from, to)` whose deliveries are held back.
    held: BTreeSet<(usize, usize)>,
    /// Called on every delivery `(from, to, bytes)` before the receiver sees the
    /// bytes; may change them (tampering in flight).
    #[allow(clippy::type_complexity)]
    pub tamper: Option<Box<dyn FnMut(usize, usize, &mut Vec<u8>) + Send>>,
    /// Whether nodes added trust each other (write access) as they are
    /// added: a team, as most tests want. [`TestNet::strangers`] turns it
    /// off for tests of trust itself.
    pub team: bool,
}

/// Bytes delivered per direction at one moment; see [`TestNet::traffic`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic(BTreeMap<(usize, usize), u64>);

impl Traffic {
    /// Bytes delivered from node `i` to node `j` up to the snapshot.
    pub fn get(&self, i: usize, j: usize) -> u64 {
        self.0.get(&(i, j)).copied().unwrap_or(0)
    }
}

/// The address node `i` listens on.
pub fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8)), 9090)
}

impl TestNet {
    /// An empty network.
    pub fn new() -> TestNet {
        TestNet {
            now: Instant::ZERO,
            nodes: Vec::new(),
            links: BTreeMap::new(),
            pending_store: Vec::new(),
            model: LinkModel::default(),
            blocked_pairs: Vec::new(),
            next_cmd: 1,
            peak_in_flight: 0,
            capture: false,
            captured: BTreeMap::new(),
            delivered_total: BTreeMap::new(),
            frozen: BTreeSet::new(),
            held: BTreeSet::new(),
            tamper: None,
            team: true,
        }
    }

    /// A network whose nodes trust nobody but what their configurations say.
    pub fn strangers() -> TestNet {
        TestNet {
            team: false,
            ..TestNet::new()
        }
    }

    /// Adds a node with a deterministic key from `seed` and the given store.
    pub fn add(&mut self, cfg: NodeConfig, store: MemStore, seed: u64) -> usize {
        let mut rng = Rng::from_u64(seed);
        let keypair = Keypair::generate(&mut rng);
        let mut node_seed = [0u8; 32];
        rng.fill(&mut node_seed);
        let i = self.nodes.len();
        let mut node = Node::new(cfg, keypair, node_seed, self.now);
        node.start(self.now, &store);
        if self.team {
            let id = node.node_id();
            for other in &mut self.nodes {
                other.node.grant_trust(id, crate::access::Access::Write);
                node.grant_trust(other.node.node_id(), crate::access::Access::Write);
            }
        }
        self.nodes.push(TestNode {
            node,
            store,
            addr: addr_of(i),
            events: Vec::new(),
            store_delay: Duration::ZERO,
            peak_queued: 0,
            dials: 0,
            peak_transmit: 0,
            head_updates: 0,
        });
        i
    }

    /// Sends a command to node `i`; returns its id.
    pub fn command(&mut self, i: usize, cmd: Command) -> CommandId {
        let id = self.next_cmd;
        self.next_cmd += 1;
        let n = &mut self.nodes[i];
        n.node.handle_command(self.now, id, cmd, &n.store);
        self.drain();
        id
    }

    /// Node `i` dials node `j` (once).
    pub fn connect(&mut self, i: usize, j: usize) -> CommandId {
        let addr = self.nodes[j].addr;
        self.command(i, Command::Connect(addr))
    }

    /// Whether node `i` reported command `id` done, and how.
    pub fn command_result(&self, i: usize, id: CommandId) -> Option<(bool, String)> {
        self.nodes[i].events.iter().find_map(|(_, e)| match e {
            Event::CommandDone { id: d, ok, message } if *d == id => Some((*ok, message.clone())),
            _ => None,
        })
    }

    /// Bytes delivered so far from node `i` to node `j` over all their links.
    pub fn bytes_between(&self, i: usize, j: usize) -> u64 {
        self.links
            .iter()
            .filter(|((a, _), l)| *a == i && l.peer.0 == j)
            .map(|(_, l)| l.delivered)
            .sum()
    }

    /// A snapshot of the bytes delivered so far in every direction, counting
    /// links that were cut since; subtract two with [`TestNet::bytes_since`].
    pub fn traffic(&self) -> Traffic {
        Traffic(self.delivered_total.clone())
    }

    /// Bytes delivered from node `i` to node `j` (over any link) since `before`.
    pub fn bytes_since(&self, before: &Traffic, i: usize, j: usize) -> u64 {
        self.traffic().get(i, j) - before.get(i, j)
    }

    /// Everything delivered from node `i` to node `j` while [`TestNet::capture`]
    /// was on, concatenated.
    pub fn captured(&self, i: usize, j: usize) -> &[u8] {
        self.captured.get(&(i, j)).map_or(&[], Vec::as_slice)
    }

    /// Freezes node `i`, like a stopped process: bytes sent to it wait in the
    /// network, and it handles no timeouts and no store replies until thawed.
    /// Peers closing a connection to it see their close complete at once.
    pub fn freeze(&mut self, i: usize) {
        self.frozen.insert(i);
    }

    /// Undoes [`TestNet::freeze`]; held bytes arrive from the next step on.
    pub fn thaw(&mut self, i: usize) {
        self.frozen.remove(&i);
    }

    /// Holds back every delivery from node `i` to node `j` (a stalled path):
    /// bytes pile up in flight until the sender's window is full.
    pub fn hold(&mut self, i: usize, j: usize) {
        self.held.insert((i, j));
    }

    /// Undoes [`TestNet::hold`].
    pub fn release(&mut self, i: usize, j: usize) {
        self.held.remove(&(i, j));
    }

    /// Queues raw bytes on the (first) link from node `i` to node `j`, arriving
    /// after the link latency as if `i` had written them. The caller keeps the
    /// stream's record boundaries: inject only while the link is idle. Returns
    /// whether such a link exists.
    pub fn inject(&mut self, i: usize, j: usize, bytes: Vec<u8>) -> bool {
        let arrive = self.now + self.model.latency;
        let Some(link) = self
            .links
            .iter_mut()
            .find(|((a, _), l)| *a == i && l.peer.0 == j && l.closing.is_none())
            .map(|(_, l)| l)
        else {
            return false;
        };
        link.in_flight_bytes += bytes.len();
        link.in_flight.push_back((arrive, bytes));
        true
    }

    /// Bytes waiting in flight on the links from node `i` to node `j`.
    pub fn in_flight(&self, i: usize, j: usize) -> usize {
        self.links
            .iter()
            .filter(|((a, _), l)| *a == i && l.peer.0 == j)
            .map(|(_, l)| l.in_flight_bytes)
            .sum()
    }

    /// The other end of node `i`'s connection `conn`: node index and its
    /// connection id, while the link exists.
    pub fn link_peer(&self, i: usize, conn: ConnId) -> Option<(usize, ConnId)> {
        self.links.get(&(i, conn)).map(|l| l.peer)
    }

    /// Whether deliveries on the link keyed `key` are held (frozen receiver or a
    /// held direction).
    fn delivery_held(&self, key: (usize, ConnId)) -> bool {
        self.links.get(&key).is_some_and(|l| {
            self.frozen.contains(&l.peer.0) || self.held.contains(&(key.0, l.peer.0))
        })
    }

    /// Cuts every link of node `i` abruptly (both ends see a close).
    pub fn disconnect_all(&mut self, i: usize) {
        let keys: Vec<(usize, ConnId)> = self.links.keys().filter(|k| k.0 == i).copied().collect();
        for k in keys {
            self.cut(k, &CloseReason::Transport("link cut by test".into()));
        }
        self.drain();
    }

    fn cut(&mut self, key: (usize, ConnId), reason: &CloseReason) {
        if let Some(link) = self.links.remove(&key) {
            let now = self.now;
            let n = &mut self.nodes[key.0];
            n.node.handle_closed(now, key.1, reason, &n.store);
            if let Some(other) = self.links.remove(&link.peer) {
                let _ = other;
                let p = &mut self.nodes[link.peer.0];
                p.node.handle_closed(now, link.peer.1, reason, &p.store);
            }
        }
    }

    /// Carries out every node's outputs until all are idle at the current time.
    pub fn drain(&mut self) {
        for _round in 0..10_000 {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                if self.frozen.contains(&i) {
                    continue;
                }
                // Flow control: a link with a full window blocks its sender.
                let keys: Vec<(usize, ConnId)> =
                    self.links.keys().filter(|k| k.0 == i).copied().collect();
                for k in &keys {
                    let full = self.links[k].in_flight_bytes >= self.model.window;
                    self.nodes[i].node.set_blocked(k.1, full);
                }
                let mut pump = Pump {
                    net: self,
                    i,
                    progress: false,
                };
                drain(&mut pump);
                progress |= pump.progress;
                let n = &mut self.nodes[i];
                let q = n
                    .node
                    .peers()
                    .iter()
                    .map(|p| p.queued_bytes)
                    .max()
                    .unwrap_or(0);
                n.peak_queued = n.peak_queued.max(q);
            }
            if !progress {
                return;
            }
        }
        panic!("testkit: nodes did not go idle (livelock?)");
    }

    fn perform(&mut self, i: usize, out: Output) {
        let now = self.now;
        match out {
            Output::Event(e) => self.nodes[i].events.push((now, e)),
            Output::Datagram { to: _, data } => {
                // One broadcast domain: every other node hears every datagram.
                let from = self.nodes[i].addr;
                for j in 0..self.nodes.len() {
                    if j != i {
                        self.nodes[j].node.handle_datagram(now, from, &data);
                    }
                }
            }
            Output::Store(req) => {
                let due = now + self.nodes[i].store_delay;
                self.pending_store.push((due, i, req));
                self.flush_store();
            }
            Output::Dial { conn, addr } => {
                self.nodes[i].dials += 1;
                let target = self.nodes.iter().position(|n| n.addr == addr);
                let refused = target.is_none_or(|j| {
                    self.blocked_pairs.contains(&(i, j)) || self.blocked_pairs.contains(&(j, i))
                });
                let from = self.nodes[i].addr;
                match target.filter(|_| !refused) {
                    Some(j) => match self.nodes[j].node.handle_accepted(now, from) {
                        Some(jc) => {
                            self.links.insert((i, conn), Link::new((j, jc)));
                            self.links.insert((j, jc), Link::new((i, conn)));
                            self.nodes[i].node.handle_connected(now, conn);
                        }
                        None => {
                            let n = &mut self.nodes[i];
                            n.node
                                .handle_closed(now, conn, &connection_refused(), &n.store)
                        }
                    },
                    None => {
                        let n = &mut self.nodes[i];
                        n.node
                            .handle_closed(now, conn, &connection_refused(), &n.store)
                    }
                }
            }
            Output::Close { conn, reason } => {
                // Data already in flight still arrives; the close follows it.
                match self.links.get_mut(&(i, conn)) {
                    Some(link) => link.closing = Some(reason),
                    None => {
                        let n = &mut self.nodes[i];
                        n.node.handle_closed(now, conn, &reason, &n.store)
                    }
                }
            }
        }
    }

    fn flush_store(&mut self) {
        let now = self.now;
        let mut k = 0;
        while k < self.pending_store.len() {
            let (due, i, _) = &self.pending_store[k];
            if *due <= now && !self.frozen.contains(i) {
                let (_, i, req) = self.pending_store.remove(k);
                let (batch, updates, put) = match &req {
                    StoreRequest::Land { batch, updates } => (Some(*batch), updates.len(), None),
                    StoreRequest::Put { batch, .. } => (None, 0, Some(*batch)),
                    _ => (None, 0, None),
                };
                let n = &mut self.nodes[i];
                n.head_updates += updates as u64;
                let result = n.store.apply(req);
                if let Some(b) = batch {
                    n.node.handle_store_done(now, b, result, &n.store);
                } else if let Some(b) = put.filter(|_| result.is_err()) {
                    // A failed put is answered, like the daemon's writer does.
                    n.node.handle_store_done(now, b, result, &n.store);
                }
            } else {
                k += 1;
            }
        }
    }

    /// The next moment something happens: a delivery, a store reply or a timer.
    fn next_event(&mut self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut take = |x: Instant| {
            if t.is_none_or(|c| x < c) {
                t = Some(x);
            }
        };
        for (key, l) in &self.links {
            let held = self.frozen.contains(&l.peer.0) || self.held.contains(&(key.0, l.peer.0));
            if held {
                if l.closing.is_some() && !l.closed_locally {
                    take(self.now);
                }
                continue;
            }
            match l.in_flight.front() {
                Some((at, _)) => take(*at),
                None if l.closing.is_some() => take(self.now),
                None => {}
            }
        }
        for (at, i, _) in &self.pending_store {
            if !self.frozen.contains(i) {
                take(*at);
            }
        }
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if self.frozen.contains(&i) {
                continue;
            }
            if let Some(at) = n.node.poll_timeout() {
                take(at);
            }
        }
        t
    }

    /// Advances to the next event and handles everything due then.
    pub fn step(&mut self) -> bool {
        self.drain();
        let Some(at) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        let keys: Vec<(usize, ConnId)> = self.links.keys().copied().collect();
        for key in keys {
            if self.delivery_held(key) {
                // The receiver cannot take delivery; a close by the sender still
                // completes on the sender's side.
                if let Some(link) = self.links.get_mut(&key)
                    && !link.closed_locally
                    && let Some(reason) = link.closing.clone()
                {
                    link.closed_locally = true;
                    let n = &mut self.nodes[key.0];
                    n.node.handle_closed(now, key.1, &reason, &n.store);
                }
                continue;
            }
            while let Some(link) = self.links.get_mut(&key) {
                match link.in_flight.front() {
                    Some((at, _)) if *at <= now => {
                        let (_, mut data) = link.in_flight.pop_front().unwrap_or_default();
                        link.in_flight_bytes -= data.len();
                        link.delivered += data.len() as u64;
                        let (j, jc) = link.peer;
                        if let Some(tamper) = self.tamper.as_mut() {
                            tamper(key.0, j, &mut data);
                        }
                        *self.delivered_total.entry((key.0, j)).or_default() += data.len() as u64;
                        if self.capture {
                            self.captured
                                .entry((key.0, j))
                                .or_default()
                                .extend_from_slice(&data);
                        }
                        let n = &mut self.nodes[j];
                        n.node.handle_bytes(now, jc, &data, &n.store);
                    }
                    Some(_) => break,
                    None => {
                        if let Some(reason) = link.closing.clone() {
                            self.cut(key, &reason);
                        }
                        break;
                    }
                }
            }
        }
        self.flush_store();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if self.frozen.contains(&i) {
                continue;
            }
            if n.node.poll_timeout().is_some_and(|t| t <= now) {
                n.node.handle_timeout(now, &n.store);
            }
        }
        self.drain();
        true
    }

    /// Runs until `done` holds or `limit` of virtual time passes; returns whether
    /// `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&TestNet) -> bool) -> bool {
        let end = self.now + limit;
        self.drain();
        while !done(self) {
            if !self.step() || self.now > end {
                return done(self);
            }
        }
        true
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        // Only events due by `end` run: stepping to a later one and then setting
        // the clock back would queue bytes "from the future" ahead of later ones.
        let end = self.now + d;
        loop {
            self.drain();
            match self.next_event() {
                Some(at) if at <= end => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(end);
    }

    /// Whether node `i` has an established connection to node `j`.
    pub fn connected(&self, i: usize, j: usize) -> bool {
        let id = self.nodes[j].node.node_id();
        self.nodes[i]
            .node
            .peers()
            .iter()
            .any(|p| p.peer == Some(id) && p.state == crate::node::ConnState::Ready)
    }
}

impl Default for TestNet {
    fn default() -> Self {
        Self::new()
    }
}

impl Link {
    fn new(peer: (usize, ConnId)) -> Link {
        Link {
            peer,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            closing: None,
            closed_locally: false,
            delivered: 0,
        }
    }
}

/// Builds a seal from `path → content` (large contents are chunked like the real
/// repository does) and stores every object; returns the seal's id.
pub fn seal_files(
    store: &mut MemStore,
    files: &BTreeMap<String, Vec<u8>>,
    parents: Vec<crate::id::ObjectId>,
    time: i64,
    message: &str,
) -> crate::id::ObjectId {
    use crate::object::{Mode, Seal, Timestamp, encode_blob};
    let mut flat = crate::merge::FlatTree::new();
    for (path, content) in files {
        let id = if content.len() as u64 >= crate::chunk::CHUNK_THRESHOLD {
            let mut prev = 0;
            let mut leaves = Vec::new();
            for cut in crate::chunk::cut_points(content) {
                let id = store.insert(encode_blob(&content[prev..cut]));
                leaves.push((id, (cut - prev) as u64));
                prev = cut;
            }
            let mut last = None;
            for node in crate::chunk::build_chunk_lists(&leaves) {
                last = Some(store.insert(node.bytes));
            }
            last.unwrap_or_else(|| store.insert(encode_blob(b"")))
        } else {
            store.insert(encode_blob(content))
        };
        flat.insert(path.clone(), (Mode::File, id));
    }
    let (tree, trees) = crate::conflict::build_trees(&flat).expect("testkit: a valid tree");
    for (_, bytes) in trees {
        store.insert(bytes);
    }
    let seal = Seal {
        git: None,
        tree,
        parents,
        author: "test".into(),
        time: Timestamp {
            seconds: time,
            offset_minutes: 0,
        },
        message: message.into(),
    };
    store.insert(seal.encode().expect("testkit: encodable seal"))
}

/// One frame as it travels on a plaintext connection (`encryption: false`
/// on both ends): a Noise transport record holding a length-prefixed frame
/// whose JSON part is `json` and whose binary part is empty. Tests inject it
/// with [`TestNet::inject`] to act as a peer sending arbitrary messages.
pub fn plaintext_record(json: &str) -> Vec<u8> {
    let json = json.as_bytes();
    let mut frame = Vec::new();
    frame.extend_from_slice(&((4 + json.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(json);
    let mut record = (frame.len() as u16).to_be_bytes().to_vec();
    record.extend_from_slice(&frame);
    record
}

/// What a dial to no listening node gets, as a socket would report it.
fn connection_refused() -> CloseReason {
    CloseReason::Transport("connection refused".into())
}
