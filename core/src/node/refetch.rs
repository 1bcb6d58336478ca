//! Refetching objects a node lost below its own heads (`ivaldi repair`).
//!
//! An ordinary pull skips everything under the heads a node claims: the
//! puller sends them as haves, and wants only heads it lacks. A store that
//! lost objects to a damaged pack still claims those heads, so a pull never
//! brings the objects back. A refetch asks for them by id instead:
//!
//! - The puller sends a `sync_request` whose `refetch` lists the ids it lacks
//!   (at most [`MAX_REFETCH`]), with `wants` and `haves` empty. Its targets are
//!   empty, so the landing moves no head: heads are already right, only
//!   objects come back.
//! - The server plans with [`plan`]: exactly the requested objects it holds,
//!   children first, and, when access rules are configured, only those
//!   reachable from a head the peer may read (anything else is withheld and
//!   recorded as an access refusal). Without rules a trusted peer may read every
//!   timeline, so every stored object is served.
//! - The puller verifies every object against its id, as for any pull, and
//!   refuses one it did not ask for. What a lost object referred to may be lost
//!   too, and the damage report cannot see below a lost object: each received
//!   object's children that the store lacks are asked for in a further round
//!   on the same connection, into the same batch, which lands (closure checked)
//!   only when nothing below it is lacking.
//! - Peers are asked in turn (connection order), each for what is still
//!   missing, until nothing is or every peer was asked. The command completes
//!   with how many objects came back and how many are still missing.
//!
//! One refetch runs at a time; it waits for a connection's ordinary pull to end
//! before using it.

use std::collections::{BTreeMap, BTreeSet};

use super::{CommandId, ConnId, Event, Node, Output, Pull};
use crate::NodeId;
use crate::access::Access;
use crate::id::{IdSet, ObjectId};
use crate::object::{self, Mode, Object, ObjectKind, Tree};
use crate::store::{Store, StoreError, StoreRequest};
use crate::time::Instant;
use crate::wire::{self, Message};

/// Most ids one `sync_request.refetch` names (about 1.1 MB of JSON); more
/// are asked for in further rounds.
pub const MAX_REFETCH: usize = 16_384;

/// The objects to send for a refetch of `asked`: those the store holds and,
/// with `readable` given (access rules are configured), that are reachable
/// from one of those heads. In landing order: every object after the asked
/// objects it refers to. Returns the plan and how many held objects were
/// withheld for want of read access.
pub fn plan(
    store: &dyn Store,
    asked: &[ObjectId],
    readable: Option<&[ObjectId]>,
) -> Result<(Vec<ObjectId>, usize), StoreError> {
    let held: IdSet = asked.iter().filter(|id| store.has(id)).copied().collect();
    let serve = match readable {
        None => held.clone(),
        Some(heads) => reachable_among(store, heads, &held)?,
    };
    let withheld = held.len() - serve.len();
    let mut roots: Vec<ObjectId> = serve.iter().copied().collect();
    roots.sort();
    let mut out = Vec::with_capacity(serve.len());
    let mut expanded = IdSet::default();
    let mut placed = IdSet::default();
    for root in roots {
        let mut stack = vec![(root, false)];
        while let Some((id, children_done)) = stack.pop() {
            if children_done {
                if placed.insert(id) {
                    out.push(id);
                }
                continue;
            }
            if placed.contains(&id) || !expanded.insert(id) {
                continue;
            }
            stack.push((id, true));
            for c in children(store, &id)? {
                if serve.contains(&c) && !expanded.contains(&c) {
                    stack.push((c, false));
                }
            }
        }
    }
    Ok((out, withheld))
}

/// What an object refers to (nothing for a blob).
fn children(store: &dyn Store, id: &ObjectId) -> Result<Vec<ObjectId>, StoreError> {
    let raw = store.get(id)?;
    if object::kind_of(&raw) == Ok(ObjectKind::Blob) {
        return Ok(Vec::new());
    }
    Object::decode(&raw)
        .map(|o| o.children())
        .map_err(|e| StoreError::Failed(format!("{id}: {e}")))
}

/// The members of `want` reachable from `heads`. Walks seals, trees and chunk
/// lists (a blob is never opened) and stops once every member was met.
fn reachable_among(
    store: &dyn Store,
    heads: &[ObjectId],
    want: &IdSet,
) -> Result<IdSet, StoreError> {
    let mut found = IdSet::default();
    let mut seen = IdSet::default();
    // (id, known to be a blob)
    let mut stack: Vec<(ObjectId, bool)> = heads.iter().map(|h| (*h, false)).collect();
    while let Some((id, blob)) = stack.pop() {
        if found.len() == want.len() {
            break;
        }
        if !seen.insert(id) || !store.has(&id) {
            continue;
        }
        if want.contains(&id) {
            found.insert(id);
        }
        if blob {
            continue;
        }
        let raw = store.get(&id)?;
        match object::kind_of(&raw) {
            Ok(ObjectKind::Tree) => {
                let tree = Tree::decode(&raw).map_err(|e| StoreError::Failed(e.to_string()))?;
                for e in tree.entries() {
                    stack.push((e.id, e.mode == Mode::Symlink));
                }
            }
            Ok(ObjectKind::Blob) => {}
            _ => stack.extend(children(store, &id)?.into_iter().map(|c| (c, false))),
        }
    }
    Ok(found)
}

/// A running `Command::Refetch`.
pub(super) struct Refetch {
    cmd: CommandId,
    /// Only this peer (full node id), or every connected one.
    peer: Option<NodeId>,
    total: usize,
    /// The ids asked for that are still missing, sorted.
    missing: Vec<ObjectId>,
    /// Peers asked for everything they could give.
    tried: BTreeSet<NodeId>,
    on: Option<Turn>,
}

/// Asking one peer.
struct Turn {
    conn: ConnId,
    peer: NodeId,
    /// Every id asked of this peer.
    asked: IdSet,
    /// Ids found lacking below objects received in `carry`: the next round.
    next: Vec<ObjectId>,
    /// A batch gathered over several rounds, not landed yet: its id and the
    /// objects put into it.
    carry: Option<(u64, IdSet)>,
    /// The sync id of the round in flight.
    round: Option<u64>,
}

impl Node {
    /// `Command::Refetch`: starts asking peers for `missing`.
    pub(super) fn start_refetch(
        &mut self,
        now: Instant,
        id: CommandId,
        peer: Option<NodeId>,
        missing: Vec<ObjectId>,
        store: &dyn Store,
    ) {
        if self.puller.refetch.is_some() {
            return self.done(id, false, "a refetch is already running".into());
        }
        let mut missing: Vec<ObjectId> = missing.into_iter().filter(|m| !store.has(m)).collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return self.done(id, true, "refetched 0 objects; nothing is missing".into());
        }
        let any = self.ready_conns().any(|c| {
            let c = &self.conns[&c];
            c.shares_repo && peer.as_ref().is_none_or(|p| c.peer().as_ref() == Some(p))
        });
        if !any {
            let what = match &peer {
                Some(p) => format!(
                    "peer {} is not connected or serves another repository",
                    p.short()
                ),
                None => "no connected peer serves this repository".to_string(),
            };
            return self.done(id, false, what);
        }
        tracing::info!(objects = missing.len(), "refetching missing objects");
        self.puller.refetch = Some(Refetch {
            cmd: id,
            peer,
            total: missing.len(),
            missing,
            tried: BTreeSet::new(),
            on: None,
        });
        self.refetch_step(now, store);
    }

    /// Moves the running refetch on: called whenever a pull may have ended
    /// (from `start_queued_pulls_with`).
    pub(super) fn refetch_step(&mut self, now: Instant, store: &dyn Store) {
        let Some(mut r) = self.puller.refetch.take() else {
            return;
        };
        loop {
            let Some(t) = r.on.as_mut() else {
                r.missing.retain(|m| !store.has(m));
                if r.missing.is_empty() {
                    return self.refetch_done(r);
                }
                let next = self.ready_conns().find_map(|id| {
                    let c = &self.conns[&id];
                    let p = c.ready_peer()?;
                    (c.shares_repo
                        && !r.tried.contains(&p)
                        && r.peer.as_ref().is_none_or(|f| *f == p))
                    .then_some((id, p))
                });
                let Some((conn, peer)) = next else {
                    return self.refetch_done(r);
                };
                r.on = Some(Turn {
                    conn,
                    peer,
                    asked: IdSet::default(),
                    next: Vec::new(),
                    carry: None,
                    round: None,
                });
                continue;
            };
            let c = self
                .conns
                .get(&t.conn)
                .filter(|c| c.state() == super::ConnState::Ready && c.shares_repo);
            if let Some(sync) = t.round {
                if c.and_then(|c| c.pull.as_ref())
                    .is_some_and(|p| p.sync == sync)
                {
                    break; // the round is still running
                }
                t.round = None;
                if t.next.is_empty() {
                    // The round landed, or failed: either way its batch is done.
                    t.carry = None;
                }
            }
            let Some(c) = c else {
                // The peer left; a batch gathered from it will never land.
                if let Some((batch, _)) = t.carry.take() {
                    self.puller.take(batch);
                    self.out
                        .queue
                        .push_back(Output::Store(StoreRequest::Abort { batch }));
                }
                r.tried.insert(t.peer);
                r.on = None;
                continue;
            };
            if c.pull.is_some() || c.pull_wanted {
                break; // an ordinary pull has the connection: wait for it
            }
            let ask: Vec<ObjectId> = if t.carry.is_some() {
                let n = t.next.len().min(MAX_REFETCH);
                t.next.drain(..n).collect()
            } else {
                t.next.clear();
                r.missing.retain(|m| !store.has(m));
                r.missing
                    .iter()
                    .filter(|m| !t.asked.contains(*m))
                    .take(MAX_REFETCH)
                    .copied()
                    .collect()
            };
            if ask.is_empty() {
                r.tried.insert(t.peer);
                r.on = None;
                continue;
            }
            let sync = self.puller.next_id();
            let batch = t.carry.as_ref().map_or(sync, |(b, _)| *b);
            t.asked.extend(ask.iter().copied());
            t.round = Some(sync);
            let mut pull = Pull::new(t.peer, sync, batch, BTreeMap::new(), now);
            self.puller.pull_batch(batch, t.conn);
            pull.refetch = Some(ask.iter().copied().collect());
            let conn = t.conn;
            let peer = t.peer;
            if let Some(c) = self.conns.get_mut(&conn) {
                c.pull = Some(pull);
            }
            tracing::debug!(
                peer = peer.short(),
                sync,
                objects = ask.len(),
                "refetch round"
            );
            self.emit(Event::SyncStarted { peer, sync });
            self.send(
                now,
                conn,
                Message::SyncRequest(wire::SyncRequest {
                    sync,
                    repo: store.repo_id().to_owned(),
                    wants: Vec::new(),
                    haves: Vec::new(),
                    resume: Vec::new(),
                    refetch: ask,
                }),
            );
            break;
        }
        self.puller.refetch = Some(r);
    }

    /// A refetch round's objects are all in (from `finish_pull`). When they
    /// refer to objects the store lacks, those are asked for next and the batch
    /// waits (returns true: do not land). Otherwise the pull lands as usual.
    pub(super) fn refetch_round_end(&mut self, conn: ConnId, store: &dyn Store) -> bool {
        let Some(t) = self.puller.refetch.as_mut().and_then(|r| r.on.as_mut()) else {
            return false;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        let Some(pull) = c
            .pull
            .as_ref()
            .filter(|p| t.conn == conn && t.round == Some(p.sync) && p.refetch.is_some())
        else {
            return false;
        };
        let (_, put) = t
            .carry
            .get_or_insert_with(|| (pull.batch, IdSet::default()));
        put.extend(pull.staged.iter().map(|(id, _)| *id));
        for (_, children) in &pull.staged {
            for ch in children {
                if !store.has(ch) && !put.contains(ch) && !t.asked.contains(ch) {
                    t.next.push(*ch);
                }
            }
        }
        t.next.sort();
        t.next.dedup();
        if t.next.is_empty() {
            return false;
        }
        c.pull = None;
        self.puller.restart = true;
        true
    }

    /// Serves a `sync_request` with `refetch` ids (from `on_sync_request`,
    /// after the common checks).
    pub(super) fn serve_refetch(
        &mut self,
        now: Instant,
        conn: ConnId,
        r: wire::SyncRequest,
        store: &dyn Store,
    ) {
        if r.refetch.len() > MAX_REFETCH {
            return self.violation(conn, "sync request lists too many refetch ids".into());
        }
        let peer = self
            .conns
            .get(&conn)
            .and_then(|c| c.peer())
            .unwrap_or_default();
        let readable: Option<Vec<ObjectId>> = self.access_restricted().then(|| {
            store
                .heads()
                .unwrap_or_default()
                .into_iter()
                .filter(|(t, _)| self.access(&peer, t) >= Access::Read)
                .map(|(_, h)| h)
                .collect()
        });
        let (plan, withheld) = match plan(store, &r.refetch, readable.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                return self.send(
                    now,
                    conn,
                    Message::SyncResponse(wire::SyncResponse {
                        sync: r.sync,
                        error: Some(format!("store: {e}")),
                        objects: 0,
                        bytes: 0,
                    }),
                );
            }
        };
        if withheld > 0 {
            let what = format!("refetch of {withheld} objects it may not read");
            self.out.stats.access_refused += 1;
            tracing::warn!(peer = peer.short(), "{what}");
            self.emit(Event::AccessRefused {
                peer,
                timeline: None,
                what,
            });
        }
        tracing::info!(
            peer = peer.short(),
            sync = r.sync,
            conn,
            asked = r.refetch.len(),
            objects = plan.len(),
            "serving a refetch"
        );
        let plan = crate::sync::SendPlan {
            order: plan,
            bases: Default::default(),
        };
        self.accept_serve(now, conn, r.sync, plan);
    }

    fn refetch_done(&mut self, r: Refetch) {
        let left = r.missing.len();
        let restored = r.total - left;
        if left == 0 {
            self.done(r.cmd, true, format!("refetched {restored} objects"));
        } else {
            let asked = r.tried.len();
            self.done(
                r.cmd,
                false,
                format!(
                    "refetched {restored} objects; {left} still missing \
                     (asked {asked} peer{})",
                    if asked == 1 { "" } else { "s" }
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use crate::testkit::seal_files;

    #[test]
    fn the_plan_is_what_was_asked_and_held_children_first() {
        let mut s = MemStore::new("r");
        let files = [
            ("a/x".to_string(), b"x".to_vec()),
            ("b".into(), b"b".to_vec()),
        ]
        .into_iter()
        .collect();
        let seal = seal_files(&mut s, &files, vec![], 1, "one");
        let tree = s.seal(&seal).unwrap().tree;
        let root = Tree::decode(&s.get(&tree).unwrap()).unwrap();
        let sub = root.get("a").unwrap().id;
        let x = object::blob_id(b"x");
        let unknown = ObjectId::hash(b"nothing");
        let (p, withheld) = plan(&s, &[seal, x, unknown, sub, tree], None).unwrap();
        assert_eq!(withheld, 0);
        assert_eq!(p.len(), 4, "the unknown id is skipped: {p:?}");
        let pos = |id: &ObjectId| p.iter().position(|i| i == id).unwrap();
        assert!(pos(&x) < pos(&sub) && pos(&sub) < pos(&tree) && pos(&tree) < pos(&seal));
        // With rules: only what a readable head reaches.
        let (p, withheld) = plan(&s, &[x, sub], Some(&[])).unwrap();
        assert!(p.is_empty());
        assert_eq!(withheld, 2);
        let (p, _) = plan(&s, &[x, sub], Some(&[seal])).unwrap();
        assert_eq!(p, vec![x, sub]);
    }
}
