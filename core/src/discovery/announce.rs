//! The announcement datagram: its layout, encoding and validation.
//!
//! See the [parent module](super) for the format. Everything a receiver reads
//! from the network is checked here, so the table only ever sees well-formed
//! announcements.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DiscoveryError;
use crate::wire::PROTOCOL_VERSION;

/// The first bytes of every discovery datagram: names the format and its version,
/// so stray traffic on the port is rejected before any JSON is parsed.
pub const MAGIC: &[u8; 8] = b"IVDISC2\n";
/// Largest datagram sent or accepted. Small enough to avoid IP fragmentation on
/// any common link (the IPv6 minimum MTU is 1280), so an announcement is either
/// delivered whole or lost.
pub const MAX_DATAGRAM: usize = 1200;
/// Hex digits of a repository tag (16 bytes).
pub const TAG_HEX_LEN: usize = 32;
/// The BLAKE3 key-derivation context of repository tags. A new tag construction
/// gets a new context (and a new [`MAGIC`]).
pub const TAG_CONTEXT: &str = "ivaldi-p2p discovery tag v1";

// ----- repository tags -----

/// The secret half of a repository's tags: BLAKE3 `derive_key` of the repository
/// id under [`TAG_CONTEXT`]. Only a node that knows the repository id can make it,
/// so only such a node can compute or recognise the repository's tags.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoKey([u8; 32]);

impl RepoKey {
    /// The key of repository `repo_id`.
    pub fn new(repo_id: &str) -> Self {
        RepoKey(blake3::derive_key(TAG_CONTEXT, repo_id.as_bytes()))
    }

    /// The tag this repository has in announcements by `node_id`: the first 16
    /// bytes, in lowercase hex, of BLAKE3 keyed with this key over the node id's
    /// 32 bytes. It differs per sender, so it is no global name of the
    /// repository either. A node id that is not 64 hex digits (never the case
    /// for a validated announcement) is hashed as text.
    pub fn tag(&self, node_id: &str) -> String {
        let hash = match decode_node_id(node_id) {
            Some(bytes) => blake3::keyed_hash(&self.0, &bytes),
            None => blake3::keyed_hash(&self.0, node_id.as_bytes()),
        };
        let mut hex = hash.to_hex().to_string();
        hex.truncate(TAG_HEX_LEN);
        hex
    }
}

impl std::fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // It stands for the repository id, which logs must not show either.
        f.write_str("RepoKey(..)")
    }
}

/// The tag of repository `repo_id` in announcements by `node_id`; see
/// [`RepoKey::tag`].
pub fn repo_tag(repo_id: &str, node_id: &str) -> String {
    RepoKey::new(repo_id).tag(node_id)
}

fn decode_node_id(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

// ----- announcements -----

/// One decoded (or to-be-encoded) announcement. See the module documentation for
/// the datagram layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The sender's protocol version.
    #[serde(rename = "v")]
    pub version: u32,
    /// The sender's node id (64 lowercase hex digits).
    #[serde(rename = "node")]
    pub node_id: String,
    /// The sender's TCP port for peer connections.
    pub port: u16,
    /// Repository tag ([`RepoKey::tag`] for this sender) to heads digest.
    pub repos: BTreeMap<String, String>,
    /// The sender serves more repositories than `repos` lists.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Announcement {
    /// An announcement by `node_id` of `repos` (repository id to heads digest):
    /// each id is replaced by its tag for this sender, then the whole is cut to
    /// fit as [`from_tags`](Self::from_tags) does.
    pub fn new(node_id: &str, port: u16, repos: &BTreeMap<String, String>) -> Self {
        let tags = repos
            .iter()
            .map(|(id, digest)| (repo_tag(id, node_id), digest.clone()))
            .collect();
        Self::from_tags(node_id, port, &tags)
    }

    /// An announcement of `tags` (tag to heads digest), cut to fit
    /// [`MAX_DATAGRAM`]: when they do not all fit, the longest prefix in tag
    /// order that does is kept and `truncated` set. The cut is deterministic so
    /// that repeated announcements agree and a receiver's view does not flap.
    pub fn from_tags(node_id: &str, port: u16, repos: &BTreeMap<String, String>) -> Self {
        let mut ann = Announcement {
            version: PROTOCOL_VERSION,
            node_id: node_id.to_owned(),
            port,
            repos: BTreeMap::new(),
            truncated: true,
        };
        let base = ann.encode().len();
        let mut budget = MAX_DATAGRAM.saturating_sub(base);
        for (id, digest) in repos {
            // `"tag":"digest"`, plus a comma after the first entry.
            let cost =
                json_str_len(id) + 1 + json_str_len(digest) + usize::from(!ann.repos.is_empty());
            if cost > budget {
                break;
            }
            budget -= cost;
            ann.repos.insert(id.clone(), digest.clone());
        }
        ann.truncated = ann.repos.len() < repos.len();
        // The arithmetic above is exact; this only guards against a surprise in
        // the JSON writer.
        while ann.encode().len() > MAX_DATAGRAM && ann.repos.pop_last().is_some() {
            ann.truncated = true;
        }
        ann
    }

    /// The datagram: [`MAGIC`] then compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // Serialising strings, numbers and a string-keyed map cannot fail.
        out.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Parses and validates a datagram. Everything is checked here, so the rest of
    /// the machine only ever sees well-formed announcements.
    pub fn decode(data: &[u8]) -> Result<Self, DiscoveryError> {
        if data.len() > MAX_DATAGRAM {
            return Err(DiscoveryError::TooLarge {
                len: data.len(),
                max: MAX_DATAGRAM,
            });
        }
        let json = data
            .strip_prefix(MAGIC.as_slice())
            .ok_or(DiscoveryError::BadMagic)?;
        // serde would also read a struct from a JSON array, by position; only the
        // documented object form is accepted, so there is one encoding.
        if json.first() != Some(&b'{') {
            return Err(DiscoveryError::Malformed(
                "expected a JSON object right after the magic".into(),
            ));
        }
        let ann: Announcement =
            serde_json::from_slice(json).map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
        ann.validate()?;
        Ok(ann)
    }

    fn validate(&self) -> Result<(), DiscoveryError> {
        let invalid = |field, reason: &str| DiscoveryError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if self.version == 0 {
            return Err(invalid("v", "protocol version 0 does not exist"));
        }
        if !is_node_id(&self.node_id) {
            return Err(invalid("node", "not 64 lowercase hex digits"));
        }
        if self.port == 0 {
            return Err(invalid("port", "port 0 cannot be dialled"));
        }
        for (tag, digest) in &self.repos {
            if !is_tag(tag) {
                return Err(invalid(
                    "repos",
                    "a repository tag is not 32 lowercase hex digits",
                ));
            }
            if !is_digest(digest) {
                return Err(invalid(
                    "repos",
                    "a heads digest is not 1 to 64 lowercase hex digits",
                ));
            }
        }
        Ok(())
    }
}

/// Bytes `s` takes as a JSON string, quotes and escapes included.
fn json_str_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(usize::MAX / 4, |j| j.len())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Node ids are compared as strings (to recognise our own announcements), so only
/// the canonical lowercase form is accepted.
pub(super) fn is_node_id(s: &str) -> bool {
    crate::NodeId::parse_canonical(s).is_ok()
}

fn is_tag(s: &str) -> bool {
    s.len() == TAG_HEX_LEN && is_lower_hex(s)
}

pub(super) fn is_digest(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && is_lower_hex(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_decode_as_hex() {
        let id = format!("{}ff", "0a".repeat(31));
        let mut want = [0x0a; 32];
        want[31] = 0xff;
        assert_eq!(decode_node_id(&id), Some(want));
        assert_eq!(decode_node_id("0a"), None);
        assert_eq!(decode_node_id(&"zz".repeat(32)), None);
    }

    #[test]
    fn tags_are_keyed_by_the_repository_and_bound_to_the_sender() {
        let (a, b) = ("1".repeat(64), "2".repeat(64));
        let t = repo_tag("repo", &a);
        assert_eq!(t.len(), TAG_HEX_LEN);
        assert!(is_tag(&t));
        assert_eq!(t, repo_tag("repo", &a), "stable");
        assert_ne!(t, repo_tag("repo", &b), "differs per sender");
        assert_ne!(t, repo_tag("other", &a), "differs per repository");
        // The documented construction.
        let key = blake3::derive_key(TAG_CONTEXT, b"repo");
        let want = blake3::keyed_hash(&key, &[0x11; 32]).to_hex()[..32].to_string();
        assert_eq!(t, want);
        assert_eq!(format!("{:?}", RepoKey::new("repo")), "RepoKey(..)");
    }

    #[test]
    fn json_lengths_match_the_writer() {
        for s in ["", "abc", "a\"b", "a\\b", "é", "\u{1}"] {
            assert_eq!(json_str_len(s), serde_json::to_string(s).unwrap().len());
        }
    }
}
