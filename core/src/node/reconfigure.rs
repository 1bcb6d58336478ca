//! Applying a new configuration (`Command::SetConfig`) part by part.
//!
//! The node used to take a new configuration whole and re-run every part's
//! set-up, whether its settings had changed or not. Here the old and new
//! configurations are compared section by section ([`Changed`]), and each
//! part is handed its own section only when that section changed:
//!
//! | section | applied to |
//! |---|---|
//! | `connections` | dialers (known peers kept and dialled); heartbeats, handshake deadline, accept rate and peer slots are read where used, so open connections follow at once |
//! | `sync` | the auto-sync timer (a shorter interval or turning it on moves the next sync closer) |
//! | `limits` | frame limits of every open connection and the frame budget ([`FrameLimits::of`](super::frame_limits::FrameLimits)) |
//! | `discovery` | the discovery machine (started, stopped or given its new interval) |
//! | `mesh` | the mesh machine's intervals; relaying reads its settings where used |
//! | `access` | trust and access of every open connection (those no longer allowed are closed) and the address filter |
//! | `rates` | the node's and every open connection's token buckets |
//!
//! An unchanged configuration changes nothing: no part is touched, no timer
//! moves, no connection is closed.

use crate::config::NodeConfig;
use crate::mesh::MeshConfig;
use crate::store::Store;
use crate::time::Instant;

use super::Node;

/// Which sections of the configuration differ between two configurations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Changed {
    pub connections: bool,
    pub sync: bool,
    pub limits: bool,
    pub discovery: bool,
    pub mesh: bool,
    pub access: bool,
    pub rates: bool,
}

impl Changed {
    pub fn between(old: &NodeConfig, new: &NodeConfig) -> Changed {
        Changed {
            connections: old.connections != new.connections,
            sync: old.sync != new.sync,
            limits: old.limits != new.limits,
            discovery: old.discovery != new.discovery,
            mesh: old.mesh != new.mesh,
            access: old.access != new.access,
            rates: old.rates != new.rates,
        }
    }

    pub fn any(&self) -> bool {
        *self != Changed::default()
    }
}

impl Node {
    /// Takes `new` and hands each part the section that changed. Returns how
    /// many connections were closed because they are no longer allowed.
    pub(super) fn reconfigure(
        &mut self,
        now: Instant,
        new: NodeConfig,
        store: &dyn Store,
    ) -> usize {
        let changed = Changed::between(&self.cfg, &new);
        if !changed.any() {
            return 0;
        }
        let narrowed = changed.access && self.retrust(&new.access);
        let auto_was = self.cfg.sync.auto_sync;
        self.cfg = new;
        if changed.connections {
            self.sync_known_peers(now);
        }
        if changed.sync {
            let s = &self.cfg.sync;
            let sooner = self.timers.next_auto_sync > now + s.sync_interval;
            if s.auto_sync && (!auto_was || sooner) {
                self.timers.next_auto_sync = now + s.sync_interval;
            }
        }
        if changed.limits {
            self.apply_frame_limits();
        }
        if changed.mesh
            && let Some(m) = self.mesh.as_mut()
        {
            m.set_config(MeshConfig::from_settings(&self.cfg.mesh));
        }
        if changed.rates {
            self.apply_rates(now);
        }
        let mut closed = 0;
        if changed.discovery || changed.access || changed.connections {
            // The address filter is access; discovery announces the port.
            self.configure_discovery(now);
            self.announce_local(now, store);
        }
        if changed.access {
            closed = self.enforce_trust() + self.enforce_access(narrowed);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{NodeConfig, PeerRates};
    use crate::node::{Command, Output};
    use crate::noise::Keypair;
    use crate::rng::Rng;
    use crate::store::MemStore;

    fn node(cfg: NodeConfig) -> (Node, MemStore) {
        let store = MemStore::new("repo");
        let mut node = Node::new(
            cfg,
            Keypair::generate(&mut Rng::from_seed([1; 32])),
            [2; 32],
            Instant::ZERO,
        );
        node.start(Instant::ZERO, &store);
        while node.poll_output().is_some() {}
        (node, store)
    }

    fn set(node: &mut Node, store: &MemStore, cfg: NodeConfig) -> Vec<Output> {
        let now = Instant::ZERO + Duration::from_secs(1);
        node.handle_command(now, 9, Command::SetConfig(Box::new(cfg)), store);
        std::iter::from_fn(|| node.poll_output()).collect()
    }

    fn quiet() -> NodeConfig {
        NodeConfig::default().with(|c| c.discovery.enabled = false)
    }

    #[test]
    fn sections_that_differ_are_named_and_nothing_else() {
        let a = NodeConfig::default();
        assert!(!Changed::between(&a, &a.clone()).any());
        let b = a.clone().with(|c| c.rates.upload_rate = 1 << 20);
        assert_eq!(
            Changed::between(&a, &b),
            Changed {
                rates: true,
                ..Changed::default()
            }
        );
    }

    #[test]
    fn an_unchanged_configuration_changes_nothing() {
        let (mut node, store) = node(quiet());
        let before = (node.timers.next_auto_sync, node.frame_limits());
        let out = set(&mut node, &store, quiet());
        // Only the command's own reply: no dial, no close, no datagram.
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(before, (node.timers.next_auto_sync, node.frame_limits()));
    }

    #[test]
    fn a_shorter_sync_interval_moves_the_next_auto_sync() {
        let (mut node, store) = node(quiet());
        let first = node.timers.next_auto_sync;
        set(
            &mut node,
            &store,
            quiet().with(|c| c.sync.sync_interval = Duration::from_secs(5)),
        );
        assert!(node.timers.next_auto_sync < first);
        assert_eq!(
            node.timers.next_auto_sync,
            Instant::ZERO + Duration::from_secs(6)
        );
    }

    #[test]
    fn a_new_known_peer_is_dialled() {
        let (mut node, store) = node(quiet());
        let cfg = quiet().with(|c| c.connections.known_peers = vec!["127.0.0.1:9999".into()]);
        set(&mut node, &store, cfg);
        let due = node.poll_timeout().expect("a dial is due");
        node.handle_timeout(due, &store);
        let out: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
        let dialled = out
            .iter()
            .any(|o| matches!(o, Output::Dial { addr, .. } if addr.port() == 9999));
        assert!(dialled, "{out:?}");
    }

    #[test]
    fn a_new_topology_interval_reaches_the_mesh() {
        let (mut node, store) = node(quiet());
        let cfg = quiet().with(|c| c.mesh.topology_interval = Duration::from_secs(60));
        set(&mut node, &store, cfg);
        let mesh = node.mesh.as_ref().map(|m| m.config().announce_interval);
        assert_eq!(mesh, Some(Duration::from_secs(60)));
    }

    #[test]
    fn discovery_is_stopped_and_started() {
        let (mut node, store) = node(quiet());
        assert!(node.discovery.is_none());
        set(&mut node, &store, NodeConfig::default());
        assert!(node.discovery.is_some());
        let cfg =
            NodeConfig::default().with(|c| c.discovery.discovery_interval = Duration::from_secs(7));
        set(&mut node, &store, cfg);
        let interval = node.discovery.as_ref().map(|d| d.config().interval);
        assert_eq!(interval, Some(Duration::from_secs(7)));
        set(&mut node, &store, quiet());
        assert!(node.discovery.is_none());
    }

    #[test]
    fn per_peer_rates_reach_open_connections() {
        let (mut node, store) = node(quiet());
        let now = Instant::ZERO + Duration::from_secs(1);
        let conn = node
            .handle_accepted(now, "127.0.0.1:5000".parse().expect("address"))
            .expect("accepted");
        let cfg = quiet().with(|c| {
            c.rates.peer_upload_rate = 4096;
            c.rates
                .peer_rates
                .insert(crate::NodeId([7; 32]), PeerRates::default());
        });
        set(&mut node, &store, cfg);
        let c = &node.conns[&conn];
        assert_eq!(c.up.rate(), 4096);
    }
}
