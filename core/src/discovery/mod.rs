//! LAN discovery: periodic UDP announcements, and the table of peers heard.
//!
//! A [`Discovery`] is a sans-IO sub-machine the [`Node`](crate::node::Node) owns.
//! It never touches a socket: the shell hands it received datagrams
//! ([`handle_datagram`](Discovery::handle_datagram)) and sends what
//! [`poll_datagram`](Discovery::poll_datagram) returns, to the addresses it names.
//! It wakes at [`poll_timeout`](Discovery::poll_timeout) to announce and to expire
//! silent peers. Time comes in as [`Instant`] and jitter from a seeded [`Rng`], so a
//! simulation replays exactly.
//!
//! # Datagram
//!
//! ```text
//! datagram = "IVDISC2\n" json          (at most MAX_DATAGRAM = 1200 bytes in all)
//! json     = {"v":1,"node":"<64 hex>","port":9090,
//!             "repos":{"<tag>":"<heads digest>",...},"truncated":true}
//! tag      = hex(BLAKE3-keyed(key = derive_key("ivaldi-p2p discovery tag v1", repo id),
//!                             data = the sender's node id, 32 bytes))[..32]
//! ```
//!
//! - `v`: the sender's protocol version ([`PROTOCOL_VERSION`](crate::wire::PROTOCOL_VERSION)).
//! - `node`: the sender's node id, 64 lowercase hex digits.
//! - `port`: the TCP port it accepts peer connections on (never 0); the peer's
//!   address is the datagram's source IP with this port.
//! - `repos`: for each repository the sender serves, its tag (32 lowercase hex
//!   digits, [`RepoKey::tag`]) to the digest of its heads ([`heads_digest`]: 1 to
//!   64 lowercase hex digits, 16 as sent by this version), in tag order.
//! - `truncated`: present and `true` only when the sender serves more repositories
//!   than fit in one datagram; it then lists a prefix of them in tag order.
//!
//! The repository id never travels in clear. A tag is keyed by the repository
//! id and bound to the sender's node id, so only a node that already holds the
//! repository can recognise it (by computing, for each of its own repositories,
//! the tag for the announcing node id), and the same repository has a different
//! tag in every sender's announcements: a listener learns neither the id nor a
//! stable name for the repository. Tags that match none of our repositories are
//! only counted ([`DiscoveredPeer::unknown_repos`]).
//!
//! Unknown JSON fields are ignored, so a later version can add some; a changed
//! layout gets a new magic. Announcements are unauthenticated hints: anyone on the
//! LAN can send one with any node id, so the machine bounds what they can cost
//! (a per-source token bucket, a bounded table with a smaller bound for peers
//! that serve none of our repositories, dial backoff per node id), and the Noise
//! handshake on the TCP connection is what establishes who a peer is. The node
//! dials only ids it would admit; discovery is a hint about addresses, nothing
//! more.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::id::ObjectId;
use crate::rng::Rng;
use crate::time::Instant;
use crate::timeline::TimelineName;

pub use crate::repo_id::MAX_REPO_ID;
/// Hex digits of a heads digest as [`heads_digest`] makes it.
pub const DIGEST_HEX_LEN: usize = 16;

/// Why a datagram was dropped, or a configuration refused.
///
/// Every datagram error is expected under normal operation (stray traffic, a
/// flood, a peer outside the allowed networks) and is already counted in
/// [`DiscoveryStats`]; callers should log them at debug level at most.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum DiscoveryError {
    #[error("datagram of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("not a discovery datagram (bad magic)")]
    BadMagic,
    #[error("malformed announcement: {0}")]
    Malformed(String),
    #[error("invalid announcement field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("announcement from {0}, outside allowed_networks")]
    NotAllowed(IpAddr),
    #[error("announcement from {0} dropped: rate limit exceeded")]
    RateLimited(IpAddr),
    #[error("discovery table full ({0} entries, none evictable)")]
    TableFull(usize),
    #[error(transparent)]
    InvalidCidr(#[from] InvalidCidr),
    #[error("discovery config: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
}

mod announce;

pub use announce::{
    Announcement, MAGIC, MAX_DATAGRAM, RepoKey, TAG_CONTEXT, TAG_HEX_LEN, repo_tag,
};
use announce::{is_digest, is_node_id};

pub use crate::network::{Cidr, InvalidCidr, NetworkFilter, cidr_contains};
use crate::rate::{Limits, SourceLimiter};

use crate::repo_id::is_repo_id;

// ----- heads digest -----

/// A short digest of a repository's timeline heads: the first
/// [`DIGEST_HEX_LEN`] hex digits of BLAKE3 over one `name=head\n` line per
/// timeline, in name order.
///
/// Sixteen digits are enough to tell "same heads" from "changed" (a collision only
/// delays a sync until the next change) while keeping announcements small enough
/// to list many repositories. Timeline names cannot contain `=` or a newline, so
/// the lines are unambiguous.
pub fn heads_digest(heads: &BTreeMap<TimelineName, ObjectId>) -> String {
    let mut h = blake3::Hasher::new();
    for (name, head) in heads {
        h.update(name.as_str().as_bytes());
        h.update(b"=");
        h.update(head.to_hex().as_bytes());
        h.update(b"\n");
    }
    let mut hex = h.finalize().to_hex().to_string();
    hex.truncate(DIGEST_HEX_LEN);
    hex
}

// ----- configuration -----

/// How the discovery machine behaves. [`Default`] gives the issue's values;
/// `DiscoveryConfig::from_config` (in `config`) takes what the node configuration holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Time between regular announcements (before jitter).
    pub interval: Duration,
    /// Each regular delay is drawn uniformly from `interval ± jitter`, so nodes
    /// started together drift apart instead of announcing in bursts.
    pub jitter: Duration,
    /// Least time between two announcements, however often the local heads
    /// change: keeps traffic bounded when seals come in quick succession.
    pub min_announce_gap: Duration,
    /// A peer not heard from for this long is removed. Must exceed
    /// `interval + jitter`; three intervals tolerate two lost datagrams.
    pub stale_after: Duration,
    /// Where announcements go (broadcast addresses, configured addresses); the
    /// shell computes them.
    pub targets: Vec<SocketAddr>,
    /// CIDR networks announcements are accepted from; empty accepts any.
    pub allowed_networks: Vec<String>,
    /// Most peers remembered at once.
    pub max_entries: usize,
    /// Most of them that serve none of our repositories: anyone can announce
    /// any node id with made-up tags, and such entries are only shown, never
    /// dialled, so a few suffice (the oldest goes first).
    pub max_foreign: usize,
    /// Token bucket per source: datagrams accepted in a burst...
    pub rate_burst: u32,
    /// ...and refilled per second. Sources are IPv4 addresses and IPv6 /64
    /// networks (one host on a LAN usually holds a whole /64).
    pub rate_per_sec: u32,
    /// Most sources tracked by the rate limiter; beyond it, datagrams from new
    /// sources are dropped until idle sources age out.
    pub max_sources: usize,
    /// First redial delay after [`Discovery::mark_dialed`]; doubles per attempt...
    pub redial_min: Duration,
    /// ...up to this.
    pub redial_max: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self::with_interval(Duration::from_secs(5))
    }
}

impl DiscoveryConfig {
    /// The defaults with another interval; jitter (a tenth) and `stale_after`
    /// (three intervals) follow it.
    pub fn with_interval(interval: Duration) -> Self {
        DiscoveryConfig {
            interval,
            jitter: interval / 10,
            min_announce_gap: Duration::from_secs(1),
            stale_after: interval.saturating_mul(3),
            targets: Vec::new(),
            allowed_networks: Vec::new(),
            max_entries: 1024,
            max_foreign: 32,
            rate_burst: 10,
            rate_per_sec: 2,
            max_sources: 4096,
            redial_min: Duration::from_secs(10),
            redial_max: Duration::from_secs(300),
        }
    }

    /// Checks every value and parses `allowed_networks`.
    pub fn validate(&self) -> Result<NetworkFilter, DiscoveryError> {
        let invalid = |field, reason: &str| {
            Err(DiscoveryError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.interval < Duration::from_millis(10) {
            return invalid("interval", "must be at least 10ms");
        }
        if self.jitter >= self.interval {
            return invalid("jitter", "must be less than interval");
        }
        if self.stale_after <= self.interval + self.jitter {
            return invalid("stale_after", "must exceed interval + jitter");
        }
        if self.max_entries == 0 {
            return invalid("max_entries", "must be at least 1");
        }
        if self.max_foreign == 0 {
            return invalid("max_foreign", "must be at least 1");
        }
        if self.rate_burst == 0 || self.rate_per_sec == 0 {
            return invalid("rate_burst/rate_per_sec", "must be at least 1");
        }
        if self.max_sources == 0 {
            return invalid("max_sources", "must be at least 1");
        }
        if self.redial_min.is_zero() {
            return invalid("redial_min", "must be positive");
        }
        if self.redial_max < self.redial_min {
            return invalid("redial_max", "must not be below redial_min");
        }
        NetworkFilter::parse(&self.allowed_networks).map_err(DiscoveryError::from)
    }
}

// ----- the table -----

/// A peer heard on the LAN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DiscoveredPeer {
    pub node_id: String,
    /// Where it accepts connections: the datagram's source IP and announced port.
    pub addr: SocketAddr,
    /// Our repositories it serves, recognised by their tags: repository id to
    /// its heads digest, as last announced.
    pub repos: BTreeMap<String, String>,
    /// How many tags in its last announcement match none of our repositories:
    /// repositories we do not hold. Only counted; a tag is no repository id.
    pub unknown_repos: usize,
    /// The tags as last announced (tag to heads digest), to match again when our
    /// repositories change. Not shown: they mean nothing to the user.
    #[serde(skip)]
    tags: BTreeMap<String, String>,
    /// It serves more repositories than it could announce.
    pub truncated: bool,
    /// Its protocol version.
    pub version: u32,
    /// It serves a repository we serve.
    pub matching: bool,
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// Dials recorded with [`Discovery::mark_dialed`] since the last success.
    pub dial_attempts: u32,
    /// Not to be dialled again before this (`None`: never dialled, or connected
    /// since).
    pub next_dial: Option<Instant>,
    /// Whether the caller has been told this peer is a new match; a later
    /// announcement is then a refresh.
    #[serde(skip)]
    reported_matching: bool,
}

impl DiscoveredPeer {
    /// Matching and not in redial backoff.
    pub fn dial_due(&self, now: Instant) -> bool {
        self.matching && self.next_dial.is_none_or(|t| t <= now)
    }
}

/// What an accepted announcement means to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A peer serving one of our repositories, not reported before: a new entry,
    /// a known peer that started serving one, or one that moved to a new address.
    /// The node should dial it (if `dial_due` and it has room).
    NewMatching,
    /// A matching peer already reported announced again.
    Refreshed,
    /// A peer that serves none of our repositories (new or known).
    NonMatching,
}

/// The result of an accepted announcement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiscoveryOutcome {
    pub kind: OutcomeKind,
    pub node_id: String,
    /// Where to dial it.
    pub addr: SocketAddr,
    /// Repository ids both serve, in id order.
    pub shared: Vec<String>,
    /// Some shared repository's heads digest differs from ours: a sync would
    /// move something.
    pub heads_differ: bool,
    /// Matching and not in redial backoff (see [`Discovery::mark_dialed`]).
    pub dial_due: bool,
}

/// Counters for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DiscoveryStats {
    /// Datagrams handed out by `poll_datagram`.
    pub sent: u64,
    /// Announcement rounds (each sends one datagram per target).
    pub announcements: u64,
    /// Datagrams handed to `handle_datagram`.
    pub received: u64,
    /// Oversized, bad magic, bad JSON, or invalid fields.
    pub malformed: u64,
    /// Dropped by the per-source rate limit (or because too many sources are
    /// tracked).
    pub rate_limited: u64,
    /// From outside `allowed_networks`.
    pub not_allowed: u64,
    /// Accepted announcements from peers serving none of our repositories
    /// (no tag matched one of ours).
    pub foreign: u64,
    /// Our own announcements, heard back.
    pub own: u64,
    /// New peers refused because the table was full of matching peers.
    pub table_full: u64,
    /// Non-matching peers evicted to make room for a new one (the table is
    /// full, or `max_foreign` of them are known).
    pub evicted: u64,
    /// Peers removed after `stale_after` of silence.
    pub stale_removed: u64,
}

/// The discovery sub-machine. See the module documentation.
#[derive(Debug)]
pub struct Discovery {
    cfg: DiscoveryConfig,
    filter: NetworkFilter,
    node_id: String,
    tcp_port: u16,
    rng: Rng,
    /// Our repositories: id to heads digest.
    local: BTreeMap<String, String>,
    /// The tag key of each of them, to recognise them in announcements.
    keys: Vec<(String, RepoKey)>,
    table: BTreeMap<String, DiscoveredPeer>,
    /// `(matching, last_seen, node id)` for every entry: non-matching entries sort
    /// first, oldest first, which is eviction order; the oldest of each half gives
    /// the next expiry.
    index: BTreeSet<(bool, Instant, String)>,
    /// The per-source rate limit on what we hear.
    limiter: SourceLimiter,
    next_announce: Instant,
    last_announce: Option<Instant>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    stats: DiscoveryStats,
}

impl Discovery {
    /// A machine for node `node_id` (64 lowercase hex) accepting connections on
    /// `tcp_port` (0: not yet known, nothing is announced until
    /// [`set_tcp_port`](Self::set_tcp_port)). The first announcement is due at
    /// `now`; calling [`set_local`](Self::set_local) before the first
    /// `handle_timeout` puts the repositories in it.
    pub fn new(
        cfg: DiscoveryConfig,
        node_id: String,
        tcp_port: u16,
        rng: Rng,
        now: Instant,
    ) -> Result<Self, DiscoveryError> {
        let filter = cfg.validate()?;
        if !is_node_id(&node_id) {
            return Err(DiscoveryError::InvalidConfig {
                field: "node_id",
                reason: "must be 64 lowercase hex digits".into(),
            });
        }
        Ok(Discovery {
            cfg,
            filter,
            node_id,
            tcp_port,
            rng,
            local: BTreeMap::new(),
            keys: Vec::new(),
            table: BTreeMap::new(),
            index: BTreeSet::new(),
            limiter: SourceLimiter::default(),
            next_announce: now,
            last_announce: None,
            outbox: VecDeque::new(),
            stats: DiscoveryStats::default(),
        })
    }

    // ----- getters -----

    /// Our node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The configuration in force.
    pub fn config(&self) -> &DiscoveryConfig {
        &self.cfg
    }

    /// The parsed `allowed_networks`.
    pub fn filter(&self) -> &NetworkFilter {
        &self.filter
    }

    /// Counters since start.
    pub fn stats(&self) -> &DiscoveryStats {
        &self.stats
    }

    /// Every known peer, in node id order.
    pub fn peers(&self) -> impl Iterator<Item = &DiscoveredPeer> {
        self.table.values()
    }

    /// One peer, by node id.
    pub fn peer(&self, node_id: &str) -> Option<&DiscoveredPeer> {
        self.table.get(node_id)
    }

    /// Matching peers whose dial is due (never dialled, or backoff over), as
    /// `(node id, address)`, in node id order: for a node that could not dial when
    /// the outcome arrived (no room) and sweeps later. The caller still skips
    /// peers it is connected to.
    pub fn dial_candidates(&self, now: Instant) -> Vec<(String, SocketAddr)> {
        self.table
            .values()
            .filter(|p| p.dial_due(now))
            .map(|p| (p.node_id.clone(), p.addr))
            .collect()
    }

    // ----- outputs -----

    /// The next datagram to send, and where.
    pub fn poll_datagram(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let d = self.outbox.pop_front()?;
        self.stats.sent += 1;
        Some(d)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called: the
    /// next announcement or the next expiry, whichever is first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let announce = self.announcing().then_some(self.next_announce);
        let expiry = self.oldest_seen().map(|t| t + self.cfg.stale_after);
        match (announce, expiry) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        }
    }

    // ----- inputs -----

    /// Replaces our repositories: `(repository id, heads digest)` pairs (see
    /// [`heads_digest`]). If anything changed, an announcement is brought forward
    /// to now, or to `min_announce_gap` after the previous one, so peers learn of
    /// new seals quickly without a burst of seals becoming a burst of datagrams.
    ///
    /// Entries that cannot be announced (an id that is not 1 to [`MAX_REPO_ID`]
    /// printable ASCII bytes, a digest that is not 1 to 64 lowercase hex digits)
    /// are left out, since every receiver would refuse the whole datagram.
    pub fn set_local(&mut self, repos: Vec<(String, String)>, now: Instant) {
        let mut local = BTreeMap::new();
        for (id, digest) in repos {
            if is_repo_id(&id) && is_digest(&digest) {
                local.insert(id, digest);
            } else {
                tracing::warn!(repo = %id, %digest, "not announcing a repository with an invalid id or digest");
            }
        }
        if local == self.local {
            return;
        }
        self.keys = local
            .keys()
            .map(|id| (id.clone(), RepoKey::new(id)))
            .collect();
        self.local = local;
        self.rematch();
        self.announce_soon(now);
    }

    /// Sets the TCP port peers should dial (once the listener is bound); a change
    /// brings an announcement forward like [`set_local`](Self::set_local).
    pub fn set_tcp_port(&mut self, port: u16, now: Instant) {
        if port != self.tcp_port {
            self.tcp_port = port;
            self.announce_soon(now);
        }
    }

    /// Replaces the announcement targets (interfaces come and go); a change brings
    /// an announcement forward so new networks hear of us at once.
    pub fn set_targets(&mut self, targets: Vec<SocketAddr>, now: Instant) {
        if targets != self.cfg.targets {
            self.cfg.targets = targets;
            self.announce_soon(now);
        }
    }

    /// Replaces the configuration. Peers now outside `allowed_networks` are
    /// forgotten and the table is cut to `max_entries` (non-matching peers first,
    /// oldest first); the next announcement moves no later than one new interval.
    pub fn set_config(&mut self, cfg: DiscoveryConfig, now: Instant) -> Result<(), DiscoveryError> {
        self.filter = cfg.validate()?;
        let announce_by = now + cfg.interval;
        let targets_changed = cfg.targets != self.cfg.targets;
        self.cfg = cfg;
        let outside: Vec<String> = self
            .table
            .values()
            .filter(|p| !self.filter.allows(p.addr.ip()))
            .map(|p| p.node_id.clone())
            .collect();
        for id in outside {
            self.remove(&id);
        }
        self.trim_foreign(self.cfg.max_foreign, None);
        while self.table.len() > self.cfg.max_entries {
            let Some((_, _, id)) = self.index.first().cloned() else {
                break;
            };
            self.remove(&id);
            self.stats.evicted += 1;
        }
        self.next_announce = self.next_announce.min(announce_by);
        if targets_changed {
            self.announce_soon(now);
        }
        Ok(())
    }

    /// Forgets a peer (for instance when its address turned out to be ours, or the
    /// node learned better from a handshake).
    pub fn remove(&mut self, node_id: &str) -> Option<DiscoveredPeer> {
        let p = self.table.remove(node_id)?;
        self.index
            .remove(&(p.matching, p.last_seen, p.node_id.clone()));
        Some(p)
    }

    /// Records that the node dialled a peer: it is not due again for
    /// `redial_min`, doubling with each further attempt up to `redial_max` (plus
    /// up to a quarter of jitter), so a peer that refuses connections is not
    /// hammered every time it announces. Returns whether the peer is known.
    pub fn mark_dialed(&mut self, node_id: &str, now: Instant) -> bool {
        let Some(p) = self.table.get_mut(node_id) else {
            return false;
        };
        let base = self
            .cfg
            .redial_min
            .saturating_mul(1u32 << p.dial_attempts.min(16))
            .min(self.cfg.redial_max);
        let jitter = u64::try_from(base.as_micros() / 4).unwrap_or(u64::MAX);
        p.dial_attempts = p.dial_attempts.saturating_add(1);
        p.next_dial = Some(now + base + Duration::from_micros(self.rng.below(jitter)));
        true
    }

    /// Records that a connection to the peer succeeded: its backoff is reset, so
    /// after a later disconnect it is dialled again on its next announcement.
    pub fn mark_connected(&mut self, node_id: &str) {
        if let Some(p) = self.table.get_mut(node_id) {
            p.dial_attempts = 0;
            p.next_dial = None;
        }
    }

    /// A datagram arrived on the discovery socket from `from`.
    ///
    /// `Ok(None)` is our own announcement heard back; `Ok(Some(_))` an accepted
    /// announcement; every `Err` a dropped datagram (already counted). Checks run
    /// cheapest first, and the source filter and rate limit come before any
    /// parsing, so a flood costs little.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<Option<DiscoveryOutcome>, DiscoveryError> {
        self.stats.received += 1;
        let ip = from.ip().to_canonical();
        if !self.filter.allows(ip) {
            self.stats.not_allowed += 1;
            return Err(DiscoveryError::NotAllowed(ip));
        }
        if !self.limiter.take(now, ip, self.limits()) {
            self.stats.rate_limited += 1;
            return Err(DiscoveryError::RateLimited(ip));
        }
        let ann = match Announcement::decode(data) {
            Ok(a) => a,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        if ann.node_id == self.node_id {
            self.stats.own += 1;
            return Ok(None);
        }
        let addr = SocketAddr::new(ip, ann.port);
        let ours = self.recognise(&ann.node_id, &ann.repos);
        let unknown_repos = ann.repos.len() - ours.len();
        let shared: Vec<String> = ours.keys().cloned().collect();
        let matching = !shared.is_empty();
        let heads_differ = ours
            .iter()
            .any(|(id, digest)| Some(digest) != self.local.get(id));

        let kind = if let Some(p) = self.table.get_mut(&ann.node_id) {
            self.index
                .remove(&(p.matching, p.last_seen, p.node_id.clone()));
            let moved = p.addr != addr;
            let kind = match (matching, p.reported_matching && !moved) {
                (false, _) => OutcomeKind::NonMatching,
                (true, false) => OutcomeKind::NewMatching,
                (true, true) => OutcomeKind::Refreshed,
            };
            p.addr = addr;
            p.repos = ours;
            p.unknown_repos = unknown_repos;
            p.tags = ann.repos;
            p.truncated = ann.truncated;
            p.version = ann.version;
            p.matching = matching;
            p.reported_matching = matching;
            p.last_seen = now;
            self.index.insert((matching, now, p.node_id.clone()));
            if !matching {
                // A known peer that stopped matching: a stranger now, and
                // strangers keep within their bound (others make room).
                self.trim_foreign(self.cfg.max_foreign, Some(&ann.node_id));
            }
            kind
        } else {
            if !matching {
                // Room for a stranger is made among strangers only, so a flood of
                // made-up ids keeps at most `max_foreign` entries.
                self.trim_foreign(self.cfg.max_foreign.saturating_sub(1), None);
            }
            if self.table.len() >= self.cfg.max_entries && !self.evict_one() {
                self.stats.table_full += 1;
                return Err(DiscoveryError::TableFull(self.table.len()));
            }
            tracing::debug!(node = %short(&ann.node_id), %addr, matching, "discovered a peer");
            let p = DiscoveredPeer {
                node_id: ann.node_id.clone(),
                addr,
                repos: ours,
                unknown_repos,
                tags: ann.repos,
                truncated: ann.truncated,
                version: ann.version,
                matching,
                first_seen: now,
                last_seen: now,
                dial_attempts: 0,
                next_dial: None,
                reported_matching: matching,
            };
            self.index.insert((matching, now, p.node_id.clone()));
            self.table.insert(p.node_id.clone(), p);
            if matching {
                OutcomeKind::NewMatching
            } else {
                OutcomeKind::NonMatching
            }
        };
        if !matching {
            self.stats.foreign += 1;
        }
        let dial_due = self
            .table
            .get(&ann.node_id)
            .is_some_and(|p| p.dial_due(now));
        Ok(Some(DiscoveryOutcome {
            kind,
            node_id: ann.node_id,
            addr,
            shared,
            heads_differ,
            dial_due,
        }))
    }

    /// Announces if due and removes peers silent for `stale_after`. Calling it
    /// early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(key) = self.oldest_key() {
            if now.saturating_since(key.1) < self.cfg.stale_after {
                break;
            }
            tracing::debug!(node = %short(&key.2), "discovered peer went stale");
            self.remove(&key.2);
            self.stats.stale_removed += 1;
        }
        if self.announcing() && now >= self.next_announce {
            self.announce(now);
        }
        // Idle buckets are full ones, the same as absent: dropping them keeps the
        // map as small as the current traffic.
        self.limiter.prune_every(now, self.cfg.interval);
    }

    // ----- internals -----

    /// Whether announcements are being made at all.
    fn announcing(&self) -> bool {
        self.tcp_port != 0 && !self.cfg.targets.is_empty()
    }

    fn announce(&mut self, now: Instant) {
        let bytes = Announcement::new(&self.node_id, self.tcp_port, &self.local).encode();
        // A newer announcement supersedes any the shell has not sent yet, so an
        // undrained outbox never grows.
        self.outbox.clear();
        for t in &self.cfg.targets {
            self.outbox.push_back((*t, bytes.clone()));
        }
        self.stats.announcements += 1;
        self.last_announce = Some(now);
        let jitter = u64::try_from(self.cfg.jitter.as_micros()).unwrap_or(u64::MAX / 4);
        let delay = self.cfg.interval.saturating_sub(self.cfg.jitter)
            + Duration::from_micros(self.rng.below(jitter.saturating_mul(2).saturating_add(1)));
        self.next_announce = now + delay.max(self.cfg.min_announce_gap);
    }

    /// Brings the next announcement forward to the earliest moment the gap allows.
    fn announce_soon(&mut self, now: Instant) {
        let earliest = match self.last_announce {
            Some(t) => (t + self.cfg.min_announce_gap).max(now),
            None => now,
        };
        self.next_announce = self.next_announce.min(earliest);
    }

    /// Our repositories among `tags` announced by `node_id`: repository id to
    /// the heads digest announced for it. One keyed hash per repository of ours,
    /// whatever the announcement holds.
    fn recognise(
        &self,
        node_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        if tags.is_empty() {
            return BTreeMap::new();
        }
        self.keys
            .iter()
            .filter_map(|(id, key)| Some((id.clone(), tags.get(&key.tag(node_id))?.clone())))
            .collect()
    }

    /// Entries for peers that serve none of our repositories.
    fn foreign_count(&self) -> usize {
        self.index.iter().take_while(|k| !k.0).count()
    }

    /// Evicts the oldest entries of peers that serve none of our repositories,
    /// never `keep`, until at most `limit` remain.
    fn trim_foreign(&mut self, limit: usize, keep: Option<&str>) {
        while self.foreign_count() > limit {
            let Some(id) = self
                .index
                .iter()
                .take_while(|k| !k.0)
                .map(|k| &k.2)
                .find(|id| Some(id.as_str()) != keep)
                .cloned()
            else {
                break;
            };
            self.remove(&id);
            self.stats.evicted += 1;
        }
    }

    /// Recomputes `matching` after our repositories changed. A peer that becomes
    /// matching is reported as new on its next announcement.
    fn rematch(&mut self) {
        self.index.clear();
        let ids: Vec<String> = self.table.keys().cloned().collect();
        for node in ids {
            let ours = match self.table.get(&node) {
                Some(p) => self.recognise(&p.node_id, &p.tags),
                None => continue,
            };
            let Some(p) = self.table.get_mut(&node) else {
                continue;
            };
            p.unknown_repos = p.tags.len() - ours.len();
            p.repos = ours;
            p.matching = !p.repos.is_empty();
            if !p.matching {
                p.reported_matching = false;
            }
            self.index
                .insert((p.matching, p.last_seen, p.node_id.clone()));
        }
        self.trim_foreign(self.cfg.max_foreign, None);
    }

    /// Evicts the oldest non-matching peer; false if every peer matches.
    fn evict_one(&mut self) -> bool {
        match self.index.first() {
            Some((false, _, id)) => {
                let id = id.clone();
                self.remove(&id);
                self.stats.evicted += 1;
                true
            }
            _ => false,
        }
    }

    /// The index key of the least recently heard peer.
    fn oldest_key(&self) -> Option<(bool, Instant, String)> {
        let non_matching = self.index.first().filter(|k| !k.0);
        let matching = self
            .index
            .range((true, Instant::ZERO, String::new())..)
            .next();
        match (non_matching, matching) {
            (Some(a), Some(b)) => Some(if a.1 <= b.1 { a } else { b }.clone()),
            (a, b) => a.or(b).cloned(),
        }
    }

    fn oldest_seen(&self) -> Option<Instant> {
        self.oldest_key().map(|k| k.1)
    }

    /// The rate limit as configured now.
    fn limits(&self) -> Limits {
        Limits {
            burst: self.cfg.rate_burst,
            per_sec: self.cfg.rate_per_sec,
            max_sources: self.cfg.max_sources,
        }
    }
}

use crate::node_id::short;
