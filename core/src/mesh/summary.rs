//! Anti-entropy between neighbours: instead of the whole database, a new
//! neighbour gets one line per origin, and only what it lacks follows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::MeshError;
use super::lsa::{clip, is_node_id};

/// What a node's link-state database holds, one line per origin: exchanged
/// with a new neighbour instead of the whole database, so that joining a mesh
/// both sides already know costs one message each way rather than one per
/// node, and only the advertisements one side lacks are sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSummary {
    pub entries: Vec<SummaryEntry>,
}

/// One origin's newest advertisement as held: its sequence number and a
/// digest of its content. The digest catches a node that restarted and reused
/// a sequence number with different links.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryEntry {
    pub origin: String,
    pub seq: u64,
    pub digest: u64,
}

/// FNV-1a over an advertisement's links and repositories, in order. Part of
/// the wire format: both ends of a summary exchange must compute the same.
pub(super) fn content_digest(links: &BTreeMap<String, u64>, repos: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (peer, rtt) in links {
        eat(peer.as_bytes());
        eat(&rtt.to_le_bytes());
    }
    eat(&[0xff]);
    for r in repos {
        eat(r.as_bytes());
        eat(&[0]);
    }
    h
}

/// A neighbour's summary, checked, as `(seq, digest)` per origin. Where an
/// origin is listed twice the higher sequence number counts (the first line
/// on a tie), so a sloppy summary cannot make us send more than once.
#[derive(Debug)]
pub(super) struct Theirs<'a>(BTreeMap<&'a str, (u64, u64)>);

impl<'a> Theirs<'a> {
    /// Reads `summary`, refusing one longer than `max` lines or naming an
    /// invalid origin. The caller counts the refusal.
    pub(super) fn read(summary: &'a DatabaseSummary, max: usize) -> Result<Self, MeshError> {
        if summary.entries.len() > max {
            return Err(MeshError::TooManySummaryEntries {
                count: summary.entries.len(),
                max,
            });
        }
        let mut theirs: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for e in &summary.entries {
            if !is_node_id(&e.origin) {
                return Err(MeshError::InvalidNodeId {
                    field: "summary origin",
                    id: clip(&e.origin),
                });
            }
            let slot = theirs.entry(e.origin.as_str()).or_insert((e.seq, e.digest));
            if e.seq > slot.0 {
                *slot = (e.seq, e.digest);
            }
        }
        Ok(Theirs(theirs))
    }

    /// The sequence number they hold for `origin` when it is newer than `seq`,
    /// or equal with other content: for our own advertisement, a version from
    /// before we restarted that we must outbid.
    pub(super) fn newer(&self, origin: &str, seq: u64, digest: u64) -> Option<u64> {
        let &(s, d) = self.0.get(origin)?;
        (s > seq || (s == seq && d != digest)).then_some(s)
    }

    /// Whether they lack `origin`'s advertisement at `seq` with `digest`: they
    /// hold none, an older one, or a different one under the same number.
    pub(super) fn lack(&self, origin: &str, seq: u64, digest: u64) -> bool {
        self.0
            .get(origin)
            .is_none_or(|&(s, d)| s < seq || (s == seq && d != digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn entry(n: u8, seq: u64, digest: u64) -> SummaryEntry {
        SummaryEntry {
            origin: id(n),
            seq,
            digest,
        }
    }

    #[test]
    fn the_digest_is_fixed_and_sees_every_field() {
        let links = BTreeMap::from([(id(1), 1200)]);
        let repos = vec!["r".to_owned()];
        let d = content_digest(&links, &repos);
        assert_eq!(d, content_digest(&links.clone(), &repos.clone()));
        assert_ne!(d, content_digest(&BTreeMap::from([(id(1), 1201)]), &repos));
        assert_ne!(d, content_digest(&links, &[]));
        // A repository cannot pose as a link, nor two as one.
        assert_ne!(
            content_digest(&BTreeMap::new(), &["ab".to_owned()]),
            content_digest(&BTreeMap::new(), &["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(content_digest(&BTreeMap::new(), &[]), 0xaf64_724c_8602_eb6e);
    }

    #[test]
    fn they_lack_what_is_absent_older_or_different() {
        let s = DatabaseSummary {
            entries: vec![entry(1, 5, 10)],
        };
        let t = Theirs::read(&s, 8).unwrap();
        assert!(t.lack(&id(2), 1, 0));
        assert!(t.lack(&id(1), 6, 10));
        assert!(t.lack(&id(1), 5, 11));
        assert!(!t.lack(&id(1), 5, 10));
        assert!(!t.lack(&id(1), 4, 99));
    }

    #[test]
    fn a_newer_or_different_version_of_ours_is_reported() {
        let s = DatabaseSummary {
            entries: vec![entry(1, 5, 10)],
        };
        let t = Theirs::read(&s, 8).unwrap();
        assert_eq!(t.newer(&id(1), 4, 10), Some(5));
        assert_eq!(t.newer(&id(1), 5, 11), Some(5));
        assert_eq!(t.newer(&id(1), 5, 10), None);
        assert_eq!(t.newer(&id(1), 6, 0), None);
        assert_eq!(t.newer(&id(2), 0, 0), None);
    }

    #[test]
    fn a_repeated_origin_counts_at_its_highest_sequence() {
        let s = DatabaseSummary {
            entries: vec![entry(1, 5, 10), entry(1, 7, 20), entry(1, 6, 30)],
        };
        let t = Theirs::read(&s, 8).unwrap();
        assert!(!t.lack(&id(1), 7, 20));
        assert!(t.lack(&id(1), 7, 30));
    }

    #[test]
    fn oversized_or_invalid_summaries_are_refused() {
        let s = DatabaseSummary {
            entries: vec![entry(1, 1, 1), entry(2, 1, 1)],
        };
        assert_eq!(
            Theirs::read(&s, 1).unwrap_err(),
            MeshError::TooManySummaryEntries { count: 2, max: 1 }
        );
        let bad = DatabaseSummary {
            entries: vec![SummaryEntry {
                origin: "AB".repeat(32),
                seq: 1,
                digest: 1,
            }],
        };
        assert!(matches!(
            Theirs::read(&bad, 8),
            Err(MeshError::InvalidNodeId { .. })
        ));
    }
}
