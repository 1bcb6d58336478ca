//! The object store: immutable pack files, each made visible by one rename.
//!
//! Writing one file per object costs a create, a write and (for durability) an
//! fsync each; 45,000 objects that way take seconds. A pack holds a whole batch (a
//! seal's new objects, or a sync's) in one file with its index at the end:
//!
//! ```text
//! "IVPACK01"                        8-byte magic
//! object encodings, back to back
//! index: per object, sorted by id:  id (32) · offset u64 · length u32 · kind u8
//! trailer: count u64 · index offset u64 · BLAKE3 of everything before the trailer (32) · "IVPKEND1"
//! ```
//!
//! A pack is written under `tmp/`, fsynced, renamed into `objects/` and the
//! directory fsynced: it appears whole or not at all, so a crash never leaves a
//! half-visible batch. Before the rename every object's children are checked to be
//! present, so the store never holds a seal without its tree, or a tree without
//! its entries (the closure invariant).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use ivaldi_core::ObjectId;
use ivaldi_core::object::{self, ChunkList, Object, ObjectKind, Seal, Tree};

use super::error::{IoContext, RepoError, Result};

const MAGIC: &[u8; 8] = b"IVPACK01";
const END_MAGIC: &[u8; 8] = b"IVPKEND1";
const INDEX_ENTRY: usize = 45;
const TRAILER: usize = 56;
/// Largest object a pack accepts. Files above the chunk threshold are chunked, so
/// only trees and messages could approach this.
pub const MAX_OBJECT: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
struct Loc {
    pack: u32,
    offset: u64,
    len: u32,
    kind: ObjectKind,
}

#[derive(Debug)]
struct Pack {
    path: PathBuf,
    file: File,
}

/// An open object store: every pack's index in one hash map, so a lookup is one
/// probe and a read is one `pread`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    tmp: PathBuf,
    packs: Vec<Arc<Pack>>,
    known_packs: HashSet<PathBuf>,
    index: HashMap<ObjectId, Loc>,
    /// Packs that could not be read whole (a truncated file, a damaged index),
    /// and why. Their readable entries are loaded; the store keeps working for
    /// everything else, and `verify` and `repair` report them.
    damaged: Vec<(PathBuf, String)>,
}

impl Store {
    /// Opens the store in `dir` (the `objects/` directory), reading every pack's index.
    pub fn open(dir: &Path, tmp: &Path) -> Result<Self> {
        let mut store = Store {
            dir: dir.to_owned(),
            tmp: tmp.to_owned(),
            packs: Vec::new(),
            known_packs: HashSet::new(),
            index: HashMap::new(),
            damaged: Vec::new(),
        };
        store.refresh()?;
        Ok(store)
    }

    /// Loads packs that other processes added since this store was opened, and
    /// forgets packs that `gc` removed (their live objects are in a newer pack), so
    /// a closure check after `refresh` never counts an object that is gone.
    pub fn refresh(&mut self) -> Result<()> {
        // `gc` renames its new pack into place before deleting old ones, so a pack
        // that vanishes between listing and opening means a newer one exists:
        // list again. Bounded, in case a writer keeps racing us.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_refresh() {
                Err(RepoError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempts < 5 =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    fn try_refresh(&mut self) -> Result<()> {
        let mut present = HashSet::new();
        for entry in fs::read_dir(&self.dir).at(&self.dir)? {
            let path = entry.at(&self.dir)?.path();
            if path.extension().is_some_and(|e| e == "ivp") {
                present.insert(path);
            }
        }
        if self.known_packs.iter().any(|p| !present.contains(p)) {
            tracing::debug!(dir = %self.dir.display(), "packs were removed (gc): reloading every index");
            self.packs.clear();
            self.known_packs.clear();
            self.index.clear();
            self.damaged.clear();
        }
        let mut new: Vec<PathBuf> = present
            .into_iter()
            .filter(|p| !self.known_packs.contains(p))
            .collect();
        new.sort();
        for path in new {
            self.load_pack(path)?;
        }
        Ok(())
    }

    /// The stored length of an object's encoding, without reading it.
    pub fn encoded_len(&self, id: &ObjectId) -> Option<u64> {
        self.index.get(id).map(|l| u64::from(l.len))
    }

    /// The objects directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Packs that could not be read whole, and why.
    pub fn damaged_packs(&self) -> &[(PathBuf, String)] {
        &self.damaged
    }

    /// Loads one pack's index. A pack that is damaged (cut short, an index
    /// entry garbled) does not stop the repository: its readable entries are
    /// loaded, and it is recorded in [`Store::damaged_packs`]. A pack that
    /// vanished (gc) is an error, so `refresh` lists again.
    fn load_pack(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).at(&path)?;
        let entries = match read_index_lenient(&file, &path) {
            Ok((entries, 0)) => entries,
            Ok((entries, bad)) => {
                let reason = format!("{bad} index entries are invalid");
                tracing::warn!(path = %path.display(), %reason, "damaged pack: loading its readable entries");
                self.damaged.push((path.clone(), reason));
                entries
            }
            Err(RepoError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(RepoError::Io { path, source });
            }
            Err(e) => {
                let reason = match &e {
                    RepoError::CorruptPack { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                tracing::warn!(path = %path.display(), %reason, "damaged pack: its objects are unavailable; run `ivaldi repair`");
                self.damaged.push((path.clone(), reason));
                self.known_packs.insert(path);
                return Ok(());
            }
        };
        let pack = u32::try_from(self.packs.len()).map_err(|_| RepoError::CorruptPack {
            path: path.clone(),
            reason: "too many packs".into(),
        })?;
        for (id, offset, len, kind) in entries {
            self.index.entry(id).or_insert(Loc {
                pack,
                offset,
                len,
                kind,
            });
        }
        self.known_packs.insert(path.clone());
        self.packs.push(Arc::new(Pack { path, file }));
        Ok(())
    }

    /// Whether the store holds `id`.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.index.contains_key(id)
    }

    /// The kind of a stored object, without reading it.
    pub fn kind(&self, id: &ObjectId) -> Option<ObjectKind> {
        self.index.get(id).map(|l| l.kind)
    }

    /// The number of objects stored.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every stored id, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = &ObjectId> {
        self.index.keys()
    }

    /// The pack files, oldest name first.
    pub fn pack_paths(&self) -> Vec<PathBuf> {
        self.packs.iter().map(|p| p.path.clone()).collect()
    }

    /// Reads an object's encoding and checks it against its id, so a flipped bit on
    /// disk is reported instead of checked out.
    pub fn read_raw(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let loc = self.index.get(id).ok_or(RepoError::MissingObject(*id))?;
        let pack = &self.packs[loc.pack as usize];
        let mut buf = vec![0u8; loc.len as usize];
        pack.file
            .read_exact_at(&mut buf, loc.offset)
            .at(&pack.path)?;
        if ObjectId::hash(&buf) != *id {
            return Err(RepoError::CorruptObject {
                id: *id,
                path: pack.path.clone(),
                reason: "content does not match its id".into(),
            });
        }
        Ok(buf)
    }

    fn corrupt(&self, id: &ObjectId, reason: impl ToString) -> RepoError {
        let path = self
            .index
            .get(id)
            .map(|l| self.packs[l.pack as usize].path.clone())
            .unwrap_or_default();
        RepoError::CorruptObject {
            id: *id,
            path,
            reason: reason.to_string(),
        }
    }

    /// Reads and decodes any object.
    pub fn read(&self, id: &ObjectId) -> Result<Object> {
        let raw = self.read_raw(id)?;
        Object::decode(&raw).map_err(|e| self.corrupt(id, e))
    }

    fn expect_kind(&self, id: &ObjectId, kind: ObjectKind) -> Result<Vec<u8>> {
        match self.kind(id) {
            None => Err(RepoError::MissingObject(*id)),
            Some(k) if k != kind => Err(RepoError::WrongKind {
                id: *id,
                expected: kind.name(),
                found: k.name(),
            }),
            Some(_) => self.read_raw(id),
        }
    }

    /// Reads a seal.
    pub fn seal(&self, id: &ObjectId) -> Result<Seal> {
        let raw = self.expect_kind(id, ObjectKind::Seal)?;
        Seal::decode(&raw).map_err(|e| self.corrupt(id, e))
    }

    /// Reads a tree.
    pub fn tree(&self, id: &ObjectId) -> Result<Tree> {
        let raw = self.expect_kind(id, ObjectKind::Tree)?;
        Tree::decode(&raw).map_err(|e| self.corrupt(id, e))
    }

    /// Reads a chunk list.
    pub fn chunk_list(&self, id: &ObjectId) -> Result<ChunkList> {
        let raw = self.expect_kind(id, ObjectKind::ChunkList)?;
        ChunkList::decode(&raw).map_err(|e| self.corrupt(id, e))
    }

    /// Writes a file's content (a blob, or a chunk-list tree of blobs) to `out`,
    /// one chunk at a time so memory does not grow with the file.
    pub fn write_file_content(&self, id: &ObjectId, out: &mut dyn Write) -> Result<u64> {
        match self.kind(id) {
            Some(ObjectKind::Blob) => {
                let raw = self.read_raw(id)?;
                out.write_all(&raw[1..])
                    .map_err(|e| RepoError::Refused(format!("writing file content: {e}")))?;
                Ok(raw.len() as u64 - 1)
            }
            Some(ObjectKind::ChunkList) => {
                let list = self.chunk_list(id)?;
                let mut total = 0;
                for (child, size) in &list.entries {
                    let wrote = self.write_file_content(child, out)?;
                    if wrote != *size {
                        return Err(self.corrupt(
                            id,
                            format!("entry {child} is {wrote} bytes, list says {size}"),
                        ));
                    }
                    total += wrote;
                }
                Ok(total)
            }
            Some(k) => Err(RepoError::WrongKind {
                id: *id,
                expected: "blob",
                found: k.name(),
            }),
            None => Err(RepoError::MissingObject(*id)),
        }
    }

    /// Reads a whole file's content into memory (for merging small text files).
    pub fn file_content(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.write_file_content(id, &mut v)?;
        Ok(v)
    }

    /// Starts a batch of new objects that will land as one pack.
    pub fn writer(&self) -> Result<PackWriter> {
        PackWriter::new(&self.tmp)
    }

    /// Whether every child of every object in `writer` is in the store or the
    /// batch: the batch could land now. Objects of a pull arrive in landing order
    /// (each after everything it refers to), so any prefix of a pull is closed.
    pub fn is_closed(&self, writer: &PackWriter) -> bool {
        writer
            .needs
            .iter()
            .all(|(_, m)| self.contains(m) || writer.seen.contains(m))
    }

    /// Lands a finished batch: checks closure, fsyncs, renames the pack into place
    /// and makes its objects visible. An empty batch writes nothing.
    pub fn commit(&mut self, writer: PackWriter) -> Result<usize> {
        for (id, missing) in &writer.needs {
            if !self.contains(missing) && !writer.seen.contains(missing) {
                return Err(RepoError::Closure {
                    id: *id,
                    missing: *missing,
                });
            }
        }
        self.publish(writer)
    }

    /// Lands the intact objects `repair` saved from damaged packs. The closure
    /// check is skipped: it already fails for this store (what the damage took
    /// is missing), and refusing would lose the intact objects too. Everything
    /// else is as in [`Store::commit`]: fsync, rename, directory fsync.
    pub fn commit_salvage(&mut self, writer: PackWriter) -> Result<usize> {
        self.publish(writer)
    }

    fn publish(&mut self, mut writer: PackWriter) -> Result<usize> {
        let count = writer.entries.len();
        if count == 0 {
            return Ok(0);
        }
        let (tmp_path, checksum) = writer.finish()?;
        // From here the pack is complete and durable; the rename publishes it.
        super::fault::point("pack.before-rename");
        let name = format!("pack-{}.ivp", &checksum.to_hex()[..32]);
        let dest = self.dir.join(name);
        fs::rename(&tmp_path, &dest).at(&dest)?;
        sync_dir(&self.dir)?;
        self.load_pack(dest)?;
        Ok(count)
    }

    /// Checks every pack and every object: trailer checksums, object hashes,
    /// canonical encodings, and that every child of every object is present.
    /// Never stops at the first problem: every one is listed, and the ids of
    /// unreadable objects go to `bad` so the caller can tell which timelines
    /// they break.
    pub fn verify_all(&self, problems: &mut Vec<String>, bad: &mut HashSet<ObjectId>) -> usize {
        let mut checked = 0;
        for (path, reason) in &self.damaged {
            problems.push(format!("damaged pack {}: {reason}", path.display()));
        }
        for pack in &self.packs {
            if let Err(e) = verify_pack_checksum(&pack.file, &pack.path) {
                problems.push(e.to_string());
            }
        }
        for id in self.index.keys() {
            checked += 1;
            let raw = match self.read_raw(id) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(e.to_string());
                    bad.insert(*id);
                    continue;
                }
            };
            let obj = match Object::decode(&raw) {
                Ok(o) => o,
                Err(e) => {
                    problems.push(self.corrupt(id, e).to_string());
                    bad.insert(*id);
                    continue;
                }
            };
            for child in obj.children() {
                if !self.contains(&child) {
                    problems.push(format!(
                        "{} {id} refers to missing object {child}",
                        obj.kind().name()
                    ));
                }
            }
        }
        checked
    }
}

/// A batch of objects being written to a temporary pack.
pub struct PackWriter {
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    done: bool,
    offset: u64,
    hasher: blake3::Hasher,
    entries: Vec<(ObjectId, u64, u32, ObjectKind)>,
    seen: HashSet<ObjectId>,
    needs: Vec<(ObjectId, ObjectId)>,
}

impl PackWriter {
    fn new(tmp: &Path) -> Result<Self> {
        fs::create_dir_all(tmp).at(tmp)?;
        let tmp_path = tmp.join(format!("pack-{}-{}.tmp", std::process::id(), unique()));
        let file = File::create(&tmp_path).at(&tmp_path)?;
        let mut w = PackWriter {
            tmp_path,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            done: false,
            offset: 0,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            seen: HashSet::new(),
            needs: Vec::new(),
        };
        w.write(MAGIC)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| RepoError::Refused("pack already finished".into()))?;
        out.write_all(bytes).at(&self.tmp_path)?;
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Whether this batch already holds `id`.
    pub fn holds(&self, id: &ObjectId) -> bool {
        self.seen.contains(id)
    }

    /// Adds an object whose id the caller computed from these exact bytes (as
    /// every encoder here does). Objects with children are decoded so the closure
    /// check at commit can see them.
    pub fn add_trusted(&mut self, id: ObjectId, encoding: &[u8]) -> Result<()> {
        if self.seen.contains(&id) {
            return Ok(());
        }
        let kind = object::kind_of(encoding)?;
        if encoding.len() > MAX_OBJECT {
            return Err(RepoError::Refused(format!(
                "object {id} is {} bytes, above the {MAX_OBJECT}-byte limit",
                encoding.len()
            )));
        }
        if kind != ObjectKind::Blob {
            for child in Object::decode(encoding)?.children() {
                self.needs.push((id, child));
            }
        }
        let offset = self.offset;
        self.write(encoding)?;
        self.entries.push((id, offset, encoding.len() as u32, kind));
        self.seen.insert(id);
        Ok(())
    }

    /// Adds an object received from elsewhere, verifying it against `id` first:
    /// nothing unverified ever becomes visible.
    pub fn add_verified(&mut self, id: ObjectId, encoding: &[u8]) -> Result<()> {
        object::verify(&id, encoding)?;
        self.add_trusted(id, encoding)
    }

    /// Adds a blob from file bytes without building its encoding in memory.
    pub fn add_blob(&mut self, data: &[u8]) -> Result<ObjectId> {
        let id = object::blob_id(data);
        if self.seen.contains(&id) {
            return Ok(id);
        }
        if data.len() + 1 > MAX_OBJECT {
            return Err(RepoError::Refused(format!(
                "blob of {} bytes is above the object size limit",
                data.len()
            )));
        }
        let offset = self.offset;
        self.write(&[ObjectKind::Blob as u8])?;
        self.write(data)?;
        self.entries
            .push((id, offset, data.len() as u32 + 1, ObjectKind::Blob));
        self.seen.insert(id);
        Ok(id)
    }

    /// Bytes written to the batch so far.
    pub fn bytes(&self) -> u64 {
        self.offset
    }

    /// The number of objects in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn finish(&mut self) -> Result<(PathBuf, blake3::Hash)> {
        self.entries.sort_unstable_by_key(|a| a.0);
        let index_offset = self.offset;
        let entries = std::mem::take(&mut self.entries);
        let mut buf = Vec::with_capacity(entries.len() * INDEX_ENTRY);
        for (id, off, len, kind) in &entries {
            buf.extend_from_slice(id.as_bytes());
            buf.extend_from_slice(&off.to_be_bytes());
            buf.extend_from_slice(&len.to_be_bytes());
            buf.push(*kind as u8);
        }
        self.write(&buf)?;
        let checksum = self.hasher.finalize();
        let mut trailer = Vec::with_capacity(TRAILER);
        trailer.extend_from_slice(&(entries.len() as u64).to_be_bytes());
        trailer.extend_from_slice(&index_offset.to_be_bytes());
        trailer.extend_from_slice(checksum.as_bytes());
        trailer.extend_from_slice(END_MAGIC);
        let mut out = self
            .out
            .take()
            .ok_or_else(|| RepoError::Refused("pack already finished".into()))?;
        out.write_all(&trailer).at(&self.tmp_path)?;
        let file = out.into_inner().map_err(|e| RepoError::Io {
            path: self.tmp_path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().at(&self.tmp_path)?;
        self.done = true;
        Ok((self.tmp_path.clone(), checksum))
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        // A batch that was never finished leaves nothing behind. A finished one
        // is renamed into place by `Store::commit`, or cleaned at the next open.
        if !self.done {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(48)
}

/// Fsyncs a directory so a rename into it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

fn bad(path: &Path, reason: impl Into<String>) -> RepoError {
    RepoError::CorruptPack {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

type IndexEntry = (ObjectId, u64, u32, ObjectKind);

fn read_trailer(file: &File, path: &Path) -> Result<(u64, u64, u64, [u8; 32])> {
    let size = file.metadata().at(path)?.len();
    if size < (MAGIC.len() + TRAILER) as u64 {
        return Err(bad(path, format!("{size} bytes is too short for a pack")));
    }
    let mut t = [0u8; TRAILER];
    file.read_exact_at(&mut t, size - TRAILER as u64).at(path)?;
    if &t[48..56] != END_MAGIC {
        return Err(bad(path, "missing end marker (truncated or not a pack)"));
    }
    let count = u64::from_be_bytes(t[0..8].try_into().unwrap_or_default());
    let index_offset = u64::from_be_bytes(t[8..16].try_into().unwrap_or_default());
    let mut sum = [0u8; 32];
    sum.copy_from_slice(&t[16..48]);
    let index_end = size - TRAILER as u64;
    let expect = count.checked_mul(INDEX_ENTRY as u64);
    if index_offset < MAGIC.len() as u64
        || index_offset > index_end
        || expect != Some(index_end - index_offset)
    {
        return Err(bad(path, "index bounds do not match the file size"));
    }
    Ok((size, count, index_offset, sum))
}

fn read_index(file: &File, path: &Path) -> Result<Vec<IndexEntry>> {
    let (size, count, index_offset, _) = read_trailer(file, path)?;
    let index_end = size - TRAILER as u64;
    let mut buf = vec![0u8; (index_end - index_offset) as usize];
    file.read_exact_at(&mut buf, index_offset).at(path)?;
    let mut out = Vec::with_capacity(count as usize);
    for e in buf.chunks_exact(INDEX_ENTRY) {
        let mut id = [0u8; 32];
        id.copy_from_slice(&e[0..32]);
        let offset = u64::from_be_bytes(e[32..40].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(e[40..44].try_into().unwrap_or_default());
        let kind =
            ObjectKind::from_byte(e[44]).ok_or_else(|| bad(path, "unknown kind in index"))?;
        if offset < MAGIC.len() as u64 || offset.saturating_add(u64::from(len)) > index_offset {
            return Err(bad(path, "index entry points outside the object area"));
        }
        out.push((ObjectId(id), offset, len, kind));
    }
    Ok(out)
}

/// Like [`read_index`], but skips entries that are invalid (a kind byte or an
/// offset garbled) instead of refusing the pack; returns how many it skipped.
fn read_index_lenient(file: &File, path: &Path) -> Result<(Vec<IndexEntry>, usize)> {
    let (size, count, index_offset, _) = read_trailer(file, path)?;
    let index_end = size - TRAILER as u64;
    let mut buf = vec![0u8; (index_end - index_offset) as usize];
    file.read_exact_at(&mut buf, index_offset).at(path)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut bad = 0;
    for e in buf.chunks_exact(INDEX_ENTRY) {
        let mut id = [0u8; 32];
        id.copy_from_slice(&e[0..32]);
        let offset = u64::from_be_bytes(e[32..40].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(e[40..44].try_into().unwrap_or_default());
        let in_bounds =
            offset >= MAGIC.len() as u64 && offset.saturating_add(u64::from(len)) <= index_offset;
        match ObjectKind::from_byte(e[44]) {
            Some(kind) if in_bounds => out.push((ObjectId(id), offset, len, kind)),
            _ => bad += 1,
        }
    }
    Ok((out, bad))
}

/// Whether a pack is whole: its trailer, index and checksum are intact.
pub fn check_pack(path: &Path) -> Result<()> {
    let file = File::open(path).at(path)?;
    verify_pack_checksum(&file, path)?;
    read_index(&file, path).map(|_| ())
}

/// Calls `f` with every object of the pack at `path` whose bytes still match
/// its id, one at a time; returns how many indexed objects did not. A pack
/// whose trailer is gone (cut short) has no usable index and yields nothing.
pub fn for_each_intact(
    path: &Path,
    mut f: impl FnMut(ObjectId, &[u8]) -> Result<()>,
) -> Result<usize> {
    let file = File::open(path).at(path)?;
    let (entries, mut bad) = read_index_lenient(&file, path)?;
    let mut buf = Vec::new();
    for (id, offset, len, _) in entries {
        buf.resize(len as usize, 0);
        if file.read_exact_at(&mut buf, offset).is_err() || ObjectId::hash(&buf) != id {
            bad += 1;
            continue;
        }
        f(id, &buf)?;
    }
    Ok(bad)
}

/// The ids one pack file holds (from its index).
pub fn pack_ids(path: &Path) -> Result<Vec<ObjectId>> {
    let file = File::open(path).at(path)?;
    Ok(read_index(&file, path)?.into_iter().map(|e| e.0).collect())
}

fn verify_pack_checksum(file: &File, path: &Path) -> Result<()> {
    let (size, _, _, sum) = read_trailer(file, path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let end = size - TRAILER as u64;
    let mut pos = 0u64;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos).at(path)?;
        if pos == 0 && &buf[..MAGIC.len().min(n)] != MAGIC {
            return Err(bad(path, "bad magic"));
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    if hasher.finalize().as_bytes() != &sum {
        return Err(bad(
            path,
            "checksum mismatch: the pack was modified or damaged",
        ));
    }
    Ok(())
}
