//! The link-state database: other nodes' newest advertisements, and when each
//! one ages out. Deciding what goes in is [`Mesh::handle_lsa`]'s job
//! (validation, signatures, sequence numbers); this keeps the table and its
//! expiry order consistent with each other.
//!
//! [`Mesh::handle_lsa`]: super::Mesh::handle_lsa

use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::time::Duration;

use super::graph::keys_of;
use super::summary::content_digest;
use super::{LinkInfo, Lsa};
use crate::time::Instant;

/// An advertisement held in the database, normalised: links by peer, repos
/// sorted. Equality of content is order-insensitive this way.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) links: BTreeMap<String, u64>,
    /// The numeric [`NodeKey`](super::graph::NodeKey) part of each peer in
    /// `links`, in the same order: computed once here rather than on every
    /// route computation.
    pub(super) link_keys: Vec<u64>,
    pub(super) repos: Vec<String>,
    /// The highest `hops_left` seen for this `seq`, after clamping to our
    /// `max_hops`.
    pub(super) hops_left: u8,
    pub(super) received: Instant,
    /// The origin's signature, passed on unchanged.
    pub(super) sig: String,
}

impl Entry {
    /// `links` and `repos` as normalised by the caller (cost-clamped, sorted).
    pub(super) fn new(
        seq: u64,
        links: BTreeMap<String, u64>,
        repos: Vec<String>,
        hops_left: u8,
        received: Instant,
        sig: String,
    ) -> Self {
        Entry {
            seq,
            link_keys: keys_of(&links),
            links,
            repos,
            hops_left,
            received,
            sig,
        }
    }

    /// `origin`'s advertisement as we would flood it onward: one hop less
    /// than it reached us with.
    pub(super) fn to_lsa(&self, origin: &str) -> Lsa {
        Lsa {
            origin: origin.to_owned(),
            seq: self.seq,
            links: self
                .links
                .iter()
                .map(|(peer, &rtt_us)| LinkInfo {
                    peer: peer.clone(),
                    rtt_us,
                })
                .collect(),
            repos: self.repos.clone(),
            hops_left: self.hops_left.saturating_sub(1),
            sig: self.sig.clone(),
        }
    }

    /// Its line in a [`DatabaseSummary`](super::DatabaseSummary).
    pub(super) fn digest(&self) -> u64 {
        content_digest(&self.links, &self.repos)
    }

    pub(super) fn serves(&self, repo: &str) -> bool {
        self.repos
            .binary_search_by(|r| r.as_str().cmp(repo))
            .is_ok()
    }
}

/// Other nodes' advertisements by origin (never our own), with an expiry
/// index that always holds exactly `(received, origin)` for every entry.
#[derive(Debug, Default)]
pub(super) struct Database {
    entries: BTreeMap<String, Entry>,
    /// The first is the next to age out.
    expiry: BTreeSet<(Instant, String)>,
}

impl Database {
    pub(super) fn get(&self, origin: &str) -> Option<&Entry> {
        self.entries.get(origin)
    }

    pub(super) fn get_mut(&mut self, origin: &str) -> Option<&mut Entry> {
        self.entries.get_mut(origin)
    }

    pub(super) fn contains(&self, origin: &str) -> bool {
        self.entries.contains_key(origin)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// In origin order.
    pub(super) fn iter(&self) -> btree_map::Iter<'_, String, Entry> {
        self.entries.iter()
    }

    /// Stores `entry` as `origin`'s, replacing any older one; it ages out
    /// from `entry.received`.
    pub(super) fn store(&mut self, origin: String, entry: Entry) {
        if let Some(old) = self.entries.get(&origin) {
            self.expiry.remove(&(old.received, origin.clone()));
        }
        self.expiry.insert((entry.received, origin.clone()));
        self.entries.insert(origin, entry);
    }

    /// Removes and names the oldest entry if it is `max_age` old at `now`;
    /// call until `None` to age out everything due.
    pub(super) fn pop_expired(&mut self, now: Instant, max_age: Duration) -> Option<String> {
        let (t, _) = self.expiry.first()?;
        if now.saturating_since(*t) < max_age {
            return None;
        }
        let (_, origin) = self.expiry.pop_first()?;
        self.entries.remove(&origin);
        Some(origin)
    }

    /// When the oldest entry ages out.
    pub(super) fn next_expiry(&self, max_age: Duration) -> Option<Instant> {
        self.expiry.first().map(|(t, _)| *t + max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_micros(s * 1_000_000)
    }

    fn entry(seq: u64, received: Instant) -> Entry {
        Entry::new(
            seq,
            BTreeMap::from([("b".repeat(64), 7)]),
            vec!["r".to_owned(), "s".to_owned()],
            3,
            received,
            "sig".to_owned(),
        )
    }

    #[test]
    fn a_replaced_entry_ages_out_from_its_new_time_only() {
        let mut db = Database::default();
        db.store("a".into(), entry(1, at(0)));
        db.store("a".into(), entry(2, at(5)));
        assert_eq!(db.len(), 1);
        assert_eq!(db.expiry.len(), 1);
        let age = Duration::from_secs(10);
        assert_eq!(db.next_expiry(age), Some(at(15)));
        assert_eq!(db.pop_expired(at(14), age), None);
        assert_eq!(db.pop_expired(at(15), age).as_deref(), Some("a"));
        assert!(!db.contains("a"));
        assert_eq!(db.next_expiry(age), None);
    }

    #[test]
    fn entries_age_out_oldest_first() {
        let mut db = Database::default();
        db.store("b".into(), entry(1, at(2)));
        db.store("a".into(), entry(1, at(3)));
        db.store("c".into(), entry(1, at(1)));
        let age = Duration::from_secs(1);
        let gone: Vec<String> = std::iter::from_fn(|| db.pop_expired(at(4), age)).collect();
        assert_eq!(gone, ["c", "b", "a"]);
    }

    #[test]
    fn an_entry_floods_onward_with_one_hop_less() {
        let e = entry(9, at(0));
        let lsa = e.to_lsa("o");
        assert_eq!((lsa.origin.as_str(), lsa.seq, lsa.hops_left), ("o", 9, 2));
        assert_eq!(lsa.links[0].rtt_us, 7);
        assert_eq!(lsa.sig, "sig");
        assert!(e.serves("s") && !e.serves("q"));
        assert_eq!(e.link_keys, keys_of(&e.links));
    }
}
