//! Walks of the seal graph: ancestry, best common ancestors, generations, and
//! how a remote head relates to a local one.
//!
//! Both the sync engine (is this head new?) and conflict handling (what is
//! the merge base?) need these walks. They live apart from both, so neither
//! imports the other for them.

use crate::id::{IdMap, IdSet, ObjectId};
use crate::object::Seal;
use crate::store::StoreError;

/// The author of every automatic merge seal, on every node. A fixed author
/// (with a tree that is a function of the parents) is what makes two nodes
/// that merge the same work make the same seal.
pub const MERGE_AUTHOR: &str = "ivaldi auto-merge <auto-merge@ivaldi>";

/// Whether a seal is an automatic merge (made by `conflict::auto_merge`, on
/// any node).
///
/// Such a seal holds nothing of its own: its tree is a function of its parents.
/// That is what lets a newer automatic merge of a superset of its parents
/// replace it (see [`relate`]) without losing anything.
pub fn is_auto_merge(seal: &Seal) -> bool {
    seal.author == MERGE_AUTHOR && seal.parents.len() >= 2
}

/// How a remote head relates to the local head of the same timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The timeline does not exist locally.
    Missing,
    Same,
    /// The local head already contains the remote one.
    Ahead,
    /// The remote head contains the local one: fast-forward.
    Behind,
    /// Neither contains the other; `base` is their best common ancestor.
    Diverged {
        base: Option<ObjectId>,
    },
}

/// Relates `remote` to `local`, reading seals through `seal` (which may consult
/// seals received in a batch that has not landed yet).
pub fn relate(
    local: Option<ObjectId>,
    remote: ObjectId,
    seal: &mut dyn FnMut(&ObjectId) -> Result<Seal, StoreError>,
) -> Result<Relation, StoreError> {
    let Some(local) = local else {
        return Ok(Relation::Missing);
    };
    if local == remote {
        return Ok(Relation::Same);
    }
    let remote_anc = ancestors(remote, Some(local), seal)?;
    if remote_anc.contains_key(&local) || superseded(&local, &remote_anc, seal)? {
        return Ok(Relation::Behind);
    }
    let local_anc = ancestors(local, Some(remote), seal)?;
    if local_anc.contains_key(&remote) || superseded(&remote, &local_anc, seal)? {
        return Ok(Relation::Ahead);
    }
    // Both walks went to the roots (neither found the other head), so both
    // ancestries are complete. Of several best common ancestors (after
    // criss-cross merges) the newest is recorded; the id breaks ties, so every
    // node picks the same one.
    let mut base: Option<(i64, ObjectId)> = None;
    for id in best_common_ancestors(&local_anc, &remote_anc) {
        let key = (seal(&id)?.time.seconds, id);
        if base.is_none_or(|b| key > b) {
            base = Some(key);
        }
    }
    Ok(Relation::Diverged {
        base: base.map(|b| b.1),
    })
}

/// Whether `head` is an automatic merge whose parents all lie in `other`'s
/// (complete) ancestry: `other` then holds all of its work, and since an
/// automatic merge's tree is a function of its parents, moving from `head` to
/// `other` loses nothing. This is what ends merging: a newer merge of more work
/// replaces an older merge instead of being merged with it again.
fn superseded(
    head: &ObjectId,
    other: &IdMap<Vec<ObjectId>>,
    seal: &mut dyn FnMut(&ObjectId) -> Result<Seal, StoreError>,
) -> Result<bool, StoreError> {
    let s = seal(head)?;
    Ok(is_auto_merge(&s) && s.parents.iter().all(|p| other.contains_key(p)))
}

/// The best common ancestors of two heads, given each head's complete ancestry
/// (seal → parents): the common ancestors that are not an ancestor of another
/// common ancestor, sorted by id.
///
/// The choice is structural on purpose. Seal times come from the authors'
/// clocks, which may be far apart, so "the newest common ancestor" can be an
/// old seal; a merge from such a base sees every later edit as made on both
/// sides and reports conflicts that are not there. Usually there is one best
/// ancestor; after criss-cross merges there can be several.
pub fn best_common_ancestors(a: &IdMap<Vec<ObjectId>>, b: &IdMap<Vec<ObjectId>>) -> Vec<ObjectId> {
    // The common ancestors are closed under "parent of", so a common ancestor
    // is an ancestor of another exactly when it is a parent of a common one.
    let common: Vec<(&ObjectId, &Vec<ObjectId>)> =
        a.iter().filter(|(id, _)| b.contains_key(*id)).collect();
    let mut covered = IdSet::default();
    for (_, parents) in &common {
        covered.extend(parents.iter().copied());
    }
    let mut best: Vec<ObjectId> = common
        .into_iter()
        .map(|(id, _)| *id)
        .filter(|id| !covered.contains(id))
        .collect();
    best.sort();
    best
}

/// The generation of `head`: the number of seals on the longest chain from a
/// root up to and including it (a root is 1). Every seal's generation exceeds
/// its parents', so it orders heads consistently with ancestry (see
/// `conflict::HeadKey`).
pub fn generation(
    head: ObjectId,
    seal: &mut dyn FnMut(&ObjectId) -> Result<Seal, StoreError>,
) -> Result<u64, StoreError> {
    let graph = ancestors(head, None, seal)?;
    let mut depth: IdMap<u64> = IdMap::default();
    // Iterative post-order: a seal's generation once all its parents have one.
    let mut stack = vec![(head, false)];
    while let Some((id, expanded)) = stack.pop() {
        if depth.contains_key(&id) {
            continue;
        }
        let parents = graph.get(&id).map(Vec::as_slice).unwrap_or_default();
        if expanded {
            let g = parents
                .iter()
                .filter_map(|p| depth.get(p))
                .max()
                .copied()
                .unwrap_or(0);
            depth.insert(id, g + 1);
        } else {
            stack.push((id, true));
            stack.extend(
                parents
                    .iter()
                    .filter(|p| !depth.contains_key(*p))
                    .map(|p| (*p, false)),
            );
        }
    }
    Ok(depth.get(&head).copied().unwrap_or(1))
}

/// The ancestry of `from` (itself included), each seal with its parents; stops
/// early once `stop_at` is found (whose parents are then not read).
pub fn ancestors(
    from: ObjectId,
    stop_at: Option<ObjectId>,
    seal: &mut dyn FnMut(&ObjectId) -> Result<Seal, StoreError>,
) -> Result<IdMap<Vec<ObjectId>>, StoreError> {
    let mut seen: IdMap<Vec<ObjectId>> = IdMap::default();
    let mut stack = vec![from];
    while let Some(id) = stack.pop() {
        if seen.contains_key(&id) {
            continue;
        }
        if Some(id) == stop_at {
            seen.insert(id, Vec::new());
            return Ok(seen);
        }
        let parents = seal(&id)?.parents;
        stack.extend(parents.iter().copied());
        seen.insert(id, parents);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Timestamp;

    /// A seal graph in memory: seal `n` has the given parents and time `n`.
    struct Graph(IdMap<Seal>);

    fn sid(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    impl Graph {
        fn new(edges: &[(u8, &[u8])], author: impl Fn(u8) -> &'static str) -> Graph {
            let mut map = IdMap::default();
            for &(n, parents) in edges {
                let seal = Seal {
                    git: None,
                    tree: ObjectId([0; 32]),
                    parents: parents.iter().map(|p| sid(*p)).collect(),
                    author: author(n).to_owned(),
                    time: Timestamp {
                        seconds: i64::from(n),
                        offset_minutes: 0,
                    },
                    message: String::new(),
                };
                map.insert(sid(n), seal);
            }
            Graph(map)
        }

        fn relate(&self, local: u8, remote: u8) -> Relation {
            relate(Some(sid(local)), sid(remote), &mut |id| {
                self.0.get(id).cloned().ok_or(StoreError::Missing(*id))
            })
            .unwrap()
        }
    }

    fn plain(_: u8) -> &'static str {
        "a <a@x>"
    }

    #[test]
    fn a_line_is_ahead_or_behind_and_a_fork_diverges_at_its_base() {
        // 1 ← 2 ← 3, and 2 ← 4.
        let g = Graph::new(&[(1, &[]), (2, &[1]), (3, &[2]), (4, &[2])], plain);
        assert_eq!(g.relate(3, 3), Relation::Same);
        assert_eq!(g.relate(1, 3), Relation::Behind);
        assert_eq!(g.relate(3, 1), Relation::Ahead);
        assert_eq!(g.relate(3, 4), Relation::Diverged { base: Some(sid(2)) });
        assert_eq!(
            relate(None, sid(3), &mut |_| unreachable!()).unwrap(),
            Relation::Missing
        );
    }

    #[test]
    fn a_newer_auto_merge_of_more_work_supersedes_an_older_one() {
        // 5 merges 3 and 4; 6 is new work on 4; 7 merges 3 and 6.
        let edges: &[(u8, &[u8])] = &[
            (1, &[]),
            (2, &[1]),
            (3, &[2]),
            (4, &[2]),
            (5, &[3, 4]),
            (6, &[4]),
            (7, &[3, 6]),
        ];
        let g = Graph::new(edges, |n| {
            if n == 5 || n == 7 {
                MERGE_AUTHOR
            } else {
                "a <a@x>"
            }
        });
        assert_eq!(g.relate(5, 7), Relation::Behind);
        assert_eq!(g.relate(7, 5), Relation::Ahead);
        // The same shape with hand-made merges is a real divergence.
        let g = Graph::new(edges, plain);
        assert!(matches!(g.relate(5, 7), Relation::Diverged { .. }));
    }

    #[test]
    fn criss_cross_has_two_best_ancestors_and_generations_count_the_longest_chain() {
        // 1 ← 2, 1 ← 3; 4 and 5 both merge 2 and 3.
        let g = Graph::new(
            &[(1, &[]), (2, &[1]), (3, &[1]), (4, &[2, 3]), (5, &[3, 2])],
            plain,
        );
        let mut seal = |id: &ObjectId| g.0.get(id).cloned().ok_or(StoreError::Missing(*id));
        let a = ancestors(sid(4), None, &mut seal).unwrap();
        let b = ancestors(sid(5), None, &mut seal).unwrap();
        assert_eq!(best_common_ancestors(&a, &b), vec![sid(2), sid(3)]);
        assert_eq!(generation(sid(4), &mut seal).unwrap(), 3);
        assert_eq!(generation(sid(1), &mut seal).unwrap(), 1);
    }
}
