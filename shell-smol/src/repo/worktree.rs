//! The working tree: scanning it into a snapshot, comparing, and checking out.
//!
//! A stat cache (`.ivaldi/index`) remembers each file's id with the `stat` fields
//! it was hashed under, so sealing a change of 50 files in a 5,000-file tree reads
//! 50 files, not 5,000. An entry whose modification time is too close to the scan
//! that recorded it is not trusted (the "racy" case: a same-size rewrite within the
//! file system's timestamp tick would otherwise go unseen); it is hashed again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use ivaldi_core::ObjectId;
use ivaldi_core::chunk::{self, CHUNK_THRESHOLD, Chunker, MAX_CHUNK};
use ivaldi_core::object::{self, Mode, validate_name};

use super::error::{IoContext, RepoError, Result};
use super::pack::{PackWriter, Store};
use super::{DOT_DIR, Repository, write_atomic};

/// A snapshot flattened to paths: `/`-separated path → mode and content id.
/// Directories are implied by their files (an empty directory is not tracked).
pub type Flat = BTreeMap<String, (Mode, ObjectId)>;

/// The ignore file honoured in every directory, with `.gitignore` syntax.
pub const IGNORE_FILE: &str = ".ivaldiignore";
const CACHE_MAGIC: &[u8; 8] = b"IVIDX001";
/// Entries modified less than this long before the scan that recorded them are
/// re-hashed next time (covers coarse file-system timestamp ticks).
const RACY_NS: i64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    mtime_ns: i64,
    ctime_ns: i64,
    size: u64,
    ino: u64,
    mode: Mode,
}

impl Stat {
    fn of(meta: &fs::Metadata) -> Option<Stat> {
        let ft = meta.file_type();
        let mode = if ft.is_symlink() {
            Mode::Symlink
        } else if ft.is_file() {
            if meta.permissions().mode() & 0o111 != 0 {
                Mode::Executable
            } else {
                Mode::File
            }
        } else {
            return None;
        };
        Some(Stat {
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            size: meta.size(),
            ino: meta.ino(),
            mode,
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct CacheEntry {
    stat: Stat,
    id: ObjectId,
}

/// The stat cache, loaded from and saved to `.ivaldi/index`.
#[derive(Debug, Default)]
pub struct StatCache {
    scan_ns: i64,
    entries: HashMap<String, CacheEntry>,
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl StatCache {
    fn path(repo: &Repository) -> PathBuf {
        repo.dot_dir().join("index")
    }

    /// Loads the cache; a missing or damaged cache is only a slower scan, so it
    /// is discarded with a log line rather than reported as an error.
    pub fn load(repo: &Repository) -> StatCache {
        let path = Self::path(repo);
        let Ok(bytes) = fs::read(&path) else {
            return StatCache::default();
        };
        match Self::decode(&bytes) {
            Some(c) => c,
            None => {
                tracing::warn!(path = %path.display(), "ignoring damaged stat cache");
                StatCache::default()
            }
        }
    }

    fn decode(b: &[u8]) -> Option<StatCache> {
        let mut r = b.strip_prefix(CACHE_MAGIC)?;
        let mut take = |n: usize| -> Option<&[u8]> {
            if r.len() < n {
                return None;
            }
            let (a, rest) = r.split_at(n);
            r = rest;
            Some(a)
        };
        let i64_ = |s: &[u8]| i64::from_be_bytes(s.try_into().unwrap_or_default());
        let u64_ = |s: &[u8]| u64::from_be_bytes(s.try_into().unwrap_or_default());
        let scan_ns = i64_(take(8)?);
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        let mut entries = HashMap::with_capacity(count.min(1 << 20));
        for _ in 0..count {
            let plen = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
            let path = std::str::from_utf8(take(plen)?).ok()?.to_owned();
            let mtime_ns = i64_(take(8)?);
            let ctime_ns = i64_(take(8)?);
            let size = u64_(take(8)?);
            let ino = u64_(take(8)?);
            let mode = match take(1)?[0] {
                1 => Mode::File,
                2 => Mode::Executable,
                3 => Mode::Symlink,
                _ => return None,
            };
            let id = ObjectId(take(32)?.try_into().ok()?);
            let stat = Stat {
                mtime_ns,
                ctime_ns,
                size,
                ino,
                mode,
            };
            entries.insert(path, CacheEntry { stat, id });
        }
        Some(StatCache { scan_ns, entries })
    }

    /// Saves the cache (atomically; not fsynced, since losing it costs only time).
    pub fn save(&self, repo: &Repository) -> Result<()> {
        let mut out = Vec::with_capacity(24 + self.entries.len() * 100);
        out.extend_from_slice(CACHE_MAGIC);
        out.extend_from_slice(&self.scan_ns.to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        let mut paths: Vec<&String> = self.entries.keys().collect();
        paths.sort();
        for p in paths {
            let e = &self.entries[p];
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(&e.stat.mtime_ns.to_be_bytes());
            out.extend_from_slice(&e.stat.ctime_ns.to_be_bytes());
            out.extend_from_slice(&e.stat.size.to_be_bytes());
            out.extend_from_slice(&e.stat.ino.to_be_bytes());
            out.push(e.stat.mode as u8);
            out.extend_from_slice(e.id.as_bytes());
        }
        write_atomic(&Self::path(repo), &out, false)
    }

    fn lookup(&self, path: &str, stat: &Stat) -> Option<ObjectId> {
        let e = self.entries.get(path)?;
        (e.stat == *stat && stat.mtime_ns < self.scan_ns - RACY_NS).then_some(e.id)
    }

    /// Records a file just written by a checkout.
    fn record(&mut self, path: &str, meta: &fs::Metadata, id: ObjectId) {
        if let Some(stat) = Stat::of(meta) {
            self.entries
                .insert(path.to_owned(), CacheEntry { stat, id });
        }
    }
}

struct Found {
    rel: String,
    abs: PathBuf,
    stat: Stat,
}

/// Lists every non-ignored file, symlink and executable under the working tree.
///
/// A plain `read_dir` recursion: directory entries give their type without a
/// `stat`, each file is `stat`ed relative to its directory, and `.ivaldiignore`
/// (gitignore syntax) is parsed only in directories that have one; deeper files
/// take precedence, as in git.
fn walk(root: &Path) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    let mut ignores: Vec<ignore::gitignore::Gitignore> = Vec::new();
    walk_dir(root, root, "", &mut ignores, &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn ignored(stack: &[ignore::gitignore::Gitignore], abs: &Path, is_dir: bool) -> bool {
    for g in stack.iter().rev() {
        let m = g.matched(abs, is_dir);
        if m.is_ignore() {
            return true;
        }
        if m.is_whitelist() {
            return false;
        }
    }
    false
}

fn walk_dir(
    root: &Path,
    dir: &Path,
    rel_dir: &str,
    ignores: &mut Vec<ignore::gitignore::Gitignore>,
    out: &mut Vec<Found>,
) -> Result<()> {
    let mut entries = Vec::new();
    let mut has_ignore_file = false;
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        if entry.file_name() == IGNORE_FILE {
            has_ignore_file = true;
        }
        entries.push(entry);
    }
    if has_ignore_file {
        let (g, err) = ignore::gitignore::Gitignore::new(dir.join(IGNORE_FILE));
        if let Some(e) = err {
            tracing::warn!(path = %dir.join(IGNORE_FILE).display(), error = %e, "problem in ignore file");
        }
        ignores.push(g);
    }
    for entry in entries {
        let name_os = entry.file_name();
        let abs = entry.path();
        let name = name_os.to_str().ok_or_else(|| RepoError::WorkTree {
            path: abs.clone(),
            reason: "file name is not valid UTF-8; Ivaldi stores UTF-8 names only".into(),
        })?;
        if rel_dir.is_empty() && (name == DOT_DIR || name.starts_with(".ivaldi-forge-")) {
            continue;
        }
        let ft = entry.file_type().at(&abs)?;
        if ignored(ignores, &abs, ft.is_dir()) {
            continue;
        }
        validate_name(name).map_err(|e| RepoError::WorkTree {
            path: abs.clone(),
            reason: e.to_string(),
        })?;
        let rel = if rel_dir.is_empty() {
            name.to_owned()
        } else {
            format!("{rel_dir}/{name}")
        };
        if ft.is_dir() {
            walk_dir(root, &abs, &rel, ignores, out)?;
            continue;
        }
        // `DirEntry::metadata` stats relative to the open directory and does not
        // follow symlinks.
        let meta = entry.metadata().at(&abs)?;
        let Some(stat) = Stat::of(&meta) else {
            tracing::warn!(path = %abs.display(), "skipping special file (not a file or symlink)");
            continue;
        };
        out.push(Found { rel, abs, stat });
    }
    if has_ignore_file {
        ignores.pop();
    }
    let _ = root;
    Ok(())
}

/// The result of scanning the working tree.
#[derive(Debug)]
pub struct Scan {
    /// Every tracked path and its content id.
    pub files: Flat,
    cache: StatCache,
    cache_changed: bool,
}

impl Scan {
    /// Saves the refreshed stat cache if the scan learned anything.
    pub fn save_cache(&self, repo: &Repository) -> Result<()> {
        if self.cache_changed {
            self.cache.save(repo)?;
        }
        Ok(())
    }
}

/// Scans the working tree. With a writer, every file whose content the store
/// lacks is added to it, so the snapshot can be sealed.
pub fn scan(repo: &Repository, mut writer: Option<&mut PackWriter>) -> Result<Scan> {
    let scan_ns = now_ns();
    let old = StatCache::load(repo);
    let found = walk(repo.root())?;
    let store = &repo.store;
    let mut files = Flat::new();
    let mut cache = StatCache {
        scan_ns,
        entries: HashMap::with_capacity(found.len()),
    };
    let mut cache_changed = old.entries.len() != found.len();
    let mut small = Vec::new();
    let mut large = Vec::new();
    for f in &found {
        if let Some(id) = old.lookup(&f.rel, &f.stat)
            && (writer.is_none() || store.contains(&id))
        {
            files.insert(f.rel.clone(), (f.stat.mode, id));
            cache
                .entries
                .insert(f.rel.clone(), CacheEntry { stat: f.stat, id });
        } else if f.stat.mode != Mode::Symlink && f.stat.size >= CHUNK_THRESHOLD {
            large.push(f);
        } else {
            small.push(f);
        }
    }
    if !small.is_empty() || !large.is_empty() {
        cache_changed = true;
    }
    let keep = writer.is_some();
    let hashed = hash_small_files(&small, keep, store)?;
    for (f, (id, bytes)) in small.iter().zip(hashed) {
        if let (Some(w), Some(bytes)) = (writer.as_deref_mut(), bytes) {
            w.add_blob_at(&f.rel, &bytes, store)?;
        }
        files.insert(f.rel.clone(), (f.stat.mode, id));
        cache
            .entries
            .insert(f.rel.clone(), CacheEntry { stat: f.stat, id });
    }
    for f in large {
        let id = hash_large_file(&f.abs, store, writer.as_deref_mut())?;
        files.insert(f.rel.clone(), (f.stat.mode, id));
        cache
            .entries
            .insert(f.rel.clone(), CacheEntry { stat: f.stat, id });
    }
    Ok(Scan {
        files,
        cache,
        cache_changed,
    })
}

fn read_small(f: &Found) -> Result<Vec<u8>> {
    if f.stat.mode == Mode::Symlink {
        let target = fs::read_link(&f.abs).at(&f.abs)?;
        return Ok(target.as_os_str().as_bytes().to_vec());
    }
    let mut buf = Vec::with_capacity(f.stat.size as usize);
    File::open(&f.abs)
        .and_then(|mut file| file.read_to_end(&mut buf))
        .at(&f.abs)?;
    Ok(buf)
}

type Hashed = (ObjectId, Option<Vec<u8>>);

/// Hashes small files on every core; keeps the bytes of those the store lacks
/// when `keep` (the caller is sealing), so each file is read once.
fn hash_small_files(files: &[&Found], keep: bool, store: &Store) -> Result<Vec<Hashed>> {
    let one = |f: &Found| -> Result<Hashed> {
        let bytes = read_small(f)?;
        let id = object::blob_id(&bytes);
        let bytes = (keep && !store.contains(&id)).then_some(bytes);
        Ok((id, bytes))
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if files.len() < 64 || threads < 2 {
        return files.iter().map(|f| one(f)).collect();
    }
    let per = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(|f| one(f)).collect::<Result<Vec<_>>>()))
            .collect();
        let mut out = Vec::with_capacity(files.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| RepoError::Refused("a hashing thread panicked".into()))??;
            out.extend(part);
        }
        Ok(out)
    })
}

/// Chunks a large file as it streams past (memory stays at one read buffer plus one
/// chunk), storing the chunks and chunk lists the store lacks.
fn hash_large_file(
    path: &Path,
    store: &Store,
    mut writer: Option<&mut PackWriter>,
) -> Result<ObjectId> {
    let mut file = File::open(path).at(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut chunk = Vec::with_capacity(MAX_CHUNK);
    let mut leaves = Vec::new();
    let mut chunker = Chunker::new();
    let mut emit = |chunk: &[u8], writer: &mut Option<&mut PackWriter>| -> Result<()> {
        let id = object::blob_id(chunk);
        if let Some(w) = writer.as_deref_mut()
            && !store.contains(&id)
        {
            w.add_blob(chunk)?;
        }
        leaves.push((id, chunk.len() as u64));
        Ok(())
    };
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        let mut rest = &buf[..n];
        while let Some(cut) = chunker.next_cut(rest) {
            if chunk.is_empty() {
                emit(&rest[..cut], &mut writer)?;
            } else {
                chunk.extend_from_slice(&rest[..cut]);
                emit(&chunk, &mut writer)?;
                chunk.clear();
            }
            rest = &rest[cut..];
        }
        chunk.extend_from_slice(rest);
    }
    if !chunk.is_empty() {
        emit(&chunk, &mut writer)?;
    }
    let nodes = chunk::build_chunk_lists(&leaves);
    let root = nodes
        .last()
        .map(|n| n.id)
        .ok_or_else(|| RepoError::WorkTree {
            path: path.to_owned(),
            reason: "file shrank below the chunking threshold while being read".into(),
        })?;
    if let Some(w) = writer {
        for n in &nodes {
            if !store.contains(&n.id) {
                w.add_trusted(n.id, &n.bytes)?;
            }
        }
    }
    Ok(root)
}

/// Builds the trees of a snapshot, adding the ones the store lacks to `writer`,
/// and returns the root tree's id. Each new tree is offered the tree at the
/// same path under `old_root` (the snapshot it replaces) as its delta base:
/// a directory's new version differs from its old one by the entries that
/// changed, and its 32-byte ids do not compress any other way.
pub fn build_tree(
    files: &Flat,
    store: &Store,
    writer: &mut PackWriter,
    old_root: Option<&ObjectId>,
) -> Result<ObjectId> {
    // The core encodes the trees (one implementation for the CLI, the merge
    // strategies and the tests); here they are only stored.
    let (root, trees) = ivaldi_core::conflict::build_trees_at(files)
        .map_err(|e| RepoError::Refused(e.to_string()))?;
    let mut old = OldTrees::new(store, old_root);
    for (path, id, bytes) in trees {
        if !store.contains(&id) && !writer.holds(&id) {
            let base = old.at(&path).and_then(|b| store.offer_base(&b));
            writer.add_with_base(id, &bytes, base.as_ref())?;
        }
    }
    Ok(root)
}

/// The trees of an earlier snapshot by directory path, read only along the
/// paths asked for (a seal that changes 50 files reads their directories,
/// not the whole tree).
struct OldTrees<'a> {
    store: &'a Store,
    dirs: HashMap<String, Option<ObjectId>>,
}

impl<'a> OldTrees<'a> {
    fn new(store: &'a Store, root: Option<&ObjectId>) -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(String::new(), root.copied());
        OldTrees { store, dirs }
    }

    /// The old tree at directory `path` (`""` is the root), if there was one.
    fn at(&mut self, path: &str) -> Option<ObjectId> {
        if let Some(known) = self.dirs.get(path) {
            return *known;
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let found = self.at(parent).and_then(|p| {
            let tree = self.store.tree(&p).ok()?;
            tree.get(name)
                .filter(|e| e.mode == Mode::Tree)
                .map(|e| e.id)
        });
        self.dirs.insert(path.to_owned(), found);
        found
    }
}

/// The id the root tree of a snapshot has, without storing anything.
pub fn tree_id(files: &Flat) -> Result<ObjectId> {
    let (root, _) =
        ivaldi_core::conflict::build_trees(files).map_err(|e| RepoError::Refused(e.to_string()))?;
    Ok(root)
}

/// Flattens a stored tree into paths.
pub fn flatten(store: &Store, tree: &ObjectId) -> Result<Flat> {
    let mut out = Flat::new();
    fn go(store: &Store, id: &ObjectId, prefix: &str, out: &mut Flat) -> Result<()> {
        for e in store.tree(id)?.entries() {
            let path = if prefix.is_empty() {
                e.name.clone()
            } else {
                format!("{prefix}/{}", e.name)
            };
            if e.mode == Mode::Tree {
                go(store, &e.id, &path, out)?;
            } else {
                out.insert(path, (e.mode, e.id));
            }
        }
        Ok(())
    }
    go(store, tree, "", &mut out)?;
    Ok(out)
}

/// Carries the submodules (gitlinks) of `base` into a scan of the working tree:
/// a scan finds no files for them, yet while their directory exists they are
/// unchanged, as in git before `submodule init`. Files found inside such a
/// directory belong to the submodule and are not tracked here.
pub fn keep_gitlinks(root: &Path, base: &Flat, files: &mut Flat) {
    for (path, (mode, id)) in base {
        if *mode != Mode::Gitlink || !root.join(path).is_dir() {
            continue;
        }
        let inside = format!("{path}/");
        files.retain(|p, _| !p.starts_with(&inside));
        files.insert(path.clone(), (Mode::Gitlink, *id));
    }
}

/// Differences between two snapshots, by path.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }

    /// Every changed path.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.modified).chain(&self.deleted)
    }
}

/// What changed from `old` to `new`.
pub fn diff(old: &Flat, new: &Flat) -> Changes {
    let mut c = Changes::default();
    for (path, entry) in new {
        match old.get(path) {
            None => c.added.push(path.clone()),
            Some(o) if o != entry => c.modified.push(path.clone()),
            Some(_) => {}
        }
    }
    for path in old.keys() {
        if !new.contains_key(path) {
            c.deleted.push(path.clone());
        }
    }
    c
}

/// Rewrites the working tree from snapshot `from` (what it holds now, as far as
/// tracked files go) to snapshot `to`. The caller has checked that no uncommitted
/// work is in the way. Files are replaced by rename, so each is old or new.
pub fn checkout(repo: &Repository, from: &Flat, to: &Flat) -> Result<()> {
    let root = repo.root();
    let mut cache = StatCache::load(repo);
    cache.scan_ns = now_ns();
    for (path, (mode, _)) in from {
        if !to.contains_key(path) {
            let abs = root.join(path);
            if *mode == Mode::Gitlink {
                // A submodule's directory goes only if nothing was put in it.
                let _ = fs::remove_dir(&abs);
                remove_empty_parents(root, &abs);
                continue;
            }
            match fs::remove_file(&abs) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at(abs),
                _ => {}
            }
            cache.entries.remove(path);
            remove_empty_parents(root, &abs);
        }
    }
    for (path, (mode, id)) in to {
        // A path the same in both snapshots is left alone, uncommitted edits and
        // deletions included: they are carried along.
        if from.get(path) == Some(&(*mode, *id)) {
            continue;
        }
        let abs = root.join(path);
        write_entry(repo, &abs, *mode, id)?;
        if *mode == Mode::Gitlink {
            continue;
        }
        let meta = fs::symlink_metadata(&abs).at(&abs)?;
        cache.record(path, &meta, *id);
    }
    cache.save(repo)
}

fn remove_empty_parents(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Writes one entry's content at `abs`, replacing whatever is there.
pub fn write_entry(repo: &Repository, abs: &Path, mode: Mode, id: &ObjectId) -> Result<()> {
    let parent = abs.parent().unwrap_or(repo.root());
    // A file where a directory must go (or the reverse) is cleared first; the
    // caller has already established it holds no uncommitted work.
    let mut p = parent;
    let mut to_check = Vec::new();
    while p != repo.root() {
        to_check.push(p);
        match p.parent() {
            Some(pp) => p = pp,
            None => break,
        }
    }
    for d in to_check.into_iter().rev() {
        if let Ok(m) = fs::symlink_metadata(d)
            && !m.is_dir()
        {
            fs::remove_file(d).at(d)?;
        }
    }
    fs::create_dir_all(parent).at(parent)?;
    if mode == Mode::Gitlink {
        // A submodule shows as an empty directory, as in git before
        // `submodule init`; its commit is not an Ivaldi object.
        if let Ok(m) = fs::symlink_metadata(abs)
            && !m.is_dir()
        {
            fs::remove_file(abs).at(abs)?;
        }
        return fs::create_dir_all(abs).at(abs);
    }
    if let Ok(m) = fs::symlink_metadata(abs)
        && m.is_dir()
    {
        fs::remove_dir_all(abs).at(abs)?;
    }
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.ivaldi-tmp"));
    let _ = fs::remove_file(&tmp);
    if mode == Mode::Symlink {
        let target = repo.store.file_content(id)?;
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &tmp).at(&tmp)?;
    } else {
        let perms = if mode == Mode::Executable {
            0o777
        } else {
            0o666
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perms)
            .open(&tmp)
            .at(&tmp)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let res = repo.store.write_file_content(id, &mut out);
        let flushed = out.flush().at(&tmp);
        if let Err(e) = res.and(flushed) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    fs::rename(&tmp, abs).at(abs)
}
