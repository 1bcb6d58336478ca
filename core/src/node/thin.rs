//! Thin deltas on the wire (capability `zstd-delta`).
//!
//! With the capability, an `objects` frame carries each object in its stored
//! form ([`wire::push_stored`]): raw, zstd, or a zstd delta against a base the
//! puller can resolve. A stored delta whose base the puller can resolve goes
//! out as it is; otherwise the serving side encodes a delta against the plan's
//! natural base (the same path in a parent seal, [`sync::SendPlan`]), or sends
//! the object whole and compressed.
//!
//! Which bases the puller can resolve, decided the same way on both sides
//! without a word about it:
//! - **Blobs** go to the puller's store still encoded
//!   ([`StoreRequest::Put`]'s `blobs`); the store decodes and verifies them, off
//!   the thread that drives connections. A blob's base is usable if the puller
//!   already holds it (the plan's base, not itself sent), or it was sent
//!   earlier in this stream: the store holds every earlier object of the pull
//!   (landed, or in the batch it is writing).
//! - **Trees** are decoded here: the pull needs their children. A tree's base
//!   is usable if the puller holds it, or it is one of the trees sent in this
//!   stream that a byte-bounded window ([`TREE_WINDOW`]) still holds. Both
//!   sides run the window over the same sequence, so they agree on it.
//! - Seals and chunk lists travel whole (zstd or raw).
//!
//! A delta whose base the puller cannot find is a protocol error with a clear
//! message (the connection closes), never a hang.
//!
//! [`StoreRequest::Put`]: crate::store::StoreRequest::Put

use std::collections::VecDeque;

use crate::codec::{Codec, Stored};
use crate::id::{IdMap, IdSet, ObjectId};
use crate::object::{self, ObjectKind};
use crate::store::{Store, StoreError};
use crate::sync::SendPlan;
use crate::wire;

/// The capability's name in `handshake.features`.
pub const FEATURE: &str = "zstd-delta";
/// Decoded bytes of trees each side keeps as bases for later trees of a stream.
pub const TREE_WINDOW: usize = 8 << 20;
/// Larger trees never enter the window.
pub const TREE_WINDOW_OBJECT: u32 = 256 << 10;

/// The trees of a stream recent enough to be delta bases, bounded in bytes.
#[derive(Debug)]
struct Window<T> {
    order: VecDeque<ObjectId>,
    items: IdMap<(u32, T)>,
    bytes: usize,
}

impl<T> Default for Window<T> {
    fn default() -> Self {
        Window {
            order: VecDeque::new(),
            items: IdMap::default(),
            bytes: 0,
        }
    }
}

impl<T> Window<T> {
    fn push(&mut self, id: ObjectId, len: u32, value: T) {
        if len > TREE_WINDOW_OBJECT || self.items.contains_key(&id) {
            return;
        }
        self.bytes += len as usize;
        self.order.push_back(id);
        self.items.insert(id, (len, value));
        while self.bytes > TREE_WINDOW {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((l, _)) = self.items.remove(&old) {
                self.bytes -= l as usize;
            }
        }
    }

    fn get(&self, id: &ObjectId) -> Option<&T> {
        self.items.get(id).map(|(_, v)| v)
    }
}

/// The serving side of one sync with the capability.
#[derive(Debug, Default)]
pub(super) struct ThinSender {
    /// The plan's natural base of each blob and tree.
    bases: IdMap<ObjectId>,
    /// Each planned object's place in the stream.
    position: IdMap<u32>,
    /// Natural bases that are not sent: the puller holds them.
    held: IdSet,
    trees: Window<()>,
}

impl ThinSender {
    pub fn new(plan: &SendPlan) -> ThinSender {
        let position: IdMap<u32> = plan
            .order
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let held = plan
            .bases
            .values()
            .filter(|b| !position.contains_key(*b))
            .copied()
            .collect();
        ThinSender {
            bases: plan.bases.clone(),
            position,
            held,
            trees: Window::default(),
        }
    }

    /// Whether the puller can resolve `base` for a `kind` object at `pos`.
    fn usable(&self, kind: ObjectKind, base: &ObjectId, pos: usize) -> bool {
        match self.position.get(base) {
            Some(p) => {
                (*p as usize) < pos
                    && match kind {
                        ObjectKind::Blob => true,
                        ObjectKind::Tree => self.trees.get(base).is_some(),
                        _ => false,
                    }
            }
            None => self.held.contains(base),
        }
    }

    /// Appends object `id`, the `pos`-th of the plan, to `out` in the form the
    /// puller can decode most cheaply. Returns its decoded size.
    pub fn encode(
        &mut self,
        store: &dyn Store,
        id: &ObjectId,
        pos: usize,
        out: &mut Vec<u8>,
    ) -> Result<u64, StoreError> {
        let mut stored = store.get_stored(id)?;
        let kind = stored.kind;
        let deltable = matches!(kind, ObjectKind::Blob | ObjectKind::Tree);
        let keep = match (stored.codec, stored.base) {
            (Codec::Delta, Some(b)) => deltable && self.usable(kind, &b, pos),
            (Codec::Delta, None) => false,
            _ => true,
        };
        let natural = self
            .bases
            .get(id)
            .copied()
            .filter(|b| deltable && self.usable(kind, b, pos));
        match natural {
            Some(b) if !(keep && stored.codec == Codec::Delta) => {
                let enc = decoded(store, id, &stored)?;
                let base = store.get(&b)?;
                let fresh = Stored::encode(kind, &enc, Some((b, &base)));
                match fresh {
                    Some(f) if !keep || f.bytes.len() < stored.bytes.len() => stored = f,
                    Some(_) => {}
                    None => return Err(too_large(id)),
                }
            }
            _ if !keep => {
                let enc = decoded(store, id, &stored)?;
                stored = Stored::encode(kind, &enc, None).ok_or_else(|| too_large(id))?;
            }
            _ => {}
        }
        // A base sent earlier in this stream is named by its distance back.
        let back = stored
            .base
            .filter(|_| stored.codec == Codec::Delta)
            .and_then(|b| self.position.get(&b))
            .and_then(|p| pos.checked_sub(*p as usize))
            .and_then(|d| u16::try_from(d).ok());
        wire::push_stored(out, id, &stored, back);
        if kind == ObjectKind::Tree {
            self.trees.push(*id, stored.len, ());
        }
        Ok(u64::from(stored.len))
    }
}

impl super::Node {
    /// The store refused a pull's blobs as invalid ([`StoreError::Invalid`]):
    /// the peer sent them, so it is a protocol violation on that connection
    /// (which ends the pull). `false` when no pull owns `batch`.
    pub(super) fn invalid_from_peer(&mut self, batch: u64, reason: &str) -> bool {
        let conn = self.puller.owner(batch).filter(|conn| {
            self.conns
                .get(conn)
                .and_then(|c| c.pull.as_ref())
                .is_some_and(|p| p.batch == batch || p.checkpoint == Some(batch))
        });
        let Some(conn) = conn else {
            return false;
        };
        if matches!(
            self.puller.batch(batch),
            Some(super::puller::Batch::Checkpoint { .. })
        ) {
            self.puller.take(batch);
        }
        self.violation(conn, reason.to_owned());
        true
    }
}

impl super::conn::Serve {
    /// Fills one frame's binary section with the next objects in stored form:
    /// `(objects, decoded bytes, a store failure that ends the serve)`. An
    /// object that would push a non-empty frame past `max_frame` is kept for
    /// the next frame, already encoded.
    pub fn fill_stored(
        &mut self,
        store: &dyn Store,
        bin: &mut Vec<u8>,
        max_frame: usize,
    ) -> (u32, u64, Option<String>) {
        let mut count = 0u32;
        let mut bytes = 0u64;
        let Some(thin) = self.thin.as_mut() else {
            return (0, 0, None);
        };
        if !self.carry.is_empty() {
            bin.append(&mut self.carry);
            count += 1;
        }

        let mut one = Vec::new();
        while (count as usize) < wire::MAX_OBJECTS_PER_FRAME && bin.len() < max_frame {
            let Some(id) = self.plan.get(self.next).copied() else {
                break;
            };
            one.clear();
            match thin.encode(store, &id, self.next, &mut one) {
                Ok(n) => bytes += n,
                Err(e) => return (count, bytes, Some(format!("store: {e}"))),
            }
            self.next += 1;
            if count > 0 && bin.len() + one.len() > max_frame {
                std::mem::swap(&mut self.carry, &mut one);
                break;
            }
            bin.extend_from_slice(&one);
            count += 1;
        }
        (count, bytes, None)
    }
}

fn too_large(id: &ObjectId) -> StoreError {
    StoreError::Failed(format!("object {id} is too large to send"))
}

/// The canonical encoding of an object whose stored form is `stored` (which
/// the store checked against its id when it read it): decoded here when
/// that needs no base, read again otherwise.
fn decoded(store: &dyn Store, id: &ObjectId, stored: &Stored) -> Result<Vec<u8>, StoreError> {
    match stored.codec {
        Codec::Raw => Ok(stored.bytes.clone()),
        Codec::Zstd => stored
            .decode(None)
            .map_err(|e| StoreError::Failed(format!("object {id}: {e}"))),
        Codec::Delta => store.get(id),
    }
}

/// One object of a received frame.
pub(super) enum Received {
    /// Decoded and verified here: its canonical encoding and kind, and the
    /// compressed form it came in, which the store may keep.
    Object(ObjectId, Vec<u8>, ObjectKind, Option<Stored>),
    /// A blob for the store to decode and verify.
    Blob(ObjectId, Stored),
}

/// The pulling side of one sync with the capability.
#[derive(Debug, Default)]
pub(super) struct ThinReceiver {
    trees: Window<Vec<u8>>,
    /// The ids of the last objects of the stream, for bases named by
    /// distance (at most `u16::MAX` back).
    recent: VecDeque<ObjectId>,
}

impl ThinReceiver {
    /// Decodes and verifies a frame's non-blob objects; blobs pass through.
    /// An error is the peer's fault and says which object and why.
    pub fn receive(
        &mut self,
        store: &dyn Store,
        entries: Vec<wire::StoredEntry>,
    ) -> Result<Vec<Received>, String> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let mut stored = e.stored;
            if let Some(d) = e.back {
                let d = usize::from(d);
                if d > self.recent.len() {
                    return Err(format!(
                        "a delta names its base {d} objects back, before the stream"
                    ));
                }
                stored.base = Some(self.recent[self.recent.len() - d]);
            }
            if stored.kind == ObjectKind::Blob {
                let id = e.id.ok_or("a blob without its id")?;
                self.note(id);
                out.push(Received::Blob(id, stored));
                continue;
            }
            let what = format!("a {:?}", stored.kind);
            let base = match stored.base.filter(|_| stored.codec == Codec::Delta) {
                None => None,
                Some(b) => match self.trees.get(&b) {
                    Some(v) => Some(v.clone()),
                    None => match store.get(&b) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            return Err(format!(
                                "the delta base {b} of {what} is neither held nor among the recent trees"
                            ));
                        }
                    },
                },
            };
            let enc = stored
                .decode(base.as_deref())
                .map_err(|e| format!("{what}: {e}"))?;
            // Sent without its id: its id is its hash; decoding checks that
            // it is well formed.
            let id = ObjectId::hash(&enc);
            let kind = object::verify(&id, &enc).map_err(|e| format!("bad object {id}: {e}"))?;
            if kind != stored.kind {
                return Err(format!(
                    "object {id} was sent as a {:?} but is a {kind:?}",
                    stored.kind
                ));
            }
            if kind == ObjectKind::Tree {
                self.trees.push(id, stored.len, enc.clone());
            }
            self.note(id);
            let form = (stored.codec != Codec::Raw).then_some(stored);
            out.push(Received::Object(id, enc, kind, form));
        }
        Ok(out)
    }

    /// Records the next object of the stream.
    fn note(&mut self, id: ObjectId) {
        if self.recent.len() == usize::from(u16::MAX) {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Mode, Tree, TreeEntry};
    use crate::store::{MemStore, resolve_blobs};

    fn blob(text: &str) -> Vec<u8> {
        object::encode_blob(text.as_bytes())
    }

    fn lines(n: usize, edit: usize) -> String {
        (0..n)
            .map(|i| {
                if i == edit {
                    "an edited line\n".to_owned()
                } else {
                    format!("line {i} of a long text file\n")
                }
            })
            .collect()
    }

    fn tree(entries: &[(&str, ObjectId)]) -> Vec<u8> {
        let entries = entries
            .iter()
            .map(|(name, id)| TreeEntry {
                name: (*name).into(),
                mode: Mode::File,
                id: *id,
            })
            .collect();
        Tree::new(entries).unwrap().encode()
    }

    type Landed = Result<Vec<(ObjectId, Vec<u8>)>, String>;

    /// Sends `order` from `src` with `bases` and receives it into `dst`.
    fn roundtrip(
        src: &MemStore,
        dst: &MemStore,
        order: Vec<ObjectId>,
        bases: IdMap<ObjectId>,
    ) -> (usize, Landed) {
        let plan = SendPlan { order, bases };
        let mut tx = ThinSender::new(&plan);
        let mut bin = Vec::new();
        for (i, id) in plan.order.iter().enumerate() {
            tx.encode(src, id, i, &mut bin).unwrap();
        }
        let entries = wire::split_stored(&bin, plan.order.len() as u32, 1 << 24).unwrap();
        let mut rx = ThinReceiver::default();
        let got = match rx.receive(dst, entries) {
            Ok(g) => g,
            Err(e) => return (bin.len(), Err(e)),
        };
        let mut objects = Vec::new();
        let mut blobs = Vec::new();
        for r in got {
            match r {
                Received::Object(id, enc, _, _) => objects.push((id, enc)),
                Received::Blob(id, s) => blobs.push((id, s)),
            }
        }
        let resolved =
            resolve_blobs(blobs, &|b| dst.objects.get(b).cloned()).map_err(|e| e.to_string());
        (
            bin.len(),
            resolved.map(|mut r| {
                r.extend(objects);
                r
            }),
        )
    }

    #[test]
    fn a_new_version_travels_as_a_small_delta_against_the_held_one() {
        let mut src = MemStore::new("r");
        let old = src.insert(blob(&lines(3000, 5)));
        let new = src.insert(blob(&lines(3000, 1500)));
        let mut dst = MemStore::new("r");
        dst.insert(blob(&lines(3000, 5)));
        let bases = IdMap::from_iter([(new, old)]);
        let (bytes, got) = roundtrip(&src, &dst, vec![new], bases);
        let got = got.unwrap();
        assert_eq!(got[0].0, new);
        assert_eq!(got[0].1, src.objects[&new]);
        assert!(bytes < 600, "{bytes} bytes on the wire (the file is 90 KB)");
    }

    #[test]
    fn a_missing_base_is_a_clear_error() {
        let mut src = MemStore::new("r");
        let old = src.insert(blob(&lines(3000, 5)));
        let new = src.insert(blob(&lines(3000, 1500)));
        // The puller does not hold the base after all (a lying plan).
        let dst = MemStore::new("r");
        let bases = IdMap::from_iter([(new, old)]);
        let (_, got) = roundtrip(&src, &dst, vec![new], bases);
        let e = got.unwrap_err();
        assert!(
            e.contains("delta base") && e.contains("neither held"),
            "{e}"
        );
    }

    #[test]
    fn trees_delta_against_held_trees_and_recent_ones_in_the_stream() {
        let mut src = MemStore::new("r");
        let ids: Vec<ObjectId> = (0..40)
            .map(|i| src.insert(blob(&format!("file {i}"))))
            .collect();
        let names: Vec<String> = (0..40).map(|i| format!("file-{i:02}.rs")).collect();
        let entries = |k: usize| -> Vec<(&str, ObjectId)> {
            names
                .iter()
                .map(|n| n.as_str())
                .zip(ids.iter().copied())
                .take(k)
                .collect()
        };
        let t1 = src.insert(tree(&entries(38)));
        let t2 = src.insert(tree(&entries(39)));
        let t3 = src.insert(tree(&entries(40)));
        let mut dst = MemStore::new("r");
        for i in &ids {
            dst.objects.insert(*i, src.objects[i].clone());
        }
        dst.objects.insert(t1, src.objects[&t1].clone());
        // t2 against the held t1, t3 against t2 sent just before.
        let bases = IdMap::from_iter([(t2, t1), (t3, t2)]);
        let (bytes, got) = roundtrip(&src, &dst, vec![t2, t3], bases);
        let got = got.unwrap();
        assert_eq!(got.len(), 2);
        let whole = src.objects[&t2].len() + src.objects[&t3].len();
        assert!(bytes * 4 < whole, "{bytes} of {whole}");
    }

    #[test]
    fn a_corrupt_blob_fails_in_the_store_and_a_wrong_kind_is_refused() {
        let mut src = MemStore::new("r");
        let a = src.insert(blob("hello"));
        let mut bin = Vec::new();
        // Small enough to travel raw.
        let mut s = Stored::encode(ObjectKind::Blob, &blob("hellO"), None).unwrap();
        assert_eq!(s.codec, Codec::Raw);
        wire::push_stored(&mut bin, &a, &s, None);
        let entries = wire::split_stored(&bin, 1, 1 << 20).unwrap();
        let got = ThinReceiver::default().receive(&src, entries).unwrap();
        let Received::Blob(id, st) = &got[0] else {
            panic!("a blob passes through")
        };
        let e = resolve_blobs(vec![(*id, st.clone())], &|_| None).unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
        s.kind = ObjectKind::Tree;
        s.bytes = blob("hello");
        let mut bin = Vec::new();
        wire::push_stored(&mut bin, &a, &s, None);
        let entries = wire::split_stored(&bin, 1, 1 << 20).unwrap();
        let e = ThinReceiver::default()
            .receive(&src, entries)
            .err()
            .unwrap_or_default();
        assert!(e.contains("sent as a Tree"), "{e}");
    }

    #[test]
    fn a_base_named_by_distance_is_the_object_that_far_back_and_never_before_the_stream() {
        let a = blob(&lines(3000, 5));
        let b = blob(&lines(3000, 1500));
        let (ia, ib) = (ObjectId::hash(&a), ObjectId::hash(&b));
        let whole = Stored::encode(ObjectKind::Blob, &a, None).unwrap();
        let delta = Stored::encode(ObjectKind::Blob, &b, Some((ia, &a))).unwrap();
        assert_eq!(delta.codec, Codec::Delta);
        let mut bin = Vec::new();
        wire::push_stored(&mut bin, &ia, &whole, None);
        wire::push_stored(&mut bin, &ib, &delta, Some(1));
        let entries = wire::split_stored(&bin, 2, 1 << 20).unwrap();
        assert_eq!(entries[1].back, Some(1));
        let got = ThinReceiver::default()
            .receive(&MemStore::new("r"), entries)
            .unwrap();
        let Received::Blob(id, s) = &got[1] else {
            panic!("a blob passes through")
        };
        assert_eq!((*id, s.base), (ib, Some(ia)));
        // Only the delta: its base would be before the stream.
        let mut bin = Vec::new();
        wire::push_stored(&mut bin, &ib, &delta, Some(1));
        let entries = wire::split_stored(&bin, 1, 1 << 20).unwrap();
        let e = ThinReceiver::default()
            .receive(&MemStore::new("r"), entries)
            .err()
            .unwrap_or_default();
        assert!(e.contains("before the stream"), "{e}");
    }

    #[test]
    fn the_tree_window_is_bounded_and_forgets_the_oldest() {
        let mut w: Window<()> = Window::default();
        let big = TREE_WINDOW_OBJECT;
        let n = TREE_WINDOW / big as usize + 3;
        let ids: Vec<ObjectId> = (0..n).map(|i| ObjectId::hash(&[i as u8])).collect();
        for id in &ids {
            w.push(*id, big, ());
        }
        assert!(w.bytes <= TREE_WINDOW);
        assert!(w.get(&ids[0]).is_none());
        assert!(w.get(&ids[n - 1]).is_some());
        w.push(ObjectId::hash(b"huge"), big + 1, ());
        assert!(w.get(&ObjectId::hash(b"huge")).is_none());
    }
}
