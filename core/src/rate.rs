//! The one token bucket, and the per-source limiter built on it.
//!
//! Every allowance in the core is a [`Bucket`]: the upload and download caps
//! (bytes, `node/rate.rs` sets their size), the relay allowance (bytes,
//! `node/routed.rs`), and the per-source limits on accepted connections and
//! discovery datagrams (one token each, [`SourceLimiter`]).
//!
//! A bucket refills at `rate` tokens per second from the `now` its owner
//! hands in (the core reads no clock) and holds at most `capacity`, so an idle
//! source cannot save up more than a burst. Tokens are kept in millionths:
//! a refill is `rate × elapsed microseconds`, exact in integers, so no
//! fraction is ever lost and two runs with the same inputs agree to the
//! token. The level is an `i128`, which holds the largest capacity
//! (`u64::MAX` tokens) a million times over, and every step saturates, so no
//! configured limit and no elapsed time can overflow it.

use core::net::IpAddr;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::network::mask;
use crate::time::Instant;

/// Token units per token.
const MICRO: i128 = 1_000_000;

/// An allowance of `capacity` tokens refilled at `rate` a second; `rate` 0
/// means no limit at all (every configured rate in the core reads 0 that way).
///
/// Tokens can be taken only when there ([`take`](Bucket::take)) or charged
/// after the fact ([`charge`](Bucket::charge)), which may leave the bucket in
/// debt: the byte caps let control frames through with no tokens (a heartbeat
/// must never wait for bulk data) and pay the debt back by holding later bulk
/// data.
#[derive(Clone, Debug)]
pub struct Bucket {
    rate: u64,
    capacity: u64,
    /// Millionths of a token available; negative in debt.
    level: i128,
    /// When `level` was last brought up to date.
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u64, capacity: u64, now: Instant) -> Bucket {
        Bucket {
            rate,
            capacity,
            level: micro(capacity),
            last: now,
        }
    }

    /// An empty bucket: nothing is allowed until it has refilled.
    pub fn empty(rate: u64, capacity: u64, now: Instant) -> Bucket {
        Bucket {
            level: 0,
            ..Bucket::new(rate, capacity, now)
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0
    }

    /// Changes the rate and capacity at run time, keeping the balance
    /// (clamped to the new capacity) so a change neither forgives debt nor
    /// grants a windfall. Leaving "no limit", the bucket starts full, as a
    /// fresh one would.
    pub fn set_rate(&mut self, rate: u64, capacity: u64, now: Instant) {
        if rate == self.rate && capacity == self.capacity {
            return;
        }
        self.refill(now);
        if self.rate == 0 {
            *self = Bucket::new(rate, capacity, now);
            return;
        }
        self.rate = rate;
        self.capacity = capacity;
        self.last = self.last.max(now);
        if rate != 0 {
            self.level = self.level.min(micro(capacity));
        }
    }

    /// The level at `now`, without moving `last` (which stays put when time
    /// seems to go backwards, so no refill is counted twice).
    fn level_at(&self, now: Instant) -> i128 {
        if now <= self.last || self.rate == 0 {
            return self.level;
        }
        let elapsed = i128::from(now.as_micros() - self.last.as_micros());
        let gained = elapsed.saturating_mul(i128::from(self.rate));
        self.level.saturating_add(gained).min(micro(self.capacity))
    }

    fn refill(&mut self, now: Instant) {
        self.level = self.level_at(now);
        self.last = self.last.max(now);
    }

    /// Whether the bucket is full at `now`: then it is the same as a fresh
    /// one, and a keyed limiter may forget it.
    pub fn is_full(&self, now: Instant) -> bool {
        self.rate == 0 || self.level_at(now) >= micro(self.capacity)
    }

    /// Whole tokens available now (`u64::MAX` with no limit, 0 in debt).
    pub fn available(&mut self, now: Instant) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        self.refill(now);
        u64::try_from((self.level / MICRO).max(0)).unwrap_or(u64::MAX)
    }

    /// Takes `n` tokens if they are there.
    pub fn take(&mut self, n: u64, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        if self.level < micro(n) {
            return false;
        }
        self.level -= micro(n);
        true
    }

    /// Records `n` tokens spent, even beyond what was there.
    pub fn charge(&mut self, n: u64, now: Instant) {
        if self.rate == 0 {
            return;
        }
        self.refill(now);
        self.level = self.level.saturating_sub(micro(n));
    }

    /// When at least `need` tokens (capped at the capacity) will be there,
    /// counting from the last refill; `None` with no limit or when they
    /// already are (so a deadline built from it never lies in the past for
    /// long: the owner's next tick refills the bucket and the wait is over).
    pub fn ready_at(&self, need: u64) -> Option<Instant> {
        if self.rate == 0 {
            return None;
        }
        let need = micro(need.min(self.capacity));
        if self.level >= need {
            return None;
        }
        let rate = i128::from(self.rate);
        let micros = (need - self.level + rate - 1) / rate;
        let micros = u64::try_from(micros).unwrap_or(u64::MAX / 2);
        Some(self.last + Duration::from_micros(micros))
    }

    /// When the level was last brought up to date.
    pub fn updated(&self) -> Instant {
        self.last
    }
}

fn micro(tokens: u64) -> i128 {
    i128::from(tokens) * MICRO
}

/// A per-source limit's settings, read from the configuration at every use so
/// that a change applies at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Tokens a source may spend in a burst.
    pub burst: u32,
    /// Tokens it gets back per second (0: no limit).
    pub per_sec: u32,
    /// Sources tracked at most.
    pub max_sources: usize,
}

/// One [`Bucket`] per source, for what anyone on the network can send
/// (connections, discovery datagrams), with the set of sources bounded too.
///
/// A source is an IPv4 address or an IPv6 /64: IPv6 hosts choose their
/// address freely within their /64 (one host on a LAN usually holds a whole
/// one), so counting addresses would let one host multiply its allowance.
/// A source absent from the map has a full bucket, so full ones can be
/// dropped at any time: that keeps the map as small as the current traffic.
#[derive(Debug, Default)]
pub struct SourceLimiter {
    buckets: BTreeMap<IpAddr, Bucket>,
    last_prune: Option<Instant>,
}

impl SourceLimiter {
    /// The key `ip` counts under.
    pub fn source_key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            v6 @ IpAddr::V6(_) => mask(v6, 64),
        }
    }

    /// Takes a token from the source's bucket; false if it is empty (or a new
    /// source would overflow the tracked set).
    pub fn take(&mut self, now: Instant, ip: IpAddr, limits: Limits) -> bool {
        let key = Self::source_key(ip);
        let (rate, capacity) = (u64::from(limits.per_sec), u64::from(limits.burst));
        if !self.buckets.contains_key(&key) && self.buckets.len() >= limits.max_sources {
            // At most one pruning pass a second: a flood from ever-new sources
            // must not make every attempt scan the whole map.
            self.prune_every(now, Duration::from_secs(1));
            if self.buckets.len() >= limits.max_sources {
                return false;
            }
        }
        let b = self
            .buckets
            .entry(key)
            .or_insert_with(|| Bucket::new(rate, capacity, now));
        b.set_rate(rate, capacity, now);
        b.take(1, now)
    }

    /// Drops the buckets that are full again, unless that was done less than
    /// `every` ago.
    pub fn prune_every(&mut self, now: Instant, every: Duration) {
        if self
            .last_prune
            .is_none_or(|t| now.saturating_since(t) >= every)
        {
            self.buckets.retain(|_, b| !b.is_full(now));
            self.last_prune = Some(now);
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    fn us(n: u64) -> Instant {
        Instant::from_micros(n)
    }

    #[test]
    fn refills_at_the_rate_and_caps_at_the_capacity() {
        let t0 = us(0);
        let mut b = Bucket::new(100_000, 25_000, t0);
        assert_eq!(b.available(t0), 25_000);
        b.charge(25_000, t0);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.ready_at(10_000), Some(us(100_000)));
        assert_eq!(Bucket::new(100_000, 25_000, t0).ready_at(10_000), None);
        assert_eq!(b.available(us(100_000)), 10_000);
        assert_eq!(b.available(us(10_000_000)), 25_000);
        // Debt is paid back before anything is available again.
        let t = us(10_000_000);
        b.charge(45_000, t);
        assert_eq!(b.available(t), 0);
        assert_eq!(b.ready_at(1), Some(us(10_200_010)));
        b.set_rate(0, 0, t);
        assert_eq!(b.available(t), u64::MAX);
        assert_eq!(b.ready_at(1), None);
    }

    #[test]
    fn take_only_what_is_there_and_an_empty_bucket_waits() {
        let mut b = Bucket::empty(1_000_000, 200_000, ms(0));
        assert!(!b.take(1, ms(0)));
        assert!(b.take(100_000, ms(100)));
        assert!(!b.take(1_000, ms(100)));
        assert_eq!(b.ready_at(1_000), Some(ms(101)));
        // A long pause refills to the capacity only.
        assert!(!b.take(200_001, ms(100_000)));
        assert!(b.take(200_000, ms(100_000)));
    }

    #[test]
    fn a_rate_change_keeps_the_balance_and_leaving_no_limit_starts_full() {
        let mut b = Bucket::new(1_000, 1_000, ms(0));
        b.charge(3_000, ms(0));
        b.set_rate(2_000, 2_000, ms(0));
        assert_eq!(b.available(ms(0)), 0, "debt is not forgiven");
        assert_eq!(b.available(ms(1_500)), 1_000);
        b.set_rate(10, 10, ms(1_500));
        assert_eq!(
            b.available(ms(1_500)),
            10,
            "no windfall over the new capacity"
        );
        let mut open = Bucket::new(0, 0, ms(0));
        open.set_rate(5, 5, ms(7));
        assert_eq!(open.available(ms(7)), 5);
    }

    #[test]
    fn time_going_backwards_refills_nothing_twice() {
        let mut b = Bucket::new(1_000, 1_000, ms(0));
        b.charge(1_000, ms(1_000));
        assert_eq!(b.available(ms(500)), 0);
        assert_eq!(b.available(ms(1_000)), 0);
        assert_eq!(b.available(ms(1_100)), 100);
    }

    #[test]
    fn the_largest_limits_and_times_do_not_overflow() {
        let t0 = us(0);
        let far = Instant::from_micros(u64::MAX / 2);
        let mut b = Bucket::new(u64::MAX, u64::MAX, t0);
        b.charge(u64::MAX, t0);
        b.charge(u64::MAX, t0);
        assert_eq!(b.available(t0), 0);
        assert_eq!(b.available(far), u64::MAX);
        assert!(b.take(u64::MAX, far));
        assert!(b.ready_at(u64::MAX).is_some());
        let mut slow = Bucket::new(1, u64::MAX, t0);
        slow.charge(u64::MAX, t0);
        assert!(slow.ready_at(u64::MAX).is_some());
    }

    const LIMITS: Limits = Limits {
        burst: 3,
        per_sec: 2,
        max_sources: 2,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn a_source_gets_a_burst_then_the_rate() {
        let mut l = SourceLimiter::default();
        let a = ip("10.0.0.1");
        assert!((0..3).all(|_| l.take(ms(0), a, LIMITS)));
        assert!(!l.take(ms(0), a, LIMITS));
        // Two tokens a second: one after 500 ms, none more before 1 s.
        assert!(!l.take(ms(499), a, LIMITS));
        assert!(l.take(ms(500), a, LIMITS));
        assert!(!l.take(ms(999), a, LIMITS));
        assert!(l.take(ms(1000), a, LIMITS));
        // Refills stop at the burst.
        assert!((0..3).all(|_| l.take(ms(60_000), a, LIMITS)));
        assert!(!l.take(ms(60_000), a, LIMITS));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_ipv4_hosts_are_not() {
        let mut l = SourceLimiter::default();
        assert!((0..3).all(|i| l.take(ms(0), ip(&format!("fd00::{i}")), LIMITS)));
        assert!(!l.take(ms(0), ip("fd00::ffff:1"), LIMITS));
        assert!(l.take(ms(0), ip("fd00:0:0:1::1"), LIMITS));
        let mut l = SourceLimiter::default();
        assert!((0..3).all(|_| l.take(ms(0), ip("10.0.0.1"), LIMITS)));
        assert!(l.take(ms(0), ip("10.0.0.2"), LIMITS));
        // An IPv4 peer seen through an IPv6 socket is still its own host.
        let mut l = SourceLimiter::default();
        assert!((0..3).all(|_| l.take(ms(0), ip("::ffff:10.0.0.1"), LIMITS)));
        assert!(!l.take(ms(0), ip("10.0.0.1"), LIMITS));
        assert!(l.take(ms(0), ip("::ffff:10.0.0.2"), LIMITS));
    }

    #[test]
    fn new_sources_are_refused_while_the_set_is_full_of_busy_ones() {
        let mut l = SourceLimiter::default();
        assert!(l.take(ms(0), ip("10.0.0.1"), LIMITS));
        assert!(l.take(ms(0), ip("10.0.0.2"), LIMITS));
        assert!(!l.take(ms(0), ip("10.0.0.3"), LIMITS));
        // Once both buckets refill they are pruned and a new source fits.
        assert!(l.take(ms(1000), ip("10.0.0.3"), LIMITS));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn pruning_keeps_partial_buckets_and_waits_its_turn() {
        let mut l = SourceLimiter::default();
        l.take(ms(0), ip("10.0.0.1"), LIMITS);
        l.prune_every(ms(100), Duration::from_secs(5));
        assert_eq!(l.len(), 1, "still short of full");
        l.prune_every(ms(4_000), Duration::from_secs(5));
        assert_eq!(l.len(), 1, "pruned 3.9 s ago");
        l.prune_every(ms(5_100), Duration::from_secs(5));
        assert!(l.is_empty());
    }

    #[test]
    fn a_lower_burst_applies_at_once() {
        let mut l = SourceLimiter::default();
        let a = ip("10.0.0.1");
        assert!(l.take(ms(0), a, LIMITS));
        let one = Limits { burst: 1, ..LIMITS };
        assert!(l.take(ms(0), a, one), "two left, clamped to one");
        assert!(!l.take(ms(0), a, one));
    }
}
