//! Local store failures during a sync end that sync, never the connection.
//!
//! A store that cannot read an object is a local condition (a pack another
//! process is still writing, a damaged file), not a fault of the peer, and the
//! connection carries other syncs, heartbeats and announcements. So:
//!
//! - **Serving, while planning**: `on_sync_request` answers the request with a
//!   `sync_response` whose `error` says why (already the case before this file).
//! - **Serving, while streaming**: an object of the plan cannot be read. The
//!   serve is dropped and a `sync_complete` with `error` set ends the stream
//!   ([`Node::serve_failed`]); `objects` is how many were sent. The serves
//!   queued behind it go on.
//! - **Pulling**: the puller records the reason as a failed sync
//!   ([`Node::pull_ended_by_peer`]), drops the batch, and pulls again later as
//!   after any failed sync; a local read error while deciding what to land
//!   (`finish_pull`) does the same ([`Node::pull_failed_locally`]).
//!
//! The reason a peer sees is the store error's text, which the shell keeps free
//! of local paths (`shell-smol` `store::read_failed`). A peer that predates the
//! `error` field reads the short `sync_complete` as a count mismatch and closes,
//! which is what it did before.

use super::{ConnId, Node, PullState};
use crate::object::{self, ObjectKind};
use crate::store::{Store, StoreError};
use crate::sync;
use crate::time::Instant;
use crate::wire::{self, Message};

/// What to send for a sync request, or why it is refused: a want that is not
/// a seal here, or a store error while planning (the request is answered
/// with a `sync_response` error; the connection stays).
pub(super) fn plan_serve(
    store: &dyn Store,
    r: &wire::SyncRequest,
) -> Result<sync::SendPlan, String> {
    for w in &r.wants {
        match store.get(w).map(|b| object::kind_of(&b)) {
            Ok(Ok(ObjectKind::Seal)) => {}
            Ok(_) | Err(StoreError::Missing(_)) => return Err(format!("no seal {w} here")),
            Err(e) => return Err(format!("store: {e}")),
        }
    }
    sync::plan_send_with_bases(store, &r.wants, &r.haves, &r.resume)
        .map_err(|e| format!("store: {e}"))
}

impl Node {
    /// The front serve of `conn` could not read an object: end it with a
    /// reason and keep the connection.
    pub(super) fn serve_failed(&mut self, now: Instant, conn: ConnId, reason: String) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(job) = c.serving.pop_front() else {
            return;
        };
        tracing::warn!(
            peer = c.peer().map_or_else(|| "?".to_owned(), |p| p.short()),
            sync = job.sync,
            sent = job.next,
            planned = job.plan.len(),
            %reason,
            "cannot serve a sync: it ends here, the connection stays"
        );
        self.out.stats.serves_failed += 1;
        self.send(
            now,
            conn,
            Message::SyncComplete(wire::SyncComplete {
                sync: job.sync,
                objects: job.next as u64,
                bytes: 0,
                error: Some(reason),
            }),
        );
    }

    /// The peer ended our pull with a reason (`sync_complete.error`): record
    /// it as a failed sync; the connection stays. `false` when no pull of
    /// that id is receiving (the caller treats it as a violation).
    pub(super) fn pull_ended_by_peer(
        &mut self,
        now: Instant,
        conn: ConnId,
        s: &wire::SyncComplete,
    ) -> bool {
        let Some(reason) = &s.error else {
            return false;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let receiving = c
            .pull
            .as_ref()
            .is_some_and(|p| p.sync == s.sync && p.state == PullState::Receiving);
        if !receiving {
            return false;
        }
        let pull = c.pull.take();
        let snap = c.snapshot();
        if let Some(pull) = pull {
            self.end_pull_with(
                now,
                &snap,
                pull,
                Err(format!("peer could not serve: {reason}")),
            );
        }
        true
    }

    /// Deciding what to land failed on a local read: end the pull with the
    /// reason; the connection stays.
    pub(super) fn pull_failed_locally(&mut self, now: Instant, conn: ConnId, reason: String) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let pull = c.pull.take();
        let snap = c.snapshot();
        if let Some(pull) = pull {
            self.end_pull_with(now, &snap, pull, Err(reason));
        }
    }
}
