//! Every timeline's head, read once and kept in memory.
//!
//! A head is a small file under `.ivaldi/timelines/`, so reading all of them
//! costs one open and read per timeline. The core asks for every head several
//! times per sync (to plan, to list haves, to decide, to announce); with 1,000
//! timelines that made a one-seal sync cost milliseconds per call, and a sync
//! cost grew with how many timelines exist instead of with what changed.
//!
//! So the daemon reads the heads once and answers from memory until something
//! says they may have changed:
//!
//! - [`HeadsCache::forget`]: another process moved a head and said so (the CLI
//!   tells the daemon with `LocalChanged` after a seal, a timeline command or a
//!   fuse). The next read reads every head again.
//! - [`HeadsCache::landed`]: this daemon's own store writer moved heads (a
//!   pull's `Land`). It holds the repository lock and knows what it wrote, so
//!   it applies exactly those changes instead of rereading the rest.
//! - A stamp, the modification time of every directory under `timelines/`,
//!   taken before the heads are read and checked (one `stat` per directory, not
//!   per timeline) on every read. A head is replaced by renaming a file into its
//!   directory, which changes that directory's modification time, so a writer
//!   that did not say anything is seen too. This is the fallback, not the
//!   contract: a change within one tick of the file system's clock after the
//!   stamp (a few milliseconds) may go unseen by it until the next notice.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use ivaldi_core::{ObjectId, TimelineName};

use crate::repo::{Repository, Result};

/// Modification times of the directories that hold the timelines.
#[derive(Debug, PartialEq, Eq)]
struct Stamp(Vec<(PathBuf, Option<SystemTime>)>);

impl Stamp {
    /// Walks the directories under `base` (file types from the directory
    /// listing: no `stat` per timeline).
    fn take(base: &Path) -> Stamp {
        let mut out = Vec::new();
        let mut stack = vec![base.to_owned()];
        while let Some(dir) = stack.pop() {
            out.push((dir.clone(), modified(&dir)));
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        Stamp(out)
    }

    /// Whether no directory changed since the stamp was taken.
    fn current(&self) -> bool {
        self.0.iter().all(|(dir, t)| modified(dir) == *t)
    }
}

fn modified(dir: &Path) -> Option<SystemTime> {
    fs::metadata(dir).and_then(|m| m.modified()).ok()
}

#[derive(Debug, Default)]
struct State {
    /// The heads and the stamp taken before they were read; `None` until the
    /// first read and after [`HeadsCache::forget`].
    known: Option<(BTreeMap<TimelineName, ObjectId>, Stamp)>,
    /// Full reads of every head so far (for tests).
    reads: u64,
}

/// The heads of one repository, shared by the daemon's store (reads) and its
/// store writer (landings). Cloning shares the cache.
#[derive(Clone, Debug, Default)]
pub struct HeadsCache {
    state: Arc<Mutex<State>>,
}

impl HeadsCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state with the heads known and current, reading them if needed.
    fn fresh(&self, repo: &Repository) -> Result<MutexGuard<'_, State>> {
        let mut st = self.lock();
        if st.known.as_ref().is_some_and(|(_, s)| s.current()) {
            return Ok(st);
        }
        st.known = None;
        // The stamp first: a change made while the heads are read shows at the
        // next check.
        let stamp = Stamp::take(&timelines_dir(repo));
        let heads = repo.timelines()?;
        st.reads += 1;
        st.known = Some((heads, stamp));
        Ok(st)
    }

    /// Every timeline's head.
    pub fn heads(&self, repo: &Repository) -> Result<BTreeMap<TimelineName, ObjectId>> {
        let st = self.fresh(repo)?;
        Ok(st.known.as_ref().map(|k| k.0.clone()).unwrap_or_default())
    }

    /// One timeline's head.
    pub fn head(&self, repo: &Repository, name: &TimelineName) -> Result<Option<ObjectId>> {
        let st = self.fresh(repo)?;
        Ok(st.known.as_ref().and_then(|k| k.0.get(name).copied()))
    }

    /// Drops what is known: the next read reads every head.
    pub fn forget(&self) {
        self.lock().known = None;
    }

    /// Whether the heads known are still current (taken by a writer, under
    /// the repository lock, before it moves heads).
    pub fn is_current(&self) -> bool {
        self.lock().known.as_ref().is_some_and(|(_, s)| s.current())
    }

    /// Heads this process moved, under the repository lock: `was_current` is
    /// [`HeadsCache::is_current`] from before the move. Applies them and
    /// stamps the directories again; if the cache was not current, forgets it.
    pub fn landed(&self, repo: &Repository, was_current: bool, moved: &[(TimelineName, ObjectId)]) {
        let mut st = self.lock();
        let Some((heads, stamp)) = st.known.as_mut().filter(|_| was_current) else {
            st.known = None;
            return;
        };
        for (t, id) in moved {
            heads.insert(t.clone(), *id);
        }
        *stamp = Stamp::take(&timelines_dir(repo));
    }

    /// How many times every head was read from disk.
    pub fn full_reads(&self) -> u64 {
        self.lock().reads
    }
}

fn timelines_dir(repo: &Repository) -> PathBuf {
    repo.dot_dir().join("timelines")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves a head as another process would: a file renamed into place.
    fn put(repo: &Repository, name: &str, id: &ObjectId) {
        let path = timelines_dir(repo).join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        crate::repo::write_atomic(&path, format!("{id}\n").as_bytes(), false).expect("write");
    }

    #[test]
    fn heads_are_read_once_until_something_moves_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repository::forge(tmp.path()).expect("forge");
        let (a, b) = (ObjectId::hash(b"one"), ObjectId::hash(b"two"));
        for i in 0..50 {
            put(&repo, &format!("branch/{i:02}"), &a);
        }
        let t = TimelineName::new("branch/07").expect("name");
        let cache = HeadsCache::default();
        assert_eq!(cache.heads(&repo).expect("heads").len(), 50);
        for _ in 0..10 {
            cache.heads(&repo).expect("heads");
            cache.head(&repo, &t).expect("head");
        }
        assert_eq!(
            cache.full_reads(),
            1,
            "one read of every head, not one per call"
        );

        // Another process moves a head and says nothing: the stamp sees it
        // (once the file system's clock has ticked since the stamp).
        std::thread::sleep(std::time::Duration::from_millis(50));
        put(&repo, "branch/07", &b);
        assert_eq!(cache.head(&repo, &t).expect("head"), Some(b));
        assert_eq!(cache.full_reads(), 2);
        // A new timeline in a new directory changes its parent directory.
        std::thread::sleep(std::time::Duration::from_millis(50));
        put(&repo, "feature/x/y", &b);
        assert_eq!(cache.heads(&repo).expect("heads").len(), 51);
        assert_eq!(cache.full_reads(), 3);

        // Told (`LocalChanged`): read again whatever the stamp says.
        cache.forget();
        assert_eq!(cache.heads(&repo).expect("heads")[&t], b);
        assert_eq!(cache.full_reads(), 4);

        // This process's own landing is applied, not read again.
        let was = cache.is_current();
        assert!(was);
        put(&repo, "branch/07", &a);
        cache.landed(&repo, was, &[(t.clone(), a)]);
        assert_eq!(cache.head(&repo, &t).expect("head"), Some(a));
        assert_eq!(cache.full_reads(), 4);

        // A landing on a cache that was not current forgets it.
        cache.landed(&repo, false, &[(t.clone(), b)]);
        assert_eq!(cache.head(&repo, &t).expect("head"), Some(a));
        assert_eq!(cache.full_reads(), 5);
    }
}
