//! The server: answering a peer's sync request with a send plan, and
//! producing the objects frames of that plan as the socket drains (framing,
//! stored forms, lz4 when it pays); plus announcing this node's heads.
//!
//! A served sync is a [`Serve`] on its connection; nothing is read from the
//! store before the socket has room, which is what bounds memory however
//! large the transfer.

use std::collections::BTreeMap;

use super::conn::Serve;
use super::lz4::compress;
use super::{
    ConnId, ConnState, Event, Node, Output, TRANSMIT_CHUNK, rate, serve_errors, thin, trace_record,
};
use crate::NodeId;
use crate::access::Access;
use crate::id::{IdSet, ObjectId};
use crate::store::Store;
use crate::sync;
use crate::time::Instant;
use crate::timeline::TimelineName;
use crate::wire::{self, Envelope, Message};

/// Concurrent sync requests one peer may have the node serve.
const MAX_SERVES_PER_CONN: usize = 4;

/// Under an upload cap of `slowest` bytes a second (0: none), frames of
/// about a quarter second of it, so a heartbeat queued behind one waits for
/// that frame only.
fn capped_frame(target: usize, slowest: u64) -> usize {
    target.min(usize::try_from(rate::burst(slowest)).unwrap_or(target))
}

/// The node-wide sending side: message numbering, the transmit round robin,
/// the node-wide rate caps and what was last announced.
pub(super) struct Server {
    /// The next envelope id; ids from one sender never repeat.
    pub next_msg: u64,
    /// The connection `poll_transmit` last served, so the next call starts
    /// after it.
    pub last_rr: ConnId,
    /// The node-wide upload and download caps (`upload_rate`,
    /// `download_rate`); each connection has its own per-peer buckets as well.
    pub up: rate::Bucket,
    pub down: rate::Bucket,
    /// The heads last announced to peers.
    pub announced: BTreeMap<TimelineName, ObjectId>,
}

impl Server {
    pub fn new(now: Instant) -> Server {
        Server {
            next_msg: 1,
            last_rr: 0,
            up: rate::cap(0, now),
            down: rate::cap(0, now),
            announced: BTreeMap::new(),
        }
    }

    /// Records `heads` as announced and returns those that changed since
    /// the last call, with the head each replaces.
    pub fn announce(
        &mut self,
        heads: BTreeMap<TimelineName, ObjectId>,
    ) -> Vec<(TimelineName, ObjectId, Option<ObjectId>)> {
        let changed = heads
            .iter()
            .filter(|(t, h)| self.announced.get(*t) != Some(*h))
            .map(|(t, h)| (t.clone(), *h, self.announced.get(t).copied()))
            .collect();
        self.announced = heads;
        changed
    }
}

impl Node {
    pub(super) fn on_sync_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        r: wire::SyncRequest,
        store: &dyn Store,
    ) {
        let refuse = |reason: String| wire::SyncResponse {
            sync: r.sync,
            error: Some(reason),
            objects: 0,
            bytes: 0,
        };
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if r.repo != store.repo_id() || !c.shares_repo {
            return self.send(
                now,
                conn,
                Message::SyncResponse(refuse("repository not served here".into())),
            );
        }
        if c.serving.len() >= MAX_SERVES_PER_CONN {
            return self.send(
                now,
                conn,
                Message::SyncResponse(refuse("too many sync requests in flight".into())),
            );
        }
        if r.wants.len() > 4096 || r.haves.len() > 65_536 {
            return self.violation(conn, "sync request lists too many seals".into());
        }
        if r.resume.len() > sync::MAX_RESUME_HINTS {
            return self.violation(conn, "sync request lists too many resume roots".into());
        }
        if !r.refetch.is_empty() {
            return self.serve_refetch(now, conn, r, store);
        }
        if self.access_restricted() {
            let Some(peer) = c.ready_peer() else { return };
            let readable: IdSet = store
                .heads()
                .unwrap_or_default()
                .into_iter()
                .filter(|(t, _)| self.access(&peer, t) >= Access::Read)
                .map(|(_, h)| h)
                .collect();
            if let Some(w) = r
                .wants
                .iter()
                .find(|w| !readable.contains(*w) && !c.advertised.contains(*w))
            {
                let what = format!("sync request for seal {w}, not a head it may read");
                self.out.stats.access_refused += 1;
                tracing::warn!(peer = peer.short(), "{what}");
                self.emit(Event::AccessRefused {
                    peer,
                    timeline: None,
                    what,
                });
                return self.send(
                    now,
                    conn,
                    Message::SyncResponse(refuse(format!("no seal {w} here"))),
                );
            }
        }
        let plan = match serve_errors::plan_serve(store, &r) {
            Ok(p) => p,
            Err(reason) => return self.send(now, conn, Message::SyncResponse(refuse(reason))),
        };
        // With the puller's `sync started`/`completed` events (same peer pair,
        // same sync id) this lets one sync be followed across both logs.
        tracing::info!(
            peer = self
                .conns
                .get(&conn)
                .and_then(|c| c.peer())
                .map_or_else(|| "?".to_owned(), |p| p.short()),
            sync = r.sync,
            conn,
            objects = plan.order.len(),
            "serving sync request"
        );
        self.accept_serve(now, conn, r.sync, plan);
    }

    /// Accepts a sync request: the response announces `plan`'s size, and the
    /// objects go out as the socket drains (`fill_transmit`).
    pub(super) fn accept_serve(
        &mut self,
        now: Instant,
        conn: ConnId,
        sync: u64,
        plan: sync::SendPlan,
    ) {
        self.send(
            now,
            conn,
            Message::SyncResponse(wire::SyncResponse {
                sync,
                error: None,
                objects: plan.order.len() as u64,
                bytes: 0,
            }),
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            let thin = c.zdelta.then(|| thin::ThinSender::new(&plan));
            c.serving.push_back(Serve::new(sync, plan.order, thin));
        }
    }

    /// Announces to a connection that just became ready the heads that moved
    /// since its handshake advertised them. `announce_heads` skips connections
    /// that are not ready yet and counts such a head as announced, so without
    /// this a seal made while the handshakes cross would reach that peer only
    /// with the timeline's next seal, or never.
    pub(super) fn announce_since_hello(&mut self, now: Instant, conn: ConnId, store: &dyn Store) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let sent = core::mem::take(&mut c.hello_heads);
        if !c.shares_repo {
            return;
        }
        let Some(peer) = c.peer() else { return };
        let Ok(heads) = store.heads() else { return };
        let repo = store.repo_id().to_owned();
        for (timeline, head) in heads {
            let previous = sent.get(&timeline).copied();
            if previous == Some(head) || self.access(&peer, &timeline) < Access::Read {
                continue;
            }
            if self.access_restricted()
                && let Some(c) = self.conns.get_mut(&conn)
            {
                c.advertised.insert(head);
            }
            tracing::debug!(
                peer = peer.short(),
                %timeline,
                head = %head.short(),
                "announcing a head that moved during the handshake"
            );
            self.send(
                now,
                conn,
                Message::TimelineUpdate(wire::TimelineUpdate {
                    repo: repo.clone(),
                    timeline,
                    head,
                    previous,
                }),
            );
        }
    }

    /// Tells every peer about heads that changed since last announced.
    pub(super) fn announce_heads(&mut self, now: Instant, store: &dyn Store) {
        let Ok(heads) = store.heads() else { return };
        let changed = self.server.announce(heads);
        if changed.is_empty() {
            return;
        }
        self.announce_local(now, store);
        let repo = store.repo_id().to_owned();
        let targets: Vec<(ConnId, NodeId)> = self
            .conns
            .values()
            .filter(|c| c.shares_repo)
            .filter_map(|c| Some((c.id, c.ready_peer()?)))
            .collect();
        for (conn, peer) in targets {
            for (timeline, head, previous) in &changed {
                if self.access(&peer, timeline) < Access::Read {
                    continue;
                }
                if self.access_restricted()
                    && let Some(c) = self.conns.get_mut(&conn)
                {
                    c.advertised.insert(*head);
                }
                self.send(
                    now,
                    conn,
                    Message::TimelineUpdate(wire::TimelineUpdate {
                        repo: repo.clone(),
                        timeline: timeline.clone(),
                        head: *head,
                        previous: *previous,
                    }),
                );
            }
        }
    }

    /// Moves queued frames and, when the socket has room, freshly read objects
    /// into the connection's outgoing (encrypted) buffer.
    pub(super) fn fill_transmit(
        &mut self,
        now: Instant,
        conn: ConnId,
        store: &dyn Store,
    ) -> Result<(), ()> {
        let mut max_frame = self.frame_limits().objects_frame;
        // Under an upload cap, bulk data is produced one frame at a time, only
        // when the allowance is there, and in frames of about a quarter
        // second of the slowest cap: a heartbeat queued behind a frame waits
        // for that frame only.
        let mut capped = None;
        if let Some(c) = self.conns.get_mut(&conn)
            && c.route.is_none()
            && !(c.up.unlimited() && self.server.up.unlimited())
        {
            let slowest = [c.up.rate(), self.server.up.rate()]
                .into_iter()
                .filter(|r| *r != 0)
                .min()
                .unwrap_or(0);
            max_frame = capped_frame(max_frame, slowest);
            capped = Some(c.up.available(now).min(self.server.up.available(now)));
        }
        let mut produced_bulk = false;
        let node_id = self.me.node_id;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let (state, peer) = (c.state(), c.peer());
        let mut framer = Framer {
            outbox: &mut self.out,
            next_msg: &mut self.server.next_msg,
            from: node_id,
            now,
            conn,
            peer,
        };
        let Some(noise) = c.noise.as_mut() else {
            return Ok(());
        };
        if !noise.is_established() || state == ConnState::Closed {
            return Ok(());
        }
        while let Some(frame) = c.ctrl.pop_front() {
            if noise.send(&frame, &mut c.out).is_err() {
                return Err(());
            }
        }
        if c.blocked || state != ConnState::Ready {
            return Ok(());
        }
        let mut objects_sent = 0u64;
        let mut bytes_sent = 0u64;
        let mut failure = None;
        if c.out_pos > 0 {
            // Keep the buffer from growing: drop what was already handed out
            // (`Conn::compact_out`, inlined: `noise` borrows `c`).
            c.out.drain(..c.out_pos);
            c.bulk_start = c.bulk_start.saturating_sub(c.out_pos);
            c.bulk_end = c.bulk_end.saturating_sub(c.out_pos);
            c.out_pos = 0;
        }
        while c.out.len() < TRANSMIT_CHUNK {
            if let Some(avail) = capped {
                if c.serving.is_empty()
                    || produced_bulk
                    || c.bulk_end > c.bulk_start
                    || avail < rate::QUANTUM
                {
                    break;
                }
                produced_bulk = true;
                c.bulk_start = c.out.len();
            }
            let Some(job) = c.serving.front_mut() else {
                break;
            };
            let mut bin = std::mem::take(&mut c.bin_buf);
            bin.clear();
            let mut count = 0u32;
            let stored_form = job.thin.is_some();
            if stored_form {
                let (n, b, e) = job.fill_stored(store, &mut bin, max_frame);
                count = n;
                bytes_sent += b;
                failure = e;
            }
            while let Some(id) = job.plan.get(job.next).copied().filter(|_| !stored_form) {
                let enc = match store.get(&id) {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(format!("store: {e}"));
                        break;
                    }
                };
                if count > 0 && bin.len() + enc.len() + 36 > max_frame {
                    break;
                }
                wire::push_object(&mut bin, &id, &enc);
                count += 1;
                job.next += 1;
                bytes_sent += enc.len() as u64;
                if count as usize >= wire::MAX_OBJECTS_PER_FRAME || bin.len() >= max_frame {
                    break;
                }
            }
            if failure.is_some() {
                break;
            }
            let sync = job.sync;
            let done = job.next >= job.plan.len() && job.carry.is_empty();
            if count > 0 {
                objects_sent += u64::from(count);
                let compressed = if c.lz4 && !stored_form && job.try_compress() {
                    let z = compress(&bin);
                    if z.is_none() {
                        job.compress_failed();
                    }
                    z
                } else {
                    None
                };
                let compression = compressed.as_ref().map(|_| "lz4".to_owned());
                let payload: &[u8] = compressed.as_deref().unwrap_or(&bin);
                let header = Message::Objects(wire::ObjectsHeader {
                    sync,
                    count,
                    compression,
                    format: stored_form.then(|| wire::FORMAT_STORED.to_owned()),
                });
                let mut frame = std::mem::take(&mut c.frame_buf);
                let sent = framer.send("objects", header, payload, &mut frame, noise, &mut c.out);
                c.frame_buf = frame;
                sent?;
            }
            c.bin_buf = bin;
            if done {
                let total = job.plan.len() as u64;
                c.serving.pop_front();
                let complete = Message::SyncComplete(wire::SyncComplete {
                    sync,
                    objects: total,
                    bytes: 0,
                    error: None,
                });
                framer.send(
                    "sync_complete",
                    complete,
                    &[],
                    &mut Vec::new(),
                    noise,
                    &mut c.out,
                )?;
            }
        }
        if produced_bulk {
            c.bulk_end = c.out.len();
        }
        self.out.stats.objects_out += objects_sent;
        if objects_sent > 0
            && let Some(r) = peer.and_then(|p| self.puller.peers.get_mut(&p))
        {
            r.objects_out += objects_sent;
            r.bytes_out += bytes_sent;
        }
        match failure {
            Some(f) => {
                self.serve_failed(now, conn, f);
                self.fill_transmit(now, conn, store)
            }
            None => Ok(()),
        }
    }
}

/// What framing a message needs besides the connection it goes to, split
/// from `Node` so it can be used while that connection is borrowed.
struct Framer<'a> {
    outbox: &'a mut super::Outbox,
    next_msg: &'a mut u64,
    from: NodeId,
    now: Instant,
    conn: ConnId,
    peer: Option<NodeId>,
}

impl Framer<'_> {
    /// Frames `message` with `payload` (into `frame`, reused), counts and
    /// traces it as `kind`, and encrypts it onto the connection's `out`.
    fn send(
        &mut self,
        kind: &str,
        message: Message,
        payload: &[u8],
        frame: &mut Vec<u8>,
        noise: &mut crate::noise::Session,
        out: &mut Vec<u8>,
    ) -> Result<(), ()> {
        let env = Envelope {
            id: *self.next_msg,
            from: self.from,
            ts: self.now.as_micros(),
            message,
        };
        *self.next_msg += 1;
        *self
            .outbox
            .stats
            .messages_out
            .entry(kind.into())
            .or_default() += 1;
        frame.clear();
        wire::encode_frame(&env, payload, frame);
        if let Some(r) = trace_record(
            self.outbox.trace,
            self.conn,
            self.peer,
            "out",
            &env.message,
            env.id,
            frame.len(),
        ) {
            self.outbox
                .queue
                .push_back(Output::Event(Event::Message(r)));
        }
        noise.send(frame, out).map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> TimelineName {
        TimelineName::new(s).expect("a valid name")
    }

    #[test]
    fn only_heads_that_moved_are_announced_again() {
        let mut s = Server::new(Instant::ZERO);
        let (a, b) = (ObjectId([1; 32]), ObjectId([2; 32]));
        let first = s.announce([(name("main"), a), (name("dev"), a)].into());
        assert_eq!(first.len(), 2);
        assert!(
            s.announce([(name("main"), a), (name("dev"), a)].into())
                .is_empty()
        );
        let moved = s.announce([(name("main"), b), (name("dev"), a)].into());
        assert_eq!(moved, vec![(name("main"), b, Some(a))]);
    }

    #[test]
    fn an_upload_cap_shrinks_frames_never_grows_them() {
        let target = super::super::frame_limits::OBJECT_FRAME_TARGET;
        assert!(capped_frame(target, 64 * 1024) < target);
        assert_eq!(capped_frame(target, u64::MAX / 2), target);
    }
}
