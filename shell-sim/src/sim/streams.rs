//! Streams and datagrams between simulated nodes: dials, FIFO pipes with a
//! window and serialisation time, closes and resets, and discovery
//! datagrams with loss, duplication, holds and jitter.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use ivaldi_core::node::{CloseReason, ConnId};

use super::{Ev, PIPE_SLACK, Sim, mix, us};
use crate::invariants::Kind;
use crate::net::{self, End, HeldDatagram, Pipe, Seg, SegKind, SockId, Socket};

impl Sim {
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

    pub(super) fn dial(&mut self, i: usize, conn: ConnId, addr: SocketAddr) {
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

    pub(super) fn dial_arrive(&mut self, sock: SockId) {
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

    pub(super) fn dial_ok(&mut self, sock: SockId) {
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

    pub(super) fn dial_fail(&mut self, sock: SockId, reason: &'static str) {
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
            let reason = CloseReason::Transport(reason.to_owned());
            self.input(i, |n, s, now| n.handle_closed(now, conn, &reason, s));
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

    /// Puts bytes into the connection's pipe. Returns `false` when this filled
    /// the window, so the node is blocked until `deliver` drains the pipe
    /// below it (and `true` for a pipe already blocked: it was told then).
    pub(super) fn send(&mut self, i: usize, conn: ConnId, data: Vec<u8>) -> bool {
        let Some(&(sock, side)) = self.nodes[i].socks.get(&conn) else {
            // Bytes for a connection the network no longer has: dropped.
            return true;
        };
        let len = data.len();
        self.counters.stream_bytes += len as u64;
        self.counters.segments += 1;
        self.push_seg(sock, side, SegKind::Data(data));
        let window = self.cfg.net.window;
        let Some(s) = self.net.socks.get_mut(&sock) else {
            return true;
        };
        let p = &mut s.ends[side].pipe;
        let in_flight = p.bytes;
        let filled = in_flight >= window && !p.blocked;
        if filled {
            p.blocked = true;
        }
        if in_flight > window + PIPE_SLACK {
            self.violation(
                Kind::Unbounded,
                Some(i),
                format!("{in_flight} bytes in flight on conn {conn}, window {window}"),
            );
        }
        !filled
    }

    pub(super) fn deliver(&mut self, sock: SockId, side: usize) {
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
                        let reason = CloseReason::Transport(format!("closed by peer: {reason}"));
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
    pub(super) fn close_end(&mut self, i: usize, conn: ConnId, reason: CloseReason) {
        if let Some((sock, side)) = self.nodes[i].socks.remove(&conn) {
            let accepted = match self.net.socks.get_mut(&sock) {
                Some(s) => {
                    s.ends[side].open = false;
                    s.accepted
                }
                None => false,
            };
            if accepted {
                self.push_seg(sock, side, SegKind::Fin(reason.to_string()));
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
                            reason: CloseReason::Transport(reason.to_owned()),
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

    pub(super) fn send_datagram(&mut self, i: usize, to: SocketAddr, data: Vec<u8>) {
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
}
