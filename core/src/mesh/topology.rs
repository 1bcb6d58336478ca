//! The mesh as advertised, for people: `topology --json` and `--dot`. Unlike
//! the routing graph it keeps one-sided links (marked), since those are what
//! someone debugging a split wants to see.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::lsa::short;
use crate::time::Instant;

/// The mesh as this node sees it, for `topology --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// This node's id.
    pub me: String,
    /// Every node heard of, in id order.
    pub nodes: Vec<TopologyNode>,
    /// Every advertised link, once per pair, in id order.
    pub edges: Vec<TopologyEdge>,
}

/// A node in a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyNode {
    pub id: String,
    /// Sequence number of its advertisement held (`None`: known only because a
    /// neighbour lists it).
    pub seq: Option<u64>,
    /// Repositories it serves, in id order.
    pub repos: Vec<String>,
    /// When its advertisement was received (for this node: last originated).
    pub last_seen: Option<Instant>,
}

/// A link in a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyEdge {
    /// The smaller id of the two.
    pub a: String,
    pub b: String,
    /// The link's cost: the larger of the advertised round-trip times.
    pub rtt_us: u64,
    /// Both ends advertise it, so routes may use it.
    pub usable: bool,
}

/// One advertisement as the topology shows it.
#[derive(Clone)]
pub(super) struct Advertised<'a> {
    pub(super) id: &'a str,
    pub(super) seq: u64,
    pub(super) links: &'a BTreeMap<String, u64>,
    pub(super) repos: &'a [String],
    pub(super) last_seen: Option<Instant>,
}

/// What each end of a pair `(a, b)` advertises: a's round-trip time to b, and
/// b's to a.
type Sides = (Option<u64>, Option<u64>);

impl Topology {
    /// `me`'s view from its own advertisement and the `others` it holds
    /// (never including `me`).
    pub(super) fn build<'a>(
        me: Advertised<'a>,
        others: impl Iterator<Item = Advertised<'a>> + Clone,
    ) -> Self {
        // (a, b) with a < b to (a's advertised rtt, b's advertised rtt).
        let me_id = me.id;
        let mut pairs: BTreeMap<(&str, &str), Sides> = BTreeMap::new();
        let advertisers =
            std::iter::once((me.id, me.links)).chain(others.clone().map(|o| (o.id, o.links)));
        for (origin, links) in advertisers {
            for (peer, &rtt) in links {
                let peer = peer.as_str();
                if origin < peer {
                    pairs.entry((origin, peer)).or_default().0 = Some(rtt);
                } else {
                    pairs.entry((peer, origin)).or_default().1 = Some(rtt);
                }
            }
        }
        let mut nodes: BTreeMap<&str, TopologyNode> = BTreeMap::new();
        let bare = |id: &str| TopologyNode {
            id: id.to_owned(),
            seq: None,
            repos: Vec::new(),
            last_seen: None,
        };
        for &(a, b) in pairs.keys() {
            nodes.entry(a).or_insert_with(|| bare(a));
            nodes.entry(b).or_insert_with(|| bare(b));
        }
        for n in others.chain(std::iter::once(me)) {
            nodes.insert(
                n.id,
                TopologyNode {
                    id: n.id.to_owned(),
                    seq: Some(n.seq),
                    repos: n.repos.to_vec(),
                    last_seen: n.last_seen,
                },
            );
        }
        let edges = pairs
            .into_iter()
            .map(|((a, b), (ab, ba))| TopologyEdge {
                a: a.to_owned(),
                b: b.to_owned(),
                rtt_us: ab.unwrap_or(0).max(ba.unwrap_or(0)).max(1),
                usable: ab.is_some() && ba.is_some(),
            })
            .collect();
        Topology {
            me: me_id.to_owned(),
            nodes: nodes.into_values().collect(),
            edges,
        }
    }

    /// In Graphviz DOT (`topology --dot`; render with `dot -Tsvg`). Nodes are
    /// labelled with the first 12 digits of their id and their repositories;
    /// we are drawn bold, nodes only heard of dashed, one-sided links dashed.
    /// One line per node and per edge.
    pub(super) fn dot(&self) -> String {
        let mut out = String::from("graph mesh {\n");
        out.push_str("  node [shape=box, fontname=\"monospace\"];\n");
        for n in &self.nodes {
            let mut label = short(&n.id).to_owned();
            if !n.repos.is_empty() {
                label.push('\n');
                label.push_str(&n.repos.join(", "));
            }
            let style = if n.id == self.me {
                ", style=bold"
            } else if n.seq.is_none() {
                ", style=dashed"
            } else {
                ""
            };
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{}\"{style}];",
                dot_escape(&n.id),
                dot_escape(&label)
            );
        }
        for e in &self.edges {
            let style = if e.usable { "" } else { ", style=dashed" };
            let _ = writeln!(
                out,
                "  \"{}\" -- \"{}\" [label=\"{}.{} ms\"{style}];",
                dot_escape(&e.a),
                dot_escape(&e.b),
                e.rtt_us / 1000,
                (e.rtt_us % 1000) / 100
            );
        }
        out.push_str("}\n");
        out
    }
}

/// Escapes a string for a double-quoted DOT id or label: backslash and quote;
/// a newline becomes DOT's centred line break.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn adv<'a>(
        id: &'a str,
        links: &'a BTreeMap<String, u64>,
        repos: &'a [String],
    ) -> Advertised<'a> {
        Advertised {
            id,
            seq: 3,
            links,
            repos,
            last_seen: None,
        }
    }

    /// Us (1) linked both ways to 2; 2 also claims 3, which never answered.
    fn sample() -> Topology {
        let (me, two) = (id(1), id(2));
        let mine = BTreeMap::from([(id(2), 1_500)]);
        let theirs = BTreeMap::from([(id(1), 2_250), (id(3), 900)]);
        let repos = vec!["r".to_owned()];
        Topology::build(
            adv(&me, &mine, &[]),
            [adv(&two, &theirs, &repos)].into_iter(),
        )
    }

    #[test]
    fn dot_escaping() {
        assert_eq!(dot_escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn links_are_listed_once_per_pair_with_one_sided_ones_marked() {
        let t = sample();
        assert_eq!(t.me, id(1));
        let ids: Vec<&str> = t.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, [id(1), id(2), id(3)]);
        assert_eq!(t.nodes[2].seq, None, "3 is only heard of");
        assert_eq!(t.nodes[1].repos, ["r"]);
        let e: Vec<(&str, &str, u64, bool)> = t
            .edges
            .iter()
            .map(|e| (e.a.as_str(), e.b.as_str(), e.rtt_us, e.usable))
            .collect();
        assert_eq!(
            e,
            [
                (id(1).as_str(), id(2).as_str(), 2_250, true),
                (id(2).as_str(), id(3).as_str(), 900, false)
            ]
        );
    }

    #[test]
    fn dot_draws_one_line_per_node_and_edge() {
        let dot = sample().dot();
        let lines: Vec<&str> = dot.lines().collect();
        assert_eq!(lines.len(), 2 + 3 + 2 + 1);
        assert!(lines[2].ends_with("[label=\"010101010101\", style=bold];"));
        assert!(lines[3].contains("label=\"020202020202\\nr\"];"));
        assert!(lines[4].ends_with(", style=dashed];"));
        assert!(lines[5].ends_with("[label=\"2.2 ms\"];"));
        assert!(lines[6].ends_with("[label=\"0.9 ms\", style=dashed];"));
    }
}
