//! The link-state advertisement: its fields and the checks a receiver makes
//! before anything else (see the module documentation of [`crate::mesh`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{MAX_HOPS_LIMIT, MAX_REPOS_PER_LSA, MeshError};
use crate::repo_id::is_repo_id;

/// One node's announcement of its direct links (a link-state advertisement).
/// See the module documentation for the layout and the rules.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Lsa {
    /// The advertising node's id (64 lowercase hex digits).
    pub origin: String,
    /// Bumped by the origin for every new advertisement.
    pub seq: u64,
    /// The origin's ready connections.
    pub links: Vec<LinkInfo>,
    /// Repository ids the origin serves.
    pub repos: Vec<String>,
    /// How many more nodes this copy may reach. Not signed: relays lower it.
    pub hops_left: u8,
    /// The origin's XEdDSA signature over everything above but `hops_left`,
    /// in 128 lowercase hex digits (see [`super::sign`]). Empty when absent:
    /// a mesh that signs refuses such an advertisement.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sig: String,
}

/// A direct link as its owner measures it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkInfo {
    /// The node at the other end (64 lowercase hex digits).
    pub peer: String,
    /// Smoothed round-trip time, in microseconds.
    pub rtt_us: u64,
}

impl Lsa {
    /// Checks everything a receiver relies on. `max_links` is the receiver's
    /// [`MeshConfig::max_links_per_node`].
    pub fn validate(&self, max_links: usize) -> Result<(), MeshError> {
        if !is_node_id(&self.origin) {
            return Err(bad_id("origin", &self.origin));
        }
        if self.hops_left > MAX_HOPS_LIMIT {
            return Err(MeshError::HopsOutOfRange {
                hops: self.hops_left,
                max: MAX_HOPS_LIMIT,
            });
        }
        if self.links.len() > max_links {
            return Err(MeshError::TooManyLinks {
                count: self.links.len(),
                max: max_links,
            });
        }
        let mut peers = BTreeSet::new();
        for l in &self.links {
            if !is_node_id(&l.peer) {
                return Err(bad_id("links.peer", &l.peer));
            }
            if l.peer == self.origin {
                return Err(MeshError::SelfLink);
            }
            if !peers.insert(l.peer.as_str()) {
                return Err(MeshError::DuplicateLink(l.peer.clone()));
            }
        }
        if self.repos.len() > MAX_REPOS_PER_LSA {
            return Err(MeshError::TooManyRepos {
                count: self.repos.len(),
                max: MAX_REPOS_PER_LSA,
            });
        }
        let mut repos = BTreeSet::new();
        for r in &self.repos {
            if !is_repo_id(r) {
                return Err(MeshError::InvalidRepo(clip(r)));
            }
            if !repos.insert(r.as_str()) {
                return Err(MeshError::DuplicateRepo(r.clone()));
            }
        }
        Ok(())
    }
}

/// Node ids are compared as strings (to recognise our own advertisements and
/// to look links up), so only the canonical lowercase form is accepted.
pub(super) fn is_node_id(s: &str) -> bool {
    crate::NodeId::parse_canonical(s).is_ok()
}

/// A peer-supplied string cut short for an error message, so a hostile
/// megabyte-long id does not end up in every log line.
pub(super) fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

fn bad_id(field: &'static str, id: &str) -> MeshError {
    MeshError::InvalidNodeId {
        field,
        id: clip(id),
    }
}

pub(super) use crate::node_id::short;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo_id::MAX_REPO_ID;

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn lsa() -> Lsa {
        Lsa {
            origin: id(1),
            seq: 1,
            links: vec![LinkInfo {
                peer: id(2),
                rtt_us: 10,
            }],
            repos: vec!["r".into()],
            hops_left: 8,
            sig: String::new(),
        }
    }

    #[test]
    fn a_well_formed_advertisement_passes() {
        assert_eq!(lsa().validate(1), Ok(()));
    }

    #[test]
    fn each_broken_rule_is_refused_by_name() {
        let check = |f: &dyn Fn(&mut Lsa)| {
            let mut l = lsa();
            f(&mut l);
            l.validate(2).unwrap_err()
        };
        assert!(matches!(
            check(&|l| l.origin = id(0xab).to_uppercase()),
            MeshError::InvalidNodeId {
                field: "origin",
                ..
            }
        ));
        assert!(matches!(
            check(&|l| l.hops_left = MAX_HOPS_LIMIT + 1),
            MeshError::HopsOutOfRange { .. }
        ));
        assert!(matches!(
            check(&|l| l.links = vec![l.links[0].clone(); 3]),
            MeshError::TooManyLinks { count: 3, max: 2 }
        ));
        assert!(matches!(
            check(&|l| l.links.push(l.links[0].clone())),
            MeshError::DuplicateLink(_)
        ));
        assert_eq!(check(&|l| l.links[0].peer = id(1)), MeshError::SelfLink);
        assert!(matches!(
            check(&|l| l.links[0].peer = "x".into()),
            MeshError::InvalidNodeId {
                field: "links.peer",
                ..
            }
        ));
        assert!(matches!(
            check(&|l| l.repos = vec!["r".into(); MAX_REPOS_PER_LSA + 1]),
            MeshError::TooManyRepos { .. }
        ));
        assert!(matches!(
            check(&|l| l.repos.push("a b".into())),
            MeshError::InvalidRepo(_)
        ));
        assert!(matches!(
            check(&|l| l.repos.push("r".into())),
            MeshError::DuplicateRepo(_)
        ));
    }

    #[test]
    fn peer_strings_are_clipped_and_ids_shortened() {
        assert_eq!(clip(&"a".repeat(1000)).len(), 80);
        assert_eq!(short(&id(0xab)), "abababababab");
        assert_eq!(short("abc"), "abc");
        assert!(!is_repo_id("") && !is_repo_id(&"r".repeat(MAX_REPO_ID + 1)));
    }
}
