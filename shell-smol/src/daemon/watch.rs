//! Noticing edits of `config.json` while the daemon runs.
//!
//! The CLI tells a running daemon to reload after it saves a change, but a
//! file edited by hand (or by a deployment tool) used to take effect only at
//! the next restart, and a mistake in it only then surfaced, as a daemon that
//! would not start. The driver polls the file about once a second and applies
//! a change through the same path as `ivaldi p2p config` (`SetConfig`), which
//! refuses an invalid file and keeps the running configuration.
//!
//! The file is small, so each poll compares its whole content, not only its
//! modification time: that also catches two edits within one timestamp tick
//! on a file system with coarse times, and ignores a rewrite with the same
//! bytes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_secs(1);

/// What the file held when last looked at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Missing,
    Content(Vec<u8>),
    /// Unreadable (permissions, a directory in its place): the reason.
    Error(String),
}

/// The daemon's view of its configuration file.
pub struct ConfigWatch {
    path: PathBuf,
    seen: Seen,
    next: Instant,
}

/// A change the driver should act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The file holds new content: reload it.
    Edited,
    /// The file was removed; the running configuration stays.
    Removed,
    /// The file cannot be read; the running configuration stays.
    Unreadable(String),
}

impl ConfigWatch {
    /// Starts watching `path`, taking what it holds now as already applied.
    pub fn new(path: PathBuf, now: Instant) -> ConfigWatch {
        let seen = look(&path);
        ConfigWatch {
            path,
            seen,
            next: now + POLL,
        }
    }

    /// When the driver should call [`ConfigWatch::poll`] next.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// Records what the file holds now as applied (after a CLI-triggered
    /// reload), so the next poll does not apply it a second time.
    pub fn mark_applied(&mut self) {
        self.seen = look(&self.path);
    }

    /// Looks at the file if a poll is due; reports a change once.
    pub fn poll(&mut self, now: Instant) -> Option<Change> {
        if now < self.next {
            return None;
        }
        self.next = now + POLL;
        let seen = look(&self.path);
        if seen == self.seen {
            return None;
        }
        self.seen = seen;
        Some(match &self.seen {
            Seen::Content(_) => Change::Edited,
            Seen::Missing => Change::Removed,
            Seen::Error(e) => Change::Unreadable(e.clone()),
        })
    }
}

fn look(path: &std::path::Path) -> Seen {
    match std::fs::read(path) {
        Ok(bytes) => Seen::Content(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Seen::Missing,
        Err(e) => Seen::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_edit_once_and_only_when_due() {
        let dir = std::env::temp_dir().join(format!("ivaldi-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(&path, b"{}").unwrap();
        let t0 = Instant::now();
        let mut w = ConfigWatch::new(path.clone(), t0);
        assert_eq!(w.poll(t0 + POLL), None);
        std::fs::write(&path, b"{\"relay\": false}").unwrap();
        assert_eq!(w.poll(t0 + POLL), None, "not due yet");
        assert_eq!(w.poll(t0 + POLL * 2), Some(Change::Edited));
        assert_eq!(w.poll(t0 + POLL * 3), None);
        std::fs::write(&path, b"{}").unwrap();
        w.mark_applied();
        assert_eq!(w.poll(t0 + POLL * 4), None);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(w.poll(t0 + POLL * 5), Some(Change::Removed));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
