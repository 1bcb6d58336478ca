//! The control server: the Unix socket the CLI talks to, and the answer to
//! each [`Request`].
//!
//! Each control connection gets its own small task that reads one request and
//! writes whatever lines the driver queues for it; the driver answers
//! requests between two inputs of the node, so a reply always reflects one
//! consistent state. Requests that run a node [`Command`] wait in
//! [`Commands`] until the node reports it done.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ivaldi_core::NodeId;
use ivaldi_core::node::{Command, CommandId};
use ivaldi_core::store::Store;
use ivaldi_core::time::Instant;
use smol::channel::Sender;
use smol::io::AsyncWriteExt;
use smol::{Async, Timer};

use super::driver::{Driver, Input};
use super::fanout::SUBSCRIBER_QUEUE;
use crate::control::replies::{
    Admission, Conflicts, Count, Discovered, DiscoveredView, DiscoveryStatus, Done, EventCounts,
    MeshStatus, PeerView, Peers, Pending, PendingKey, Route, Status, SyncStatus, TopologyReply,
    Whoami,
};
use crate::control::{Line, Reply, Request};

/// Accepts control connections; each reads one request line and then writes
/// the lines queued for it until the final reply.
pub(super) async fn control_loop(
    listener: Async<std::os::unix::net::UnixListener>,
    tx: Sender<Input>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            Timer::after(Duration::from_millis(50)).await;
            continue;
        };
        let tx = tx.clone();
        smol::spawn(async move {
            let mut reader = smol::io::BufReader::new(&stream);
            let mut line = String::new();
            use smol::io::AsyncBufReadExt;
            if reader.read_line(&mut line).await.is_err() || line.len() > 64 * 1024 {
                return;
            }
            let (reply_tx, reply_rx) = smol::channel::bounded::<String>(SUBSCRIBER_QUEUE);
            match serde_json::from_str::<Request>(line.trim()) {
                Ok(req) => {
                    if tx.send(Input::Control(req, reply_tx)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = reply_tx.try_send(Reply::err(format!("bad request: {e}")).to_line());
                    drop(reply_tx);
                }
            }
            let mut w = &stream;
            while let Ok(mut l) = reply_rx.recv().await {
                l.push('\n');
                if w.write_all(l.as_bytes()).await.is_err() {
                    return;
                }
                if l.starts_with("{\"ok\"") {
                    return;
                }
            }
        })
        .detach();
    }
}

/// The node commands whose outcome a control client waits for.
pub(super) struct Commands {
    waiting: BTreeMap<CommandId, Sender<String>>,
    next: CommandId,
}

impl Default for Commands {
    fn default() -> Commands {
        Commands {
            waiting: BTreeMap::new(),
            next: 1,
        }
    }
}

impl Commands {
    /// A fresh id for a command; its outcome goes to `reply`, if any.
    pub(super) fn start(&mut self, reply: Option<Sender<String>>) -> CommandId {
        let id = self.next;
        self.next += 1;
        if let Some(reply) = reply {
            self.waiting.insert(id, reply);
        }
        id
    }

    /// The node finished command `id`: its client gets the final reply.
    pub(super) fn finish(&mut self, id: CommandId, ok: bool, message: &str) {
        if let Some(reply) = self.waiting.remove(&id) {
            let r = if ok {
                Reply::with(&Done {
                    message: message.to_owned(),
                })
            } else {
                Reply::err(message)
            };
            let _ = reply.try_send(r.to_line());
        }
    }

    /// Sync progress, for every client waiting on a command.
    pub(super) fn progress(&self, progress: &serde_json::Value) {
        let line = Line::Progress {
            progress: progress.clone(),
        }
        .to_line();
        for reply in self.waiting.values() {
            let _ = reply.try_send(line.clone());
        }
    }
}

/// The one id among `ids` that starts with `prefix` (any case), or why
/// there is none; `what` names the ids in the error.
fn unique_prefix(
    ids: impl IntoIterator<Item = String>,
    prefix: &str,
    what: &str,
) -> Result<String, String> {
    let prefix = prefix.to_ascii_lowercase();
    let mut ids: Vec<String> = ids
        .into_iter()
        .filter(|id| id.starts_with(&prefix))
        .collect();
    ids.sort();
    ids.dedup();
    match ids.len() {
        1 => Ok(ids.remove(0)),
        0 => Err(format!("no {what} id starts with {prefix:?}")),
        n => Err(format!(
            "{prefix:?} matches {n} {what}s; type more of the id"
        )),
    }
}

impl Driver {
    fn command(&mut self, now: Instant, cmd: Command, reply: Sender<String>) {
        self.command_for(now, cmd, Some(reply));
    }

    /// Runs a command; its outcome goes to `reply` when someone waits for it.
    pub(super) fn command_for(
        &mut self,
        now: Instant,
        cmd: Command,
        reply: Option<Sender<String>>,
    ) {
        let id = self.commands.start(reply);
        self.node.handle_command(now, id, cmd, &self.store);
    }

    pub(super) fn on_control(&mut self, now: Instant, req: Request, reply: Sender<String>) {
        let send = |r: Reply| {
            let _ = reply.try_send(r.to_line());
        };
        match req {
            Request::Status => send(Reply::with(&self.status(now))),
            Request::Whoami => send(Reply::with(&Whoami {
                node_id: self.started_info.node_id.clone(),
                port: self.started_info.port,
                discovery_port: self.started_info.discovery_port,
                pid: self.started_info.pid,
                repo: self.store.repo_id().to_owned(),
            })),
            Request::Peers { verbose } => send(Reply::with(&Peers {
                peers: self.peer_views(verbose),
            })),
            Request::Discovered => send(Reply::with(&self.discovered(now))),
            Request::Connect { addr } => match addr.parse::<SocketAddr>() {
                Ok(a) => self.command(now, Command::Connect(a), reply),
                Err(_) => send(Reply::err(format!("{addr:?} is not an ip:port address"))),
            },
            Request::Disconnect { peer } => match self.resolve_peer(&peer) {
                Ok(p) => self.command(now, Command::Disconnect { peer: p }, reply),
                Err(e) => send(Reply::err(e)),
            },
            Request::Sync { peer } => match peer.map(|p| self.resolve_peer(&p)).transpose() {
                Ok(p) => self.command(now, Command::Sync { peer: p }, reply),
                Err(e) => send(Reply::err(e)),
            },
            Request::Refetch { peer, missing } => {
                // `repair` just took damaged packs out: stop counting their objects.
                if let Err(e) = self.store.refresh() {
                    return send(Reply::err(e.to_string()));
                }
                match peer.map(|p| self.resolve_peer(&p)).transpose() {
                    Ok(peer) => self.command(now, Command::Refetch { peer, missing }, reply),
                    Err(e) => send(Reply::err(e)),
                }
            }
            Request::SyncStatus => send(Reply::with(&self.sync_status())),
            Request::Conflicts => send(Reply::with(&Conflicts {
                conflicts: self.node.conflicts(),
            })),
            Request::Events { follow } => {
                if let Some(count) = self.fanout.replay_events(reply.clone(), follow) {
                    send(Reply::with(&Count { count }));
                }
            }
            Request::Trace {
                peer,
                follow,
                payloads,
            } => {
                let (count, mode) = self
                    .fanout
                    .replay_trace(reply.clone(), peer, follow, payloads);
                self.node.set_trace(mode);
                if let Some(count) = count {
                    send(Reply::with(&Count { count }));
                }
            }
            Request::ReloadConfig => {
                self.config_watch.mark_applied();
                self.reload_config(now, Some(reply));
            }
            Request::LocalChanged => {
                if let Err(e) = self.store.refresh() {
                    send(Reply::err(e.to_string()));
                    return;
                }
                self.command(now, Command::LocalHeadsChanged, reply);
            }
            Request::Pending => send(Reply::with(&Pending {
                pending: self
                    .node
                    .pending()
                    .into_iter()
                    .map(|p| PendingKey {
                        id: p.id,
                        addr: p.addr.to_string(),
                        attempts: p.attempts,
                        last_seen_ago_ms: ago_ms(now, p.last),
                    })
                    .collect(),
                refused: self.node.stats().untrusted_refused,
            })),
            Request::Join { ticket } => match ivaldi_core::trust::Ticket::parse(&ticket) {
                Ok(t) => self.command(now, Command::Join(Box::new(t)), reply),
                Err(e) => send(Reply::err(e.to_string())),
            },
            Request::Topology => {
                send(Reply::with(&TopologyReply {
                    topology: self.node.topology(),
                    dot: self.node.topology_dot(),
                }));
            }
            Request::Route { peer } => {
                let peer = match self.resolve_peer(&peer) {
                    Ok(p) => p.to_hex(),
                    // Nodes heard of only through the mesh are matched too.
                    Err(_) => {
                        let known: Vec<String> = self
                            .node
                            .topology()
                            .map(|t| t.nodes.into_iter().map(|n| n.id).collect())
                            .unwrap_or_default();
                        match unique_prefix(known, &peer, "node") {
                            Ok(p) => p,
                            Err(e) => return send(Reply::err(e)),
                        }
                    }
                };
                let route = peer
                    .parse::<NodeId>()
                    .ok()
                    .and_then(|id| self.node.route_to(now, &id));
                match route {
                    Some((path, cost_micros)) => send(Reply::with(&Route {
                        hops: path.len().saturating_sub(1),
                        peer,
                        path,
                        cost_micros,
                    })),
                    None => send(Reply::err(format!(
                        "no route to {}",
                        ivaldi_core::node_id::short(&peer)
                    ))),
                }
            }
            Request::Stop => {
                send(Reply::with(&Done {
                    message: "stopping".into(),
                }));
                self.stop = Some("stop requested".into());
                // Kept so shutdown can wait until the reply has been written.
                self.stop_reply = Some(reply);
            }
        }
    }

    /// Expands a unique prefix of a connected (or known) peer's id.
    fn resolve_peer(&self, prefix: &str) -> Result<NodeId, String> {
        let ids = self
            .node
            .peers()
            .into_iter()
            .filter_map(|p| p.peer)
            .chain(self.node.peer_records().keys().copied())
            .map(|id| id.to_hex());
        unique_prefix(ids, prefix, "peer")?
            .parse()
            .map_err(|e: ivaldi_core::node_id::ParseNodeIdError| e.to_string())
    }

    fn peer_views(&self, verbose: bool) -> Vec<PeerView> {
        let now = self.now();
        self.node
            .peers()
            .into_iter()
            .filter(|p| verbose || p.peer.is_some())
            .map(|status| PeerView {
                last_seen_ago_ms: ago_ms(now, status.last_seen),
                status,
            })
            .collect()
    }

    fn discovered(&self, now: Instant) -> Discovered {
        let discovered = self
            .node
            .discovered()
            .into_iter()
            .map(|peer| DiscoveredView {
                last_seen_ago_ms: ago_ms(now, peer.last_seen),
                peer,
            })
            .collect();
        let stats = self.node.discovery_stats();
        Discovered { discovered, stats }
    }

    fn admission(&self) -> Admission {
        Admission {
            pool: self.node.admission_pool_len(),
            frame_budget_reserved: self.node.frame_budget_reserved(),
        }
    }

    fn sync_status(&self) -> SyncStatus {
        SyncStatus {
            peers: self.node.peer_records().clone(),
            stats: self.node.stats().clone(),
            admission: self.admission(),
        }
    }

    fn status(&mut self, now: Instant) -> Status {
        let started_unix = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cfg = self.node.config();
        let bandwidth = cfg.rates.clone();
        let (open, trusted_peers, auto_sync) = (
            cfg.access.open,
            cfg.access.trusted_peers.len(),
            cfg.sync.auto_sync,
        );
        let sync_interval = ivaldi_core::config::format_duration(cfg.sync.sync_interval);
        let routing_table_size = self.node.routing_table_size(now);
        let stats = self.node.stats();
        let mesh = MeshStatus {
            routing_table_size,
            relayed_bytes: stats.relayed_bytes,
            relayed_frames: stats.relayed_frames,
            relay_dropped: stats.relay_dropped,
            known_nodes: self.node.topology().map(|t| t.nodes.len()).unwrap_or(0),
            forged_advertisements: self.node.mesh_stats().map_or(0, |s| s.forged),
        };
        let events = self.fanout.stats();
        Status {
            node_id: self.started_info.node_id.clone(),
            pid: self.started_info.pid,
            port: self.started_info.port,
            discovery_port: self.started_info.discovery_port,
            repo: self.store.repo_id().to_owned(),
            started_unix,
            uptime_secs: now.saturating_since(Instant::ZERO).as_secs(),
            open,
            trusted_peers,
            pending: self.node.pending().len(),
            auto_sync,
            sync_interval,
            bandwidth,
            peers: self.peer_views(false),
            stats: self.node.stats().clone(),
            admission: self.admission(),
            conflicts: self.node.conflicts().len(),
            mesh,
            discovery: DiscoveryStatus {
                enabled: self.udp.is_some(),
                peers: self.node.discovered().len(),
                stats: self.node.discovery_stats(),
                targets: self.targets.iter().map(|t| t.to_string()).collect(),
            },
            events: EventCounts {
                dropped: events.dropped,
                emitted: events.emitted,
                subscribers: events.subscribers,
            },
        }
    }
}

/// How long ago `then` was, in milliseconds, on the node's clock.
fn ago_ms(now: Instant, then: Instant) -> u64 {
    u64::try_from(now.saturating_since(then).as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefix_resolves_to_one_id_in_any_case() {
        let known = ids(&["abc1", "abd2", "abc1"]);
        assert_eq!(
            unique_prefix(known.clone(), "ABD", "peer"),
            Ok("abd2".into())
        );
        assert_eq!(
            unique_prefix(known.clone(), "abc", "peer"),
            Ok("abc1".into())
        );
        assert!(unique_prefix(known.clone(), "ab", "peer").is_err_and(|e| e.contains("2 peers")));
        assert!(unique_prefix(known, "ff", "peer").is_err_and(|e| e.contains("no peer id")));
    }

    fn reply_of(line: &str) -> Reply {
        match serde_json::from_str::<Line>(line) {
            Ok(Line::Reply(r)) => r,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn finished_command_answers_its_client_once() {
        let mut c = Commands::default();
        let (tx, rx) = smol::channel::bounded(8);
        let id = c.start(Some(tx));
        let unwatched = c.start(None);
        assert_ne!(id, unwatched);
        c.progress(&json!({ "objects": 1 }));
        c.finish(unwatched, true, "nobody waits");
        c.finish(id, false, "peer gone");
        c.finish(id, true, "again");
        let lines: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(lines.len(), 2);
        assert!(matches!(
            serde_json::from_str::<Line>(&lines[0]),
            Ok(Line::Progress { .. })
        ));
        assert_eq!(reply_of(&lines[1]), Reply::err("peer gone"));
    }
}
