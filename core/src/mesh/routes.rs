//! Route computation: shortest paths from us, every destination's near-equal
//! downstream first hops, and the cache that keeps tables until the graph
//! changes (see "Routes" in the module documentation of [`crate::mesh`]).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use super::ECMP_SLACK_PERCENT;
use super::graph::{Graph, NodeKey};
use crate::time::Instant;

/// Route tables kept for distinct `exclude` sets; relays pass the previous hop,
/// so there is about one per neighbour.
const EXCLUDE_CACHE_MAX: usize = 32;

/// One way to reach a destination: through direct neighbour `first`, at
/// `cost` over `hops` links, the last of them from `pred`. Indices are node
/// indices of the [`RouteTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Alt {
    pub(super) first: usize,
    pub(super) cost: u64,
    hops: usize,
    pred: usize,
}

/// Every destination's usable first hops, computed in one pass.
///
/// Stored flat (one buffer of ids, one of alternatives) because it is rebuilt
/// on every graph change: a few allocations instead of several per node.
#[derive(Clone, Debug)]
pub(super) struct RouteTable {
    computed_at: Instant,
    /// Every node id, concatenated in [`NodeKey`] order...
    names: String,
    /// ...and where each one ends in `names`; a node's index is its position.
    ends: Vec<usize>,
    /// The numeric part of each id's [`NodeKey`], for lookups.
    keys: Vec<u64>,
    /// A fixed hash of each id, for rendezvous hashing of sessions.
    id_hash: Vec<u64>,
    me: usize,
    /// Every node's first-hop alternatives, sorted by first hop...
    alts: Vec<Alt>,
    /// ...as `(start, len)` in `alts` per node (empty: unreachable within
    /// `max_hops`, or ourselves).
    alt_span: Vec<(usize, usize)>,
    /// Destinations whose cheapest paths all exceed `max_hops` but that a
    /// longer-costing path within the limit reaches: that path, ourselves
    /// first, with its cost. One path each, no load balancing.
    fallback: BTreeMap<usize, (Vec<usize>, u64)>,
}

impl RouteTable {
    /// Dijkstra from us over `g`, then every destination's near-equal
    /// downstream first hops.
    ///
    /// The second pass visits nodes in the order Dijkstra settled them; a
    /// node's ways in are its already-settled neighbours' ways plus the link.
    /// Per first hop only the cheapest way is kept, and only if it is within
    /// [`ECMP_SLACK_PERCENT`] of the best, at most `max_hops` long, and
    /// downstream (its cost minus the first link is below our best distance,
    /// so that neighbour is strictly closer to the destination than we are).
    pub(super) fn compute(g: &Graph<'_>, max_hops: u8, now: Instant) -> Self {
        let n = g.keys.len();
        let mut dist = vec![u64::MAX; n];
        let mut rank = vec![usize::MAX; n];
        let mut order = Vec::with_capacity(n);
        let mut heap = BinaryHeap::with_capacity(n);
        dist[g.me] = 0;
        heap.push(Reverse((0u64, g.me)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if rank[u] != usize::MAX {
                continue;
            }
            rank[u] = order.len();
            order.push(u);
            for &(v, w) in g.links(u) {
                let nd = d.saturating_add(w);
                if nd < dist[v] {
                    dist[v] = nd;
                    heap.push(Reverse((nd, v)));
                }
            }
        }

        let mut direct = vec![u64::MAX; n];
        for &(v, w) in g.links(g.me) {
            direct[v] = w;
        }
        let max_hops = usize::from(max_hops);
        let mut alts: Vec<Alt> = Vec::with_capacity(n);
        let mut alt_span = vec![(0usize, 0usize); n];
        let mut cand: Vec<Alt> = Vec::new();
        for &v in order.iter().skip(1) {
            cand.clear();
            for &(u, w) in g.links(v) {
                if rank[u] >= rank[v] {
                    continue;
                }
                if u == g.me {
                    offer(
                        &mut cand,
                        Alt {
                            first: v,
                            cost: w,
                            hops: 1,
                            pred: u,
                        },
                    );
                    continue;
                }
                let (s, len) = alt_span[u];
                for a in &alts[s..s + len] {
                    if a.hops < max_hops {
                        offer(
                            &mut cand,
                            Alt {
                                first: a.first,
                                cost: a.cost.saturating_add(w),
                                hops: a.hops + 1,
                                pred: u,
                            },
                        );
                    }
                }
            }
            let best = dist[v];
            cand.retain(|a| {
                within_slack(a.cost, best) && a.cost.saturating_sub(direct[a.first]) < best
            });
            cand.sort_unstable_by_key(|a| a.first);
            alt_span[v] = (alts.len(), cand.len());
            alts.extend_from_slice(&cand);
        }

        let missing: Vec<usize> = (0..n)
            .filter(|&v| v != g.me && dist[v] != u64::MAX && alt_span[v].1 == 0)
            .collect();
        let fallback = fallback(g, max_hops, missing);

        let mut names = String::with_capacity(g.keys.iter().map(|k| k.1.len()).sum());
        let mut ends = Vec::with_capacity(n);
        for k in &g.keys {
            names.push_str(k.1);
            ends.push(names.len());
        }
        RouteTable {
            computed_at: now,
            names,
            ends,
            keys: g.keys.iter().map(|k| k.0).collect(),
            id_hash: g.keys.iter().map(|k| id_hash(k.1)).collect(),
            me: g.me,
            alts,
            alt_span,
            fallback,
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn id(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.names[start..self.ends[i]]
    }

    fn alts(&self, v: usize) -> &[Alt] {
        let (start, len) = self.alt_span[v];
        &self.alts[start..start + len]
    }

    /// `v`'s fallback path as an alternative.
    fn fallback_alt(&self, v: usize) -> Option<Alt> {
        let (path, cost) = self.fallback.get(&v)?;
        Some(Alt {
            first: *path.get(1)?,
            cost: *cost,
            hops: path.len() - 1,
            pred: path[path.len() - 2],
        })
    }

    pub(super) fn index(&self, id: &str) -> Option<usize> {
        let want = NodeKey::new(id);
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match NodeKey(self.keys[mid], self.id(mid)).cmp(&want) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// How many nodes have a route.
    pub(super) fn reachable(&self) -> usize {
        self.alt_span.iter().filter(|s| s.1 > 0).count() + self.fallback.len()
    }

    /// The cheapest alternative (then fewest hops, then lowest first-hop id).
    pub(super) fn best(&self, v: usize) -> Option<Alt> {
        self.alts(v)
            .iter()
            .min_by_key(|a| (a.cost, a.hops, a.first))
            .copied()
            .or_else(|| self.fallback_alt(v))
    }

    /// The alternative session `session` uses: rendezvous hashing, so a session
    /// keeps its first hop when another alternative appears or disappears, and
    /// sessions spread evenly over the alternatives.
    fn pick(&self, dst: &str, session: u64) -> Option<(usize, Alt)> {
        let v = self.index(dst)?;
        let a = self
            .alts(v)
            .iter()
            .max_by_key(|a| (mix(session ^ self.id_hash[a.first]), Reverse(a.first)))
            .copied()
            .or_else(|| self.fallback_alt(v))?;
        Some((v, a))
    }

    /// The node ids from us to `v` along alternative `alt`.
    pub(super) fn path(&self, v: usize, alt: Alt) -> Option<Vec<String>> {
        if let Some((path, _)) = self.fallback.get(&v) {
            return Some(path.iter().map(|&i| self.id(i).to_owned()).collect());
        }
        let mut out = vec![self.id(v).to_owned()];
        let mut cur = alt;
        // Predecessors are settled strictly earlier, so this ends; the bound
        // only guards against a broken invariant turning into a hang.
        for _ in 0..=self.len() {
            if cur.pred == self.me {
                out.push(self.id(self.me).to_owned());
                out.reverse();
                return Some(out);
            }
            out.push(self.id(cur.pred).to_owned());
            cur = *self.alts(cur.pred).iter().find(|a| a.first == alt.first)?;
        }
        None
    }
}

/// For the `missing` destinations, whose near-cheapest paths are all too
/// long: the cheapest path within `max_hops`, ourselves first, with its cost,
/// by a hop-bounded Bellman-Ford (one round per hop), run only when there are
/// any.
fn fallback(
    g: &Graph<'_>,
    max_hops: usize,
    missing: Vec<usize>,
) -> BTreeMap<usize, (Vec<usize>, u64)> {
    let mut fallback = BTreeMap::new();
    if missing.is_empty() {
        return fallback;
    }
    let n = g.keys.len();
    // cost[h][v], and the node before v on that path.
    let mut cost = vec![vec![u64::MAX; n]; max_hops + 1];
    let mut prev = vec![vec![usize::MAX; n]; max_hops + 1];
    cost[0][g.me] = 0;
    for h in 1..=max_hops {
        let (done, rest) = cost.split_at_mut(h);
        let (last, cur) = (&done[h - 1], &mut rest[0]);
        cur.copy_from_slice(last);
        prev[h] = prev[h - 1].clone();
        for (u, &cu) in last.iter().enumerate() {
            if cu == u64::MAX {
                continue;
            }
            for &(v, w) in g.links(u) {
                let c = cu.saturating_add(w);
                if c < cur[v] {
                    cur[v] = c;
                    prev[h][v] = u;
                }
            }
        }
    }
    for v in missing {
        if cost[max_hops][v] == u64::MAX {
            continue;
        }
        // Walk back: at layer h, the node before v is prev[h][v], reached
        // within h - 1 hops.
        let mut path = vec![v];
        let (mut cur, mut h) = (v, max_hops);
        while cur != g.me && h > 0 {
            let p = prev[h][cur];
            if p == usize::MAX {
                break;
            }
            // The layer where p's cost was last improved is the one
            // whose path we follow; any layer with the same cost works.
            path.push(p);
            cur = p;
            h -= 1;
        }
        if cur == g.me {
            path.reverse();
            fallback.insert(v, (path, cost[max_hops][v]));
        }
    }
    fallback
}

/// splitmix64's finaliser: a fixed, well-mixed hash, the same on every
/// platform and run, so a session's path choice is reproducible.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over a node id, then mixed: cheap, fixed, and plenty for spreading
/// sessions (a collision only makes two first hops tie, broken by index).
fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// Whether `cost` is within [`ECMP_SLACK_PERCENT`] of `best`.
fn within_slack(cost: u64, best: u64) -> bool {
    u128::from(cost) * 100 <= u128::from(best) * u128::from(100 + ECMP_SLACK_PERCENT)
}

/// Adds `alt` to `cand`, keeping per first hop only the cheapest (then
/// shortest) way.
fn offer(cand: &mut Vec<Alt>, alt: Alt) {
    match cand.iter_mut().find(|a| a.first == alt.first) {
        Some(a) => {
            if (alt.cost, alt.hops) < (a.cost, a.hops) {
                *a = alt;
            }
        }
        None => cand.push(alt),
    }
}

/// The route tables in use: one for the full graph and one per `exclude` set
/// asked about, plus [`Mesh::holders_cut_off`](super::Mesh::holders_cut_off)'s
/// last answer. All of it is dropped together whenever the graph changes,
/// since any of it may then be wrong.
#[derive(Debug, Default)]
pub(super) struct RouteCache {
    /// Routes on the full graph; `None` when it changed since.
    full: Option<RouteTable>,
    /// Routes avoiding a set of nodes, by that set (sorted, never empty).
    excluded: BTreeMap<Vec<String>, RouteTable>,
    /// The last cut-off answer, by repository.
    cut_off: Option<(String, Vec<String>)>,
}

impl RouteCache {
    /// The graph changed: forgets everything.
    pub(super) fn invalidate(&mut self) {
        self.full = None;
        self.excluded.clear();
        self.cut_off = None;
    }

    /// Forgets everything once the full table is `ttl` old: the safety net
    /// behind invalidation.
    pub(super) fn expire(&mut self, now: Instant, ttl: Duration) {
        if self
            .full
            .as_ref()
            .is_some_and(|t| now.saturating_since(t.computed_at) >= ttl)
        {
            self.invalidate();
        }
    }

    /// The full-graph table, if current.
    pub(super) fn full(&self) -> Option<&RouteTable> {
        self.full.as_ref()
    }

    pub(super) fn set_full(&mut self, t: RouteTable) {
        self.full = Some(t);
    }

    pub(super) fn has_excluded(&self, banned: &[String]) -> bool {
        self.excluded.contains_key(banned)
    }

    /// Keeps `t` as the table avoiding `banned`; a full cache starts over, as
    /// the sets asked about change slowly (about one per neighbour).
    pub(super) fn add_excluded(&mut self, banned: Vec<String>, t: RouteTable) {
        if self.excluded.len() >= EXCLUDE_CACHE_MAX {
            self.excluded.clear();
        }
        self.excluded.insert(banned, t);
    }

    /// The table and alternative session `session` uses toward `dst`: the one
    /// avoiding `banned` when it reaches `dst`, else the full graph's.
    pub(super) fn pick(
        &self,
        banned: &[String],
        dst: &str,
        session: u64,
    ) -> Option<(&RouteTable, usize, Alt)> {
        if let Some(t) = self.excluded.get(banned)
            && let Some((v, alt)) = t.pick(dst, session)
        {
            return Some((t, v, alt));
        }
        let t = self.full.as_ref()?;
        let (v, alt) = t.pick(dst, session)?;
        Some((t, v, alt))
    }

    /// The cached cut-off answer for `repo`.
    pub(super) fn cut_off(&self, repo: &str) -> Option<&[String]> {
        match &self.cut_off {
            Some((r, v)) if r == repo => Some(v),
            _ => None,
        }
    }

    pub(super) fn set_cut_off(&mut self, repo: &str, holders: Vec<String>) {
        self.cut_off = Some((repo.to_owned(), holders));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use crate::mesh::graph::keys_of;

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    /// Symmetric links `(a, b, rtt)`, as every node would advertise them.
    type Db = BTreeMap<String, (BTreeMap<String, u64>, Vec<u64>)>;

    fn db(links: &[(u8, u8, u64)]) -> Db {
        let mut out: Db = BTreeMap::new();
        for &(a, b, rtt) in links {
            out.entry(id(a)).or_default().0.insert(id(b), rtt);
            out.entry(id(b)).or_default().0.insert(id(a), rtt);
        }
        for (l, k) in out.values_mut() {
            *k = keys_of(l);
        }
        out
    }

    fn table(me: u8, d: &Db, max_hops: u8) -> RouteTable {
        let me = id(me);
        let (l, k) = &d[&me];
        let others = d
            .iter()
            .filter(|(o, _)| **o != me)
            .map(|(o, (l, k))| (o.as_str(), l, k.as_slice()));
        let g = Graph::build((&me, l, k), others, &[]);
        RouteTable::compute(&g, max_hops, Instant::ZERO)
    }

    fn firsts(t: &RouteTable, dst: u8) -> Vec<String> {
        let v = t.index(&id(dst)).unwrap();
        t.alts(v).iter().map(|a| t.id(a.first).to_owned()).collect()
    }

    #[test]
    fn slack_and_hashes_are_fixed() {
        assert!(within_slack(105, 100));
        assert!(!within_slack(106, 100));
        assert!(within_slack(u64::MAX, u64::MAX));
        assert_eq!(mix(0), mix(0));
        assert_ne!(id_hash("a"), id_hash("b"));
    }

    #[test]
    fn near_equal_downstream_paths_are_all_kept() {
        // 1 to 4 via 2 (200) or via 3 (205, within 5%), never back through us.
        let d = db(&[(1, 2, 100), (2, 4, 100), (1, 3, 105), (3, 4, 100)]);
        let t = table(1, &d, 8);
        assert_eq!(firsts(&t, 4), vec![id(2), id(3)]);
        let v = t.index(&id(4)).unwrap();
        let best = t.best(v).unwrap();
        assert_eq!(best.cost, 200);
        assert_eq!(t.path(v, best).unwrap(), vec![id(1), id(2), id(4)]);
        assert_eq!(t.reachable(), 3);
        // Past the slack only the best remains.
        let d = db(&[(1, 2, 100), (2, 4, 100), (1, 3, 120), (3, 4, 100)]);
        assert_eq!(firsts(&table(1, &d, 8), 4), vec![id(2)]);
    }

    #[test]
    fn a_session_keeps_its_first_hop_across_lookups() {
        let d = db(&[(1, 2, 100), (2, 4, 100), (1, 3, 100), (3, 4, 100)]);
        let t = table(1, &d, 8);
        let chosen: BTreeSet<usize> = (0..64)
            .map(|s| t.pick(&id(4), s).unwrap().1.first)
            .collect();
        assert_eq!(chosen.len(), 2, "sessions spread over both first hops");
        for s in 0..64 {
            assert_eq!(t.pick(&id(4), s), t.pick(&id(4), s));
        }
    }

    #[test]
    fn a_destination_beyond_the_hop_limit_on_cheap_paths_gets_a_fallback() {
        // Cheap: 1-2-3-4 (3 hops, 3). Costly: 1-5-4 (2 hops, 1000).
        let d = db(&[(1, 2, 1), (2, 3, 1), (3, 4, 1), (1, 5, 500), (5, 4, 500)]);
        let t = table(1, &d, 2);
        let v = t.index(&id(4)).unwrap();
        assert!(t.alts(v).is_empty());
        let alt = t.best(v).unwrap();
        assert_eq!(alt.cost, 1000);
        assert_eq!(t.path(v, alt).unwrap(), vec![id(1), id(5), id(4)]);
        assert_eq!(t.pick(&id(4), 7).unwrap().1, alt);
        // 3 is two cheap hops away; all of 2, 3, 4, 5 are reachable.
        assert_eq!(t.reachable(), 4);
    }

    #[test]
    fn the_cache_forgets_everything_when_the_full_table_is_old() {
        let d = db(&[(1, 2, 1)]);
        let mut c = RouteCache::default();
        c.set_full(table(1, &d, 8));
        c.add_excluded(vec![id(3)], table(1, &d, 8));
        c.set_cut_off("r", vec![id(2)]);
        assert_eq!(c.cut_off("r"), Some(&[id(2)][..]));
        assert_eq!(c.cut_off("s"), None);
        c.expire(
            Instant::ZERO + Duration::from_secs(9),
            Duration::from_secs(10),
        );
        assert!(c.full().is_some() && c.has_excluded(&[id(3)]));
        c.expire(
            Instant::ZERO + Duration::from_secs(10),
            Duration::from_secs(10),
        );
        assert!(c.full().is_none() && !c.has_excluded(&[id(3)]));
        assert_eq!(c.cut_off("r"), None);
    }

    #[test]
    fn the_exclude_cache_is_bounded() {
        let d = db(&[(1, 2, 1)]);
        let mut c = RouteCache::default();
        for i in 0..=EXCLUDE_CACHE_MAX {
            c.add_excluded(vec![format!("{i}")], table(1, &d, 8));
        }
        assert_eq!(c.excluded.len(), 1);
    }
}
