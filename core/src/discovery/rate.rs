//! The per-source rate limit on announcements: anyone on the LAN can send
//! them, so each source gets a token bucket, and the set of sources tracked is
//! bounded too.

use core::net::IpAddr;
use std::collections::BTreeMap;
use std::time::Duration;

use super::mask;
use crate::time::Instant;

/// Millionths of a token per token, so integer arithmetic is exact.
const MICRO: u64 = 1_000_000;

/// The limit's settings, read from the configuration at every use so that a
/// configuration change applies at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Limits {
    /// Tokens a bucket holds at most.
    pub(super) burst: u32,
    /// Tokens added per second.
    pub(super) per_sec: u32,
    /// Sources tracked at most.
    pub(super) max_sources: usize,
}

/// A token bucket, in millionths of a token.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    micro_tokens: u64,
    updated: Instant,
}

impl Bucket {
    /// What the bucket would hold at `now` (not capped).
    fn level(&self, now: Instant, limits: Limits) -> u64 {
        let elapsed =
            u64::try_from(now.saturating_since(self.updated).as_micros()).unwrap_or(u64::MAX);
        self.micro_tokens
            .saturating_add(elapsed.saturating_mul(u64::from(limits.per_sec)))
    }
}

/// Every source's bucket. A source absent from the map has a full bucket, so
/// full ones can be dropped at any time: that keeps the map as small as the
/// current traffic.
#[derive(Debug, Default)]
pub(super) struct SourceLimiter {
    buckets: BTreeMap<IpAddr, Bucket>,
    last_prune: Option<Instant>,
}

impl SourceLimiter {
    /// The limiter's key: IPv4 addresses are per host; IPv6 hosts choose
    /// freely within their /64, so that is one source.
    fn source_key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(_) => mask(ip, 64),
        }
    }

    /// Takes a token from the source's bucket; false if it is empty (or a new
    /// source would overflow the tracked set).
    pub(super) fn take(&mut self, now: Instant, ip: IpAddr, limits: Limits) -> bool {
        let key = Self::source_key(ip);
        let cap = u64::from(limits.burst) * MICRO;
        if !self.buckets.contains_key(&key) && self.buckets.len() >= limits.max_sources {
            // At most one pruning pass a second: a flood from ever-new sources
            // must not make every datagram scan the whole map.
            self.prune_every(now, Duration::from_secs(1), limits);
            if self.buckets.len() >= limits.max_sources {
                return false;
            }
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            micro_tokens: cap,
            updated: now,
        });
        b.micro_tokens = b.level(now, limits).min(cap);
        b.updated = b.updated.max(now);
        if b.micro_tokens >= MICRO {
            b.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }

    /// Drops the buckets that are full again, unless that was done less than
    /// `every` ago.
    pub(super) fn prune_every(&mut self, now: Instant, every: Duration, limits: Limits) {
        if self
            .last_prune
            .is_none_or(|t| now.saturating_since(t) >= every)
        {
            let cap = u64::from(limits.burst) * MICRO;
            self.buckets.retain(|_, b| b.level(now, limits) < cap);
            self.last_prune = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        burst: 3,
        per_sec: 2,
        max_sources: 2,
    };

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_the_rate() {
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
    }

    #[test]
    fn new_sources_are_refused_while_the_set_is_full_of_busy_ones() {
        let mut l = SourceLimiter::default();
        assert!(l.take(ms(0), ip("10.0.0.1"), LIMITS));
        assert!(l.take(ms(0), ip("10.0.0.2"), LIMITS));
        assert!(!l.take(ms(0), ip("10.0.0.3"), LIMITS));
        // Once both buckets refill they are pruned and a new source fits.
        assert!(l.take(ms(1000), ip("10.0.0.3"), LIMITS));
        assert_eq!(l.buckets.len(), 1);
    }

    #[test]
    fn pruning_keeps_partial_buckets_and_waits_its_turn() {
        let mut l = SourceLimiter::default();
        l.take(ms(0), ip("10.0.0.1"), LIMITS);
        l.prune_every(ms(100), Duration::from_secs(5), LIMITS);
        assert_eq!(l.buckets.len(), 1, "still short of full");
        l.prune_every(ms(4_000), Duration::from_secs(5), LIMITS);
        assert_eq!(l.buckets.len(), 1, "pruned 3.9 s ago");
        l.prune_every(ms(5_100), Duration::from_secs(5), LIMITS);
        assert!(l.buckets.is_empty());
    }
}
