//! Token buckets for the upload and download rate caps.
//!
//! A bucket refills at `rate` bytes per second from the `now` its owner hands
//! in (the core reads no clock) and holds at most [`burst`] bytes, so an idle
//! link cannot save up more than a short burst. Bytes are charged after they
//! pass, and the balance may go negative: control frames are let through even
//! with no tokens (a heartbeat must never wait for bulk data), and the debt
//! they leave is paid back by holding later bulk data. Over any interval `t`
//! a capped direction therefore carries at most `rate × t + burst` plus the
//! control traffic and at most one bulk frame it pushed ahead.

use crate::time::Instant;

/// Token units per byte: tokens are kept in micro-bytes so integer refills
/// at microsecond resolution never lose a fraction.
const UNIT: i128 = 1_000_000;

/// Smallest amount of bulk data worth waking up for: below it a slow link
/// would be fed in uselessly tiny writes.
pub const QUANTUM: u64 = 16 * 1024;

/// How many bytes a bucket with this rate holds when full: a quarter of a
/// second of traffic, and never less than [`QUANTUM`], so a very slow cap still
/// sends in reasonable pieces.
pub fn burst(rate: u64) -> u64 {
    (rate / 4).max(QUANTUM)
}

/// One direction's allowance (0 = unlimited).
#[derive(Clone, Debug)]
pub struct Bucket {
    rate: u64,
    /// Micro-bytes available; negative when in debt.
    tokens: i128,
    last: Instant,
}

impl Bucket {
    /// A full bucket for `rate` bytes per second.
    pub fn new(rate: u64, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: i128::from(burst(rate)) * UNIT,
            last: now,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0
    }

    /// Changes the rate at run time, keeping the balance (clamped to the new
    /// burst) so a change neither forgives debt nor grants a windfall.
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        if rate == self.rate {
            return;
        }
        self.refill(now);
        if self.rate == 0 {
            // From unlimited: start full, as a fresh bucket would.
            *self = Bucket::new(rate, now);
            return;
        }
        self.rate = rate;
        self.last = now;
        if rate != 0 {
            self.tokens = self.tokens.min(i128::from(burst(rate)) * UNIT);
        }
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.last {
            return;
        }
        if self.rate != 0 {
            let micros = i128::from(now.as_micros() - self.last.as_micros());
            let cap = i128::from(burst(self.rate)) * UNIT;
            self.tokens = (self.tokens + micros * i128::from(self.rate)).min(cap);
        }
        self.last = now;
    }

    /// Whole bytes available now (`u64::MAX` when unlimited, 0 when in debt).
    pub fn available(&mut self, now: Instant) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        self.refill(now);
        u64::try_from((self.tokens / UNIT).max(0)).unwrap_or(u64::MAX)
    }

    /// Records `bytes` that passed.
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        if self.rate == 0 {
            return;
        }
        self.refill(now);
        self.tokens -= i128::from(bytes) * UNIT;
    }

    /// When at least `need` bytes (capped at the burst) will be available,
    /// counting from the last refill; `None` when unlimited or already there
    /// (so a deadline built from it never lies in the past for long: the
    /// owner's next tick refills the bucket and the wait is over).
    pub fn ready_at(&self, need: u64) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let need = i128::from(need.min(burst(self.rate))) * UNIT;
        if self.tokens >= need {
            return None;
        }
        let rate = i128::from(self.rate);
        let micros = (need - self.tokens + rate - 1) / rate;
        let micros = u64::try_from(micros).unwrap_or(u64::MAX / 2);
        Some(self.last + std::time::Duration::from_micros(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_the_rate_and_caps_at_the_burst() {
        let t0 = Instant::from_micros(0);
        let mut b = Bucket::new(100_000, t0);
        assert_eq!(b.available(t0), 25_000);
        b.charge(25_000, t0);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.ready_at(10_000), Some(Instant::from_micros(100_000)));
        assert_eq!(Bucket::new(100_000, t0).ready_at(10_000), None);
        assert_eq!(b.available(Instant::from_micros(100_000)), 10_000);
        assert_eq!(b.available(Instant::from_micros(10_000_000)), 25_000);
        // Debt is paid back before anything is available again.
        let t = Instant::from_micros(10_000_000);
        b.charge(45_000, t);
        assert_eq!(b.available(t), 0);
        assert_eq!(b.ready_at(1), Some(Instant::from_micros(10_200_010)));
        b.set_rate(0, t);
        assert_eq!(b.available(t), u64::MAX);
        assert_eq!(b.ready_at(1), None);
    }
}
