//! Applying `config.json` and the open invitations to the running node: after
//! `ivaldi p2p config`, after an edit of the file, and after a newcomer
//! redeemed an invitation (whose trust must outlive this run).

use std::time::Instant as WallInstant;

use ivaldi_core::NodeId;
use ivaldi_core::access::Access;
use ivaldi_core::node::Command;
use ivaldi_core::time::Instant;
use smol::channel::Sender;

use super::driver::Driver;
use super::{P2pPaths, discovery_targets, invites, setup, watch};
use crate::control::Reply;

impl Driver {
    /// Applies config.json as it is now, for `ivaldi p2p config` (which waits
    /// on `reply`) and for an edit of the file. A file that does not validate
    /// changes nothing: the running configuration stays, and the reason is
    /// logged and sent to the waiting CLI.
    pub(super) fn reload_config(&mut self, now: Instant, reply: Option<Sender<String>>) {
        let loaded =
            P2pPaths::new(self.store.repo().root()).and_then(|p| setup::effective_config(&p));
        let mut file = match loaded {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(error = %e, "configuration refused; keeping the running one");
                if let Some(reply) = reply {
                    let _ = reply.try_send(
                        Reply::err(format!(
                            "the running daemon refused the configuration and keeps its old one: {e}"
                        ))
                        .to_line(),
                    );
                }
                return;
            }
        };
        self.load_invites();
        // The listening port cannot change without a restart.
        file.node.connections.port = self.started_info.port;
        let (old, new) = (&self.daemon_cfg, &file.daemon);
        let discovery_was = self.node.config().discovery.enabled;
        for (key, changed) in [
            ("bind_addr", new.bind_addr != old.bind_addr),
            ("discovery_port", new.discovery_port != old.discovery_port),
            ("discovery", file.node.discovery.enabled != discovery_was),
            ("log_level", new.log_level != old.log_level),
            ("data_dir", new.data_dir != old.data_dir),
        ] {
            if changed {
                tracing::warn!(
                    key,
                    "this setting changed; it takes effect at the next restart"
                );
            }
        }
        // Discovery addresses apply at once; the daemon's other settings at
        // the next start (warned above).
        self.set_targets(&file.daemon);
        self.command_for(now, Command::SetConfig(Box::new(file.node)), reply);
    }

    /// Applies an edit of config.json once the watcher sees one.
    pub(super) fn watch_config(&mut self, now: Instant) {
        match self.config_watch.poll(WallInstant::now()) {
            None => {}
            Some(watch::Change::Edited) => {
                tracing::info!("config.json changed; applying it");
                self.reload_config(now, None);
            }
            Some(watch::Change::Removed) => {
                tracing::warn!("config.json was removed; keeping the running configuration")
            }
            Some(watch::Change::Unreadable(e)) => {
                tracing::warn!(error = %e, "config.json cannot be read; keeping the running configuration")
            }
        }
    }

    pub(super) fn set_targets(&mut self, cfg: &crate::config::DaemonConfig) {
        self.targets = if self.udp.is_some() {
            discovery_targets(cfg)
        } else {
            Vec::new()
        };
        tracing::info!(targets = ?self.targets, "discovery targets");
        let now = self.now();
        self.node.set_discovery_targets(now, self.targets.clone());
    }

    /// Hands the open invitations on disk to the core.
    pub(super) fn load_invites(&mut self) {
        let loaded = P2pPaths::new(self.store.repo().root())
            .map_err(|e| e.to_string())
            .and_then(|p| invites::load(&p).map_err(|e| e.to_string()));
        match loaded {
            Ok(list) => {
                let core = invites::for_core(&list, self.now(), invites::unix_now());
                self.node.set_invites(core);
            }
            Err(e) => tracing::error!(error = %e, "cannot read the open invitations"),
        }
    }

    /// A newcomer redeemed an invitation: spend the use and trust its key
    /// in `config.json`, so the trust outlives this run.
    pub(super) fn record_redeemed(
        &mut self,
        peer: &NodeId,
        invite: &str,
        access: Access,
        uses_left: u32,
    ) {
        let result = P2pPaths::new(self.store.repo().root())
            .map_err(|e| e.to_string())
            .and_then(|p| {
                invites::spend(&p, invite, uses_left).map_err(|e| e.to_string())?;
                setup::edit_config(&p, |c| {
                    c.node.access.trusted_peers.retain(|t| t.id != *peer);
                    c.node
                        .access
                        .trusted_peers
                        .push(ivaldi_core::trust::TrustedPeer { id: *peer, access });
                })
                .map_err(|e| e.to_string())
            });
        match result {
            // Applied at once: from now on the configuration alone says who
            // is trusted (see `Trust::configure`).
            Ok(_) => {
                let now = self.now();
                self.config_watch.mark_applied();
                self.reload_config(now, None);
            }
            Err(e) => tracing::error!(
                peer = %peer,
                error = %e,
                "cannot record the peer admitted by invitation; it stays trusted until the next configuration change"
            ),
        }
    }
}
