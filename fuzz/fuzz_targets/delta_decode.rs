//! Feeds an arbitrary codec, declared length, base and stored bytes to the
//! entry decoder, and arbitrary data and base to the encoder.
//!
//! Decoding never panics and never returns anything but exactly the declared
//! length; whatever the encoder produces decodes back to its input. The same
//! bytes are also read as a `zstd-delta` objects section (`split_stored`), and
//! every entry it accepts is decoded against the fuzzed base.
#![no_main]

use ivaldi_shell_smol::repo::codec::{self, Codec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let codec = Codec::from_byte(data[0] % 3).expect("0..3 is a codec");
    let len = usize::from(u16::from_be_bytes([data[1], data[2]]));
    let base_len = usize::from(u16::from_be_bytes([data[3], data[4]])).min(data.len() - 5);
    let (base, stored) = data[5..].split_at(base_len);
    for b in [Some(base), None] {
        if let Ok(out) = codec::decode(codec, stored, len, b) {
            assert_eq!(out.len(), len, "decoded to a length other than declared");
        }
    }
    if let Ok(entries) = ivaldi_core::wire::split_stored(data, u32::from(data[0] % 4), 1 << 16) {
        for e in entries {
            assert!(e.stored.len <= 1 << 16, "an entry above the limit was accepted");
            assert_ne!(e.back, Some(0), "a delta against itself was accepted");
            if let Ok(out) = e.stored.decode(Some(base)) {
                assert_eq!(out.len(), e.stored.len as usize, "decoded to another length");
            }
        }
    }
    let (c, enc) = codec::encode(stored, Some(base));
    let bytes = enc.as_deref().unwrap_or(stored);
    let back = codec::decode(c, bytes, stored.len(), Some(base)).expect("own encoding decodes");
    assert_eq!(back, stored, "round trip changed the data");
});
