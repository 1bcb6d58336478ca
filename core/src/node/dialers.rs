//! Dialers: the addresses this node keeps (or once) dials, with backoff
//! after failures, and the addresses of nodes other peers told it about, for
//! healing a split mesh.

use core::net::SocketAddr;
use std::collections::BTreeMap;
use std::time::Duration;

use super::conn::Conn;
use super::{CommandId, ConnId, ConnState, Direction, Node, Output, admission};
use crate::NodeId;
use crate::config::ConnectionSettings;
use crate::rng::Rng;
use crate::time::Instant;

/// Most heard-of nodes remembered: a peer's list cannot grow this without bound.
const MAX_HEARD: usize = 1024;

/// One address dialled.
struct Dialer {
    conn: Option<ConnId>,
    failures: u32,
    retry_at: Instant,
    /// Dialled only because of a `Connect` command: not redialled.
    once: bool,
    /// The address turned out to be this node itself.
    is_self: bool,
}

impl Dialer {
    fn new(now: Instant, once: bool) -> Dialer {
        Dialer {
            conn: None,
            failures: 0,
            retry_at: now,
            once,
            is_self: false,
        }
    }
}

#[derive(Default)]
pub(super) struct Dialers {
    by_addr: BTreeMap<SocketAddr, Dialer>,
    /// `Connect` commands waiting for their dial, by connection.
    pub connect_waiters: BTreeMap<ConnId, CommandId>,
    /// Addresses of nodes other peers told us about (`peer_discovery`), for
    /// healing a split mesh, with when each was first heard.
    pub heard: BTreeMap<NodeId, (SocketAddr, Instant)>,
    /// When a heard-of node may next be dialled.
    pub heal_retry: BTreeMap<NodeId, Instant>,
}

impl Dialers {
    /// Addresses the node keeps reconnecting to.
    pub fn known_addrs(&self) -> Vec<SocketAddr> {
        let kept = self.by_addr.iter().filter(|(_, d)| !d.once);
        kept.map(|(a, _)| *a).collect()
    }

    /// `AddPeer`: keep dialling `addr`, starting now.
    pub fn remember(&mut self, addr: SocketAddr, now: Instant) {
        let d = self.by_addr.entry(addr).or_insert(Dialer::new(now, false));
        d.once = false;
        d.retry_at = now;
    }

    /// A configured known peer: keep dialling it (now, if it is new).
    pub fn keep(&mut self, addr: SocketAddr, now: Instant) {
        self.by_addr
            .entry(addr)
            .or_insert(Dialer::new(now, false))
            .once = false;
    }

    /// `RemovePeer`: whether the address was dialled at all.
    pub fn forget(&mut self, addr: SocketAddr) -> bool {
        self.by_addr.remove(&addr).is_some()
    }

    /// A dial of `addr` started as `conn` (an address new here is dialled once).
    pub fn dialling(&mut self, addr: SocketAddr, conn: ConnId, now: Instant) {
        self.by_addr
            .entry(addr)
            .or_insert(Dialer::new(now, true))
            .conn = Some(conn);
    }

    /// The dial `conn` of `addr` was for a command only: no redial.
    pub fn once(&mut self, addr: SocketAddr, conn: ConnId) {
        if let Some(d) = self.by_addr.get_mut(&addr)
            && d.conn == Some(conn)
        {
            d.once = true;
        }
    }

    /// `addr` answered with our own key: never dial it again.
    pub fn is_self(&mut self, addr: SocketAddr) {
        if let Some(d) = self.by_addr.get_mut(&addr) {
            d.is_self = true;
        }
    }

    /// The dial `conn` reached a ready session: its failures are forgiven.
    pub fn connected(&mut self, conn: ConnId) {
        for d in self.by_addr.values_mut() {
            if d.conn == Some(conn) {
                d.failures = 0;
            }
        }
    }

    /// The dial `conn` closed: redial after a backoff that grows with the
    /// failures (a session that got ready is not one), or forget a dial made
    /// once.
    pub fn closed(
        &mut self,
        conn: ConnId,
        ready_before: bool,
        now: Instant,
        cfg: &ConnectionSettings,
        rng: &mut Rng,
    ) {
        for (addr, d) in self.by_addr.iter_mut() {
            if d.conn == Some(conn) {
                d.conn = None;
                if !ready_before {
                    d.failures = d.failures.saturating_add(1);
                }
                let delay = backoff(cfg, d.failures, rng);
                d.retry_at = now + delay;
                tracing::debug!(%addr, ?delay, "will redial");
            }
        }
        self.by_addr.retain(|_, d| !(d.once && d.conn.is_none()));
    }

    fn waiting(d: &Dialer) -> bool {
        d.conn.is_none() && !d.is_self && !d.once
    }

    /// Addresses due for a redial at `now`.
    pub fn due(&self, now: Instant) -> Vec<SocketAddr> {
        let due = self.by_addr.iter();
        let due = due.filter(|(_, d)| Self::waiting(d) && now >= d.retry_at);
        due.map(|(a, _)| *a).collect()
    }

    /// No room to dial `addr` now: try at `at`.
    pub fn retry_at(&mut self, addr: SocketAddr, at: Instant) {
        if let Some(d) = self.by_addr.get_mut(&addr) {
            d.retry_at = at;
        }
    }

    /// The next redial, if any waits.
    pub fn next_retry(&self) -> Option<Instant> {
        let waiting = self.by_addr.values().filter(|d| Self::waiting(d));
        waiting.map(|d| d.retry_at).min()
    }

    /// A peer told us where `node` listens.
    pub fn heard_of(&mut self, node: NodeId, addr: SocketAddr, now: Instant) {
        if self.heard.len() >= MAX_HEARD && !self.heard.contains_key(&node) {
            return;
        }
        self.heard.entry(node).or_insert((addr, now)).0 = addr;
    }
}

/// The wait before redialling after `failures` failures: doubling from
/// `reconnect_min` up to `reconnect_max`, plus up to a quarter of jitter so
/// nodes that lost each other do not redial in step.
pub(super) fn backoff(cfg: &ConnectionSettings, failures: u32, rng: &mut Rng) -> Duration {
    let base = cfg
        .reconnect_min
        .saturating_mul(1u32 << failures.min(16))
        .min(cfg.reconnect_max);
    let jitter_max = (base.as_micros() / 4) as u64;
    base + Duration::from_micros(rng.below(jitter_max.max(1)))
}

impl Node {
    /// Redials the addresses that are due.
    pub(super) fn redial(&mut self, now: Instant) {
        for addr in self.dialers.due(now) {
            if self.dial(now, addr).is_none() {
                // No room (max_peers): try again later rather than at once.
                let delay = backoff(&self.cfg.connections, 0, &mut self.rng);
                self.dialers.retry_at(addr, now + delay);
            }
        }
    }

    pub(super) fn dial_discovered(&mut self, now: Instant, node: &NodeId, addr: SocketAddr) {
        let connected = self.has_session_with(node)
            || self
                .conns
                .values()
                .any(|c| c.state() != ConnState::Closed && c.addr == addr);
        if connected || self.peer_slots_used() >= self.cfg.connections.max_peers {
            return;
        }
        if let Some(d) = self.discovery.as_mut() {
            d.mark_dialed(&node.to_hex(), now);
        }
        if self.admission.trust.admits(node).is_none() {
            // Discovery is a hint about addresses of nodes we would accept;
            // dialling anyone else would only hand our handshake to strangers.
            tracing::debug!(peer = node.short(), %addr, "not dialling a discovered node that is not trusted");
            return;
        }
        tracing::info!(peer = node.short(), %addr, "auto-connecting to a discovered peer");
        self.dial(now, addr);
    }

    pub(super) fn sync_known_peers(&mut self, now: Instant) {
        for k in self.cfg.connections.known_peers.clone() {
            match k.parse::<SocketAddr>() {
                Ok(addr) => self.dialers.keep(addr, now),
                Err(_) => tracing::warn!(peer = %k, "ignoring known peer that is not ip:port"),
            }
        }
    }

    /// Dials `addr` for a command: not redialled later unless it is a known peer.
    pub(super) fn dial_once(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        let conn = self.dial(now, addr)?;
        if !self
            .cfg
            .connections
            .known_peers
            .iter()
            .any(|k| k.parse() == Ok(addr))
        {
            self.dialers.once(addr, conn);
        }
        Some(conn)
    }

    pub(super) fn dial(&mut self, now: Instant, addr: SocketAddr) -> Option<ConnId> {
        if self.peer_slots_used() >= self.cfg.connections.max_peers
            || self.pending_dials() >= admission::MAX_PENDING_DIALS
        {
            return None;
        }
        let id = self.alloc_conn();
        let (hb, max) = (
            self.cfg.connections.heartbeat_interval,
            admission::PRE_ADMISSION_FRAME,
        );
        let c = Conn::new(id, addr, Direction::Outbound, now, hb, max);
        self.conns.insert(id, c);
        self.dialers.dialling(addr, id, now);
        self.out.queue.push_back(Output::Dial { conn: id, addr });
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_bounded_jitter() {
        let cfg = ConnectionSettings::default();
        let mut rng = Rng::from_seed([3; 32]);
        let mut last = Duration::ZERO;
        for failures in 0..20 {
            let d = backoff(&cfg, failures, &mut rng);
            let base = cfg
                .reconnect_min
                .saturating_mul(1 << failures.min(16))
                .min(cfg.reconnect_max);
            assert!(d >= base && d <= base + base / 4, "{failures}: {d:?}");
            assert!(base >= last);
            last = base;
        }
    }

    #[test]
    fn a_failed_dial_waits_longer_and_a_ready_one_does_not_count() {
        let (cfg, mut rng) = (ConnectionSettings::default(), Rng::from_seed([1; 32]));
        let mut d = Dialers::default();
        d.remember(addr(1), at(0));
        assert_eq!(d.due(at(0)), vec![addr(1)]);
        d.dialling(addr(1), 7, at(0));
        assert_eq!((d.due(at(0)), d.next_retry()), (vec![], None));
        d.closed(7, false, at(10), &cfg, &mut rng);
        let first = d.next_retry().expect("a redial");
        d.dialling(addr(1), 8, first);
        d.closed(8, false, first, &cfg, &mut rng);
        let second = d.next_retry().expect("a redial");
        assert!(second.saturating_since(first) > first.saturating_since(at(10)));
        d.dialling(addr(1), 9, second);
        d.connected(9);
        d.closed(9, true, second, &cfg, &mut rng);
        let third = d.next_retry().expect("a redial");
        assert!(third.saturating_since(second) <= cfg.reconnect_min * 2);
    }

    #[test]
    fn a_dial_made_once_is_forgotten_when_it_closes() {
        let (cfg, mut rng) = (ConnectionSettings::default(), Rng::from_seed([1; 32]));
        let mut d = Dialers::default();
        d.dialling(addr(2), 1, at(0));
        assert!(d.known_addrs().is_empty());
        d.closed(1, false, at(1), &cfg, &mut rng);
        assert!(!d.forget(addr(2)));
    }

    #[test]
    fn our_own_address_is_never_redialled() {
        let mut d = Dialers::default();
        d.remember(addr(3), at(0));
        d.is_self(addr(3));
        assert!(d.due(at(100)).is_empty());
        assert_eq!(d.known_addrs(), vec![addr(3)]);
    }

    #[test]
    fn heard_of_addresses_are_bounded_but_kept_up_to_date() {
        let mut d = Dialers::default();
        let node = |i: usize| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_be_bytes());
            NodeId(b)
        };
        for i in 0..MAX_HEARD + 10 {
            d.heard_of(node(i), addr(1), at(0));
        }
        assert_eq!(d.heard.len(), MAX_HEARD);
        d.heard_of(node(0), addr(9), at(5));
        assert_eq!(d.heard[&node(0)], (addr(9), at(0)));
    }
}
