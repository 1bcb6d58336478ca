//! Signatures on link-state advertisements: only a node can say what its
//! links are.
//!
//! A node's id is its X25519 Noise static public key, which every handshake
//! proves. XEdDSA (the signature scheme Signal defined for X25519 keys) signs
//! with that same key: the verifier turns the Montgomery public key (the id)
//! into its Edwards form (sign bit 0) and checks an ordinary Ed25519
//! signature against it. So an advertisement is bound to its origin's id with
//! no second key to announce, and a neighbour that relays it, however
//! trusted, cannot alter or invent one without the origin's private key.
//!
//! # What is signed
//!
//! The bytes below, not the JSON (whose field order and spacing are free), so
//! that a relay re-encoding an advertisement does not break it:
//!
//! ```text
//! "ivaldi mesh lsa v1" 0x00           19 bytes, a domain separator
//! origin                              32 bytes (the id's hex, decoded)
//! seq                                 u64 big-endian
//! number of links                     u32 big-endian
//!   per link, by peer id ascending:   peer, 32 bytes; rtt_us clamped to
//!                                     1..=MAX_LINK_RTT_US, u64 big-endian
//! number of repos                     u32 big-endian
//!   per repo, bytewise ascending:     length u32 big-endian, then its bytes
//! ```
//!
//! `hops_left` is left out: every relay lowers it. The order of links and
//! repos, and round-trip times outside the range a receiver uses, are left
//! out too (a receiver stores them normalised and floods them that way).
//!
//! The signature is 64 bytes, sent as 128 lowercase hex digits in `sig`.
//! XEdDSA takes 64 bytes of randomness per signature; the core never reads
//! the OS random source, so they are derived with BLAKE3 from the private
//! key and the signed bytes (as Ed25519 derives its nonce), which also makes
//! signing a pure function. Verification is strict: small-order keys and
//! non-canonical signatures are refused.

use core::convert::Infallible;

use ed25519_dalek::{Signature, VerifyingKey};
use xeddsa::xed25519::{PrivateKey, PublicKey};
use xeddsa::{ConvertMont, Sign};

use super::{Lsa, MAX_LINK_RTT_US, MeshError};

/// Length of [`Lsa::sig`] in hex digits.
pub const SIG_HEX_LEN: usize = 128;
/// The first bytes of everything signed.
const DOMAIN: &[u8] = b"ivaldi mesh lsa v1\0";
/// BLAKE3 key-derivation context for the signature's nonce input.
const NONCE_CONTEXT: &str = "ivaldi 2026-12 mesh advertisement signature nonce";

/// The bytes an advertisement's signature covers (see the module
/// documentation); `None` when the origin or a peer is not a 64-hex id.
pub fn signed_bytes(lsa: &Lsa) -> Option<Vec<u8>> {
    let id = |s: &str| -> Option<[u8; 32]> {
        let v = data_encoding::HEXLOWER.decode(s.as_bytes()).ok()?;
        v.try_into().ok()
    };
    let mut links = lsa
        .links
        .iter()
        .map(|l| Some((id(&l.peer)?, l.rtt_us.clamp(1, MAX_LINK_RTT_US))))
        .collect::<Option<Vec<_>>>()?;
    links.sort_unstable();
    let mut repos: Vec<&[u8]> = lsa.repos.iter().map(|r| r.as_bytes()).collect();
    repos.sort_unstable();
    let mut out = Vec::with_capacity(DOMAIN.len() + 48 + links.len() * 40);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&id(&lsa.origin)?);
    out.extend_from_slice(&lsa.seq.to_be_bytes());
    out.extend_from_slice(&u32::try_from(links.len()).ok()?.to_be_bytes());
    for (peer, rtt) in links {
        out.extend_from_slice(&peer);
        out.extend_from_slice(&rtt.to_be_bytes());
    }
    out.extend_from_slice(&u32::try_from(repos.len()).ok()?.to_be_bytes());
    for r in repos {
        out.extend_from_slice(&u32::try_from(r.len()).ok()?.to_be_bytes());
        out.extend_from_slice(r);
    }
    Some(out)
}

/// Signs advertisements for the node whose X25519 private key it holds.
pub struct Signer {
    key: PrivateKey,
    private: [u8; 32],
}

impl core::fmt::Debug for Signer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.private = [0; 32];
    }
}

impl Signer {
    /// A signer for the X25519 private key `private` (as
    /// [`Keypair::private`](crate::noise::Keypair::private), unclamped).
    pub fn new(private: &[u8; 32]) -> Signer {
        Signer {
            key: PrivateKey(*private),
            private: *private,
        }
    }

    /// `lsa`'s signature, in hex, for its `sig` field; empty when its ids are
    /// not valid (then every receiver refuses it anyway).
    pub fn sign(&self, lsa: &Lsa) -> String {
        let Some(msg) = signed_bytes(lsa) else {
            return String::new();
        };
        let mut nonce = blake3::Hasher::new_derive_key(NONCE_CONTEXT);
        nonce.update(&self.private).update(&msg);
        let sig: [u8; 64] = self.key.sign(&msg, NonceInput(nonce.finalize_xof()));
        data_encoding::HEXLOWER.encode(&sig)
    }
}

impl Lsa {
    /// This advertisement with `signer`'s signature (none without a signer):
    /// `cached`'s when it covers the same bytes, so an unchanged
    /// advertisement is signed once.
    pub(super) fn signed_by(
        mut self,
        signer: Option<&Signer>,
        cached: Option<&(Vec<u8>, String)>,
    ) -> Lsa {
        let Some(signer) = signer else {
            return self;
        };
        self.sig = match (cached, signed_bytes(&self)) {
            (Some((bytes, sig)), Some(now)) if *bytes == now => sig.clone(),
            _ => signer.sign(&self),
        };
        self
    }
}

/// Checks `lsa.sig` against `lsa.origin`: [`MeshError::Unsigned`] when there
/// is none, [`MeshError::BadSignature`] when it is malformed or does not
/// verify.
pub fn verify(lsa: &Lsa) -> Result<(), MeshError> {
    if lsa.sig.is_empty() {
        return Err(MeshError::Unsigned);
    }
    let bad = || MeshError::BadSignature;
    if lsa.sig.len() != SIG_HEX_LEN {
        return Err(bad());
    }
    let sig: [u8; 64] = data_encoding::HEXLOWER
        .decode(lsa.sig.as_bytes())
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    let msg = signed_bytes(lsa).ok_or_else(bad)?;
    let origin: [u8; 32] = data_encoding::HEXLOWER
        .decode(lsa.origin.as_bytes())
        .map_err(|_| bad())?
        .try_into()
        .map_err(|_| bad())?;
    let edwards = PublicKey(origin).convert_mont(0).map_err(|_| bad())?;
    let key = VerifyingKey::from_bytes(&edwards).map_err(|_| bad())?;
    key.verify_strict(&msg, &Signature::from_bytes(&sig))
        .map_err(|_| bad())
}

/// The 64 bytes XEdDSA asks of a random source, as a BLAKE3 output stream.
struct NonceInput(blake3::OutputReader);

impl rand_core::TryRng for NonceInput {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for NonceInput {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::LinkInfo;
    use crate::noise::Keypair;

    fn keypair(n: u8) -> Keypair {
        Keypair::from_private([n; 32]).unwrap()
    }

    fn hex(b: &[u8]) -> String {
        data_encoding::HEXLOWER.encode(b)
    }

    fn signed(k: &Keypair) -> Lsa {
        let mut lsa = Lsa {
            origin: hex(&k.public),
            seq: 7,
            links: vec![
                LinkInfo {
                    peer: hex(&keypair(9).public),
                    rtt_us: 1200,
                },
                LinkInfo {
                    peer: hex(&keypair(8).public),
                    rtt_us: 900,
                },
            ],
            repos: vec!["repo-b".into(), "repo-a".into()],
            hops_left: 8,
            sig: String::new(),
        };
        lsa.sig = Signer::new(&k.private).sign(&lsa);
        lsa
    }

    #[test]
    fn a_signed_advertisement_verifies() {
        let lsa = signed(&keypair(1));
        assert_eq!(lsa.sig.len(), SIG_HEX_LEN);
        assert_eq!(verify(&lsa), Ok(()));
        // Deterministic: the same content gets the same signature.
        assert_eq!(signed(&keypair(1)).sig, lsa.sig);
    }

    #[test]
    fn a_lower_hop_count_and_another_order_still_verify() {
        let mut lsa = signed(&keypair(1));
        lsa.hops_left = 1;
        lsa.links.reverse();
        lsa.repos.reverse();
        assert_eq!(verify(&lsa), Ok(()));
        // Re-encoded as JSON and parsed back, too.
        let back: Lsa = serde_json::from_str(&serde_json::to_string(&lsa).unwrap()).unwrap();
        assert_eq!(verify(&back), Ok(()));
    }

    #[test]
    fn another_origin_does_not_verify() {
        let mut lsa = signed(&keypair(1));
        lsa.origin = hex(&keypair(2).public);
        assert_eq!(verify(&lsa), Err(MeshError::BadSignature));
        // Signed by node 2's neighbour with its own key, claiming node 2.
        let mut forged = signed(&keypair(1));
        forged.origin = hex(&keypair(2).public);
        forged.sig = Signer::new(&keypair(1).private).sign(&forged);
        assert_eq!(verify(&forged), Err(MeshError::BadSignature));
    }

    #[test]
    fn every_altered_field_fails() {
        let lsa = signed(&keypair(1));
        type Alteration = Box<dyn Fn(&mut Lsa)>;
        let alter: Vec<Alteration> = vec![
            Box::new(|l| l.seq += 1),
            Box::new(|l| l.links[0].rtt_us += 1),
            Box::new(|l| l.links[0].peer = hex(&keypair(7).public)),
            Box::new(|l| {
                l.links.pop();
            }),
            Box::new(|l| l.links.push(l.links[0].clone())),
            Box::new(|l| l.repos[0].push('x')),
            Box::new(|l| l.repos.push("repo-c".into())),
            Box::new(|l| {
                // One bit of the signature.
                let c = if l.sig.starts_with('0') { "1" } else { "0" };
                l.sig.replace_range(0..1, c);
            }),
        ];
        for (i, f) in alter.iter().enumerate() {
            let mut l = lsa.clone();
            f(&mut l);
            assert_eq!(verify(&l), Err(MeshError::BadSignature), "alteration {i}");
        }
    }

    #[test]
    fn missing_or_malformed_signatures_are_refused() {
        let mut lsa = signed(&keypair(1));
        let sig = lsa.sig.clone();
        lsa.sig = String::new();
        assert_eq!(verify(&lsa), Err(MeshError::Unsigned));
        for bad in [sig.to_uppercase(), sig[2..].to_owned(), format!("{sig}00")] {
            lsa.sig = bad;
            assert_eq!(verify(&lsa), Err(MeshError::BadSignature));
        }
        // An origin that is not a point with an Edwards form, or not hex.
        lsa.sig = sig;
        lsa.origin = "ec".to_owned() + &"ff".repeat(30) + "7f";
        assert_eq!(verify(&lsa), Err(MeshError::BadSignature));
        lsa.origin = "zz".repeat(32);
        assert_eq!(verify(&lsa), Err(MeshError::BadSignature));
    }

    #[test]
    fn the_signed_bytes_are_laid_out_as_documented() {
        let k = keypair(1);
        let lsa = Lsa {
            origin: hex(&k.public),
            seq: 0x0102,
            links: vec![LinkInfo {
                peer: hex(&keypair(2).public),
                rtt_us: 0,
            }],
            repos: vec!["r".into()],
            hops_left: 3,
            sig: String::new(),
        };
        let mut want = b"ivaldi mesh lsa v1\0".to_vec();
        want.extend_from_slice(&k.public);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1]);
        want.extend_from_slice(&keypair(2).public);
        want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // rtt 0 counts as 1
        want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'r']);
        assert_eq!(signed_bytes(&lsa).unwrap(), want);
    }
}
