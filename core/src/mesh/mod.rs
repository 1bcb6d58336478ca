//! Link-state routing for the mesh: who is linked to whom, and which neighbour
//! to hand a frame to so that it reaches a node we have no connection with.
//!
//! A [`Mesh`] is a sans-IO sub-machine the [`Node`](crate::node::Node) owns. Every
//! node advertises its direct links (the peers it has a ready connection to, with
//! their round-trip times) and the repositories it serves in a link-state
//! advertisement, an [`Lsa`]. Advertisements are flooded: a node that receives a
//! new one stores it and passes it on to its other neighbours, so every node
//! within [`MeshConfig::max_hops`] of the origin ends up with the same
//! link-state database, and from it computes its own routes. The machine never
//! sends anything itself: [`set_links`](Mesh::set_links),
//! [`handle_lsa`](Mesh::handle_lsa) and [`handle_timeout`](Mesh::handle_timeout)
//! return the advertisement to flood, and the caller sends it. Time comes in as
//! [`Instant`]; nothing depends on hashing order, so a simulation replays
//! exactly.
//!
//! # Advertisement
//!
//! Carried as the payload of a `topology` message:
//!
//! ```text
//! {"origin":"<64 hex>","seq":7,
//!  "links":[{"peer":"<64 hex>","rtt_us":1200},...],
//!  "repos":["<repo id>",...],"hops_left":8,"sig":"<128 hex>"}
//! ```
//!
//! - `origin`: the advertising node, 64 lowercase hex digits.
//! - `seq`: bumped by the origin for every new advertisement; a receiver keeps
//!   only the highest it has seen per origin, which is what stops a flood.
//! - `links`: at most [`MeshConfig::max_links_per_node`] distinct peers (never
//!   the origin itself) with the measured round-trip time in microseconds.
//! - `repos`: at most [`MAX_REPOS_PER_LSA`] distinct repository ids (1 to
//!   [`MAX_REPO_ID`] printable ASCII bytes).
//! - `hops_left`: how many more nodes this copy may reach. The origin sends
//!   [`MeshConfig::max_hops`]; a receiver passes it on only if it is above 1, and
//!   then with one less. At most [`MAX_HOPS_LIMIT`].
//!
//! - `sig`: the origin's XEdDSA signature with the key that is its id, over
//!   everything but `hops_left` ([`sign`] has the bytes). A node's machine is
//!   [`signed`](Mesh::signed): it signs its own advertisements and refuses,
//!   counting them in [`MeshStats::forged`], received ones that are unsigned or
//!   do not verify, so a neighbour cannot speak for another node.
//!
//! Unknown fields are ignored, so a later version can add some. Every field is
//! checked and every table is bounded, since a signed advertisement is still
//! its origin's claim.
//!
//! # Routes
//!
//! A link a–b is used only while *both* a and b advertise it: a node that
//! vanished without a word keeps being advertised by its neighbours only until
//! they notice, and a one-sided link is exactly that stale state. Its cost is the
//! larger of the two advertised round-trip times (at least 1 µs), so both ends
//! see the same, symmetric graph and compute consistent routes.
//!
//! Routes are shortest paths by cost from this node (Dijkstra, once for all
//! destinations, cached until the graph changes or [`MeshConfig::route_ttl`]
//! passes). For each destination the machine keeps every first hop whose path
//! is within [`ECMP_SLACK_PERCENT`] of the best and strictly *downstream*: the
//! rest of that path costs less than our own best distance. Each node forwards
//! hop by hop with its own table, and the downstream rule makes the distance to
//! the destination shrink at every hop, so frames cannot loop even though
//! near-equal paths are spread over. A session picks among the first hops by a
//! stable hash of its id, so it stays on one path while different sessions use
//! different ones.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::discovery::MAX_REPO_ID;
use crate::time::Instant;

/// Largest `hops_left` accepted, and largest [`MeshConfig::max_hops`]. A mesh
/// wider than this is better split; the bound keeps a hostile advertisement
/// from being flooded further than any sane configuration would.
pub const MAX_HOPS_LIMIT: u8 = 64;
/// Most repositories one advertisement may list.
pub const MAX_REPOS_PER_LSA: usize = 256;
/// Round-trip times are capped at one minute when used as link costs, so that
/// path sums cannot overflow and a bogus huge value cannot dominate everything.
pub const MAX_LINK_RTT_US: u64 = 60_000_000;
/// How far (in percent of the advertised value) a link's round-trip time must
/// move before [`Mesh::set_links`] re-advertises it: measurements jitter, and
/// re-flooding on every wobble would cost more than slightly stale costs.
pub const RTT_CHANGE_PERCENT: u64 = 20;
/// A round-trip time must also move by at least this much (in microseconds)
/// before it is re-advertised: on a LAN the RTT is a fraction of a
/// millisecond and moves by far more than [`RTT_CHANGE_PERCENT`] on every
/// heartbeat, while a difference this small never changes which path is
/// worth taking. Without the floor a 200-node mesh spends nearly all its
/// traffic re-flooding jitter.
pub const RTT_CHANGE_FLOOR_US: u64 = 2_000;
/// Least time between two advertisements caused only by round-trip times
/// moving. Links appearing or disappearing are advertised at once (failover
/// depends on it); cost changes wait, and the latest values go out with the
/// next advertisement.
pub const RTT_ANNOUNCE_GAP: Duration = Duration::from_secs(10);
/// Paths costing at most this much (in percent) more than the best count as
/// equal for load balancing: measured round-trip times are never exactly equal.
pub const ECMP_SLACK_PERCENT: u64 = 5;
/// Least time between two advertisements brought forward by a change of
/// links or by [`Mesh::handle_lsa`] (our own advertisement heard with a higher
/// sequence number): every advertisement floods the whole mesh, so changes
/// that come in a burst (start-up, a heal) go out together. Two nodes
/// misconfigured with one id would otherwise also outbid each other in a
/// tight loop.
const MIN_ANNOUNCE_GAP: Duration = Duration::from_secs(1);
/// Route tables kept for distinct `exclude` sets; relays pass the previous hop,
/// so there is about one per neighbour.
const EXCLUDE_CACHE_MAX: usize = 32;

/// Why an advertisement was refused, or a configuration rejected.
///
/// An advertisement error means the neighbour that sent it is broken or
/// hostile (a correct node validates what it floods); it is already counted in
/// [`MeshStats::malformed`], or for a signature in [`MeshStats::forged`].
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum MeshError {
    #[error("invalid node id in {field}: {id:?} is not 64 lowercase hex digits")]
    InvalidNodeId { field: &'static str, id: String },
    #[error("advertisement lists {count} links, more than the {max} allowed")]
    TooManyLinks { count: usize, max: usize },
    #[error("advertisement lists peer {0} twice")]
    DuplicateLink(String),
    #[error("advertisement lists its origin as its own peer")]
    SelfLink,
    #[error("advertisement lists {count} repositories, more than the {max} allowed")]
    TooManyRepos { count: usize, max: usize },
    #[error("invalid repository id {0:?}")]
    InvalidRepo(String),
    #[error("advertisement lists repository {0:?} twice")]
    DuplicateRepo(String),
    #[error("hops_left {hops} exceeds the limit of {max}")]
    HopsOutOfRange { hops: u8, max: u8 },
    #[error("database summary lists {count} origins, more than the {max} allowed")]
    TooManySummaryEntries { count: usize, max: usize },
    #[error("advertisement is not signed")]
    Unsigned,
    #[error("advertisement signature does not verify against its origin")]
    BadSignature,
    #[error("mesh config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
}

// ----- configuration -----

/// How the mesh behaves. [`Default`] gives the documented values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// Time between regular re-advertisements of our own links, which keep
    /// them from ageing out elsewhere.
    pub announce_interval: Duration,
    /// An advertisement not refreshed for this long is dropped, with the links
    /// and repositories it listed. Three intervals tolerate two lost refreshes.
    pub max_age: Duration,
    /// Radius of the mesh: advertisements travel at most this many hops, and
    /// routes are at most this long.
    pub max_hops: u8,
    /// The route cache is recomputed at least this often, even when no
    /// advertisement changed (a safety net; every change invalidates it anyway).
    pub route_ttl: Duration,
    /// Most origins held in the link-state database. Beyond it, advertisements
    /// from new origins are dropped until old ones age out.
    pub max_nodes: usize,
    /// Most links one advertisement may list. Every node of a mesh should use
    /// the same value: a larger advertisement is refused as malformed.
    pub max_links_per_node: usize,
    /// Least time between two advertisements caused by links coming or going
    /// (default `MIN_ANNOUNCE_GAP`, 1 s): a burst of changes floods once.
    pub link_announce_gap: Duration,
    /// Least time between two advertisements caused only by round-trip times
    /// moving (default [`RTT_ANNOUNCE_GAP`]).
    pub rtt_announce_gap: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self::with_interval(Duration::from_secs(30))
    }
}

impl MeshConfig {
    /// The defaults with another announce interval; `max_age` (three
    /// intervals) follows it.
    pub fn with_interval(announce_interval: Duration) -> Self {
        MeshConfig {
            announce_interval,
            max_age: announce_interval.saturating_mul(3),
            max_hops: 8,
            route_ttl: Duration::from_secs(10),
            max_nodes: 4096,
            max_links_per_node: 256,
            link_announce_gap: MIN_ANNOUNCE_GAP,
            rtt_announce_gap: RTT_ANNOUNCE_GAP,
        }
    }

    /// Checks every value. [`Mesh::new`] does not fail; it clamps what this
    /// rejects, so call this where configuration is loaded.
    pub fn validate(&self) -> Result<(), MeshError> {
        let invalid = |field, reason: &str| {
            Err(MeshError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.announce_interval < Duration::from_millis(10) {
            return invalid("announce_interval", "must be at least 10ms");
        }
        if self.max_age <= self.announce_interval {
            return invalid("max_age", "must exceed announce_interval");
        }
        if self.max_hops == 0 || self.max_hops > MAX_HOPS_LIMIT {
            return invalid("max_hops", "must be between 1 and 64");
        }
        if self.route_ttl.is_zero() {
            return invalid("route_ttl", "must be positive");
        }
        if self.max_nodes == 0 {
            return invalid("max_nodes", "must be at least 1");
        }
        if self.max_links_per_node == 0 {
            return invalid("max_links_per_node", "must be at least 1");
        }
        if self.link_announce_gap > self.announce_interval
            || self.rtt_announce_gap > self.announce_interval
        {
            return invalid("announce gaps", "must not exceed announce_interval");
        }
        Ok(())
    }

    /// The nearest valid configuration.
    fn clamped(mut self) -> Self {
        self.announce_interval = self.announce_interval.max(Duration::from_millis(10));
        self.max_age = self
            .max_age
            .max(self.announce_interval + Duration::from_millis(1));
        self.max_hops = self.max_hops.clamp(1, MAX_HOPS_LIMIT);
        self.route_ttl = self.route_ttl.max(Duration::from_micros(1));
        self.max_nodes = self.max_nodes.max(1);
        self.max_links_per_node = self.max_links_per_node.max(1);
        self.link_announce_gap = self.link_announce_gap.min(self.announce_interval);
        self.rtt_announce_gap = self.rtt_announce_gap.min(self.announce_interval);
        self
    }
}

// ----- advertisements -----

/// What a node's link-state database holds, one line per origin: exchanged
/// with a new neighbour instead of the whole database, so that joining a mesh
/// both sides already know costs one message each way rather than one per
/// node, and only the advertisements one side lacks are sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSummary {
    pub entries: Vec<SummaryEntry>,
}

/// One origin's newest advertisement as held: its sequence number and a
/// digest of its content. The digest catches a node that restarted and reused
/// a sequence number with different links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryEntry {
    pub origin: String,
    pub seq: u64,
    pub digest: u64,
}

/// FNV-1a over an advertisement's links and repositories, in order.
fn content_digest(links: &BTreeMap<String, u64>, repos: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (peer, rtt) in links {
        eat(peer.as_bytes());
        eat(&rtt.to_le_bytes());
    }
    eat(&[0xff]);
    for r in repos {
        eat(r.as_bytes());
        eat(&[0]);
    }
    h
}

mod lsa;
pub mod sign;

pub use lsa::{LinkInfo, Lsa};
use lsa::{clip, is_node_id, is_repo_id, short};

// ----- observable state -----

/// Counters for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshStats {
    /// Advertisements handed to [`Mesh::handle_lsa`].
    pub lsas_received: u64,
    /// Received advertisements returned to be flooded onward.
    pub lsas_flooded: u64,
    /// Our own advertisements originated (link changes and refreshes).
    pub announcements: u64,
    /// Received advertisements dropped as already known: an equal or older
    /// sequence number for their origin.
    pub duplicates: u64,
    /// Our own advertisement, heard back.
    pub own: u64,
    /// Refused by validation.
    pub malformed: u64,
    /// Refused because the signature is missing or does not verify against
    /// the origin: forged or altered on the way (see [`sign`]).
    #[serde(default)]
    pub forged: u64,
    /// Advertisements from new origins dropped because the database was full.
    pub table_full: u64,
    /// Advertisements removed after `max_age` without a refresh.
    pub aged_out: u64,
    /// Shortest-path computations (each one covers every destination).
    pub route_computations: u64,
}

/// The mesh as this node sees it, for `topology --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// This node's id.
    pub me: String,
    /// Every node heard of, in id order.
    pub nodes: Vec<TopologyNode>,
    /// Every advertised link, once per pair, in id order.
    pub edges: Vec<TopologyEdge>,
}

/// A node in a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyNode {
    pub id: String,
    /// Sequence number of its advertisement held (`None`: known only because a
    /// neighbour lists it).
    pub seq: Option<u64>,
    /// Repositories it serves, in id order.
    pub repos: Vec<String>,
    /// When its advertisement was received (for this node: last originated).
    pub last_seen: Option<Instant>,
}

/// A link in a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyEdge {
    /// The smaller id of the two.
    pub a: String,
    pub b: String,
    /// The link's cost: the larger of the advertised round-trip times.
    pub rtt_us: u64,
    /// Both ends advertise it, so routes may use it.
    pub usable: bool,
}

// ----- the machine -----

/// An advertisement held in the database, normalised: links by peer, repos
/// sorted. Equality of content is order-insensitive this way.
#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    links: BTreeMap<String, u64>,
    /// The numeric [`NodeKey`] part of each peer in `links`, in the same order:
    /// computed once here rather than on every route computation.
    link_keys: Vec<u64>,
    repos: Vec<String>,
    /// The highest `hops_left` seen for this `seq`, after clamping to our
    /// `max_hops`.
    hops_left: u8,
    received: Instant,
    /// The origin's signature, passed on unchanged.
    sig: String,
}

/// One way to reach a destination: through direct neighbour `first`, at
/// `cost` over `hops` links, the last of them from `pred`. Indices are node
/// indices of the [`RouteTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Alt {
    first: usize,
    cost: u64,
    hops: usize,
    pred: usize,
}

/// Every destination's usable first hops, computed in one pass.
///
/// Stored flat (one buffer of ids, one of alternatives) because it is rebuilt
/// on every graph change: a few allocations instead of several per node.
#[derive(Clone, Debug)]
struct RouteTable {
    computed_at: Instant,
    /// Every node id, concatenated in [`NodeKey`] order...
    names: String,
    /// ...and where each one ends in `names`; a node's index is its position.
    ends: Vec<usize>,
    /// The numeric part of each id's [`NodeKey`], for lookups.
    keys: Vec<u64>,
    /// A fixed hash of each id, for rendezvous hashing of sessions.
    id_hash: Vec<u64>,
    me: usize,
    /// Every node's first-hop alternatives, sorted by first hop...
    alts: Vec<Alt>,
    /// ...as `(start, len)` in `alts` per node (empty: unreachable within
    /// `max_hops`, or ourselves).
    alt_span: Vec<(usize, usize)>,
    /// Destinations whose cheapest paths all exceed `max_hops` but that a
    /// longer-costing path within the limit reaches: that path, ourselves
    /// first, with its cost. One path each, no load balancing.
    fallback: BTreeMap<usize, (Vec<usize>, u64)>,
}

impl RouteTable {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn id(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.names[start..self.ends[i]]
    }

    fn alts(&self, v: usize) -> &[Alt] {
        let (start, len) = self.alt_span[v];
        &self.alts[start..start + len]
    }

    /// `v`'s fallback path as an alternative.
    fn fallback_alt(&self, v: usize) -> Option<Alt> {
        let (path, cost) = self.fallback.get(&v)?;
        Some(Alt {
            first: *path.get(1)?,
            cost: *cost,
            hops: path.len() - 1,
            pred: path[path.len() - 2],
        })
    }

    fn index(&self, id: &str) -> Option<usize> {
        let want = NodeKey::new(id);
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match NodeKey(self.keys[mid], self.id(mid)).cmp(&want) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// How many nodes have a route.
    fn reachable(&self) -> usize {
        self.alt_span.iter().filter(|s| s.1 > 0).count() + self.fallback.len()
    }

    /// The cheapest alternative (then fewest hops, then lowest first-hop id).
    fn best(&self, v: usize) -> Option<Alt> {
        self.alts(v)
            .iter()
            .min_by_key(|a| (a.cost, a.hops, a.first))
            .copied()
            .or_else(|| self.fallback_alt(v))
    }

    /// The alternative session `session` uses: rendezvous hashing, so a session
    /// keeps its first hop when another alternative appears or disappears, and
    /// sessions spread evenly over the alternatives.
    fn pick(&self, dst: &str, session: u64) -> Option<(usize, Alt)> {
        let v = self.index(dst)?;
        let a = self
            .alts(v)
            .iter()
            .max_by_key(|a| (mix(session ^ self.id_hash[a.first]), Reverse(a.first)))
            .copied()
            .or_else(|| self.fallback_alt(v))?;
        Some((v, a))
    }

    /// The node ids from us to `v` along alternative `alt`.
    fn path(&self, v: usize, alt: Alt) -> Option<Vec<String>> {
        if let Some((path, _)) = self.fallback.get(&v) {
            return Some(path.iter().map(|&i| self.id(i).to_owned()).collect());
        }
        let mut out = vec![self.id(v).to_owned()];
        let mut cur = alt;
        // Predecessors are settled strictly earlier, so this ends; the bound
        // only guards against a broken invariant turning into a hang.
        for _ in 0..=self.len() {
            if cur.pred == self.me {
                out.push(self.id(self.me).to_owned());
                out.reverse();
                return Some(out);
            }
            out.push(self.id(cur.pred).to_owned());
            cur = *self.alts(cur.pred).iter().find(|a| a.first == alt.first)?;
        }
        None
    }
}

/// What each end of a pair `(a, b)` advertises: a's round-trip time to b, and
/// b's to a.
type Sides = (Option<u64>, Option<u64>);

/// The graph routes are computed on: usable links only, by index, as
/// adjacency arrays (node `u`'s links are `adj[start[u]..start[u + 1]]`).
struct Graph<'a> {
    keys: Vec<NodeKey<'a>>,
    start: Vec<usize>,
    adj: Vec<(usize, u64)>,
    me: usize,
}

impl Graph<'_> {
    fn links(&self, u: usize) -> &[(usize, u64)] {
        &self.adj[self.start[u]..self.start[u + 1]]
    }
}

/// A node id with its first 16 hex digits as a number, which orders valid ids
/// the same way as the strings do. Building the graph looks up thousands of
/// ids; comparing numbers first leaves only ties (never, in practice) to the
/// full strings. Anything ordered by this key is ordered consistently even for
/// an invalid id (ours, misconfigured), since ties fall back to the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct NodeKey<'a>(u64, &'a str);

impl<'a> NodeKey<'a> {
    fn new(id: &'a str) -> Self {
        let mut k = 0u64;
        for &c in id.as_bytes().iter().take(16) {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => 0,
            };
            k = k << 4 | u64::from(d);
        }
        NodeKey(k, id)
    }
}

/// splitmix64's finaliser: a fixed, well-mixed hash, the same on every
/// platform and run, so a session's path choice is reproducible.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over a node id, then mixed: cheap, fixed, and plenty for spreading
/// sessions (a collision only makes two first hops tie, broken by index).
fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// Whether `cost` is within [`ECMP_SLACK_PERCENT`] of `best`.
fn within_slack(cost: u64, best: u64) -> bool {
    u128::from(cost) * 100 <= u128::from(best) * u128::from(100 + ECMP_SLACK_PERCENT)
}

/// Adds `alt` to `cand`, keeping per first hop only the cheapest (then
/// shortest) way.
fn offer(cand: &mut Vec<Alt>, alt: Alt) {
    match cand.iter_mut().find(|a| a.first == alt.first) {
        Some(a) => {
            if (alt.cost, alt.hops) < (a.cost, a.hops) {
                *a = alt;
            }
        }
        None => cand.push(alt),
    }
}

/// The link-state routing sub-machine. See the module documentation.
#[derive(Debug)]
pub struct Mesh {
    cfg: MeshConfig,
    me: String,
    /// Our repositories, sorted and valid.
    repos: Vec<String>,
    /// Our links as last advertised: peer to round-trip time.
    links: BTreeMap<String, u64>,
    /// As [`Entry::link_keys`], for `links`.
    link_keys: Vec<u64>,
    /// Sequence number of our latest advertisement.
    seq: u64,
    next_announce: Instant,
    last_announce: Option<Instant>,
    /// Other nodes' advertisements by origin. Never holds our own.
    lsdb: BTreeMap<String, Entry>,
    /// `(received, origin)` for every entry: the first is the next to age out.
    expiry: BTreeSet<(Instant, String)>,
    /// Routes on the full graph; `None` when it changed since.
    routes: Option<RouteTable>,
    /// Routes avoiding a set of nodes, by that set (sorted).
    excluded: BTreeMap<Vec<String>, RouteTable>,
    /// [`Mesh::holders_cut_off`]'s last answer, by repository; `None` when the
    /// graph changed since.
    cut_off: Option<(String, Vec<String>)>,
    stats: MeshStats,
    /// Signs our advertisements and makes received ones verified; `None`
    /// only for routing tests on bare machines ([`Mesh::signed`]).
    signer: Option<sign::Signer>,
    /// What our last signature covered, and the signature.
    own_sig: Option<(Vec<u8>, String)>,
}

impl Mesh {
    /// A machine for node `me` (64 lowercase hex) serving `repos`, with no
    /// links yet. The first regular advertisement is due one interval from
    /// `now`; [`set_links`](Self::set_links) advertises as soon as there is
    /// something to say. Invalid repository ids are left out (with a warning):
    /// an advertisement holding one would be refused by every neighbour.
    pub fn new(cfg: MeshConfig, me: String, repos: Vec<String>, now: Instant) -> Self {
        let cfg = cfg.clamped();
        if !is_node_id(&me) {
            tracing::warn!(node = %clip(&me), "mesh node id is not 64 lowercase hex digits; neighbours will refuse its advertisements");
        }
        Mesh {
            next_announce: now + cfg.announce_interval,
            cfg,
            me,
            repos: clean_repos(repos),
            links: BTreeMap::new(),
            link_keys: Vec::new(),
            seq: 0,
            last_announce: None,
            lsdb: BTreeMap::new(),
            expiry: BTreeSet::new(),
            routes: None,
            excluded: BTreeMap::new(),
            cut_off: None,
            stats: MeshStats::default(),
            signer: None,
            own_sig: None,
        }
    }

    /// Signs our advertisements with `keypair`, whose public half is our id,
    /// and refuses received ones that their origin did not sign as they are.
    /// A node's mesh is always signed; bare machines serve routing tests.
    pub fn signed(mut self, keypair: &crate::noise::Keypair) -> Self {
        if data_encoding::HEXLOWER.encode(&keypair.public) != self.me {
            tracing::warn!(node = %clip(&self.me), "mesh signing key is not this node's id; neighbours will refuse its advertisements");
        }
        self.signer = Some(sign::Signer::new(&keypair.private));
        self.own_sig = None;
        self
    }

    // ----- getters -----

    /// Our node id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The configuration in effect (after clamping).
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    /// Our current advertisement, as it would be flooded now.
    pub fn own_lsa(&self) -> Lsa {
        Lsa {
            origin: self.me.clone(),
            seq: self.seq,
            links: self
                .links
                .iter()
                .map(|(peer, &rtt_us)| LinkInfo {
                    peer: peer.clone(),
                    rtt_us,
                })
                .collect(),
            repos: self.repos.clone(),
            hops_left: self.cfg.max_hops,
            sig: String::new(),
        }
        .signed_by(self.signer.as_ref(), self.own_sig.as_ref())
    }

    /// Every advertisement held, ours first, as they would be flooded onward:
    /// for a neighbour that just connected, so it learns the whole mesh at
    /// once instead of over the next announce interval. It also heals a
    /// restart: a node that comes back with a lower sequence number hears its
    /// old advertisement this way and outbids it (see
    /// [`handle_lsa`](Self::handle_lsa)).
    pub fn database(&self) -> Vec<Lsa> {
        let mut out = vec![self.own_lsa()];
        out.extend(self.lsdb.iter().map(|(origin, e)| {
            Lsa {
                origin: origin.clone(),
                seq: e.seq,
                links: e
                    .links
                    .iter()
                    .map(|(peer, &rtt_us)| LinkInfo {
                        peer: peer.clone(),
                        rtt_us,
                    })
                    .collect(),
                repos: e.repos.clone(),
                hops_left: e.hops_left.saturating_sub(1),
                sig: e.sig.clone(),
            }
        }));
        out
    }

    /// What we hold, ours first, for a neighbour that just connected (see
    /// [`DatabaseSummary`]).
    pub fn summary(&self) -> DatabaseSummary {
        let mut entries = vec![SummaryEntry {
            origin: self.me.clone(),
            seq: self.seq,
            digest: content_digest(&self.links, &self.repos),
        }];
        entries.extend(self.lsdb.iter().map(|(origin, e)| SummaryEntry {
            origin: origin.clone(),
            seq: e.seq,
            digest: content_digest(&e.links, &e.repos),
        }));
        DatabaseSummary { entries }
    }

    /// A new neighbour's summary arrived: returns the advertisements it lacks,
    /// or holds in an older or different version, to send it. When it holds
    /// a newer (or a different) advertisement of ours, from before we
    /// restarted, our sequence number moves past it and our next
    /// advertisement is brought forward, as in [`handle_lsa`](Self::handle_lsa).
    ///
    /// An `Err` is a malformed summary, already counted.
    pub fn handle_summary(
        &mut self,
        from: &str,
        summary: &DatabaseSummary,
        now: Instant,
    ) -> Result<Vec<Lsa>, MeshError> {
        let max = self.cfg.max_nodes.saturating_add(1);
        if summary.entries.len() > max {
            self.stats.malformed += 1;
            return Err(MeshError::TooManySummaryEntries {
                count: summary.entries.len(),
                max,
            });
        }
        let mut theirs: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for e in &summary.entries {
            if !is_node_id(&e.origin) {
                self.stats.malformed += 1;
                return Err(MeshError::InvalidNodeId {
                    field: "summary origin",
                    id: clip(&e.origin),
                });
            }
            let slot = theirs.entry(e.origin.as_str()).or_insert((e.seq, e.digest));
            if e.seq > slot.0 {
                *slot = (e.seq, e.digest);
            }
        }
        let mine = content_digest(&self.links, &self.repos);
        if let Some(&(seq, digest)) = theirs.get(self.me.as_str())
            && (seq > self.seq || (seq == self.seq && digest != mine))
        {
            tracing::debug!(from = %short(from), seq, ours = self.seq, "neighbour holds our advertisement from a previous life");
            self.outbid(seq, now);
        }
        let summary_of = |origin: &str, seq: u64, digest: u64| {
            theirs
                .get(origin)
                .is_none_or(|&(s, d)| s < seq || (s == seq && d != digest))
        };
        Ok(self
            .database()
            .into_iter()
            .filter(|lsa| {
                let digest = if lsa.origin == self.me {
                    mine
                } else {
                    self.lsdb
                        .get(&lsa.origin)
                        .map_or(0, |e| content_digest(&e.links, &e.repos))
                };
                summary_of(&lsa.origin, lsa.seq, digest)
            })
            .collect())
    }

    /// Moves our sequence number to `seq` (a neighbour holds an advertisement
    /// of ours that far along) and brings our next advertisement forward, so it
    /// replaces the one from our previous life.
    fn outbid(&mut self, seq: u64, now: Instant) {
        self.seq = self.seq.max(seq);
        let earliest = match self.last_announce {
            Some(t) => (t + MIN_ANNOUNCE_GAP).max(now),
            None => now,
        };
        self.next_announce = self.next_announce.min(earliest);
    }

    // ----- inputs -----

    /// Our direct links changed (a connection became ready or closed, or an RTT
    /// moved). Returns our new advertisement to flood to every neighbour if it
    /// changed, and routes are recomputed on the next lookup.
    ///
    /// A change is a peer added or removed, or a round-trip time more than
    /// [`RTT_CHANGE_PERCENT`] and more than [`RTT_CHANGE_FLOOR_US`] away from
    /// the advertised one; smaller moves keep the advertised values, so jitter
    /// does not flood the mesh. Our routes use a change at once; when the last
    /// advertisement is less than [`MeshConfig::link_announce_gap`] (for
    /// RTT-only changes [`MeshConfig::rtt_announce_gap`]) old, this returns `None` and the
    /// advertisement comes from [`handle_timeout`](Self::handle_timeout) when
    /// the gap is over. Links to
    /// invalid ids or to ourselves are dropped, duplicates keep the lowest
    /// round-trip time, and beyond `max_links_per_node` the fastest are kept:
    /// every neighbour would refuse an advertisement breaking those rules.
    pub fn set_links(&mut self, links: Vec<LinkInfo>, now: Instant) -> Option<Lsa> {
        let mut new: BTreeMap<String, u64> = BTreeMap::new();
        for l in links {
            if !is_node_id(&l.peer) || l.peer == self.me {
                tracing::debug!(peer = %clip(&l.peer), "not advertising a link to an invalid id");
                continue;
            }
            let rtt = l.rtt_us.clamp(1, MAX_LINK_RTT_US);
            new.entry(l.peer)
                .and_modify(|r| *r = (*r).min(rtt))
                .or_insert(rtt);
        }
        if new.len() > self.cfg.max_links_per_node {
            let mut by_rtt: Vec<(u64, String)> = new.into_iter().map(|(p, r)| (r, p)).collect();
            by_rtt.sort();
            by_rtt.truncate(self.cfg.max_links_per_node);
            new = by_rtt.into_iter().map(|(r, p)| (p, r)).collect();
        }
        let same_peers =
            new.len() == self.links.len() && new.keys().zip(self.links.keys()).all(|(a, b)| a == b);
        if same_peers {
            let moved = new.values().zip(self.links.values()).any(|(r, or)| {
                let d = r.abs_diff(*or);
                d * 100 > or * RTT_CHANGE_PERCENT && d > RTT_CHANGE_FLOOR_US
            });
            if !moved {
                return None;
            }
        }
        self.link_keys = keys_of(&new);
        self.links = new;
        self.invalidate();
        // Our own routes use the new links at once; the advertisement waits
        // out the gap, so a burst of changes (start-up, a heal) floods once.
        let gap = if same_peers {
            self.cfg.rtt_announce_gap
        } else {
            self.cfg.link_announce_gap
        };
        match self.last_announce {
            Some(t) if now < t + gap => {
                self.next_announce = self.next_announce.min(t + gap);
                None
            }
            _ => Some(self.originate(now)),
        }
    }

    /// The repositories we serve changed. Returns our new advertisement to
    /// flood if the set differs.
    pub fn set_repos(&mut self, repos: Vec<String>, now: Instant) -> Option<Lsa> {
        let repos = clean_repos(repos);
        if repos == self.repos {
            return None;
        }
        self.repos = repos;
        Some(self.originate(now))
    }

    /// An advertisement arrived from neighbour `from`.
    ///
    /// `Ok(Some(lsa))` is new: it is stored and returned with `hops_left` one
    /// less, to flood to every neighbour except `from`. `Ok(None)` needs no
    /// flooding: a duplicate, an older sequence number, one whose hops are
    /// exhausted (stored all the same), one from a new origin while the
    /// database is full, or our own heard back. A copy of the current
    /// advertisement that arrives with more hops left than the first one did
    /// (it came a shorter way) is flooded again, so the flood's reach does not
    /// depend on which way was fastest.
    ///
    /// Our own advertisement with a higher sequence number than ours (we
    /// restarted and the mesh remembers our previous life) moves our sequence
    /// past it and brings the next advertisement forward, which replaces it.
    ///
    /// Every `Err` is a malformed advertisement, or on a [signed](Self::signed)
    /// machine one its origin did not sign as it is (checked before it may
    /// change anything), already counted.
    pub fn handle_lsa(
        &mut self,
        from: &str,
        lsa: Lsa,
        now: Instant,
    ) -> Result<Option<Lsa>, MeshError> {
        self.stats.lsas_received += 1;
        if let Err(e) = lsa.validate(self.cfg.max_links_per_node) {
            self.stats.malformed += 1;
            tracing::debug!(from = %short(from), error = %e, "malformed advertisement");
            return Err(e);
        }
        let links: BTreeMap<String, u64> = lsa
            .links
            .iter()
            .map(|l| (l.peer.clone(), l.rtt_us.clamp(1, MAX_LINK_RTT_US)))
            .collect();
        let mut repos = lsa.repos.clone();
        repos.sort();

        if lsa.origin == self.me {
            self.stats.own += 1;
            let differs = links != self.links || repos != self.repos;
            if lsa.seq > self.seq || (lsa.seq == self.seq && differs) {
                self.authentic(from, &lsa)?;
                tracing::debug!(
                    from = %short(from),
                    seq = lsa.seq,
                    ours = self.seq,
                    "our own advertisement from a previous life; outbidding it"
                );
                self.outbid(lsa.seq, now);
            }
            return Ok(None);
        }

        let hops = lsa.hops_left.min(self.cfg.max_hops);
        if self.lsdb.get(&lsa.origin).is_none_or(|e| lsa.seq > e.seq) {
            self.authentic(from, &lsa)?;
        }
        match self.lsdb.get_mut(&lsa.origin) {
            Some(e) if lsa.seq < e.seq => {
                self.stats.duplicates += 1;
                return Ok(None);
            }
            Some(e) if lsa.seq == e.seq => {
                // A copy that came a shorter way is passed on again only when
                // the first one's reach was cut to half the radius or less:
                // beyond that, every node the better copy could reach has
                // heard it anyway in any mesh of sensible diameter, and
                // flooding twice would double the topology traffic.
                if hops > e.hops_left
                    && e.hops_left <= self.cfg.max_hops / 2
                    && links == e.links
                    && repos == e.repos
                {
                    // The content is the one verified: its signature goes on.
                    e.hops_left = hops;
                    let lsa = Lsa {
                        sig: e.sig.clone(),
                        ..lsa
                    };
                    return Ok(self.onward(lsa, hops));
                }
                self.stats.duplicates += 1;
                return Ok(None);
            }
            Some(e) => {
                let received = e.received;
                self.expiry.remove(&(received, lsa.origin.clone()));
            }
            None => {
                if self.lsdb.len() >= self.cfg.max_nodes {
                    self.stats.table_full += 1;
                    tracing::debug!(origin = %short(&lsa.origin), "mesh database full; advertisement dropped");
                    return Ok(None);
                }
                tracing::debug!(origin = %short(&lsa.origin), from = %short(from), "new node in the mesh");
            }
        }
        self.expiry.insert((now, lsa.origin.clone()));
        self.lsdb.insert(
            lsa.origin.clone(),
            Entry {
                seq: lsa.seq,
                link_keys: keys_of(&links),
                links,
                repos,
                hops_left: hops,
                received: now,
                sig: lsa.sig.clone(),
            },
        );
        self.invalidate();
        Ok(self.onward(lsa, hops))
    }

    /// Re-advertises when due, drops advertisements older than `max_age`, and
    /// drops the route cache once it is older than `route_ttl`. Returns our
    /// advertisement to flood to every neighbour when one is due. Calling it
    /// early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Lsa> {
        while let Some((t, origin)) = self.expiry.first() {
            if now.saturating_since(*t) < self.cfg.max_age {
                break;
            }
            tracing::debug!(origin = %short(origin), "mesh advertisement aged out");
            let origin = origin.clone();
            self.expiry.pop_first();
            self.lsdb.remove(&origin);
            self.stats.aged_out += 1;
            self.invalidate();
        }
        if self
            .routes
            .as_ref()
            .is_some_and(|t| now.saturating_since(t.computed_at) >= self.cfg.route_ttl)
        {
            self.invalidate();
        }
        (now >= self.next_announce).then(|| self.originate(now))
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work: the next
    /// advertisement or the next expiry. (The route cache's age needs no wake-up;
    /// lookups check it.)
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.expiry.first().map(|(t, _)| *t + self.cfg.max_age);
        Some(expiry.map_or(self.next_announce, |e| e.min(self.next_announce)))
    }

    // ----- routes -----

    /// The neighbour to hand a frame for `dst` to, for session `session`; `None`
    /// if `dst` is ourselves or unreachable within `max_hops`.
    ///
    /// Among the near-equal first hops (see the module documentation) the
    /// session's is chosen by rendezvous hashing of `session`: stable for the
    /// session, spread across sessions. Nodes in `exclude` (relays suspected of
    /// tampering, the neighbour a relayed frame came from) are routed around if
    /// any path avoids them; otherwise they are ignored, since a doubtful path
    /// beats none. `dst` and ourselves in `exclude` are ignored.
    pub fn next_hop(
        &mut self,
        dst: &str,
        session: u64,
        exclude: &BTreeSet<String>,
        now: Instant,
    ) -> Option<String> {
        let (t, _, alt) = self.choose(dst, session, exclude, now)?;
        Some(t.id(alt.first).to_owned())
    }

    /// The path session `session` takes to `dst` as far as this node can tell
    /// (each relay chooses its own next hop, from the same database), with its
    /// cost in µs: ourselves first, `dst` last. What to blame when that session
    /// fails end to end.
    pub fn session_route(
        &mut self,
        dst: &str,
        session: u64,
        exclude: &BTreeSet<String>,
        now: Instant,
    ) -> Option<(Vec<String>, u64)> {
        let (t, v, alt) = self.choose(dst, session, exclude, now)?;
        Some((t.path(v, alt)?, alt.cost))
    }

    /// The cheapest path to `dst` (for `ivaldi p2p route`): ourselves first,
    /// `dst` last, with its cost in µs. For ourselves, just us at cost 0.
    pub fn route(&mut self, dst: &str, now: Instant) -> Option<(Vec<String>, u64)> {
        if dst == self.me {
            return Some((vec![self.me.clone()], 0));
        }
        self.refresh(now);
        let t = self.routes.as_ref()?;
        let v = t.index(dst)?;
        let alt = t.best(v)?;
        Some((t.path(v, alt)?, alt.cost))
    }

    /// How many nodes we can route to.
    pub fn routing_table_size(&mut self, now: Instant) -> usize {
        self.refresh(now);
        self.routes.as_ref().map_or(0, RouteTable::reachable)
    }

    /// Nodes that serve `repo` and are reachable over usable links within
    /// `max_hops` (for opening sessions over relays), with the fewest links
    /// between us, nearest first, then by id. Not ourselves.
    pub fn nodes_serving(&self, repo: &str) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = self
            .hop_counts()
            .into_iter()
            .filter(|(id, _)| {
                self.lsdb
                    .get(*id)
                    .is_some_and(|e| e.repos.binary_search_by(|r| r.as_str().cmp(repo)).is_ok())
            })
            .map(|(id, h)| (id.to_owned(), h))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// Nodes serving `repo` that we cannot reach along usable links between
    /// nodes serving it, in id order: ordinary syncing between holders never
    /// carries seals to them, so these are the ones worth a routed session.
    ///
    /// Asked about once a second by every node, so it is a linear walk over
    /// the graph, cached until the graph changes.
    pub fn holders_cut_off(&mut self, repo: &str) -> Vec<String> {
        if let Some((r, v)) = &self.cut_off
            && r == repo
        {
            return v.clone();
        }
        let g = self.build_graph(&[]);
        let serves = |id: &str| {
            self.lsdb
                .get(id)
                .is_some_and(|e| e.repos.binary_search_by(|r| r.as_str().cmp(repo)).is_ok())
        };
        let holder: Vec<bool> = g
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| i == g.me || serves(k.1))
            .collect();
        let mut reached = vec![false; g.keys.len()];
        let mut stack = Vec::new();
        if !g.keys.is_empty() {
            reached[g.me] = true;
            stack.push(g.me);
        }
        while let Some(u) = stack.pop() {
            for &(v, _) in g.links(u) {
                if holder[v] && !reached[v] {
                    reached[v] = true;
                    stack.push(v);
                }
            }
        }
        // Holders without any usable link are not in `g`'s adjacency but are
        // in its keys (every advertiser is); listed ones we only heard of as
        // someone's peer have no repositories known, so they are not holders.
        let mut out: Vec<String> = g
            .keys
            .iter()
            .enumerate()
            .filter(|&(i, _)| holder[i] && !reached[i])
            .map(|(_, k)| k.1.to_owned())
            .collect();
        out.sort();
        self.cut_off = Some((repo.to_owned(), out.clone()));
        out
    }

    /// Whether a flood of `origin`'s advertisement, arriving here from
    /// neighbour `from`, has reached `neighbour` without us: it is the origin,
    /// or it has a usable link to the origin or to `from`. Each of those sends
    /// every new advertisement to all its neighbours except the ones this rule
    /// exempts it from, and the exemption always points at a node earlier on
    /// the flood's way, back to the origin, which sends to everyone; so on a
    /// mesh whose links we know, everyone still gets every advertisement,
    /// while in a clique (a LAN where all peers connect) only the origin
    /// sends. Where our view of the links is stale, the periodic summary
    /// exchange ([`summary`](Self::summary)) repairs what a flood missed.
    pub fn flood_reached(&self, neighbour: &str, from: &str, origin: &str) -> bool {
        neighbour == origin
            || self.usable_link(neighbour, from)
            || self.usable_link(neighbour, origin)
    }

    /// Both ends advertise the link `a`–`b`.
    fn usable_link(&self, a: &str, b: &str) -> bool {
        let links_of = |n: &str| {
            if n == self.me {
                Some(&self.links)
            } else {
                self.lsdb.get(n).map(|e| &e.links)
            }
        };
        match (links_of(a), links_of(b)) {
            (Some(la), Some(lb)) => la.contains_key(b) && lb.contains_key(a),
            _ => false,
        }
    }

    /// Every node heard of, whether it advertised itself or was only listed as
    /// someone's peer (dial candidates when healing a split), in id order. Not
    /// ourselves.
    pub fn known_nodes(&self) -> Vec<String> {
        let mut all: BTreeSet<&str> = BTreeSet::new();
        all.extend(self.links.keys().map(String::as_str));
        for (origin, e) in &self.lsdb {
            all.insert(origin);
            all.extend(e.links.keys().map(String::as_str));
        }
        all.remove(self.me.as_str());
        all.into_iter().map(str::to_owned).collect()
    }

    /// The whole graph as advertised, one-sided links included (marked), for
    /// `topology --json`.
    pub fn graph(&self) -> Topology {
        // (a, b) with a < b to (a's advertised rtt, b's advertised rtt).
        let mut pairs: BTreeMap<(&str, &str), Sides> = BTreeMap::new();
        let advertisers = std::iter::once((self.me.as_str(), &self.links))
            .chain(self.lsdb.iter().map(|(o, e)| (o.as_str(), &e.links)));
        for (origin, links) in advertisers {
            for (peer, &rtt) in links {
                let peer = peer.as_str();
                if origin < peer {
                    pairs.entry((origin, peer)).or_default().0 = Some(rtt);
                } else {
                    pairs.entry((peer, origin)).or_default().1 = Some(rtt);
                }
            }
        }
        let mut nodes: BTreeMap<&str, TopologyNode> = BTreeMap::new();
        let bare = |id: &str| TopologyNode {
            id: id.to_owned(),
            seq: None,
            repos: Vec::new(),
            last_seen: None,
        };
        for &(a, b) in pairs.keys() {
            nodes.entry(a).or_insert_with(|| bare(a));
            nodes.entry(b).or_insert_with(|| bare(b));
        }
        for (origin, e) in &self.lsdb {
            nodes.insert(
                origin,
                TopologyNode {
                    id: origin.clone(),
                    seq: Some(e.seq),
                    repos: e.repos.clone(),
                    last_seen: Some(e.received),
                },
            );
        }
        nodes.insert(
            &self.me,
            TopologyNode {
                id: self.me.clone(),
                seq: Some(self.seq),
                repos: self.repos.clone(),
                last_seen: self.last_announce,
            },
        );
        let edges = pairs
            .into_iter()
            .map(|((a, b), (ab, ba))| TopologyEdge {
                a: a.to_owned(),
                b: b.to_owned(),
                rtt_us: ab.unwrap_or(0).max(ba.unwrap_or(0)).max(1),
                usable: ab.is_some() && ba.is_some(),
            })
            .collect();
        Topology {
            me: self.me.clone(),
            nodes: nodes.into_values().collect(),
            edges,
        }
    }

    /// The graph in Graphviz DOT (`topology --dot`; render with `dot -Tsvg`).
    /// Nodes are labelled with the first 12 digits of their id and their
    /// repositories; we are drawn bold; one-sided links dashed. One line per
    /// node and per edge.
    pub fn to_dot(&self) -> String {
        let topo = self.graph();
        let mut out = String::from("graph mesh {\n");
        out.push_str("  node [shape=box, fontname=\"monospace\"];\n");
        for n in &topo.nodes {
            let mut label = short(&n.id).to_owned();
            if !n.repos.is_empty() {
                label.push('\n');
                label.push_str(&n.repos.join(", "));
            }
            let style = if n.id == topo.me {
                ", style=bold"
            } else if n.seq.is_none() {
                ", style=dashed"
            } else {
                ""
            };
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\"{style}];",
                dot_escape(&n.id),
                dot_escape(&label)
            );
        }
        for e in &topo.edges {
            let style = if e.usable { "" } else { ", style=dashed" };
            let _ = writeln!(
                out,
                "  \"{}\" -- \"{}\" [label=\"{}.{} ms\"{style}];",
                dot_escape(&e.a),
                dot_escape(&e.b),
                e.rtt_us / 1000,
                (e.rtt_us % 1000) / 100
            );
        }
        out.push_str("}\n");
        out
    }

    // ----- internals -----

    /// A new advertisement of ours: the next sequence number, and the regular
    /// refresh rescheduled from now.
    fn originate(&mut self, now: Instant) -> Lsa {
        // Saturating: a forged advertisement of ours at u64::MAX (neighbours can
        // lie about other nodes) must not wrap us back to 0; we then stall at
        // the maximum until the forgery ages out everywhere.
        self.seq = self.seq.saturating_add(1);
        self.last_announce = Some(now);
        self.next_announce = now + self.cfg.announce_interval;
        self.stats.announcements += 1;
        let lsa = self.own_lsa();
        if self.signer.is_some() {
            self.own_sig = sign::signed_bytes(&lsa).map(|b| (b, lsa.sig.clone()));
        }
        lsa
    }

    /// Refuses `lsa` unless its origin signed it as it is; a bare machine
    /// takes everything.
    fn authentic(&mut self, from: &str, lsa: &Lsa) -> Result<(), MeshError> {
        if self.signer.is_none() {
            return Ok(());
        }
        sign::verify(lsa).inspect_err(|e| {
            self.stats.forged += 1;
            tracing::warn!(from = %short(from), origin = %short(&lsa.origin), seq = lsa.seq, error = %e, "forged or altered mesh advertisement dropped");
        })
    }

    /// `lsa` to pass on with one hop less, if it may go further.
    fn onward(&mut self, mut lsa: Lsa, hops: u8) -> Option<Lsa> {
        if hops <= 1 {
            return None;
        }
        lsa.hops_left = hops - 1;
        self.stats.lsas_flooded += 1;
        Some(lsa)
    }

    /// The graph changed: every cached route may be wrong.
    fn invalidate(&mut self) {
        self.routes = None;
        self.excluded.clear();
        self.cut_off = None;
    }

    /// Makes the full-graph route table current.
    fn refresh(&mut self, now: Instant) {
        if self
            .routes
            .as_ref()
            .is_some_and(|t| now.saturating_since(t.computed_at) >= self.cfg.route_ttl)
        {
            self.invalidate();
        }
        if self.routes.is_none() {
            self.routes = Some(self.compute(&[], now));
        }
    }

    /// The table and alternative session `session` uses toward `dst`, honouring
    /// `exclude` where possible.
    fn choose(
        &mut self,
        dst: &str,
        session: u64,
        exclude: &BTreeSet<String>,
        now: Instant,
    ) -> Option<(&RouteTable, usize, Alt)> {
        if dst == self.me {
            return None;
        }
        self.refresh(now);
        // Only nodes that could be on a path matter; the rest would only
        // multiply cached tables.
        let banned: Vec<String> = exclude
            .iter()
            .filter(|id| id.as_str() != dst && self.lsdb.contains_key(*id))
            .cloned()
            .collect();
        if !banned.is_empty() && !self.excluded.contains_key(&banned) {
            if self.excluded.len() >= EXCLUDE_CACHE_MAX {
                self.excluded.clear();
            }
            let t = self.compute(&banned, now);
            self.excluded.insert(banned.clone(), t);
        }
        let this: &Mesh = self;
        if let Some(t) = this.excluded.get(&banned)
            && let Some((v, alt)) = t.pick(dst, session)
        {
            return Some((t, v, alt));
        }
        let t = this.routes.as_ref()?;
        let (v, alt) = t.pick(dst, session)?;
        Some((t, v, alt))
    }

    /// The usable graph without the `banned` nodes (sorted).
    fn build_graph(&self, banned: &[String]) -> Graph<'_> {
        let is_banned = |id: &str| banned.binary_search_by(|b| b.as_str().cmp(id)).is_ok();
        let mut nodes: Vec<(NodeKey<'_>, &BTreeMap<String, u64>, &[u64])> = self
            .lsdb
            .iter()
            .filter(|(id, _)| !is_banned(id))
            .map(|(id, e)| (NodeKey::new(id), &e.links, e.link_keys.as_slice()))
            .chain(std::iter::once((
                NodeKey::new(&self.me),
                &self.links,
                self.link_keys.as_slice(),
            )))
            .collect();
        // Nearly sorted already (the database is in id order), so this is cheap.
        nodes.sort_unstable_by_key(|n| n.0);
        let keys: Vec<NodeKey<'_>> = nodes.iter().map(|n| n.0).collect();
        let numbers: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let find = |number: u64, id: &str| {
            let mut i = numbers.partition_point(|&x| x < number);
            while numbers.get(i) == Some(&number) {
                if keys[i].1 == id {
                    return Some(i);
                }
                i += 1;
            }
            None
        };
        // Every node's advertised links by index, each node's sorted by index
        // (`dir[dir_start[i]..dir_start[i + 1]]`); links to nodes not in the
        // graph (no advertisement, or banned) are left out.
        let n = keys.len();
        let mut dir: Vec<(usize, u64)> = Vec::with_capacity(nodes.iter().map(|x| x.1.len()).sum());
        let mut dir_start = Vec::with_capacity(n + 1);
        dir_start.push(0);
        for (_, links, link_keys) in &nodes {
            let from = dir.len();
            for ((b, &rtt), &number) in links.iter().zip(link_keys.iter()) {
                if let Some(j) = find(number, b) {
                    dir.push((j, rtt));
                }
            }
            // Already in order for valid ids; cheap either way.
            dir[from..].sort_unstable();
            dir_start.push(dir.len());
        }
        let advertised = |i: usize| &dir[dir_start[i]..dir_start[i + 1]];
        // A link is usable when both ends advertise it; each pair is seen
        // once, from its smaller index.
        let mut edges: Vec<(usize, usize, u64)> = Vec::with_capacity(dir.len() / 2);
        for i in 0..n {
            for &(j, ab) in advertised(i).iter().filter(|l| l.0 > i) {
                let back = advertised(j);
                if let Ok(k) = back.binary_search_by_key(&i, |l| l.0) {
                    edges.push((i, j, ab.max(back[k].1).clamp(1, MAX_LINK_RTT_US)));
                }
            }
        }
        let mut start = vec![0usize; n + 1];
        for &(a, b, _) in &edges {
            start[a + 1] += 1;
            start[b + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut adj = vec![(0usize, 0u64); start[n]];
        for &(a, b, w) in &edges {
            adj[fill[a]] = (b, w);
            fill[a] += 1;
            adj[fill[b]] = (a, w);
            fill[b] += 1;
        }
        let me = find(NodeKey::new(&self.me).0, &self.me).unwrap_or(0);
        Graph {
            keys,
            start,
            adj,
            me,
        }
    }

    /// Dijkstra from us over the graph without `banned`, then every
    /// destination's near-equal downstream first hops.
    ///
    /// The second pass visits nodes in the order Dijkstra settled them; a
    /// node's ways in are its already-settled neighbours' ways plus the link.
    /// Per first hop only the cheapest way is kept, and only if it is within
    /// [`ECMP_SLACK_PERCENT`] of the best, at most `max_hops` long, and
    /// downstream (its cost minus the first link is below our best distance,
    /// so that neighbour is strictly closer to the destination than we are).
    fn compute(&mut self, banned: &[String], now: Instant) -> RouteTable {
        self.stats.route_computations += 1;
        let g = self.build_graph(banned);
        let n = g.keys.len();
        let mut dist = vec![u64::MAX; n];
        let mut rank = vec![usize::MAX; n];
        let mut order = Vec::with_capacity(n);
        let mut heap = BinaryHeap::with_capacity(n);
        dist[g.me] = 0;
        heap.push(Reverse((0u64, g.me)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if rank[u] != usize::MAX {
                continue;
            }
            rank[u] = order.len();
            order.push(u);
            for &(v, w) in g.links(u) {
                let nd = d.saturating_add(w);
                if nd < dist[v] {
                    dist[v] = nd;
                    heap.push(Reverse((nd, v)));
                }
            }
        }

        let mut direct = vec![u64::MAX; n];
        for &(v, w) in g.links(g.me) {
            direct[v] = w;
        }
        let max_hops = usize::from(self.cfg.max_hops);
        let mut alts: Vec<Alt> = Vec::with_capacity(n);
        let mut alt_span = vec![(0usize, 0usize); n];
        let mut cand: Vec<Alt> = Vec::new();
        for &v in order.iter().skip(1) {
            cand.clear();
            for &(u, w) in g.links(v) {
                if rank[u] >= rank[v] {
                    continue;
                }
                if u == g.me {
                    offer(
                        &mut cand,
                        Alt {
                            first: v,
                            cost: w,
                            hops: 1,
                            pred: u,
                        },
                    );
                    continue;
                }
                let (s, len) = alt_span[u];
                for a in &alts[s..s + len] {
                    if a.hops < max_hops {
                        offer(
                            &mut cand,
                            Alt {
                                first: a.first,
                                cost: a.cost.saturating_add(w),
                                hops: a.hops + 1,
                                pred: u,
                            },
                        );
                    }
                }
            }
            let best = dist[v];
            cand.retain(|a| {
                within_slack(a.cost, best) && a.cost.saturating_sub(direct[a.first]) < best
            });
            cand.sort_unstable_by_key(|a| a.first);
            alt_span[v] = (alts.len(), cand.len());
            alts.extend_from_slice(&cand);
        }

        // Destinations whose near-cheapest paths are all too long: the
        // cheapest path within `max_hops`, by a hop-bounded Bellman-Ford (one
        // round per hop), only when there are any.
        let mut fallback = BTreeMap::new();
        let missing: Vec<usize> = (0..n)
            .filter(|&v| v != g.me && dist[v] != u64::MAX && alt_span[v].1 == 0)
            .collect();
        if !missing.is_empty() {
            // cost[h][v], and the node before v on that path.
            let mut cost = vec![vec![u64::MAX; n]; max_hops + 1];
            let mut prev = vec![vec![usize::MAX; n]; max_hops + 1];
            cost[0][g.me] = 0;
            for h in 1..=max_hops {
                let (done, rest) = cost.split_at_mut(h);
                let (last, cur) = (&done[h - 1], &mut rest[0]);
                cur.copy_from_slice(last);
                prev[h] = prev[h - 1].clone();
                for (u, &cu) in last.iter().enumerate() {
                    if cu == u64::MAX {
                        continue;
                    }
                    for &(v, w) in g.links(u) {
                        let c = cu.saturating_add(w);
                        if c < cur[v] {
                            cur[v] = c;
                            prev[h][v] = u;
                        }
                    }
                }
            }
            for v in missing {
                if cost[max_hops][v] == u64::MAX {
                    continue;
                }
                // Walk back: at layer h, the node before v is prev[h][v], reached
                // within h - 1 hops.
                let mut path = vec![v];
                let (mut cur, mut h) = (v, max_hops);
                while cur != g.me && h > 0 {
                    let p = prev[h][cur];
                    if p == usize::MAX {
                        break;
                    }
                    // The layer where p's cost was last improved is the one
                    // whose path we follow; any layer with the same cost works.
                    path.push(p);
                    cur = p;
                    h -= 1;
                }
                if cur == g.me {
                    path.reverse();
                    fallback.insert(v, (path, cost[max_hops][v]));
                }
            }
        }

        let mut names = String::with_capacity(g.keys.iter().map(|k| k.1.len()).sum());
        let mut ends = Vec::with_capacity(n);
        for k in &g.keys {
            names.push_str(k.1);
            ends.push(names.len());
        }
        RouteTable {
            computed_at: now,
            names,
            ends,
            keys: g.keys.iter().map(|k| k.0).collect(),
            id_hash: g.keys.iter().map(|k| id_hash(k.1)).collect(),
            me: g.me,
            alts,
            alt_span,
            fallback,
        }
    }

    /// Fewest usable links from us to every node within `max_hops` (breadth
    /// first; ourselves excluded).
    fn hop_counts(&self) -> BTreeMap<&str, usize> {
        let links_of = |id: &str| {
            if id == self.me {
                Some(&self.links)
            } else {
                self.lsdb.get(id).map(|e| &e.links)
            }
        };
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        seen.insert(&self.me, 0);
        let mut queue = VecDeque::from([(self.me.as_str(), 0usize)]);
        while let Some((a, h)) = queue.pop_front() {
            if h >= usize::from(self.cfg.max_hops) {
                continue;
            }
            let Some(la) = links_of(a) else { continue };
            for b in la.keys() {
                let b = b.as_str();
                if seen.contains_key(b) || !links_of(b).is_some_and(|lb| lb.contains_key(a)) {
                    continue;
                }
                seen.insert(b, h + 1);
                queue.push_back((b, h + 1));
            }
        }
        seen.remove(self.me.as_str());
        seen
    }
}

/// The numeric [`NodeKey`] part of every peer in `links`, in order.
fn keys_of(links: &BTreeMap<String, u64>) -> Vec<u64> {
    links.keys().map(|p| NodeKey::new(p).0).collect()
}

/// Our repositories as an advertisement may carry them: valid ids, sorted,
/// distinct, at most [`MAX_REPOS_PER_LSA`].
fn clean_repos(repos: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = repos
        .into_iter()
        .filter(|r| {
            let ok = is_repo_id(r);
            if !ok {
                tracing::warn!(repo = %clip(r), "not advertising a repository with an invalid id");
            }
            ok
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if out.len() > MAX_REPOS_PER_LSA {
        tracing::warn!(
            count = out.len(),
            "serving more repositories than one advertisement may list; advertising the first"
        );
        out.truncate(MAX_REPOS_PER_LSA);
    }
    out
}

/// Escapes a string for a double-quoted DOT id or label: backslash and quote;
/// a newline becomes DOT's centred line break.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_and_hashes_are_fixed() {
        assert!(within_slack(105, 100));
        assert!(!within_slack(106, 100));
        assert!(within_slack(u64::MAX, u64::MAX));
        assert_eq!(mix(0), mix(0));
        assert_ne!(id_hash("a"), id_hash("b"));
    }

    #[test]
    fn dot_escaping() {
        assert_eq!(dot_escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
