//! Per-node clocks: each node reads its own skewed view of the one virtual time.
//!
//! A clock is piecewise linear in virtual time: `local = base_local + (t −
//! base_virtual) · (1 + ppm/10⁶)`. Changing the rate or jumping forward re-anchors
//! the line at the current instant, so a node's clock never runs backwards.

/// Largest rate deviation accepted, in parts per million (±10 %).
pub const MAX_PPM: i64 = 100_000;

/// One node's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clock {
    base_virtual: u64,
    base_local: u64,
    ppm: i64,
}

impl Clock {
    /// A clock reading `origin` at virtual time `now`, running at the true rate.
    pub fn new(now: u64, origin: u64) -> Clock {
        Clock {
            base_virtual: now,
            base_local: origin,
            ppm: 0,
        }
    }

    /// The rate deviation in parts per million.
    pub fn ppm(&self) -> i64 {
        self.ppm
    }

    /// The local reading at virtual time `t` (`t` must not precede the last
    /// re-anchoring).
    pub fn local(&self, t: u64) -> u64 {
        let dt = i128::from(t.saturating_sub(self.base_virtual));
        let scaled = dt * i128::from(1_000_000 + self.ppm) / 1_000_000;
        self.base_local + scaled as u64
    }

    /// The first virtual time at which the clock reads at least `local`, or the
    /// anchor if it already does.
    pub fn virtual_at(&self, local: u64) -> u64 {
        if local <= self.base_local {
            return self.base_virtual;
        }
        let dl = u128::from(local - self.base_local);
        let rate = (1_000_000 + self.ppm) as u128;
        let dt = (dl * 1_000_000).div_ceil(rate);
        self.base_virtual
            .saturating_add(dt.min(u128::from(u64::MAX)) as u64)
    }

    /// Runs at `1 + ppm/10⁶` from virtual time `now` on.
    pub fn set_rate(&mut self, now: u64, ppm: i64) {
        self.anchor(now);
        self.ppm = ppm.clamp(-MAX_PPM, MAX_PPM);
    }

    /// Jumps forward by `micros` at virtual time `now`.
    pub fn jump(&mut self, now: u64, micros: u64) {
        self.anchor(now);
        self.base_local += micros;
    }

    fn anchor(&mut self, now: u64) {
        let l = self.local(now);
        self.base_virtual = now.max(self.base_virtual);
        self.base_local = l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_inverse() {
        let mut c = Clock::new(0, 5_000_000);
        assert_eq!(c.local(1_000_000), 6_000_000);
        c.set_rate(1_000_000, 2_500);
        let mut last = 0;
        for t in (1_000_000..50_000_000).step_by(777_777) {
            let l = c.local(t);
            assert!(l >= last);
            last = l;
            let v = c.virtual_at(l + 123);
            assert!(c.local(v) >= l + 123);
            assert!(v == 0 || c.local(v - 1) < l + 123);
        }
        c.set_rate(60_000_000, -50_000);
        let before = c.local(60_000_000);
        c.jump(60_000_000, 3_000_000);
        assert_eq!(c.local(60_000_000), before + 3_000_000);
        assert!(c.local(61_000_000) > c.local(60_000_000));
    }
}
