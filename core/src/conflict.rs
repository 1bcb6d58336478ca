//! Resolving diverged timelines: the four strategies and the deterministic merge.
//!
//! A divergence is two heads of one timeline, neither containing the other. What
//! a node does about it depends on its strategy for that timeline and, for the two
//! "prefer" strategies, on the peer's, so that two peers always agree:
//!
//! | local \ peer | prefer_remote | prefer_local | other or unknown |
//! |---|---|---|---|
//! | `prefer_remote` | newest head wins | take remote | take remote |
//! | `prefer_local` | keep local | newest head wins | keep local |
//! | `auto_merge` | merge | merge | merge |
//! | `manual` | record | record | record |
//!
//! "Newest" is the larger `(time, id)` of the two heads: a total order on seals, so
//! every pair of nodes, and through them the whole network, settles on the same
//! head instead of swapping heads back and forth. A replaced head is always kept
//! (under `kept/` and the peer's tracking name): no strategy loses a seal.
//!
//! `auto_merge` builds a merge seal that is byte-identical on every node for the
//! same two heads (sorted parents, fixed author, the later parent's time, a fixed
//! message), so nodes that merge at the same time converge instead of merging
//! forever. A merge that is not clean falls back to `manual`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history;
use crate::id::{IdMap, ObjectId};
use crate::merge::{self, ConflictKind, FlatTree, MergeLabels};
use crate::object::{self, Mode, ObjectKind, Seal, Timestamp, Tree, TreeEntry};
use crate::store::{Store, StoreError};
use crate::sync::MAX_TREE_DEPTH;
use crate::timeline::TimelineName;

/// How a diverged timeline is resolved: kept for the user (`manual`),
/// merged, or settled for one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConflictStrategy {
    #[default]
    Manual,
    AutoMerge,
    PreferRemote,
    PreferLocal,
}

/// Automatic merges are recognised by their author (see [`crate::history`]).
pub use crate::history::{MERGE_AUTHOR, is_auto_merge};

/// What to do about one divergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Leave both heads; the user decides.
    Record,
    KeepLocal,
    TakeRemote,
    Merge,
}

/// The strategy for a timeline: the first matching per-timeline override
/// (an exact name, or a `prefix/*` pattern), else the default.
pub fn strategy_for(
    timeline: &TimelineName,
    default: ConflictStrategy,
    overrides: &BTreeMap<String, ConflictStrategy>,
) -> ConflictStrategy {
    if let Some(s) = overrides.get(timeline.as_str()) {
        return *s;
    }
    overrides
        .iter()
        .filter_map(|(pat, s)| {
            let prefix = pat.strip_suffix('*')?;
            timeline
                .as_str()
                .starts_with(prefix)
                .then_some((prefix.len(), *s))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .unwrap_or(default)
}

/// Which of two diverged heads is "newer" for the prefer strategies: by
/// generation (the longest chain of seals below it) first, then seal time,
/// then id. Seal times come from the authors' clocks, and under skew a
/// descendant can carry an older time than its ancestor: ordered by time alone,
/// a prefer decision on one node and a fast-forward on another could undo each
/// other forever. The generation grows along every fast-forward, so each head
/// change on every node raises this key and the network must settle.
pub type HeadKey = (u64, i64);

/// Decides a divergence between `local` and `remote`, each with its
/// [`HeadKey`] (generation, seal time).
pub fn decide(
    ours: ConflictStrategy,
    theirs: Option<ConflictStrategy>,
    local: (&ObjectId, HeadKey),
    remote: (&ObjectId, HeadKey),
) -> Resolution {
    let remote_newer = (remote.1, remote.0) > (local.1, local.0);
    match (ours, theirs) {
        (ConflictStrategy::Manual, _) => Resolution::Record,
        (ConflictStrategy::AutoMerge, _) => Resolution::Merge,
        (ConflictStrategy::PreferRemote, Some(ConflictStrategy::PreferRemote))
        | (ConflictStrategy::PreferLocal, Some(ConflictStrategy::PreferLocal)) => {
            if remote_newer {
                Resolution::TakeRemote
            } else {
                Resolution::KeepLocal
            }
        }
        (ConflictStrategy::PreferRemote, Some(ConflictStrategy::PreferLocal)) => {
            Resolution::TakeRemote
        }
        (ConflictStrategy::PreferRemote, _) => Resolution::TakeRemote,
        (ConflictStrategy::PreferLocal, _) => Resolution::KeepLocal,
    }
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

/// Reads a stored tree into paths.
pub fn flatten(store: &dyn Store, tree: &ObjectId) -> Result<FlatTree, StoreError> {
    fn go(
        store: &dyn Store,
        id: &ObjectId,
        prefix: &str,
        depth: usize,
        out: &mut FlatTree,
    ) -> Result<(), StoreError> {
        if depth > MAX_TREE_DEPTH {
            return Err(failed(format!("tree {id} nested too deeply")));
        }
        let tree = Tree::decode(&store.get(id)?).map_err(failed)?;
        for e in tree.entries() {
            let path = if prefix.is_empty() {
                e.name.clone()
            } else {
                format!("{prefix}/{}", e.name)
            };
            if e.mode == Mode::Tree {
                go(store, &e.id, &path, depth + 1, out)?;
            } else {
                out.insert(path, (e.mode, e.id));
            }
        }
        Ok(())
    }
    let mut out = FlatTree::new();
    go(store, tree, "", 0, &mut out)?;
    Ok(out)
}

/// Encoded objects with their ids, in landing order.
pub type Encoded = Vec<(ObjectId, Vec<u8>)>;

/// Encoded trees with their directory paths and ids, in landing order.
pub type EncodedAt = Vec<(String, ObjectId, Vec<u8>)>;

/// Encodes the trees of a flat snapshot; returns the root id and every tree's
/// encoding, children first.
pub fn build_trees(files: &FlatTree) -> Result<(ObjectId, Encoded), StoreError> {
    let (root, trees) = build_trees_at(files)?;
    Ok((root, trees.into_iter().map(|(_, id, b)| (id, b)).collect()))
}

/// [`build_trees`], with each tree's directory path (`""` for the root): a
/// store offers the tree at the same path in the previous snapshot as the
/// delta base of the new one.
pub fn build_trees_at(files: &FlatTree) -> Result<(ObjectId, EncodedAt), StoreError> {
    enum Node {
        File(Mode, ObjectId),
        Dir(BTreeMap<String, Node>),
    }
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    for (path, (mode, id)) in files {
        let parts: Vec<&str> = path.split('/').collect();
        let mut dir = &mut root;
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                dir.insert((*part).to_owned(), Node::File(*mode, *id));
            } else {
                let next = dir
                    .entry((*part).to_owned())
                    .or_insert_with(|| Node::Dir(BTreeMap::new()));
                dir = match next {
                    Node::Dir(d) => d,
                    Node::File(..) => return Err(failed(format!("{path}: a parent is a file"))),
                };
            }
        }
    }
    fn encode(
        dir: &BTreeMap<String, Node>,
        path: &str,
        out: &mut EncodedAt,
    ) -> Result<ObjectId, StoreError> {
        let mut entries = Vec::with_capacity(dir.len());
        for (name, node) in dir {
            let (mode, id) = match node {
                Node::File(m, id) => (*m, *id),
                Node::Dir(d) => {
                    let sub = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}/{name}")
                    };
                    (Mode::Tree, encode(d, &sub, out)?)
                }
            };
            entries.push(TreeEntry {
                name: name.clone(),
                mode,
                id,
            });
        }
        let bytes = Tree::new(entries).map_err(failed)?.encode();
        let id = ObjectId::hash(&bytes);
        out.push((path.to_owned(), id, bytes));
        Ok(id)
    }
    let mut out = Vec::new();
    let id = encode(&root, "", &mut out)?;
    Ok((id, out))
}

/// A merge seal and the new objects it needs, in landing order.
pub struct MergeResult {
    pub seal: ObjectId,
    pub objects: Vec<(ObjectId, Vec<u8>)>,
}

/// How deep the virtual merge bases of criss-cross histories may nest before
/// the newest single base is used instead (which may make the merge unclean, so
/// manual: never wrong, only less automatic).
const MAX_VIRTUAL_BASE_DEPTH: usize = 4;

/// Blobs made by text merges while building one merge, by id, encoded.
type NewBlobs = BTreeMap<ObjectId, Vec<u8>>;

/// Merges heads `a` and `b` into a seal that is the same on every node that
/// merges the same work, or `None` when the merge is not clean.
///
/// The parents are not `a` and `b` themselves but the **frontier** of the work
/// they hold: the newest seals of both histories that are not automatic merges
/// (an automatic merge is replaced by its parents, recursively), sorted. The
/// tree is the merge of those seals in that order. So the result depends only on
/// the set of work merged, not on which pairs of heads met in which order: nodes
/// that merged `(a+b)+c` and `(a+c)+b` make the same seal, and a network that
/// stops sealing settles on one merge instead of merging merges forever.
pub fn auto_merge(
    store: &dyn Store,
    a: &ObjectId,
    b: &ObjectId,
) -> Result<Option<MergeResult>, StoreError> {
    let mut lookup = |id: &ObjectId| store.seal(id);
    let mut candidates = Vec::new();
    for head in [a, b] {
        expand(store, head, &mut candidates, 0)?;
    }
    candidates.sort();
    candidates.dedup();
    // Drop the candidates the others already contain.
    let mut starts = Vec::new();
    for c in &candidates {
        starts.extend(store.seal(c)?.parents);
    }
    let below = ancestors_of_all(&starts, &mut lookup)?;
    let frontier: Vec<ObjectId> = candidates
        .into_iter()
        .filter(|c| !below.contains_key(c))
        .collect();
    if frontier.len() < 2 {
        // One side contains the other: nothing to merge (the caller's relation
        // said otherwise, so the store changed; let the next sync decide).
        return Ok(None);
    }
    let mut blobs = NewBlobs::new();
    let Some(files) = merge_set(store, &frontier, &mut blobs, 0)? else {
        return Ok(None);
    };
    let mut objects: Vec<(ObjectId, Vec<u8>)> = Vec::new();
    // Only the merged blobs the final tree names; intermediate ones stay out.
    for (_, id) in files.values() {
        if let Some(bytes) = blobs.remove(id) {
            objects.push((*id, bytes));
        }
    }
    let (tree, trees) = build_trees(&files)?;
    objects.extend(trees);
    let mut time = i64::MIN;
    for p in &frontier {
        time = time.max(store.seal(p)?.time.seconds);
    }
    let names: Vec<String> = frontier.iter().map(|p| p.short()).collect();
    let seal = Seal {
        git: None,
        tree,
        parents: frontier,
        author: MERGE_AUTHOR.to_owned(),
        time: Timestamp {
            seconds: time,
            offset_minutes: 0,
        },
        message: format!("Auto-merge {}", names.join(" and ")),
    };
    let bytes = seal.encode().map_err(failed)?;
    let id = ObjectId::hash(&bytes);
    objects.push((id, bytes));
    Ok(Some(MergeResult { seal: id, objects }))
}

/// Adds the work `head` holds: itself, or for an automatic merge its parents'.
fn expand(
    store: &dyn Store,
    head: &ObjectId,
    out: &mut Vec<ObjectId>,
    depth: usize,
) -> Result<(), StoreError> {
    let seal = store.seal(head)?;
    if is_auto_merge(&seal) && depth < MAX_TREE_DEPTH {
        for p in &seal.parents {
            expand(store, p, out, depth + 1)?;
        }
    } else {
        out.push(*head);
    }
    Ok(())
}

/// The union of the ancestries (each seal with its parents) of `starts`.
fn ancestors_of_all(
    starts: &[ObjectId],
    lookup: &mut dyn FnMut(&ObjectId) -> Result<Seal, StoreError>,
) -> Result<IdMap<Vec<ObjectId>>, StoreError> {
    let mut all: IdMap<Vec<ObjectId>> = IdMap::default();
    for s in starts {
        if all.contains_key(s) {
            continue;
        }
        for (id, parents) in history::ancestors(*s, None, lookup)? {
            all.insert(id, parents);
        }
    }
    Ok(all)
}

/// The merged files of a set of seals, none containing another, sorted: the
/// first seal's tree, then each next seal merged in from the best common
/// ancestors of it and the seals merged so far. Several best ancestors (a
/// criss-cross history) are merged the same way into a virtual base, as git's
/// recursive strategy does. `None` when some step is not clean.
fn merge_set(
    store: &dyn Store,
    seals: &[ObjectId],
    blobs: &mut NewBlobs,
    depth: usize,
) -> Result<Option<FlatTree>, StoreError> {
    let mut lookup = |id: &ObjectId| store.seal(id);
    let Some((first, rest)) = seals.split_first() else {
        return Ok(Some(FlatTree::new()));
    };
    let mut files = flatten(store, &store.seal(first)?.tree)?;
    let mut merged_anc = history::ancestors(*first, None, &mut lookup)?;
    for next in rest {
        let next_anc = history::ancestors(*next, None, &mut lookup)?;
        let bases = history::best_common_ancestors(&merged_anc, &next_anc);
        let base = match bases.as_slice() {
            [] => FlatTree::new(),
            [one] => flatten(store, &store.seal(one)?.tree)?,
            many if depth < MAX_VIRTUAL_BASE_DEPTH => {
                match merge_set(store, many, blobs, depth + 1)? {
                    Some(f) => f,
                    None => return Ok(None),
                }
            }
            many => {
                let mut newest: Option<(i64, ObjectId)> = None;
                for id in many {
                    let key = (store.seal(id)?.time.seconds, *id);
                    if newest.is_none_or(|n| key > n) {
                        newest = Some(key);
                    }
                }
                match newest {
                    Some((_, id)) => flatten(store, &store.seal(&id)?.tree)?,
                    None => FlatTree::new(),
                }
            }
        };
        let theirs = flatten(store, &store.seal(next)?.tree)?;
        let Some(m) = merge_files(store, &base, &files, &theirs, blobs)? else {
            return Ok(None);
        };
        files = m;
        for (id, parents) in next_anc {
            merged_anc.insert(id, parents);
        }
    }
    Ok(Some(files))
}

/// A three-way merge of flat trees, text files merged line by line; `None` when
/// not clean. Blobs it writes go to `blobs` (and are read from there too).
fn merge_files(
    store: &dyn Store,
    base: &FlatTree,
    ours: &FlatTree,
    theirs: &FlatTree,
    blobs: &mut NewBlobs,
) -> Result<Option<FlatTree>, StoreError> {
    let tm = merge::merge_trees(base, ours, theirs);
    let mut files = tm.merged;
    let labels = MergeLabels::new("ours", "theirs");
    for c in tm.conflicts {
        let (Some(x), Some(y)) = (c.ours, c.theirs) else {
            return Ok(None);
        };
        if !matches!(c.kind, ConflictKind::Content | ConflictKind::AddAdd)
            || !x.0.is_file()
            || !y.0.is_file()
        {
            return Ok(None);
        }
        let blob = |id: &ObjectId| -> Result<Option<Vec<u8>>, StoreError> {
            let raw = match blobs.get(id) {
                Some(b) => b.clone(),
                None => store.get(id)?,
            };
            Ok((object::kind_of(&raw).map_err(failed)? == ObjectKind::Blob)
                .then(|| raw[1..].to_vec()))
        };
        let base_bytes = match c.base {
            Some(b) if b.0.is_file() => match blob(&b.1)? {
                Some(v) => v,
                None => return Ok(None),
            },
            _ => Vec::new(),
        };
        let (Some(xb), Some(yb)) = (blob(&x.1)?, blob(&y.1)?) else {
            return Ok(None);
        };
        let m = merge::merge_text(&base_bytes, &xb, &yb, &labels);
        if m.conflicts > 0 {
            return Ok(None);
        }
        let enc = object::encode_blob(&m.content);
        let id = ObjectId::hash(&enc);
        let mode = if x.0 == y.0 { x.0 } else { Mode::File };
        files.insert(c.path, (mode, id));
        blobs.insert(id, enc);
    }
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    #[test]
    fn both_sides_of_every_pair_agree() {
        use ConflictStrategy::*;
        let all = [Manual, AutoMerge, PreferRemote, PreferLocal];
        let (a, b) = (id(1), id(2));
        for x in all {
            for y in all {
                for (ta, tb) in [(10, 20), (20, 10), (10, 10)] {
                    let at_a = decide(x, Some(y), (&a, (1, ta)), (&b, (1, tb)));
                    let at_b = decide(y, Some(x), (&b, (1, tb)), (&a, (1, ta)));
                    // Where both sides pick a head, they pick the same one.
                    let head_a = match at_a {
                        Resolution::KeepLocal => Some(a),
                        Resolution::TakeRemote => Some(b),
                        _ => None,
                    };
                    let head_b = match at_b {
                        Resolution::KeepLocal => Some(b),
                        Resolution::TakeRemote => Some(a),
                        _ => None,
                    };
                    if let (Some(ha), Some(hb)) = (head_a, head_b) {
                        assert_eq!(ha, hb, "{x:?} vs {y:?} at times {ta},{tb}");
                    }
                }
            }
        }
    }

    #[test]
    fn overrides_match_exact_names_then_longest_prefix() {
        let mut o = BTreeMap::new();
        o.insert("release/*".to_owned(), ConflictStrategy::PreferRemote);
        o.insert("release/v1".to_owned(), ConflictStrategy::AutoMerge);
        o.insert("*".to_owned(), ConflictStrategy::PreferLocal);
        let t = |s: &str| TimelineName::new(s).unwrap();
        assert_eq!(
            strategy_for(&t("release/v1"), ConflictStrategy::Manual, &o),
            ConflictStrategy::AutoMerge
        );
        assert_eq!(
            strategy_for(&t("release/v2"), ConflictStrategy::Manual, &o),
            ConflictStrategy::PreferRemote
        );
        assert_eq!(
            strategy_for(&t("main"), ConflictStrategy::Manual, &o),
            ConflictStrategy::PreferLocal
        );
        assert_eq!(
            strategy_for(&t("main"), ConflictStrategy::Manual, &BTreeMap::new()),
            ConflictStrategy::Manual
        );
    }
}
