//! The mesh inside the node: link-state flooding, relaying other nodes' frames,
//! and end-to-end sessions to nodes reached only through relays.
//!
//! A routed session is an ordinary connection (`Conn`) with no socket: its Noise
//! handshake and records are carried in `routed` frames hop by hop, so relays see
//! only ciphertext and cannot forge, reorder, replay or drop a record without the
//! end-to-end channel failing. When that happens the session is closed, the
//! relays on its path are avoided for a while, and a new session is opened on
//! another path. The sync protocol runs over the session unchanged.

use core::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::conn::{Conn, Route};
use super::routed::ROUTED_CHUNK;
use super::{ConnId, ConnState, Direction, Node};
use crate::NodeId;
use crate::mesh::{DatabaseSummary, LinkInfo, Lsa, Mesh, MeshConfig, MeshError, MeshStats};
use crate::noise::Role;
use crate::store::Store;
use crate::time::Instant;
use crate::wire::{Message, PeerDiscovery, PeerInfo, RoutedHeader};
use plan::{Arrival, HOP_QUEUE_LIMIT, Step};

/// How long relays on a failed session's path are avoided.
const SUSPECT_FOR: Duration = Duration::from_secs(300);
/// Wait before opening another routed session to the same node.
const ROUTED_RETRY: Duration = Duration::from_secs(5);
/// How often the node reconsiders routed sessions and healing.
const MESH_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often a node compares link-state databases with one random neighbour:
/// floods skip neighbours that are believed to have an advertisement already,
/// and this repairs what a stale belief (or a lost connection) made them miss,
/// at the cost of one summary per node per interval.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Most routed sessions a node opens.
const MAX_ROUTED_SESSIONS: usize = 8;
/// Wait before dialling a heard-of node again.
const HEAL_RETRY: Duration = Duration::from_secs(30);
mod plan;

/// Hops a routed frame may take.
pub(super) const MAX_HOPS: u8 = 8;

/// Where a routed session's peer is, shown in `peers`.
pub(super) fn routed_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

/// Longest wait, after hearing of a node, before dialling it to heal a split
/// mesh instead of waiting for a route to it to appear.
const HEAL_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl Node {
    pub(super) fn mesh_init(&mut self, now: Instant, store: &dyn Store) {
        // A node without a repository (a clone's probe) has an empty id: it
        // advertises no repository rather than one the mesh would refuse.
        let repos = Some(store.repo_id())
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect();
        self.mesh = Some(
            Mesh::new(
                MeshConfig::from_settings(&self.cfg.mesh),
                self.me.hex.clone(),
                repos,
                now,
            )
            .signed(&self.me.keypair),
        );
    }

    /// Re-advertises our direct links after a connection came or went, or an RTT
    /// moved, and floods the new advertisement.
    pub(super) fn update_links(&mut self, now: Instant) {
        let links: Vec<LinkInfo> = self
            .conns
            .values()
            .filter(|c| c.state() == ConnState::Ready && c.route.is_none())
            // A link is advertised once its round-trip time is measured (the
            // first ping goes out when the connection is ready): advertising
            // a guess first would flood the mesh twice for every new link.
            .filter_map(|c| {
                Some(LinkInfo {
                    peer: c.peer()?.to_hex(),
                    rtt_us: (c.rtt?.as_micros() as u64).max(1),
                })
            })
            .collect();
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        if let Some(lsa) = mesh.set_links(links, now) {
            self.flood(now, lsa, None);
        }
    }

    /// Sends `lsa` to our neighbours: all of them for our own advertisements;
    /// for one received from `except`, all but those that neighbour or the
    /// origin has sent it to already (see [`Mesh::flood_reached`]).
    fn flood(&mut self, now: Instant, lsa: Lsa, except: Option<NodeId>) {
        let mesh = self.mesh.as_ref();
        let targets = plan::flood_targets(&self.direct_neighbours(), except, |peer, from| {
            mesh.is_some_and(|m| m.flood_reached(&peer.to_hex(), &from.to_hex(), &lsa.origin))
        });
        let message = Message::Topology(lsa);
        let json = crate::wire::encode_message(&message);
        for t in targets {
            self.send_encoded(now, t, &message, &json, &[]);
        }
    }

    /// The mesh's counters (`None` before the first tick).
    pub fn mesh_stats(&self) -> Option<&MeshStats> {
        self.mesh.as_ref().map(Mesh::stats)
    }

    /// Every advertisement the mesh holds, ours first, as it would send them
    /// to a new neighbour (empty before the first tick).
    pub fn mesh_database(&self) -> Vec<Lsa> {
        self.mesh.as_ref().map(Mesh::database).unwrap_or_default()
    }

    pub(super) fn on_lsa(&mut self, now: Instant, conn: ConnId, lsa: Lsa, store: &dyn Store) {
        let Some(from) = self.conns.get(&conn).and_then(|c| c.peer()) else {
            return;
        };
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        match mesh.handle_lsa(&from.to_hex(), lsa, now) {
            Ok(Some(onward)) => {
                self.flood(now, onward, Some(from));
                let _ = store;
            }
            Ok(None) => {}
            // Dropped, counted and logged with this neighbour by the mesh. The
            // connection stays: only the advertisement was false, and what
            // the neighbour sends of its own is authenticated by the session.
            Err(MeshError::Unsigned | MeshError::BadSignature) => {}
            Err(e) => self.violation(conn, format!("bad topology advertisement: {e}")),
        }
    }

    pub(super) fn mesh_timeout(&mut self, now: Instant, store: &dyn Store) {
        self.drain_relay_backlog(now);
        let lsa = self.mesh.as_mut().and_then(|m| m.handle_timeout(now));
        if let Some(lsa) = lsa {
            self.flood(now, lsa, None);
        }
        self.routed.forget_suspects(now);
        // Deciding whom to reach through the mesh walks the graph: once a second
        // is plenty, and keeps a large mesh cheap.
        if now >= self.routed.next_mesh_check {
            self.routed.next_mesh_check = now + MESH_CHECK_EVERY;
            if now >= self.routed.next_summary {
                self.routed.next_summary = now + SUMMARY_EVERY;
                self.anti_entropy(now);
            }
            self.connect_routed(now, store);
            self.heal(now);
        }
    }

    /// Every ready socket connection, with its peer.
    fn direct_neighbours(&self) -> Vec<(ConnId, NodeId)> {
        self.conns
            .values()
            .filter(|c| c.route.is_none())
            .filter_map(|c| Some((c.id, c.ready_peer()?)))
            .collect()
    }

    /// The socket connection to a peer, if one is ready.
    fn direct_conn(&self, peer: &NodeId) -> Option<ConnId> {
        self.conns
            .values()
            .find(|c| {
                c.route.is_none()
                    && c.state() == ConnState::Ready
                    && c.peer().as_ref() == Some(peer)
            })
            .map(|c| c.id)
    }

    pub(super) fn has_session_with(&self, peer: &NodeId) -> bool {
        self.conns.values().any(|c| {
            c.state() != ConnState::Closed
                && (c.peer().as_ref() == Some(peer)
                    || c.route.as_ref().is_some_and(|r| r.dst == *peer))
        })
    }

    /// Opens routed sessions to nodes that serve our repository and that we have
    /// no connection to (healing a split topology, reaching past a NAT or a
    /// firewall rule).
    /// Opens routed sessions to nodes that serve our repository but that the
    /// repository's own holders cannot pass seals to: those reached only through
    /// nodes without the repository (relays), or past a split. Where a chain of
    /// holders connects us, ordinary syncing carries every seal and no routed
    /// session is needed, so a mesh where everyone holds the repository opens none.
    pub(super) fn connect_routed(&mut self, now: Instant, store: &dyn Store) {
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        let routed_now = self.conns.values().filter(|c| c.route.is_some()).count();
        let candidates: Vec<NodeId> = mesh
            .holders_cut_off(store.repo_id())
            .iter()
            .filter_map(|n| NodeId::parse_canonical(n).ok())
            .take(MAX_ROUTED_SESSIONS.saturating_sub(routed_now))
            .collect();
        for dst in candidates {
            if self.has_session_with(&dst)
                || self.routed.retry.get(&dst).is_some_and(|t| *t > now)
                || self.peer_slots_used() >= self.cfg.connections.max_peers
            {
                continue;
            }
            let session = self.rng.next_u64();
            let suspects = self.routed.suspect_set();
            let Some(first) = self
                .mesh
                .as_mut()
                .and_then(|m| m.next_hop(&dst.to_hex(), session, &suspects, now))
                .and_then(|p| NodeId::parse_canonical(&p).ok())
            else {
                continue;
            };
            if self.direct_conn(&first).is_none() {
                continue;
            }
            self.routed.retry.insert(dst, now + ROUTED_RETRY);
            tracing::info!(
                peer = dst.short(),
                via = first.short(),
                "opening a routed session"
            );
            self.open_routed(now, dst, session, Role::Initiator);
        }
    }

    fn open_routed(
        &mut self,
        now: Instant,
        dst: NodeId,
        session: u64,
        role: Role,
    ) -> Option<ConnId> {
        let id = self.alloc_conn();
        let direction = match role {
            Role::Initiator => Direction::Outbound,
            Role::Responder => Direction::Inbound,
        };
        let mut c = Conn::new(
            id,
            routed_addr(),
            direction,
            now,
            self.cfg.connections.heartbeat_interval,
            self.frame_limits().frame,
        );
        let mut s = self.new_session(role, id).ok()?;
        s.start(&mut c.out);
        c.noise = Some(s);
        c.set_state(ConnState::Handshaking);
        c.route = Some(Route { dst, session });
        self.conns.insert(id, c);
        Some(id)
    }

    /// A routed frame arrived: deliver it to its session, or relay it onward.
    pub(super) fn on_routed(
        &mut self,
        now: Instant,
        conn: ConnId,
        h: RoutedHeader,
        bin: Vec<u8>,
        store: &dyn Store,
    ) {
        let src = match plan::arrival(self.me.node_id, self.cfg.mesh.relay, &h) {
            Arrival::Deliver { src } => src,
            Arrival::Drop => {
                self.out.stats.relay_dropped += 1;
                return;
            }
            Arrival::Relay => return self.relay(now, conn, h, bin),
        };
        {
            let existing = self
                .conns
                .values()
                .find(|c| {
                    c.route
                        .as_ref()
                        .is_some_and(|r| r.dst == src && r.session == h.session)
                })
                .map(|c| c.id);
            let target = match existing {
                Some(t) => Some(t),
                None if self.peer_slots_used() < self.cfg.connections.max_peers => {
                    self.open_routed(now, src, h.session, Role::Responder)
                }
                None => None,
            };
            if let Some(t) = target {
                self.handle_bytes(now, t, &bin, store);
            }
        }
    }

    /// Passes someone else's routed frame on, never back to the neighbour
    /// it came from nor through a suspected relay (see [`plan::relay_step`]).
    fn relay(&mut self, now: Instant, conn: ConnId, h: RoutedHeader, bin: Vec<u8>) {
        let mut avoid = self.routed.suspect_set();
        if let Some(from) = self.conns.get(&conn).and_then(|c| c.peer()) {
            avoid.insert(from.to_hex());
        }
        let next = self
            .mesh
            .as_mut()
            .and_then(|m| m.next_hop(&h.dst.to_hex(), h.session, &avoid, now))
            .and_then(|p| NodeId::parse_canonical(&p).ok())
            .and_then(|p| self.direct_conn(&p))
            .and_then(|n| Some((n, self.conns.get(&n)?.queued())));
        // Over `relay_rate`, frames wait (in order) for the allowance to
        // refill instead of being dropped: dropping would look like tampering
        // to the two ends. Only beyond a bounded backlog are they dropped.
        let (rate, len) = (self.cfg.mesh.relay_rate, bin.len());
        let waiting = !self.routed.backlog.is_empty();
        let routed = &mut self.routed;
        match plan::relay_step(next, waiting, || routed.relay_allowed(now, len, rate)) {
            Step::Send(next) => self.forward_routed(now, next, h, bin),
            Step::Hold(next) => {
                if !self.routed.hold(next, h, bin) {
                    self.out.stats.relay_dropped += 1;
                }
            }
            Step::Drop => self.out.stats.relay_dropped += 1,
        }
    }

    /// Sends the relay backlog on as far as `relay_rate` allows (frames whose
    /// next hop went away meanwhile are dropped).
    pub(super) fn drain_relay_backlog(&mut self, now: Instant) {
        let rate = self.cfg.mesh.relay_rate;
        while let Some((next, h, bin)) = self.routed.release(now, rate) {
            let ready = self
                .conns
                .get(&next)
                .is_some_and(|c| c.state() == ConnState::Ready);
            if ready {
                self.forward_routed(now, next, h, bin);
            } else {
                self.out.stats.relay_dropped += 1;
            }
        }
    }

    /// Relays one routed frame to `next` (the checks are done).
    fn forward_routed(&mut self, now: Instant, next: ConnId, h: RoutedHeader, bin: Vec<u8>) {
        self.out.stats.relayed_bytes += bin.len() as u64;
        self.out.stats.relayed_frames += 1;
        let h = RoutedHeader {
            hops_left: h.hops_left - 1,
            ..h
        };
        let mut bin = bin;
        let (copies, corrupt) =
            plan::fault_plan(self.cfg.mesh.fault_relay, self.out.stats.relayed_frames);
        if corrupt && let Some(b) = bin.last_mut() {
            *b ^= 0x40;
        }
        for _ in 0..copies {
            self.send_with(now, next, Message::Routed(h.clone()), &bin);
        }
    }

    /// Sends our database summary to one random direct neighbour; it answers
    /// with whatever we lack (see [`SUMMARY_EVERY`]).
    fn anti_entropy(&mut self, now: Instant) {
        let direct: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.state() == ConnState::Ready && c.route.is_none() && c.peer().is_some())
            .map(|c| c.id)
            .filter(|&c| self.summaries_with(c))
            .collect();
        if direct.is_empty() {
            return;
        }
        let pick = direct[self.rng.below(direct.len() as u64) as usize];
        self.send_database(now, pick);
    }

    /// Tells a new neighbour what our link-state database holds; it answers
    /// with what we lack, and we with what it lacks, so both can route at once
    /// instead of waiting for every node's next advertisement.
    ///
    /// With a peer that does not offer `topology-summary`, the whole database
    /// is sent instead, one advertisement per message.
    pub(super) fn send_database(&mut self, now: Instant, to: ConnId) {
        let Some(mesh) = self.mesh.as_ref() else {
            return;
        };
        if self.summaries_with(to) {
            let summary = mesh.summary();
            self.send(now, to, Message::TopologySummary(summary));
        } else {
            for lsa in mesh.database() {
                self.send(now, to, Message::Topology(lsa));
            }
        }
    }

    /// Both ends offer the `topology-summary` feature on this connection.
    fn summaries_with(&self, conn: ConnId) -> bool {
        const F: &str = "topology-summary";
        !self.cfg.connections.features_off.iter().any(|f| f == F)
            && self
                .conns
                .get(&conn)
                .is_some_and(|c| c.remote_features.iter().any(|f| f == F))
    }

    pub(super) fn on_topology_summary(
        &mut self,
        now: Instant,
        conn: ConnId,
        summary: DatabaseSummary,
    ) {
        let Some(from) = self.conns.get(&conn).and_then(|c| c.peer()) else {
            return;
        };
        let Some(mesh) = self.mesh.as_mut() else {
            return;
        };
        match mesh.handle_summary(&from.to_hex(), &summary, now) {
            Ok(lsas) => {
                for lsa in lsas {
                    self.send(now, conn, Message::Topology(lsa));
                }
            }
            Err(e) => self.violation(conn, format!("bad topology summary: {e}")),
        }
    }

    /// Tells a new neighbour the addresses of our other direct peers, so nodes
    /// learn of peers beyond their own discovery and can heal a split mesh.
    pub(super) fn send_peer_list(&mut self, now: Instant, to: ConnId) {
        let peers: Vec<PeerInfo> = self
            .conns
            .values()
            .filter(|c| c.id != to && c.state() == ConnState::Ready && c.route.is_none())
            .filter_map(|c| {
                Some(PeerInfo {
                    node: c.peer()?,
                    addr: c.dial_addr?.to_string(),
                })
            })
            .take(64)
            .collect();
        if !peers.is_empty() {
            self.send(now, to, Message::PeerDiscovery(PeerDiscovery { peers }));
        }
    }

    pub(super) fn on_peer_list(&mut self, now: Instant, list: PeerDiscovery) {
        for p in list.peers.into_iter().take(256) {
            let Ok(addr) = p.addr.parse::<SocketAddr>() else {
                continue;
            };
            let node = p.node;
            if node == self.me.node_id || !self.admission.filter.allows(addr.ip()) {
                continue;
            }
            self.dialers.heard_of(node, addr, now);
        }
    }

    /// Dials nodes we heard of that the mesh cannot reach: after a split, the
    /// parts find each other again through addresses learned before it.
    pub(super) fn heal(&mut self, now: Instant) {
        let candidates: Vec<(NodeId, SocketAddr)> = self
            .dialers
            .heard
            .iter()
            // Give the mesh time to show a route first: changes flood at once,
            // so a short grace is enough even when the refresh interval is long.
            .filter(|(_, (_, since))| {
                now.saturating_since(*since) >= self.cfg.mesh.topology_interval.min(HEAL_GRACE)
            })
            .filter(|(n, _)| !self.has_session_with(n))
            .filter(|(n, _)| self.dialers.heal_retry.get(*n).is_none_or(|t| *t <= now))
            .map(|(n, (a, _))| (*n, *a))
            .collect();
        for (node, addr) in candidates {
            if self.peer_slots_used() >= self.cfg.connections.max_peers {
                break;
            }
            let reachable = self
                .mesh
                .as_mut()
                .is_some_and(|m| m.route(&node.to_hex(), now).is_some());
            if reachable || self.cfg.mesh.no_direct.contains(&node) {
                continue;
            }
            tracing::info!(peer = node.short(), %addr, "dialling a peer heard of, to heal the mesh");
            self.dialers.heal_retry.insert(node, now + HEAL_RETRY);
            self.dial(now, addr);
        }
    }

    /// Moves the encrypted bytes of routed sessions into `routed` frames on their
    /// next hops, as far as those hops have room.
    pub(super) fn pump_routed(&mut self, now: Instant, store: &dyn Store) {
        let routed: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.route.is_some() && c.state() != ConnState::Closed)
            .map(|c| c.id)
            .collect();
        for id in routed {
            let _ = self.fill_transmit(now, id, store);
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            let Some(route) = c.route.clone() else {
                continue;
            };
            if c.pending_out() == 0 {
                continue;
            }
            let suspects = self.routed.suspect_set();
            let next = self
                .mesh
                .as_mut()
                .and_then(|m| m.next_hop(&route.dst.to_hex(), route.session, &suspects, now))
                .and_then(|p| NodeId::parse_canonical(&p).ok())
                .and_then(|p| self.direct_conn(&p));
            let Some(next) = next else {
                // No path right now: hold the bytes; the session's timers decide.
                continue;
            };
            loop {
                let room = self
                    .conns
                    .get(&next)
                    .is_some_and(|n| n.queued() < HOP_QUEUE_LIMIT);
                let Some(c) = self.conns.get_mut(&id) else {
                    break;
                };
                c.blocked = !room;
                if !room {
                    break;
                }
                let chunk = c.take_out(ROUTED_CHUNK);
                if chunk.is_empty() {
                    break;
                }
                let h = RoutedHeader {
                    session: route.session,
                    src: self.me.node_id,
                    dst: route.dst,
                    hops_left: MAX_HOPS,
                };
                self.send_with(now, next, Message::Routed(h), &chunk);
            }
        }
    }

    /// A routed session failed end to end: its relays are suspected for a while,
    /// so the next session takes another path if there is one.
    pub(super) fn suspect_path(&mut self, now: Instant, conn: ConnId) {
        let Some(route) = self.conns.get(&conn).and_then(|c| c.route.clone()) else {
            return;
        };
        let suspects = self.routed.suspect_set();
        let Some((path, _)) = self
            .mesh
            .as_mut()
            .and_then(|m| m.session_route(&route.dst.to_hex(), route.session, &suspects, now))
        else {
            return;
        };
        let path: Vec<NodeId> = path
            .iter()
            .filter_map(|n| NodeId::parse_canonical(n).ok())
            .collect();
        for relay in plan::relays_on(&path, self.me.node_id, route.dst) {
            tracing::warn!(
                relay = relay.short(),
                "avoiding a relay after a routed session failed"
            );
            self.routed.suspect(relay, now + SUSPECT_FOR);
        }
        self.routed.retry.remove(&route.dst);
    }
}
