//! Reading ahead for a serve, on a thread of its own.
//!
//! Serving a sync reads every planned object in its stored form, and checks it
//! against its id before it goes out (`Store::read_stored_form`): a `pread`, a
//! decompression and a BLAKE3 hash per object. On the daemon's driver thread
//! that work would run one after the other with the encryption and framing of
//! the same objects, and hold heartbeats and other peers' syncs behind it. The
//! core names the objects it will send next ([`Store::prefetch`]), and this
//! reader prepares them on another core; the driver then only takes them.
//!
//! Bounded: at most [`BUDGET`] bytes wait to be taken. An object the driver
//! asks for before the reader got to it is read on the driver as before, so a
//! slow or stopped reader costs time, never correctness. Nothing prepared is
//! trusted beyond what the driver's own read would have checked.
//!
//! [`Store::prefetch`]: ivaldi_core::store::Store::prefetch

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hashbrown::HashMap;
use ivaldi_core::ObjectId;
use ivaldi_core::codec::Stored;

use crate::repo::{RepoError, Repository};

/// Bytes of prepared objects waiting to be taken, at most.
pub const BUDGET: usize = 8 << 20;
/// A prepared object not taken for this long is dropped (its serve ended).
const STALE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Ready {
    objects: HashMap<ObjectId, Stored>,
    bytes: usize,
}

struct Shared {
    ready: Mutex<Ready>,
    /// Signalled when the driver takes an object (room for the reader).
    room: Condvar,
}

/// The driver's handle on the reader thread.
pub struct Prefetcher {
    shared: Arc<Shared>,
    tx: Sender<Vec<ObjectId>>,
}

impl Prefetcher {
    /// Starts the reader for the repository at `root`, with its own handle
    /// on the packs.
    pub fn start(root: PathBuf) -> std::io::Result<Prefetcher> {
        let shared = Arc::new(Shared {
            ready: Mutex::new(Ready::default()),
            room: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("ivaldi-prefetch".into())
            .spawn(move || reader(root, rx, s))?;
        Ok(Prefetcher { shared, tx })
    }

    /// Asks for `ids` to be prepared, in this order.
    pub fn request(&self, ids: Vec<ObjectId>) {
        // A stopped reader only means no reading ahead.
        let _ = self.tx.send(ids);
    }

    /// A prepared object, if the reader has it.
    pub fn take(&self, id: &ObjectId) -> Option<Stored> {
        let mut ready = self.shared.ready.lock().ok()?;
        let s = ready.objects.remove(id)?;
        ready.bytes -= s.bytes.len();
        drop(ready);
        self.shared.room.notify_one();
        Some(s)
    }
}

fn reader(root: PathBuf, rx: Receiver<Vec<ObjectId>>, shared: Arc<Shared>) {
    let mut repo = match Repository::open(&root) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "no reading ahead: cannot open the repository");
            return;
        }
    };
    while let Ok(ids) = rx.recv() {
        for id in ids {
            let stored = match repo.store.read_stored_form(&id) {
                Ok(s) => s,
                Err(RepoError::MissingObject(_)) => {
                    // Landed by another process since: look again once.
                    if repo.store.refresh().is_err() {
                        continue;
                    }
                    match repo.store.read_stored_form(&id) {
                        Ok(s) => s,
                        Err(_) => continue,
                    }
                }
                // The driver reads it again and reports the failure itself.
                Err(_) => continue,
            };
            let Ok(mut ready) = shared.ready.lock() else {
                return;
            };
            while ready.bytes > 0 && ready.bytes + stored.bytes.len() > BUDGET {
                let (r, timeout) = match shared.room.wait_timeout(ready, STALE) {
                    Ok(x) => x,
                    Err(_) => return,
                };
                ready = r;
                if timeout.timed_out() {
                    // Nobody took them: the serve ended. Start afresh.
                    ready.objects.clear();
                    ready.bytes = 0;
                }
            }
            ready.bytes += stored.bytes.len();
            if let Some(old) = ready.objects.insert(id, stored) {
                ready.bytes -= old.bytes.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn wait_for(p: &Prefetcher, id: &ObjectId) -> Option<Stored> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Some(s) = p.take(id) {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    #[test]
    fn objects_asked_for_are_prepared_checked_and_taken_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut repo = Repository::forge(tmp.path()).expect("forge");
        let mut w = repo.store.writer().expect("writer");
        let ids: Vec<ObjectId> = (0..20)
            .map(|i| w.add_blob(format!("content {i}\n").repeat(50).as_bytes()))
            .collect::<Result<_, _>>()
            .expect("blobs");
        repo.store.commit(w).expect("commit");
        let p = Prefetcher::start(tmp.path().to_owned()).expect("start");
        let absent = ObjectId::hash(b"never written");
        let mut asked = ids.clone();
        asked.insert(3, absent);
        p.request(asked);
        for id in &ids {
            let s = wait_for(&p, id).expect("prepared");
            assert_eq!(s, repo.store.read_stored_form(id).expect("read"));
            assert!(p.take(id).is_none(), "taken once");
        }
        // What is not in the store is left to the caller's own read.
        assert!(p.take(&absent).is_none());
    }

    #[test]
    fn at_most_the_budget_waits_to_be_taken() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut repo = Repository::forge(tmp.path()).expect("forge");
        let mut w = repo.store.writer().expect("writer");
        // Incompressible 1 MiB blobs: BUDGET / 1 MiB of them fit.
        let mut x = 7u64;
        let ids: Vec<ObjectId> = (0..(BUDGET >> 20) + 6)
            .map(|_| {
                let data: Vec<u8> = (0..1 << 20)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                w.add_blob(&data)
            })
            .collect::<Result<_, _>>()
            .expect("blobs");
        repo.store.commit(w).expect("commit");
        let p = Prefetcher::start(tmp.path().to_owned()).expect("start");
        p.request(ids.clone());
        std::thread::sleep(Duration::from_millis(500));
        let waiting = p.shared.ready.lock().map(|r| r.bytes).unwrap_or(0);
        assert!(waiting > 0 && waiting <= BUDGET, "{waiting} bytes wait");
        // Taking makes room for the rest.
        for id in &ids {
            assert!(wait_for(&p, id).is_some());
        }
    }
}
