//! One node-wide budget for the memory peers make the node hold.
//!
//! A peer controls how big a frame it announces (up to `max_message_size`),
//! and the node buffers the frame until it is complete. Without a global
//! bound, many peers each sending most of a large frame and stalling hold
//! `peers × max_message_size` bytes. So every partially received frame
//! *reserves* its whole declared size here as soon as its length prefix
//! arrives, and the sum of reservations plus the bytes queued for sending on
//! every connection must stay within [`Budget::limit`].
//!
//! A reservation that does not fit is refused, and the connection is then:
//! - **closed**, when it is not admitted yet (it is a stranger: nothing of
//!   value is lost, and its frames are small anyway, see
//!   [`super::admission::PRE_ADMISSION_FRAME`]);
//! - **paused**, when it is an admitted peer: `Node::read_budget` returns
//!   `Some(0)` so the owner stops reading its socket (TCP flow control then
//!   slows the sender), and every later `read_budget` call retries the
//!   reservation, which fits again once other frames complete.
//!
//! Frames up to [`ALWAYS_FITS`] are always granted (their bytes still
//! count), so control messages never wait behind bulk data and a node whose
//! budget is full of stalled frames can still answer heartbeats. Frames that
//! already hold a reservation keep it until they complete, so reserved
//! frames always finish and the budget cannot deadlock.
//!
//! Outgoing bytes count against the budget but are never refused here: they
//! are produced only while the socket has room (`set_blocked`) and each
//! connection's queue has its own limit (`send_encoded`).

use super::CloseReason;
use std::collections::{BTreeMap, BTreeSet};

use super::conn::{Conn, ConnState};
use super::{ConnId, Node};

/// The budget when `max_message_size` is small: 64 MiB (see
/// [`super::frame_limits::FrameLimits`]).
pub const DEFAULT_LIMIT: usize = 64 * 1024 * 1024;
/// Frames this small are always granted.
pub const ALWAYS_FITS: usize = 64 * 1024;

/// Reservations of partially received frames, per connection.
pub struct Budget {
    limit: usize,
    reserved: BTreeMap<ConnId, usize>,
    total: usize,
    paused: BTreeSet<ConnId>,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            reserved: BTreeMap::new(),
            total: 0,
            paused: BTreeSet::new(),
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Bytes reserved by every connection together.
    pub fn reserved(&self) -> usize {
        self.total
    }

    /// Bytes reserved by one connection.
    pub fn reserved_by(&self, conn: ConnId) -> usize {
        self.reserved.get(&conn).copied().unwrap_or(0)
    }

    /// Whether `conn` is paused waiting for room.
    pub fn is_paused(&self, conn: ConnId) -> bool {
        self.paused.contains(&conn)
    }

    /// Sets `conn`'s reservation to `bytes` (its partial frame), given that
    /// `outgoing` bytes are queued for sending node-wide. Returns whether it
    /// fits; when it does not, the old reservation stays and the connection
    /// is marked paused. Shrinking always fits.
    pub fn reserve(&mut self, conn: ConnId, bytes: usize, outgoing: usize) -> bool {
        let old = self.reserved_by(conn);
        let others = self.total - old;
        let fits = bytes <= old
            || bytes <= ALWAYS_FITS
            || others.saturating_add(outgoing).saturating_add(bytes) <= self.limit;
        if !fits {
            self.paused.insert(conn);
            return false;
        }
        self.paused.remove(&conn);
        self.total = others + bytes;
        if bytes == 0 {
            self.reserved.remove(&conn);
        } else {
            self.reserved.insert(conn, bytes);
        }
        true
    }

    /// `conn` is gone: its reservation is free.
    pub fn release(&mut self, conn: ConnId) {
        if let Some(n) = self.reserved.remove(&conn) {
            self.total -= n;
        }
        self.paused.remove(&conn);
    }
}

impl Node {
    /// `conn`'s frame decoder holds an incomplete frame: reserves its
    /// declared size, or closes (not admitted) or pauses (admitted) the
    /// connection when the budget has no room.
    pub(super) fn hold_partial_frame(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let need = c.frames.pending();
        let admitted = matches!(c.state(), ConnState::AwaitHello | ConnState::Ready);
        if need <= self.admission.budget.reserved_by(conn) {
            // Shrinking or unchanged: no need to look at the whole node.
            self.admission.budget.reserve(conn, need, 0);
            return;
        }
        let limit = self.frame_limits().budget;
        self.admission.budget.set_limit(limit);
        let outgoing = self.queued_everywhere();
        if self.admission.budget.reserve(conn, need, outgoing) {
            return;
        }
        if admitted {
            self.out.stats.admission.budget_paused += 1;
            tracing::debug!(conn, need, "frame budget spent: pausing the connection");
        } else {
            self.out.stats.admission.budget_closed += 1;
            self.admission.budget.release(conn);
            self.close(conn, CloseReason::BudgetSpent);
        }
    }

    /// Whether `conn` waits for room in the frame budget; retries its
    /// reservation first, so it resumes as soon as other frames complete.
    pub(super) fn budget_paused(&mut self, conn: ConnId) -> bool {
        if !self.admission.budget.is_paused(conn) {
            return false;
        }
        let Some(c) = self.conns.get(&conn) else {
            self.admission.budget.release(conn);
            return false;
        };
        let need = c.frames.pending();
        let outgoing = self.queued_everywhere();
        !self.admission.budget.reserve(conn, need, outgoing)
    }

    /// Bytes queued for sending on every connection.
    fn queued_everywhere(&self) -> usize {
        self.conns.values().map(Conn::queued).sum()
    }

    /// Bytes reserved for partially received frames, node-wide.
    pub fn frame_budget_reserved(&self) -> usize {
        self.admission.budget.reserved()
    }

    /// `conn` closed: it holds nothing any more, in the pool or the budget.
    pub(super) fn forget_buffers(&mut self, conn: ConnId) {
        self.admission.pool.leave(conn);
        self.admission.budget.release(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn reservations_sum_up_to_the_limit_and_no_further() {
        let mut b = Budget::new(10 * MIB);
        assert!(b.reserve(1, 4 * MIB, 0));
        assert!(b.reserve(2, 4 * MIB, 0));
        assert!(!b.reserve(3, 4 * MIB, 0), "12 MiB would exceed 10");
        assert!(b.is_paused(3));
        assert_eq!(b.reserved(), 8 * MIB);
        // A frame completes: the paused one fits on retry.
        assert!(b.reserve(1, 0, 0));
        assert!(b.reserve(3, 4 * MIB, 0));
        assert!(!b.is_paused(3));
        assert_eq!(b.reserved(), 8 * MIB);
    }

    #[test]
    fn outgoing_bytes_count_against_the_budget() {
        let mut b = Budget::new(10 * MIB);
        assert!(!b.reserve(1, 4 * MIB, 7 * MIB));
        assert!(b.reserve(1, 4 * MIB, 6 * MIB));
    }

    #[test]
    fn small_frames_and_held_reservations_always_fit() {
        let mut b = Budget::new(MIB);
        assert!(b.reserve(1, MIB, 0));
        assert!(b.reserve(2, ALWAYS_FITS, 0), "control frames never wait");
        assert!(b.reserve(1, MIB, 5 * MIB), "a frame keeps what it holds");
        assert!(b.reserve(1, MIB / 2, 5 * MIB), "shrinking fits");
        assert_eq!(b.reserved(), MIB / 2 + ALWAYS_FITS);
    }

    #[test]
    fn release_frees_and_unpauses() {
        let mut b = Budget::new(MIB);
        assert!(b.reserve(1, MIB, 0));
        assert!(!b.reserve(2, MIB, 0));
        b.release(1);
        b.release(2);
        b.release(2);
        assert_eq!(b.reserved(), 0);
        assert!(!b.is_paused(2));
    }
}
