//! The node's timers. Every deadline kind is computed in one place, read by
//! both [`Node::poll_timeout`] (the soonest, and why) and
//! [`Node::handle_timeout`] (which are due): a connection's own deadlines
//! in [`ConnTimers`], the node-wide ones in [`Timers`], and the sub-machines
//! (discovery, mesh, relay backlog, dialers, rate caps) each expose their next.

use super::CloseReason;
use super::conn::Conn;
use super::{ConnId, ConnState, Node, TimeoutReason, admission};
use crate::NodeId;
use crate::config::NodeConfig;
use crate::store::Store;
use crate::time::Instant;
use crate::wire::{self, Message};

/// The node-wide times.
pub(super) struct Timers {
    /// When the node was created.
    pub started: Instant,
    /// The latest `now` handed in, for internal closes of routed sessions.
    pub last_now: Instant,
    /// When every connection is next pulled from (`auto_sync`).
    pub next_auto_sync: Instant,
    /// Why the node last asked to be woken.
    pub last_reason: Option<TimeoutReason>,
}

impl Timers {
    pub fn new(now: Instant, next_auto_sync: Instant) -> Timers {
        Timers {
            started: now,
            last_now: now,
            next_auto_sync,
            last_reason: None,
        }
    }
}

/// The soonest of the deadlines considered, with its reason; on a tie the
/// first considered wins.
#[derive(Default)]
pub(super) struct Soonest(Option<(Instant, TimeoutReason)>);

impl Soonest {
    pub fn consider(&mut self, t: Option<Instant>, reason: TimeoutReason) {
        if let Some(t) = t
            && self.0.is_none_or(|(b, _)| t < b)
        {
            self.0 = Some((t, reason));
        }
    }

    pub fn at(&self) -> Option<Instant> {
        self.0.map(|s| s.0)
    }

    pub fn reason(&self) -> Option<TimeoutReason> {
        self.0.map(|s| s.1)
    }
}

/// One connection's deadlines. Before it is ready only the handshake's;
/// once ready, the heartbeat, the peer-lost limit and a pull's progress.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ConnTimers {
    pub handshake: Option<Instant>,
    pub lost: Option<Instant>,
    pub sync: Option<Instant>,
    pub ping: Option<Instant>,
}

impl ConnTimers {
    pub fn of(c: &Conn, cfg: &NodeConfig) -> ConnTimers {
        match c.state() {
            ConnState::Dialing
            | ConnState::Handshaking
            | ConnState::Admission
            | ConnState::Refusing
            | ConnState::AwaitHello => ConnTimers {
                handshake: Some(admission::conn_deadline(
                    c,
                    cfg.connections.handshake_timeout,
                )),
                ..ConnTimers::default()
            },
            ConnState::Ready => ConnTimers {
                handshake: None,
                lost: Some(
                    c.last_rx
                        + cfg.connections.heartbeat_interval * cfg.connections.heartbeat_misses,
                ),
                sync: c
                    .pull
                    .as_ref()
                    .map(|p| p.last_progress + cfg.sync.sync_timeout),
                ping: Some(c.next_ping),
            },
            ConnState::Closed => ConnTimers::default(),
        }
    }
}

impl Node {
    /// The next deadline at which `handle_timeout` must be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut soonest = Soonest::default();
        let discovery = self.discovery.as_ref().and_then(|d| d.poll_timeout());
        soonest.consider(discovery, TimeoutReason::Discovery);
        let mesh = self.mesh.as_ref().and_then(|m| m.poll_timeout());
        soonest.consider(mesh, TimeoutReason::Mesh);
        let relay = self.routed.backlog_due();
        soonest.consider(relay, TimeoutReason::Mesh);
        for c in self.conns.values() {
            let t = ConnTimers::of(c, &self.cfg);
            soonest.consider(t.handshake, TimeoutReason::Handshake);
            soonest.consider(t.ping, TimeoutReason::Heartbeat);
            soonest.consider(t.lost, TimeoutReason::PeerLost);
            if c.state() == ConnState::Ready {
                soonest.consider(self.rate_wake(c), TimeoutReason::RateLimit);
            }
            soonest.consider(t.sync, TimeoutReason::SyncTimeout);
        }
        let auto = self
            .cfg
            .sync
            .auto_sync
            .then_some(self.timers.next_auto_sync);
        soonest.consider(auto, TimeoutReason::AutoSync);
        soonest.consider(self.dialers.next_retry(), TimeoutReason::Reconnect);
        self.timers.last_reason = soonest.reason();
        soonest.at()
    }

    /// Time passed; does whatever is due.
    pub fn handle_timeout(&mut self, now: Instant, store: &dyn Store) {
        self.timers.last_now = self.timers.last_now.max(now);
        self.refill_rates(now);
        self.mesh_timeout(now, store);
        if let Some(d) = self.discovery.as_mut() {
            d.handle_timeout(now);
            let candidates = d.dial_candidates(now);
            for (node, addr) in candidates {
                if let Ok(node) = node.parse::<NodeId>() {
                    self.dial_discovered(now, &node, addr);
                }
            }
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
            let t = ConnTimers::of(c, &self.cfg);
            if due(t.handshake) {
                self.close(id, CloseReason::HandshakeTimeout);
            } else if due(t.lost) {
                self.close(id, CloseReason::PeerLost);
            } else if due(t.sync) {
                self.close(id, CloseReason::SyncTimeout);
            } else if due(t.ping) {
                let seq = self.rng.next_u64() >> 11;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.ping = Some((seq, now));
                    c.next_ping = now + self.cfg.connections.heartbeat_interval;
                }
                let ping = wire::Heartbeat {
                    ping: Some(seq),
                    pong: None,
                };
                self.send(now, id, Message::Heartbeat(ping));
            }
        }
        if self.cfg.sync.auto_sync && now >= self.timers.next_auto_sync {
            self.timers.next_auto_sync = now + self.cfg.sync.sync_interval;
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
        self.redial(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Direction;
    use core::net::SocketAddr;
    use std::time::Duration;

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    #[test]
    fn the_soonest_deadline_wins_and_the_first_on_a_tie() {
        let mut s = Soonest::default();
        assert_eq!((s.at(), s.reason()), (None, None));
        s.consider(Some(at(5)), TimeoutReason::Mesh);
        s.consider(None, TimeoutReason::Handshake);
        s.consider(Some(at(5)), TimeoutReason::AutoSync);
        assert_eq!(s.reason(), Some(TimeoutReason::Mesh));
        s.consider(Some(at(2)), TimeoutReason::Heartbeat);
        assert_eq!(
            (s.at(), s.reason()),
            (Some(at(2)), Some(TimeoutReason::Heartbeat))
        );
    }

    #[test]
    fn a_connection_has_the_deadlines_of_its_state() {
        let cfg = NodeConfig::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        let hb = Duration::from_secs(1);
        let mut c = Conn::new(1, addr, Direction::Outbound, at(0), hb, 1 << 20);
        let t = ConnTimers::of(&c, &cfg);
        assert_eq!(t.handshake, Some(at(0) + cfg.connections.handshake_timeout));
        assert_eq!((t.lost, t.sync, t.ping), (None, None, None));
        c.authenticated(crate::NodeId([1; 32]));
        c.set_state(ConnState::Ready);
        c.last_rx = at(10);
        c.next_ping = at(11);
        let t = ConnTimers::of(&c, &cfg);
        let lost = at(10) + cfg.connections.heartbeat_interval * cfg.connections.heartbeat_misses;
        assert_eq!(
            (t.handshake, t.lost, t.ping, t.sync),
            (None, Some(lost), Some(at(11)), None)
        );
        c.set_state(ConnState::Closed);
        assert_eq!(ConnTimers::of(&c, &cfg), ConnTimers::default());
    }
}
