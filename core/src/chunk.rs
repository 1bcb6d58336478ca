//! Content-defined chunking of large files.
//!
//! A file at or above [`CHUNK_THRESHOLD`] is cut where a rolling Gear hash of its
//! content matches a mask (FastCDC's normalised chunking), so an edit or insertion
//! moves only the cuts near it: the chunks before and after the change keep their
//! ids and are neither stored nor sent again. The chunk ids are then grouped into a
//! tree of [`ChunkList`]s, split where an entry's id matches a pattern, so the index
//! of a 256 MiB file also changes only near the edit.
//!
//! The parameters and the Gear table are part of the object format: changing them
//! changes the ids of large files.

use crate::id::ObjectId;
use crate::object::{ChunkList, MAX_CHUNK_LEVEL};

/// Files this large or larger are stored as chunks.
pub const CHUNK_THRESHOLD: u64 = 1024 * 1024;
/// No cut is made before this many bytes of a chunk.
pub const MIN_CHUNK: usize = 16 * 1024;
/// The size cuts aim for.
pub const AVG_CHUNK: usize = 64 * 1024;
/// A cut is forced at this size.
pub const MAX_CHUNK: usize = 256 * 1024;

// Normalised chunking: a harder mask (more bits) before the average size and an
// easier one after it narrows the spread of chunk sizes. Gear shifts left, so the
// high bits carry the most recent 64 bytes; the masks test those.
const MASK_HARD: u64 = !(u64::MAX >> 18);
const MASK_EASY: u64 = !(u64::MAX >> 14);

const fn splitmix(state: u64) -> (u64, u64) {
    let s = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (s, z ^ (z >> 31))
}

const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut state = 0x4976_616c_6469_4344; // "IvaldiCD"
    let mut i = 0;
    while i < 256 {
        let (s, v) = splitmix(state);
        state = s;
        t[i] = v;
        i += 1;
    }
    t
}

static GEAR: [u64; 256] = gear_table();

/// A streaming chunker: feed it a file's bytes in pieces of any size and it reports
/// where chunks end, with the same cuts whatever the pieces were.
#[derive(Clone, Debug, Default)]
pub struct Chunker {
    len: usize,
    hash: u64,
}

impl Chunker {
    /// A chunker at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans `data`, the next bytes of the file. Returns `Some(n)` when the current
    /// chunk ends after `data[..n]` (the chunker then starts a new chunk, and the
    /// caller feeds `data[n..]` again), or `None` when all of `data` belongs to the
    /// current chunk. The end of the file ends the last chunk; the caller knows it.
    pub fn next_cut(&mut self, data: &[u8]) -> Option<usize> {
        let n = data.len();
        let base = self.len;
        // The first MIN_CHUNK bytes of a chunk are never a cut point: skip them unhashed.
        let mut i = MIN_CHUNK.saturating_sub(base).min(n);
        if base + i < MIN_CHUNK {
            self.len = base + n;
            return None;
        }
        let mut h = self.hash;
        let avg_end = AVG_CHUNK.saturating_sub(base).min(n);
        while i < avg_end {
            h = (h << 1).wrapping_add(GEAR[usize::from(data[i])]);
            i += 1;
            if h & MASK_HARD == 0 {
                return Some(self.reset(i));
            }
        }
        let max_end = MAX_CHUNK.saturating_sub(base).min(n);
        while i < max_end {
            h = (h << 1).wrapping_add(GEAR[usize::from(data[i])]);
            i += 1;
            if h & MASK_EASY == 0 {
                return Some(self.reset(i));
            }
        }
        if base + i >= MAX_CHUNK {
            return Some(self.reset(i));
        }
        self.len = base + n;
        self.hash = h;
        None
    }

    fn reset(&mut self, at: usize) -> usize {
        self.len = 0;
        self.hash = 0;
        at
    }
}

/// The chunk boundaries of a whole in-memory buffer, as end offsets.
pub fn cut_points(data: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut chunker = Chunker::new();
    let mut pos = 0;
    while let Some(n) = chunker.next_cut(&data[pos..]) {
        pos += n;
        cuts.push(pos);
    }
    if pos < data.len() {
        cuts.push(data.len());
    }
    cuts
}

/// A chunk-list node holds at least this many entries (unless it is the last of its
/// level), so the tree's depth is bounded whatever the ids are.
pub const MIN_FANOUT: usize = 16;
/// A chunk-list node holds at most this many entries.
pub const MAX_FANOUT: usize = 512;

fn ends_node(id: &ObjectId, len: usize) -> bool {
    len >= MAX_FANOUT || (len >= MIN_FANOUT && id.0[0] & 0x3f == 0)
}

/// One encoded chunk-list node, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedNode {
    pub id: ObjectId,
    pub bytes: Vec<u8>,
}

/// Groups a large file's chunks (id and size, in file order) into chunk lists.
/// Returns the nodes in bottom-up order, so storing them in order keeps the closure
/// invariant; the last node is the root that a tree entry names. Returns nothing
/// for an empty list and [`MAX_CHUNK_LEVEL`] is never exceeded for any real file.
pub fn build_chunk_lists(leaves: &[(ObjectId, u64)]) -> Vec<EncodedNode> {
    let mut out = Vec::new();
    let mut level_entries: Vec<(ObjectId, u64)> = leaves.to_vec();
    let mut level = 0u8;
    while !level_entries.is_empty() {
        let mut next = Vec::new();
        let mut node = Vec::new();
        for (i, e) in level_entries.iter().enumerate() {
            node.push(*e);
            let last = i + 1 == level_entries.len();
            if last || ends_node(&e.0, node.len()) {
                let list = ChunkList {
                    level,
                    entries: std::mem::take(&mut node),
                };
                let bytes = list.encode();
                let id = ObjectId::hash(&bytes);
                next.push((id, list.total()));
                out.push(EncodedNode { id, bytes });
            }
        }
        if next.len() == 1 || level >= MAX_CHUNK_LEVEL {
            break;
        }
        level_entries = next;
        level += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            let (ns, x) = splitmix(s);
            s = ns;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(n);
        v
    }

    #[test]
    fn cuts_do_not_depend_on_how_the_input_is_split() {
        let data = pseudo_random(3 * 1024 * 1024, 7);
        let whole = cut_points(&data);
        for piece in [1usize, 1000, 4096, 65_537, 1 << 20] {
            let mut chunker = Chunker::new();
            let mut cuts = Vec::new();
            let mut chunk_start = 0;
            let mut offset = 0;
            for p in data.chunks(piece) {
                let mut rest = p;
                let mut at = offset;
                while let Some(n) = chunker.next_cut(rest) {
                    at += n;
                    cuts.push(at);
                    chunk_start = at;
                    rest = &rest[n..];
                }
                offset += p.len();
            }
            if chunk_start < data.len() {
                cuts.push(data.len());
            }
            assert_eq!(cuts, whole, "piece size {piece}");
        }
    }

    #[test]
    fn chunk_sizes_stay_in_bounds_and_near_the_average() {
        let data = pseudo_random(8 * 1024 * 1024, 3);
        let cuts = cut_points(&data);
        let mut prev = 0;
        for (i, &c) in cuts.iter().enumerate() {
            let size = c - prev;
            assert!(size <= MAX_CHUNK);
            assert!(size >= MIN_CHUNK || i + 1 == cuts.len());
            prev = c;
        }
        let avg = data.len() / cuts.len();
        assert!(
            (AVG_CHUNK / 2..AVG_CHUNK * 2).contains(&avg),
            "average {avg}"
        );
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let mut data = pseudo_random(4 * 1024 * 1024, 11);
        let before: Vec<_> = chunk_ids(&data);
        data.splice(2_000_000..2_000_000, pseudo_random(4096, 99));
        let after: Vec<_> = chunk_ids(&data);
        let new = after.iter().filter(|id| !before.contains(id)).count();
        assert!(new <= 3, "{new} chunks changed");
    }

    fn chunk_ids(data: &[u8]) -> Vec<ObjectId> {
        let mut prev = 0;
        cut_points(data)
            .into_iter()
            .map(|c| {
                let id = crate::object::blob_id(&data[prev..c]);
                prev = c;
                id
            })
            .collect()
    }

    #[test]
    fn chunk_list_tree_changes_only_near_an_edit() {
        let leaves: Vec<(ObjectId, u64)> = (0..5000u32)
            .map(|i| (ObjectId::hash(&i.to_be_bytes()), 65_536))
            .collect();
        let a = build_chunk_lists(&leaves);
        let mut edited = leaves.clone();
        edited[2500].0 = ObjectId::hash(b"edited");
        let b = build_chunk_lists(&edited);
        assert!(a.len() > 2, "a 5000-chunk file needs more than one level");
        let new: Vec<_> = b.iter().filter(|n| !a.contains(n)).collect();
        assert!(new.len() <= 3, "{} nodes changed", new.len());
        let new_bytes: usize = new.iter().map(|n| n.bytes.len()).sum();
        assert!(new_bytes < 64 * 1024, "{new_bytes} new index bytes");
        let root = crate::object::ChunkList::decode(&b.last().unwrap().bytes).unwrap();
        assert_eq!(root.total(), 5000 * 65_536);
    }

    #[test]
    fn identical_ids_cannot_deepen_the_tree_past_the_limit() {
        let zero = ObjectId([0; 32]);
        let leaves = vec![(zero, 1); 100_000];
        let nodes = build_chunk_lists(&leaves);
        let root = crate::object::ChunkList::decode(&nodes.last().unwrap().bytes).unwrap();
        assert!(root.level <= MAX_CHUNK_LEVEL);
        assert_eq!(root.total(), 100_000);
    }
}
