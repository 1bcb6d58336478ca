//! The socket driver: the one task that owns the [`Node`] and feeds it.
//!
//! Every socket has its own reader and writer task that talk to the driver
//! over channels; store writes go to a dedicated disk thread, so an fsync
//! never stalls heartbeats. The driver takes one [`Input`] at a time, hands it
//! to the node, and then drains the node's outputs ([`Driver::drain`]) exactly
//! as `Node`'s documentation prescribes, through the core's one drain loop.
//! Everything that calls the node lives in [`Driver::handle`] and the
//! driver's [`Drive`] impl, so a change of the node's API lands here.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant, SystemTime};

use ivaldi_core::node::{CloseReason, ConnId, Drive, Node, Output};
use ivaldi_core::store::{Store, StoreError, StoreRequest, UpdateResult};
use ivaldi_core::time::Instant;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Async, Task, Timer};

use super::fanout::Fanout;
use super::server::Commands;
use super::{Started, watch};
use crate::control::Request;
use crate::store::{DiskStore, DiskWriter};

/// Everything the driver waits for, from the socket tasks, the control
/// server, the disk thread and the signal handler.
pub(super) enum Input {
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

/// A connection's socket tasks, as the driver sees them.
pub(super) struct ConnIo {
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

/// The driver's state: the node, the read side of the repository, and the
/// I/O and clients around them.
pub(super) struct Driver {
    pub(super) node: Node,
    pub(super) store: DiskStore,
    pub(super) origin: WallInstant,
    pub(super) started: SystemTime,
    pub(super) conns: BTreeMap<ConnId, ConnIo>,
    /// Bounded: when the disk falls behind, the driver waits here, stops reading
    /// sockets, and TCP slows the senders down, so memory stays bounded.
    pub(super) disk: std::sync::mpsc::SyncSender<StoreRequest>,
    pub(super) inputs: Sender<Input>,
    pub(super) commands: Commands,
    pub(super) fanout: Fanout,
    pub(super) udp: Option<Arc<Async<UdpSocket>>>,
    pub(super) started_info: Started,
    pub(super) stop: Option<String>,
    /// Kept so shutdown can wait until the `stop` reply has been written.
    pub(super) stop_reply: Option<Sender<String>>,
    pub(super) targets: Vec<SocketAddr>,
    /// The daemon's own settings this run started with: a change of most of
    /// them needs a restart, which a reload reports.
    pub(super) daemon_cfg: crate::config::DaemonConfig,
    /// Edits of config.json, applied without a CLI reload.
    pub(super) config_watch: watch::ConfigWatch,
}

/// Starts the disk thread's work: applies store requests in order and
/// reports each finished batch back to the driver.
pub(super) fn disk_loop(
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

pub(super) async fn accept_loop(listener: TcpListener, tx: Sender<Input>) {
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

pub(super) async fn udp_loop(sock: Arc<Async<UdpSocket>>, tx: Sender<Input>) {
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

pub(super) async fn signal_loop(tx: Sender<Input>) {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    let Ok(mut signals) = Signals::new([Signal::Term, Signal::Int]) else {
        return;
    };
    if let Some(Ok(sig)) = signals.next().await {
        let _ = tx.send(Input::Stop(format!("signal {sig:?}"))).await;
    }
}

impl Driver {
    pub(super) fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    pub(super) async fn run(&mut self, rx: Receiver<Input>, done: Receiver<Input>) {
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
                let reason = CloseReason::Transport(format!("dial failed: {e}"));
                self.node.handle_closed(now, conn, &reason, &self.store)
            }
            Input::Bytes(conn, data) => self.node.handle_bytes(now, conn, &data, &self.store),
            Input::ReadClosed(conn, reason) => {
                if self.conns.remove(&conn).is_some() {
                    let reason = CloseReason::Transport(reason);
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
            Input::Datagram(from, data) => self.node.handle_datagram(now, from, &data),
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

    /// The node's drain (`ivaldi_core::node::drain`), then the readers'
    /// allowances, which the drained input may have changed.
    fn drain(&mut self) {
        ivaldi_core::node::drain(self);
        let now = self.now();
        self.update_read_gates(now);
    }

    /// Publishes each connection's download allowance to its reader (see
    /// `ReadGate`); a paused reader resumes when a later tick refills it.
    fn update_read_gates(&mut self, now: Instant) {
        for (conn, io) in &self.conns {
            let budget = self.node.read_budget(*conn, now).unwrap_or(usize::MAX);
            io.gate.set(budget);
        }
    }
}

/// The daemon's side of the drain: outputs become socket, disk and control
/// work; bytes go to the connection's writer task, whose full queue blocks
/// the connection until `Input::Writable`.
impl Drive for Driver {
    fn parts(&mut self) -> Option<(&mut Node, &dyn Store)> {
        Some((&mut self.node, &self.store))
    }

    fn now(&self) -> Instant {
        Driver::now(self)
    }

    fn perform(&mut self, out: Output) {
        let now = self.now();
        match out {
            Output::Dial { conn, addr } => {
                let tx = self.inputs.clone();
                let timeout = self.node.config().connections.handshake_timeout;
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

    fn transmit(&mut self, conn: ConnId, bytes: &mut Vec<u8>) -> bool {
        let Some(io) = self.conns.get_mut(&conn) else {
            tracing::trace!(conn, "dropping bytes for a connection without a socket");
            return true;
        };
        match io.writer.try_send(std::mem::take(bytes)) {
            Ok(()) => true,
            Err(e) => {
                io.pending = Some(e.into_inner());
                false
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_gate_pauses_a_spent_reader_until_refilled() {
        let gate = Arc::new(ReadGate::new());
        assert_eq!(
            smol::block_on(gate.wait()),
            usize::MAX,
            "no cap: read freely"
        );
        gate.consume(1 << 20);
        assert_eq!(
            smol::block_on(gate.wait()),
            usize::MAX,
            "no cap is never spent"
        );

        gate.set(100);
        gate.consume(60);
        assert_eq!(smol::block_on(gate.wait()), 40);
        gate.consume(60);
        let waiter = {
            let gate = gate.clone();
            smol::spawn(async move { gate.wait().await })
        };
        smol::block_on(async {
            Timer::after(Duration::from_millis(20)).await;
            assert!(!waiter.is_finished(), "a spent reader waits");
            gate.set(10);
            assert_eq!(waiter.await, 10);
        });
    }
}
