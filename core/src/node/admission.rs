//! Admission: strangers cannot crowd out or exhaust the node.
//!
//! A connection that has not been accepted as a peer yet (inbound and still
//! in `Handshaking`, `Admission` or `Refusing`) lives in a small bounded
//! [`Pool`], the way OpenSSH's `MaxStartups` bounds unauthenticated
//! sessions, and never holds one of the `max_peers` slots. The slots belong
//! to authenticated, admitted peers only (`AwaitHello`, `Ready`).
//!
//! # The pool
//!
//! [`Pool::enter`] decides for each new inbound connection, from its source
//! address and the pool's fill:
//!
//! - a source already holding [`PoolLimits::per_source`] connections is refused;
//! - below [`PoolLimits::start`] members, everyone gets in;
//! - from `start` to [`PoolLimits::full`], a newcomer is dropped with a
//!   probability rising linearly from [`PoolLimits::rate`] percent to 100 %
//!   (random early drop, drawn from the node's seeded [`Rng`]); at `full`
//!   every newcomer would be dropped;
//! - a newcomer that would be dropped takes the place of the oldest member of
//!   the most represented source instead, when that source holds more
//!   members than the newcomer's own. So a flood from some addresses, however
//!   wide, cannot keep a peer from another address out: its handshake gets a
//!   slot at once, and only a connection from a source at least as
//!   represented as its own can push it out before it finishes.
//!
//! A member leaves the pool when it is admitted (and then takes a peer slot)
//! or when it closes. Members also have a short deadline
//! ([`inbound_deadline`]): an unauthenticated inbound connection gets at most
//! [`INBOUND_HANDSHAKE`], even if `handshake_timeout` is longer.
//!
//! Frames are bounded too: until a connection is admitted, its frame decoder
//! refuses frames over [`PRE_ADMISSION_FRAME`] (the `redeem` message is tiny;
//! the `handshake` message, which can list many timelines, arrives only after
//! admission, when the limit is raised to `max_message_size`).

use super::CloseReason;
use core::net::{IpAddr, SocketAddr};
use std::collections::BTreeMap;
use std::time::Duration;

use super::admit::Joining;
use super::budget::Budget;
use super::conn::{Conn, ConnState, Direction};
use super::{ConnId, Node};
use crate::discovery::NetworkFilter;
use crate::rate::{Limits, SourceLimiter};
use crate::rng::Rng;
use crate::time::Instant;
use crate::trust::Trust;
use crate::wire::{self, Message};

/// Largest frame accepted from a connection that is not admitted yet.
pub const PRE_ADMISSION_FRAME: u32 = 16 * 1024;
/// Longest an unauthenticated inbound connection may take to be admitted
/// (shorter if `handshake_timeout` is).
pub const INBOUND_HANDSHAKE: Duration = Duration::from_secs(5);
/// Most outbound connections not yet admitted (dialling or handshaking) at once.
pub const MAX_PENDING_DIALS: usize = 16;

/// The pool's bounds: `start:rate:full` as in OpenSSH's `MaxStartups`, and a
/// per-source cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Members before random early drop starts.
    pub start: usize,
    /// Drop probability (percent) when `start` is reached.
    pub rate: u32,
    /// Members at which every newcomer is dropped (or evicts, see the module doc).
    pub full: usize,
    /// Most members from one source address.
    pub per_source: usize,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            start: 10,
            rate: 30,
            full: 100,
            per_source: 10,
        }
    }
}

/// Why a newcomer was not let into the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its source already holds `per_source` members.
    PerSource,
    /// Random early drop (the pool is between `start` and `full`).
    EarlyDrop,
    /// The pool is full and no source is more represented than the newcomer's.
    Full,
}

impl Refusal {
    pub fn text(self) -> &'static str {
        match self {
            Refusal::PerSource => "too many unauthenticated connections from this address",
            Refusal::EarlyDrop => "unauthenticated pool filling: random early drop",
            Refusal::Full => "unauthenticated pool full",
        }
    }
}

/// What [`Pool::enter`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The newcomer is a member.
    Admitted,
    /// The newcomer is a member in place of this connection, which the
    /// caller closes.
    Evicted(ConnId),
    /// The newcomer is not let in; the caller closes its socket.
    Refused(Refusal),
}

/// The unauthenticated connections: who, from where, since when.
pub struct Pool {
    limits: PoolLimits,
    rng: Rng,
    /// Members and their source, in arrival order (ids only grow).
    members: BTreeMap<ConnId, IpAddr>,
    per_source: BTreeMap<IpAddr, usize>,
}

impl Pool {
    pub fn new(limits: PoolLimits, rng: Rng) -> Pool {
        Pool {
            limits,
            rng,
            members: BTreeMap::new(),
            per_source: BTreeMap::new(),
        }
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    #[cfg(test)]
    pub fn contains(&self, conn: ConnId) -> bool {
        self.members.contains_key(&conn)
    }

    /// Members from `ip`.
    pub fn members_from(&self, ip: IpAddr) -> usize {
        self.per_source.get(&ip).copied().unwrap_or(0)
    }

    /// Decides whether `conn` (new, from `ip`) may wait in the pool.
    pub fn enter(&mut self, conn: ConnId, ip: IpAddr) -> Entry {
        let own = self.members_from(ip);
        if own >= self.limits.per_source {
            return Entry::Refused(Refusal::PerSource);
        }
        let n = self.members.len();
        let drop = if n < self.limits.start {
            None
        } else if n >= self.limits.full {
            Some(Refusal::Full)
        } else {
            let span = (self.limits.full - self.limits.start) as u64;
            let over = (n - self.limits.start) as u64;
            let rate = u64::from(self.limits.rate.min(100));
            let percent = rate + (100 - rate) * over / span.max(1);
            (self.rng.below(100) < percent).then_some(Refusal::EarlyDrop)
        };
        let Some(refusal) = drop else {
            self.insert(conn, ip);
            return Entry::Admitted;
        };
        match self.heaviest() {
            Some((victim, count)) if count > own => {
                self.leave(victim);
                self.insert(conn, ip);
                Entry::Evicted(victim)
            }
            _ => Entry::Refused(refusal),
        }
    }

    /// `conn` is no longer unauthenticated (admitted or closed). Harmless
    /// for a connection that is not a member.
    pub fn leave(&mut self, conn: ConnId) {
        let Some(ip) = self.members.remove(&conn) else {
            return;
        };
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
    }

    fn insert(&mut self, conn: ConnId, ip: IpAddr) {
        self.members.insert(conn, ip);
        *self.per_source.entry(ip).or_insert(0) += 1;
    }

    /// The oldest member among the most represented sources, and their count.
    /// (Oldest, not lowest address: an address never makes its connections
    /// the first to go.)
    fn heaviest(&self) -> Option<(ConnId, usize)> {
        let count = self.per_source.values().copied().max()?;
        let oldest = self
            .members
            .iter()
            .find(|(_, src)| self.members_from(**src) == count)
            .map(|(c, _)| *c)?;
        Some((oldest, count))
    }
}

/// When an unauthenticated connection opened at `opened` is closed unless
/// admitted: `handshake_timeout`, but at most [`INBOUND_HANDSHAKE`] for an
/// inbound one.
pub fn deadline(opened: Instant, handshake_timeout: Duration, inbound_unauth: bool) -> Instant {
    if inbound_unauth {
        opened + handshake_timeout.min(INBOUND_HANDSHAKE)
    } else {
        opened + handshake_timeout
    }
}

/// Counters for `status` (`stats.admission`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AdmissionStats {
    /// Inbound connections refused by the pool (per source, early drop, full).
    pub pool_refused: u64,
    /// Pool members closed to make room for a less represented source.
    pub pool_evicted: u64,
    /// Admitted peers closed because `max_peers` peers were connected.
    pub peer_slots_full: u64,
    /// Unadmitted connections closed because the frame budget was spent.
    pub budget_closed: u64,
    /// Times an admitted peer was paused because the frame budget was spent.
    pub budget_paused: u64,
}

/// When `c` is closed unless it gets further: see [`deadline`].
pub(super) fn conn_deadline(c: &Conn, handshake_timeout: Duration) -> Instant {
    let unauth = c.direction == Direction::Inbound
        && matches!(
            c.state(),
            ConnState::Handshaking | ConnState::Admission | ConnState::Refusing
        );
    deadline(c.opened, handshake_timeout, unauth)
}

/// Everything that decides who gets in, grouped: the network filter, the
/// per-source accept allowance, the unauthenticated pool, the frame memory
/// budget, trust and an invitation being redeemed.
pub(super) struct Admission {
    pub filter: NetworkFilter,
    /// Each source's allowance of inbound connections (see
    /// [`Admission::accept`]).
    accepts: SourceLimiter,
    /// Unauthenticated inbound connections.
    pub pool: Pool,
    /// Memory for peers' partly received frames.
    pub budget: Budget,
    /// Who is admitted, open invitations, refused keys.
    pub trust: Trust,
    /// An invitation being redeemed on our side (`Command::Join`).
    pub joining: Option<Joining>,
}

impl Admission {
    pub fn new(trust: Trust, rng: Rng) -> Admission {
        Admission {
            filter: NetworkFilter::default(),
            accepts: SourceLimiter::default(),
            pool: Pool::new(PoolLimits::default(), rng),
            budget: Budget::new(super::budget::DEFAULT_LIMIT),
            trust,
            joining: None,
        }
    }

    /// Takes one connection from the allowance of `ip`'s source (an IPv4
    /// address or an IPv6 /64: a token bucket of `burst`, refilled at
    /// `per_sec`), if it has one left.
    pub fn accept(&mut self, now: Instant, ip: IpAddr, burst: u32, per_sec: u32) -> bool {
        /// Sources tracked at once; beyond it, new ones are refused until
        /// idle ones have refilled and are forgotten.
        const MAX_TRACKED: usize = 4096;
        let limits = Limits {
            burst,
            per_sec,
            max_sources: MAX_TRACKED,
        };
        self.accepts.take(now, ip, limits)
    }
}

impl Node {
    /// Accepts an inbound connection from `addr` if the network filter, the
    /// per-source accept rate and the pool let it in; returns its new id.
    pub(super) fn admit_inbound(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        if !self.admission.filter.allows(addr.ip()) {
            tracing::info!(%addr, "refusing inbound connection from outside allowed_networks");
            return None;
        }
        let (burst, rate) = (
            self.cfg.connections.accept_burst,
            self.cfg.connections.accept_rate_per_sec,
        );
        if !self.admission.accept(now, addr.ip(), burst, rate) {
            self.out.stats.accepts_rate_limited += 1;
            tracing::info!(%addr, "refusing inbound connection: per-source rate limit");
            return None;
        }
        let id = self.alloc_conn();
        match self.admission.pool.enter(id, addr.ip()) {
            Entry::Admitted => {}
            Entry::Evicted(victim) => {
                self.out.stats.admission.pool_evicted += 1;
                self.close(victim, CloseReason::PoolEvicted);
            }
            Entry::Refused(r) => {
                self.out.stats.admission.pool_refused += 1;
                tracing::debug!(%addr, reason = r.text(), "refusing inbound connection");
                return None;
            }
        }
        Some(id)
    }

    /// The peer on `conn` was just admitted (trusted, or it redeemed an
    /// invitation): it leaves the pool, takes a peer slot and may send full
    /// size frames. Returns `false` (and refuses it with the reason) when
    /// `max_peers` admitted peers are already connected.
    pub(super) fn take_peer_slot(&mut self, now: Instant, conn: ConnId) -> bool {
        self.admission.pool.leave(conn);
        let max = self.cfg.connections.max_peers;
        let used = self.peer_slots_used();
        let frame = self.frame_limits().frame;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if used <= max {
            c.frames.set_max(frame);
            return true;
        }
        self.out.stats.admission.peer_slots_full += 1;
        let reason = format!("no peer slot: {max} peers are connected (max_peers)");
        tracing::info!(conn, peer = c.peer().map(|p| p.short()), %reason, "closing admitted peer");
        if c.route.is_some() {
            self.close(conn, CloseReason::NoPeerSlot { max });
            return false;
        }
        // Tell the peer why, then close once that is out (as a refusal).
        c.set_state(ConnState::Refusing);
        c.refusing = Some(reason.clone());
        self.send(now, conn, Message::Refused(wire::Refused { reason }));
        false
    }

    /// Peer slots in use: admitted peers (`AwaitHello`, `Ready`).
    pub(super) fn peer_slots_used(&self) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c.state(), ConnState::AwaitHello | ConnState::Ready))
            .count()
    }

    /// Outbound connections not admitted yet (dialling or handshaking).
    pub(super) fn pending_dials(&self) -> usize {
        self.conns
            .values()
            .filter(|c| c.direction == Direction::Outbound && c.route.is_none())
            .filter(|c| {
                matches!(
                    c.state(),
                    ConnState::Dialing
                        | ConnState::Handshaking
                        | ConnState::Admission
                        | ConnState::Refusing
                )
            })
            .count()
    }

    /// Unauthenticated inbound connections waiting in the pool.
    pub fn admission_pool_len(&self) -> usize {
        self.admission.pool.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    fn pool(limits: PoolLimits) -> Pool {
        Pool::new(limits, Rng::from_u64(1))
    }

    #[test]
    fn the_accept_allowance_is_per_address_and_refills() {
        let cfg = crate::config::NodeConfig::default();
        let trust = Trust::new(cfg.access.open, &cfg.access.trusted_peers);
        let mut a = Admission::new(trust, Rng::from_seed([0; 32]));
        let t0 = Instant::ZERO;
        assert!(a.accept(t0, ip(1), 2, 1));
        assert!(a.accept(t0, ip(1), 2, 1));
        assert!(!a.accept(t0, ip(1), 2, 1));
        assert!(a.accept(t0, ip(2), 2, 1));
        let later = Instant::from_micros(1_000_000);
        assert!(a.accept(later, ip(1), 2, 1));
        assert!(!a.accept(later, ip(1), 2, 1));
    }

    #[test]
    fn two_addresses_in_one_ipv6_slash_64_share_an_allowance() {
        let cfg = crate::config::NodeConfig::default();
        let trust = Trust::new(cfg.access.open, &cfg.access.trusted_peers);
        let mut a = Admission::new(trust, Rng::from_seed([0; 32]));
        let t0 = Instant::ZERO;
        let v6 = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert!(a.accept(t0, v6("2001:db8:1:2::1"), 2, 1));
        assert!(a.accept(t0, v6("2001:db8:1:2:ffff::7"), 2, 1));
        assert!(
            !a.accept(t0, v6("2001:db8:1:2::3"), 2, 1),
            "a host choosing a fresh address in its /64 gets no more"
        );
        assert!(
            a.accept(t0, v6("2001:db8:1:3::1"), 2, 1),
            "the next /64 is another source"
        );
    }

    #[test]
    fn per_source_cap_refuses_one_address_but_not_another() {
        let mut p = pool(PoolLimits {
            per_source: 3,
            ..PoolLimits::default()
        });
        for c in 0..3 {
            assert_eq!(p.enter(c, ip(5)), Entry::Admitted);
        }
        assert_eq!(p.enter(3, ip(5)), Entry::Refused(Refusal::PerSource));
        assert_eq!(p.enter(4, ip(6)), Entry::Admitted);
        p.leave(0);
        assert_eq!(p.enter(5, ip(5)), Entry::Admitted, "a slot freed");
        assert_eq!(p.members_from(ip(5)), 3);
    }

    #[test]
    fn below_start_everyone_gets_in() {
        let mut p = pool(PoolLimits::default());
        for c in 0..10 {
            assert_eq!(p.enter(c, ip(c as u8)), Entry::Admitted);
        }
        assert_eq!(p.len(), 10);
    }

    #[test]
    fn early_drop_grows_with_fill_and_is_deterministic() {
        // One source, allowed many members: nobody is more represented than
        // the newcomer's own source, so drops are real drops.
        let limits = PoolLimits {
            start: 10,
            rate: 30,
            full: 100,
            per_source: 1000,
        };
        let run = || {
            let mut p = pool(limits);
            let outcomes: Vec<Entry> = (0..400u64).map(|c| p.enter(c, ip(7))).collect();
            (outcomes, p.len())
        };
        let (a, len) = run();
        assert_eq!(a, run().0, "same seed, same decisions");
        assert!(len < 100, "early drop keeps it below full: {len}");
        assert!(a[..10].iter().all(|e| *e == Entry::Admitted));
        let early = |r: core::ops::Range<usize>| {
            a[r].iter()
                .filter(|e| **e == Entry::Refused(Refusal::EarlyDrop))
                .count()
        };
        assert!(early(10..40) > 0, "some early drops just after start");
        assert!(early(300..400) > early(10..40), "more as it fills");
    }

    #[test]
    fn a_wide_flood_churns_the_pool_oldest_first() {
        // One member per address: a newcomer from a fresh address takes the
        // oldest member's slot, so a handshake in progress is pushed out only
        // after the whole pool has turned over.
        let mut p = pool(PoolLimits::default());
        let src = |c: u64| IpAddr::from([10, 0, (c / 250) as u8, (c % 250) as u8]);
        let mut evicted = Vec::new();
        for c in 0..400u64 {
            match p.enter(c, src(c)) {
                Entry::Evicted(v) => evicted.push(v),
                e => assert_eq!(e, Entry::Admitted),
            }
        }
        assert!(p.len() <= 100);
        let mut sorted = evicted.clone();
        sorted.sort_unstable();
        assert_eq!(evicted, sorted, "oldest first");
    }

    #[test]
    fn full_pool_evicts_the_most_represented_source_for_a_fresh_one() {
        let limits = PoolLimits {
            start: 4,
            rate: 100,
            full: 4,
            per_source: 10,
        };
        let mut p = pool(limits);
        for c in 0..3 {
            assert_eq!(p.enter(c, ip(9)), Entry::Admitted);
        }
        assert_eq!(p.enter(3, ip(8)), Entry::Admitted);
        // Full: a fresh address takes the oldest of 127.0.0.9's members.
        assert_eq!(p.enter(4, ip(1)), Entry::Evicted(0));
        assert!(!p.contains(0) && p.contains(4));
        assert_eq!(p.members_from(ip(9)), 2);
        // The flooding source itself cannot evict anyone: it is the heaviest.
        assert_eq!(p.enter(5, ip(9)), Entry::Refused(Refusal::Full));
        // Sources now hold 2, 1, 1: another fresh address evicts from 127.0.0.9.
        assert_eq!(p.enter(6, ip(2)), Entry::Evicted(1));
        // All hold 1 now; a fresh address (0) evicts the oldest of them.
        assert_eq!(p.enter(7, ip(3)), Entry::Evicted(2));
        // But an address already holding one cannot push out another's one.
        assert_eq!(p.enter(8, ip(3)), Entry::Refused(Refusal::Full));
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn many_sources_flooding_never_keep_a_fresh_address_out() {
        let mut p = pool(PoolLimits::default());
        let mut c = 0;
        for round in 0..5u8 {
            for host in 0..50u8 {
                let _ = p.enter(c, IpAddr::from([127, 1, round, host]));
                c += 1;
            }
            for host in 0..50u8 {
                let _ = p.enter(c, IpAddr::from([127, 2, host, 1]));
                c += 1;
            }
        }
        for _ in 0..300 {
            let _ = p.enter(c, ip(200));
            c += 1;
        }
        // The honest peer's address holds 10 (its cap) only if it flooded; a
        // fresh one always gets a slot.
        assert!(matches!(
            p.enter(c, ip(1)),
            Entry::Admitted | Entry::Evicted(_)
        ));
        assert!(p.len() <= 100);
    }

    #[test]
    fn leave_is_idempotent() {
        let mut p = pool(PoolLimits::default());
        assert_eq!(p.enter(1, ip(1)), Entry::Admitted);
        p.leave(1);
        p.leave(1);
        p.leave(99);
        assert_eq!(p.len(), 0);
        assert_eq!(p.members_from(ip(1)), 0);
    }

    #[test]
    fn inbound_unauthenticated_deadline_is_capped() {
        let t0 = Instant::ZERO;
        let long = Duration::from_secs(30);
        assert_eq!(deadline(t0, long, true), t0 + INBOUND_HANDSHAKE);
        assert_eq!(deadline(t0, long, false), t0 + long);
        let short = Duration::from_secs(1);
        assert_eq!(deadline(t0, short, true), t0 + short);
    }
}
