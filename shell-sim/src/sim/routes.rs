//! The mesh's routes checked against the ground truth: the connectivity
//! [`Graph`] and which of its links are usable right now.

use std::collections::BTreeMap;

use super::{REPO_ID, Sim};
use crate::graph::{self, Graph, MeshCheck};

impl Sim {
    /// Whether node `i` holds the simulated repository: with `holders` = k,
    /// one node in every `nodes / k`, and every node that joined later.
    pub fn holds_repo(&self, i: usize) -> bool {
        let (n, k) = (self.cfg.nodes, self.cfg.holders);
        k == 0 || k >= n || i >= n || i.is_multiple_of(n / k)
    }

    /// The repository node `i` serves: the simulated one, or for a node that
    /// does not hold it an unrelated one of its own (so it never syncs and only
    /// relays).
    pub fn repo_of(&self, i: usize) -> String {
        if self.holds_repo(i) {
            REPO_ID.to_owned()
        } else {
            format!("relay-only-{i}")
        }
    }

    /// The connectivity graph, under a graph topology.
    pub fn topology_graph(&self) -> Option<&Graph> {
        self.net.graph.as_ref()
    }

    /// Whether `a` and `b` can talk right now: both up, neighbours in the
    /// graph (if there is one), not cut, partitioned or blocked either way.
    pub fn link_usable(&self, a: usize, b: usize) -> bool {
        a != b
            && self.nodes.get(a).is_some_and(|n| n.is_up())
            && self.nodes.get(b).is_some_and(|n| n.is_up())
            && self.net.open(a, b)
            && self.net.open(b, a)
    }

    /// Hop distances from `from` over the usable edges of the graph (`None`
    /// without a graph topology).
    pub fn true_hops(&self, from: usize) -> Option<Vec<Option<u32>>> {
        let g = self.net.graph.as_ref()?;
        Some(g.bfs(from, |a, b| self.link_usable(a, b)))
    }

    /// The route node `from`'s mesh takes to node `to`, as node indices
    /// (`from` first, `to` last); `None` if it has none (or is down).
    pub fn mesh_route(&mut self, from: usize, to: usize) -> Option<Vec<usize>> {
        let index = self.index_by_id();
        self.route_with(&index, from, to)
    }

    /// Links on the cheapest path (by advertised round-trip time, usable
    /// links only) from `from` to `to` in node `from`'s view of the mesh; on
    /// equal cost, the fewest links.
    pub fn cheapest_hops(&self, from: usize, to: usize) -> Option<usize> {
        let topo = self.nodes.get(from)?.node.as_ref()?.topology()?;
        graph::cheapest_hops(&topo, &self.nodes.get(to)?.id)
    }

    fn index_by_id(&self) -> BTreeMap<String, usize> {
        self.nodes.iter().map(|n| (n.id.clone(), n.index)).collect()
    }

    fn route_with(
        &mut self,
        index: &BTreeMap<String, usize>,
        from: usize,
        to: usize,
    ) -> Option<Vec<usize>> {
        let dst = self.nodes.get(to)?.id.clone();
        let local = self.local(from);
        let node = self.nodes.get_mut(from)?.node.as_mut()?;
        let (path, _) = node.route_to(local, &dst.parse().ok()?)?;
        path.iter().map(|id| index.get(id).copied()).collect()
    }

    /// Compares every up node's routes with breadth-first shortest paths over
    /// the usable edges (a graph topology only; without one, an empty check).
    /// Pairs farther apart than the mesh's hop limit are only counted.
    pub fn mesh_check(&mut self) -> MeshCheck {
        let mut c = MeshCheck::default();
        if self.net.graph.is_none() {
            return c;
        }
        let radius = u32::from(ivaldi_core::mesh::MeshConfig::default().max_hops);
        let index = self.index_by_id();
        let ups = self.up_nodes();
        for &a in &ups {
            let Some(dist) = self.true_hops(a) else {
                continue;
            };
            for &b in &ups {
                let Some(d) = dist.get(b).copied().flatten() else {
                    continue;
                };
                if a == b {
                    continue;
                }
                if d > radius {
                    c.beyond_radius += 1;
                    continue;
                }
                c.pairs += 1;
                let Some(path) = self.route_with(&index, a, b) else {
                    if self
                        .cheapest_hops(a, b)
                        .is_some_and(|h| h > radius as usize)
                    {
                        c.hop_limited += 1;
                        continue;
                    }
                    c.missing += 1;
                    c.example
                        .get_or_insert_with(|| format!("n{a} has no route to n{b} ({d} hops)"));
                    continue;
                };
                if let Some(w) = path.windows(2).find(|w| !self.link_usable(w[0], w[1])) {
                    c.stale += 1;
                    c.example.get_or_insert_with(|| {
                        format!(
                            "n{a}'s route to n{b} {path:?} uses n{}-n{}, which is down",
                            w[0], w[1]
                        )
                    });
                    continue;
                }
                let hops = path.len().saturating_sub(1) as u64;
                c.hops_taken += hops;
                c.hops_shortest += u64::from(d);
                if hops > u64::from(d) {
                    c.longer += 1;
                }
                c.max_stretch = c.max_stretch.max(hops as f64 / f64::from(d));
            }
        }
        c
    }
}

impl Sim {
    /// Whether every route agrees with the ground truth, as
    /// [`MeshCheck::converged`] would say, stopping at the first that does not
    /// (cheaper than [`mesh_check`](Self::mesh_check) while polling).
    pub fn routes_converged(&mut self) -> bool {
        if self.net.graph.is_none() {
            return true;
        }
        let radius = u32::from(ivaldi_core::mesh::MeshConfig::default().max_hops);
        let index = self.index_by_id();
        let ups = self.up_nodes();
        for &a in &ups {
            let Some(dist) = self.true_hops(a) else {
                continue;
            };
            for &b in &ups {
                let Some(d) = dist.get(b).copied().flatten() else {
                    continue;
                };
                if a == b || d > radius {
                    continue;
                }
                let ok = match self.route_with(&index, a, b) {
                    Some(path) => path.windows(2).all(|w| self.link_usable(w[0], w[1])),
                    None => self
                        .cheapest_hops(a, b)
                        .is_some_and(|h| h > radius as usize),
                };
                if !ok {
                    return false;
                }
            }
        }
        true
    }

    /// Runs until every node's routes agree with the ground truth
    /// ([`MeshCheck::converged`]), checking every `poll`, for at most `bound`.
    /// Returns the virtual time that took (microseconds) and the last check.
    pub fn run_until_routes_converge(
        &mut self,
        bound: std::time::Duration,
        poll: std::time::Duration,
    ) -> (Option<u64>, MeshCheck) {
        let start = self.now;
        let end = start.saturating_add(bound.as_micros() as u64);
        let poll = (poll.as_micros() as u64).max(1);
        loop {
            if self.routes_converged() {
                let took = self.now - start;
                return (Some(took), self.mesh_check());
            }
            if self.now >= end {
                return (None, self.mesh_check());
            }
            self.run_until((self.now + poll).min(end));
        }
    }
}
