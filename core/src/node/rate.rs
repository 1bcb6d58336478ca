//! The upload and download rate caps: how big their buckets are
//! ([`crate::rate::Bucket`], counting bytes).
//!
//! A cap refills at `rate` bytes per second and holds at most [`burst`]
//! bytes, so an idle link cannot save up more than a short burst. Bytes are charged after they
//! pass, and the balance may go negative: control frames are let through even
//! with no tokens (a heartbeat must never wait for bulk data), and the debt
//! they leave is paid back by holding later bulk data. Over any interval `t`
//! a capped direction therefore carries at most `rate × t + burst` plus the
//! control traffic and at most one bulk frame it pushed ahead.

pub use crate::rate::Bucket;
use crate::time::Instant;

/// Smallest amount of bulk data worth waking up for: below it a slow link
/// would be fed in uselessly tiny writes.
pub const QUANTUM: u64 = 16 * 1024;

/// How many bytes a bucket with this rate holds when full: a quarter of a
/// second of traffic, and never less than [`QUANTUM`], so a very slow cap still
/// sends in reasonable pieces.
pub fn burst(rate: u64) -> u64 {
    (rate / 4).max(QUANTUM)
}

/// A cap of `rate` bytes a second (0: none), full.
pub fn cap(rate: u64, now: Instant) -> Bucket {
    Bucket::new(rate, burst(rate), now)
}

/// Changes a cap's rate at run time (see [`Bucket::set_rate`]).
pub fn set_cap(b: &mut Bucket, rate: u64, now: Instant) {
    b.set_rate(rate, burst(rate), now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_holds_a_quarter_second_and_never_less_than_a_quantum() {
        let t0 = Instant::ZERO;
        assert_eq!(cap(10_000, t0).available(t0), QUANTUM);
        assert_eq!(cap(1_000_000, t0).available(t0), 250_000);
        let mut b = cap(1_000_000, t0);
        set_cap(&mut b, 4_000_000, t0);
        assert_eq!(b.available(t0), 250_000, "no windfall from a change");
        assert_eq!(b.ready_at(1_000_000), Some(Instant::from_micros(187_500)));
        assert_eq!(cap(0, t0).available(t0), u64::MAX);
    }
}
