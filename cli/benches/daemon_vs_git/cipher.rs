//! The yardstick of the throughput goal: one core's ChaCha20-Poly1305 speed,
//! measured in the same run (the cipher of the daemons' Noise link).

use std::time::Instant;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};

use crate::data::Rng;

/// Encrypts `total` bytes in place as 64 KiB messages (a fresh 96-bit nonce per
/// message, as a transport's counter would be) on this thread, and returns
/// 10^6 bytes per second.
pub fn chacha_mb_s(total: u64) -> f64 {
    const MSG: usize = 64 * 1024;
    let cipher = ChaCha20Poly1305::new(&[0x42u8; 32].into());
    let mut buf = vec![0u8; MSG];
    Rng(0xC1F3_E12A).fill(&mut buf);
    let n = total.div_ceil(MSG as u64);
    let mut tags = 0u8;
    let t = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&i.to_le_bytes());
        let tag = cipher
            .encrypt_in_place_detached(&Nonce::from(nonce), b"", &mut buf)
            .expect("encrypt");
        tags ^= tag[0];
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box((tags, &buf));
    (n * MSG as u64) as f64 / secs / 1e6
}
