//! A blocking, single-connection driver of the core, for commands that talk to
//! one peer and finish (`ivaldi p2p clone`): no daemon needed.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant as WallInstant};

use ivaldi_core::NodeId;
use ivaldi_core::TimelineName;
use ivaldi_core::config::NodeConfig;
use ivaldi_core::node::{CloseReason, Command, ConnId, Drive, Event, Node, Output, drain};
use ivaldi_core::noise::Keypair;
use ivaldi_core::store::{MemStore, Store, StoreError, StoreRequest, UpdateResult};
use ivaldi_core::time::Instant;
use ivaldi_core::trust::{Ticket, TrustedPeer};

use crate::clone_dir;
use crate::daemon::setup::{self, P2pPaths};
use crate::repo::{RepoError, Repository, ops, worktree};
use crate::store::{DiskStore, DiskWriter};

/// What a clone did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CloneReport {
    pub repo_id: String,
    pub peer: NodeId,
    pub timeline: Option<TimelineName>,
    pub objects: u64,
    pub bytes: u64,
}

enum StoreSide<'a> {
    Mem(&'a mut MemStore),
    Disk(&'a mut DiskStore, &'a mut DiskWriter),
}

impl StoreSide<'_> {
    fn read(&self) -> &dyn Store {
        match self {
            StoreSide::Mem(m) => &**m,
            StoreSide::Disk(d, _) => &**d,
        }
    }

    /// Performs one store request and returns a landed batch's results for
    /// the node. A failed write ends the one-shot operation instead: the
    /// daemon fails one sync and serves on, but a one-shot client has
    /// nothing left to do, and carrying on would report a clone that is
    /// missing what could not be written.
    fn write(&mut self, req: StoreRequest) -> Result<Option<(u64, Vec<UpdateResult>)>, StoreError> {
        match self {
            StoreSide::Mem(m) => {
                let landing = match &req {
                    StoreRequest::Land { batch, .. } => Some(*batch),
                    _ => None,
                };
                let results = m.apply(req)?;
                Ok(landing.map(|batch| (batch, results)))
            }
            StoreSide::Disk(d, w) => match w.apply(req) {
                None => Ok(None),
                Some((_, Err(e))) => Err(e),
                Some((batch, Ok(results))) => {
                    d.refresh()
                        .map_err(|e| StoreError::Failed(format!("cannot reload the store: {e}")))?;
                    Ok(Some((batch, results)))
                }
            },
        }
    }
}

/// Runs `cmd` on `node` over one TCP connection at a time (a join tries the
/// ticket's addresses in turn) until `done` returns a value for an event,
/// the command fails, or `limit` passes.
fn drive<T>(
    node: &mut Node,
    store: StoreSide<'_>,
    cmd: Command,
    limit: Duration,
    done: impl FnMut(&Node, &Event) -> Option<T>,
) -> Result<T, String> {
    let mut d = OneShot {
        node,
        store,
        origin: WallInstant::now(),
        stream: None,
        last_close: None,
        done,
        result: None,
    };
    d.node.start(d.now(), d.store.read());
    d.node.handle_command(d.now(), 1, cmd, d.store.read());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if d.origin.elapsed() > limit {
            return Err(format!("gave up after {} s", limit.as_secs()));
        }
        drain(&mut d);
        if let Some(result) = d.result.take() {
            return result;
        }
        let now = d.now();
        let Some((conn, s)) = d.stream.as_mut() else {
            return Err(d.last_close.take().map_or_else(
                || "no connection".to_owned(),
                |r| format!("connection closed: {r}"),
            ));
        };
        let conn = *conn;
        match s.read(&mut buf) {
            Ok(0) => {
                let reason = CloseReason::Transport("closed by peer".into());
                d.node.handle_closed(now, conn, &reason, d.store.read())
            }
            Ok(n) => d.node.handle_bytes(now, conn, &buf[..n], d.store.read()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                let reason = CloseReason::Transport(e.to_string());
                d.node.handle_closed(now, conn, &reason, d.store.read())
            }
        }
        let now = d.now();
        if d.node.poll_timeout().is_some_and(|t| t <= now) {
            d.node.handle_timeout(now, d.store.read());
        }
    }
}

/// The one-shot client as a [`Drive`]r: blocking sockets, one at a time.
struct OneShot<'a, T, F> {
    node: &'a mut Node,
    store: StoreSide<'a>,
    origin: WallInstant,
    stream: Option<(ConnId, TcpStream)>,
    last_close: Option<String>,
    done: F,
    /// How the run ends, once an output decided it. Outputs after that are
    /// not carried out: the client returns as soon as the drain does.
    result: Option<Result<T, String>>,
}

impl<T, F: FnMut(&Node, &Event) -> Option<T>> OneShot<'_, T, F> {
    fn dial(&mut self, conn: ConnId, addr: SocketAddr) {
        let s = match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => s,
            Err(e) => {
                // The node decides what a failed dial means (a join tries the
                // next address).
                let reason = CloseReason::Transport(format!("cannot connect to {addr}: {e}"));
                let now = self.now();
                self.node
                    .handle_closed(now, conn, &reason, self.store.read());
                return;
            }
        };
        if let Err(e) = s.set_read_timeout(Some(Duration::from_millis(20))) {
            self.result = Some(Err(e.to_string()));
            return;
        }
        let _ = s.set_nodelay(true);
        self.stream = Some((conn, s));
        let now = self.now();
        self.node.handle_connected(now, conn);
    }

    fn event(&mut self, e: Event) {
        if let Some(v) = (self.done)(self.node, &e) {
            self.result = Some(Ok(v));
            return;
        }
        match e {
            Event::CommandDone {
                ok: false, message, ..
            } => self.result = Some(Err(message)),
            Event::SyncFailed { reason, .. } => {
                self.result = Some(Err(format!("sync failed: {reason}")));
            }
            _ => {}
        }
    }
}

impl<T, F: FnMut(&Node, &Event) -> Option<T>> Drive for OneShot<'_, T, F> {
    fn parts(&mut self) -> Option<(&mut Node, &dyn Store)> {
        Some((&mut *self.node, self.store.read()))
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    fn perform(&mut self, out: Output) {
        if self.result.is_some() {
            return;
        }
        match out {
            Output::Dial { conn, addr } => self.dial(conn, addr),
            Output::Close { conn, reason } => {
                if let Some((c, s)) = self.stream.take() {
                    if c == conn {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    } else {
                        self.stream = Some((c, s));
                    }
                }
                let now = self.now();
                self.node
                    .handle_closed(now, conn, &reason, self.store.read());
                self.last_close = Some(reason.to_string());
            }
            // Discovery is off for one-shot commands.
            Output::Datagram { .. } => {}
            Output::Store(req) => match self.store.write(req) {
                Ok(Some((batch, results))) => {
                    let now = self.now();
                    self.node
                        .handle_store_done(now, batch, Ok(results), self.store.read());
                }
                Ok(None) => {}
                Err(e) => {
                    self.result = Some(Err(format!("cannot write to the repository: {e}")));
                }
            },
            Output::Event(e) => self.event(e),
        }
    }

    /// Writes block until the peer takes the bytes, so the connection always
    /// has room; a failed write ends the run.
    fn transmit(&mut self, conn: ConnId, bytes: &mut Vec<u8>) -> bool {
        if self.result.is_some() {
            return false;
        }
        let Some((c, s)) = self.stream.as_mut() else {
            return true;
        };
        if *c != conn {
            return true;
        }
        if let Err(e) = s.write_all(bytes) {
            self.result = Some(Err(format!("write: {e}")));
            return false;
        }
        true
    }
}

/// A one-shot client dials only the address it was given, so it accepts
/// whichever key answers there (trust on first use; the node at the other
/// end decides whether to let *us* in).
fn oneshot_config() -> NodeConfig {
    NodeConfig::default().with(|c| {
        c.connections.port = 0;
        c.discovery.enabled = false;
        c.connections.known_peers = Vec::new();
        c.access.open = ivaldi_core::trust::OpenMode::Write;
    })
}

/// Asks the peer at `addr` which repositories it serves.
pub fn probe(addr: SocketAddr) -> Result<(String, Vec<String>), String> {
    let seed = setup::random32().map_err(|e| e.to_string())?;
    let private = setup::random32().map_err(|e| e.to_string())?;
    let kp = Keypair::from_private(private).map_err(|e| e.to_string())?;
    let mut node = Node::new(oneshot_config(), kp, seed, Instant::ZERO);
    let mut mem = MemStore::new("");
    drive(
        &mut node,
        StoreSide::Mem(&mut mem),
        Command::Connect(addr),
        Duration::from_secs(20),
        |n, e| match e {
            Event::PeerConnected { conn, peer, .. } => n
                .peers()
                .into_iter()
                .find(|p| p.conn == *conn)
                .map(|p| (peer.to_hex(), p.remote_repos)),
            _ => None,
        },
    )
}

/// Clones the repository served at `addr` into `dir`: same repository id, every
/// timeline, and the working tree checked out (`main` if the peer has it).
///
/// The repository is built aside and moved into place only when complete
/// ([`clone_dir::clone_into`]), so a clone that fails or is killed leaves `dir`
/// as it was; only how the peer is reached belongs here.
pub fn clone(addr: SocketAddr, dir: &Path) -> Result<CloneReport, String> {
    let (_, repos) = probe(addr)?;
    let repo_id = match repos.as_slice() {
        [one] => one.clone(),
        [] => return Err(format!("the peer at {addr} serves no repository")),
        many => {
            return Err(format!(
                "the peer at {addr} serves {} repositories; cannot choose",
                many.len()
            ));
        }
    };
    clone_with(dir, &repo_id, oneshot_config(), Command::Connect(addr))
}

/// Clones with an invitation ticket: the repository it names, from the
/// inviter it names, which is trusted from then on (and remembered as a
/// known peer, so the new repository's daemon reconnects to it).
pub fn clone_ticket(ticket: &Ticket, dir: &Path) -> Result<CloneReport, String> {
    let cfg = oneshot_config().with(|c| {
        c.access.open = ivaldi_core::trust::OpenMode::Off;
        c.access.trusted_peers = vec![TrustedPeer::write(ticket.node_id())];
    });
    clone_with(
        dir,
        &ticket.repo,
        cfg,
        Command::Join(Box::new(ticket.clone())),
    )
}

/// Builds the clone aside and moves it into place only when complete
/// ([`clone_dir::clone_into`]).
fn clone_with(
    dir: &Path,
    repo_id: &str,
    cfg: NodeConfig,
    cmd: Command,
) -> Result<CloneReport, String> {
    clone_dir::clone_into(dir, |staging| fetch_into(staging, repo_id, cfg, cmd))
        .map_err(|e| e.to_string())
}

/// Makes a repository with `repo_id` in `root` and runs `cmd` (a connect or
/// a join) to pull everything the peer serves into it, then checks out its
/// main timeline.
fn fetch_into(
    root: &Path,
    repo_id: &str,
    cfg: NodeConfig,
    cmd: Command,
) -> Result<CloneReport, String> {
    let repo = Repository::forge_with_id(root, repo_id).map_err(|e| e.to_string())?;
    let repo_id = repo_id.to_owned();
    let root = repo.root().to_owned();
    drop(repo);
    let paths = P2pPaths::new(&root).map_err(|e| e.to_string())?;
    let kp = setup::load_or_create_identity(&paths).map_err(|e| e.to_string())?;
    let seed = setup::random32().map_err(|e| e.to_string())?;
    let mut store = DiskStore::open(&root).map_err(|e| e.to_string())?;
    let mut writer = DiskWriter::open(&root).map_err(|e| e.to_string())?;
    let mut node = Node::new(cfg, kp, seed, Instant::ZERO);
    let mut objects = 0;
    let mut bytes = 0;
    let mut peer = NodeId::default();
    let mut peer_addr = None;
    let result = drive(
        &mut node,
        StoreSide::Disk(&mut store, &mut writer),
        cmd,
        Duration::from_secs(24 * 3600),
        |_, e| match e {
            Event::SyncCompleted {
                objects: o,
                bytes: b,
                ..
            } => {
                objects += o;
                bytes += b;
                Some(())
            }
            Event::PeerConnected { peer: p, addr, .. } => {
                peer = *p;
                peer_addr = Some(*addr);
                None
            }
            _ => None,
        },
    );
    // A one-shot client leaves no logged heads behind (`repo::heads_log`).
    writer.settle_heads();
    result?;
    drop(store);
    drop(writer);
    // The peer we cloned from is trusted (the ticket named it, or we chose
    // its address) and is where this repository's daemon reconnects.
    setup::edit_config(&paths, |c| {
        if !c.node.access.trusted_peers.iter().any(|t| t.id == peer) {
            c.node.access.trusted_peers.push(TrustedPeer::write(peer));
        }
        if let Some(a) = peer_addr.map(|a| a.to_string())
            && !c.node.connections.known_peers.contains(&a)
        {
            c.node.connections.known_peers.push(a);
        }
    })
    .map_err(|e| e.to_string())?;
    let mut repo = Repository::open(&root).map_err(|e| e.to_string())?;
    let timelines = repo.timelines().map_err(|e| e.to_string())?;
    let chosen = TimelineName::new("main")
        .ok()
        .filter(|m| timelines.contains_key(m))
        .or_else(|| timelines.keys().next().cloned());
    if let Some(t) = &chosen {
        checkout_fresh(&mut repo, t).map_err(|e| e.to_string())?;
    }
    Ok(CloneReport {
        repo_id,
        peer,
        timeline: chosen,
        objects,
        bytes,
    })
}

fn checkout_fresh(repo: &mut Repository, t: &TimelineName) -> Result<(), RepoError> {
    let lock = repo.lock()?;
    let head = repo
        .timeline(t)?
        .ok_or_else(|| RepoError::UnknownTimeline(t.to_string()))?;
    let tree = repo.store.seal(&head)?.tree;
    let files = worktree::flatten(&repo.store, &tree)?;
    worktree::checkout(repo, &worktree::Flat::new(), &files)?;
    repo.set_head_timeline(&lock, t)?;
    repo.set_base(&lock, Some(&head))?;
    drop(lock);
    let _ = ops::status(repo);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivaldi_core::codec::{Codec, Stored};
    use ivaldi_core::object::{ObjectKind, blob_id, encode_blob};

    /// A received blob whose bytes do not hash to its id: the store refuses
    /// to write it.
    fn bad_put(batch: u64) -> StoreRequest {
        let encoding = encode_blob(b"what arrived");
        StoreRequest::Put {
            batch,
            objects: Vec::new(),
            blobs: vec![(
                blob_id(b"what was promised"),
                Stored {
                    kind: ObjectKind::Blob,
                    codec: Codec::Raw,
                    len: encoding.len() as u32,
                    base: None,
                    bytes: encoding,
                },
            )],
            forms: Vec::new(),
        }
    }

    #[test]
    fn a_failed_store_write_fails_the_operation() {
        let mut mem = MemStore::new("");
        let mut store = StoreSide::Mem(&mut mem);
        let err = store.write(bad_put(7));
        assert!(
            matches!(&err, Err(StoreError::Invalid(_))),
            "the write error reaches the caller: {err:?}"
        );
    }

    #[test]
    fn a_landing_hands_its_results_to_the_node_and_other_writes_nothing() {
        let mut mem = MemStore::new("");
        let mut store = StoreSide::Mem(&mut mem);
        let put = StoreRequest::Put {
            batch: 1,
            objects: Vec::new(),
            blobs: Vec::new(),
            forms: Vec::new(),
        };
        assert_eq!(store.write(put), Ok(None));
        let land = StoreRequest::Land {
            batch: 1,
            updates: Vec::new(),
        };
        assert_eq!(store.write(land), Ok(Some((1, Vec::new()))));
    }
}
