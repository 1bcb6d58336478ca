//! The announcement datagram: its layout, encoding and validation.
//!
//! See the [parent module](super) for the format. Everything a receiver reads
//! from the network is checked here, so the table only ever sees well-formed
//! announcements.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DiscoveryError, MAX_REPO_ID};
use crate::wire::PROTOCOL_VERSION;

/// The first bytes of every discovery datagram: names the format and its version,
/// so stray traffic on the port is rejected before any JSON is parsed.
pub const MAGIC: &[u8; 8] = b"IVDISC1\n";
/// Largest datagram sent or accepted. Small enough to avoid IP fragmentation on
/// any common link (the IPv6 minimum MTU is 1280), so an announcement is either
/// delivered whole or lost.
pub const MAX_DATAGRAM: usize = 1200;

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
    /// Repository id to heads digest.
    pub repos: BTreeMap<String, String>,
    /// The sender serves more repositories than `repos` lists.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Announcement {
    /// An announcement of `repos`, cut to fit [`MAX_DATAGRAM`]: when they do not
    /// all fit, the longest prefix in id order that does is kept and `truncated`
    /// set. The cut is deterministic so that repeated announcements agree and a
    /// receiver's view does not flap.
    pub fn new(node_id: &str, port: u16, repos: &BTreeMap<String, String>) -> Self {
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
            // `"id":"digest"`, plus a comma after the first entry.
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
        for (id, digest) in &self.repos {
            if !is_repo_id(id) {
                return Err(invalid(
                    "repos",
                    "a repository id is empty, too long or not printable ASCII",
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
    s.len() == 64 && is_lower_hex(s)
}

pub(super) fn is_repo_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_REPO_ID && s.bytes().all(|c| c.is_ascii_graphic())
}

pub(super) fn is_digest(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && is_lower_hex(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lengths_match_the_writer() {
        for s in ["", "abc", "a\"b", "a\\b", "é", "\u{1}"] {
            assert_eq!(json_str_len(s), serde_json::to_string(s).unwrap().len());
        }
    }
}
