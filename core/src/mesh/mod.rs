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
//!
//! # Pieces
//!
//! [`Mesh`] coordinates small parts, each a type with its own tests: our own
//! advertisement and when it may go out (`own`), the database of everyone
//! else's (`lsdb`), summaries exchanged with new neighbours (`summary`), the
//! usable graph (`graph`), route tables and their cache (`routes`), and the
//! human view (`topology`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::repo_id::MAX_REPO_ID;
use crate::time::Instant;

mod config;
mod graph;
mod lsa;
mod lsdb;
mod own;
mod routes;
pub mod sign;
mod summary;
mod topology;

pub use config::MeshConfig;
pub use lsa::{LinkInfo, Lsa};
pub use summary::{DatabaseSummary, SummaryEntry};
pub use topology::{Topology, TopologyEdge, TopologyNode};

use graph::Graph;
use lsa::{clip, is_node_id, short};
use lsdb::{Database, Entry};
use own::{LinkChange, Own, clean_links};
use routes::{Alt, RouteCache, RouteTable};
use summary::Theirs;
use topology::Advertised;

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

// ----- the machine -----

/// The link-state routing sub-machine. See the module documentation.
#[derive(Debug)]
pub struct Mesh {
    cfg: MeshConfig,
    /// What we advertise about ourselves, and when.
    own: Own,
    /// Other nodes' advertisements. Never holds our own.
    db: Database,
    /// Routes computed from `own` and `db`, dropped whenever either changes.
    routes: RouteCache,
    stats: MeshStats,
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
            own: Own::new(me, repos, now + cfg.announce_interval),
            cfg,
            db: Database::default(),
            routes: RouteCache::default(),
            stats: MeshStats::default(),
        }
    }

    /// Signs our advertisements with `keypair`, whose public half is our id,
    /// and refuses received ones that their origin did not sign as they are.
    /// A node's mesh is always signed; bare machines serve routing tests.
    pub fn signed(mut self, keypair: &crate::noise::Keypair) -> Self {
        if data_encoding::HEXLOWER.encode(&keypair.public) != self.own.me {
            tracing::warn!(node = %clip(&self.own.me), "mesh signing key is not this node's id; neighbours will refuse its advertisements");
        }
        self.own.sign_with(sign::Signer::new(&keypair.private));
        self
    }

    // ----- getters -----

    /// Our node id.
    pub fn me(&self) -> &str {
        &self.own.me
    }

    /// The configuration in effect (after clamping).
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// Takes a new configuration (clamped like [`Mesh::new`]'s). The
    /// database and routes stay; the next regular advertisement and every
    /// expiry follow the new intervals from here on.
    pub fn set_config(&mut self, cfg: MeshConfig) {
        self.cfg = cfg.clamped();
    }

    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    /// Our current advertisement, as it would be flooded now.
    pub fn own_lsa(&self) -> Lsa {
        self.own.lsa(self.cfg.max_hops)
    }

    /// Every advertisement held, ours first, as they would be flooded onward:
    /// for a neighbour that just connected, so it learns the whole mesh at
    /// once instead of over the next announce interval. It also heals a
    /// restart: a node that comes back with a lower sequence number hears its
    /// old advertisement this way and outbids it (see
    /// [`handle_lsa`](Self::handle_lsa)).
    pub fn database(&self) -> Vec<Lsa> {
        let mut out = vec![self.own_lsa()];
        out.extend(self.db.iter().map(|(origin, e)| e.to_lsa(origin)));
        out
    }

    /// What we hold, ours first, for a neighbour that just connected (see
    /// [`DatabaseSummary`]).
    pub fn summary(&self) -> DatabaseSummary {
        let mut entries = vec![SummaryEntry {
            origin: self.own.me.clone(),
            seq: self.own.seq,
            digest: self.own.digest(),
        }];
        entries.extend(self.db.iter().map(|(origin, e)| SummaryEntry {
            origin: origin.clone(),
            seq: e.seq,
            digest: e.digest(),
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
        let theirs = Theirs::read(summary, max).inspect_err(|_| self.stats.malformed += 1)?;
        let mine = self.own.digest();
        if let Some(seq) = theirs.newer(&self.own.me, self.own.seq, mine) {
            tracing::debug!(from = %short(from), seq, ours = self.own.seq, "neighbour holds our advertisement from a previous life");
            self.own.outbid(seq, now);
        }
        Ok(self
            .database()
            .into_iter()
            .filter(|lsa| {
                let digest = if lsa.origin == self.own.me {
                    mine
                } else {
                    self.db.get(&lsa.origin).map_or(0, Entry::digest)
                };
                theirs.lack(&lsa.origin, lsa.seq, digest)
            })
            .collect())
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
        let new = clean_links(links, &self.own.me, self.cfg.max_links_per_node);
        // Our own routes use the new links at once; the advertisement waits
        // out the gap, so a burst of changes (start-up, a heal) floods once.
        let gap = match self.own.change(&new) {
            LinkChange::None => return None,
            LinkChange::Rtt => self.cfg.rtt_announce_gap,
            LinkChange::Peers => self.cfg.link_announce_gap,
        };
        self.own.set_links(new);
        self.routes.invalidate();
        self.own.may_announce(gap, now).then(|| self.originate(now))
    }

    /// The repositories we serve changed. Returns our new advertisement to
    /// flood if the set differs.
    pub fn set_repos(&mut self, repos: Vec<String>, now: Instant) -> Option<Lsa> {
        self.own.set_repos(repos).then(|| self.originate(now))
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

        if lsa.origin == self.own.me {
            self.stats.own += 1;
            let differs = links != self.own.links || repos != self.own.repos;
            if lsa.seq > self.own.seq || (lsa.seq == self.own.seq && differs) {
                self.authentic(from, &lsa)?;
                tracing::debug!(
                    from = %short(from),
                    seq = lsa.seq,
                    ours = self.own.seq,
                    "our own advertisement from a previous life; outbidding it"
                );
                self.own.outbid(lsa.seq, now);
            }
            return Ok(None);
        }

        let hops = lsa.hops_left.min(self.cfg.max_hops);
        if self.db.get(&lsa.origin).is_none_or(|e| lsa.seq > e.seq) {
            self.authentic(from, &lsa)?;
        }
        match self.db.get_mut(&lsa.origin) {
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
            Some(_) => {}
            None => {
                if self.db.len() >= self.cfg.max_nodes {
                    self.stats.table_full += 1;
                    tracing::debug!(origin = %short(&lsa.origin), "mesh database full; advertisement dropped");
                    return Ok(None);
                }
                tracing::debug!(origin = %short(&lsa.origin), from = %short(from), "new node in the mesh");
            }
        }
        let entry = Entry::new(lsa.seq, links, repos, hops, now, lsa.sig.clone());
        self.db.store(lsa.origin.clone(), entry);
        self.routes.invalidate();
        Ok(self.onward(lsa, hops))
    }

    /// Re-advertises when due, drops advertisements older than `max_age`, and
    /// drops the route cache once it is older than `route_ttl`. Returns our
    /// advertisement to flood to every neighbour when one is due. Calling it
    /// early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Lsa> {
        while let Some(origin) = self.db.pop_expired(now, self.cfg.max_age) {
            tracing::debug!(origin = %short(&origin), "mesh advertisement aged out");
            self.stats.aged_out += 1;
            self.routes.invalidate();
        }
        self.routes.expire(now, self.cfg.route_ttl);
        (now >= self.own.next_announce).then(|| self.originate(now))
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work: the next
    /// advertisement or the next expiry. (The route cache's age needs no wake-up;
    /// lookups check it.)
    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.own.next_announce;
        let expiry = self.db.next_expiry(self.cfg.max_age);
        Some(expiry.map_or(next, |e| e.min(next)))
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
        if dst == self.own.me {
            return Some((vec![self.own.me.clone()], 0));
        }
        self.refresh(now);
        let t = self.routes.full()?;
        let v = t.index(dst)?;
        let alt = t.best(v)?;
        Some((t.path(v, alt)?, alt.cost))
    }

    /// How many nodes we can route to.
    pub fn routing_table_size(&mut self, now: Instant) -> usize {
        self.refresh(now);
        self.routes.full().map_or(0, RouteTable::reachable)
    }

    /// Nodes that serve `repo` and are reachable over usable links within
    /// `max_hops` (for opening sessions over relays), with the fewest links
    /// between us, nearest first, then by id. Not ourselves.
    pub fn nodes_serving(&self, repo: &str) -> Vec<(String, usize)> {
        let hops = graph::hop_counts(&self.own.me, self.cfg.max_hops, |id| self.links_of(id));
        let mut out: Vec<(String, usize)> = hops
            .into_iter()
            .filter(|(id, _)| self.db.get(id).is_some_and(|e| e.serves(repo)))
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
        if let Some(v) = self.routes.cut_off(repo) {
            return v.to_vec();
        }
        // Holders without any usable link are not in the graph's adjacency
        // but are in its keys (every advertiser is); listed ones we only heard
        // of as someone's peer have no repositories known, so they are not
        // holders.
        let out = self
            .build_graph(&[])
            .unreached(|id| self.db.get(id).is_some_and(|e| e.serves(repo)));
        self.routes.set_cut_off(repo, out.clone());
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

    /// Every node heard of, whether it advertised itself or was only listed as
    /// someone's peer (dial candidates when healing a split), in id order. Not
    /// ourselves.
    pub fn known_nodes(&self) -> Vec<String> {
        let mut all: BTreeSet<&str> = BTreeSet::new();
        all.extend(self.own.links.keys().map(String::as_str));
        for (origin, e) in self.db.iter() {
            all.insert(origin);
            all.extend(e.links.keys().map(String::as_str));
        }
        all.remove(self.own.me.as_str());
        all.into_iter().map(str::to_owned).collect()
    }

    /// The whole graph as advertised, one-sided links included (marked), for
    /// `topology --json`.
    pub fn graph(&self) -> Topology {
        let me = Advertised {
            id: &self.own.me,
            seq: self.own.seq,
            links: &self.own.links,
            repos: &self.own.repos,
            last_seen: self.own.last_announce,
        };
        let others = self.db.iter().map(|(origin, e)| Advertised {
            id: origin,
            seq: e.seq,
            links: &e.links,
            repos: &e.repos,
            last_seen: Some(e.received),
        });
        Topology::build(me, others)
    }

    /// The graph in Graphviz DOT (`topology --dot`; render with `dot -Tsvg`).
    /// Nodes are labelled with the first 12 digits of their id and their
    /// repositories; we are drawn bold; one-sided links dashed. One line per
    /// node and per edge.
    pub fn to_dot(&self) -> String {
        self.graph().dot()
    }

    // ----- internals -----

    /// A new advertisement of ours, counted.
    fn originate(&mut self, now: Instant) -> Lsa {
        self.stats.announcements += 1;
        self.own
            .originate(now, self.cfg.announce_interval, self.cfg.max_hops)
    }

    /// Refuses `lsa` unless its origin signed it as it is; a bare machine
    /// takes everything.
    fn authentic(&mut self, from: &str, lsa: &Lsa) -> Result<(), MeshError> {
        if !self.own.signs() {
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

    /// A node's advertised links: ours, or as its advertisement lists them.
    fn links_of(&self, id: &str) -> Option<&BTreeMap<String, u64>> {
        if id == self.own.me {
            Some(&self.own.links)
        } else {
            self.db.get(id).map(|e| &e.links)
        }
    }

    /// Both ends advertise the link `a`–`b`.
    fn usable_link(&self, a: &str, b: &str) -> bool {
        match (self.links_of(a), self.links_of(b)) {
            (Some(la), Some(lb)) => la.contains_key(b) && lb.contains_key(a),
            _ => false,
        }
    }

    /// Makes the full-graph route table current.
    fn refresh(&mut self, now: Instant) {
        self.routes.expire(now, self.cfg.route_ttl);
        if self.routes.full().is_none() {
            let t = self.compute(&[], now);
            self.routes.set_full(t);
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
        if dst == self.own.me {
            return None;
        }
        self.refresh(now);
        // Only nodes that could be on a path matter; the rest would only
        // multiply cached tables.
        let banned: Vec<String> = exclude
            .iter()
            .filter(|id| id.as_str() != dst && self.db.contains(id))
            .cloned()
            .collect();
        if !banned.is_empty() && !self.routes.has_excluded(&banned) {
            let t = self.compute(&banned, now);
            self.routes.add_excluded(banned.clone(), t);
        }
        self.routes.pick(&banned, dst, session)
    }

    /// The usable graph without the `banned` nodes (sorted).
    fn build_graph(&self, banned: &[String]) -> Graph<'_> {
        let me = (
            self.own.me.as_str(),
            &self.own.links,
            self.own.link_keys.as_slice(),
        );
        let others = self
            .db
            .iter()
            .map(|(id, e)| (id.as_str(), &e.links, e.link_keys.as_slice()));
        Graph::build(me, others, banned)
    }

    /// Routes over the graph without `banned`, counted.
    fn compute(&mut self, banned: &[String], now: Instant) -> RouteTable {
        self.stats.route_computations += 1;
        RouteTable::compute(&self.build_graph(banned), self.cfg.max_hops, now)
    }
}
