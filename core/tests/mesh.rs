//! The mesh routing sub-machine: flooding, shortest paths, load balancing,
//! failover and its defences.
//!
//! Machines exchange advertisements by hand through a tiny in-test flooding
//! loop, in virtual time, so every schedule is exact. Routes are checked against
//! simple reference algorithms (Floyd–Warshall, Bellman–Ford) on random graphs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ivaldi_core::mesh::{
    ECMP_SLACK_PERCENT, LinkInfo, Lsa, MAX_HOPS_LIMIT, MAX_REPOS_PER_LSA, Mesh, MeshConfig,
    MeshError, Topology, TopologyEdge,
};
use ivaldi_core::time::Instant;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

/// Node `i`'s id: like a real one, random-looking from the first digit (ids
/// are hashes of keys), with `i` readable at the end.
fn id(i: usize) -> String {
    format!("{:016x}{:048x}", splitmix(i as u64), i)
}

/// Node `i` from its id.
fn idx(s: &str) -> usize {
    usize::from_str_radix(&s[16..], 16).unwrap()
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Links in the order an advertisement lists them (by peer id).
fn by_peer(mut links: Vec<LinkInfo>) -> Vec<LinkInfo> {
    links.sort();
    links
}

/// The edge between `x` and `y`, whichever way round the graph lists it.
fn edge(g: &Topology, x: usize, y: usize) -> Option<&TopologyEdge> {
    g.edges
        .iter()
        .find(|e| (e.a == id(x) && e.b == id(y)) || (e.a == id(y) && e.b == id(x)))
}

fn secs(s: u64) -> Instant {
    Instant::from_micros(s * 1_000_000)
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn set(ids: &[usize]) -> BTreeSet<String> {
    ids.iter().map(|&i| id(i)).collect()
}

fn link(peer: usize, rtt_us: u64) -> LinkInfo {
    LinkInfo {
        peer: id(peer),
        rtt_us,
    }
}

/// A handful of meshes and the connections between them. Advertisements travel
/// only over connections; what each node advertises is derived from its
/// connections, except for the (directed) pairs in `hidden`.
struct Net {
    meshes: Vec<Mesh>,
    /// Undirected connections, `(a, b)` with `a < b`.
    conns: BTreeSet<(usize, usize)>,
    /// What `a` measures to `b` (default 1 ms).
    rtt: BTreeMap<(usize, usize), u64>,
    /// `(a, b)`: `a` does not advertise its connection to `b`.
    hidden: BTreeSet<(usize, usize)>,
    /// Crashed without closing connections: they neither send nor forward.
    silent: BTreeSet<usize>,
    now: Instant,
    /// Advertisements delivered so far.
    deliveries: usize,
}

impl Net {
    fn new(n: usize, cfg: MeshConfig) -> Self {
        Self::with_repos(n, cfg, |_| vec!["repo".to_owned()])
    }

    fn with_repos(n: usize, cfg: MeshConfig, repos: impl Fn(usize) -> Vec<String>) -> Self {
        // The harness delivers every flood at one instant; batching changes
        // over time is tested on single meshes below.
        let cfg = MeshConfig {
            link_announce_gap: Duration::ZERO,
            rtt_announce_gap: Duration::ZERO,
            ..cfg
        };
        Net {
            meshes: (0..n)
                .map(|i| Mesh::new(cfg.clone(), id(i), repos(i), Instant::ZERO))
                .collect(),
            conns: BTreeSet::new(),
            rtt: BTreeMap::new(),
            hidden: BTreeSet::new(),
            silent: BTreeSet::new(),
            now: Instant::ZERO,
            deliveries: 0,
        }
    }

    fn neighbours(&self, a: usize) -> Vec<usize> {
        self.conns
            .iter()
            .filter_map(|&(x, y)| {
                if x == a {
                    Some(y)
                } else if y == a {
                    Some(x)
                } else {
                    None
                }
            })
            .collect()
    }

    fn connect(&mut self, a: usize, b: usize, rtt_us: u64) {
        self.conns.insert((a.min(b), a.max(b)));
        self.rtt.insert((a, b), rtt_us);
        self.rtt.insert((b, a), rtt_us);
        self.refresh(a);
        self.refresh(b);
        self.exchange_databases(a, b);
        self.exchange_databases(b, a);
    }

    /// What a node does for a neighbour that just connected: hands it every
    /// advertisement it lacks (by the neighbour's summary), so the newcomer
    /// need not wait for refreshes.
    fn exchange_databases(&mut self, from: usize, to: usize) {
        if self.silent.contains(&from) || self.silent.contains(&to) {
            return;
        }
        let summary = self.meshes[to].summary();
        let lsas = self.meshes[from]
            .handle_summary(&id(to), &summary, self.now)
            .expect("a correct node's summary is valid");
        for lsa in lsas {
            self.deliveries += 1;
            let onward = self.meshes[to]
                .handle_lsa(&id(from), lsa, self.now)
                .expect("a correct node's database is valid");
            if let Some(onward) = onward {
                self.flood(to, Some(from), onward);
            }
        }
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        self.conns.remove(&(a.min(b), a.max(b)));
        self.refresh(a);
        self.refresh(b);
    }

    /// Hands node `a` its current links and floods whatever it advertises.
    fn refresh(&mut self, a: usize) {
        if self.silent.contains(&a) {
            return;
        }
        let links = self
            .neighbours(a)
            .into_iter()
            .filter(|&b| !self.hidden.contains(&(a, b)))
            .map(|b| link(b, self.rtt.get(&(a, b)).copied().unwrap_or(1000)))
            .collect();
        if let Some(lsa) = self.meshes[a].set_links(links, self.now) {
            self.flood(a, None, lsa);
        }
    }

    /// Sends `lsa` from `at` to every neighbour but `except`, and so on until
    /// nobody has anything new to pass on.
    fn flood(&mut self, at: usize, except: Option<usize>, lsa: Lsa) {
        let mut queue: VecDeque<(usize, usize, Lsa)> = self
            .neighbours(at)
            .into_iter()
            .filter(|&n| Some(n) != except)
            .map(|n| (at, n, lsa.clone()))
            .collect();
        while let Some((from, to, lsa)) = queue.pop_front() {
            self.deliveries += 1;
            assert!(self.deliveries < 1_000_000, "the flood does not stop");
            if self.silent.contains(&to) {
                continue;
            }
            let onward = self.meshes[to]
                .handle_lsa(&id(from), lsa, self.now)
                .expect("a correct node's advertisement is valid");
            if let Some(onward) = onward {
                // As the node does: skip neighbours the flood reached already.
                for n in self.neighbours(to) {
                    if n != from
                        && !self.meshes[to].flood_reached(&id(n), &id(from), &onward.origin)
                    {
                        queue.push_back((to, n, onward.clone()));
                    }
                }
            }
        }
    }

    /// Runs every live node's timers at `now`, flooding what they announce.
    fn tick(&mut self, now: Instant) {
        self.now = now;
        for i in 0..self.meshes.len() {
            if self.silent.contains(&i) {
                continue;
            }
            if let Some(lsa) = self.meshes[i].handle_timeout(now) {
                self.flood(i, None, lsa);
            }
        }
    }

    fn next_hop(&mut self, from: usize, to: usize, session: u64) -> Option<String> {
        let now = self.now;
        self.meshes[from].next_hop(&id(to), session, &none(), now)
    }

    fn route(&mut self, from: usize, to: usize) -> Option<(Vec<String>, u64)> {
        let now = self.now;
        self.meshes[from].route(&id(to), now)
    }
}

fn line(n: usize, cfg: MeshConfig) -> Net {
    let mut net = Net::new(n, cfg);
    for i in 0..n - 1 {
        net.connect(i, i + 1, 1000);
    }
    net
}

/// 0 — 1 — 3 and 0 — 2 — 3, the 0–1–3 side costing `via1` per link and the
/// other side `via2`.
fn diamond(via1: u64, via2: u64) -> Net {
    let mut net = Net::new(4, MeshConfig::default());
    net.connect(0, 1, via1);
    net.connect(1, 3, via1);
    net.connect(0, 2, via2);
    net.connect(2, 3, via2);
    net
}

// ----- flooding and routes -----

#[test]
fn a_line_of_five_routes_everyone_to_everyone_along_the_line() {
    let mut net = line(5, MeshConfig::default());
    for a in 0..5 {
        assert_eq!(net.meshes[a].routing_table_size(net.now), 4, "node {a}");
        for b in 0..5 {
            if a == b {
                assert_eq!(net.next_hop(a, b, 1), None);
                assert_eq!(net.route(a, b), Some((vec![id(a)], 0)));
                continue;
            }
            let step = if b > a { a + 1 } else { a - 1 };
            for session in 0..8 {
                assert_eq!(net.next_hop(a, b, session), Some(id(step)), "{a} -> {b}");
            }
            let (path, cost) = net.route(a, b).expect("reachable");
            let expected: Vec<String> = if a < b {
                (a..=b).map(id).collect()
            } else {
                (b..=a).rev().map(id).collect()
            };
            assert_eq!(path, expected);
            assert_eq!(cost, 1000 * a.abs_diff(b) as u64);
            assert_eq!(path.len() - 1, a.abs_diff(b));
        }
        let serving = net.meshes[a].nodes_serving("repo");
        let expected: Vec<(String, usize)> = {
            let mut v: Vec<(String, usize)> = (0..5)
                .filter(|&b| b != a)
                .map(|b| (id(b), a.abs_diff(b)))
                .collect();
            v.sort_by(|x, y| x.1.cmp(&y.1).then_with(|| x.0.cmp(&y.0)));
            v
        };
        assert_eq!(serving, expected);
        assert_eq!(net.meshes[a].known_nodes().len(), 4);
    }
    assert!(net.meshes[2].stats().lsas_flooded > 0);
}

#[test]
fn nodes_serving_lists_only_holders_nearest_first() {
    let mut net = Net::with_repos(5, MeshConfig::default(), |i| {
        if i == 2 || i == 4 {
            vec!["shared".to_owned(), format!("own-{i}")]
        } else {
            vec![format!("own-{i}")]
        }
    });
    for i in 0..4 {
        net.connect(i, i + 1, 1000);
    }
    assert_eq!(
        net.meshes[0].nodes_serving("shared"),
        vec![(id(2), 2), (id(4), 4)]
    );
    assert_eq!(net.meshes[4].nodes_serving("shared"), vec![(id(2), 2)]);
    assert_eq!(net.meshes[0].nodes_serving("nobody"), vec![]);
    assert_eq!(net.meshes[0].nodes_serving("own-3"), vec![(id(3), 3)]);
}

#[test]
fn equal_cost_paths_spread_sessions_and_keep_each_on_one() {
    let mut net = diamond(1000, 1000);
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for session in 0..200u64 {
        let hop = net.next_hop(0, 3, session).expect("reachable");
        for _ in 0..3 {
            assert_eq!(net.next_hop(0, 3, session).as_ref(), Some(&hop), "stable");
        }
        *used.entry(hop).or_default() += 1;
    }
    assert_eq!(used.keys().cloned().collect::<BTreeSet<_>>(), set(&[1, 2]));
    assert!(used.values().all(|&c| c > 60), "spread evenly: {used:?}");
    // Within the slack counts as equal; beyond it does not.
    let mut near = diamond(1000, 1000 * (100 + ECMP_SLACK_PERCENT) / 100 - 10);
    let hops: BTreeSet<_> = (0..100).filter_map(|s| near.next_hop(0, 3, s)).collect();
    assert_eq!(hops.len(), 2, "near-equal paths share the load");
    let mut far = diamond(1000, 1200);
    let hops: BTreeSet<_> = (0..100).filter_map(|s| far.next_hop(0, 3, s)).collect();
    assert_eq!(hops, set(&[1]));
}

#[test]
fn rtt_picks_a_cheap_three_hop_path_over_an_expensive_two_hop_one() {
    let mut net = Net::new(5, MeshConfig::default());
    // 0 — 1 — 2 at 50 ms a link; 0 — 3 — 4 — 2 at 1 ms a link.
    net.connect(0, 1, 50_000);
    net.connect(1, 2, 50_000);
    net.connect(0, 3, 1000);
    net.connect(3, 4, 1000);
    net.connect(4, 2, 1000);
    assert_eq!(
        net.route(0, 2),
        Some((vec![id(0), id(3), id(4), id(2)], 3000))
    );
    for s in 0..20 {
        assert_eq!(net.next_hop(0, 2, s), Some(id(3)));
    }
    assert_eq!(net.route(2, 0).map(|r| r.1), Some(3000));
    // A link's cost is the larger of the two ends' measurements.
    net.rtt.insert((3, 4), 200_000);
    net.refresh(3);
    assert_eq!(net.route(0, 2), Some((vec![id(0), id(1), id(2)], 100_000)));
}

#[test]
fn a_dropped_link_fails_over_in_the_same_call() {
    let mut net = diamond(1000, 3000);
    assert_eq!(net.next_hop(0, 3, 7), Some(id(1)));
    // Node 0 alone learns of the drop; node 1 still advertises the link, but a
    // one-sided link is unusable.
    let now = net.now;
    let lsa = net.meshes[0].set_links(vec![link(2, 3000)], now);
    assert!(lsa.is_some_and(|l| l.links == vec![link(2, 3000)]));
    assert_eq!(net.next_hop(0, 3, 7), Some(id(2)));
    assert_eq!(net.route(0, 3), Some((vec![id(0), id(2), id(3)], 6000)));
    assert_eq!(
        net.route(0, 1).map(|r| r.0),
        Some(vec![id(0), id(2), id(3), id(1)])
    );
    // Once the drop is flooded, the far side agrees.
    net.disconnect(0, 1);
    assert_eq!(net.next_hop(3, 0, 7), Some(id(2)));
    assert_eq!(net.next_hop(1, 0, 7), Some(id(3)));
}

#[test]
fn one_sided_links_are_unusable() {
    let mut net = Net::new(3, MeshConfig::default());
    net.hidden.insert((1, 0));
    net.connect(0, 1, 1000);
    net.connect(1, 2, 1000);
    assert_eq!(net.route(0, 1), None);
    assert_eq!(net.route(0, 2), None);
    assert_eq!(net.next_hop(2, 0, 1), None);
    assert_eq!(net.route(2, 1).map(|r| r.1), Some(1000));
    assert!(net.meshes[0].known_nodes().contains(&id(2)));
    let g = net.meshes[0].graph();
    assert!(!edge(&g, 0, 1).unwrap().usable);
    assert!(edge(&g, 1, 2).unwrap().usable);
    // Node 1 starts advertising it: usable at once.
    net.hidden.clear();
    net.refresh(1);
    assert_eq!(net.route(0, 2).map(|r| r.1), Some(2000));
}

#[test]
fn a_silent_node_ages_out_after_max_age() {
    let cfg = MeshConfig::default();
    let mut net = line(3, cfg.clone());
    assert!(net.route(0, 2).is_some());
    // Node 2 crashes; nobody notices the connection, so node 1 keeps
    // advertising its link to 2 while refreshing its own advertisement.
    net.silent.insert(2);
    let mut t = 0;
    while t + 5 < cfg.max_age.as_secs() {
        t += 5;
        net.tick(secs(t));
        assert!(net.route(0, 2).is_some(), "still there at {t}s");
    }
    assert_eq!(net.meshes[0].poll_timeout(), Some(secs(90)));
    net.tick(secs(90));
    assert_eq!(net.route(0, 2), None);
    assert_eq!(net.meshes[0].routing_table_size(net.now), 1);
    assert_eq!(net.meshes[0].stats().aged_out, 1);
    assert!(net.meshes[0].nodes_serving("repo") == vec![(id(1), 1)]);
    let g = net.meshes[0].graph();
    let two = g.nodes.iter().find(|n| n.id == id(2)).unwrap();
    assert_eq!(two.seq, None, "known only as node 1's peer now");
    // Node 1's advertisement keeps being refreshed: it never ages out.
    net.tick(secs(400));
    assert!(net.route(0, 1).is_some());
}

#[test]
fn refreshes_come_every_interval_with_a_new_sequence_number() {
    let cfg = MeshConfig::with_interval(Duration::from_secs(10));
    let mut m = Mesh::new(cfg, id(0), vec![], secs(0));
    assert_eq!(m.poll_timeout(), Some(secs(10)));
    assert_eq!(m.handle_timeout(secs(9)), None);
    let a = m.handle_timeout(secs(10)).expect("due");
    assert_eq!(m.poll_timeout(), Some(secs(20)));
    let b = m.handle_timeout(secs(20)).expect("due");
    assert!(b.seq > a.seq);
    assert_eq!(b.hops_left, 8);
    // A link change re-advertises at once and restarts the interval.
    let c = m.set_links(vec![link(1, 500)], secs(25)).expect("changed");
    assert!(c.seq > b.seq);
    assert_eq!(m.poll_timeout(), Some(secs(35)));
    assert_eq!(m.stats().announcements, 3);
}

#[test]
fn a_burst_of_link_changes_floods_once() {
    let mut m = Mesh::new(MeshConfig::default(), id(0), vec![], secs(0));
    let a = m
        .set_links(vec![link(1, 500)], secs(1))
        .expect("first change");
    assert_eq!(a.links, vec![link(1, 500)]);
    let t = secs(1) + Duration::from_millis(300);
    assert_eq!(m.set_links(vec![link(1, 500), link(2, 500)], t), None);
    assert_eq!(m.set_links(vec![link(2, 500)], t), None, "1 dropped");
    // One advertisement carries the burst when the gap is over.
    assert_eq!(m.poll_timeout(), Some(secs(2)));
    let b = m.handle_timeout(secs(2)).expect("due");
    assert_eq!(b.links, vec![link(2, 500)]);
    assert!(b.seq > a.seq);
    assert_eq!(m.stats().announcements, 2);
}

#[test]
fn set_links_ignores_jitter_and_bad_entries() {
    let mut m = Mesh::new(MeshConfig::default(), id(0), vec![], secs(0));
    assert_eq!(m.set_links(vec![], secs(0)), None, "nothing changed");
    let a = m
        .set_links(vec![link(1, 10_000)], secs(1))
        .expect("new link");
    assert_eq!(a.links, vec![link(1, 10_000)]);
    assert_eq!(
        m.set_links(vec![link(1, 11_500)], secs(20)),
        None,
        "15% is jitter"
    );
    assert_eq!(m.set_links(vec![link(1, 8_500)], secs(20)), None);
    assert_eq!(
        m.set_links(vec![link(1, 13_000)], secs(5)),
        None,
        "30% is a change, but it waits for the RTT gap"
    );
    assert_eq!(m.poll_timeout(), Some(secs(11)));
    assert_eq!(m.handle_timeout(secs(10)), None);
    let b = m
        .handle_timeout(secs(11))
        .expect("due at the end of the gap");
    assert_eq!(b.links, vec![link(1, 13_000)]);
    assert_eq!(m.set_links(vec![link(1, 13_000)], secs(20)), None);
    let c = m
        .set_links(
            vec![
                link(2, 0),
                link(1, 13_000),
                link(2, 700),
                LinkInfo {
                    peer: "NOT-AN-ID".into(),
                    rtt_us: 1,
                },
                link(0, 5),
            ],
            secs(21),
        )
        .expect("a new peer, at once");
    assert_eq!(
        c.links,
        by_peer(vec![link(1, 13_000), link(2, 1)]),
        "zero becomes 1 µs"
    );
    c.validate(256).expect("our own advertisement is valid");
    // Too many: the fastest are kept.
    let cfg = MeshConfig {
        max_links_per_node: 2,
        ..MeshConfig::default()
    };
    let mut m = Mesh::new(cfg, id(0), vec![], secs(0));
    let d = m
        .set_links(vec![link(1, 300), link(2, 100), link(3, 200)], secs(0))
        .unwrap();
    assert_eq!(d.links, by_peer(vec![link(2, 100), link(3, 200)]));
    // LAN jitter: tripling a sub-millisecond RTT stays under the floor.
    let mut m = Mesh::new(MeshConfig::default(), id(0), vec![], secs(0));
    m.set_links(vec![link(1, 400)], secs(0)).expect("new link");
    assert_eq!(m.set_links(vec![link(1, 1_200)], secs(60)), None);
    assert!(m.set_links(vec![link(1, 2_500)], secs(60)).is_some());
}

// ----- the flood's defences -----

fn lsa(origin: usize, seq: u64, links: &[(usize, u64)], hops_left: u8) -> Lsa {
    Lsa {
        origin: id(origin),
        seq,
        links: links.iter().map(|&(p, r)| link(p, r)).collect(),
        repos: vec!["repo".into()],
        hops_left,
        sig: String::new(),
    }
}

#[test]
fn duplicates_and_old_sequence_numbers_are_not_flooded_again() {
    let mut m = Mesh::new(MeshConfig::default(), id(0), vec![], secs(0));
    let from = id(1);
    let l5 = lsa(5, 5, &[(6, 100)], 8);
    let out = m.handle_lsa(&from, l5.clone(), secs(1)).unwrap();
    assert_eq!(
        out,
        Some(Lsa {
            hops_left: 7,
            ..l5.clone()
        })
    );
    assert_eq!(m.handle_lsa(&from, l5.clone(), secs(1)).unwrap(), None);
    assert_eq!(m.stats().duplicates, 1);
    let l4 = lsa(5, 4, &[], 8);
    assert_eq!(m.handle_lsa(&from, l4, secs(2)).unwrap(), None);
    assert_eq!(m.stats().duplicates, 2);
    assert_eq!(
        m.graph().nodes.iter().find(|n| n.id == id(5)).unwrap().seq,
        Some(5)
    );
    // A newer one replaces it and is flooded.
    let l6 = lsa(5, 6, &[], 8);
    assert!(m.handle_lsa(&from, l6, secs(3)).unwrap().is_some());
    assert_eq!(m.stats().lsas_flooded, 2);
    assert_eq!(m.stats().lsas_received, 4);
}

#[test]
fn hops_left_bounds_the_flood() {
    let mut m = Mesh::new(MeshConfig::default(), id(0), vec![], secs(0));
    let from = id(1);
    // Exhausted: stored, not passed on.
    assert_eq!(
        m.handle_lsa(&from, lsa(5, 1, &[], 1), secs(0)).unwrap(),
        None
    );
    assert_eq!(
        m.handle_lsa(&from, lsa(6, 1, &[], 0), secs(0)).unwrap(),
        None
    );
    assert!(m.known_nodes().contains(&id(5)) && m.known_nodes().contains(&id(6)));
    assert_eq!(m.stats().duplicates, 0);
    // The same advertisement again by a shorter way: passed on after all.
    let again = m.handle_lsa(&from, lsa(5, 1, &[], 4), secs(0)).unwrap();
    assert_eq!(again.map(|l| l.hops_left), Some(3));
    assert_eq!(
        m.handle_lsa(&from, lsa(5, 1, &[], 4), secs(0)).unwrap(),
        None
    );
    assert_eq!(
        m.handle_lsa(&from, lsa(5, 1, &[], 2), secs(0)).unwrap(),
        None
    );
    assert_eq!(m.stats().duplicates, 2);
    // More than our radius is cut to it.
    let big = m.handle_lsa(&from, lsa(7, 1, &[], 40), secs(0)).unwrap();
    assert_eq!(big.map(|l| l.hops_left), Some(7));

    // In a line with a radius of 2, advertisements reach two hops and no further,
    // and routes are at most two hops long.
    let cfg = MeshConfig {
        max_hops: 2,
        ..MeshConfig::default()
    };
    let mut net = line(5, cfg);
    let topo = net.meshes[0].graph();
    let seq_of = |n: usize| {
        topo.nodes
            .iter()
            .find(|x| x.id == id(n))
            .and_then(|x| x.seq)
    };
    assert!(seq_of(1).is_some() && seq_of(2).is_some());
    assert_eq!(seq_of(3), None, "node 3 is known only as node 2's peer");
    assert!(net.route(0, 2).is_some());
    assert_eq!(net.route(0, 3), None);
    assert_eq!(net.meshes[0].routing_table_size(net.now), 2);
    assert_eq!(net.meshes[0].nodes_serving("repo").len(), 2);
}

#[test]
fn our_own_advertisement_from_a_previous_life_is_outbid() {
    let mut net = line(3, MeshConfig::default());
    net.tick(secs(30));
    net.tick(secs(60));
    let old_seq = net.meshes[1]
        .graph()
        .nodes
        .iter()
        .find(|n| n.id == id(0))
        .and_then(|n| n.seq)
        .unwrap();
    // Node 0 restarts: sequence numbers start over, so its neighbours drop its
    // new advertisements as old...
    net.now = secs(100);
    net.meshes[0] = Mesh::new(MeshConfig::default(), id(0), vec!["repo".into()], net.now);
    let dups = net.meshes[1].stats().duplicates;
    net.refresh(0);
    assert_eq!(net.meshes[1].stats().duplicates, dups + 1);
    assert_eq!(
        net.route(0, 2),
        None,
        "the restarted node knows nothing yet"
    );
    // ...until node 1 hands it the database, as a new neighbour gets it.
    net.exchange_databases(1, 0);
    assert_eq!(net.meshes[0].stats().own, 1);
    // Not sooner than a second after its last advertisement.
    assert_eq!(net.meshes[0].poll_timeout(), Some(secs(101)));
    assert_eq!(
        net.route(0, 2).map(|r| r.1),
        Some(2000),
        "learnt from the database"
    );
    net.now = secs(101);
    let now = net.now;
    let fresh = net.meshes[0].handle_timeout(now).expect("outbids at once");
    assert!(fresh.seq > old_seq);
    net.flood(0, None, fresh);
    assert_eq!(net.route(2, 0).map(|r| r.1), Some(2000));
}

/// Whether an error is the one a malformed case should get.
type Expect = fn(&MeshError) -> bool;

#[test]
fn malformed_advertisements_get_typed_errors() {
    let cfg = MeshConfig::default();
    let max_links = cfg.max_links_per_node;
    let mut m = Mesh::new(cfg, id(0), vec![], secs(0));
    let good = lsa(5, 1, &[(6, 100)], 8);
    let cases: Vec<(Lsa, Expect)> = vec![
        (
            Lsa {
                origin: format!("A{}", &id(5)[1..]),
                ..good.clone()
            },
            |e| {
                matches!(
                    e,
                    MeshError::InvalidNodeId {
                        field: "origin",
                        ..
                    }
                )
            },
        ),
        (
            Lsa {
                origin: "abc".into(),
                ..good.clone()
            },
            |e| {
                matches!(
                    e,
                    MeshError::InvalidNodeId {
                        field: "origin",
                        ..
                    }
                )
            },
        ),
        (
            Lsa {
                links: vec![LinkInfo {
                    peer: format!("{}g", &id(6)[1..]),
                    rtt_us: 1,
                }],
                ..good.clone()
            },
            |e| {
                matches!(
                    e,
                    MeshError::InvalidNodeId {
                        field: "links.peer",
                        ..
                    }
                )
            },
        ),
        (
            Lsa {
                links: (0..=max_links).map(|i| link(1000 + i, 1)).collect(),
                ..good.clone()
            },
            |e| {
                matches!(
                    e,
                    MeshError::TooManyLinks {
                        count: 257,
                        max: 256
                    }
                )
            },
        ),
        (
            Lsa {
                links: vec![link(6, 1), link(7, 1), link(6, 2)],
                ..good.clone()
            },
            |e| matches!(e, MeshError::DuplicateLink(_)),
        ),
        (
            Lsa {
                links: vec![link(5, 1)],
                ..good.clone()
            },
            |e| matches!(e, MeshError::SelfLink),
        ),
        (
            Lsa {
                repos: (0..=MAX_REPOS_PER_LSA).map(|i| format!("r{i}")).collect(),
                ..good.clone()
            },
            |e| matches!(e, MeshError::TooManyRepos { .. }),
        ),
        (
            Lsa {
                repos: vec!["has space".into()],
                ..good.clone()
            },
            |e| matches!(e, MeshError::InvalidRepo(_)),
        ),
        (
            Lsa {
                repos: vec![String::new()],
                ..good.clone()
            },
            |e| matches!(e, MeshError::InvalidRepo(_)),
        ),
        (
            Lsa {
                repos: vec!["a".into(), "a".into()],
                ..good.clone()
            },
            |e| matches!(e, MeshError::DuplicateRepo(_)),
        ),
        (
            Lsa {
                hops_left: MAX_HOPS_LIMIT + 1,
                ..good.clone()
            },
            |e| matches!(e, MeshError::HopsOutOfRange { hops: 65, max: 64 }),
        ),
    ];
    let count = cases.len() as u64;
    for (bad, expected) in cases {
        let e = m.handle_lsa(&id(1), bad.clone(), secs(0)).unwrap_err();
        assert!(expected(&e), "{e:?} for {bad:?}");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(m.stats().malformed, count);
    assert!(m.known_nodes().is_empty(), "nothing malformed was stored");
    assert!(m.handle_lsa(&id(1), good, secs(0)).unwrap().is_some());
    // A huge bogus id is cut short in the error.
    let e = m
        .handle_lsa(
            &id(1),
            Lsa {
                origin: "x".repeat(1 << 20),
                ..lsa(5, 1, &[], 8)
            },
            secs(0),
        )
        .unwrap_err();
    assert!(e.to_string().len() < 200);
}

#[test]
fn the_database_is_bounded() {
    let cfg = MeshConfig {
        max_nodes: 2,
        ..MeshConfig::default()
    };
    let mut m = Mesh::new(cfg, id(0), vec![], secs(0));
    assert!(
        m.handle_lsa(&id(1), lsa(5, 1, &[], 8), secs(0))
            .unwrap()
            .is_some()
    );
    assert!(
        m.handle_lsa(&id(1), lsa(6, 1, &[], 8), secs(0))
            .unwrap()
            .is_some()
    );
    assert_eq!(
        m.handle_lsa(&id(1), lsa(7, 1, &[], 8), secs(0)).unwrap(),
        None
    );
    assert_eq!(m.stats().table_full, 1);
    // Known origins still update.
    assert!(
        m.handle_lsa(&id(1), lsa(5, 2, &[], 8), secs(1))
            .unwrap()
            .is_some()
    );
}

#[test]
fn config_validation() {
    MeshConfig::default().validate().unwrap();
    let d = MeshConfig::default();
    assert_eq!(d.announce_interval, Duration::from_secs(30));
    assert_eq!(d.max_age, Duration::from_secs(90));
    assert_eq!(
        (d.max_hops, d.max_nodes, d.max_links_per_node),
        (8, 4096, 256)
    );
    for bad in [
        MeshConfig {
            max_hops: 0,
            ..d.clone()
        },
        MeshConfig {
            max_hops: 65,
            ..d.clone()
        },
        MeshConfig {
            max_age: d.announce_interval,
            ..d.clone()
        },
        MeshConfig {
            max_nodes: 0,
            ..d.clone()
        },
    ] {
        assert!(matches!(
            bad.validate(),
            Err(MeshError::InvalidConfig { .. })
        ));
    }
    // The machine clamps instead of failing.
    let m = Mesh::new(MeshConfig { max_hops: 0, ..d }, id(0), vec![], secs(0));
    assert_eq!(m.config().max_hops, 1);
}

// ----- avoiding relays -----

#[test]
fn exclude_routes_around_a_relay_when_it_can() {
    let mut net = diamond(1000, 3000);
    let now = net.now;
    let m = &mut net.meshes[0];
    assert_eq!(m.next_hop(&id(3), 9, &none(), now), Some(id(1)));
    assert_eq!(m.next_hop(&id(3), 9, &set(&[1]), now), Some(id(2)));
    assert_eq!(
        m.session_route(&id(3), 9, &set(&[1]), now),
        Some((vec![id(0), id(2), id(3)], 6000))
    );
    // No way around both: the best path is used anyway.
    assert_eq!(m.next_hop(&id(3), 9, &set(&[1, 2]), now), Some(id(1)));
    // The destination itself, ourselves and strangers are not avoided.
    assert_eq!(m.next_hop(&id(3), 9, &set(&[3, 0, 77]), now), Some(id(1)));
    assert_eq!(m.next_hop(&id(1), 9, &set(&[1]), now), Some(id(1)));
    // Cached per exclude set, dropped when the graph changes.
    let before = m.stats().route_computations;
    for s in 0..50 {
        m.next_hop(&id(3), s, &set(&[1]), now);
        m.next_hop(&id(3), s, &set(&[2]), now);
    }
    assert_eq!(m.stats().route_computations, before + 1);
    m.set_links(vec![link(2, 3000)], now);
    assert_eq!(m.next_hop(&id(3), 9, &set(&[2]), now), Some(id(2)));
}

#[test]
fn session_route_follows_the_sessions_first_hop() {
    let mut net = diamond(1000, 1000);
    let now = net.now;
    for s in 0..20 {
        let hop = net.meshes[0].next_hop(&id(3), s, &none(), now).unwrap();
        let (path, cost) = net.meshes[0]
            .session_route(&id(3), s, &none(), now)
            .unwrap();
        assert_eq!(path, vec![id(0), hop, id(3)]);
        assert_eq!(cost, 2000);
    }
}

// ----- rendering -----

#[test]
fn dot_output_is_well_formed() {
    let mut net = line(5, MeshConfig::default());
    net.hidden.insert((4, 3));
    net.connect(3, 4, 2500);
    net.refresh(4);
    let m = &net.meshes[0];
    let dot = m.to_dot();
    let g = m.graph();
    assert!(dot.starts_with("graph mesh {\n"), "{dot}");
    assert!(dot.ends_with("}\n"));
    let mut depth = 0i32;
    for c in dot.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        assert!(depth >= 0);
    }
    assert_eq!(depth, 0);
    let edge_lines = dot.lines().filter(|l| l.contains(" -- ")).count();
    assert_eq!(edge_lines, g.edges.len());
    assert_eq!(g.edges.len(), 4);
    assert!(
        dot.lines()
            .any(|l| l.contains(" -- ") && l.contains("dashed"))
    );
    for n in &g.nodes {
        assert_eq!(
            dot.lines()
                .filter(|l| l.starts_with(&format!("  \"{}\" [", n.id)))
                .count(),
            1
        );
    }
    for l in dot.lines() {
        assert_eq!(l.matches('"').count() % 2, 0, "quotes balanced in {l}");
    }
    // Render it for real when Graphviz is installed.
    if let Ok(mut child) = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dot.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dot failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    }
}

#[test]
fn graph_serialises_with_repos_last_seen_and_rtts() {
    let mut net = line(3, MeshConfig::default());
    net.tick(secs(30));
    let v = serde_json::to_value(net.meshes[0].graph()).unwrap();
    assert_eq!(v["me"], id(0));
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes
            .iter()
            .all(|n| n["repos"] == serde_json::json!(["repo"]))
    );
    assert!(nodes.iter().all(|n| n["last_seen"] == 30_000_000));
    let edges = v["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2);
    assert!(
        edges
            .iter()
            .all(|e| e["rtt_us"] == 1000 && e["usable"] == true)
    );
    // An advertisement survives the wire format.
    let own = net.meshes[0].own_lsa();
    let json = serde_json::to_string(&own).unwrap();
    assert_eq!(serde_json::from_str::<Lsa>(&json).unwrap(), own);
}

// ----- against reference algorithms -----

/// A small random graph: per node pair, whether each end advertises the link
/// and what it measures.
#[derive(Clone, Debug)]
struct SmallGraph {
    n: usize,
    /// `(a, b, a's rtt to b, b's rtt to a, a advertises, b advertises)`.
    edges: Vec<(usize, usize, u64, u64, bool, bool)>,
}

impl Arbitrary for SmallGraph {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = 2 + usize::arbitrary(g) % 7;
        let mut edges = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                if u8::arbitrary(g) % 2 == 0 {
                    continue;
                }
                // A narrow range of costs, so ties and near-ties are common.
                let ra = 1 + u64::arbitrary(g) % 40;
                let rb = if bool::arbitrary(g) {
                    ra
                } else {
                    1 + u64::arbitrary(g) % 40
                };
                let one_sided = u8::arbitrary(g) % 8 == 0;
                let which = bool::arbitrary(g);
                edges.push((a, b, ra, rb, !one_sided || which, !one_sided || !which));
            }
        }
        SmallGraph { n, edges }
    }
}

/// Every node's mesh, each holding every other node's advertisement.
fn meshes_for(n: usize, adverts: &[Vec<LinkInfo>], max_hops: u8) -> Vec<Mesh> {
    let cfg = MeshConfig {
        max_hops,
        ..MeshConfig::default()
    };
    let mut meshes: Vec<Mesh> = (0..n)
        .map(|i| Mesh::new(cfg.clone(), id(i), vec![], Instant::ZERO))
        .collect();
    for (i, m) in meshes.iter_mut().enumerate() {
        m.set_links(adverts[i].clone(), Instant::ZERO);
    }
    let lsas: Vec<Lsa> = meshes.iter().map(Mesh::own_lsa).collect();
    for (i, m) in meshes.iter_mut().enumerate() {
        for (j, l) in lsas.iter().enumerate() {
            if i != j {
                m.handle_lsa(&id(j), l.clone(), Instant::ZERO).unwrap();
            }
        }
    }
    meshes
}

/// The usable (both ends advertise) symmetric costs.
fn usable_costs(n: usize, adverts: &[Vec<LinkInfo>]) -> Vec<Vec<Option<u64>>> {
    let adv: Vec<BTreeMap<String, u64>> = adverts
        .iter()
        .map(|ls| ls.iter().map(|l| (l.peer.clone(), l.rtt_us)).collect())
        .collect();
    let mut w = vec![vec![None; n]; n];
    for a in 0..n {
        for b in 0..n {
            if let (Some(ab), Some(ba)) = (adv[a].get(&id(b)), adv[b].get(&id(a))) {
                w[a][b] = Some((*ab).max(*ba).max(1));
            }
        }
    }
    w
}

const INF: u64 = u64::MAX / 4;

fn floyd_warshall(w: &[Vec<Option<u64>>]) -> Vec<Vec<u64>> {
    let n = w.len();
    let mut d = vec![vec![INF; n]; n];
    for a in 0..n {
        d[a][a] = 0;
        for b in 0..n {
            if let Some(c) = w[a][b] {
                d[a][b] = d[a][b].min(c);
            }
        }
    }
    for k in 0..n {
        for a in 0..n {
            for b in 0..n {
                d[a][b] = d[a][b].min(d[a][k] + d[k][b]);
            }
        }
    }
    d
}

/// A path is a walk over usable links from `src` to `dst` costing `cost`.
fn check_path(w: &[Vec<Option<u64>>], src: usize, dst: usize, path: &[String], cost: u64) -> bool {
    let p: Vec<usize> = path.iter().map(|s| idx(s)).collect();
    if p.first() != Some(&src) || p.last() != Some(&dst) {
        return false;
    }
    let mut sum = 0;
    for pair in p.windows(2) {
        match w[pair[0]][pair[1]] {
            Some(c) => sum += c,
            None => return false,
        }
    }
    sum == cost
}

fn small_graph_routes_match_floyd_warshall(g: SmallGraph) -> TestResult {
    let n = g.n;
    let mut adverts: Vec<Vec<LinkInfo>> = vec![Vec::new(); n];
    for &(a, b, ra, rb, adv_a, adv_b) in &g.edges {
        if adv_a {
            adverts[a].push(link(b, ra));
        }
        if adv_b {
            adverts[b].push(link(a, rb));
        }
    }
    let w = usable_costs(n, &adverts);
    let d = floyd_warshall(&w);
    let mut meshes = meshes_for(n, &adverts, MAX_HOPS_LIMIT);
    for src in 0..n {
        for dst in (0..n).filter(|&x| x != src) {
            let route = meshes[src].route(&id(dst), Instant::ZERO);
            match route {
                None => {
                    if d[src][dst] != INF {
                        return TestResult::error(format!("{src}->{dst} missed"));
                    }
                    continue;
                }
                Some((path, cost)) => {
                    if cost != d[src][dst] || !check_path(&w, src, dst, &path, cost) {
                        return TestResult::error(format!(
                            "{src}->{dst}: {path:?} at {cost}, want {}",
                            d[src][dst]
                        ));
                    }
                }
            }
            for session in 0..6u64 {
                // The first hop: a neighbour strictly closer to dst, on a path
                // within the slack.
                let hop = meshes[src].next_hop(&id(dst), session, &none(), Instant::ZERO);
                let Some(h) = hop.map(|h| idx(&h)) else {
                    return TestResult::error(format!("{src}->{dst}: no next hop"));
                };
                let Some(first) = w[src][h] else {
                    return TestResult::error(format!("{src}->{dst}: {h} is no neighbour"));
                };
                let via = first + d[h][dst];
                if via * 100 > d[src][dst] * (100 + ECMP_SLACK_PERCENT) || d[h][dst] >= d[src][dst]
                {
                    return TestResult::error(format!("{src}->{dst}: bad first hop {h}"));
                }
                // Hop by hop, every node using its own table: no loops.
                let mut cur = src;
                let mut steps = 0;
                while cur != dst {
                    let next = meshes[cur].next_hop(&id(dst), session, &none(), Instant::ZERO);
                    let Some(next) = next.map(|x| idx(&x)) else {
                        return TestResult::error(format!("{src}->{dst}: stuck at {cur}"));
                    };
                    if d[next][dst] >= d[cur][dst] {
                        return TestResult::error(format!(
                            "{src}->{dst}: {cur}->{next} not closer"
                        ));
                    }
                    cur = next;
                    steps += 1;
                    if steps > n {
                        return TestResult::error(format!("{src}->{dst}: loop"));
                    }
                }
            }
        }
        let reachable = (0..n).filter(|&x| x != src && d[src][x] != INF).count();
        if meshes[src].routing_table_size(Instant::ZERO) != reachable {
            return TestResult::error(format!("{src}: table size"));
        }
    }
    TestResult::passed()
}

#[test]
fn prop_small_graph_routes_match_floyd_warshall() {
    QuickCheck::new()
        .rng(Gen::new(40))
        .tests(400)
        .quickcheck(small_graph_routes_match_floyd_warshall as fn(SmallGraph) -> TestResult);
}

/// With a small radius, every route is at most `max_hops` links long, valid,
/// and never cheaper than the unconstrained shortest path; hop by hop, frames
/// still never loop.
fn small_radius_routes_are_short_and_loop_free(g: SmallGraph) -> TestResult {
    let n = g.n;
    let max_hops = 2u8;
    let mut adverts: Vec<Vec<LinkInfo>> = vec![Vec::new(); n];
    for &(a, b, ra, rb, adv_a, adv_b) in &g.edges {
        if adv_a {
            adverts[a].push(link(b, ra));
        }
        if adv_b {
            adverts[b].push(link(a, rb));
        }
    }
    let w = usable_costs(n, &adverts);
    let d = floyd_warshall(&w);
    let mut meshes = meshes_for(n, &adverts, max_hops);
    for src in 0..n {
        // Hop distances over usable links, breadth first.
        let mut hops = vec![usize::MAX; n];
        hops[src] = 0;
        let mut queue = VecDeque::from([src]);
        while let Some(u) = queue.pop_front() {
            for v in 0..n {
                if w[u][v].is_some() && hops[v] == usize::MAX {
                    hops[v] = hops[u] + 1;
                    queue.push_back(v);
                }
            }
        }
        for dst in (0..n).filter(|&x| x != src) {
            let Some((path, cost)) = meshes[src].route(&id(dst), Instant::ZERO) else {
                if hops[dst] <= usize::from(max_hops) {
                    return TestResult::error(format!("{src}->{dst}: no route within the radius"));
                }
                continue;
            };
            if path.len() > usize::from(max_hops) + 1
                || cost < d[src][dst]
                || !check_path(&w, src, dst, &path, cost)
            {
                return TestResult::error(format!("{src}->{dst}: {path:?} at {cost}"));
            }
            // Hop by hop, a frame never visits a node twice. (Routes within
            // the radius need not go downhill in the unconstrained metric:
            // where every cheapest path is too long, a costlier short one is
            // taken.)
            for session in 0..4u64 {
                let mut cur = src;
                let mut seen = BTreeSet::from([src]);
                while cur != dst {
                    let Some(next) =
                        meshes[cur].next_hop(&id(dst), session, &none(), Instant::ZERO)
                    else {
                        break;
                    };
                    let next = idx(&next);
                    if !seen.insert(next) {
                        return TestResult::error(format!("{src}->{dst}: {cur}->{next} loops"));
                    }
                    cur = next;
                }
            }
        }
    }
    TestResult::passed()
}

#[test]
fn prop_small_radius_routes_are_short_and_loop_free() {
    QuickCheck::new()
        .rng(Gen::new(40))
        .tests(300)
        .quickcheck(small_radius_routes_are_short_and_loop_free as fn(SmallGraph) -> TestResult);
}

/// A tiny deterministic generator for the big graphs (splitmix64).
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A connected random graph: a random spanning tree plus random extra links,
/// `edges` in all, each with one random cost advertised by both ends.
fn random_graph(n: usize, edges: usize, seed: u64) -> Vec<Vec<LinkInfo>> {
    let mut rng = Prng(seed);
    let mut pairs: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for b in 1..n {
        let a = rng.below(b as u64) as usize;
        pairs.insert((a, b), 100 + rng.below(10_000));
    }
    while pairs.len() < edges {
        let a = rng.below(n as u64) as usize;
        let b = rng.below(n as u64) as usize;
        if a != b {
            pairs
                .entry((a.min(b), a.max(b)))
                .or_insert(100 + rng.below(10_000));
        }
    }
    let mut adverts = vec![Vec::new(); n];
    for (&(a, b), &c) in &pairs {
        adverts[a].push(link(b, c));
        adverts[b].push(link(a, c));
    }
    adverts
}

/// Bellman–Ford from `src`: relax every link until nothing changes.
fn bellman_ford(w: &[Vec<Option<u64>>], src: usize) -> Vec<u64> {
    let n = w.len();
    let mut d = vec![INF; n];
    d[src] = 0;
    loop {
        let mut changed = false;
        for a in 0..n {
            if d[a] == INF {
                continue;
            }
            for b in 0..n {
                if let Some(c) = w[a][b]
                    && d[a] + c < d[b]
                {
                    d[b] = d[a] + c;
                    changed = true;
                }
            }
        }
        if !changed {
            return d;
        }
    }
}

#[test]
fn two_hundred_nodes_match_bellman_ford() {
    let n = 200;
    let adverts = random_graph(n, 1000, 7);
    let w = usable_costs(n, &adverts);
    let all = floyd_warshall(&w);
    let mut meshes = meshes_for(n, &adverts, MAX_HOPS_LIMIT);
    for src in [0, 1, 57, 133, 199] {
        let d = bellman_ford(&w, src);
        assert_eq!(meshes[src].routing_table_size(Instant::ZERO), n - 1);
        for dst in 0..n {
            if dst == src {
                continue;
            }
            let (path, cost) = meshes[src].route(&id(dst), Instant::ZERO).unwrap();
            assert_eq!(cost, d[dst], "{src}->{dst}");
            assert!(check_path(&w, src, dst, &path, cost));
            let hop = idx(&meshes[src]
                .next_hop(&id(dst), dst as u64, &none(), Instant::ZERO)
                .unwrap());
            let via = w[src][hop].unwrap() + all[hop][dst];
            assert!(all[hop][dst] < d[dst], "downstream");
            assert!(via * 100 <= d[dst] * (100 + ECMP_SLACK_PERCENT));
        }
    }
}

#[test]
fn routing_table_for_200_nodes_and_1000_links_is_fast() {
    let n = 200;
    let adverts = random_graph(n, 1000, 11);
    let mut meshes = meshes_for(n, &adverts, 8);
    let m = &mut meshes[0];
    let ttl = m.config().route_ttl;
    let before = m.stats().route_computations;
    let rounds = 200u32;
    let start = std::time::Instant::now();
    let mut now = Instant::ZERO;
    for _ in 0..rounds {
        // Each lookup past the cache's lifetime recomputes every route.
        now = now + ttl;
        assert_eq!(m.routing_table_size(now), n - 1);
    }
    let per_table = start.elapsed() / rounds;
    assert_eq!(m.stats().route_computations - before, u64::from(rounds));

    let lookups = 100_000u32;
    let start = std::time::Instant::now();
    let exclude = none();
    let dsts: Vec<String> = (1..n).map(id).collect();
    let mut found = 0;
    for i in 0..lookups {
        let dst = &dsts[i as usize % dsts.len()];
        found += usize::from(m.next_hop(dst, u64::from(i), &exclude, now).is_some());
    }
    let per_lookup = start.elapsed() / lookups;
    assert_eq!(found, lookups as usize);
    println!(
        "mesh: routing table for {n} nodes / 1000 links in {per_table:?}; next_hop in {per_lookup:?}"
    );
    let limit = if cfg!(debug_assertions) {
        Duration::from_millis(5)
    } else {
        Duration::from_millis(1)
    };
    assert!(per_table < limit, "{per_table:?} per routing table");
}

/// On a bare machine (no signatures) a neighbour can forge our own
/// advertisement; the sequence number still must not wrap. A node's signed
/// mesh refuses the forgery outright
/// (`a_signed_mesh_refuses_a_forged_advertisement_of_its_own`).
#[test]
fn a_forged_maximal_sequence_number_does_not_wrap() {
    let mut m = Mesh::new(MeshConfig::default(), id(0), vec![], secs(0));
    let forged = Lsa {
        seq: u64::MAX,
        ..lsa(0, 0, &[(9, 1)], 8)
    };
    assert_eq!(m.handle_lsa(&id(1), forged, secs(0)).unwrap(), None);
    let next = m.handle_timeout(secs(0)).expect("outbids at once");
    assert_eq!(next.seq, u64::MAX);
}

#[test]
fn a_signed_mesh_refuses_a_forged_advertisement_of_its_own() {
    let k = ivaldi_core::noise::Keypair::from_private([3; 32]).unwrap();
    let me = data_encoding::HEXLOWER.encode(&k.public);
    let mut m = Mesh::new(MeshConfig::default(), me.clone(), vec![], secs(0)).signed(&k);
    let forged = Lsa {
        origin: me,
        seq: u64::MAX,
        ..lsa(0, 0, &[(9, 1)], 8)
    };
    assert_eq!(
        m.handle_lsa(&id(1), forged, secs(0)),
        Err(MeshError::Unsigned)
    );
    assert_eq!(m.stats().forged, 1);
    let next = m.handle_timeout(secs(30)).expect("the regular refresh");
    assert_eq!(next.seq, 1, "not outbid by the forgery");
    assert_eq!(ivaldi_core::mesh::sign::verify(&next), Ok(()));
}

// ----- database summaries -----

#[test]
fn a_summary_exchange_sends_only_what_the_neighbour_lacks() {
    let mut net = line(4, MeshConfig::default());
    // Node 0 and node 3 both know the whole line: nothing to send.
    let s3 = net.meshes[3].summary();
    assert_eq!(s3.entries.len(), 4);
    assert_eq!(s3.entries[0].origin, id(3), "ours first");
    let out = net.meshes[0].handle_summary(&id(3), &s3, net.now).unwrap();
    assert!(out.is_empty(), "{out:?}");
    // A newcomer knows nothing but itself: it gets every advertisement.
    let fresh = Mesh::new(MeshConfig::default(), id(9), vec![], Instant::ZERO);
    let out = net.meshes[0]
        .handle_summary(&id(9), &fresh.summary(), net.now)
        .unwrap();
    assert_eq!(out.len(), 4);
    // An older copy of node 1's advertisement, or one with other content under
    // the same sequence number, is replaced.
    let mut s = net.meshes[0].summary();
    let one = s.entries.iter_mut().find(|e| e.origin == id(1)).unwrap();
    one.seq -= 1;
    let out = net.meshes[0].handle_summary(&id(3), &s, net.now).unwrap();
    assert_eq!(
        out.iter().map(|l| l.origin.clone()).collect::<Vec<_>>(),
        vec![id(1)]
    );
    let mut s = net.meshes[0].summary();
    let one = s.entries.iter_mut().find(|e| e.origin == id(1)).unwrap();
    one.digest ^= 1;
    let out = net.meshes[0].handle_summary(&id(3), &s, net.now).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn a_summary_holding_our_old_advertisement_makes_us_outbid_it() {
    let mut m = Mesh::new(MeshConfig::default(), id(0), vec![], secs(0));
    m.set_links(vec![link(1, 500)], secs(0)).expect("first");
    let theirs = ivaldi_core::mesh::DatabaseSummary {
        entries: vec![ivaldi_core::mesh::SummaryEntry {
            origin: id(0),
            seq: 41,
            digest: 7,
        }],
    };
    let out = m.handle_summary(&id(1), &theirs, secs(5)).unwrap();
    assert_eq!(out.len(), 1, "our current advertisement is sent");
    assert_eq!(
        m.poll_timeout(),
        Some(secs(5)),
        "and a newer one is due now"
    );
    let next = m.handle_timeout(secs(5)).expect("outbids");
    assert!(next.seq > 41);
}

#[test]
fn malformed_summaries_are_refused_and_counted() {
    let mut m = Mesh::new(MeshConfig::default(), id(0), vec![], secs(0));
    let bad = ivaldi_core::mesh::DatabaseSummary {
        entries: vec![ivaldi_core::mesh::SummaryEntry {
            origin: "NOT-AN-ID".into(),
            seq: 1,
            digest: 0,
        }],
    };
    assert!(m.handle_summary(&id(1), &bad, secs(1)).is_err());
    let cfg = MeshConfig {
        max_nodes: 2,
        ..MeshConfig::default()
    };
    let mut m = Mesh::new(cfg, id(0), vec![], secs(0));
    let big = ivaldi_core::mesh::DatabaseSummary {
        entries: (1..=4)
            .map(|i| ivaldi_core::mesh::SummaryEntry {
                origin: id(i),
                seq: 1,
                digest: 0,
            })
            .collect(),
    };
    assert!(m.handle_summary(&id(1), &big, secs(1)).is_err());
    assert_eq!(m.stats().malformed, 1);
}

#[test]
fn in_a_clique_only_the_origin_sends_its_advertisement() {
    let mut net = Net::new(10, MeshConfig::default());
    for a in 0..10 {
        for b in a + 1..10 {
            net.connect(a, b, 1000);
        }
    }
    net.deliveries = 0;
    net.rtt.insert((0, 1), 5000);
    net.rtt.insert((1, 0), 5000);
    net.refresh(0);
    assert_eq!(
        net.deliveries, 9,
        "one message per neighbour, no re-forwarding"
    );
    let seq = net.meshes[0].own_lsa().seq;
    for m in &net.meshes[1..] {
        let g = m.graph();
        let zero = g.nodes.iter().find(|n| n.id == id(0)).unwrap();
        assert_eq!(
            zero.seq,
            Some(seq),
            "every node has the newest advertisement"
        );
    }
}

// ----- signed advertisements, between real nodes -----
//
// Nodes trust each other (a team), and a trusted neighbour used to be able to
// say anything about anyone: it could flood an advertisement "from" another
// node listing whatever links it liked. Every advertisement is now signed by
// its origin's node key (see `ivaldi_core::mesh::sign`), so such a forgery,
// or an honest one altered on the way, is dropped and counted, and routes
// stay as the honest advertisements make them.

mod signed {
    use std::time::Duration;

    use ivaldi_core::config::NodeConfig;
    use ivaldi_core::mesh::sign::Signer;
    use ivaldi_core::mesh::{LinkInfo, Lsa};
    use ivaldi_core::noise::Keypair;
    use ivaldi_core::store::MemStore;
    use ivaldi_core::testkit::{TestNet, plaintext_record};

    /// Plaintext links, so a test can speak for a node with
    /// [`TestNet::inject`] and read or alter what travels.
    fn cfg() -> NodeConfig {
        NodeConfig::default().with(|c| {
            c.connections.encryption = false;
            c.connections.heartbeat_interval = Duration::from_secs(2);
            c.mesh.topology_interval = Duration::from_secs(5);
            c.discovery.enabled = false;
        })
    }

    /// A line a – b – c: a reaches c only through b. Returns the net once a
    /// routes to c.
    fn line() -> TestNet {
        let mut net = TestNet::new();
        net.capture = true;
        for i in 0..3 {
            net.add(cfg(), MemStore::new("repo"), i + 1);
        }
        net.blocked_pairs.extend([(0, 2), (2, 0)]);
        net.connect(1, 0);
        net.connect(2, 1);
        let c = id(&net, 2);
        for _ in 0..60 {
            if path(&mut net, &c).is_some_and(|p| p.len() == 3) && routes(&net, &c) {
                return net;
            }
            net.run_for(Duration::from_millis(500));
        }
        panic!(
            "a routes to c through b: {:?}",
            net.nodes[0].node.topology()
        );
    }

    fn id(net: &TestNet, i: usize) -> String {
        net.nodes[i].node.node_id().to_hex()
    }

    /// Whether node 0 sees the link b – `dst` as usable (both ends advertise
    /// it), which its route to `dst` takes.
    fn routes(net: &TestNet, dst: &str) -> bool {
        let b = id(net, 1);
        net.nodes[0].node.topology().is_some_and(|t| {
            t.edges
                .iter()
                .any(|e| e.usable && ((e.a == b && e.b == dst) || (e.a == dst && e.b == b)))
        })
    }

    /// Node 0's path to `dst`.
    fn path(net: &mut TestNet, dst: &str) -> Option<Vec<String>> {
        let now = net.now;
        net.nodes[0]
            .node
            .route_to(now, &dst.parse().ok()?)
            .map(|(p, _)| p)
    }

    fn forged(net: &TestNet, i: usize) -> u64 {
        net.nodes[i].node.mesh_stats().map_or(0, |s| s.forged)
    }

    /// The advertisement of `origin` that node 0 holds, from its topology.
    fn held_seq(net: &TestNet, origin: &str) -> Option<u64> {
        let t = net.nodes[0].node.topology()?;
        t.nodes.iter().find(|n| n.id == origin)?.seq
    }

    /// Sends `lsa` from node 1 to node 0 as a `topology` message.
    /// Message ids must grow on a connection (replays are dropped), so the
    /// forger takes the next one after the last b sent (b's own next message
    /// then counts as a replay: a forger would not care).
    fn inject(net: &mut TestNet, lsa: &Lsa) {
        let sent = String::from_utf8_lossy(net.captured(1, 0)).into_owned();
        let last = sent
            .rmatch_indices(r#"{"id":"#)
            .find_map(|(at, m)| {
                let digits = sent[at + m.len()..].split(|c: char| !c.is_ascii_digit());
                digits.into_iter().next()?.parse::<u64>().ok()
            })
            .expect("b has sent something");
        let json = format!(
            r#"{{"id":{},"type":"topology","from":"{}","ts":0,"payload":{}}}"#,
            last + 1,
            id(net, 1),
            serde_json::to_string(lsa).unwrap()
        );
        assert!(net.inject(1, 0, plaintext_record(&json)));
    }

    /// b, trusted by a, floods an advertisement "from" c that cuts c off
    /// from b and links it to a node of b's choosing, with a higher sequence
    /// number than c's own: unsigned, signed with another key, and with c's
    /// real signature lifted from c's last advertisement. Each is dropped and
    /// counted, a keeps c's own advertisement and its route, and b stays
    /// connected (what b says of itself is still authenticated).
    #[test]
    fn a_trusted_neighbour_cannot_forge_another_nodes_links() {
        let mut net = line();
        let c = id(&net, 2);
        let before = path(&mut net, &c).expect("a route to c");
        let seq = held_seq(&net, &c).expect("a holds c's advertisement");
        let stranger = Keypair::from_private([7; 32]).unwrap();
        let mut lie = Lsa {
            origin: c.clone(),
            seq: seq + 1000,
            links: vec![LinkInfo {
                peer: data_encoding::HEXLOWER.encode(&stranger.public),
                rtt_us: 1,
            }],
            repos: vec!["repo".into()],
            hops_left: 8,
            sig: String::new(),
        };
        let unsigned = lie.clone();
        lie.sig = Signer::new(&stranger.private).sign(&lie);
        let signed_by_another = lie.clone();
        // c's genuine signature, from the advertisement a holds, on new links.
        let genuine = net.nodes[0]
            .node
            .mesh_database()
            .into_iter()
            .find(|l| l.origin == c)
            .expect("c's advertisement");
        let lifted = Lsa {
            sig: genuine.sig.clone(),
            ..lie.clone()
        };
        for (n, forgery) in [unsigned, signed_by_another, lifted].iter().enumerate() {
            inject(&mut net, forgery);
            net.run_for(Duration::from_millis(200));
            assert_eq!(forged(&net, 0), n as u64 + 1, "forgery {n} counted");
            assert!(
                held_seq(&net, &c) < Some(seq + 1000),
                "forgery {n} not stored"
            );
            assert_eq!(
                path(&mut net, &c).as_ref(),
                Some(&before),
                "route unchanged"
            );
        }
        assert!(net.connected(0, 1), "b is still a's neighbour");
        // And c's own advertisements still get through afterwards.
        net.run_for(Duration::from_secs(12));
        assert!(held_seq(&net, &c) > Some(seq), "c's refresh accepted");
        assert_eq!(forged(&net, 0), 3);
        assert!(routes(&net, &c));
    }

    /// An honest advertisement altered on the way (one digit of a round-trip
    /// time, by the link b → a) is dropped and counted; the next, untouched,
    /// is accepted, and the route never breaks.
    #[test]
    fn an_advertisement_altered_in_flight_is_dropped() {
        let mut net = line();
        let c = id(&net, 2);
        let seq = held_seq(&net, &c).expect("a holds c's advertisement");
        let origin = format!(r#""origin":"{c}""#);
        let mut done = false;
        net.tamper = Some(Box::new(move |from, to, bytes: &mut Vec<u8>| {
            if done || (from, to) != (1, 0) {
                return;
            }
            let find = |what: &str| bytes.windows(what.len()).position(|w| w == what.as_bytes());
            let (Some(o), Some(r)) = (find(&origin), find(r#""rtt_us":"#)) else {
                return;
            };
            if find(r#""type":"topology""#).is_none() || r < o {
                return;
            }
            let at = r + r#""rtt_us":"#.len();
            bytes[at] = if bytes[at] == b'9' { b'8' } else { b'9' };
            done = true;
        }));
        assert!(
            net.run_until(Duration::from_secs(12), |n| forged(n, 0) == 1),
            "the altered copy was refused"
        );
        assert_eq!(
            held_seq(&net, &c),
            Some(seq),
            "the altered copy was not stored"
        );
        assert!(routes(&net, &c));
        let c2 = c.clone();
        assert!(
            net.run_until(Duration::from_secs(12), |n| held_seq(n, &c2) > Some(seq)),
            "the next advertisement, untouched, was accepted"
        );
        assert_eq!(forged(&net, 0), 1);
        assert_eq!(forged(&net, 1), 0, "b got c's advertisements intact");
        assert!(path(&mut net, &c).is_some_and(|p| p.len() == 3));
    }
}
