//! How `gc` writes the live objects: a full repack with a deeper delta search
//! than a seal can afford.
//!
//! A seal offers each new blob one base, that path's previous version. gc has
//! time for more, and sees the whole history at once: each blob that is some
//! file's content is tried against the last [`PATH_WINDOW`] versions of the
//! same path, its current base, and the [`SIZE_WINDOW`] blobs written so far
//! that are closest in size (renamed or copied files), and the smallest
//! encoding wins (a delta only when it is at most 3/4 of plain zstd, as in
//! `codec.rs`). Versions of a path go oldest first, so a delta's base is
//! always already in the new pack and its chain depth is known: a base whose
//! new chain is [`MAX_CHAIN`] long is not offered.
//!
//! Trees get the same search by directory path (the last versions of the
//! same directory, no size window): a directory's new version differs from
//! its old one by the entries that changed, and its 32-byte ids do not
//! compress any other way.
//!
//! Bounded: at most [`MAX_CANDIDATES`] trials per blob, blobs above
//! [`SEARCH_LIMIT`] bytes get one, and decoded encodings kept for reuse as
//! bases are capped at [`WINDOW_BYTES`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use ivaldi_core::ObjectId;
use ivaldi_core::object::{Mode, ObjectKind};

use super::Repository;
use super::codec::{self, Codec};
use super::error::Result;
use super::pack::{IndexEntry, MAX_CHAIN, PackWriter};

/// Earlier versions of the same path tried as bases.
pub const PATH_WINDOW: usize = 3;
/// Blobs of the nearest sizes tried as bases.
pub const SIZE_WINDOW: usize = 3;
/// Bases tried per blob at most.
pub const MAX_CANDIDATES: usize = 6;
/// Blobs larger than this are tried against one base only.
pub const SEARCH_LIMIT: usize = 4 << 20;
/// Bytes of decoded encodings kept for reuse as bases.
const WINDOW_BYTES: usize = 64 << 20;

/// What the search did.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeltaStats {
    /// Objects stored as deltas in the new pack.
    pub deltas: usize,
    /// The longest chain of bases in the new pack.
    pub max_depth: usize,
}

struct Search<'a> {
    repo: &'a Repository,
    live: &'a HashSet<ObjectId>,
    /// Chain depth of every object written to the new pack.
    depth: HashMap<ObjectId, usize>,
    /// Written blobs by size, for the size window.
    by_size: BTreeMap<(usize, ObjectId), ()>,
    /// Recently decoded encodings, least recently used first.
    window: VecDeque<(ObjectId, Arc<Vec<u8>>)>,
    window_bytes: usize,
    stats: DeltaStats,
}

/// Writes every object of `live` into `writer` (see the module comment).
pub fn write_live(
    repo: &Repository,
    live: &HashSet<ObjectId>,
    writer: &mut PackWriter,
) -> Result<DeltaStats> {
    let mut s = Search {
        repo,
        live,
        depth: HashMap::new(),
        by_size: BTreeMap::new(),
        window: VecDeque::new(),
        window_bytes: 0,
        stats: DeltaStats::default(),
    };
    let paths = path_versions(repo, live)?;
    for versions in paths.values() {
        for (i, id) in versions.iter().enumerate() {
            if s.depth.contains_key(id) {
                continue;
            }
            let mut candidates: Vec<ObjectId> = versions[..i]
                .iter()
                .rev()
                .take(PATH_WINDOW)
                .copied()
                .collect();
            let kind = repo.store.kind(id).unwrap_or(ObjectKind::Blob);
            s.write_versioned(*id, kind, &mut candidates, writer)?;
        }
    }
    // Everything else (trees, seals, chunk lists, chunks of large files) in id
    // order; a blob keeps its current base, written first if need be.
    let mut rest: Vec<ObjectId> = live
        .iter()
        .filter(|id| !s.depth.contains_key(*id))
        .copied()
        .collect();
    rest.sort_unstable();
    for id in rest {
        let mut chain = vec![id];
        while let Some(b) = chain.last().and_then(|c| repo.store.delta_base_of(c))
            && live.contains(&b)
            && !s.depth.contains_key(&b)
            && !chain.contains(&b)
        {
            chain.push(b);
        }
        for id in chain.into_iter().rev() {
            if s.depth.contains_key(&id) {
                continue;
            }
            if let Some(kind @ (ObjectKind::Blob | ObjectKind::Tree)) = repo.store.kind(&id) {
                s.write_versioned(id, kind, &mut Vec::new(), writer)?;
            } else {
                let raw = repo.store.read_raw(&id)?;
                writer.add_with_base(id, &raw, None)?;
                s.depth.insert(id, 0);
            }
        }
    }
    Ok(s.stats)
}

impl Search<'_> {
    /// Writes blob or tree `id`, trying `candidates` (most promising first),
    /// its current base and, for a blob, the size window.
    fn write_versioned(
        &mut self,
        id: ObjectId,
        kind: ObjectKind,
        candidates: &mut Vec<ObjectId>,
        writer: &mut PackWriter,
    ) -> Result<()> {
        let enc = self.encoding(&id)?;
        if let Some(b) = self.repo.store.delta_base_of(&id) {
            candidates.push(b);
        }
        let len = enc.len();
        if kind == ObjectKind::Blob {
            let below = self.by_size.range(..(len, id)).rev().take(SIZE_WINDOW);
            let above = self.by_size.range((len, id)..).take(SIZE_WINDOW);
            let mut near: Vec<(usize, ObjectId)> = below.chain(above).map(|(k, _)| *k).collect();
            near.sort_by_key(|(l, _)| l.abs_diff(len));
            candidates.extend(near.into_iter().map(|(_, i)| i).take(SIZE_WINDOW));
        }
        let mut seen = HashSet::new();
        candidates.retain(|c| {
            *c != id
                && self.live.contains(c)
                && self.depth.get(c).is_some_and(|d| *d < MAX_CHAIN)
                && seen.insert(*c)
        });
        let limit = if len > SEARCH_LIMIT {
            1
        } else {
            MAX_CANDIDATES
        };
        candidates.truncate(limit);
        let mut bases = Vec::with_capacity(candidates.len());
        for c in candidates.iter() {
            bases.push(self.encoding(c)?);
        }
        let refs: Vec<&[u8]> = bases.iter().map(|b| b.as_slice()).collect();
        let (codec, stored, which) = codec::encode_best(&enc, &refs);
        let base = which.and_then(|i| candidates.get(i).copied());
        let depth = base.map_or(0, |b| self.depth.get(&b).copied().unwrap_or(0) + 1);
        let bytes = stored.as_deref().unwrap_or(&enc);
        let entry = IndexEntry {
            id,
            offset: 0,
            len: bytes.len() as u32,
            kind,
            codec,
            ulen: enc.len() as u32,
            base: if codec == Codec::Delta { base } else { None },
        };
        writer.add_stored(&entry, bytes)?;
        if entry.base.is_some() {
            self.stats.deltas += 1;
            self.stats.max_depth = self.stats.max_depth.max(depth);
        }
        self.depth.insert(id, depth);
        if kind == ObjectKind::Blob {
            self.by_size.insert((len, id), ());
        }
        Ok(())
    }

    /// `id`'s canonical encoding, from the window or the store.
    fn encoding(&mut self, id: &ObjectId) -> Result<Arc<Vec<u8>>> {
        if let Some(i) = self.window.iter().position(|(k, _)| k == id)
            && let Some(e) = self.window.remove(i)
        {
            let v = e.1.clone();
            self.window.push_back(e);
            return Ok(v);
        }
        let v = Arc::new(self.repo.store.read_raw(id)?);
        if v.len() <= WINDOW_BYTES / 8 {
            self.window_bytes += v.len();
            self.window.push_back((*id, v.clone()));
            while self.window_bytes > WINDOW_BYTES || self.window.len() > 64 {
                match self.window.pop_front() {
                    Some((_, old)) => self.window_bytes -= old.len(),
                    None => break,
                }
            }
        }
        Ok(v)
    }
}

/// Each live blob that is a file's content, under the first path it appears
/// at, and each live tree under its directory path (`""` for roots, `"a/b/"`
/// for others: never a file's path), with every path's versions oldest first
/// (seals in time order).
fn path_versions(
    repo: &Repository,
    live: &HashSet<ObjectId>,
) -> Result<BTreeMap<String, Vec<ObjectId>>> {
    let mut seals = Vec::new();
    for id in live {
        if repo.store.kind(id) == Some(ObjectKind::Seal) {
            let s = repo.store.seal(id)?;
            seals.push((s.time.seconds, *id, s.tree));
        }
    }
    seals.sort();
    let mut out: BTreeMap<String, Vec<ObjectId>> = BTreeMap::new();
    let mut placed = HashSet::new();
    let mut trees = HashSet::new();
    for (_, _, root) in seals {
        let mut stack = vec![(String::new(), root)];
        while let Some((prefix, tree)) = stack.pop() {
            if !trees.insert(tree) {
                continue;
            }
            if live.contains(&tree) && placed.insert(tree) {
                out.entry(prefix.clone()).or_default().push(tree);
            }
            for e in repo.store.tree(&tree)?.entries() {
                let path = format!("{prefix}{}", e.name);
                match e.mode {
                    Mode::Tree => stack.push((format!("{path}/"), e.id)),
                    Mode::File | Mode::Executable
                        if repo.store.kind(&e.id) == Some(ObjectKind::Blob)
                            && placed.insert(e.id) =>
                    {
                        out.entry(path).or_default().push(e.id);
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}
