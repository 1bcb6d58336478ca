//! The Noise channel in `ivaldi_core::noise`, driven as the shells drive it: two
//! sessions shuttle bytes to each other, split the way TCP might split them.
//!
//! These check that the handshake authenticates both sides and carries their
//! payloads, that records round-trip however they are cut, that unencrypted mode
//! is only ever negotiated by both sides, that tampering and garbage are errors
//! (never panics), and that fixed seeds replay a connection byte for byte.

use std::time::Instant;

use ivaldi_core::noise::{
    Keypair, MAX_RECORD_LEN, MAX_RECORD_PLAINTEXT, NoiseError, Role, Session, TAG_LEN,
};
use ivaldi_core::rng::Rng;
use quickcheck::{Gen, QuickCheck, TestResult};

/// How bytes are cut before they reach `receive`.
#[derive(Clone, Copy, Debug)]
enum Split {
    /// Everything at once.
    Whole,
    /// One byte per call.
    Bytes,
    /// Random pieces of 1..=max bytes (drawn from a seeded stream).
    Random { seed: u64, max: u64 },
}

/// Feeds `bytes` to `to` in pieces, collecting its plaintext and replies.
fn deliver(
    to: &mut Session,
    bytes: &[u8],
    split: Split,
    plaintext: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), NoiseError> {
    match split {
        Split::Whole => to.receive(bytes, plaintext, out),
        Split::Bytes => bytes
            .iter()
            .try_for_each(|b| to.receive(std::slice::from_ref(b), plaintext, out)),
        Split::Random { seed, max } => {
            let mut rng = Rng::from_u64(seed ^ bytes.len() as u64);
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = (1 + rng.below(max) as usize).min(rest.len());
                to.receive(&rest[..n], plaintext, out)?;
                rest = &rest[n..];
            }
            Ok(())
        }
    }
}

/// Two sessions that have not handshaken yet, plus everything either sent.
struct Pair {
    init: Session,
    resp: Session,
    /// Every byte the initiator wrote, in order.
    wire_i: Vec<u8>,
    /// Every byte the responder wrote, in order.
    wire_r: Vec<u8>,
}

const INIT_PAYLOAD: &[u8] = br#"{"caps":["sync"],"who":"initiator"}"#;
const RESP_PAYLOAD: &[u8] = br#"{"caps":["sync","relay"],"who":"responder"}"#;

fn keypairs(seed: u64) -> (Keypair, Keypair) {
    let mut rng = Rng::from_u64(seed);
    (Keypair::generate(&mut rng), Keypair::generate(&mut rng))
}

fn pair_with(seed: u64, encrypt_i: bool, encrypt_r: bool) -> Pair {
    let (ki, kr) = keypairs(seed);
    let rng = Rng::from_u64(seed);
    Pair {
        init: Session::new(
            Role::Initiator,
            &ki,
            rng.child("session", 0),
            encrypt_i,
            INIT_PAYLOAD.to_vec(),
        )
        .unwrap(),
        resp: Session::new(
            Role::Responder,
            &kr,
            rng.child("session", 1),
            encrypt_r,
            RESP_PAYLOAD.to_vec(),
        )
        .unwrap(),
        wire_i: Vec::new(),
        wire_r: Vec::new(),
    }
}

fn pair(seed: u64) -> Pair {
    pair_with(seed, true, true)
}

impl Pair {
    /// Runs the handshake to completion, checking that neither side produces
    /// plaintext or replies when it shouldn't.
    fn handshake(&mut self, split: Split) {
        let mut m1 = Vec::new();
        self.init.start(&mut m1);
        assert!(!m1.is_empty());
        self.wire_i.extend_from_slice(&m1);

        let (mut plain, mut m2) = (Vec::new(), Vec::new());
        deliver(&mut self.resp, &m1, split, &mut plain, &mut m2).unwrap();
        assert!(plain.is_empty() && !m2.is_empty());
        assert!(!self.resp.is_established());
        self.wire_r.extend_from_slice(&m2);

        let mut m3 = Vec::new();
        deliver(&mut self.init, &m2, split, &mut plain, &mut m3).unwrap();
        assert!(plain.is_empty() && !m3.is_empty());
        assert!(self.init.is_established());
        self.wire_i.extend_from_slice(&m3);

        let mut nothing = Vec::new();
        deliver(&mut self.resp, &m3, split, &mut plain, &mut nothing).unwrap();
        assert!(plain.is_empty() && nothing.is_empty());
        assert!(self.resp.is_established());
    }

    /// Sends `msg` one way and returns what the other side decoded, and the
    /// bytes that crossed the wire.
    fn transfer(&mut self, from_initiator: bool, msg: &[u8], split: Split) -> (Vec<u8>, Vec<u8>) {
        let (from, to, wire) = if from_initiator {
            (&mut self.init, &mut self.resp, &mut self.wire_i)
        } else {
            (&mut self.resp, &mut self.init, &mut self.wire_r)
        };
        let mut bytes = Vec::new();
        from.send(msg, &mut bytes).unwrap();
        wire.extend_from_slice(&bytes);
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        deliver(to, &bytes, split, &mut plain, &mut out).unwrap();
        assert!(out.is_empty(), "transport records produced a reply");
        (plain, bytes)
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn handshake_authenticates_both_sides_and_carries_payloads() {
    let (ki, kr) = keypairs(1);
    let mut p = pair(1);
    assert_eq!(p.init.remote_static(), None);
    assert_eq!(p.init.remote_payload(), None);
    p.handshake(Split::Whole);
    assert_eq!(p.init.remote_static(), Some(kr.public));
    assert_eq!(p.resp.remote_static(), Some(ki.public));
    assert_eq!(p.init.remote_payload(), Some(RESP_PAYLOAD));
    assert_eq!(p.resp.remote_payload(), Some(INIT_PAYLOAD));
    assert!(p.init.encrypted() && p.resp.encrypted());
    // The payloads travel encrypted.
    assert!(!contains(&p.wire_r, RESP_PAYLOAD));
    assert!(!contains(&p.wire_i, INIT_PAYLOAD));
}

#[test]
fn handshake_survives_one_byte_at_a_time() {
    let mut p = pair(2);
    p.handshake(Split::Bytes);
    let (got, _) = p.transfer(true, b"hello", Split::Bytes);
    assert_eq!(got, b"hello");
    let (got, _) = p.transfer(false, b"world", Split::Bytes);
    assert_eq!(got, b"world");
}

#[test]
fn handshake_survives_random_splits() {
    for seed in 0..16 {
        let mut p = pair(seed);
        let split = Split::Random {
            seed,
            max: 1 + seed * 7,
        };
        p.handshake(split);
        let msg = pattern(70_000 + seed as usize, seed as u8);
        assert_eq!(p.transfer(true, &msg, split).0, msg);
        assert_eq!(p.transfer(false, &msg, split).0, msg);
    }
}

#[test]
fn empty_and_oversized_payloads() {
    let (ki, kr) = keypairs(3);
    let rng = Rng::from_u64(3);
    let mut init = Session::new(Role::Initiator, &ki, rng.child("s", 0), true, Vec::new()).unwrap();
    let mut resp = Session::new(Role::Responder, &kr, rng.child("s", 1), true, Vec::new()).unwrap();
    let (mut m1, mut m2, mut m3, mut plain) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    init.start(&mut m1);
    resp.receive(&m1, &mut plain, &mut m2).unwrap();
    init.receive(&m2, &mut plain, &mut m3).unwrap();
    resp.receive(&m3, &mut plain, &mut Vec::new()).unwrap();
    assert_eq!(init.remote_payload(), Some(&[][..]));
    assert_eq!(resp.remote_payload(), Some(&[][..]));

    let too_big = vec![0; ivaldi_core::noise::MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        Session::new(Role::Initiator, &ki, rng, true, too_big),
        Err(NoiseError::PayloadTooLarge { .. })
    ));
}

#[test]
fn data_after_the_last_handshake_message_is_not_lost() {
    let mut p = pair(4);
    let (mut m1, mut m2, mut m3, mut plain) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    p.init.start(&mut m1);
    p.resp.receive(&m1, &mut plain, &mut m2).unwrap();
    p.init.receive(&m2, &mut plain, &mut m3).unwrap();
    // The initiator is established after writing message 3 and may send at
    // once: the responder gets message 3 and two records in one slice.
    p.init.send(b"first", &mut m3).unwrap();
    p.init.send(b"second", &mut m3).unwrap();
    let mut out = Vec::new();
    p.resp.receive(&m3, &mut plain, &mut out).unwrap();
    assert!(p.resp.is_established());
    assert_eq!(plain, b"firstsecond");
    assert!(out.is_empty());

    // The same, with the tail of message 3 and the first record together in a
    // later call, and a partial record left over.
    let mut q = pair(5);
    let (mut m1, mut m2, mut m3, mut plain) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    q.init.start(&mut m1);
    q.resp.receive(&m1, &mut plain, &mut m2).unwrap();
    q.init.receive(&m2, &mut plain, &mut m3).unwrap();
    q.init.send(b"abc", &mut m3).unwrap();
    q.init.send(b"defg", &mut m3).unwrap();
    let cut1 = 10;
    let cut2 = m3.len() - 5;
    q.resp.receive(&m3[..cut1], &mut plain, &mut out).unwrap();
    q.resp
        .receive(&m3[cut1..cut2], &mut plain, &mut out)
        .unwrap();
    assert_eq!(plain, b"abc");
    q.resp.receive(&m3[cut2..], &mut plain, &mut out).unwrap();
    assert_eq!(plain, b"abcdefg");
}

#[test]
fn records_round_trip_from_empty_to_one_mebibyte() {
    let mut p = pair(6);
    p.handshake(Split::Whole);
    let sizes = [
        0,
        1,
        2,
        TAG_LEN,
        1000,
        MAX_RECORD_PLAINTEXT - 1,
        MAX_RECORD_PLAINTEXT,
        MAX_RECORD_PLAINTEXT + 1,
        2 * MAX_RECORD_PLAINTEXT,
        1 << 20,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        let msg = pattern(len, i as u8);
        for split in [
            Split::Whole,
            Split::Random {
                seed: i as u64,
                max: 100_000,
            },
        ] {
            let (got, wire) = p.transfer(i % 2 == 0, &msg, split);
            assert_eq!(got, msg, "size {len}, {split:?}");
            let records = len.div_ceil(MAX_RECORD_PLAINTEXT);
            assert_eq!(wire.len(), len + records * (2 + TAG_LEN), "size {len}");
        }
    }
    // Records are at most MAX_RECORD_LEN bytes on the wire.
    let mut wire = Vec::new();
    p.init
        .send(&pattern(3 * MAX_RECORD_PLAINTEXT, 9), &mut wire)
        .unwrap();
    let mut rest = &wire[..];
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        assert_eq!(len, MAX_RECORD_LEN);
        rest = &rest[2 + len..];
    }
}

#[test]
fn many_small_records_in_one_slice() {
    for split in [
        Split::Whole,
        Split::Bytes,
        Split::Random { seed: 1, max: 3 },
        Split::Random { seed: 2, max: 77 },
    ] {
        let mut p = pair(7);
        p.handshake(Split::Whole);
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for i in 0..500u32 {
            let msg = i.to_be_bytes();
            p.resp.send(&msg, &mut wire).unwrap();
            expected.extend_from_slice(&msg);
        }
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        deliver(&mut p.init, &wire, split, &mut plain, &mut out).unwrap();
        assert_eq!(plain, expected, "{split:?}");
    }
}

#[test]
fn unencrypted_only_when_both_ask_for_it() {
    let secret = b"the quick brown fox jumps over the lazy dog";
    for (ei, er) in [(true, true), (true, false), (false, true), (false, false)] {
        let mut p = pair_with(8, ei, er);
        p.handshake(Split::Whole);
        let want_plain = !ei && !er;
        assert_eq!(p.init.encrypted(), !want_plain, "({ei}, {er})");
        assert_eq!(p.resp.encrypted(), !want_plain, "({ei}, {er})");
        // The handshake payloads are encrypted either way.
        assert!(!contains(&p.wire_r, RESP_PAYLOAD));
        assert!(!contains(&p.wire_i, INIT_PAYLOAD));

        let (got, wire) = p.transfer(true, secret, Split::Whole);
        assert_eq!(got, secret);
        assert_eq!(contains(&wire, secret), want_plain, "({ei}, {er})");
        let (got, wire) = p.transfer(false, secret, Split::Bytes);
        assert_eq!(got, secret);
        assert_eq!(contains(&wire, secret), want_plain, "({ei}, {er})");
        if want_plain {
            // Exactly a length prefix and the plaintext.
            let mut expected = (secret.len() as u16).to_be_bytes().to_vec();
            expected.extend_from_slice(secret);
            assert_eq!(wire, expected);
            let msg = pattern(3 * MAX_RECORD_PLAINTEXT + 5, 1);
            let (got, wire) = p.transfer(true, &msg, Split::Random { seed: 3, max: 9000 });
            assert_eq!(got, msg);
            assert_eq!(wire.len(), msg.len() + 4 * 2);
        }
    }
}

#[test]
fn flipped_ciphertext_bit_is_a_decryption_error() {
    // Offsets into the record body: ciphertext first and last, tag first and
    // last.
    for (offset, bit) in [
        (0, 0),
        (1, 7),
        (20, 3),
        (39, 5),
        (40, 0),
        (40 + TAG_LEN - 1, 7),
    ] {
        let mut p = pair(9);
        p.handshake(Split::Whole);
        let mut wire = Vec::new();
        p.init.send(&[0x42; 40], &mut wire).unwrap();
        assert_eq!(wire.len(), 2 + 40 + TAG_LEN);
        wire[2 + offset] ^= 1 << bit;
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let err = p.resp.receive(&wire, &mut plain, &mut out).unwrap_err();
        assert_eq!(err, NoiseError::Decrypt, "offset {offset} bit {bit}");
        assert!(plain.is_empty());
        // The session is dead from now on.
        assert!(p.resp.is_dead());
        assert_eq!(
            p.resp.receive(&[], &mut plain, &mut out),
            Err(NoiseError::Dead)
        );
        assert_eq!(p.resp.send(b"x", &mut out), Err(NoiseError::Dead));
    }
}

#[test]
fn replayed_or_reordered_records_are_rejected() {
    let mut p = pair(10);
    p.handshake(Split::Whole);
    let (mut r1, mut r2) = (Vec::new(), Vec::new());
    p.init.send(b"one", &mut r1).unwrap();
    p.init.send(b"two", &mut r2).unwrap();
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    assert_eq!(
        p.resp.receive(&r2, &mut plain, &mut out),
        Err(NoiseError::Decrypt)
    );

    let mut q = pair(10);
    q.handshake(Split::Whole);
    let mut r1 = Vec::new();
    q.init.send(b"one", &mut r1).unwrap();
    q.resp.receive(&r1, &mut plain, &mut out).unwrap();
    assert_eq!(
        q.resp.receive(&r1, &mut plain, &mut out),
        Err(NoiseError::Decrypt)
    );
}

#[test]
fn invalid_record_lengths_are_errors() {
    // Zero length, during the handshake.
    let mut p = pair(11);
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    assert_eq!(
        p.resp.receive(&[0, 0, 1, 2], &mut plain, &mut out),
        Err(NoiseError::BadRecordLength(0))
    );
    // Too short for a tag, once established and encrypted.
    for len in [0u16, 1, TAG_LEN as u16] {
        let mut p = pair(11);
        p.handshake(Split::Whole);
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.resize(2 + usize::from(len), 0);
        assert_eq!(
            p.init.receive(&bytes, &mut plain, &mut out),
            Err(NoiseError::BadRecordLength(len))
        );
    }
    // Zero length in unencrypted mode, split across calls.
    let mut p = pair_with(11, false, false);
    p.handshake(Split::Whole);
    p.init.receive(&[0], &mut plain, &mut out).unwrap();
    assert_eq!(
        p.init.receive(&[0], &mut plain, &mut out),
        Err(NoiseError::BadRecordLength(0))
    );
}

#[test]
fn garbage_to_a_responder_is_an_error_not_a_panic() {
    let mut rng = Rng::from_u64(12);
    for round in 0..64 {
        let mut p = pair(12);
        let len = rng.below(3000) as usize;
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk);
        if round % 2 == 0 && len >= 2 {
            // A plausible length prefix, so the body reaches Noise.
            let body = (len - 2) as u16;
            junk[..2].copy_from_slice(&body.max(1).to_be_bytes());
        }
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let result = p.resp.receive(&junk, &mut plain, &mut out);
        assert!(plain.is_empty());
        assert!(!p.resp.is_established());
        if result.is_err() {
            assert!(p.resp.is_dead());
        }
    }
    // A well-framed 32-byte message 1 is a valid ephemeral key: the responder
    // replies, and the next garbage fails authentication.
    let mut p = pair(12);
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let mut m1 = vec![0, 32];
    m1.extend_from_slice(&[9; 32]);
    p.resp.receive(&m1, &mut plain, &mut out).unwrap();
    assert!(!out.is_empty());
    let mut m3 = vec![0, 80];
    m3.extend_from_slice(&[7; 80]);
    assert!(matches!(
        p.resp.receive(&m3, &mut plain, &mut out),
        Err(NoiseError::BadHandshake(_))
    ));
    // A payload in message 1 is refused.
    let mut p = pair(12);
    let mut m1 = vec![0, 33];
    m1.extend_from_slice(&[9; 33]);
    assert!(matches!(
        p.resp.receive(&m1, &mut plain, &mut Vec::new()),
        Err(NoiseError::BadHandshake(_))
    ));
}

#[test]
fn tampered_handshake_messages_are_rejected() {
    // Message 2 and message 3, each with every one of a sample of bits flipped.
    for bit in (0..8 * 150).step_by(37) {
        let mut p = pair(13);
        let (mut m1, mut m2, mut m3, mut plain) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        p.init.start(&mut m1);
        p.resp.receive(&m1, &mut plain, &mut m2).unwrap();
        if 2 + bit / 8 < m2.len() {
            let mut bad = m2.clone();
            bad[2 + bit / 8] ^= 1 << (bit % 8);
            let mut init = pair(13).init;
            init.start(&mut Vec::new());
            assert!(
                init.receive(&bad, &mut plain, &mut m3).is_err(),
                "m2 bit {bit}"
            );
            assert!(!init.is_established());
            m3.clear();
        }
        p.init.receive(&m2, &mut plain, &mut m3).unwrap();
        if 2 + bit / 8 < m3.len() {
            m3[2 + bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(
                p.resp.receive(&m3, &mut plain, &mut Vec::new()),
                Err(NoiseError::BadHandshake(_))
            ));
            assert!(!p.resp.is_established());
        }
    }
}

#[test]
fn misuse_is_reported() {
    let mut p = pair(14);
    let mut out = Vec::new();
    assert_eq!(
        p.init.send(b"early", &mut out),
        Err(NoiseError::NotEstablished)
    );
    assert!(out.is_empty());

    let mut p = pair(14);
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    assert_eq!(
        p.init.receive(&[0, 1, 2], &mut plain, &mut out),
        Err(NoiseError::NotStarted)
    );

    // A responder's start is a no-op, and so is a second start.
    let mut p = pair(14);
    p.resp.start(&mut out);
    assert!(out.is_empty());
    p.init.start(&mut out);
    let len = out.len();
    p.init.start(&mut out);
    assert_eq!(out.len(), len);

    // Message 2 sent to the responder (out of turn) is rejected.
    let mut p = pair(14);
    let (mut m1, mut m2) = (Vec::new(), Vec::new());
    p.init.start(&mut m1);
    p.resp.receive(&m1, &mut plain, &mut m2).unwrap();
    let mut q = pair(15);
    assert!(q.resp.receive(&m2, &mut plain, &mut out).is_err());
}

#[test]
fn identical_seeds_give_identical_transcripts() {
    let run = |seed: u64| {
        let mut p = pair(seed);
        p.handshake(Split::Random { seed, max: 50 });
        p.transfer(true, b"ping", Split::Whole);
        p.transfer(false, &pattern(100_000, 3), Split::Whole);
        (p.wire_i, p.wire_r)
    };
    let a = run(16);
    let b = run(16);
    assert_eq!(a, b);
    let c = run(17);
    assert_ne!(a.0, c.0);
    assert_ne!(a.1, c.1);
    // Only the ephemeral keys differ when the same static keys meet with
    // different session seeds.
    let (ki, kr) = keypairs(16);
    let mut m1a = Vec::new();
    let mut m1b = Vec::new();
    Session::new(Role::Initiator, &ki, Rng::from_u64(1), true, vec![])
        .unwrap()
        .start(&mut m1a);
    Session::new(Role::Initiator, &kr, Rng::from_u64(2), true, vec![])
        .unwrap()
        .start(&mut m1b);
    assert_ne!(m1a, m1b);
}

#[test]
fn keypairs_are_deterministic_and_rebuildable() {
    let mut a = Rng::from_u64(18);
    let mut b = Rng::from_u64(18);
    let ka = Keypair::generate(&mut a);
    let kb = Keypair::generate(&mut b);
    assert_eq!(ka, kb);
    assert_ne!(Keypair::generate(&mut a).public, ka.public);
    let rebuilt = Keypair::from_private(ka.private).unwrap();
    assert_eq!(rebuilt, ka);
    assert_eq!(Keypair::from_private([0; 32]), Err(NoiseError::InvalidKey));
    // Debug never shows the private key.
    let shown = format!("{ka:?}");
    let private_hex: String = ka.private.iter().map(|b| format!("{b:02x}")).collect();
    assert!(!shown.contains(&private_hex));
    // RFC 7748 section 6.1: Alice's key pair.
    let alice = Keypair::from_private(hex32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ))
    .unwrap();
    assert_eq!(
        alice.public,
        hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// A forged X25519 "key" for [`a_low_order_static_key_is_refused`]: once given
/// a private key (as the static key is), it claims the all-zero point as its
/// public key and produces the all-zero shared secret the honest side will
/// compute with that point. Ephemeral keys (`generate`) stay honest.
struct ForgedStatic {
    inner: Box<dyn snow::types::Dh>,
    forged: bool,
}

impl snow::types::Dh for ForgedStatic {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn pub_len(&self) -> usize {
        self.inner.pub_len()
    }
    fn priv_len(&self) -> usize {
        self.inner.priv_len()
    }
    fn set(&mut self, privkey: &[u8]) {
        self.forged = true;
        self.inner.set(privkey);
    }
    fn generate(&mut self, rng: &mut dyn snow::types::Random) -> Result<(), snow::Error> {
        self.forged = false;
        self.inner.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        if self.forged {
            &[0; 32]
        } else {
            self.inner.pubkey()
        }
    }
    fn privkey(&self) -> &[u8] {
        self.inner.privkey()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        if self.forged {
            out[..32].fill(0);
            Ok(())
        } else {
            self.inner.dh(pubkey, out)
        }
    }
}

struct ForgingResolver;

struct TestRandom(Rng);

impl snow::types::Random for TestRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl snow::resolvers::CryptoResolver for ForgingResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(TestRandom(Rng::from_u64(99))))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        let inner = snow::resolvers::DefaultResolver.resolve_dh(choice)?;
        Some(Box::new(ForgedStatic {
            inner,
            forged: false,
        }))
    }
    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        snow::resolvers::DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        snow::resolvers::DefaultResolver.resolve_cipher(choice)
    }
}

#[test]
fn a_low_order_static_key_is_refused() {
    // An attacker who claims the all-zero point as its static key can complete
    // the cryptography (every DH with that point is zero), but the key
    // identifies nobody: anyone could claim it.
    let mut forger = snow::Builder::with_resolver(
        ivaldi_core::noise::PATTERN.parse().unwrap(),
        Box::new(ForgingResolver),
    )
    .prologue(ivaldi_core::noise::PROLOGUE)
    .unwrap()
    .local_private_key(&[1; 32])
    .unwrap()
    .build_initiator()
    .unwrap();
    let (_, kr) = keypairs(19);
    let mut resp = Session::new(Role::Responder, &kr, Rng::from_u64(19), true, vec![]).unwrap();
    let frame = |msg: &[u8]| {
        let mut v = (msg.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(msg);
        v
    };
    let mut buf = vec![0u8; 65535];
    let n = forger.write_message(&[], &mut buf).unwrap();
    let (mut plain, mut m2) = (Vec::new(), Vec::new());
    resp.receive(&frame(&buf[..n]), &mut plain, &mut m2)
        .unwrap();
    let mut payload = vec![0u8; 65535];
    forger.read_message(&m2[2..], &mut payload).unwrap();
    let n = forger.write_message(&[1], &mut buf).unwrap();
    assert_eq!(
        resp.receive(&frame(&buf[..n]), &mut plain, &mut Vec::new()),
        Err(NoiseError::WeakRemoteKey)
    );
    assert!(!resp.is_established());
    assert_eq!(resp.remote_static(), None);
}

#[test]
fn arbitrary_bytes_never_panic_a_responder() {
    /// `chunks` go to a fresh responder one `receive` each; with `frame`, they
    /// are preceded by a length prefix covering all of them, so that the bytes
    /// reach Noise instead of waiting for a longer record.
    fn prop(chunks: Vec<Vec<u8>>, frame: bool) -> TestResult {
        let keypair = Keypair::from_private([3; 32]).unwrap();
        let mut resp =
            Session::new(Role::Responder, &keypair, Rng::from_u64(20), true, vec![1]).unwrap();
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let mut chunks = chunks;
        if frame {
            let total: usize = chunks.iter().map(Vec::len).sum();
            let header = u16::try_from(total.max(1))
                .unwrap_or(u16::MAX)
                .to_be_bytes();
            chunks.insert(0, header.to_vec());
        }
        for chunk in &chunks {
            if resp.receive(chunk, &mut plain, &mut out).is_err() {
                assert!(resp.is_dead());
                assert_eq!(
                    resp.receive(chunk, &mut plain, &mut out),
                    Err(NoiseError::Dead)
                );
                break;
            }
        }
        assert!(plain.is_empty());
        TestResult::from_bool(!resp.is_established() && resp.remote_payload().is_none())
    }
    QuickCheck::new()
        .rng(Gen::new(200))
        .tests(300)
        .quickcheck(prop as fn(Vec<Vec<u8>>, bool) -> TestResult);
}

#[test]
fn arbitrary_bytes_never_panic_an_established_session() {
    fn prop(junk: Vec<u8>, encrypted: bool) -> bool {
        let mut p = pair_with(21, encrypted, encrypted);
        p.handshake(Split::Whole);
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let result = p.init.receive(&junk, &mut plain, &mut out);
        // Unencrypted records are taken at face value; encrypted ones never
        // decrypt.
        if encrypted {
            plain.is_empty()
        } else {
            result.is_err() || plain.len() <= junk.len()
        }
    }
    QuickCheck::new()
        .rng(Gen::new(300))
        .tests(60)
        .quickcheck(prop as fn(Vec<u8>, bool) -> bool);
}

/// Encrypts and decrypts 256 MiB through a session pair and prints the
/// throughput. Run with `cargo test --release -p ivaldi-core --test noise --
/// --ignored --nocapture`.
#[test]
#[ignore = "benchmark; run in release mode"]
fn throughput_256_mib() {
    const TOTAL: usize = 256 << 20;
    const WRITE: usize = 1 << 20;
    for encrypted in [true, false] {
        let mut p = pair_with(22, encrypted, encrypted);
        p.handshake(Split::Whole);
        let msg = pattern(WRITE, 5);
        let (mut wire, mut plain, mut out) = (Vec::new(), Vec::new(), Vec::new());
        let (mut t_send, mut t_recv) = (0f64, 0f64);
        let mut received = 0;
        let start = Instant::now();
        for _ in 0..TOTAL / WRITE {
            wire.clear();
            plain.clear();
            let t = Instant::now();
            p.init.send(&msg, &mut wire).unwrap();
            t_send += t.elapsed().as_secs_f64();
            let t = Instant::now();
            // 64 KiB reads, as a socket would deliver them.
            for piece in wire.chunks(64 << 10) {
                p.resp.receive(piece, &mut plain, &mut out).unwrap();
            }
            t_recv += t.elapsed().as_secs_f64();
            received += plain.len();
        }
        let total = start.elapsed().as_secs_f64();
        assert_eq!(received, TOTAL);
        let mib = (TOTAL >> 20) as f64;
        println!(
            "encrypted={encrypted}: 256 MiB send {:.0} MiB/s, receive {:.0} MiB/s, both {:.2} s ({:.0} MiB/s)",
            mib / t_send,
            mib / t_recv,
            total,
            mib / total
        );
    }
}

#[test]
fn sessions_can_move_between_threads() {
    // The shells run each connection as a task that may migrate threads.
    fn assert_send<T: Send>() {}
    assert_send::<Session>();
    assert_send::<Keypair>();
    assert_send::<NoiseError>();
}
