//! How one object's canonical encoding is stored in a pack, and sent on the wire
//! to a peer with the `zstd-delta` capability: as it is (raw), zstd compressed,
//! or zstd compressed with another object's canonical encoding as a reference
//! prefix (a delta against that base). One codec for both, so a stored form goes
//! to the wire as it is, with no decompress-and-recompress on the serving side.
//!
//! Invariants:
//! - decoding returns exactly the bytes that were encoded, or an error; it never
//!   panics and never produces (or allocates for) more than the declared length;
//! - no CPU is spent on compression that does not pay: data whose first
//!   [`SAMPLE`] bytes do not compress at level 1 is stored raw without a full
//!   attempt, and a compressed form is kept only when it is meaningfully smaller.

use std::cell::RefCell;

use zstd::zstd_safe::{self, CCtx, DCtx};

use crate::id::ObjectId;
use crate::object::ObjectKind;

/// An object in its stored form: what a pack holds, and what a `zstd-delta`
/// objects frame carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub kind: ObjectKind,
    pub codec: Codec,
    /// Bytes of the canonical encoding the stored bytes decode to.
    pub len: u32,
    /// The delta base ([`Codec::Delta`] only).
    pub base: Option<ObjectId>,
    pub bytes: Vec<u8>,
}

impl Stored {
    /// The form [`encode`] chooses for `encoding`, against `base` (its id and
    /// encoding) when one is offered.
    pub fn encode(
        kind: ObjectKind,
        encoding: &[u8],
        base: Option<(ObjectId, &[u8])>,
    ) -> Option<Stored> {
        let len = u32::try_from(encoding.len()).ok()?;
        let (codec, bytes) = encode(encoding, base.map(|b| b.1));
        Some(Stored {
            kind,
            codec,
            len,
            base: match codec {
                Codec::Delta => base.map(|b| b.0),
                _ => None,
            },
            bytes: bytes.unwrap_or_else(|| encoding.to_vec()),
        })
    }

    /// The canonical encoding. `base` is the base's encoding, required for a
    /// delta. Never produces more than `len` bytes; the caller still checks the
    /// result against the object's id.
    pub fn decode(&self, base: Option<&[u8]>) -> Result<Vec<u8>, String> {
        decode(self.codec, &self.bytes, self.len as usize, base)
    }
}

/// How an entry's stored bytes relate to the object's canonical encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// The stored bytes are the encoding.
    Raw = 0,
    /// One zstd frame of the encoding.
    Zstd = 1,
    /// One zstd frame of the encoding, compressed with the base object's
    /// encoding as a reference prefix.
    Delta = 2,
}

impl Codec {
    /// The codec a stored byte names, if any.
    pub fn from_byte(b: u8) -> Option<Codec> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Delta),
            _ => None,
        }
    }
}

/// The zstd level for stored objects.
const LEVEL: i32 = 3;
/// Bytes compressed at level 1 to decide whether a large object compresses at all.
pub const SAMPLE: usize = 16 * 1024;
/// Objects this small are stored raw: a frame header costs more than it saves.
const MIN_COMPRESS: usize = 64;

/// Whether `stored` bytes are worth keeping instead of `plain` raw bytes: at
/// least 1/16 smaller.
fn pays(stored: usize, plain: usize) -> bool {
    stored < plain - plain / 16
}

thread_local! {
    /// One compression and one decompression context per thread, reused:
    /// creating a context per object cost a fifth of sealing 5,000 small files
    /// and most of a full sync's CPU (perf). A delta's base is passed per call
    /// as a raw-content dictionary, which zstd treats exactly like a
    /// reference prefix (an encoding starts with its kind byte, 1–4, never
    /// with the dictionary magic), so frames made either way decode either way.
    static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's compression context (a fresh one if it is
/// somehow in use).
fn with_cctx<T>(f: impl FnOnce(&mut CCtx<'static>) -> T) -> T {
    CCTX.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(CCtx::create)),
        Err(_) => f(&mut CCtx::create()),
    })
}

/// Runs `f` with this thread's decompression context.
fn with_dctx<T>(f: impl FnOnce(&mut DCtx<'static>) -> T) -> T {
    DCTX.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(DCtx::create)),
        Err(_) => f(&mut DCtx::create()),
    })
}

/// zstd of `data` at `level`, with this thread's context.
fn compress_at(data: &[u8], level: i32) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    with_cctx(|c| c.compress(&mut out, data, level)).ok()?;
    Some(out)
}

/// Whether `data` looks incompressible, judged from a sample at level 1 (cheap).
/// Small data is never judged so: it is cheap to just try.
pub fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < 2 * SAMPLE {
        return false;
    }
    match compress_at(&data[..SAMPLE], 1) {
        Some(c) => !pays(c.len(), SAMPLE),
        None => true,
    }
}

/// zstd of `data`, or `None` when that does not pay.
fn compress_plain(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < MIN_COMPRESS || looks_incompressible(data) {
        return None;
    }
    let out = compress_at(data, LEVEL)?;
    pays(out.len(), data.len()).then_some(out)
}

/// zstd of `data` with `base` as a reference prefix.
fn compress_delta(data: &[u8], base: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    with_cctx(|c| c.compress_using_dict(&mut out, data, base, LEVEL)).ok()?;
    Some(out)
}

/// Chooses how to store `data`: a delta against `base` when one is offered and
/// it is meaningfully smaller (3/4 or less) than plain zstd, else plain zstd
/// when that pays, else raw (`None` bytes: store `data` itself). A delta only
/// as good as plain zstd is not kept: it would tie the object to its base.
pub fn encode(data: &[u8], base: Option<&[u8]>) -> (Codec, Option<Vec<u8>>) {
    if let Some(base) = base
        && data.len() >= MIN_COMPRESS
        && let Some(delta) = compress_delta(data, base)
        && pays(delta.len(), data.len())
    {
        return match compress_plain(data) {
            Some(z) if delta.len() * 4 > z.len() * 3 => (Codec::Zstd, Some(z)),
            _ => (Codec::Delta, Some(delta)),
        };
    }
    match compress_plain(data) {
        Some(z) => (Codec::Zstd, Some(z)),
        None => (Codec::Raw, None),
    }
}

/// Like [`encode`], trying each of `bases` and keeping the smallest delta
/// (under the same rule: at most 3/4 of plain zstd). Returns which base was
/// used, if a delta won. `gc` uses it for its deeper search.
pub fn encode_best(data: &[u8], bases: &[&[u8]]) -> (Codec, Option<Vec<u8>>, Option<usize>) {
    let plain = compress_plain(data);
    let mut best: Option<(usize, Vec<u8>)> = None;
    if data.len() >= MIN_COMPRESS {
        for (i, base) in bases.iter().enumerate() {
            if let Some(delta) = compress_delta(data, base)
                && pays(delta.len(), data.len())
                && best.as_ref().is_none_or(|(_, b)| delta.len() < b.len())
            {
                best = Some((i, delta));
            }
        }
    }
    match (best, plain) {
        (Some((_, d)), Some(z)) if d.len() * 4 > z.len() * 3 => (Codec::Zstd, Some(z), None),
        (Some((i, d)), _) => (Codec::Delta, Some(d), Some(i)),
        (None, Some(z)) => (Codec::Zstd, Some(z), None),
        (None, None) => (Codec::Raw, None, None),
    }
}

/// Decodes stored bytes back to the `len`-byte encoding. `base` is the base's
/// encoding, required for [`Codec::Delta`]. Output never exceeds `len` bytes.
pub fn decode(
    codec: Codec,
    stored: &[u8],
    len: usize,
    base: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let out = match codec {
        Codec::Raw => stored.to_vec(),
        Codec::Zstd => {
            let mut out = Vec::with_capacity(len);
            with_dctx(|d| d.decompress(&mut out, stored))
                .map_err(|c| format!("zstd: {}", zstd_safe::get_error_name(c)))?;
            out
        }
        Codec::Delta => {
            let base = base.ok_or("a delta needs its base, and none was given")?;
            let mut out = Vec::with_capacity(len);
            with_dctx(|d| d.decompress_using_dict(&mut out, stored, base))
                .map_err(|c| format!("zstd delta: {}", zstd_safe::get_error_name(c)))?;
            out
        }
    };
    if out.len() != len {
        return Err(format!(
            "decodes to {} bytes, the index says {len}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zstd::zstd_safe::CParameter;

    fn text(n: usize, seed: u32) -> Vec<u8> {
        (0..n)
            .map(|i| format!("line {i} of version {seed}: some ordinary text\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn raw_zstd_and_delta_round_trip() {
        let tiny = b"hi".to_vec();
        let (c, s) = encode(&tiny, None);
        assert_eq!(c, Codec::Raw);
        assert!(s.is_none());
        assert_eq!(decode(c, &tiny, tiny.len(), None).unwrap(), tiny);

        let a = text(2000, 1);
        let (c, s) = encode(&a, None);
        assert_eq!(c, Codec::Zstd);
        let s = s.unwrap();
        assert!(s.len() * 4 < a.len());
        assert_eq!(decode(c, &s, a.len(), None).unwrap(), a);

        let mut b = a.clone();
        b.extend_from_slice(b"one more line\n");
        b[100] = b'X';
        let (c, s) = encode(&b, Some(&a));
        assert_eq!(c, Codec::Delta);
        let s = s.unwrap();
        assert!(s.len() < 400, "delta is {} bytes", s.len());
        assert_eq!(decode(c, &s, b.len(), Some(&a)).unwrap(), b);
    }

    /// Packs written before contexts were reused hold deltas made with a
    /// reference prefix; they must decode, and new deltas must decode with a
    /// reference prefix too (older readers).
    #[test]
    fn prefix_deltas_and_dictionary_deltas_are_interchangeable() {
        let a = text(2000, 1);
        let mut b = a.clone();
        b.extend_from_slice(b"one more line\n");
        b[500] = b'Y';
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(LEVEL))
            .unwrap();
        cctx.ref_prefix(&a).unwrap();
        let mut old = Vec::with_capacity(zstd_safe::compress_bound(b.len()));
        cctx.compress2(&mut old, &b).unwrap();
        assert_eq!(decode(Codec::Delta, &old, b.len(), Some(&a)).unwrap(), b);
        let new = compress_delta(&b, &a).unwrap();
        let mut dctx = DCtx::create();
        dctx.ref_prefix(&a).unwrap();
        let mut out = Vec::with_capacity(b.len());
        dctx.decompress(&mut out, &new).unwrap();
        assert_eq!(out, b);
    }

    #[test]
    fn incompressible_data_is_detected_from_a_sample_and_stored_raw() {
        let r = noise(256 * 1024, 7);
        assert!(looks_incompressible(&r));
        assert_eq!(encode(&r, None).0, Codec::Raw);
        assert!(!looks_incompressible(&text(10_000, 1)));
    }

    #[test]
    fn an_unrelated_base_is_not_used() {
        let a = text(2000, 1);
        let unrelated = noise(a.len(), 3);
        assert_eq!(encode(&a, Some(&unrelated)).0, Codec::Zstd);
    }

    #[test]
    fn a_delta_without_its_base_or_with_the_wrong_one_is_an_error() {
        let a = text(2000, 1);
        let mut b = a.clone();
        b[10] = b'!';
        let (c, s) = encode(&b, Some(&a));
        assert_eq!(c, Codec::Delta);
        let s = s.unwrap();
        let e = decode(c, &s, b.len(), None).unwrap_err();
        assert!(e.contains("needs its base"), "{e}");
        // A wrong base decodes to wrong bytes (caught by the id check) or fails.
        if let Ok(out) = decode(c, &s, b.len(), Some(&text(2000, 9))) {
            assert_ne!(out, b);
        }
    }

    #[test]
    fn corrupt_or_oversized_frames_give_clean_errors() {
        let a = text(2000, 1);
        let (c, s) = encode(&a, None);
        let mut s = s.unwrap();
        assert!(
            decode(c, &s, a.len() - 1, None).is_err(),
            "longer than declared"
        );
        let mid = s.len() / 2;
        s[mid] ^= 0xff;
        s.truncate(s.len() - 3);
        assert!(decode(c, &s, a.len(), None).is_err());
        assert!(decode(Codec::Zstd, b"not zstd at all", 10, None).is_err());
        assert!(decode(Codec::Raw, b"abc", 4, None).is_err());
    }
}
