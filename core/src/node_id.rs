//! Node identities: the 32-byte static Noise public key of a node.
//!
//! Ids used to travel through the code as `String`, and every module checked
//! "64 hex digits" its own way, some case-sensitively and some not, so the same
//! peer could be two different keys in two maps. A `NodeId` is the key itself:
//! it is parsed once at the edge (config, wire, CLI) and compared as bytes.
//! Its text form is unchanged, 64 lowercase hex digits, so `config.json` and
//! the wire format stay the same.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::id::to_hex;

/// Digits shown in logs and user-facing lists; long enough to tell peers apart.
pub const SHORT_LEN: usize = 12;

/// A node's static public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 32]);

/// Why a string is not a node id. The offending text is clipped, so a hostile
/// megabyte-long "id" does not end up in every log line.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("a node id is 64 hex digits; got {0:?}")]
pub struct ParseNodeIdError(String);

impl NodeId {
    pub fn from_bytes(bytes: [u8; 32]) -> NodeId {
        NodeId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full lowercase hex, the form in files, JSON and on the wire.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The first [`SHORT_LEN`] digits, for logs and lists.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(SHORT_LEN);
        s
    }

    /// Parses only the canonical lowercase form. Signed mesh records compare
    /// ids inside signed text, where `AB…` and `ab…` would be different
    /// bytes under the same key; they use this instead of [`FromStr`].
    pub fn parse_canonical(s: &str) -> Result<NodeId, ParseNodeIdError> {
        if !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ParseNodeIdError(clip(s)));
        }
        s.parse()
    }

    /// Whether the hex form starts with `prefix`, in either case: users type
    /// prefixes back from `ivaldi p2p peers`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let p = prefix.to_ascii_lowercase();
        p.len() <= 64 && self.to_hex().starts_with(&p)
    }
}

/// The first [`SHORT_LEN`] digits of an id still held as text (a claimed id
/// not parsed yet, or one read from a log); never panics on short or
/// non-ASCII input.
pub fn short(id: &str) -> &str {
    id.get(..SHORT_LEN).unwrap_or(id)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    /// Either case is accepted (a user may paste an upper-case key); the
    /// value is the key, so both parse to the same id.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::id::unhex32(s)
            .map(NodeId)
            .ok_or_else(|| ParseNodeIdError(clip(s)))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for node ids in peer-controlled records (`#[serde(with =
/// "crate::node_id::canonical")]`): the same lowercase hex text as
/// [`NodeId`]'s own serde, but only the canonical form is read back. Every
/// correct peer writes lowercase, and signed or compared records (mesh
/// advertisements, envelopes checked against the session's key) would
/// otherwise accept two spellings of one key; an upper-case id from a peer is
/// therefore a decode error, as it was a refusal when these fields were text.
pub mod canonical {
    use super::NodeId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        NodeId::parse_canonical(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00ff10aa00000000000000000000000000000000000000000000000000000001";

    #[test]
    fn text_round_trip_is_lowercase_and_case_insensitive() {
        let id: NodeId = KEY.parse().unwrap();
        assert_eq!(id.to_string(), KEY);
        assert_eq!(KEY.to_uppercase().parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short(), &KEY[..SHORT_LEN]);
        assert_eq!(format!("{id:?}"), format!("NodeId({})", &KEY[..SHORT_LEN]));
    }

    #[test]
    fn canonical_parse_refuses_upper_case() {
        assert!(NodeId::parse_canonical(KEY).is_ok());
        assert!(NodeId::parse_canonical(&KEY.to_uppercase()).is_err());
    }

    #[test]
    fn bad_ids_are_refused_with_a_clipped_message() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65), &"é".repeat(32)] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad:?}");
        }
        let long = "x".repeat(1_000_000);
        let e = long.parse::<NodeId>().unwrap_err().to_string();
        assert!(e.len() < 200, "{}", e.len());
    }

    #[test]
    fn serde_is_the_hex_string() {
        let id: NodeId = KEY.parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{KEY}\""));
        assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<NodeId>("\"zz\"").is_err());
    }

    #[test]
    fn canonical_serde_writes_the_same_text_and_reads_only_lowercase() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct Typed {
            #[serde(with = "canonical")]
            id: NodeId,
        }
        #[derive(Serialize)]
        struct Text {
            id: String,
        }
        let id: NodeId = KEY.parse().unwrap();
        let typed = serde_json::to_string(&Typed { id }).unwrap();
        let text = serde_json::to_string(&Text { id: KEY.into() }).unwrap();
        assert_eq!(typed, text);
        assert_eq!(serde_json::from_str::<Typed>(&typed).unwrap().id, id);
        let upper = text.replace(KEY, &KEY.to_uppercase());
        assert!(serde_json::from_str::<Typed>(&upper).is_err());
        let bad = serde_json::from_str::<Typed>(r#"{"id":"zz"}"#).unwrap_err();
        assert!(bad.to_string().contains("64 hex digits"), "{bad}");
    }

    #[test]
    fn prefixes_match_in_either_case() {
        let id: NodeId = KEY.parse().unwrap();
        assert!(id.has_prefix("00FF1"));
        assert!(id.has_prefix(""));
        assert!(!id.has_prefix("01"));
        assert!(!id.has_prefix(&"0".repeat(65)));
    }
}
