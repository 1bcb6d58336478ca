//! The state of routed sessions and relaying that outlives any one
//! connection: the `relay_rate` allowance and the frames waiting for it,
//! relays under suspicion, when a routed session may be retried, and the
//! mesh checks' schedule. The logic that uses it is in `relay.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::ConnId;
use crate::NodeId;
use crate::rate::Bucket;
use crate::time::Instant;
use crate::wire::RoutedHeader;

/// Largest payload of one routed frame.
pub(super) const ROUTED_CHUNK: usize = 64 * 1024;
/// Most bytes of routed frames held back by `relay_rate` at once, across all
/// sessions; beyond it frames are dropped.
const RELAY_BACKLOG_MAX: usize = 1024 * 1024;

/// A routed frame held for the relay allowance: next hop, header, data.
type Held = (ConnId, RoutedHeader, Vec<u8>);

pub(super) struct Routed {
    /// The `relay_rate` allowance, in bytes.
    bucket: Bucket,
    /// Routed frames waiting for the `relay_rate` allowance, in order.
    pub backlog: VecDeque<Held>,
    backlog_bytes: usize,
    /// Relays avoided until the given time (a routed session through them failed).
    suspects: BTreeMap<NodeId, Instant>,
    /// When a routed session to a node may next be attempted.
    pub retry: BTreeMap<NodeId, Instant>,
    /// When routed sessions and healing are next reconsidered.
    pub next_mesh_check: Instant,
    /// When the next anti-entropy summary goes to a random neighbour.
    pub next_summary: Instant,
}

impl Routed {
    /// Relaying starts with an empty allowance at `relay_rate`: a node just
    /// started has relayed nothing that could have earned it a burst.
    pub fn new(now: Instant, relay_rate: u64) -> Routed {
        Routed {
            bucket: Bucket::empty(relay_rate, relay_burst(relay_rate), now),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            suspects: BTreeMap::new(),
            retry: BTreeMap::new(),
            next_mesh_check: now,
            next_summary: now,
        }
    }

    /// Avoids `relay` in new routes until `until`.
    pub fn suspect(&mut self, relay: NodeId, until: Instant) {
        self.suspects.insert(relay, until);
    }

    /// Forgives relays whose suspicion has run out.
    pub fn forget_suspects(&mut self, now: Instant) {
        self.suspects.retain(|_, until| *until > now);
    }

    /// The suspected relays, in the form the mesh's route queries take.
    pub fn suspect_set(&self) -> BTreeSet<String> {
        self.suspects.keys().map(NodeId::to_hex).collect()
    }

    /// Whether relaying `len` more bytes stays within `rate` bytes a second
    /// (0: no cap); if so they are charged.
    pub fn relay_allowed(&mut self, now: Instant, len: usize, rate: u64) -> bool {
        if rate == 0 {
            return true;
        }
        self.bucket.set_rate(rate, relay_burst(rate), now);
        self.bucket.take(len as u64, now)
    }

    /// Holds a frame for the allowance; `false` (dropped) when the backlog
    /// is full.
    pub fn hold(&mut self, next: ConnId, h: RoutedHeader, bin: Vec<u8>) -> bool {
        if self.backlog_bytes + bin.len() > RELAY_BACKLOG_MAX {
            return false;
        }
        self.backlog_bytes += bin.len();
        self.backlog.push_back((next, h, bin));
        true
    }

    /// The next held frame, if the allowance covers it now (charged).
    pub fn release(&mut self, now: Instant, rate: u64) -> Option<Held> {
        let len = self.backlog.front()?.2.len();
        if !self.relay_allowed(now, len, rate) {
            return None;
        }
        let held = self.backlog.pop_front()?;
        self.backlog_bytes -= len;
        Some(held)
    }

    /// When the backlog's next frame fits in the allowance (at once when it
    /// already does).
    pub fn backlog_due(&self) -> Option<Instant> {
        let (_, _, bin) = self.backlog.front()?;
        let due = self.bucket.ready_at(bin.len() as u64);
        Some(due.unwrap_or_else(|| self.bucket.updated()))
    }
}

/// The most the relay allowance holds: a second of traffic, and never less
/// than two frames, so a slow cap still passes whole frames.
fn relay_burst(rate: u64) -> u64 {
    rate.max(2 * ROUTED_CHUNK as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RoutedHeader {
        RoutedHeader {
            session: 1,
            src: crate::NodeId([0xa; 32]),
            dst: crate::NodeId([0xb; 32]),
            hops_left: 3,
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn no_relay_rate_means_no_limit() {
        let mut r = Routed::new(at(0), 0);
        assert!(r.relay_allowed(at(0), usize::MAX / 2, 0));
    }

    #[test]
    fn the_allowance_refills_at_the_rate_up_to_a_burst() {
        let rate = 1_000_000;
        let mut r = Routed::new(at(0), rate);
        // Starts empty; after 100 ms, 100 kB are there.
        assert!(!r.relay_allowed(at(0), 1, rate));
        assert!(r.relay_allowed(at(100), 100_000, rate));
        assert!(!r.relay_allowed(at(100), 1_000, rate));
        // A long pause refills to the burst only.
        assert!(!r.relay_allowed(at(100_000), 1_000_001, rate));
    }

    #[test]
    fn held_frames_leave_in_order_when_due_and_a_full_backlog_drops() {
        let rate = 100_000;
        let mut r = Routed::new(at(0), rate);
        assert!(r.hold(1, header(), vec![0; 10_000]));
        assert!(r.hold(2, header(), vec![0; 10_000]));
        assert!(r.release(at(0), rate).is_none());
        let due = r.backlog_due().expect("a frame waits");
        assert!(due > at(99) && due < at(101), "{due:?}");
        assert_eq!(r.release(due, rate).map(|h| h.0), Some(1));
        assert!(!r.hold(3, header(), vec![0; RELAY_BACKLOG_MAX]));
        assert_eq!(r.backlog.len(), 1);
    }

    #[test]
    fn suspects_are_forgiven_when_their_time_runs_out() {
        let mut r = Routed::new(at(0), 0);
        let (a, b) = (crate::NodeId([1; 32]), crate::NodeId([2; 32]));
        r.suspect(a, at(10));
        r.suspect(b, at(20));
        assert_eq!(r.suspect_set(), [a.to_hex(), b.to_hex()].into());
        r.forget_suspects(at(10));
        assert_eq!(r.suspect_set(), [b.to_hex()].into());
        r.forget_suspects(at(20));
        assert!(r.suspect_set().is_empty());
    }
}
