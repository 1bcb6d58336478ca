//! The node's side of [`crate::trust`]: what happens to a connection between
//! the end of the Noise handshake and the first `handshake` message.
//!
//! Decisions live in [`Trust`](crate::trust::Trust); this file only routes a
//! connection through them: admit (send our `handshake`), hold for a
//! `redeem` (while an invitation is open), or refuse (send `refused`, flush,
//! close). A refused connection never receives our `handshake`, so it learns
//! no timeline, head or object.

use super::CloseReason;
use super::conn::{ConnState, Direction};
use super::{CommandId, ConnId, Event, Node};
use crate::NodeId;
use crate::access::Access;
use crate::config::AccessSettings;
use crate::store::Store;
use crate::time::Instant;
use crate::trust::{self, Pending, Ticket};
use crate::wire::{self, Message};

/// A `redeem` in progress on the newcomer's side: the addresses not tried yet.
#[derive(Debug)]
pub(super) struct Joining {
    pub cmd: CommandId,
    pub ticket: Ticket,
    pub next_addr: usize,
    /// The connection redeeming now.
    pub conn: Option<ConnId>,
}

impl Node {
    /// Keys refused lately, for `ivaldi p2p pending`.
    pub fn pending(&self) -> Vec<Pending> {
        self.admission.trust.pending()
    }

    /// Admits a key for this run without touching the configuration (it
    /// is not written anywhere). The virtual test network uses it to make
    /// its nodes one team.
    pub fn grant_trust(&mut self, id: NodeId, access: Access) {
        self.admission.trust.grant(id, access);
    }

    /// Replaces the open invitations (the shell owns them on disk and
    /// converts their wall-clock expiry to this node's [`Instant`]s).
    pub fn set_invites(&mut self, invites: Vec<trust::Invite>) {
        self.admission.trust.set_invites(invites);
    }

    /// Decides, right after the Noise handshake, whether `peer` may go on.
    /// Returns `true` when our `handshake` message should be sent now.
    pub(super) fn admit_established(&mut self, now: Instant, conn: ConnId, peer: &NodeId) -> bool {
        self.send_redeem(now, conn);
        if self.admission.trust.admits(peer).is_some() {
            return self.take_peer_slot(now, conn);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.direction == Direction::Inbound && c.route.is_none() {
            // Its first message decides: a `redeem` is checked (and a spent
            // or expired ticket is named as such); anything else is refused.
            c.set_state(ConnState::Admission);
            return false;
        }
        let reason = trust::refusal_text(peer, &self.me.node_id);
        self.refuse(now, conn, reason);
        false
    }

    /// Newcomer's side: prove the invitation first thing on the session.
    fn send_redeem(&mut self, now: Instant, conn: ConnId) {
        let own = self.me.keypair.public;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(secret) = c.redeem.take() else {
            return;
        };
        let Some(noise) = c.noise.as_ref() else {
            return;
        };
        let (Some(hh), Some(inviter)) = (noise.handshake_hash(), noise.remote_static()) else {
            return;
        };
        let proof = trust::proof(&secret, hh, &own, &inviter);
        let msg = Message::Redeem(wire::Redeem {
            invite: trust::invite_id(&secret),
            proof: proof.to_hex().to_string(),
        });
        self.send(now, conn, msg);
    }

    /// Refuses a connection: the reason goes to the peer in plain words, and
    /// the connection closes as soon as that message is out.
    pub(super) fn refuse(&mut self, now: Instant, conn: ConnId, reason: String) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        // Refusals follow the Noise handshake: there is a key to refuse.
        let Some(peer) = c.peer() else { return };
        let addr = c.addr;
        let routed = c.route.is_some();
        tracing::warn!(peer = %peer, %addr, %reason, "refusing a node that is not trusted");
        self.admission.trust.record_refusal(now, peer, addr);
        self.out.stats.untrusted_refused += 1;
        self.emit(Event::PeerRefused {
            peer,
            addr,
            reason: reason.clone(),
        });
        if let Some(c) = self.conns.get_mut(&conn) {
            c.set_state(ConnState::Refusing);
            c.refusing = Some(reason.clone());
        }
        self.send(now, conn, Message::Refused(wire::Refused { reason }));
        if routed {
            // Routed sessions have no socket of their own to flush.
            self.close(conn, CloseReason::Refused("not trusted".into()));
        }
    }

    /// A connection in [`ConnState::Admission`] sent its first message.
    pub(super) fn on_admission_message(
        &mut self,
        now: Instant,
        conn: ConnId,
        message: Message,
        store: &dyn Store,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(peer) = c.peer() else { return };
        let Message::Redeem(r) = message else {
            let reason = trust::refusal_text(&peer, &self.me.node_id);
            return self.refuse(now, conn, reason);
        };
        let keys = c
            .noise
            .as_ref()
            .and_then(|n| Some((n.handshake_hash()?.to_vec(), n.remote_static()?)));
        let claimed = crate::node::unhex32(&r.proof);
        let result = match (keys, claimed) {
            (Some((hh, joiner)), Some(claimed)) => self.admission.trust.redeem(
                now,
                &r.invite,
                &claimed,
                &hh,
                &joiner,
                &self.me.keypair.public,
            ),
            _ => Err(trust::RedeemError::BadProof(r.invite.clone())),
        };
        match result {
            Ok(g) => {
                tracing::info!(peer = %peer, invite = %g.invite, access = ?g.access, "invitation redeemed");
                self.emit(Event::InviteRedeemed {
                    peer,
                    invite: g.invite,
                    access: g.access,
                    uses_left: g.uses_left,
                });
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.set_state(ConnState::AwaitHello);
                }
                if self.take_peer_slot(now, conn) {
                    self.send_hello(now, conn, &peer, store);
                }
            }
            Err(e) => self.refuse(now, conn, e.to_string()),
        }
    }

    /// The peer refused us: keep its words as the close reason.
    pub(super) fn on_refused(&mut self, conn: ConnId, r: wire::Refused) {
        let peer = self
            .conns
            .get(&conn)
            .and_then(|c| c.peer())
            .unwrap_or_default();
        let mut reason = r.reason;
        reason.truncate(1024);
        tracing::warn!(peer = peer.short(), %reason, "refused by peer");
        self.close(conn, CloseReason::RefusedBy { peer, reason });
    }

    /// Closes every connection the current trust settings no longer allow,
    /// after a configuration change. Returns how many were closed.
    pub(super) fn enforce_trust(&mut self) -> usize {
        let doomed: Vec<(ConnId, String)> = self
            .conns
            .values()
            .filter(|c| !matches!(c.state(), ConnState::Closed | ConnState::Dialing))
            .filter_map(|c| {
                let peer = &c.peer()?;
                let outside = c.route.is_none() && !self.admission.filter.allows(c.addr.ip());
                let untrusted = self.admission.trust.admits(peer).is_none()
                    && !matches!(c.state(), ConnState::Admission | ConnState::Refusing);
                (outside || untrusted).then(|| {
                    let why = if outside {
                        "its address is no longer in allowed_networks"
                    } else {
                        "it is no longer trusted"
                    };
                    (c.id, format!("{} {why}", peer.short()))
                })
            })
            .collect();
        for (conn, why) in &doomed {
            tracing::info!(conn, "closing: {why}");
            self.close(*conn, CloseReason::Closed(why.clone()));
        }
        doomed.len()
    }

    /// `Command::Join`: dial the ticket's addresses one after the other and
    /// redeem the invitation on the first that answers.
    pub(super) fn start_join(&mut self, now: Instant, cmd: CommandId, ticket: Ticket) {
        // The ticket names the inviter's key: that key is trusted from now on
        // (the shell also writes it into trusted_peers).
        self.admission.trust.grant(ticket.node_id(), Access::Write);
        self.admission.joining = Some(Joining {
            cmd,
            ticket,
            next_addr: 0,
            conn: None,
        });
        self.join_next(now, None);
    }

    /// Dials the next address of the ticket being redeemed, or gives up.
    pub(super) fn join_next(&mut self, now: Instant, failure: Option<&str>) {
        let Some(j) = self.admission.joining.as_mut() else {
            return;
        };
        let Some(addr) = j.ticket.addrs.get(j.next_addr).copied() else {
            let cmd = j.cmd;
            let tried = j.ticket.addrs.len();
            self.admission.joining = None;
            let why = failure.unwrap_or("no address answered");
            return self.done(
                cmd,
                false,
                format!("could not join through the ticket ({tried} address(es) tried): {why}"),
            );
        };
        j.next_addr += 1;
        let secret = j.ticket.secret;
        match self.dial_once(now, addr) {
            Some(conn) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.redeem = Some(secret);
                }
                if let Some(j) = self.admission.joining.as_mut() {
                    j.conn = Some(conn);
                }
            }
            None => self.join_next(now, Some("no free connection slot")),
        }
    }

    /// A connection of the join ended: finish the command or try the next
    /// address. `ok` is whether it got to `Ready`.
    pub(super) fn join_conn_ended(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: Option<&NodeId>,
        ok: bool,
        reason: &str,
    ) {
        let Some(j) = self.admission.joining.as_ref() else {
            return;
        };
        if j.conn != Some(conn) {
            return;
        }
        let addr = self.conns.get(&conn).map_or_else(
            || {
                j.next_addr
                    .checked_sub(1)
                    .and_then(|i| j.ticket.addrs.get(i))
                    .map_or_else(|| "the inviter".to_owned(), |a| a.to_string())
            },
            |c| c.addr.to_string(),
        );
        if ok {
            let cmd = j.cmd;
            let inviter = j.ticket.node_id();
            self.admission.joining = None;
            if peer.is_some_and(|p| *p != inviter) {
                return self.done(
                    cmd,
                    false,
                    format!(
                        "{addr} is not the node the ticket names ({})",
                        inviter.short()
                    ),
                );
            }
            return self.done(cmd, true, format!("joined {} at {addr}", inviter.short()));
        }
        self.join_next(now, Some(reason));
    }

    /// Our `handshake` message, once the peer is admitted.
    pub(super) fn send_hello(
        &mut self,
        now: Instant,
        conn: ConnId,
        peer: &NodeId,
        store: &dyn Store,
    ) {
        let hello = self.hello(store, peer);
        let restricted = self.access_restricted();
        if let Some(c) = self.conns.get_mut(&conn) {
            if restricted {
                c.advertised
                    .extend(hello.repos.iter().flat_map(|r| r.heads.values().copied()));
            }
            c.hello_heads = hello
                .repos
                .iter()
                .find(|r| r.id == store.repo_id())
                .map(|r| r.heads.clone())
                .unwrap_or_default();
        }
        self.send(now, conn, Message::Handshake(hello));
    }

    /// Whether per-timeline access must be checked for anyone (access rules,
    /// or a key trusted for reading only).
    pub(super) fn access_restricted(&self) -> bool {
        !self.cfg.access.rules.is_empty() || self.admission.trust.limits_anyone()
    }

    /// Takes the trust settings of a new configuration (before it replaces
    /// the old one). Returns whether anyone's access may have narrowed: the
    /// access rules changed, a trusted peer's access went down, or open mode
    /// went down. Widening never closes a connection.
    pub(super) fn retrust(&mut self, new: &AccessSettings) -> bool {
        let old = &self.cfg.access;
        for gone in old
            .trusted_peers
            .iter()
            .filter(|p| !new.trusted_peers.iter().any(|q| q.id == p.id))
        {
            self.admission.trust.forget(&gone.id);
        }
        let narrowed = new.rules != old.rules
            || new.peer_groups != old.peer_groups
            || new.trusted_peers.iter().any(|p| {
                old.trusted_peers
                    .iter()
                    .any(|q| q.id == p.id && p.access < q.access)
            })
            || new.open.access() < old.open.access();
        self.admission.trust.configure(new.open, &new.trusted_peers);
        narrowed
    }

    /// After the access rules or a peer's trusted access changed: close the
    /// connections of every peer the change touches, so nothing they started
    /// under the old rules lands; they reconnect under the new ones.
    pub(super) fn enforce_access(&mut self, changed: bool) -> usize {
        if !changed {
            return 0;
        }
        let ready: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.state() == ConnState::Ready)
            .map(|c| c.id)
            .collect();
        for conn in &ready {
            self.close(
                *conn,
                CloseReason::Closed(
                    "access rules changed (reconnecting under the new rules)".into(),
                ),
            );
        }
        ready.len()
    }
}
