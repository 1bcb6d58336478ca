//! Feeds arbitrary bytes, in arbitrary pieces, to a Noise session.
//!
//! The session parses everything a peer sends before anything is
//! authenticated, so no input may make it panic, establish a channel, or produce
//! plaintext it could not have authenticated. The first byte picks the scenario
//! (the low bits) and the piece size (the rest):
//!
//! - a fresh responder, the bytes as the initiator's handshake messages;
//! - an established session (after a genuine handshake, with fixed seeds), the
//!   bytes as transport records, encrypted or not — unencrypted records have no
//!   MAC, so there the fuzzer reaches the record parser with every length.
#![no_main]

use std::sync::OnceLock;

use ivaldi_core::noise::{Keypair, NoiseError, Role, Session};
use ivaldi_core::rng::Rng;
use libfuzzer_sys::fuzz_target;

/// Fixed static keys, derived once (scalar multiplications dominate a run).
fn keys() -> &'static (Keypair, Keypair) {
    static KEYS: OnceLock<(Keypair, Keypair)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = Rng::from_u64(1);
        (Keypair::generate(&mut rng), Keypair::generate(&mut rng))
    })
}

/// A completed handshake between fixed keys; the responder is returned.
fn established(encrypt: bool) -> Session {
    let (ki, kr) = keys();
    let rng = Rng::from_u64(1);
    let mut init = Session::new(
        Role::Initiator,
        ki,
        rng.child("i", 0),
        encrypt,
        b"{}".to_vec(),
    )
    .unwrap();
    let mut resp = Session::new(
        Role::Responder,
        kr,
        rng.child("r", 0),
        encrypt,
        b"{}".to_vec(),
    )
    .unwrap();
    let (mut m1, mut m2, mut m3, mut plain) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    init.start(&mut m1);
    resp.receive(&m1, &mut plain, &mut m2).unwrap();
    init.receive(&m2, &mut plain, &mut m3).unwrap();
    resp.receive(&m3, &mut plain, &mut Vec::new()).unwrap();
    assert!(resp.is_established());
    resp
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let scenario = control & 3;
    let piece = usize::from(control >> 2) + 1;
    let mut session = match scenario {
        0 | 1 => Session::new(
            Role::Responder,
            &keys().1,
            Rng::from_u64(2),
            true,
            vec![1, 2],
        )
        .unwrap(),
        2 => established(true),
        _ => established(false),
    };
    let encrypted = session.encrypted();
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let mut failed = false;
    for chunk in input.chunks(piece) {
        match session.receive(chunk, &mut plain, &mut out) {
            Ok(()) => {}
            Err(_) => {
                assert!(session.is_dead());
                assert_eq!(
                    session.receive(chunk, &mut plain, &mut out),
                    Err(NoiseError::Dead)
                );
                failed = true;
                break;
            }
        }
    }
    match scenario {
        0 | 1 => {
            // Nobody can forge the initiator's static-key proof.
            assert!(!session.is_established());
            assert!(session.remote_payload().is_none());
            assert!(plain.is_empty());
        }
        2 => {
            // Nor a transport record.
            assert!(encrypted);
            assert!(plain.is_empty());
        }
        _ => {
            // Unencrypted records are taken at face value: the session must
            // decode exactly what a straightforward parser does.
            assert!(!encrypted);
            let mut expected = Vec::new();
            let mut expect_failure = false;
            let mut rest = input;
            while let [hi, lo, body @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                if len == 0 {
                    expect_failure = true;
                    break;
                }
                let Some(record) = body.get(..len) else {
                    break;
                };
                expected.extend_from_slice(record);
                rest = &body[len..];
            }
            assert_eq!(failed, expect_failure);
            assert_eq!(plain, expected);
        }
    }
});
