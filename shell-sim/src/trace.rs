//! The trace: one line per node event, hashed as it is written.
//!
//! Two runs of one configuration must produce the same trace, byte for byte; the
//! determinism test compares the BLAKE3 hashes of two runs' traces.

use std::io::Write;

use ivaldi_core::NodeId;
use ivaldi_core::id::ObjectId;
use ivaldi_core::node::Event;

use crate::config::TraceMode;

/// Formats virtual microseconds as `seconds.millis`.
pub fn fmt_time(us: u64) -> String {
    format!("{}.{:03}s", us / 1_000_000, (us % 1_000_000) / 1000)
}

/// The trace writer.
pub struct Trace {
    mode: TraceMode,
    hasher: blake3::Hasher,
    lines: u64,
    out: Option<std::io::BufWriter<std::io::Stdout>>,
}

impl Trace {
    pub fn new(mode: TraceMode) -> Trace {
        Trace {
            mode,
            hasher: blake3::Hasher::new(),
            lines: 0,
            out: (mode == TraceMode::Print).then(|| std::io::BufWriter::new(std::io::stdout())),
        }
    }

    /// Whether lines are formatted at all.
    pub fn enabled(&self) -> bool {
        self.mode != TraceMode::Off
    }

    /// Writes one line: time, node (or `-` for the network), text.
    pub fn line(&mut self, now: u64, node: Option<usize>, text: &str) {
        if !self.enabled() {
            return;
        }
        let who = match node {
            Some(n) => format!("n{n}"),
            None => "--".to_owned(),
        };
        let line = format!("{:>11} {who:<5} {text}\n", fmt_time(now));
        self.hasher.update(line.as_bytes());
        self.lines += 1;
        if let Some(out) = self.out.as_mut() {
            // A closed stdout (a pipe into `head`) only stops the printing.
            if out.write_all(line.as_bytes()).is_err() {
                self.out = None;
            }
        }
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The hash of every line so far, in hex.
    pub fn hash(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    /// Flushes printed lines.
    pub fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            let _ = out.flush();
        }
    }
}

/// One node event as a trace line; `name` gives a peer's short name.
pub(crate) fn describe(e: &Event, name: &dyn Fn(&NodeId) -> String) -> String {
    let short = |o: &Option<ObjectId>| o.map_or("none".to_owned(), |id| id.short());
    match e {
        Event::PeerConnected {
            peer,
            conn,
            direction,
            ..
        } => format!("connected {} conn {conn} {direction:?}", name(peer)),
        Event::PeerDisconnected { peer, conn, reason } => format!(
            "disconnected {} conn {conn}: {reason}",
            peer.as_ref().map_or("?".to_owned(), name)
        ),
        Event::TimelineUpdated {
            timeline,
            old,
            new,
            peer,
        } => format!(
            "timeline {timeline} {} -> {} from {}",
            short(old),
            new.short(),
            name(peer)
        ),
        Event::SyncStarted { peer, sync } => {
            format!("sync {sync} started with {}", name(peer))
        }
        Event::SyncCompleted {
            peer,
            sync,
            objects,
            bytes,
        } => format!(
            "sync {sync} completed with {}: {objects} objects, {bytes} bytes",
            name(peer)
        ),
        Event::SyncFailed { peer, sync, reason } => {
            format!("sync {sync} failed with {}: {reason}", name(peer))
        }
        Event::ConflictDetected {
            timeline,
            local,
            remote,
            base,
            peer,
        } => format!(
            "conflict on {timeline}: local {} remote {} base {} from {}",
            local.short(),
            remote.short(),
            short(base),
            name(peer)
        ),
        Event::ObjectReceived {
            peer,
            sync,
            objects,
            bytes,
        } => format!(
            "sync {sync} received {objects} objects, {bytes} bytes from {}",
            name(peer)
        ),
        Event::ProtocolViolation { conn, peer, reason } => format!(
            "protocol violation by {} conn {conn}: {reason}",
            peer.as_ref().map_or("?".to_owned(), name)
        ),
        Event::CommandDone { id, ok, message } => {
            format!("command {id} done ok={ok}: {message}")
        }
        // Events the core may add later are traced as they debug-print.
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}
