//! Moving bytes: queueing framed messages on a connection, handing them to
//! the owner one connection at a time, and holding bulk data to the upload
//! and download caps (per peer and node-wide). Control frames go first, so
//! heartbeats are never starved by bulk data.

use super::CloseReason;
use super::conn::Conn;
use super::{ConnId, ConnState, Event, Node, TRANSMIT_CHUNK, rate, trace_record};
use crate::config::NodeConfig;
use crate::store::Store;
use crate::time::Instant;
use crate::wire::{self, Message};

impl Node {
    /// Reports a message for the trace, when tracing is on.
    pub(super) fn trace_message(
        &mut self,
        conn: ConnId,
        dir: &'static str,
        message: &Message,
        msg_id: u64,
        bytes: usize,
    ) {
        let peer = self.conns.get(&conn).and_then(|c| c.peer());
        if let Some(r) = trace_record(self.out.trace, conn, peer, dir, message, msg_id, bytes) {
            self.emit(Event::Message(r));
        }
    }

    /// Appends bytes to send on one connection to `buf` and returns that
    /// connection, or `None` when no unblocked connection has anything to send.
    /// Control messages go first, so heartbeats are never starved by bulk data.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        store: &dyn Store,
        buf: &mut Vec<u8>,
    ) -> Option<ConnId> {
        self.run_queued(now, store);
        let sent = self.transmit(now, store, buf);
        if sent.is_some() || !self.puller.restart {
            return sent;
        }
        // A routed session closed on the way and freed a pull slot: the
        // pull it lets start has a request to send.
        self.run_queued(now, store);
        self.transmit(now, store, buf)
    }

    fn transmit(&mut self, now: Instant, store: &dyn Store, buf: &mut Vec<u8>) -> Option<ConnId> {
        self.timers.last_now = self.timers.last_now.max(now);
        self.pump_routed(now, store);
        let ids: Vec<ConnId> = self
            .conns
            .range(self.server.last_rr + 1..)
            .chain(self.conns.range(..=self.server.last_rr))
            .filter(|(_, c)| c.route.is_none())
            .map(|(id, _)| *id)
            .collect();
        self.apply_rates(now);
        for id in ids {
            let produced = self.fill_transmit(now, id, store);
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if c.out.len() == c.out_pos || c.blocked {
                if c.state() == ConnState::Refusing && c.ctrl.is_empty() && c.out.len() == c.out_pos
                {
                    // The `refused` message is out: now close.
                    let reason = c.refusing.take().unwrap_or_default();
                    self.close(id, CloseReason::Refused(reason));
                }
                if produced.is_err() {
                    continue;
                }
                continue;
            }
            let n = Self::sendable(c, &mut self.server.up, now).min(TRANSMIT_CHUNK);
            if n == 0 {
                // Bulk data waiting for the upload cap; `poll_timeout` wakes
                // the owner when the allowance refills.
                continue;
            }
            buf.extend_from_slice(&c.out[c.out_pos..c.out_pos + n]);
            c.consume_out(n);
            c.up.charge(n as u64, now);
            self.server.up.charge(n as u64, now);
            self.out.stats.bytes_out += n as u64;
            self.server.last_rr = id;
            return Some(id);
        }
        None
    }

    /// How many of a connection's pending bytes may go out now. Control
    /// traffic always may, together with any bulk data queued ahead of it (the
    /// bytes are encrypted in order, so a heartbeat behind an object frame can
    /// only leave after it): the debt this leaves is paid back by holding the
    /// next bulk data. Bulk data on its own waits for the upload allowance.
    pub(super) fn sendable(c: &mut Conn, global: &mut rate::Bucket, now: Instant) -> usize {
        let pending = c.pending_out();
        let bulk = c.bulk_pending();
        if bulk == 0 || c.out.len() > c.bulk_end {
            return pending;
        }
        if c.out_pos < c.bulk_start {
            return c.bulk_start - c.out_pos;
        }
        let avail = c.up.available(now).min(global.available(now));
        let need = (bulk as u64).min(rate::QUANTUM);
        if avail >= need {
            bulk.min(usize::try_from(avail).unwrap_or(usize::MAX))
        } else {
            0
        }
    }

    /// The upload cap that applies to a connection's own bucket.
    pub(super) fn peer_caps(cfg: &NodeConfig, c: &Conn) -> (u64, u64) {
        if c.route.is_some() {
            // A routed session's bytes travel as frames on a neighbour's
            // connection and are counted there.
            return (0, 0);
        }
        match c.peer().as_ref() {
            Some(p) => (cfg.rates.peer_upload_cap(p), cfg.rates.peer_download_cap(p)),
            None => (cfg.rates.peer_upload_rate, cfg.rates.peer_download_rate),
        }
    }

    /// Brings every bucket's rate in line with the configuration, so a rate
    /// changed at run time (`SetConfig`) or a peer identified by its handshake
    /// gets its cap at once.
    pub(super) fn apply_rates(&mut self, now: Instant) {
        rate::set_cap(&mut self.server.up, self.cfg.rates.upload_rate, now);
        rate::set_cap(&mut self.server.down, self.cfg.rates.download_rate, now);
        for c in self.conns.values_mut() {
            let (up, down) = Self::peer_caps(&self.cfg, c);
            rate::set_cap(&mut c.up, up, now);
            rate::set_cap(&mut c.down, down, now);
        }
    }

    /// Applies the configured rates and tops every bucket up to `now`, so the
    /// deadlines `poll_timeout` derives from them are fresh.
    pub(super) fn refill_rates(&mut self, now: Instant) {
        self.apply_rates(now);
        self.server.up.available(now);
        self.server.down.available(now);
        for c in self.conns.values_mut() {
            c.up.available(now);
            c.down.available(now);
        }
    }

    /// Whether a connection's upload is capped (by its peer's cap or the node's).
    pub(super) fn upload_capped(&self, c: &Conn) -> bool {
        c.route.is_none() && !(c.up.unlimited() && self.server.up.unlimited())
    }

    /// When a connection held back by a rate cap can move again: bulk data
    /// waiting for upload tokens, or a socket the owner stopped reading.
    pub(super) fn rate_wake(&self, c: &Conn) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut later = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.max(t)));
            }
        };
        if self.upload_capped(c) && !c.blocked {
            let bulk = c.bulk_pending();
            let waiting = if bulk > 0 {
                c.out.len() == c.bulk_end && c.out_pos >= c.bulk_start
            } else {
                !c.serving.is_empty()
            };
            if waiting {
                let need = if bulk > 0 {
                    (bulk as u64).min(rate::QUANTUM)
                } else {
                    rate::QUANTUM
                };
                later(c.up.ready_at(need));
                later(self.server.up.ready_at(need));
            }
        }
        let mut down: Option<Instant> = None;
        for b in [&c.down, &self.server.down] {
            if let Some(t) = b.ready_at(rate::QUANTUM) {
                down = Some(down.map_or(t, |d: Instant| d.max(t)));
            }
        }
        match (wake, down) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many bytes the owner may read from a connection's socket now:
    /// `None` when no download cap applies, `Some(0)` when it should stop
    /// reading until the next [`poll_timeout`](Node::poll_timeout). The core
    /// cannot hold back a peer's bytes itself; the owner pausing the socket
    /// lets TCP flow control slow the sender. Bytes handed to
    /// [`handle_bytes`](Node::handle_bytes) are charged, so an owner that reads
    /// a little more than allowed only borrows from the next allowance.
    pub fn read_budget(&mut self, conn: ConnId, now: Instant) -> Option<usize> {
        if self.budget_paused(conn) {
            return Some(0);
        }
        let c = self.conns.get_mut(&conn)?;
        let (_, down) = Self::peer_caps(&self.cfg, c);
        rate::set_cap(&mut c.down, down, now);
        rate::set_cap(&mut self.server.down, self.cfg.rates.download_rate, now);
        if c.down.unlimited() && self.server.down.unlimited() {
            return None;
        }
        let avail = c.down.available(now).min(self.server.down.available(now));
        if avail < rate::QUANTUM {
            return Some(0);
        }
        Some(usize::try_from(avail).unwrap_or(usize::MAX))
    }

    /// Marks a connection's socket as full (or drained again).
    pub fn set_blocked(&mut self, conn: ConnId, blocked: bool) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.blocked = blocked;
        }
    }

    /// Queues a message on a connection (encrypted when `poll_transmit` runs).
    pub(super) fn send(&mut self, now: Instant, conn: ConnId, message: Message) {
        self.send_with(now, conn, message, &[]);
    }

    pub(super) fn send_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: Message,
        binary: &[u8],
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        let json = wire::encode_message(&message);
        self.send_encoded(now, conn, &message, &json, binary);
    }

    /// Queues `message`, already serialised as `json` (see
    /// [`wire::encode_message`]): a message flooded to several peers is
    /// serialised once.
    pub(super) fn send_encoded(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: &Message,
        json: &[u8],
        binary: &[u8],
    ) {
        let id = self.server.next_msg;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        self.server.next_msg += 1;
        let kind = message.type_name();
        let mut frame = Vec::new();
        wire::encode_frame_with(id, &self.me.hex, now.as_micros(), json, binary, &mut frame);
        *self
            .out
            .stats
            .bytes_out_by_type
            .entry(kind.to_owned())
            .or_default() += frame.len() as u64;
        let len = frame.len();
        c.ctrl.push_back(frame);
        let queued = c.queued();
        *self
            .out
            .stats
            .messages_out
            .entry(kind.to_owned())
            .or_default() += 1;
        self.trace_message(conn, "out", message, id, len);
        // Object data is produced only when the socket has room, but replies
        // (pongs, refusals, topology) are queued whatever happens: a peer that
        // keeps asking and never reads would grow this without bound.
        let limit = self.frame_limits().queued;
        if queued > limit {
            self.out.stats.queue_overflows += 1;
            self.close(conn, CloseReason::NotReading { queued, limit });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Direction;
    use core::net::SocketAddr;
    use std::time::Duration;

    fn conn() -> Conn {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        Conn::new(
            1,
            addr,
            Direction::Outbound,
            Instant::ZERO,
            Duration::from_secs(1),
            1 << 20,
        )
    }

    #[test]
    fn control_bytes_go_out_whatever_the_caps() {
        let mut c = conn();
        c.out.extend_from_slice(&[0; 100]);
        let mut global = rate::cap(1, Instant::ZERO);
        assert_eq!(Node::sendable(&mut c, &mut global, Instant::ZERO), 100);
    }

    #[test]
    fn bulk_data_waits_for_the_upload_allowance() {
        let mut c = conn();
        c.out.extend_from_slice(&[0; 4 * rate::QUANTUM as usize]);
        c.bulk_start = 0;
        c.bulk_end = c.out.len();
        let mut global = rate::cap(1, Instant::ZERO);
        global.charge(1 << 20, Instant::ZERO);
        assert_eq!(Node::sendable(&mut c, &mut global, Instant::ZERO), 0);
        let mut open = rate::cap(0, Instant::ZERO);
        assert_eq!(
            Node::sendable(&mut c, &mut open, Instant::ZERO),
            c.out.len()
        );
    }
}
