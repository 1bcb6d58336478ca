//! The sync engine's pure parts: what to advertise and what to send. What a
//! remote head means for a local timeline is [`crate::history`].
//!
//! A pull costs one round trip after the handshake. The requester names the seals
//! it wants and sends "haves": its heads, the heads it last saw from this peer, and
//! exponentially spaced first-parent ancestors, so the common history is found
//! without a negotiation dialogue. The sender walks each new seal's tree against its
//! parents' trees, skipping subtrees (and chunks of large files) whose ids did not
//! change, so a one-seal change costs about the bytes that changed.

use std::collections::VecDeque;

use crate::id::{IdMap, IdSet, ObjectId};
use crate::object::{self, ChunkList, Mode, ObjectKind, Tree};
use crate::store::{Store, StoreError};

/// Deepest directory nesting the sender walks; deeper trees are refused rather
/// than risking the stack.
pub const MAX_TREE_DEPTH: usize = 256;
/// "Have" samples per head: distances 0, 1, 2, 4, … 2^(n-2).
pub const HAVES_PER_HEAD: usize = 24;
/// Most ids a puller names in `sync_request.resume`, and most a sender accepts:
/// about 66 KB of JSON. A record that grows past it forgets its oldest roots,
/// which only costs resending them.
pub const MAX_RESUME_HINTS: usize = 1024;

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

/// The requester's "have" list: each head and its first-parent ancestors at
/// exponentially growing distances, plus `extra` ids it holds (such as the heads
/// last seen from this peer, which the peer is certain to know).
///
/// A walk stops at a seal an earlier head's walk already went through: what
/// lies below was sampled then. So the seals read are about the distinct
/// first-parent history, not one walk per head (1,000 timelines on one
/// history cost one walk, not 1,000).
pub fn haves(
    store: &dyn Store,
    heads: &[ObjectId],
    extra: &[ObjectId],
) -> Result<Vec<ObjectId>, StoreError> {
    haves_sampled(store, heads, extra, HAVES_PER_HEAD)
}

/// [`haves`] with at most `per_head` samples per head (1: the heads only).
pub fn haves_sampled(
    store: &dyn Store,
    heads: &[ObjectId],
    extra: &[ObjectId],
    per_head: usize,
) -> Result<Vec<ObjectId>, StoreError> {
    let mut out = Vec::new();
    let mut seen = IdSet::default();
    let mut walked = IdSet::default();
    for id in extra {
        if store.has(id) && seen.insert(*id) {
            out.push(*id);
        }
    }
    for head in heads {
        let mut cur = Some(*head);
        let mut dist = 0usize;
        let mut next_sample = 0usize;
        let mut samples = 0;
        while let Some(id) = cur {
            if !store.has(&id) || samples >= per_head {
                break;
            }
            if !walked.insert(id) {
                // The head itself is listed; below it was walked before.
                if dist == 0 && seen.insert(id) {
                    out.push(id);
                }
                break;
            }
            if dist == next_sample {
                if seen.insert(id) {
                    out.push(id);
                }
                samples += 1;
                next_sample = if next_sample == 0 { 1 } else { next_sample * 2 };
            }
            cur = store.seal(&id)?.parents.first().copied();
            dist += 1;
        }
    }
    Ok(out)
}

/// Every ancestor of the given seals that the store holds, themselves included.
pub fn closure(store: &dyn Store, from: &[ObjectId]) -> Result<IdSet, StoreError> {
    let mut seen = IdSet::default();
    let mut stack: Vec<ObjectId> = from.iter().filter(|id| store.has(id)).copied().collect();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            stack.extend(store.seal(&id)?.parents);
        }
    }
    Ok(seen)
}

/// The objects to send so the requester, holding `haves` (and everything they
/// reach), can hold `wants`: in landing order, every object after all it refers to.
pub fn plan_send(
    store: &dyn Store,
    wants: &[ObjectId],
    haves: &[ObjectId],
) -> Result<Vec<ObjectId>, StoreError> {
    plan_send_resuming(store, wants, haves, &[])
}

/// [`plan_send`] for a puller resuming an interrupted pull: `present` names
/// objects of any kind it already holds, each with everything it refers to (the
/// roots of what landed before the interruption). Seals among them count as
/// haves; every other id is skipped, with all beneath it, wherever the walk
/// meets it. Ids this store does not hold are never met, so a wrong or stale
/// hint costs nothing but its bytes in the request.
pub fn plan_send_resuming(
    store: &dyn Store,
    wants: &[ObjectId],
    haves: &[ObjectId],
    present: &[ObjectId],
) -> Result<Vec<ObjectId>, StoreError> {
    Ok(plan_send_with_bases(store, wants, haves, present)?.order)
}

/// What to send, and for each new blob or tree the natural delta base: the
/// object at the same path in a parent seal's tree. The puller holds that base,
/// or receives it earlier in the same stream (parents are planned first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendPlan {
    /// In landing order, every object after all it refers to.
    pub order: Vec<ObjectId>,
    pub bases: IdMap<ObjectId>,
}

/// [`plan_send_resuming`], with the delta base of each blob and tree.
pub fn plan_send_with_bases(
    store: &dyn Store,
    wants: &[ObjectId],
    haves: &[ObjectId],
    present: &[ObjectId],
) -> Result<SendPlan, StoreError> {
    let mut seal_haves = haves.to_vec();
    let mut skip = IdSet::default();
    for id in present {
        let is_seal = store.has(id)
            && store
                .get(id)
                .ok()
                .and_then(|b| object::kind_of(&b).ok())
                .is_some_and(|k| k == ObjectKind::Seal);
        if is_seal {
            seal_haves.push(*id);
        } else {
            skip.insert(*id);
        }
    }
    let known = closure(store, &seal_haves)?;
    // Seals to send, parents before children (iterative post-order).
    let mut order = Vec::new();
    let mut visited = IdSet::default();
    let mut stack: Vec<(ObjectId, bool)> = wants.iter().rev().map(|w| (*w, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            order.push(id);
            continue;
        }
        if known.contains(&id) || !visited.insert(id) {
            continue;
        }
        let seal = store.seal(&id)?;
        stack.push((id, true));
        for p in seal.parents.iter().rev() {
            if !known.contains(p) && !visited.contains(p) {
                stack.push((*p, false));
            }
        }
    }
    // What the receiver holds counts as sent: the walk skips it like an
    // object already planned, subtree and all.
    let mut plan = Plan {
        store,
        sent: skip,
        out: Vec::new(),
        bases: IdMap::default(),
    };
    for id in order {
        let seal = store.seal(&id)?;
        let mut parent_trees = Vec::with_capacity(seal.parents.len());
        for p in &seal.parents {
            parent_trees.push(store.seal(p)?.tree);
        }
        plan.tree(seal.tree, &parent_trees, 0)?;
        plan.push(id);
    }
    Ok(SendPlan {
        order: plan.out,
        bases: plan.bases,
    })
}

struct Plan<'a> {
    store: &'a dyn Store,
    sent: IdSet,
    out: Vec<ObjectId>,
    bases: IdMap<ObjectId>,
}

impl Plan<'_> {
    fn push(&mut self, id: ObjectId) {
        if self.sent.insert(id) {
            self.out.push(id);
        }
    }

    fn tree(&mut self, id: ObjectId, olds: &[ObjectId], depth: usize) -> Result<(), StoreError> {
        if self.sent.contains(&id) || olds.contains(&id) {
            return Ok(());
        }
        if depth > MAX_TREE_DEPTH {
            return Err(failed(format!(
                "tree {id} is nested deeper than {MAX_TREE_DEPTH}"
            )));
        }
        let tree = Tree::decode(&self.store.get(&id)?).map_err(failed)?;
        if let Some(old) = olds.first() {
            self.bases.insert(id, *old);
        }
        let mut old_trees = Vec::with_capacity(olds.len());
        for o in olds {
            old_trees.push(Tree::decode(&self.store.get(o)?).map_err(failed)?);
        }
        for entry in tree.entries() {
            if self.sent.contains(&entry.id) {
                continue;
            }
            let old: Vec<(Mode, ObjectId)> = old_trees
                .iter()
                .filter_map(|t| t.get(&entry.name))
                .map(|e| (e.mode, e.id))
                .collect();
            if old.iter().any(|(_, i)| *i == entry.id) {
                continue;
            }
            match entry.mode {
                Mode::Tree => {
                    let sub: Vec<ObjectId> = old
                        .iter()
                        .filter(|(m, _)| *m == Mode::Tree)
                        .map(|(_, i)| *i)
                        .collect();
                    self.tree(entry.id, &sub, depth + 1)?;
                }
                Mode::File | Mode::Executable => {
                    let sub: Vec<ObjectId> = old
                        .iter()
                        .filter(|(m, _)| m.is_file())
                        .map(|(_, i)| *i)
                        .collect();
                    self.file(entry.id, &sub)?;
                }
                Mode::Symlink => self.push(entry.id),
                // A submodule's commit is not an Ivaldi object: nothing to send.
                Mode::Gitlink => {}
            }
        }
        self.push(id);
        Ok(())
    }

    /// A file's content: a blob, or a chunk-list tree sent without the chunks
    /// (and lists) the previous version of the file already had.
    fn file(&mut self, id: ObjectId, olds: &[ObjectId]) -> Result<(), StoreError> {
        let kind = self.store.kind(&id).ok_or(StoreError::Missing(id))?;
        if kind != ObjectKind::ChunkList {
            if let Some(old) = olds
                .iter()
                .find(|o| self.store.kind(o) == Some(ObjectKind::Blob))
            {
                self.bases.insert(id, *old);
            }
            self.push(id);
            return Ok(());
        }
        let mut old_parts = IdSet::default();
        for o in olds {
            self.collect_parts(*o, &mut old_parts)?;
        }
        let mut stack = vec![(id, false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                self.push(node);
                continue;
            }
            if old_parts.contains(&node) || self.sent.contains(&node) {
                continue;
            }
            let list = ChunkList::decode(&self.store.get(&node)?).map_err(failed)?;
            stack.push((node, true));
            for (child, _) in list.entries.iter().rev() {
                if list.level == 0 {
                    if !old_parts.contains(child) && !self.sent.contains(child) {
                        // Leaves are blobs: send them right before their list.
                        stack.push((*child, true));
                    }
                } else {
                    stack.push((*child, false));
                }
            }
        }
        Ok(())
    }

    /// Every chunk and chunk list of a stored file (nothing for a plain blob).
    fn collect_parts(&self, id: ObjectId, into: &mut IdSet) -> Result<(), StoreError> {
        let mut queue = VecDeque::from([id]);
        while let Some(node) = queue.pop_front() {
            if !into.insert(node) {
                continue;
            }
            let raw = self.store.get(&node)?;
            if object::kind_of(&raw).map_err(failed)? != ObjectKind::ChunkList {
                continue;
            }
            let list = ChunkList::decode(&raw).map_err(failed)?;
            for (child, _) in &list.entries {
                if list.level == 0 {
                    into.insert(*child);
                } else {
                    queue.push_back(*child);
                }
            }
        }
        Ok(())
    }
}

/// The roots of what landed from a peer's pulls that did not finish: the
/// objects no other landed object refers to. Each root is held with everything
/// beneath it (the store's closure), so naming the roots in
/// `sync_request.resume` tells the sender about every object that landed.
///
/// Objects are fed in landing order (children first): an object's children stop
/// being roots when it lands, so a complete subtree (or a chain of seals)
/// collapses into one id. Bounded by [`MAX_RESUME_HINTS`]; past it the oldest
/// roots are forgotten, which costs only resending them.
#[derive(Clone, Debug, Default)]
pub struct LandedRoots {
    by_seq: std::collections::BTreeMap<u64, ObjectId>,
    seq_of: IdMap<u64>,
    next: u64,
}

impl LandedRoots {
    /// A record holding `ids` (oldest first), such as one read back from the store.
    pub fn from_ids(ids: &[ObjectId]) -> Self {
        let mut r = LandedRoots::default();
        for id in ids {
            r.land(*id, &[]);
        }
        r
    }

    /// Records that `id` landed; its `children` (tree entries, chunk-list
    /// entries, a seal's tree and parents) are no longer roots.
    pub fn land(&mut self, id: ObjectId, children: &[ObjectId]) {
        for c in children {
            if let Some(seq) = self.seq_of.remove(c) {
                self.by_seq.remove(&seq);
            }
        }
        if self.seq_of.contains_key(&id) {
            return;
        }
        self.seq_of.insert(id, self.next);
        self.by_seq.insert(self.next, id);
        self.next += 1;
        while self.by_seq.len() > MAX_RESUME_HINTS {
            if let Some((_, old)) = self.by_seq.pop_first() {
                self.seq_of.remove(&old);
            }
        }
    }

    /// The roots, oldest first.
    pub fn ids(&self) -> Vec<ObjectId> {
        self.by_seq.values().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }
}
