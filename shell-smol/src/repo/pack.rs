//! The object store: immutable pack files, each made visible by one rename.
//!
//! Writing one file per object costs a create, a write and (for durability) an
//! fsync each; 45,000 objects that way take seconds. A pack holds a whole batch (a
//! seal's new objects, or a sync's) in one file with its index at the end:
//!
//! ```text
//! "IVPACK02"                        8-byte magic
//! stored objects, back to back      (raw, zstd, or zstd against a base: see codec.rs)
//! index: per object, sorted by id:  id (32) · offset u64 · stored length u32 · kind u8
//!                                   · codec u8 · encoding length u32 · base id (32, zero unless a delta)
//! trailer: count u64 · index offset u64 · BLAKE3 of everything before the trailer (32) · "IVPKEND2"
//! ```
//!
//! Version-1 packs (`IVPACK01` … `IVPKEND1`, 45-byte index entries of id,
//! offset, length and kind, every object raw) are still read. A delta's chain
//! of bases is at most [`MAX_CHAIN`] long, and decoded bases are kept in a small
//! cache, so reading any object decodes a bounded number of frames.
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

use super::codec::{self, Codec};
use super::error::{IoContext, RepoError, Result};
use super::pack_files::{OpenPacks, Stored};

mod received;

const MAGIC_V1: &[u8; 8] = b"IVPACK01";
const END_MAGIC_V1: &[u8; 8] = b"IVPKEND1";
const INDEX_ENTRY_V1: usize = 45;
const MAGIC: &[u8; 8] = b"IVPACK02";
const END_MAGIC: &[u8; 8] = b"IVPKEND2";
/// Bytes of one version-2 index entry.
pub const INDEX_ENTRY: usize = 82;
/// The longest chain of delta bases: a base already this deep is not used.
pub const MAX_CHAIN: usize = 16;
/// Bytes of decoded bases the read cache keeps.
const CACHE_BYTES: usize = 32 << 20;
const TRAILER: usize = 56;
/// Largest object a pack accepts. Files above the chunk threshold are chunked, so
/// only trees and messages could approach this.
pub const MAX_OBJECT: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
struct Loc {
    pack: u32,
    offset: u64,
    /// Stored bytes.
    len: u32,
    /// Bytes of the canonical encoding.
    ulen: u32,
    kind: ObjectKind,
    codec: Codec,
}

/// One index entry, as read from or written to a pack.
#[derive(Clone, Copy, Debug)]
pub(super) struct IndexEntry {
    pub id: ObjectId,
    pub offset: u64,
    pub len: u32,
    pub kind: ObjectKind,
    pub codec: Codec,
    pub ulen: u32,
    pub base: Option<ObjectId>,
}

/// A delta base the writer may encode against: its canonical encoding and the
/// length of its own chain.
pub struct DeltaBase {
    pub id: ObjectId,
    pub encoding: Arc<Vec<u8>>,
    pub depth: usize,
}

/// Recently decoded delta bases, least recently used first, bounded in bytes.
#[derive(Debug, Default)]
struct BaseCache {
    entries: std::collections::VecDeque<(ObjectId, Arc<Vec<u8>>)>,
    bytes: usize,
}

impl BaseCache {
    fn get(&mut self, id: &ObjectId) -> Option<Arc<Vec<u8>>> {
        let i = self.entries.iter().position(|(k, _)| k == id)?;
        let e = self.entries.remove(i)?;
        let v = e.1.clone();
        self.entries.push_back(e);
        Some(v)
    }

    fn put(&mut self, id: ObjectId, v: Arc<Vec<u8>>) {
        if v.len() > CACHE_BYTES / 4 {
            return;
        }
        self.bytes += v.len();
        self.entries.push_back((id, v));
        while self.bytes > CACHE_BYTES || self.entries.len() > 256 {
            match self.entries.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

/// A loaded pack. Its file is opened on demand ([`OpenPacks`]), so the
/// number of open descriptors does not grow with the number of packs.
#[derive(Debug)]
struct Pack {
    path: PathBuf,
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
    /// The base of every stored delta.
    bases: HashMap<ObjectId, ObjectId>,
    cache: std::sync::Mutex<BaseCache>,
    /// Open pack files, bounded; and where objects of vanished packs went.
    files: OpenPacks,
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
            bases: HashMap::new(),
            cache: Default::default(),
            files: OpenPacks::default(),
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
            self.bases.clear();
            self.damaged.clear();
            self.files.clear();
            if let Ok(mut c) = self.cache.lock() {
                *c = BaseCache::default();
            }
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

    /// The bytes an object takes in its pack (compressed), without reading it.
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
        for e in entries {
            if let hashbrown::hash_map::Entry::Vacant(v) = self.index.entry(e.id) {
                v.insert(Loc {
                    pack,
                    offset: e.offset,
                    len: e.len,
                    ulen: e.ulen,
                    kind: e.kind,
                    codec: e.codec,
                });
                if let Some(b) = e.base {
                    self.bases.insert(e.id, b);
                }
            }
        }
        self.known_packs.insert(path.clone());
        self.files.insert(pack, file);
        self.packs.push(Arc::new(Pack { path }));
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
        self.decode_at(id, 0)
    }

    /// The length of a delta's chain of bases (0 for an object stored whole).
    pub fn delta_depth(&self, id: &ObjectId) -> usize {
        let mut depth = 0;
        let mut cur = *id;
        while let Some(b) = self.bases.get(&cur) {
            depth += 1;
            if depth > MAX_CHAIN {
                break;
            }
            cur = *b;
        }
        depth
    }

    /// The base a stored delta was encoded against.
    pub fn delta_base_of(&self, id: &ObjectId) -> Option<ObjectId> {
        self.bases.get(id).copied()
    }

    /// `id` as a delta base for a new blob or tree, if it is a stored blob or
    /// tree whose chain leaves room for one more link and whose bytes read
    /// back intact.
    pub fn offer_base(&self, id: &ObjectId) -> Option<DeltaBase> {
        if !matches!(self.kind(id), Some(ObjectKind::Blob | ObjectKind::Tree)) {
            return None;
        }
        let depth = self.delta_depth(id);
        if depth >= MAX_CHAIN {
            return None;
        }
        let encoding = self.base_encoding(id, 0).ok()?;
        Some(DeltaBase {
            id: *id,
            encoding,
            depth,
        })
    }

    fn base_encoding(&self, id: &ObjectId, depth: usize) -> Result<Arc<Vec<u8>>> {
        let cached = self.cache.lock().ok().and_then(|mut c| c.get(id));
        if let Some(v) = cached {
            return Ok(v);
        }
        let v = Arc::new(self.decode_at(id, depth)?);
        if let Ok(mut c) = self.cache.lock() {
            c.put(*id, v.clone());
        }
        Ok(v)
    }

    /// How many pack files this store holds open now (at most
    /// [`MAX_OPEN_PACKS`](super::pack_files::MAX_OPEN_PACKS)).
    pub fn open_pack_files(&self) -> usize {
        self.files.open_count()
    }

    /// Changes how many pack files this store keeps open (tests use 1 to
    /// force reopening).
    pub fn set_open_pack_limit(&mut self, limit: usize) {
        self.files.set_limit(limit);
    }

    /// Reads `id`'s stored bytes. If its pack is gone (another process's
    /// repack or gc merged it into a newer pack), reads it from the pack it
    /// moved to: a read never fails because a pack was consolidated.
    fn read_stored(&self, id: &ObjectId, loc: &Loc) -> Result<Stored> {
        let pack = &self.packs[loc.pack as usize];
        match self.files.read(loc.pack, &pack.path, loc.offset, loc.len) {
            Ok(bytes) => Ok(Stored {
                bytes,
                codec: loc.codec,
                ulen: loc.ulen,
                base: self.bases.get(id).copied(),
                path: pack.path.clone(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match self.files.read_moved(&self.dir, &self.known_packs, id) {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => Err(e).at(&pack.path),
                    Err(e) => Err(e).at(&self.dir),
                }
            }
            Err(e) => Err(e).at(&pack.path),
        }
    }

    /// Reads and decodes `id`, `depth` links down a delta chain.
    fn decode_at(&self, id: &ObjectId, depth: usize) -> Result<Vec<u8>> {
        let loc = self.index.get(id).ok_or(RepoError::MissingObject(*id))?;
        let Stored {
            bytes: stored,
            codec: loc_codec,
            ulen,
            base: base_id,
            path: pack_path,
        } = self.read_stored(id, loc)?;
        let base = match loc_codec {
            Codec::Delta => {
                if depth >= MAX_CHAIN {
                    return Err(
                        self.corrupt(id, format!("its delta chain is longer than {MAX_CHAIN}"))
                    );
                }
                let b = base_id
                    .as_ref()
                    .ok_or_else(|| self.corrupt(id, "a delta without a base id"))?;
                match self.base_encoding(b, depth + 1) {
                    Ok(v) => Some(v),
                    Err(RepoError::MissingObject(m)) => {
                        return Err(
                            self.corrupt(id, format!("its delta base {m} is not in the store"))
                        );
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let buf = codec::decode(
            loc_codec,
            &stored,
            ulen as usize,
            base.as_deref().map(|v| v.as_slice()),
        )
        .map_err(|r| self.corrupt(id, r))?;
        if ObjectId::hash(&buf) != *id {
            return Err(RepoError::CorruptObject {
                id: *id,
                path: pack_path,
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
            let checked = File::open(&pack.path)
                .at(&pack.path)
                .and_then(|f| verify_pack_checksum(&f, &pack.path));
            match checked {
                Ok(()) => {}
                // Merged by a repack since this store loaded it: its objects
                // are checked where they are now.
                Err(RepoError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(e.to_string()),
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
    entries: Vec<IndexEntry>,
    seen: HashSet<ObjectId>,
    needs: Vec<(ObjectId, ObjectId)>,
    /// For seal: each path's previous blob, offered as the delta base of its
    /// new version.
    path_bases: HashMap<String, ObjectId>,
    /// Where each of the first `indexed` entries is (`received.rs` looks up
    /// delta bases in the batch; entries are only appended until `finish`).
    positions: HashMap<ObjectId, usize>,
    indexed: usize,
    /// Recently received blobs, decoded: the likely bases of the next ones
    /// (`received.rs`), so a chain is not decoded again link by link.
    recent: received::Recent,
}

impl PackWriter {
    fn new(tmp: &Path) -> Result<Self> {
        fs::create_dir_all(tmp).at(tmp)?;
        let tmp_path = tmp.join(format!("pack-{}-{}.tmp", std::process::id(), unique()));
        // Readable too: a peer's delta may name a base earlier in this batch
        // (`received.rs` reads it back).
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .at(&tmp_path)?;
        let mut w = PackWriter {
            tmp_path,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            done: false,
            offset: 0,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            seen: HashSet::new(),
            needs: Vec::new(),
            path_bases: HashMap::new(),
            positions: HashMap::new(),
            indexed: 0,
            recent: Default::default(),
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
        self.add_with_base(id, encoding, None)
    }

    /// Like [`PackWriter::add_trusted`], offering `base` as a delta base; the
    /// delta is kept only if it pays and the base's chain leaves room.
    pub fn add_with_base(
        &mut self,
        id: ObjectId,
        encoding: &[u8],
        base: Option<&DeltaBase>,
    ) -> Result<()> {
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
        self.store_entry(id, kind, encoding, base)
    }

    /// Compresses (or not) and writes one object whose checks are done.
    fn store_entry(
        &mut self,
        id: ObjectId,
        kind: ObjectKind,
        encoding: &[u8],
        base: Option<&DeltaBase>,
    ) -> Result<()> {
        let base = base.filter(|b| b.depth < MAX_CHAIN && b.id != id);
        let (codec, stored) = codec::encode(encoding, base.map(|b| b.encoding.as_slice()));
        let base_id = match codec {
            Codec::Delta => base.map(|b| b.id),
            _ => None,
        };
        if let Some(b) = base_id {
            self.needs.push((id, b));
        }
        let offset = self.offset;
        let bytes = stored.as_deref().unwrap_or(encoding);
        self.write(bytes)?;
        self.entries.push(IndexEntry {
            id,
            offset,
            len: bytes.len() as u32,
            kind,
            codec,
            ulen: encoding.len() as u32,
            base: base_id,
        });
        self.seen.insert(id);
        Ok(())
    }

    /// Adds an entry copied from another pack as it is stored (codec, bytes
    /// and delta base unchanged): a repack moves objects without decoding
    /// them. The delta base joins the closure check; children need none,
    /// since the object was already in a closed store.
    pub(super) fn add_stored(&mut self, e: &IndexEntry, bytes: &[u8]) -> Result<()> {
        if self.seen.contains(&e.id) {
            return Ok(());
        }
        if let Some(b) = e.base {
            self.needs.push((e.id, b));
        }
        let offset = self.offset;
        self.write(bytes)?;
        self.entries.push(IndexEntry { offset, ..*e });
        self.seen.insert(e.id);
        Ok(())
    }

    /// Records each path's previous blob (from the seal's base tree), offered
    /// as the delta base when [`PackWriter::add_blob_at`] adds that path.
    pub fn set_path_bases(&mut self, bases: HashMap<String, ObjectId>) {
        self.path_bases = bases;
    }

    /// Adds the blob of file `path`, as a delta against that path's previous
    /// version when it pays.
    pub fn add_blob_at(&mut self, path: &str, data: &[u8], store: &Store) -> Result<ObjectId> {
        let base = self.path_bases.get(path).and_then(|b| store.offer_base(b));
        self.add_blob_with_base(data, base.as_ref())
    }

    /// Adds an object received from elsewhere, verifying it against `id` first:
    /// nothing unverified ever becomes visible.
    pub fn add_verified(&mut self, id: ObjectId, encoding: &[u8]) -> Result<()> {
        object::verify(&id, encoding)?;
        self.add_trusted(id, encoding)
    }

    /// Adds a blob from file bytes without building its encoding in memory.
    pub fn add_blob(&mut self, data: &[u8]) -> Result<ObjectId> {
        self.add_blob_with_base(data, None)
    }

    fn add_blob_with_base(&mut self, data: &[u8], base: Option<&DeltaBase>) -> Result<ObjectId> {
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
        let mut encoding = Vec::with_capacity(data.len() + 1);
        encoding.push(ObjectKind::Blob as u8);
        encoding.extend_from_slice(data);
        self.store_entry(id, ObjectKind::Blob, &encoding, base)?;
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
        self.entries.sort_unstable_by_key(|a| a.id);
        let index_offset = self.offset;
        let entries = std::mem::take(&mut self.entries);
        let mut buf = Vec::with_capacity(entries.len() * INDEX_ENTRY);
        for e in &entries {
            buf.extend_from_slice(e.id.as_bytes());
            buf.extend_from_slice(&e.offset.to_be_bytes());
            buf.extend_from_slice(&e.len.to_be_bytes());
            buf.push(e.kind as u8);
            buf.push(e.codec as u8);
            buf.extend_from_slice(&e.ulen.to_be_bytes());
            buf.extend_from_slice(e.base.as_ref().map_or(&[0u8; 32], |b| b.as_bytes()));
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

/// A pack's layout, known from its trailer: the version and where the index is.
struct Layout {
    size: u64,
    count: u64,
    index_offset: u64,
    sum: [u8; 32],
    entry: usize,
}

fn read_trailer(file: &File, path: &Path) -> Result<Layout> {
    let size = file.metadata().at(path)?.len();
    if size < (MAGIC.len() + TRAILER) as u64 {
        return Err(bad(path, format!("{size} bytes is too short for a pack")));
    }
    let mut t = [0u8; TRAILER];
    file.read_exact_at(&mut t, size - TRAILER as u64).at(path)?;
    let entry = match &t[48..56] {
        e if e == END_MAGIC => INDEX_ENTRY,
        e if e == END_MAGIC_V1 => INDEX_ENTRY_V1,
        _ => return Err(bad(path, "missing end marker (truncated or not a pack)")),
    };
    let count = u64::from_be_bytes(t[0..8].try_into().unwrap_or_default());
    let index_offset = u64::from_be_bytes(t[8..16].try_into().unwrap_or_default());
    let mut sum = [0u8; 32];
    sum.copy_from_slice(&t[16..48]);
    let index_end = size - TRAILER as u64;
    let expect = count.checked_mul(entry as u64);
    if index_offset < MAGIC.len() as u64
        || index_offset > index_end
        || expect != Some(index_end - index_offset)
    {
        return Err(bad(path, "index bounds do not match the file size"));
    }
    Ok(Layout {
        size,
        count,
        index_offset,
        sum,
        entry,
    })
}

/// Parses one index entry of either version; `None` if it is invalid.
fn parse_entry(e: &[u8], index_offset: u64) -> Option<IndexEntry> {
    let mut id = [0u8; 32];
    id.copy_from_slice(e.get(0..32)?);
    let offset = u64::from_be_bytes(e.get(32..40)?.try_into().ok()?);
    let len = u32::from_be_bytes(e.get(40..44)?.try_into().ok()?);
    let kind = ObjectKind::from_byte(*e.get(44)?)?;
    if offset < MAGIC.len() as u64 || offset.saturating_add(u64::from(len)) > index_offset {
        return None;
    }
    let (codec, ulen, base) = if e.len() == INDEX_ENTRY_V1 {
        (Codec::Raw, len, None)
    } else {
        let codec = Codec::from_byte(*e.get(45)?)?;
        let ulen = u32::from_be_bytes(e.get(46..50)?.try_into().ok()?);
        let mut b = [0u8; 32];
        b.copy_from_slice(e.get(50..82)?);
        let base = (codec == Codec::Delta).then_some(ObjectId(b));
        let sane = ulen as usize <= MAX_OBJECT
            && (codec != Codec::Raw || ulen == len)
            && (codec == Codec::Delta || b == [0u8; 32])
            && base != Some(ObjectId(id));
        if !sane {
            return None;
        }
        (codec, ulen, base)
    };
    Some(IndexEntry {
        id: ObjectId(id),
        offset,
        len,
        kind,
        codec,
        ulen,
        base,
    })
}

pub(super) fn read_index(file: &File, path: &Path) -> Result<Vec<IndexEntry>> {
    match read_index_lenient(file, path)? {
        (entries, 0) => Ok(entries),
        _ => Err(bad(path, "index entry is invalid")),
    }
}

/// Like [`read_index`], but skips entries that are invalid (a kind byte or an
/// offset garbled) instead of refusing the pack; returns how many it skipped.
fn read_index_lenient(file: &File, path: &Path) -> Result<(Vec<IndexEntry>, usize)> {
    let l = read_trailer(file, path)?;
    let index_end = l.size - TRAILER as u64;
    let mut buf = vec![0u8; (index_end - l.index_offset) as usize];
    file.read_exact_at(&mut buf, l.index_offset).at(path)?;
    let mut out = Vec::with_capacity(l.count as usize);
    let mut bad = 0;
    for e in buf.chunks_exact(l.entry) {
        match parse_entry(e, l.index_offset) {
            Some(entry) => out.push(entry),
            None => bad += 1,
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
///
/// A delta's base is read from `store` (which loaded the pack's readable entries).
pub fn for_each_intact(
    path: &Path,
    store: &Store,
    mut f: impl FnMut(ObjectId, &[u8]) -> Result<()>,
) -> Result<usize> {
    let file = File::open(path).at(path)?;
    let (entries, mut bad) = read_index_lenient(&file, path)?;
    let mut buf = Vec::new();
    for e in entries {
        buf.resize(e.len as usize, 0);
        if file.read_exact_at(&mut buf, e.offset).is_err() {
            bad += 1;
            continue;
        }
        let base = match e.base {
            Some(b) => match store.read_raw(&b) {
                Ok(v) => Some(v),
                Err(_) => {
                    bad += 1;
                    continue;
                }
            },
            None => None,
        };
        match codec::decode(e.codec, &buf, e.ulen as usize, base.as_deref()) {
            Ok(enc) if ObjectId::hash(&enc) == e.id => f(e.id, &enc)?,
            _ => bad += 1,
        }
    }
    Ok(bad)
}

/// The ids one pack file holds (from its index).
pub fn pack_ids(path: &Path) -> Result<Vec<ObjectId>> {
    let file = File::open(path).at(path)?;
    Ok(read_index(&file, path)?.into_iter().map(|e| e.id).collect())
}

pub(super) fn verify_pack_checksum(file: &File, path: &Path) -> Result<()> {
    let Layout {
        size, sum, entry, ..
    } = read_trailer(file, path)?;
    let magic = if entry == INDEX_ENTRY {
        MAGIC
    } else {
        MAGIC_V1
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let end = size - TRAILER as u64;
    let mut pos = 0u64;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos).at(path)?;
        if pos == 0 && &buf[..MAGIC.len().min(n)] != magic {
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

/// Whether the pack at `path` is a version-1 pack (raw objects), which the
/// next `gc` rewrites as version 2.
pub fn is_v1(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut magic, 0))
        .is_ok()
        && &magic == MAGIC_V1
}

/// Writes a version-1 pack (`IVPACK01`, every object raw) holding `objects`
/// (id, canonical encoding) at `dest`. Version 2 never writes these; tests use
/// it to build the version-1 repositories an upgrade starts from.
pub fn write_v1_pack(dest: &Path, objects: &[(ObjectId, Vec<u8>)]) -> Result<()> {
    let mut out = MAGIC_V1.to_vec();
    let mut index: Vec<(ObjectId, u64, u32, u8)> = Vec::with_capacity(objects.len());
    for (id, enc) in objects {
        let kind = object::kind_of(enc)?;
        index.push((*id, out.len() as u64, enc.len() as u32, kind as u8));
        out.extend_from_slice(enc);
    }
    index.sort_unstable_by_key(|e| e.0);
    index.dedup_by_key(|e| e.0);
    let index_offset = out.len() as u64;
    for (id, off, len, kind) in &index {
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&off.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.push(*kind);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(&(index.len() as u64).to_be_bytes());
    out.extend_from_slice(&index_offset.to_be_bytes());
    out.extend_from_slice(sum.as_bytes());
    out.extend_from_slice(END_MAGIC_V1);
    fs::write(dest, out).at(dest)
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
