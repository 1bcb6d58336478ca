//! The daemon: runs the protocol core on real sockets with smol.
//!
//! One driver task owns the [`Node`] and the read side of the repository. Every
//! socket has its own reader and writer task that talk to the driver over
//! channels; store writes go to a dedicated disk thread, so an fsync never stalls
//! heartbeats. The driver feeds each input to the node and then drains its outputs,
//! exactly as `Node`'s documentation prescribes.

pub mod invites;
pub mod setup;
mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant, SystemTime};

use ivaldi_core::access::Access;
use ivaldi_core::config::Config;
use ivaldi_core::node::{Command, CommandId, ConnId, Event, Node, Output, TraceMode};
use ivaldi_core::store::{Store, StoreError, StoreRequest, UpdateResult};
use ivaldi_core::time::Instant;
use serde_json::json;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Async, Task, Timer};

use crate::control::{Line, Reply, Request};
use crate::store::{DiskStore, DiskWriter};
pub use setup::{P2pPaths, SetupError};

/// How the daemon was started; printed by `ivaldi p2p start`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Started {
    pub node_id: String,
    pub port: u16,
    pub discovery_port: Option<u16>,
    pub pid: u32,
}

enum Input {
    Accepted(TcpStream, SocketAddr),
    Connected(ConnId, std::io::Result<TcpStream>),
    Bytes(ConnId, Vec<u8>),
    ReadClosed(ConnId, String),
    Writable(ConnId),
    Datagram(SocketAddr, Vec<u8>),
    Control(Request, Sender<String>),
    StoreDone(u64, Result<Vec<UpdateResult>, StoreError>),
    Stop(String),
}

struct ConnIo {
    writer: Sender<Vec<u8>>,
    pending: Option<Vec<u8>>,
    /// How much the reader may read (download caps).
    gate: Arc<ReadGate>,
    _reader: Task<()>,
    _writer: Task<()>,
}

/// A socket reader's allowance under a download cap. The node decides it
/// (`Node::read_budget`); the driver publishes it here after every input,
/// and the reader stops reading while it is spent, so TCP flow control slows
/// the sender instead of the bytes piling up in memory.
struct ReadGate {
    /// Bytes the reader may still read (`usize::MAX`: no cap).
    allowance: std::sync::atomic::AtomicUsize,
    /// Wakes a reader waiting on a spent allowance.
    wake: Sender<()>,
    woken: Receiver<()>,
}

impl ReadGate {
    fn new() -> ReadGate {
        let (wake, woken) = smol::channel::bounded(1);
        ReadGate {
            allowance: std::sync::atomic::AtomicUsize::new(usize::MAX),
            wake,
            woken,
        }
    }

    fn set(&self, allowance: usize) {
        use std::sync::atomic::Ordering;
        let old = self.allowance.swap(allowance, Ordering::AcqRel);
        if old == 0 && allowance > 0 {
            let _ = self.wake.try_send(());
        }
    }

    /// Waits until reading is allowed; returns how many bytes may be read.
    async fn wait(&self) -> usize {
        use std::sync::atomic::Ordering;
        loop {
            let a = self.allowance.load(Ordering::Acquire);
            if a > 0 {
                return a;
            }
            if self.woken.recv().await.is_err() {
                return usize::MAX;
            }
        }
    }

    fn consume(&self, n: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .allowance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a != usize::MAX).then(|| a.saturating_sub(n))
            });
    }
}

/// Most events kept for `events` without `--follow`.
const RECENT_EVENTS: usize = 1000;
/// Events queued per `events --follow` subscriber before the oldest are dropped.
const SUBSCRIBER_QUEUE: usize = 256;
/// Most protocol messages kept for `trace` without `--follow`.
const RECENT_TRACE: usize = 512;

/// A `trace --follow` client: its peer filter and whether it wants payloads.
struct TraceFollower {
    reply: Sender<String>,
    peer: Option<String>,
    payloads: bool,
}

struct Driver {
    node: Node,
    store: DiskStore,
    origin: WallInstant,
    started: SystemTime,
    conns: BTreeMap<ConnId, ConnIo>,
    /// Bounded: when the disk falls behind, the driver waits here, stops reading
    /// sockets, and TCP slows the senders down, so memory stays bounded.
    disk: std::sync::mpsc::SyncSender<StoreRequest>,
    inputs: Sender<Input>,
    subscribers: Vec<Sender<String>>,
    waiting: BTreeMap<CommandId, Sender<String>>,
    next_cmd: CommandId,
    recent: VecDeque<serde_json::Value>,
    /// The last protocol messages (the node traces headers always; a cheap
    /// record per frame), for `trace`.
    recent_trace: VecDeque<serde_json::Value>,
    tracers: Vec<TraceFollower>,
    events_emitted: u64,
    events_dropped: u64,
    udp: Option<Arc<Async<UdpSocket>>>,
    started_info: Started,
    stop: Option<String>,
    stop_reply: Option<Sender<String>>,
    targets: Vec<SocketAddr>,
    /// Edits of config.json, applied without a CLI reload.
    config_watch: watch::ConfigWatch,
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
    let cfg = setup::effective_config(&paths)?;
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
        let bind: IpAddr = cfg
            .bind_addr
            .parse()
            .map_err(|_| SetupError::Other(format!("bad bind_addr {}", cfg.bind_addr)))?;
        let listener = TcpListener::bind((bind, cfg.port))
            .await
            .map_err(|e| SetupError::Other(format!("cannot listen on {bind}:{}: {e}", cfg.port)))?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| SetupError::Other(e.to_string()))?;
        let mut cfg = cfg;
        cfg.port = port;
        let udp = if cfg.discovery {
            match bind_discovery(cfg.discovery_port) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::warn!(port = cfg.discovery_port, error = %e, "discovery disabled: cannot bind its UDP port");
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
            node_id: node.node_id().to_owned(),
            port,
            discovery_port: udp.as_ref().map(|_| cfg.discovery_port),
            pid: std::process::id(),
        };
        let _accept = smol::spawn(accept_loop(listener, inputs.clone()));
        let _control = smol::spawn(control_loop(control, inputs.clone()));
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
            subscribers: Vec::new(),
            waiting: BTreeMap::new(),
            next_cmd: 1,
            recent: VecDeque::new(),
            recent_trace: VecDeque::new(),
            tracers: Vec::new(),
            events_emitted: 0,
            events_dropped: 0,
            udp,
            started_info: started_info.clone(),
            stop: None,
            stop_reply: None,
            targets: Vec::new(),
            config_watch: watch::ConfigWatch::new(paths.config.clone(), WallInstant::now()),
        };
        driver.set_targets(&cfg);
        driver.load_invites();
        if cfg.open != ivaldi_core::trust::OpenMode::Off {
            tracing::warn!(open = ?cfg.open, "OPEN MODE: any node that finds this one may connect");
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

fn disk_loop(
    mut writer: DiskWriter,
    rx: std::sync::mpsc::Receiver<StoreRequest>,
    out: Sender<Input>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let req = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(req) => req,
            // Idle: make the last batches' heads durable (`repo::heads_log`).
            Err(RecvTimeoutError::Timeout) => {
                writer.settle_heads();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Some((batch, result)) = writer.apply(req)
            && out.send_blocking(Input::StoreDone(batch, result)).is_err()
        {
            break;
        }
    }
    writer.settle_heads();
}

async fn accept_loop(listener: TcpListener, tx: Sender<Input>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                if tx.send(Input::Accepted(stream, addr)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn udp_loop(sock: Arc<Async<UdpSocket>>, tx: Sender<Input>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                // Oversized datagrams are truncated by the kernel to the buffer;
                // the discovery parser rejects them by their length.
                if tx
                    .try_send(Input::Datagram(from, buf[..n].to_vec()))
                    .is_err()
                    && tx.is_closed()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "discovery receive failed");
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn signal_loop(tx: Sender<Input>) {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let Ok(mut signals) = Signals::new([Signal::Term, Signal::Int]) else {
        return;
    };
    if let Some(Ok(sig)) = signals.next().await {
        let _ = tx.send(Input::Stop(format!("signal {sig:?}"))).await;
    }
}

async fn control_loop(listener: Async<std::os::unix::net::UnixListener>, tx: Sender<Input>) {
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
                    let _ = reply_tx.try_send(reply_line(&Reply::err(format!("bad request: {e}"))));
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

fn reply_line(r: &Reply) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| "{\"ok\":false,\"error\":\"serialisation\"}".into())
}

fn line_json(l: &Line) -> String {
    serde_json::to_string(l).unwrap_or_default()
}

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    async fn run(&mut self, rx: Receiver<Input>, done: Receiver<Input>) {
        self.node.handle_timeout(self.now(), &self.store);
        self.drain();
        while self.stop.is_none() {
            let deadline = self.node.poll_timeout();
            let wake = match deadline {
                Some(t) => self.origin + Duration::from_micros(t.as_micros()),
                None => WallInstant::now() + Duration::from_secs(3600),
            }
            .min(self.config_watch.deadline());
            let next = async { done.recv().await.ok() }
                .or(async { rx.recv().await.ok() })
                .or(async {
                    Timer::at(wake).await;
                    None
                })
                .await;
            match next {
                Some(input) => self.handle(input).await,
                None => {
                    if rx.is_closed() {
                        break;
                    }
                }
            }
            let now = self.now();
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now, &self.store);
            }
            self.watch_config(now);
            self.drain();
        }
        let reason = self.stop.clone().unwrap_or_default();
        tracing::info!(%reason, "stopping");
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_io(id);
        }
    }

    async fn handle(&mut self, input: Input) {
        let now = self.now();
        match input {
            Input::Accepted(stream, addr) => match self.node.handle_accepted(now, addr) {
                Some(conn) => self.attach(conn, stream),
                None => drop(stream),
            },
            Input::Connected(conn, Ok(stream)) => {
                self.attach(conn, stream);
                self.node.handle_connected(now, conn);
            }
            Input::Connected(conn, Err(e)) => {
                let reason = format!("dial failed: {e}");
                self.node.handle_closed(now, conn, &reason, &self.store)
            }
            Input::Bytes(conn, data) => self.node.handle_bytes(now, conn, &data, &self.store),
            Input::ReadClosed(conn, reason) => {
                if self.conns.remove(&conn).is_some() {
                    self.node.handle_closed(now, conn, &reason, &self.store);
                }
            }
            Input::Writable(conn) => {
                if let Some(io) = self.conns.get_mut(&conn) {
                    if let Some(p) = io.pending.take()
                        && let Err(e) = io.writer.try_send(p)
                    {
                        io.pending = Some(e.into_inner());
                        return;
                    }
                    self.node.set_blocked(conn, false);
                }
            }
            Input::Datagram(from, data) => self.on_datagram(now, from, &data),
            Input::Control(req, reply) => self.on_control(now, req, reply),
            Input::StoreDone(batch, result) => {
                if let Err(e) = self.store.refresh_landed() {
                    tracing::error!(error = %e, "cannot reload the object store after a landing");
                }
                self.node.handle_store_done(now, batch, result, &self.store);
            }
            Input::Stop(reason) => self.stop = Some(reason),
        }
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.node.handle_datagram(now, from, data);
    }

    fn attach(&mut self, conn: ConnId, stream: TcpStream) {
        let (wtx, wrx) = smol::channel::bounded::<Vec<u8>>(8);
        let gate = Arc::new(ReadGate::new());
        let reader = smol::spawn(read_loop(
            conn,
            stream.clone(),
            self.inputs.clone(),
            gate.clone(),
        ));
        let writer = smol::spawn(write_loop(conn, stream, wrx, self.inputs.clone()));
        self.conns.insert(
            conn,
            ConnIo {
                writer: wtx,
                pending: None,
                gate,
                _reader: reader,
                _writer: writer,
            },
        );
    }

    fn close_io(&mut self, conn: ConnId) {
        // Dropping the sender lets the writer flush what is queued and shut the
        // socket down; dropping the reader task stops reading at once.
        if let Some(io) = self.conns.remove(&conn) {
            let ConnIo {
                writer,
                pending,
                _reader,
                _writer,
                ..
            } = io;
            if let Some(p) = pending {
                let _ = writer.try_send(p);
            }
            drop(writer);
            _writer.detach();
            drop(_reader);
        }
    }

    fn drain(&mut self) {
        loop {
            let mut progress = false;
            while let Some(out) = self.node.poll_output() {
                progress = true;
                self.perform(out);
            }
            let now = self.now();
            let mut buf = Vec::new();
            while let Some(conn) = self.node.poll_transmit(now, &self.store, &mut buf) {
                progress = true;
                let data = std::mem::take(&mut buf);
                match self.conns.get_mut(&conn) {
                    Some(io) => {
                        if let Err(e) = io.writer.try_send(data) {
                            io.pending = Some(e.into_inner());
                            self.node.set_blocked(conn, true);
                        }
                    }
                    None => {
                        tracing::trace!(conn, "dropping bytes for a connection without a socket")
                    }
                }
            }
            if !progress {
                self.update_read_gates(now);
                return;
            }
        }
    }

    /// Publishes each connection's download allowance to its reader (see
    /// `ReadGate`); a paused reader resumes when a later tick refills it.
    fn update_read_gates(&mut self, now: Instant) {
        for (conn, io) in &self.conns {
            let budget = self.node.read_budget(*conn, now).unwrap_or(usize::MAX);
            io.gate.set(budget);
        }
    }

    fn perform(&mut self, out: Output) {
        let now = self.now();
        match out {
            Output::Dial { conn, addr } => {
                let tx = self.inputs.clone();
                let timeout = self.node.config().handshake_timeout;
                smol::spawn(async move {
                    let res = TcpStream::connect(addr)
                        .or(async {
                            Timer::after(timeout).await;
                            Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "connect timed out",
                            ))
                        })
                        .await;
                    if let Ok(s) = &res {
                        let _ = s.set_nodelay(true);
                    }
                    let _ = tx.send(Input::Connected(conn, res)).await;
                })
                .detach();
            }
            Output::Close { conn, reason } => {
                tracing::debug!(conn, %reason, "closing");
                self.close_io(conn);
                self.node.handle_closed(now, conn, &reason, &self.store);
            }
            Output::Datagram { to, data } => {
                if let Some(u) = &self.udp
                    && let Err(e) = u.get_ref().send_to(&data, to)
                {
                    tracing::debug!(%to, error = %e, "discovery send failed");
                }
            }
            Output::Store(req) => {
                if self.disk.send(req).is_err() {
                    tracing::error!("the disk thread has stopped");
                }
            }
            Output::Event(e) => self.on_event(e),
        }
    }

    fn on_event(&mut self, e: Event) {
        let value = serde_json::to_value(&e).unwrap_or_default();
        if let Event::Message(m) = &e {
            return self.on_trace(m.peer.as_deref(), value);
        }
        tracing::info!(event = %value, "event");
        if let Event::InviteRedeemed {
            peer,
            invite,
            access,
            uses_left,
        } = &e
        {
            self.record_redeemed(peer, invite, *access, *uses_left);
        }
        if let Event::CommandDone { id, ok, message } = &e
            && let Some(reply) = self.waiting.remove(id)
        {
            let r = if *ok {
                Reply::ok(json!({ "message": message }))
            } else {
                Reply::err(message.clone())
            };
            let _ = reply.try_send(reply_line(&r));
        }
        self.events_emitted += 1;
        if self.recent.len() >= RECENT_EVENTS {
            self.recent.pop_front();
            self.events_dropped += 1;
        }
        self.recent.push_back(value.clone());
        let line = line_json(&Line::Event {
            event: value.clone(),
        });
        self.subscribers.retain(|s| !s.is_closed());
        for s in &self.subscribers {
            if let Ok(Some(_)) = s.force_send(line.clone()) {
                self.events_dropped += 1;
            }
        }
        // Sync progress for a waiting `sync` command.
        if let Event::ObjectReceived { .. } = e {
            let progress = line_json(&Line::Progress { progress: value });
            for reply in self.waiting.values() {
                let _ = reply.try_send(progress.clone());
            }
        }
    }

    /// A protocol message passed: kept for `trace`, sent to followers whose
    /// filter it matches (payloads only to those that asked for them).
    fn on_trace(&mut self, peer: Option<&str>, value: serde_json::Value) {
        tracing::trace!(message = %value, "message");
        let mut headers = value.clone();
        if let Some(o) = headers.as_object_mut() {
            o.remove("payload");
        }
        if self.recent_trace.len() >= RECENT_TRACE {
            self.recent_trace.pop_front();
        }
        self.recent_trace.push_back(headers.clone());
        let before = self.tracers.len();
        self.tracers.retain(|t| !t.reply.is_closed());
        let with = line_json(&Line::Event { event: value });
        let without = line_json(&Line::Event { event: headers });
        for t in &self.tracers {
            let wanted = t
                .peer
                .as_deref()
                .is_none_or(|p| peer.is_some_and(|x| x.starts_with(p)));
            if wanted {
                let line = if t.payloads { &with } else { &without };
                let _ = t.reply.force_send(line.clone());
            }
        }
        if self.tracers.len() != before {
            self.update_trace_mode();
        }
    }

    /// Payloads are serialised only while some follower wants them.
    fn update_trace_mode(&mut self) {
        let mode = if self.tracers.iter().any(|t| t.payloads) {
            TraceMode::Payloads
        } else {
            TraceMode::Headers
        };
        self.node.set_trace(mode);
    }

    fn command(&mut self, now: Instant, cmd: Command, reply: Sender<String>) {
        self.command_for(now, cmd, Some(reply));
    }

    /// Runs a command; its outcome goes to `reply` when someone waits for it.
    fn command_for(&mut self, now: Instant, cmd: Command, reply: Option<Sender<String>>) {
        let id = self.next_cmd;
        self.next_cmd += 1;
        if let Some(reply) = reply {
            self.waiting.insert(id, reply);
        }
        self.node.handle_command(now, id, cmd, &self.store);
    }

    /// Applies config.json as it is now, for `ivaldi p2p config` (which waits
    /// on `reply`) and for an edit of the file. A file that does not validate
    /// changes nothing: the running configuration stays, and the reason is
    /// logged and sent to the waiting CLI.
    fn reload_config(&mut self, now: Instant, reply: Option<Sender<String>>) {
        let loaded =
            P2pPaths::new(self.store.repo().root()).and_then(|p| setup::effective_config(&p));
        let mut cfg = match loaded {
            Ok(cfg) => cfg,
            Err(e) => {
                tracing::warn!(error = %e, "configuration refused; keeping the running one");
                if let Some(reply) = reply {
                    let _ = reply.try_send(reply_line(&Reply::err(format!(
                        "the running daemon refused the configuration and keeps its old one: {e}"
                    ))));
                }
                return;
            }
        };
        self.load_invites();
        // The listening port cannot change without a restart.
        cfg.port = self.started_info.port;
        let old = self.node.config();
        for (key, changed) in [
            ("bind_addr", cfg.bind_addr != old.bind_addr),
            ("discovery_port", cfg.discovery_port != old.discovery_port),
            ("discovery", cfg.discovery != old.discovery),
            ("log_level", cfg.log_level != old.log_level),
            ("data_dir", cfg.data_dir != old.data_dir),
        ] {
            if changed {
                tracing::warn!(
                    key,
                    "this setting changed; it takes effect at the next restart"
                );
            }
        }
        self.set_targets(&cfg);
        self.command_for(now, Command::SetConfig(Box::new(cfg)), reply);
    }

    /// Applies an edit of config.json once the watcher sees one.
    fn watch_config(&mut self, now: Instant) {
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

    fn on_control(&mut self, now: Instant, req: Request, reply: Sender<String>) {
        let send = |r: Reply| {
            let _ = reply.try_send(reply_line(&r));
        };
        match req {
            Request::Status => send(Reply::ok(self.status_json(now))),
            Request::Whoami => send(Reply::ok(json!({
                "node_id": self.started_info.node_id,
                "port": self.started_info.port,
                "discovery_port": self.started_info.discovery_port,
                "pid": self.started_info.pid,
                "repo": self.store.repo_id(),
            }))),
            Request::Peers { verbose } => send(Reply::ok(self.peers_json(verbose))),
            Request::Discovered => {
                let list: Vec<serde_json::Value> = self
                    .node
                    .discovered()
                    .into_iter()
                    .map(|p| {
                        let mut v = serde_json::to_value(&p).unwrap_or_default();
                        v["last_seen_ago_ms"] =
                            json!(now.saturating_since(p.last_seen).as_millis() as u64);
                        v
                    })
                    .collect();
                send(Reply::ok(
                    json!({ "discovered": list, "stats": self.node.discovery_stats() }),
                ));
            }
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
            Request::SyncStatus => send(Reply::ok(json!({
                "peers": self.node.peer_records(),
                "stats": self.node.stats(),
            "admission": {
                "pool": self.node.admission_pool_len(),
                "frame_budget_reserved": self.node.frame_budget_reserved(),
            },
            }))),
            Request::Conflicts => send(Reply::ok(json!({ "conflicts": self.node.conflicts() }))),
            Request::Events { follow } => {
                // The reply queue holds SUBSCRIBER_QUEUE lines: the newest
                // events that fit, and room for the final reply.
                let skip = self.recent.len().saturating_sub(SUBSCRIBER_QUEUE - 1);
                for e in self.recent.iter().skip(skip) {
                    let _ = reply.try_send(line_json(&Line::Event { event: e.clone() }));
                }
                if follow {
                    self.subscribers.push(reply);
                } else {
                    send(Reply::ok(json!({ "count": self.recent.len() })));
                }
            }
            Request::Trace {
                peer,
                follow,
                payloads,
            } => {
                let peer = peer.map(|p| p.to_ascii_lowercase());
                let matching: Vec<&serde_json::Value> = self
                    .recent_trace
                    .iter()
                    .filter(|m| {
                        peer.as_deref()
                            .is_none_or(|p| m["peer"].as_str().is_some_and(|x| x.starts_with(p)))
                    })
                    .collect();
                let skip = matching.len().saturating_sub(SUBSCRIBER_QUEUE - 1);
                for m in matching.into_iter().skip(skip) {
                    let _ = reply.try_send(line_json(&Line::Event { event: m.clone() }));
                }
                if follow {
                    self.tracers.push(TraceFollower {
                        reply,
                        peer,
                        payloads,
                    });
                    self.update_trace_mode();
                } else {
                    send(Reply::ok(json!({ "count": self.recent_trace.len() })));
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
            Request::Pending => send(Reply::ok(json!({
                "pending": self.node.pending().into_iter().map(|p| json!({
                    "id": p.id,
                    "addr": p.addr.to_string(),
                    "attempts": p.attempts,
                    "last_seen_ago_ms": now.saturating_since(p.last).as_millis() as u64,
                })).collect::<Vec<_>>(),
                "refused": self.node.stats().untrusted_refused,
            }))),
            Request::Join { ticket } => match ivaldi_core::trust::Ticket::parse(&ticket) {
                Ok(t) => self.command(now, Command::Join(Box::new(t)), reply),
                Err(e) => send(Reply::err(e.to_string())),
            },
            Request::Topology => {
                let graph = self.node.topology();
                let dot = self.node.topology_dot();
                send(Reply::ok(json!({ "topology": graph, "dot": dot })));
            }
            Request::Route { peer } => {
                let peer = match self.resolve_peer(&peer) {
                    Ok(p) => p,
                    Err(_) => {
                        // Nodes heard of only through the mesh are matched too.
                        let known: Vec<String> = self
                            .node
                            .topology()
                            .map(|t| t.nodes.into_iter().map(|n| n.id).collect())
                            .unwrap_or_default();
                        let hits: Vec<String> = known
                            .into_iter()
                            .filter(|n| n.starts_with(&peer.to_ascii_lowercase()))
                            .collect();
                        match hits.as_slice() {
                            [one] => one.clone(),
                            [] => {
                                return send(Reply::err(format!(
                                    "no node id starts with {peer:?}"
                                )));
                            }
                            _ => {
                                return send(Reply::err(format!("{peer:?} matches several nodes")));
                            }
                        }
                    }
                };
                match self.node.route_to(now, &peer) {
                    Some((path, cost)) => send(Reply::ok(
                        json!({ "peer": peer, "path": path, "cost_micros": cost, "hops": path.len().saturating_sub(1) }),
                    )),
                    None => send(Reply::err(format!(
                        "no route to {}",
                        &peer[..12.min(peer.len())]
                    ))),
                }
            }
            Request::Stop => {
                send(Reply::ok(json!({ "message": "stopping" })));
                self.stop = Some("stop requested".into());
                // Kept so shutdown can wait until the reply has been written.
                self.stop_reply = Some(reply);
            }
        }
    }

    fn set_targets(&mut self, cfg: &Config) {
        self.targets = if self.udp.is_some() {
            discovery_targets(cfg)
        } else {
            Vec::new()
        };
        tracing::info!(targets = ?self.targets, "discovery targets");
        let now = self.now();
        self.node.set_discovery_targets(now, self.targets.clone());
    }

    /// Expands a unique prefix of a connected (or known) peer's id.
    fn resolve_peer(&self, prefix: &str) -> Result<String, String> {
        let prefix = prefix.to_ascii_lowercase();
        let mut ids: Vec<String> = self
            .node
            .peers()
            .into_iter()
            .filter_map(|p| p.peer)
            .chain(self.node.peer_records().keys().cloned())
            .filter(|id| id.starts_with(&prefix))
            .collect();
        ids.sort();
        ids.dedup();
        match ids.len() {
            1 => Ok(ids.remove(0)),
            0 => Err(format!("no peer id starts with {prefix:?}")),
            n => Err(format!("{prefix:?} matches {n} peers; type more of the id")),
        }
    }

    fn peers_json(&self, verbose: bool) -> serde_json::Value {
        let now = self.now();
        let peers: Vec<serde_json::Value> = self
            .node
            .peers()
            .into_iter()
            .filter(|p| verbose || p.peer.is_some())
            .map(|p| {
                let mut v = serde_json::to_value(&p).unwrap_or_default();
                v["last_seen_ago_ms"] = json!(now.saturating_since(p.last_seen).as_millis() as u64);
                v
            })
            .collect();
        json!({ "peers": peers })
    }

    /// Hands the open invitations on disk to the core.
    fn load_invites(&mut self) {
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
    fn record_redeemed(&mut self, peer: &str, invite: &str, access: Access, uses_left: u32) {
        let result = P2pPaths::new(self.store.repo().root())
            .map_err(|e| e.to_string())
            .and_then(|p| {
                invites::spend(&p, invite, uses_left).map_err(|e| e.to_string())?;
                setup::edit_config(&p, |c| {
                    c.trusted_peers.retain(|t| t.id != peer);
                    c.trusted_peers.push(ivaldi_core::trust::TrustedPeer {
                        id: peer.to_owned(),
                        access,
                    });
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
                peer,
                error = %e,
                "cannot record the peer admitted by invitation; it stays trusted until the next configuration change"
            ),
        }
    }

    fn status_json(&mut self, now: Instant) -> serde_json::Value {
        let uptime = now.saturating_since(Instant::ZERO);
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        json!({
            "node_id": self.started_info.node_id,
            "pid": self.started_info.pid,
            "port": self.started_info.port,
            "discovery_port": self.started_info.discovery_port,
            "repo": self.store.repo_id(),
            "started_unix": started,
            "uptime_secs": uptime.as_secs(),
            "open": self.node.config().open,
            "trusted_peers": self.node.config().trusted_peers.len(),
            "pending": self.node.pending().len(),
            "auto_sync": self.node.config().auto_sync,
            "sync_interval": ivaldi_core::config::format_duration(self.node.config().sync_interval),
            "bandwidth": {
                "upload_rate": self.node.config().upload_rate,
                "download_rate": self.node.config().download_rate,
                "peer_upload_rate": self.node.config().peer_upload_rate,
                "peer_download_rate": self.node.config().peer_download_rate,
                "peer_rates": self.node.config().peer_rates,
            },
            "peers": self.peers_json(false)["peers"],
            "stats": self.node.stats(),
            "admission": {
                "pool": self.node.admission_pool_len(),
                "frame_budget_reserved": self.node.frame_budget_reserved(),
            },
                        "conflicts": self.node.conflicts().len(),
            "mesh": {
                "routing_table_size": self.node.routing_table_size(now),
                "relayed_bytes": self.node.stats().relayed_bytes,
                "relayed_frames": self.node.stats().relayed_frames,
                "relay_dropped": self.node.stats().relay_dropped,
                "known_nodes": self.node.topology().map(|t| t.nodes.len()).unwrap_or(0),
                "forged_advertisements": self.node.mesh_stats().map_or(0, |s| s.forged),
            },
            "discovery": { "enabled": self.udp.is_some(), "targets": self.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(), "peers": self.node.discovered().len(), "stats": self.node.discovery_stats() },
            "events": { "emitted": self.events_emitted, "dropped": self.events_dropped, "subscribers": self.subscribers.len() },
        })
    }
}

/// A reader's buffer starts this small and grows (to `READ_BUF_MAX`) only
/// while reads fill it, so hundreds of idle or hostile connections waiting in
/// the admission pool cost little memory.
const READ_BUF_MIN: usize = 4 * 1024;
const READ_BUF_MAX: usize = 64 * 1024;

async fn read_loop(conn: ConnId, mut stream: TcpStream, tx: Sender<Input>, gate: Arc<ReadGate>) {
    let mut buf = vec![0u8; READ_BUF_MIN];
    loop {
        let allowed = gate.wait().await.min(buf.len());
        let read = stream.read(&mut buf[..allowed]).await;
        if matches!(read, Ok(n) if n == buf.len() && n < READ_BUF_MAX) {
            buf.resize(READ_BUF_MAX, 0);
        }
        match read {
            Ok(0) => {
                let _ = tx
                    .send(Input::ReadClosed(conn, "closed by peer".into()))
                    .await;
                return;
            }
            Ok(n) => {
                gate.consume(n);
                if tx
                    .send(Input::Bytes(conn, buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Input::ReadClosed(conn, e.to_string())).await;
                return;
            }
        }
    }
}

async fn write_loop(conn: ConnId, mut stream: TcpStream, rx: Receiver<Vec<u8>>, tx: Sender<Input>) {
    while let Ok(data) = rx.recv().await {
        if let Err(e) = stream.write_all(&data).await {
            let _ = tx
                .send(Input::ReadClosed(conn, format!("write failed: {e}")))
                .await;
            return;
        }
        if rx.is_empty() && tx.send(Input::Writable(conn)).await.is_err() {
            return;
        }
    }
    let _ = stream.flush().await;
    let _ = stream.shutdown(std::net::Shutdown::Write);
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
pub fn discovery_targets(cfg: &Config) -> Vec<SocketAddr> {
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
