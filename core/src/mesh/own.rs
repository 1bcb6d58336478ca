//! Our own advertisement: what we last said about ourselves, under which
//! sequence number and signature, and when we may say it again. Every
//! advertisement floods the whole mesh, so this is where the rules that keep
//! their number down live (jitter thresholds, announce gaps).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::graph::keys_of;
use super::lsa::{clip, is_node_id};
use super::summary::content_digest;
use super::{
    LinkInfo, Lsa, MAX_LINK_RTT_US, MAX_REPOS_PER_LSA, MIN_ANNOUNCE_GAP, RTT_CHANGE_FLOOR_US,
    RTT_CHANGE_PERCENT, sign,
};
use crate::repo_id::is_repo_id;
use crate::time::Instant;

/// How a new set of links differs from the advertised one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkChange {
    /// Nothing worth advertising: the same peers, costs within the jitter
    /// thresholds.
    None,
    /// The same peers, a cost moved past both thresholds.
    Rtt,
    /// A peer came or went.
    Peers,
}

/// What we advertise about ourselves.
#[derive(Debug)]
pub(super) struct Own {
    pub(super) me: String,
    /// Our repositories, sorted and valid.
    pub(super) repos: Vec<String>,
    /// Our links as last advertised: peer to round-trip time.
    pub(super) links: BTreeMap<String, u64>,
    /// As [`Entry::link_keys`](super::lsdb::Entry::link_keys), for `links`.
    pub(super) link_keys: Vec<u64>,
    /// Sequence number of our latest advertisement.
    pub(super) seq: u64,
    pub(super) next_announce: Instant,
    pub(super) last_announce: Option<Instant>,
    /// Signs our advertisements; `None` only for routing tests on bare
    /// machines ([`Mesh::signed`](super::Mesh::signed)).
    signer: Option<sign::Signer>,
    /// What our last signature covered, and the signature.
    own_sig: Option<(Vec<u8>, String)>,
}

impl Own {
    /// No links yet, and the first regular advertisement due at
    /// `first_announce`. Invalid repository ids are left out.
    pub(super) fn new(me: String, repos: Vec<String>, first_announce: Instant) -> Self {
        Own {
            me,
            repos: clean_repos(repos),
            links: BTreeMap::new(),
            link_keys: Vec::new(),
            seq: 0,
            next_announce: first_announce,
            last_announce: None,
            signer: None,
            own_sig: None,
        }
    }

    /// Signs from now on with `signer`.
    pub(super) fn sign_with(&mut self, signer: sign::Signer) {
        self.signer = Some(signer);
        self.own_sig = None;
    }

    /// Whether we sign, which also means received advertisements must be.
    pub(super) fn signs(&self) -> bool {
        self.signer.is_some()
    }

    /// Our current advertisement, as it would be flooded now.
    pub(super) fn lsa(&self, max_hops: u8) -> Lsa {
        Lsa {
            origin: self.me.clone(),
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
            hops_left: max_hops,
            sig: String::new(),
        }
        .signed_by(self.signer.as_ref(), self.own_sig.as_ref())
    }

    /// Our line in a [`DatabaseSummary`](super::DatabaseSummary).
    pub(super) fn digest(&self) -> u64 {
        content_digest(&self.links, &self.repos)
    }

    /// A new advertisement: the next sequence number, and the regular refresh
    /// rescheduled `interval` from now.
    pub(super) fn originate(&mut self, now: Instant, interval: Duration, max_hops: u8) -> Lsa {
        // Saturating: a forged advertisement of ours at u64::MAX (neighbours can
        // lie about other nodes) must not wrap us back to 0; we then stall at
        // the maximum until the forgery ages out everywhere.
        self.seq = self.seq.saturating_add(1);
        self.last_announce = Some(now);
        self.next_announce = now + interval;
        let lsa = self.lsa(max_hops);
        if self.signer.is_some() {
            self.own_sig = sign::signed_bytes(&lsa).map(|b| (b, lsa.sig.clone()));
        }
        lsa
    }

    /// Moves our sequence number to `seq` (a neighbour holds an advertisement
    /// of ours that far along) and brings our next advertisement forward, so it
    /// replaces the one from our previous life.
    pub(super) fn outbid(&mut self, seq: u64, now: Instant) {
        self.seq = self.seq.max(seq);
        let earliest = match self.last_announce {
            Some(t) => (t + MIN_ANNOUNCE_GAP).max(now),
            None => now,
        };
        self.next_announce = self.next_announce.min(earliest);
    }

    /// How `new` (as [`clean_links`] makes it) differs from what we advertise.
    pub(super) fn change(&self, new: &BTreeMap<String, u64>) -> LinkChange {
        let same_peers =
            new.len() == self.links.len() && new.keys().zip(self.links.keys()).all(|(a, b)| a == b);
        if !same_peers {
            return LinkChange::Peers;
        }
        let moved = new.values().zip(self.links.values()).any(|(r, or)| {
            let d = r.abs_diff(*or);
            d * 100 > or * RTT_CHANGE_PERCENT && d > RTT_CHANGE_FLOOR_US
        });
        if moved {
            LinkChange::Rtt
        } else {
            LinkChange::None
        }
    }

    pub(super) fn set_links(&mut self, links: BTreeMap<String, u64>) {
        self.link_keys = keys_of(&links);
        self.links = links;
    }

    /// Whether an advertisement may go out at `now`, `gap` after the last
    /// one; if not, the next one is brought forward to when the gap is over.
    pub(super) fn may_announce(&mut self, gap: Duration, now: Instant) -> bool {
        match self.last_announce {
            Some(t) if now < t + gap => {
                self.next_announce = self.next_announce.min(t + gap);
                false
            }
            _ => true,
        }
    }

    /// Takes `repos` (cleaned) as ours; whether that changed anything.
    pub(super) fn set_repos(&mut self, repos: Vec<String>) -> bool {
        let repos = clean_repos(repos);
        if repos == self.repos {
            return false;
        }
        self.repos = repos;
        true
    }
}

/// Our links as an advertisement may carry them: links to invalid ids or to
/// `me` dropped, duplicates at their lowest round-trip time, costs clamped to
/// `1..=`[`MAX_LINK_RTT_US`], and beyond `max` the fastest kept. Every
/// neighbour would refuse an advertisement breaking those rules.
pub(super) fn clean_links(links: Vec<LinkInfo>, me: &str, max: usize) -> BTreeMap<String, u64> {
    let mut new: BTreeMap<String, u64> = BTreeMap::new();
    for l in links {
        if !is_node_id(&l.peer) || l.peer == me {
            tracing::debug!(peer = %clip(&l.peer), "not advertising a link to an invalid id");
            continue;
        }
        let rtt = l.rtt_us.clamp(1, MAX_LINK_RTT_US);
        new.entry(l.peer)
            .and_modify(|r| *r = (*r).min(rtt))
            .or_insert(rtt);
    }
    if new.len() > max {
        let mut by_rtt: Vec<(u64, String)> = new.into_iter().map(|(p, r)| (r, p)).collect();
        by_rtt.sort();
        by_rtt.truncate(max);
        new = by_rtt.into_iter().map(|(r, p)| (p, r)).collect();
    }
    new
}

/// Our repositories as an advertisement may carry them: valid ids, sorted,
/// distinct, at most [`MAX_REPOS_PER_LSA`].
fn clean_repos(repos: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = repos
        .into_iter()
        .filter(|r| {
            let ok = is_repo_id(r);
            if !ok {
                tracing::warn!(repo = %clip(r), "not advertising a repository with an invalid id");
            }
            ok
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if out.len() > MAX_REPOS_PER_LSA {
        tracing::warn!(
            count = out.len(),
            "serving more repositories than one advertisement may list; advertising the first"
        );
        out.truncate(MAX_REPOS_PER_LSA);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn link(n: u8, rtt_us: u64) -> LinkInfo {
        LinkInfo {
            peer: id(n),
            rtt_us,
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    fn own() -> Own {
        Own::new(id(0), vec![], at(30_000))
    }

    #[test]
    fn links_are_cleaned_as_neighbours_require() {
        let got = clean_links(
            vec![
                link(1, 500),
                link(1, 300),
                link(0, 10),
                LinkInfo {
                    peer: "nope".into(),
                    rtt_us: 1,
                },
                link(2, 0),
                link(3, u64::MAX),
            ],
            &id(0),
            8,
        );
        assert_eq!(
            got,
            BTreeMap::from([(id(1), 300), (id(2), 1), (id(3), MAX_LINK_RTT_US)])
        );
        let fastest = clean_links(vec![link(1, 30), link(2, 10), link(3, 20)], &id(0), 2);
        assert_eq!(fastest, BTreeMap::from([(id(2), 10), (id(3), 20)]));
    }

    #[test]
    fn repositories_are_valid_sorted_distinct_and_bounded() {
        let o = Own::new(
            id(0),
            vec![
                "b".into(),
                "a".into(),
                "b".into(),
                String::new(),
                "x y".into(),
            ],
            at(0),
        );
        assert_eq!(o.repos, ["a", "b"]);
        let many: Vec<String> = (0..MAX_REPOS_PER_LSA + 5)
            .map(|i| format!("r{i:04}"))
            .collect();
        assert_eq!(Own::new(id(0), many, at(0)).repos.len(), MAX_REPOS_PER_LSA);
        let mut o = o;
        assert!(!o.set_repos(vec!["a".into(), "b".into()]));
        assert!(o.set_repos(vec!["a".into()]));
    }

    #[test]
    fn only_large_rtt_moves_or_peer_changes_count() {
        let mut o = own();
        o.set_links(BTreeMap::from([(id(1), 10_000)]));
        let with = |rtt| BTreeMap::from([(id(1), rtt)]);
        // 20% and 2 ms must both be exceeded.
        assert_eq!(o.change(&with(12_000)), LinkChange::None);
        assert_eq!(o.change(&with(12_001)), LinkChange::Rtt);
        o.set_links(with(1_000));
        assert_eq!(o.change(&with(3_000)), LinkChange::None);
        assert_eq!(o.change(&with(3_001)), LinkChange::Rtt);
        assert_eq!(o.change(&BTreeMap::new()), LinkChange::Peers);
        assert_eq!(
            o.change(&BTreeMap::from([(id(2), 1_000)])),
            LinkChange::Peers
        );
    }

    #[test]
    fn announcing_waits_out_the_gap_and_schedules_it() {
        let mut o = own();
        assert!(o.may_announce(Duration::from_secs(1), at(0)));
        o.originate(at(100), Duration::from_secs(30), 8);
        assert_eq!((o.seq, o.next_announce), (1, at(30_100)));
        assert!(!o.may_announce(Duration::from_secs(1), at(600)));
        assert_eq!(o.next_announce, at(1_100));
        assert!(o.may_announce(Duration::from_secs(1), at(1_100)));
    }

    #[test]
    fn outbidding_jumps_the_sequence_and_respects_the_gap() {
        let mut o = own();
        o.outbid(41, at(5));
        assert_eq!((o.seq, o.next_announce), (41, at(5)));
        assert_eq!(o.originate(at(10), Duration::from_secs(30), 8).seq, 42);
        o.outbid(7, at(20));
        assert_eq!(o.seq, 42, "never moves back");
        assert_eq!(o.next_announce, at(1_010));
    }

    #[test]
    fn the_sequence_number_saturates() {
        let mut o = own();
        o.outbid(u64::MAX, at(0));
        assert_eq!(o.originate(at(0), Duration::from_secs(30), 8).seq, u64::MAX);
    }

    #[test]
    fn an_unsigned_advertisement_carries_our_state() {
        let mut o = own();
        o.set_links(BTreeMap::from([(id(1), 5)]));
        let lsa = o.lsa(6);
        assert_eq!(lsa.links, vec![link(1, 5)]);
        assert_eq!((lsa.hops_left, lsa.sig.as_str()), (6, ""));
        assert!(!o.signs());
        assert_eq!(lsa.validate(8), Ok(()));
    }
}
