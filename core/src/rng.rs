//! Deterministic randomness.
//!
//! The core draws every random number (Noise ephemeral keys, message ids, backoff
//! jitter) from a seed handed in at construction, never from the OS. The stream is
//! BLAKE3 in keyed XOF mode: cryptographically strong when the seed is (the daemon
//! seeds from the OS), and exactly reproducible when it is fixed (the simulator).

/// A seeded random stream.
pub struct Rng {
    key: [u8; 32],
    reader: blake3::OutputReader,
}

impl Rng {
    /// A stream from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let reader = blake3::Hasher::new_keyed(&seed).finalize_xof();
        Rng { key: seed, reader }
    }

    /// A stream from a small seed, for simulations and tests.
    pub fn from_u64(seed: u64) -> Self {
        Self::from_seed(*blake3::hash(&seed.to_le_bytes()).as_bytes())
    }

    /// An independent stream for a sub-machine (a session, a connection), so one
    /// machine's draws never shift another's.
    pub fn child(&self, label: &str, n: u64) -> Rng {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(label.as_bytes());
        h.update(&n.to_le_bytes());
        Self::from_seed(*h.finalize().as_bytes())
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        self.reader.fill(out);
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A uniform value in `0..n` (`0` when `n` is zero).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Rejection sampling keeps the distribution exactly uniform.
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_children_independent() {
        let mut a = Rng::from_u64(1);
        let mut b = Rng::from_u64(1);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut c1 = a.child("conn", 1);
        let mut c2 = a.child("conn", 2);
        assert_ne!(c1.next_u64(), c2.next_u64());
        assert!(a.below(10) < 10);
        assert_eq!(a.below(0), 0);
    }
}
