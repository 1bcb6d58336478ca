//! The graph routes are computed on, built from the advertisements: only links
//! both ends advertise, by index, so that a route computation over thousands
//! of nodes touches numbers rather than strings.

use std::collections::{BTreeMap, VecDeque};

use super::MAX_LINK_RTT_US;

/// A node id with its first 16 hex digits as a number, which orders valid ids
/// the same way as the strings do. Building the graph looks up thousands of
/// ids; comparing numbers first leaves only ties (never, in practice) to the
/// full strings. Anything ordered by this key is ordered consistently even for
/// an invalid id (ours, misconfigured), since ties fall back to the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct NodeKey<'a>(pub(super) u64, pub(super) &'a str);

impl<'a> NodeKey<'a> {
    pub(super) fn new(id: &'a str) -> Self {
        let mut k = 0u64;
        for &c in id.as_bytes().iter().take(16) {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => 0,
            };
            k = k << 4 | u64::from(d);
        }
        NodeKey(k, id)
    }
}

/// The numeric [`NodeKey`] part of every peer in `links`, in order: computed
/// once when links are stored rather than on every route computation.
pub(super) fn keys_of(links: &BTreeMap<String, u64>) -> Vec<u64> {
    links.keys().map(|p| NodeKey::new(p).0).collect()
}

/// One advertiser as the graph needs it: its id, its advertised links, and
/// their [`keys_of`].
pub(super) type Advertiser<'a> = (&'a str, &'a BTreeMap<String, u64>, &'a [u64]);

/// The graph routes are computed on: usable links only, by index, as
/// adjacency arrays (node `u`'s links are `adj[start[u]..start[u + 1]]`).
pub(super) struct Graph<'a> {
    /// Every advertiser, in key order; a node's index is its position.
    pub(super) keys: Vec<NodeKey<'a>>,
    start: Vec<usize>,
    adj: Vec<(usize, u64)>,
    /// Our index.
    pub(super) me: usize,
}

impl<'a> Graph<'a> {
    /// The usable graph over `me` and `others`, leaving out the `banned`
    /// (sorted) among `others`. A link is usable when both ends advertise it;
    /// its cost is the larger of the two round-trip times, clamped to
    /// `1..=`[`MAX_LINK_RTT_US`], so both ends see the same graph.
    pub(super) fn build(
        me: Advertiser<'a>,
        others: impl Iterator<Item = Advertiser<'a>>,
        banned: &[String],
    ) -> Self {
        let is_banned = |id: &str| banned.binary_search_by(|b| b.as_str().cmp(id)).is_ok();
        let me_id = me.0;
        let mut nodes: Vec<(NodeKey<'_>, &BTreeMap<String, u64>, &[u64])> = others
            .filter(|(id, _, _)| !is_banned(id))
            .map(|(id, links, keys)| (NodeKey::new(id), links, keys))
            .chain(std::iter::once((NodeKey::new(me.0), me.1, me.2)))
            .collect();
        // Nearly sorted already (the database is in id order), so this is cheap.
        nodes.sort_unstable_by_key(|n| n.0);
        let keys: Vec<NodeKey<'_>> = nodes.iter().map(|n| n.0).collect();
        let numbers: Vec<u64> = keys.iter().map(|k| k.0).collect();
        let find = |number: u64, id: &str| {
            let mut i = numbers.partition_point(|&x| x < number);
            while numbers.get(i) == Some(&number) {
                if keys[i].1 == id {
                    return Some(i);
                }
                i += 1;
            }
            None
        };
        // Every node's advertised links by index, each node's sorted by index
        // (`dir[dir_start[i]..dir_start[i + 1]]`); links to nodes not in the
        // graph (no advertisement, or banned) are left out.
        let n = keys.len();
        let mut dir: Vec<(usize, u64)> = Vec::with_capacity(nodes.iter().map(|x| x.1.len()).sum());
        let mut dir_start = Vec::with_capacity(n + 1);
        dir_start.push(0);
        for (_, links, link_keys) in &nodes {
            let from = dir.len();
            for ((b, &rtt), &number) in links.iter().zip(link_keys.iter()) {
                if let Some(j) = find(number, b) {
                    dir.push((j, rtt));
                }
            }
            // Already in order for valid ids; cheap either way.
            dir[from..].sort_unstable();
            dir_start.push(dir.len());
        }
        let advertised = |i: usize| &dir[dir_start[i]..dir_start[i + 1]];
        // A link is usable when both ends advertise it; each pair is seen
        // once, from its smaller index.
        let mut edges: Vec<(usize, usize, u64)> = Vec::with_capacity(dir.len() / 2);
        for i in 0..n {
            for &(j, ab) in advertised(i).iter().filter(|l| l.0 > i) {
                let back = advertised(j);
                if let Ok(k) = back.binary_search_by_key(&i, |l| l.0) {
                    edges.push((i, j, ab.max(back[k].1).clamp(1, MAX_LINK_RTT_US)));
                }
            }
        }
        let mut start = vec![0usize; n + 1];
        for &(a, b, _) in &edges {
            start[a + 1] += 1;
            start[b + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut fill = start.clone();
        let mut adj = vec![(0usize, 0u64); start[n]];
        for &(a, b, w) in &edges {
            adj[fill[a]] = (b, w);
            fill[a] += 1;
            adj[fill[b]] = (a, w);
            fill[b] += 1;
        }
        let me = find(NodeKey::new(me_id).0, me_id).unwrap_or(0);
        Graph {
            keys,
            start,
            adj,
            me,
        }
    }

    /// Node `u`'s usable links, as `(neighbour, cost)` by neighbour index.
    pub(super) fn links(&self, u: usize) -> &[(usize, u64)] {
        &self.adj[self.start[u]..self.start[u + 1]]
    }

    /// The nodes `holds` picks that we cannot reach along usable links between
    /// such nodes, in id order. We count as one, whatever `holds` says.
    pub(super) fn unreached(&self, holds: impl Fn(&str) -> bool) -> Vec<String> {
        let holder: Vec<bool> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| i == self.me || holds(k.1))
            .collect();
        let mut reached = vec![false; self.keys.len()];
        let mut stack = Vec::new();
        if !self.keys.is_empty() {
            reached[self.me] = true;
            stack.push(self.me);
        }
        while let Some(u) = stack.pop() {
            for &(v, _) in self.links(u) {
                if holder[v] && !reached[v] {
                    reached[v] = true;
                    stack.push(v);
                }
            }
        }
        let mut out: Vec<String> = self
            .keys
            .iter()
            .enumerate()
            .filter(|&(i, _)| holder[i] && !reached[i])
            .map(|(_, k)| k.1.to_owned())
            .collect();
        out.sort();
        out
    }
}

/// Fewest usable links from `me` to every node within `max_hops` (breadth
/// first; `me` excluded). `links_of` gives a node's advertised links; a node
/// that advertised nothing is reached but leads nowhere.
pub(super) fn hop_counts<'a>(
    me: &'a str,
    max_hops: u8,
    links_of: impl Fn(&str) -> Option<&'a BTreeMap<String, u64>>,
) -> BTreeMap<&'a str, usize> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    seen.insert(me, 0);
    let mut queue = VecDeque::from([(me, 0usize)]);
    while let Some((a, h)) = queue.pop_front() {
        if h >= usize::from(max_hops) {
            continue;
        }
        let Some(la) = links_of(a) else { continue };
        for b in la.keys() {
            let b = b.as_str();
            if seen.contains_key(b) || !links_of(b).is_some_and(|lb| lb.contains_key(a)) {
                continue;
            }
            seen.insert(b, h + 1);
            queue.push_back((b, h + 1));
        }
    }
    seen.remove(me);
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    /// Advertised links per node: `(from, to, rtt)`.
    fn db(links: &[(u8, u8, u64)]) -> BTreeMap<String, (BTreeMap<String, u64>, Vec<u64>)> {
        let mut out: BTreeMap<String, (BTreeMap<String, u64>, Vec<u64>)> = BTreeMap::new();
        for &(a, b, rtt) in links {
            out.entry(id(a)).or_default().0.insert(id(b), rtt);
            out.entry(id(b)).or_default();
        }
        for (l, k) in out.values_mut() {
            *k = keys_of(l);
        }
        out
    }

    fn build<'a>(
        me: &'a str,
        db: &'a BTreeMap<String, (BTreeMap<String, u64>, Vec<u64>)>,
        banned: &[String],
    ) -> Graph<'a> {
        let (l, k) = &db[me];
        let others = db
            .iter()
            .filter(|(o, _)| o.as_str() != me)
            .map(|(o, (l, k))| (o.as_str(), l, k.as_slice()));
        Graph::build((me, l, k), others, banned)
    }

    #[test]
    fn node_keys_order_as_the_ids_do() {
        let ids = vec![id(0xff), id(0x10), "0f".repeat(32), id(0x01)];
        let mut keys: Vec<NodeKey<'_>> = ids.iter().map(|i| NodeKey::new(i)).collect();
        keys.sort();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(keys.iter().map(|k| k.1).collect::<Vec<_>>(), sorted);
        // Equal prefixes fall back to the full string.
        let (a, b) = (
            format!("{}0", "a".repeat(16)),
            format!("{}1", "a".repeat(16)),
        );
        assert!(NodeKey::new(&a) < NodeKey::new(&b));
    }

    #[test]
    fn only_links_both_ends_advertise_are_usable_at_the_higher_cost() {
        let d = db(&[(1, 2, 100), (2, 1, 300), (1, 3, 50), (2, 3, 0)]);
        let me = id(1);
        let g = build(&me, &d, &[]);
        assert_eq!(g.keys[g.me].1, me);
        // 1–2 both ways at the larger cost; 1→3 and 2→3 are one-sided.
        assert_eq!(g.links(g.me), &[(1, 300)]);
        assert_eq!(g.links(1), &[(0, 300)]);
        assert_eq!(g.links(2), &[]);
    }

    #[test]
    fn banned_nodes_and_their_links_are_left_out() {
        let d = db(&[(1, 2, 10), (2, 1, 10), (1, 3, 10), (3, 1, 10)]);
        let me = id(1);
        let g = build(&me, &d, &[id(2)]);
        assert_eq!(g.keys.len(), 2);
        assert_eq!(g.links(g.me), &[(1, 10)]);
        assert_eq!(g.keys[1].1, id(3));
    }

    #[test]
    fn unreached_holders_are_those_cut_off_by_non_holders() {
        // 1 – 2 – 3 – 4: 2 does not hold, so 3 is cut off from us; 4 too.
        let d = db(&[
            (1, 2, 1),
            (2, 1, 1),
            (2, 3, 1),
            (3, 2, 1),
            (3, 4, 1),
            (4, 3, 1),
        ]);
        let me = id(1);
        let g = build(&me, &d, &[]);
        assert_eq!(g.unreached(|n| n != id(2)), vec![id(3), id(4)]);
        assert_eq!(g.unreached(|_| true), Vec::<String>::new());
    }

    #[test]
    fn hop_counts_follow_usable_links_within_the_radius() {
        let d = db(&[(1, 2, 1), (2, 1, 1), (2, 3, 1), (3, 2, 1), (1, 4, 1)]);
        let me = id(1);
        let links_of = |n: &str| d.get(n).map(|(l, _)| l);
        let h = hop_counts(&me, 8, links_of);
        assert_eq!(h.get(id(2).as_str()), Some(&1));
        assert_eq!(h.get(id(3).as_str()), Some(&2));
        // One-sided: 4 never advertised the link back.
        assert_eq!(h.get(id(4).as_str()), None);
        assert_eq!(hop_counts(&me, 1, links_of).len(), 1);
    }
}
