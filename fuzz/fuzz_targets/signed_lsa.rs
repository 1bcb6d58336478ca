//! Feeds arbitrary bytes to the mesh advertisement parser and its signature
//! check.
//!
//! Any neighbour may send any `topology` payload, so parsing, validating and
//! verifying must never panic, and a verified advertisement must verify again
//! after a JSON round trip (relays re-encode what they flood) and with
//! another `hops_left` (relays lower it). Random bytes almost never carry a
//! valid signature, so each parsed advertisement is also re-signed by a fixed
//! key as its origin, which must then verify, and must stop verifying once
//! its sequence number moves.
#![no_main]

use ivaldi_core::mesh::Lsa;
use ivaldi_core::mesh::sign::{Signer, signed_bytes, verify};
use ivaldi_core::noise::Keypair;
use libfuzzer_sys::fuzz_target;

fn round_trip(lsa: &Lsa) -> Lsa {
    let json = serde_json::to_vec(lsa).expect("an advertisement encodes");
    serde_json::from_slice(&json).expect("an encoded advertisement parses")
}

fuzz_target!(|data: &[u8]| {
    let Ok(lsa) = serde_json::from_slice::<Lsa>(data) else {
        return;
    };
    let _ = lsa.validate(256);
    if verify(&lsa).is_ok() {
        assert_eq!(verify(&round_trip(&lsa)), Ok(()));
    }
    let key = Keypair::from_private([0x5a; 32]).expect("a fixed key");
    let mut own = Lsa {
        origin: data_encoding::HEXLOWER.encode(&key.public),
        ..lsa
    };
    own.sig = Signer::new(&key.private).sign(&own);
    if signed_bytes(&own).is_none() {
        // A link to something that is not a node id: nothing to sign.
        assert!(own.sig.is_empty());
        return;
    }
    assert_eq!(verify(&own), Ok(()));
    let again = round_trip(&own);
    assert_eq!(verify(&again), Ok(()));
    assert_eq!(
        verify(&Lsa {
            hops_left: own.hops_left.wrapping_add(1),
            ..again.clone()
        }),
        Ok(())
    );
    assert!(
        verify(&Lsa {
            seq: own.seq.wrapping_add(1),
            ..again
        })
        .is_err()
    );
});
