//! The counting proxy.

use std::io::{Read, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::LOCAL;

/// One read: direction (true = client → server) and size.
#[derive(Clone, Copy)]
pub struct Ev {
    pub up: bool,
    pub n: u64,
}

#[derive(Clone, Copy, Default)]
pub struct Traffic {
    pub up: u64,
    pub down: u64,
    pub round_trips: u64,
}

/// A TCP forwarder on 127.0.0.1 that logs each read's direction and size.
pub struct Proxy {
    pub port: u16,
    pub stop: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<Ev>>>,
    pub streams: Arc<Mutex<Vec<TcpStream>>>,
    pub accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind((LOCAL, 0)).expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2, streams2) = (stop.clone(), log.clone(), streams.clone());
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(SocketAddr::from((LOCAL, target))) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let Ok(mut s) = streams2.lock() {
                    s.extend(client.try_clone());
                    s.extend(server.try_clone());
                }
                let (la, lb) = (log2.clone(), log2.clone());
                std::thread::spawn(move || pump(client, server, true, &la));
                std::thread::spawn(move || pump(s2, c2, false, &lb));
            }
        });
        Proxy {
            port,
            stop,
            log,
            streams,
            accept: Some(accept),
        }
    }

    pub fn mark(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn since(&self, mark: usize) -> Traffic {
        let log = self.log.lock().expect("proxy log");
        let mut t = Traffic::default();
        let mut last: Option<bool> = None;
        for e in &log[mark.min(log.len())..] {
            if e.up {
                t.up += e.n;
            } else {
                t.down += e.n;
                if last == Some(true) {
                    t.round_trips += 1;
                }
            }
            last = Some(e.up);
        }
        t
    }
}

pub fn pump(mut from: TcpStream, mut to: TcpStream, up: bool, log: &Mutex<Vec<Ev>>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Logged before forwarding: the answer to these bytes cannot be
                // logged ahead of them.
                if let Ok(mut l) = log.lock() {
                    l.push(Ev { up, n: n as u64 });
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((LOCAL, self.port));
        if let Ok(s) = self.streams.lock() {
            for st in s.iter() {
                let _ = st.shutdown(Shutdown::Both);
            }
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
