//! Open pack files, bounded, and reads of objects whose pack another process
//! removed.
//!
//! A store used to keep one open `File` per pack for its whole life, and the
//! daemon holds two stores (its reader and its writer), so its descriptors grew
//! with history until `ulimit -n` stopped it. Now at most [`MAX_OPEN_PACKS`]
//! files are open per store, least recently used closed first, and a pack is
//! reopened on demand (`pread` on the reopened file; no `mmap`, no `unsafe`).
//!
//! Reopening can find the pack gone: a repack or `gc` in another process merged
//! it into a newer pack and deleted it. That is never an error for a reader.
//! The objects are in a pack this store has not loaded yet, so the store looks
//! them up in the packs now on disk ([`OpenPacks::read_moved`]) and reads them
//! there, until its next `refresh` reloads the pack list for good.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hashbrown::{HashMap, HashSet};
use ivaldi_core::ObjectId;

use super::codec::Codec;
use super::pack::{IndexEntry, read_index};

/// Pack files one store keeps open at most. The daemon has two stores, so
/// it holds at most twice this many pack descriptors whatever the history.
pub const MAX_OPEN_PACKS: usize = 32;

/// How many times a read looks again for an object whose pack vanished (a
/// repack can merge the pack it found next, too).
const MOVED_ATTEMPTS: usize = 4;

/// Stored bytes of one object and how to decode them.
pub(super) struct Stored {
    pub bytes: Vec<u8>,
    pub codec: Codec,
    pub ulen: u32,
    pub base: Option<ObjectId>,
    pub path: PathBuf,
}

/// A bounded set of open pack files, keyed by the store's pack number.
#[derive(Debug)]
pub(super) struct OpenPacks {
    limit: usize,
    /// Least recently used first.
    open: Mutex<VecDeque<(u32, Arc<File>)>>,
    /// Where objects of vanished packs live now: packs on disk the store has
    /// not loaded, indexed on the side (cleared by `clear`).
    moved: Mutex<Moved>,
}

#[derive(Debug, Default)]
struct Moved {
    scanned: HashSet<PathBuf>,
    at: HashMap<ObjectId, (Arc<PathBuf>, IndexEntry)>,
}

impl Default for OpenPacks {
    fn default() -> Self {
        OpenPacks {
            limit: MAX_OPEN_PACKS,
            open: Mutex::new(VecDeque::new()),
            moved: Mutex::new(Moved::default()),
        }
    }
}

impl OpenPacks {
    /// Changes the bound (at least one), closing files above it.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
        if let Ok(mut open) = self.open.lock() {
            while open.len() > self.limit {
                open.pop_front();
            }
        }
    }

    /// How many pack files are open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Forgets every open file and every side index: the pack numbering is
    /// about to change (a full reload).
    pub fn clear(&self) {
        if let Ok(mut open) = self.open.lock() {
            open.clear();
        }
        if let Ok(mut m) = self.moved.lock() {
            *m = Moved::default();
        }
    }

    /// Keeps `file` (just opened to read its index) as pack `pack`'s handle.
    pub fn insert(&self, pack: u32, file: File) {
        if let Ok(mut open) = self.open.lock() {
            open.retain(|(p, _)| *p != pack);
            open.push_back((pack, Arc::new(file)));
            while open.len() > self.limit {
                open.pop_front();
            }
        }
    }

    /// Pack `pack`'s open file, opening `path` if it is not open.
    pub fn get(&self, pack: u32, path: &Path) -> io::Result<Arc<File>> {
        if let Ok(mut open) = self.open.lock()
            && let Some(i) = open.iter().position(|(p, _)| *p == pack)
            && let Some(e) = open.remove(i)
        {
            let f = e.1.clone();
            open.push_back(e);
            return Ok(f);
        }
        let file = Arc::new(File::open(path)?);
        if let Ok(mut open) = self.open.lock() {
            open.push_back((pack, file.clone()));
            while open.len() > self.limit {
                open.pop_front();
            }
        }
        Ok(file)
    }

    /// Reads `len` bytes at `offset` of pack `pack`. `NotFound` means the
    /// pack is gone (see [`OpenPacks::read_moved`]).
    pub fn read(&self, pack: u32, path: &Path, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let file = self.get(pack, path)?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Reads `id` from whichever pack in `dir` holds it now, among the packs
    /// not in `known` (the store's own, one of which vanished). `None` if no
    /// such pack holds it.
    pub fn read_moved(
        &self,
        dir: &Path,
        known: &HashSet<PathBuf>,
        id: &ObjectId,
    ) -> io::Result<Option<Stored>> {
        for _ in 0..MOVED_ATTEMPTS {
            let found = self.locate(dir, known, id)?;
            let Some((path, e)) = found else {
                return Ok(None);
            };
            let mut bytes = vec![0u8; e.len as usize];
            match File::open(&*path).and_then(|f| f.read_exact_at(&mut bytes, e.offset)) {
                Ok(()) => {
                    tracing::debug!(%id, pack = %path.display(), "read an object from the pack it moved to");
                    return Ok(Some(Stored {
                        bytes,
                        codec: e.codec,
                        ulen: e.ulen,
                        base: e.base,
                        path: (*path).clone(),
                    }));
                }
                // Merged again meanwhile: look again.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    if let Ok(mut m) = self.moved.lock() {
                        m.at.retain(|_, (p, _)| **p != *path);
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }

    /// Indexes packs in `dir` that neither the store nor the side index has
    /// seen, then looks `id` up.
    fn locate(
        &self,
        dir: &Path,
        known: &HashSet<PathBuf>,
        id: &ObjectId,
    ) -> io::Result<Option<(Arc<PathBuf>, IndexEntry)>> {
        let mut m = self
            .moved
            .lock()
            .map_err(|_| io::Error::other("pack side index lock poisoned"))?;
        if let Some(hit) = m.at.get(id) {
            return Ok(Some(hit.clone()));
        }
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "ivp")
                || known.contains(&path)
                || m.scanned.contains(&path)
            {
                continue;
            }
            let entries = match File::open(&path) {
                Ok(f) => read_index(&f, &path).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let shared = Arc::new(path.clone());
            for e in entries {
                m.at.entry(e.id).or_insert_with(|| (shared.clone(), e));
            }
            m.scanned.insert(path);
        }
        Ok(m.at.get(id).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_of_files_stay_open_and_evicted_ones_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut packs = OpenPacks::default();
        packs.set_limit(3);
        let paths: Vec<PathBuf> = (0..10)
            .map(|i| {
                let p = d.path().join(format!("f{i}"));
                fs::write(&p, format!("file number {i}")).expect("write");
                p
            })
            .collect();
        for round in 0..3 {
            for (i, p) in paths.iter().enumerate() {
                let got = packs.read(i as u32, p, 12, 1).expect("read");
                assert_eq!(got, format!("{i}").into_bytes(), "round {round}");
                assert!(packs.open_count() <= 3);
            }
        }
        // A removed file whose handle was evicted reads as NotFound.
        fs::remove_file(&paths[0]).expect("remove");
        let err = packs.read(0, &paths[0], 0, 1).expect_err("gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
