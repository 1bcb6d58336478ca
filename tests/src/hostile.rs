//! A crowd of hostile connections against a daemon, for admission tests and
//! benches: idle sockets, half-open Noise handshakes, a byte per second,
//! and oversized record headers, opened from many `127.1.x.y` source
//! addresses (each address is a different "host" to the daemon's per-IP
//! limits). Connections the daemon closes are reopened, so the pressure
//! lasts until the attack is stopped.
//!
//! Loopback only: every socket binds a 127.0.0.0/8 address and connects to
//! the daemon's loopback address.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a hostile connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Connects and says nothing.
    Idle,
    /// Sends the first 10 bytes of a 34-byte Noise message 1, then nothing.
    HalfOpen,
    /// Sends a Noise message 1 one byte per second.
    Slow,
    /// Announces a 65,535-byte Noise record, sends 8 KiB of it, then stalls.
    Oversized,
}

const KINDS: [Kind; 4] = [Kind::Idle, Kind::HalfOpen, Kind::Slow, Kind::Oversized];

/// What the attack saw.
#[derive(Clone, Debug, Default)]
pub struct AttackStats {
    /// Connections opened (the TCP handshake completed), reopenings included.
    pub opened: usize,
    /// Connections the daemon closed.
    pub closed_by_daemon: usize,
    /// Connects that failed.
    pub connect_failed: usize,
    /// Most connections open at once (as far as the attacker knows).
    pub peak_open: usize,
}

/// A running attack; stopped (and every socket closed) on drop.
pub struct Attack {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    stats: Arc<Mutex<AttackStats>>,
    thread: Option<JoinHandle<()>>,
}

struct Hostile {
    stream: TcpStream,
    kind: Kind,
    sent: usize,
    last_byte: Instant,
}

/// A TCP connection to `to` from `from` (any free port).
pub fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// The `i`th attacking source address: 127.1.(i / 200).(1 + i % 200).
pub fn source(i: usize) -> std::net::IpAddr {
    std::net::IpAddr::from([127, 1, (i / 200) as u8, 1 + (i % 200) as u8])
}

fn open(to: SocketAddr, kind: Kind, source_index: usize) -> std::io::Result<Hostile> {
    let mut stream = connect_from(source(source_index), to)?;
    stream.set_nodelay(true)?;
    let first: Vec<u8> = match kind {
        Kind::Idle | Kind::Slow => Vec::new(),
        Kind::HalfOpen => {
            let mut m = vec![0x00, 0x20];
            m.extend_from_slice(&[0x5a; 8]);
            m
        }
        Kind::Oversized => {
            let mut m = vec![0xFF, 0xFF];
            m.extend(std::iter::repeat_n(0xA5, 8 * 1024));
            m
        }
    };
    // The daemon may already have closed it: that shows up on the next poll.
    let _ = stream.write_all(&first);
    stream.set_nonblocking(true)?;
    Ok(Hostile {
        stream,
        kind,
        sent: first.len(),
        last_byte: Instant::now(),
    })
}

/// Whether the daemon closed `s` (reads and discards what it sent).
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

impl Attack {
    /// Opens `count` hostile connections to `to` (the kinds in turn) from
    /// `sources` addresses, and keeps reopening those the daemon closes, at
    /// most `reopen_per_sec` a second, until dropped.
    pub fn start(to: SocketAddr, count: usize, sources: usize, reopen_per_sec: usize) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let open_now = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Mutex::new(AttackStats::default()));
        let (stop2, open2, stats2) = (stop.clone(), open_now.clone(), stats.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut conns: Vec<Hostile> = Vec::new();
            let mut next = 0usize;
            let open_one = |conns: &mut Vec<Hostile>, next: &mut usize| {
                let kind = KINDS[*next % KINDS.len()];
                let src = *next % sources.max(1);
                *next += 1;
                match open(to, kind, src) {
                    Ok(h) => {
                        conns.push(h);
                        stats2.lock().unwrap().opened += 1;
                    }
                    Err(_) => stats2.lock().unwrap().connect_failed += 1,
                }
            };
            for _ in 0..count {
                open_one(&mut conns, &mut next);
            }
            let _ = ready_tx.send(());
            let tick = Duration::from_millis(100);
            let per_tick = (reopen_per_sec / 10).max(1);
            while !stop2.load(Ordering::Relaxed) {
                let before = conns.len();
                conns.retain_mut(|h| !closed(&mut h.stream));
                let gone = before - conns.len();
                for h in conns.iter_mut().filter(|h| h.kind == Kind::Slow) {
                    if h.sent < 34 && h.last_byte.elapsed() >= Duration::from_secs(1) {
                        let byte = if h.sent == 1 { 0x20 } else { 0x00 };
                        let _ = h.stream.write(&[byte]);
                        h.sent += 1;
                        h.last_byte = Instant::now();
                    }
                }
                {
                    let mut s = stats2.lock().unwrap();
                    s.closed_by_daemon += gone;
                    s.peak_open = s.peak_open.max(conns.len());
                }
                let missing = count.saturating_sub(conns.len()).min(per_tick);
                for _ in 0..missing {
                    open_one(&mut conns, &mut next);
                }
                open2.store(conns.len(), Ordering::Relaxed);
                std::thread::sleep(tick);
            }
        });
        // Wait until the first wave is out.
        let _ = ready_rx.recv_timeout(Duration::from_secs(60));
        Attack {
            stop,
            open: open_now,
            stats,
            thread: Some(thread),
        }
    }

    /// Hostile connections open now (as the attacker last saw them).
    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> AttackStats {
        self.stats.lock().unwrap().clone()
    }

    /// Stops the attack and closes every hostile socket.
    pub fn stop(mut self) -> AttackStats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The resident memory of process `pid` (`VmRSS`), in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:").map(|k| k * 1024)
}

/// The peak resident memory of process `pid` (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:").map(|k| k * 1024)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}
