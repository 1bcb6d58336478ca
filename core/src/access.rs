//! Who may read or write which timeline.
//!
//! `trusted_peers` decides who may connect at all; the rules here decide, per
//! timeline, what a connected peer may do with it. A peer without read access
//! never hears of the timeline: it is left out of the handshake, of head
//! announcements, and requests for its seals are refused. A peer without write
//! access may still announce the timeline, but its heads are refused and the
//! refusal is recorded, so a read-only peer can never move our timelines.
//!
//! Rules are evaluated in order and the first whose timeline pattern and peer
//! list both match wins; a timeline no rule matches is writable by every peer
//! allowed to connect (the behaviour without rules).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use thiserror::Error;

use crate::NodeId;

/// What a peer may do with a timeline. Ordered: `None < Read < Write`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// The timeline is not announced or served to the peer.
    None,
    /// The peer may fetch the timeline; its heads for it are refused.
    Read,
    /// The peer may fetch the timeline and move it.
    Write,
}

/// One access rule (see the module documentation for how rules combine).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// A timeline name, `prefix/*` (everything below `prefix/`), or `*`.
    pub timelines: String,
    /// Node ids (64 hex digits), `@group` (see `AccessSettings::peer_groups`), or `*`.
    pub peers: Vec<String>,
    pub access: Access,
}

impl AccessRule {
    fn matches_timeline(&self, timeline: &str) -> bool {
        match self.timelines.strip_suffix("/*") {
            _ if self.timelines == "*" => true,
            Some(prefix) => timeline
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/')),
            None => self.timelines == timeline,
        }
    }

    fn matches_peer(&self, peer: &NodeId, groups: &BTreeMap<String, Vec<NodeId>>) -> bool {
        self.peers.iter().any(|p| {
            if p == "*" {
                true
            } else if let Some(g) = p.strip_prefix('@') {
                groups.get(g).is_some_and(|members| members.contains(peer))
            } else {
                p.parse::<NodeId>().is_ok_and(|id| id == *peer)
            }
        })
    }
}

/// The access `peer` has to `timeline` under `rules` and `groups`.
pub fn access_for(
    rules: &[AccessRule],
    groups: &BTreeMap<String, Vec<NodeId>>,
    peer: &NodeId,
    timeline: &str,
) -> Access {
    rules
        .iter()
        .find(|r| r.matches_timeline(timeline) && r.matches_peer(peer, groups))
        .map_or(Access::Write, |r| r.access)
}

/// A rule or group that cannot be right; `config` wraps it with the file's
/// other errors. Kept here so the rules do not depend on the configuration
/// that holds them.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct AccessError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: String) -> AccessError {
    AccessError { field, reason }
}

/// Checks the rules and groups: patterns well formed, every peer an id, a
/// known group or `*`. A typo here would silently expose or hide a timeline,
/// so the whole configuration is refused instead.
pub fn validate(
    rules: &[AccessRule],
    groups: &BTreeMap<String, Vec<NodeId>>,
) -> Result<(), AccessError> {
    for name in groups.keys() {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "peer_groups",
                format!("{name:?} is not a group name (letters, digits, - _ .)"),
            ));
        }
    }
    for r in rules {
        let pattern = r.timelines.as_str();
        let name = pattern.strip_suffix("/*").unwrap_or(pattern);
        if pattern != "*" && crate::timeline::TimelineName::new(name).is_err() {
            return Err(invalid(
                "access",
                format!("{pattern:?} is not a timeline name, prefix/* or *"),
            ));
        }
        if r.peers.is_empty() {
            return Err(invalid(
                "access",
                format!("the rule for {pattern:?} lists no peers"),
            ));
        }
        for p in &r.peers {
            let ok = p == "*"
                || p.parse::<NodeId>().is_ok()
                || p.strip_prefix('@').is_some_and(|g| groups.contains_key(g));
            if !ok {
                return Err(invalid(
                    "access",
                    format!("{p:?} is not a node id, a known @group or *"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn node(text: &str) -> NodeId {
        text.parse().unwrap()
    }

    fn rule(timelines: &str, peers: &[&str], access: Access) -> AccessRule {
        AccessRule {
            timelines: timelines.into(),
            peers: peers.iter().map(|p| (*p).to_owned()).collect(),
            access,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_the_default_is_write() {
        let groups = BTreeMap::from([("team".to_owned(), vec![node(&id('a'))])]);
        let rules = vec![
            rule("private/*", &["@team"], Access::Write),
            rule("private/*", &["*"], Access::None),
            rule("release", &[&id('b')], Access::Read),
        ];
        assert!(validate(&rules, &groups).is_ok());
        let a = |peer: &str, t: &str| access_for(&rules, &groups, &node(peer), t);
        assert_eq!(a(&id('a'), "private/x"), Access::Write);
        assert_eq!(a(&id('b'), "private/x"), Access::None);
        assert_eq!(a(&id('b'), "private/deep/x"), Access::None);
        assert_eq!(
            a(&id('b'), "privateer"),
            Access::Write,
            "prefix/* needs the slash"
        );
        assert_eq!(a(&id('b'), "release"), Access::Read);
        assert_eq!(a(&id('c'), "release"), Access::Write);
        assert_eq!(a(&id('c'), "main"), Access::Write);
        assert_eq!(
            a(&id('B'), "release"),
            Access::Read,
            "ids match in either case"
        );
        assert_eq!(
            access_for(&[], &groups, &node(&id('c')), "x"),
            Access::Write
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let groups = BTreeMap::new();
        for r in [
            rule("bad name", &["*"], Access::Read),
            rule("x", &[], Access::Read),
            rule("x", &["@nobody"], Access::Read),
            rule("x", &["abc"], Access::Read),
        ] {
            assert!(
                validate(std::slice::from_ref(&r), &groups).is_err(),
                "{r:?}"
            );
        }
    }
}
