//! The repository lock.
//!
//! Writers (a seal, a checkout, a sync landing objects) hold an exclusive `flock`
//! on `.ivaldi/lock` while they write. The kernel drops the lock when its holder
//! dies, so a lock left by a crash is never mistaken for a live one: the next
//! writer simply acquires it. The file holds the holder's pid for the message a
//! waiting writer prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{IoContext, RepoError, Result};

/// Held while writing; released on drop (or by the kernel on a crash).
#[derive(Debug)]
pub struct RepoLock {
    file: File,
    path: PathBuf,
}

impl RepoLock {
    /// Waits up to `wait` for the lock.
    pub fn acquire(path: &Path, wait: Duration) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if start.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    return Err(RepoError::Locked {
                        pid: pid.trim().to_owned(),
                        path: path.to_owned(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(e).at(path),
            }
        }
        file.set_len(0).at(path)?;
        file.seek(SeekFrom::Start(0)).at(path)?;
        write!(file, "{}", std::process::id()).at(path)?;
        Ok(RepoLock {
            file,
            path: path.to_owned(),
        })
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
        tracing::trace!(path = %self.path.display(), "repository lock released");
    }
}
