//! Arbitrary bytes through the frame decoder and the frame parser: neither may
//! panic, the decoder must respect its size limit however the stream is split, and
//! every message that parses must survive re-encoding unchanged.
//!
//! The first byte picks the piece size the stream is fed in (1 to 256 bytes), the
//! second the decoder's limit (small limits exercise the refusal path); the rest is
//! the stream.
#![no_main]

use ivaldi_core::wire::{self, Decoded, FrameDecoder, WireError};
use libfuzzer_sys::fuzz_target;

/// Re-encodes a parsed message and parses it again: it must come back equal.
fn round_trip(decoded: &Decoded) {
    let Decoded::Message(env, bin) = decoded else {
        return;
    };
    let mut frame = Vec::new();
    wire::encode_frame(env, bin, &mut frame);
    let mut d = FrameDecoder::new(u32::MAX);
    d.push(&frame);
    let body = d
        .next_frame()
        .expect("a frame we encoded decodes")
        .expect("a frame we encoded is complete");
    assert_eq!(d.buffered(), 0, "encode_frame wrote bytes past its frame");
    let again = wire::parse_frame(&body).expect("a message we encoded parses");
    assert_eq!(&again, decoded, "message changed through re-encoding");
}

fuzz_target!(|data: &[u8]| {
    let [piece, limit, stream @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece) + 1;
    let max = match limit {
        0..=63 => u32::from(*limit),
        64..=127 => u32::from(*limit) * 64,
        _ => u32::MAX,
    };

    // The whole stream as one frame body.
    if let Ok(decoded) = wire::parse_frame(stream) {
        round_trip(&decoded);
    }

    // The stream as frames, arriving in pieces.
    let mut d = FrameDecoder::new(max);
    let mut fed = 0usize;
    let mut taken = 0usize;
    'feed: for chunk in stream.chunks(piece) {
        d.push(chunk);
        fed += chunk.len();
        loop {
            match d.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= max as usize, "frame above the limit");
                    taken += 4 + body.len();
                    if let Ok(decoded) = wire::parse_frame(&body) {
                        round_trip(&decoded);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if let WireError::TooLarge { len, .. } = e {
                        assert!(len > u64::from(max));
                    }
                    break 'feed;
                }
            }
        }
        assert_eq!(taken + d.buffered(), fed, "bytes lost or invented");
    }
});
