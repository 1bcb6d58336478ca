//! The daemon: runs the protocol core on real sockets with smol.
//!
//! It is three parts around one [`Node`]:
//! - the socket driver (`driver.rs`): the event loop that owns the node, the
//!   socket and disk tasks that feed it, and the drain of its outputs;
//! - the control server (`server.rs`): the Unix socket the CLI talks to and the
//!   answer to each request;
//! - the event and trace fan-out (`fanout.rs`): the recent events and protocol
//!   messages, and the clients that follow them.
//!
//! `reload.rs` applies `config.json` and invitations to the running node; this
//! file starts everything and cleans up after it.

mod driver;
mod fanout;
pub mod invites;
mod reload;
mod server;
pub mod setup;
mod watch;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant, SystemTime};

use crate::config::{ConfigFile, DaemonConfig};
use ivaldi_core::node::{Node, TraceMode};
use ivaldi_core::store::StoreRequest;
use ivaldi_core::time::Instant;
use smol::net::TcpListener;
use smol::{Async, Timer};

use crate::control::Request;
use crate::store::{DiskStore, DiskWriter};
use driver::{Driver, Input, accept_loop, disk_loop, signal_loop, udp_loop};
pub use setup::{P2pPaths, SetupError};

/// How the daemon was started; printed by `ivaldi p2p start`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Started {
    pub node_id: String,
    pub port: u16,
    pub discovery_port: Option<u16>,
    pub pid: u32,
}

/// Holds the single-instance lock for the daemon's lifetime; the kernel releases
/// it if the daemon dies, so a crash never leaves a stale lock behind.
struct InstanceLock {
    _file: File,
}

fn take_instance_lock(paths: &P2pPaths) -> Result<InstanceLock, SetupError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.lock)
        .map_err(|source| SetupError::Io {
            path: paths.lock.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&paths.pid).unwrap_or_default();
            return Err(SetupError::AlreadyRunning {
                pid: pid.trim().to_owned(),
            });
        }
        Err(TryLockError::Error(source)) => {
            return Err(SetupError::Io {
                path: paths.lock.clone(),
                source,
            });
        }
    }
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    Ok(InstanceLock { _file: file })
}

/// Runs the daemon for the repository at `root` until it is told to stop.
/// `on_started` is called once everything is listening (the foreground command
/// prints it; the background parent waits for the socket).
pub fn run(root: &Path, on_started: impl FnOnce(&Started)) -> Result<(), SetupError> {
    let paths = P2pPaths::new(root)?;
    paths.ensure_dir()?;
    let _instance = take_instance_lock(&paths)?;
    // Anything left by a crashed daemon is stale now that we hold the lock.
    if paths.socket.exists() {
        tracing::info!(path = %paths.socket.display(), "removing stale control socket");
        let _ = fs::remove_file(&paths.socket);
    }
    let ConfigFile { node: cfg, daemon } = setup::effective_config(&paths)?;
    let keypair = setup::load_or_create_identity(&paths)?;
    let seed = setup::random32()?;
    let store = DiskStore::open(root).map_err(|e| SetupError::Other(e.to_string()))?;
    let mut writer = DiskWriter::open(root).map_err(|e| SetupError::Other(e.to_string()))?;
    writer.share_heads(store.heads_cache());
    let checkpoint = checkpoint_override();
    if let Some(bytes) = checkpoint {
        writer.set_checkpoint_bytes(bytes / 2);
    }
    smol::block_on(async move {
        let bind: IpAddr = daemon
            .bind_addr
            .parse()
            .map_err(|_| SetupError::Other(format!("bad bind_addr {}", daemon.bind_addr)))?;
        let listener = TcpListener::bind((bind, cfg.connections.port))
            .await
            .map_err(|e| {
                SetupError::Other(format!(
                    "cannot listen on {bind}:{}: {e}",
                    cfg.connections.port
                ))
            })?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| SetupError::Other(e.to_string()))?;
        let mut cfg = cfg;
        cfg.connections.port = port;
        let udp = if cfg.discovery.enabled {
            match bind_discovery(daemon.discovery_port) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(port = daemon.discovery_port, error = %e, "discovery disabled: cannot bind its UDP port");
                    None
                }
            }
        } else {
            None
        };
        let control = std::os::unix::net::UnixListener::bind(&paths.socket).map_err(|source| {
            SetupError::Io {
                path: paths.socket.clone(),
                source,
            }
        })?;
        fs::set_permissions(&paths.socket, fs::Permissions::from_mode(0o600)).map_err(
            |source| SetupError::Io {
                path: paths.socket.clone(),
                source,
            },
        )?;
        let control = Async::new(control).map_err(|e| SetupError::Other(e.to_string()))?;
        fs::write(&paths.pid, format!("{}\n", std::process::id())).map_err(|source| {
            SetupError::Io {
                path: paths.pid.clone(),
                source,
            }
        })?;

        // 64 inputs of at most 64 KiB each, and 8 store requests of about 1 MiB:
        // the daemon's buffering does not grow with the size of a transfer.
        let (inputs, rx) = smol::channel::bounded::<Input>(64);
        let (disk_tx, disk_rx) = std::sync::mpsc::sync_channel::<StoreRequest>(8);
        // Completions travel on their own unbounded channel: the driver may be
        // waiting for room in the disk queue, and the disk thread must never wait
        // for the driver in turn (that would deadlock).
        let (done_tx, done_rx) = smol::channel::unbounded::<Input>();
        let disk_thread = std::thread::Builder::new()
            .name("ivaldi-disk".into())
            .spawn(move || disk_loop(writer, disk_rx, done_tx))
            .map_err(|e| SetupError::Other(format!("cannot start the disk thread: {e}")))?;

        let origin = WallInstant::now();
        let mut node = Node::new(cfg.clone(), keypair, seed, Instant::ZERO);
        if let Some(bytes) = checkpoint {
            node.set_checkpoint_bytes(bytes);
        }
        // Message headers are always traced (a small record per frame), so
        // `p2p trace` can show what just happened without having been started first.
        node.set_trace(TraceMode::Headers);
        node.start(Instant::ZERO, &store);
        let started_info = Started {
            node_id: node.node_id().to_hex(),
            port,
            discovery_port: udp.as_ref().map(|_| daemon.discovery_port),
            pid: std::process::id(),
        };
        let _accept = smol::spawn(accept_loop(listener, inputs.clone()));
        let _control = smol::spawn(server::control_loop(control, inputs.clone()));
        let _udp = udp
            .clone()
            .map(|u| smol::spawn(udp_loop(u, inputs.clone())));
        let _signals = smol::spawn(signal_loop(inputs.clone()));
        let mut driver = Driver {
            node,
            store,
            origin,
            started: SystemTime::now(),
            conns: BTreeMap::new(),
            disk: disk_tx,
            inputs: inputs.clone(),
            commands: Default::default(),
            fanout: Default::default(),
            udp,
            started_info: started_info.clone(),
            stop: None,
            stop_reply: None,
            targets: Vec::new(),
            daemon_cfg: daemon.clone(),
            config_watch: watch::ConfigWatch::new(paths.config.clone(), WallInstant::now()),
        };
        driver.set_targets(&daemon);
        driver.load_invites();
        if cfg.access.open != ivaldi_core::trust::OpenMode::Off {
            tracing::warn!(open = ?cfg.access.open, "OPEN MODE: any node that finds this one may connect");
        }
        tracing::info!(node = %started_info.node_id, port, "daemon listening");
        on_started(&started_info);
        driver.run(rx, done_rx).await;
        // Let the `stop` caller read its reply before the socket disappears.
        if let Some(reply) = driver.stop_reply.take() {
            let deadline = WallInstant::now() + Duration::from_secs(2);
            while !reply.is_closed() && WallInstant::now() < deadline {
                Timer::after(Duration::from_millis(5)).await;
            }
        }
        // Shut down: no new writes; in-flight batches are dropped (their
        // temporary packs deleted), landed ones are already durable.
        drop(driver);
        let _ = disk_thread.join();
        let _ = fs::remove_file(&paths.socket);
        let _ = fs::remove_file(&paths.pid);
        tracing::info!("daemon stopped");
        Ok(())
    })
}

fn bind_discovery(port: u16) -> std::io::Result<Async<UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Several daemons on one host share the discovery port.
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_broadcast(true)?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    Async::new(UdpSocket::from(s))
}

/// `IVALDI_CHECKPOINT_MIB`: the size of the core's checkpoints of a pull, in
/// MiB (the disk writer's are half of it, as by default). Tests that kill a
/// daemon in the middle of a transfer use small ones; unset (or not a
/// positive number), the defaults apply.
fn checkpoint_override() -> Option<u64> {
    let mib: u64 = std::env::var("IVALDI_CHECKPOINT_MIB")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (mib > 0).then(|| mib.saturating_mul(1024 * 1024))
}

/// Whether the repository's daemon is up: its control socket answers.
pub fn is_running(paths: &P2pPaths) -> bool {
    crate::control::request(
        &paths.socket,
        &Request::Whoami,
        Some(Duration::from_secs(2)),
        |_| {},
    )
    .is_ok()
}

/// Where discovery announcements go: the configured addresses (or the
/// environment override), else every IPv4 interface's broadcast address.
/// Loopback is never chosen implicitly; tests name 127.255.255.255 explicitly.
pub fn discovery_targets(cfg: &DaemonConfig) -> Vec<SocketAddr> {
    if !cfg.discovery_addrs.is_empty() {
        return cfg
            .discovery_addrs
            .iter()
            .filter_map(|a| {
                a.parse::<SocketAddr>().ok().or_else(|| {
                    a.parse::<IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, cfg.discovery_port))
                })
            })
            .collect();
    }
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .filter_map(|i| match i.addr {
            if_addrs::IfAddr::V4(v4) => v4
                .broadcast
                .map(|b| SocketAddr::new(IpAddr::V4(b), cfg.discovery_port)),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}
