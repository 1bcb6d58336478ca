//! A connection's session once its secure channel is up: the identity
//! checks, the `handshake` exchange (features, repositories, heads, the
//! duplicate-connection tie-break) and routing every later message to the
//! part of the node that handles it.

use super::CloseReason;
use core::net::SocketAddr;

use super::conn::Conn;
use super::{ConnId, ConnState, Direction, Event, FEATURES, Node, thin};
use crate::NodeId;
use crate::access::{self, Access};
use crate::id::ObjectId;
use crate::store::Store;
use crate::time::Instant;
use crate::timeline::TimelineName;
use crate::wire::{self, Envelope, Message, PROTOCOL_VERSION};

impl Node {
    pub(super) fn on_established(
        &mut self,
        now: Instant,
        conn: ConnId,
        store: &dyn Store,
    ) -> Result<(), String> {
        let own = self.me.keypair.public;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let Some(remote) = c.noise.as_ref().and_then(|n| n.remote_static()) else {
            return Err("handshake finished without a peer key".into());
        };
        if remote == own {
            let addr = c.addr;
            self.dialers.is_self(addr);
            return Err("connected to itself".into());
        }
        let peer = NodeId(remote);
        match &c.route {
            Some(r) if r.dst != peer => {
                return Err(format!(
                    "routed session to {} was answered by {}",
                    r.dst.short(),
                    peer.short()
                ));
            }
            None if self.cfg.mesh.no_direct.contains(&peer) => {
                return Err(format!(
                    "no direct connection with {} (no_direct)",
                    peer.short()
                ));
            }
            _ => {}
        }
        c.authenticated(peer);
        if self.admit_established(now, conn, &peer) {
            self.send_hello(now, conn, &peer, store);
        }
        Ok(())
    }

    /// What `peer` may do with `timeline` (see [`crate::access`]).
    pub(super) fn access(&self, peer: &NodeId, timeline: &TimelineName) -> Access {
        let whole = self.admission.trust.admits(peer).unwrap_or(Access::None);
        if self.cfg.access.rules.is_empty() {
            return whole;
        }
        whole.min(access::access_for(
            &self.cfg.access.rules,
            &self.cfg.access.peer_groups,
            peer,
            timeline.as_str(),
        ))
    }

    /// Records a head a peer announced for a timeline it may not write.
    pub(super) fn refuse_head(&mut self, peer: &NodeId, timeline: TimelineName, head: ObjectId) {
        self.out.stats.access_refused += 1;
        let what = format!("head {head} for {timeline}, which it may not write");
        tracing::warn!(peer = peer.short(), "refused {what}");
        self.emit(Event::AccessRefused {
            peer: peer.to_owned(),
            timeline: Some(timeline),
            what,
        });
    }

    pub(super) fn hello(&self, store: &dyn Store, peer: &NodeId) -> wire::Handshake {
        let mut heads = store.heads().unwrap_or_default();
        heads.retain(|t, _| self.access(peer, t) >= Access::Read);
        let features = FEATURES
            .iter()
            .filter(|f| **f != "lz4" || self.cfg.connections.compression)
            .filter(|f| !self.cfg.connections.features_off.iter().any(|o| o == *f))
            .map(|f| (*f).to_owned())
            .collect();
        wire::Handshake {
            versions: vec![PROTOCOL_VERSION],
            listen_port: self.cfg.connections.port,
            repos: vec![wire::RepoAdvert {
                id: store.repo_id().to_owned(),
                heads,
            }],
            features,
            agent: concat!("ivaldi/", env!("CARGO_PKG_VERSION")).to_owned(),
            conflict: Some(wire::StrategyAdvert {
                default: self.cfg.sync.conflict_strategy,
                timelines: self.cfg.sync.timeline_strategies.clone(),
            }),
        }
    }

    pub(super) fn on_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        env: Envelope,
        bin: Vec<u8>,
        store: &dyn Store,
    ) {
        let kind = env.message.type_name();
        *self
            .out
            .stats
            .messages_in
            .entry(kind.to_owned())
            .or_default() += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if env.id <= c.last_msg_id {
            self.out.stats.duplicate_messages += 1;
            return;
        }
        c.last_msg_id = env.id;
        // The key the handshake proved (the wire already refused an
        // upper-case or malformed `from`).
        if Some(env.from) != c.peer() {
            return self.violation(
                conn,
                format!("message claims to be from {}", env.from.short()),
            );
        }
        let ready = c.state() == ConnState::Ready;
        match c.state() {
            ConnState::Refusing => return,
            ConnState::Admission => {
                return self.on_admission_message(now, conn, env.message, store);
            }
            _ => {}
        }
        match env.message {
            Message::Refused(r) => self.on_refused(conn, r),
            // A newcomer already trusted here redeems for nothing.
            Message::Redeem(_) if c.state() == ConnState::AwaitHello => {}
            Message::Redeem(_) => self.violation(conn, "redeem after the handshake".into()),
            Message::Handshake(h) if c.state() == ConnState::AwaitHello => {
                self.on_hello(now, conn, h, store)
            }
            Message::Handshake(_) => self.violation(conn, "second handshake".into()),
            _ if !ready => self.violation(conn, format!("{kind} before the handshake")),
            Message::Heartbeat(hb) => {
                if let Some(seq) = hb.ping {
                    self.send(
                        now,
                        conn,
                        Message::Heartbeat(wire::Heartbeat {
                            ping: None,
                            pong: Some(seq),
                        }),
                    );
                }
                if let Some(seq) = hb.pong
                    && let Some(c) = self.conns.get_mut(&conn)
                    && let Some((want, sent)) = c.ping
                    && want == seq
                {
                    c.rtt = Some(now.saturating_since(sent));
                    c.ping = None;
                    let direct = c.route.is_none();
                    if direct {
                        self.update_links(now);
                    }
                }
            }
            Message::TimelineUpdate(u) => {
                self.on_remote_head(now, conn, &u.repo, u.timeline, u.head, store)
            }
            Message::SealBroadcast(b) => {
                self.on_remote_head(now, conn, &b.repo, b.timeline, b.seal, store)
            }
            Message::SyncRequest(r) => self.on_sync_request(now, conn, r, store),
            Message::SyncResponse(r) => self.on_sync_response(now, conn, r, store),
            Message::Objects(h) => self.on_objects(now, conn, h, &bin, store),
            Message::SyncComplete(s) => self.on_sync_complete(now, conn, s, store),
            Message::ConflictResolve(r) => {
                // A peer resolved a divergence with us: its result is its new head.
                if let Some(head) = r.resolution {
                    self.on_remote_head(now, conn, &r.repo, r.timeline, head, store);
                }
            }
            Message::Topology(lsa) => self.on_lsa(now, conn, lsa, store),
            Message::TopologySummary(summary) => self.on_topology_summary(now, conn, summary),
            Message::Routed(h) => self.on_routed(now, conn, h, bin, store),
            Message::PeerDiscovery(list) => self.on_peer_list(now, list),
        }
    }

    pub(super) fn on_hello(
        &mut self,
        now: Instant,
        conn: ConnId,
        h: wire::Handshake,
        store: &dyn Store,
    ) {
        if !h.versions.contains(&PROTOCOL_VERSION) {
            return self.close(conn, CloseReason::NoCommonVersion(h.versions.clone()));
        }
        let repo = store.repo_id().to_owned();
        let restricted = self.access_restricted();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(peer) = c.peer() else { return };
        c.set_state(ConnState::Ready);
        c.was_ready = true;
        // Ping at once, so the round-trip time is known from the start.
        c.next_ping = now;
        c.lz4 = self.cfg.connections.compression
            && !self.cfg.connections.features_off.iter().any(|f| f == "lz4")
            && h.features.iter().any(|f| f == "lz4");
        c.zdelta = !self
            .cfg
            .connections
            .features_off
            .iter()
            .any(|f| f == thin::FEATURE)
            && h.features.iter().any(|f| f == thin::FEATURE);
        c.remote_features = h.features.clone();
        c.encrypted = c.noise.as_ref().is_some_and(|n| n.encrypted());
        c.remote_repos = h.repos.iter().map(|r| r.id.clone()).collect();
        c.remote_strategy = h.conflict.clone();
        // Where the peer can be dialled: the address we dialled, or its source
        // address with the port it says it listens on.
        c.dial_addr = match (c.direction, c.route.is_some(), h.listen_port) {
            (_, true, _) | (Direction::Inbound, _, 0) => None,
            (Direction::Outbound, false, _) => Some(c.addr),
            (Direction::Inbound, false, port) => Some(SocketAddr::new(c.addr.ip(), port)),
        };
        let mut refused = Vec::new();
        if let Some(advert) = h.repos.iter().find(|r| r.id == repo) {
            c.shares_repo = true;
            c.remote_heads = advert.heads.clone();
            if restricted {
                let mut heads = core::mem::take(&mut c.remote_heads);
                heads.retain(|t, h| {
                    let ok = self.access(&peer, t) == Access::Write;
                    if !ok {
                        refused.push((t.clone(), *h));
                    }
                    ok
                });
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.remote_heads = heads;
                }
            }
        }
        for (t, h) in refused {
            self.refuse_head(&peer, t, h);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let addr = c.addr;
        let direction = c.direction;
        // Two connections to one peer (both dialled at once): keep the one opened by
        // the node with the smaller id, which both ends compute alike.
        let initiator = |c: &Conn| match c.direction {
            // Both are ready here, so both keys are known; `None` (never
            // seen) would sort first, as the all-zero key did.
            Direction::Outbound => Some(self.me.node_id),
            Direction::Inbound => c.peer(),
        };
        let mine = initiator(&self.conns[&conn]);
        let dup = self
            .conns
            .values()
            .find(|o| o.id != conn && o.state() == ConnState::Ready && o.peer() == Some(peer))
            .map(|o| (o.id, initiator(o), o.route.is_some()));
        let new_routed = self.conns[&conn].route.is_some();
        if let Some((other, their_init, other_routed)) = dup {
            // A direct connection always beats a routed session to the same peer.
            let keep_new = if new_routed != other_routed {
                !new_routed
            } else {
                mine < their_init || (mine == their_init && conn < other)
            };
            let loser = if keep_new { other } else { conn };
            let winner = if keep_new { conn } else { other };
            self.close(loser, CloseReason::Duplicate);
            // A Connect whose own dial lost the tie is still connected.
            if let Some(cmd) = self.dialers.connect_waiters.remove(&loser) {
                self.done(
                    cmd,
                    true,
                    format!("connected to {} (connection {winner})", peer.short()),
                );
            }
            if loser == conn {
                return;
            }
        }
        if let Some(d) = self.discovery.as_mut() {
            d.mark_connected(&peer.to_hex());
        }
        if !new_routed {
            self.update_links(now);
            self.send_database(now, conn);
            self.send_peer_list(now, conn);
        }
        self.load_tracked(&peer, store);
        let record = self.puller.peers.entry(peer).or_default();
        record.last_seen = Some(now);
        self.dialers.connected(conn);
        self.emit(Event::PeerConnected {
            peer,
            conn,
            addr,
            direction,
        });
        if let Some(cmd) = self.dialers.connect_waiters.remove(&conn) {
            self.done(
                cmd,
                true,
                format!("connected to {} at {addr}", peer.short()),
            );
        }
        self.join_conn_ended(now, conn, Some(&peer), true, "");
        self.announce_since_hello(now, conn, store);
        if self.cfg.sync.auto_sync {
            self.request_pull(now, conn, store, false);
        }
    }

    pub(super) fn on_remote_head(
        &mut self,
        now: Instant,
        conn: ConnId,
        repo: &str,
        timeline: TimelineName,
        head: ObjectId,
        store: &dyn Store,
    ) {
        if repo != store.repo_id() {
            return;
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.shares_repo {
            return;
        }
        let Some(peer) = c.ready_peer() else { return };
        if self.access(&peer, &timeline) < Access::Write {
            return self.refuse_head(&peer, timeline, head);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // A head we already have costs one file read, not a look at every
        // timeline (a peer announcing 1,000 of them would cost a million).
        let ours = store.has(&head) && store.head(&timeline) == Some(head);
        c.remote_heads.insert(timeline.clone(), head);
        if ours {
            // Both heads agree now: a divergence with this peer is resolved
            // (what `request_pull` would have found).
            self.puller.conflicts.remove(&(timeline, peer));
        } else if self.cfg.sync.auto_sync {
            self.request_pull(now, conn, store, false);
        }
    }
}
