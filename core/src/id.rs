//! Content addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// The BLAKE3-256 hash of an object's canonical encoding.
///
/// Ids name objects by content, so the same seal has the same id on every peer and
/// a received object can be checked against the id it was asked for.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

/// Length of the short form shown to users; long enough to be unique in practice,
/// short enough to type back.
pub const SHORT_HEX_LEN: usize = 12;

impl ObjectId {
    /// Hashes a complete canonical encoding.
    pub fn hash(encoding: &[u8]) -> Self {
        ObjectId(*blake3::hash(encoding).as_bytes())
    }

    /// The raw bytes, as they appear inside other objects and on the wire.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex, the form used in files and JSON.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The abbreviated form users see in logs and type back.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(SHORT_HEX_LEN);
        s
    }

    /// Whether this id's hex form starts with `prefix` (already lowercased).
    pub fn has_hex_prefix(&self, prefix: &str) -> bool {
        let p = prefix.as_bytes();
        if p.len() > 64 {
            return false;
        }
        p.iter().enumerate().all(|(i, &c)| {
            let byte = self.0[i / 2];
            let nib = if i % 2 == 0 { byte >> 4 } else { byte & 0xf };
            HEX[usize::from(nib)] == c
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of any bytes: the one encoder for ids, keys and digests.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// Why a string is not an object id.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseIdError {
    #[error("an object id has 64 hex digits, this has {0} characters")]
    Length(usize),
    #[error("an object id is hexadecimal; found {0:?}")]
    Digit(char),
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// 64 hex digits (either case) back to 32 bytes, or `None` if they are not
/// that. Digit by digit: `from_str_radix` would also take a leading `+`.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Whether `s` could be (a prefix of) an id: only hex digits.
pub fn is_hex(s: &str) -> bool {
    s.bytes().all(|c| nibble(c).is_some())
}

impl FromStr for ObjectId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(ParseIdError::Length(s.chars().count()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = nibble(pair[0]).ok_or(ParseIdError::Digit(char::from(pair[0])))?;
            let lo = nibble(pair[1]).ok_or(ParseIdError::Digit(char::from(pair[1])))?;
            out[i] = (hi << 4) | lo;
        }
        Ok(ObjectId(out))
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_prefix() {
        let id = ObjectId::hash(b"hello");
        let hex = id.to_hex();
        assert_eq!(hex.parse::<ObjectId>().unwrap(), id);
        assert!(id.has_hex_prefix(&hex[..7]));
        assert!(!id.has_hex_prefix("zz"));
        assert_eq!(id.short().len(), SHORT_HEX_LEN);
        assert!("abc".parse::<ObjectId>().is_err());
        assert!("g".repeat(64).parse::<ObjectId>().is_err());
    }

    #[test]
    fn unhex32_takes_digits_only() {
        let hex = to_hex(&[0xab; 32]);
        assert_eq!(unhex32(&hex), Some([0xab; 32]));
        assert_eq!(unhex32(&hex.to_uppercase()), Some([0xab; 32]));
        assert_eq!(unhex32(&"+f".repeat(32)), None);
        assert_eq!(unhex32(&hex[..62]), None);
    }
}

/// A fixed (unseeded) hasher for maps keyed by ids: ids are already uniform, and a
/// fixed hasher keeps every iteration order reproducible, which the simulator's
/// determinism needs.
#[derive(Default, Clone, Copy, Debug)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by ids with a deterministic hasher.
pub type IdMap<V> = hashbrown::HashMap<ObjectId, V, std::hash::BuildHasherDefault<IdHasher>>;
/// A set of ids with a deterministic hasher.
pub type IdSet = hashbrown::HashSet<ObjectId, std::hash::BuildHasherDefault<IdHasher>>;
