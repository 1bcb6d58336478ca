//! The log of `ivaldi p2p clone`, kept off the terminal.
//!
//! A clone runs a short-lived node whose log lines (connections, the mesh,
//! sync) mean nothing to the person cloning, so they are collected in memory
//! and written to the new repository's `.ivaldi/p2p/clone.log` when the clone
//! is complete. If the clone fails, they are printed after the error, where
//! they may help.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this process's log to the in-memory buffer (info and up, or `RUST_LOG`).
pub(crate) fn install() {
    let buf = LOG.get_or_init(Arc::default).clone();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .with_writer(move || Buffer(buf.clone()))
        .init();
}

fn take() -> Vec<u8> {
    LOG.get()
        .and_then(|l| l.lock().ok().map(|mut b| std::mem::take(&mut *b)))
        .unwrap_or_default()
}

/// Writes the collected log into the finished clone at `root`.
pub(crate) fn save(root: &Path) {
    let log = take();
    let path = root.join(".ivaldi").join("p2p").join("clone.log");
    if let Err(e) = std::fs::write(&path, &log) {
        eprintln!("note: could not write {}: {e}", path.display());
    }
}

/// Prints the collected log after a failed clone.
pub(crate) fn print_after_failure() {
    let log = take();
    if !log.is_empty() {
        eprintln!("log of the failed clone:");
        let _ = std::io::stderr().write_all(&log);
    }
}
