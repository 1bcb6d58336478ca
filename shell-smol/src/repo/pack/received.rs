//! Blobs a peer sent in stored form (`zstd-delta`): verified here, then kept
//! as they arrived, so landing a pull recompresses nothing.
//!
//! A delta's base is in the store, or earlier in this same batch (the peer
//! sends a base before anything encoded against it): a base in the batch is
//! read back from the temporary pack. A blob whose chain would pass
//! [`MAX_CHAIN`] is stored whole instead (zstd), so every read stays bounded.

use std::io::Write;
use std::os::unix::fs::FileExt;

use ivaldi_core::ObjectId;
use ivaldi_core::codec::Stored;
use ivaldi_core::object::{self, ObjectKind};

use super::{Codec, IndexEntry, MAX_CHAIN, MAX_OBJECT, PackWriter, Store, codec};
use crate::repo::error::{IoContext, RepoError, Result};

/// Bytes of decoded blobs a batch keeps as likely delta bases.
const RECENT_BYTES: usize = 16 << 20;

/// Recently received blobs of a batch, decoded, oldest dropped first.
#[derive(Default)]
pub(super) struct Recent {
    map: hashbrown::HashMap<ObjectId, std::sync::Arc<Vec<u8>>>,
    order: std::collections::VecDeque<ObjectId>,
    bytes: usize,
}

impl Recent {
    fn get(&self, id: &ObjectId) -> Option<std::sync::Arc<Vec<u8>>> {
        self.map.get(id).cloned()
    }

    fn put(&mut self, id: ObjectId, v: std::sync::Arc<Vec<u8>>) {
        if v.len() > RECENT_BYTES / 8 || self.map.contains_key(&id) {
            return;
        }
        self.bytes += v.len();
        self.order.push_back(id);
        self.map.insert(id, v);
        while self.bytes > RECENT_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.map.remove(&old) {
                self.bytes -= v.len();
            }
        }
    }
}

fn invalid(reason: String) -> RepoError {
    RepoError::Received(reason)
}

impl Store {
    /// An object as stored, for a peer with `zstd-delta`. The object is
    /// decoded and checked against its id first (its chain's bases come from
    /// the cache), so a flipped bit on disk is reported here, never served.
    pub fn read_stored_form(&self, id: &ObjectId) -> Result<Stored> {
        self.decode_at(id, 0)?;
        let loc = self.index.get(id).ok_or(RepoError::MissingObject(*id))?;
        let s = self.read_stored(id, loc)?;
        Ok(Stored {
            kind: loc.kind,
            codec: s.codec,
            len: s.ulen,
            base: s.base.filter(|_| s.codec == Codec::Delta),
            bytes: s.bytes,
        })
    }
}

impl PackWriter {
    /// Adds blob `id`, received as `s`. The peer's faults (a base that is
    /// nowhere, bytes that do not decode, content that does not match `id`)
    /// are [`RepoError::Received`]; nothing unverified is written.
    pub fn add_received_blob(&mut self, id: ObjectId, s: &Stored, store: &Store) -> Result<()> {
        if self.seen.contains(&id) {
            return Ok(());
        }
        if s.kind != ObjectKind::Blob {
            return Err(invalid(format!("{id} is not a blob")));
        }
        if s.len as usize > MAX_OBJECT {
            return Err(invalid(format!("blob {id} claims {} bytes", s.len)));
        }
        let (base, depth) = match (s.codec, s.base) {
            (Codec::Delta, Some(b)) => {
                let (enc, depth) = self.base_for(&b, store)?.ok_or_else(|| {
                    invalid(format!(
                        "the delta base {b} of blob {id} is neither held nor sent before it"
                    ))
                })?;
                (Some((b, enc)), depth)
            }
            (Codec::Delta, None) => {
                return Err(invalid(format!("blob {id}: a delta without a base")));
            }
            _ => (None, 0),
        };
        let enc = s
            .decode(base.as_ref().map(|b| b.1.as_slice()))
            .map_err(|e| invalid(format!("blob {id}: {e}")))?;
        match object::verify(&id, &enc) {
            Ok(ObjectKind::Blob) => {}
            Ok(k) => return Err(invalid(format!("{id} was sent as a blob but is a {k:?}"))),
            Err(e) => return Err(invalid(format!("bad object {id}: {e}"))),
        }
        if s.codec == Codec::Delta && depth >= MAX_CHAIN {
            // Too deep to keep as a delta: store it whole.
            self.store_entry(id, ObjectKind::Blob, &enc, None)?;
            self.recent.put(id, std::sync::Arc::new(enc));
            return Ok(());
        }
        let offset = self.offset;
        self.write(&s.bytes)?;
        let base_id = base.map(|b| b.0);
        if let Some(b) = base_id {
            self.needs.push((id, b));
        }
        self.entries.push(IndexEntry {
            id,
            offset,
            len: s.bytes.len() as u32,
            kind: ObjectKind::Blob,
            codec: s.codec,
            ulen: s.len,
            base: base_id,
        });
        self.seen.insert(id);
        self.recent.put(id, std::sync::Arc::new(enc));
        Ok(())
    }

    /// Adds an object the core verified (`encoding`), keeping `form`, the
    /// compressed form it arrived as: a zstd frame always, a delta when its
    /// base is in the store or this batch and the chain stays within
    /// [`MAX_CHAIN`]; otherwise as [`PackWriter::add_trusted`] would.
    pub fn add_with_form(
        &mut self,
        id: ObjectId,
        encoding: &[u8],
        form: &Stored,
        store: &Store,
    ) -> Result<()> {
        let depth = match (form.codec, form.base) {
            (Codec::Zstd, _) => Some(0),
            (Codec::Delta, Some(b)) if self.seen.contains(&b) => self.chain_in_batch(&b, store),
            (Codec::Delta, Some(b)) if store.contains(&b) => Some(store.delta_depth(&b)),
            _ => None,
        };
        let keep = depth.is_some_and(|d| d < MAX_CHAIN)
            && form.len as usize == encoding.len()
            && object::kind_of(encoding).ok() == Some(form.kind);
        if !keep || self.seen.contains(&id) {
            return self.add_trusted(id, encoding);
        }
        if form.kind != ObjectKind::Blob {
            for child in object::Object::decode(encoding)?.children() {
                self.needs.push((id, child));
            }
        }
        let base = form.base.filter(|_| form.codec == Codec::Delta);
        if let Some(b) = base {
            self.needs.push((id, b));
        }
        let offset = self.offset;
        self.write(&form.bytes)?;
        self.entries.push(IndexEntry {
            id,
            offset,
            len: form.bytes.len() as u32,
            kind: form.kind,
            codec: form.codec,
            ulen: form.len,
            base,
        });
        self.seen.insert(id);
        Ok(())
    }

    /// The batch's entry for `id`, indexing entries added since the last look.
    fn entry_of(&mut self, id: &ObjectId) -> Option<IndexEntry> {
        while self.indexed < self.entries.len() {
            let e = &self.entries[self.indexed];
            self.positions.insert(e.id, self.indexed);
            self.indexed += 1;
        }
        self.positions.get(id).map(|i| self.entries[*i])
    }

    /// The chain length of an object of this batch (its bases may continue
    /// in the store); `None` when a link is missing.
    fn chain_in_batch(&mut self, id: &ObjectId, store: &Store) -> Option<usize> {
        let mut depth = 0;
        let mut cur = *id;
        loop {
            let e = self.entry_of(&cur)?;
            match e.base.filter(|_| e.codec == Codec::Delta) {
                None => return Some(depth),
                Some(b) => {
                    depth += 1;
                    if depth > MAX_CHAIN {
                        return Some(depth);
                    }
                    if !self.seen.contains(&b) {
                        return store.contains(&b).then(|| depth + store.delta_depth(&b));
                    }
                    cur = b;
                }
            }
        }
    }

    /// A base's encoding and the length of its own chain, from this batch or
    /// the store; `None` when neither holds it.
    fn base_for(&mut self, id: &ObjectId, store: &Store) -> Result<Option<(Vec<u8>, usize)>> {
        if self.seen.contains(id) {
            let Some(depth) = self.chain_in_batch(id, store) else {
                return Ok(None);
            };
            let enc = match self.recent.get(id) {
                Some(v) => v.as_ref().clone(),
                None => self.read_back(id, store, 0)?.0,
            };
            return Ok(Some((enc, depth)));
        }
        if store.contains(id) {
            if store.kind(id) != Some(ObjectKind::Blob) {
                return Err(invalid(format!("the delta base {id} is not a blob")));
            }
            // Through the store's cache of decoded bases when the chain
            // leaves room; read whole otherwise.
            if let Some(b) = store.offer_base(id) {
                return Ok(Some((b.encoding.as_ref().clone(), b.depth)));
            }
            return Ok(Some((store.read_raw(id)?, store.delta_depth(id))));
        }
        Ok(None)
    }

    /// Reads an object of this batch back from the temporary pack, decoding
    /// its chain (within the batch, then the store).
    fn read_back(
        &mut self,
        id: &ObjectId,
        store: &Store,
        depth: usize,
    ) -> Result<(Vec<u8>, usize)> {
        let e = self.entry_of(id).ok_or(RepoError::MissingObject(*id))?;
        if depth > MAX_CHAIN {
            return Err(invalid(format!("a delta chain through {id} is too long")));
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| RepoError::Refused("pack already finished".into()))?;
        out.flush().at(&self.tmp_path)?;
        let mut stored = vec![0u8; e.len as usize];
        out.get_ref()
            .read_exact_at(&mut stored, e.offset)
            .at(&self.tmp_path)?;
        let (base, chain) = match e.base.filter(|_| e.codec == Codec::Delta) {
            None => (None, 0),
            Some(b) if self.seen.contains(&b) => {
                let (v, d) = self.read_back(&b, store, depth + 1)?;
                (Some(v), d + 1)
            }
            Some(b) => (Some(store.read_raw(&b)?), store.delta_depth(&b) + 1),
        };
        let enc = codec::decode(e.codec, &stored, e.ulen as usize, base.as_deref())
            .map_err(|r| invalid(format!("{id} read back: {r}")))?;
        Ok((enc, chain))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::store;
    use super::*;

    fn version(n: usize) -> Vec<u8> {
        let mut s = String::new();
        for i in 0..2000 {
            s.push_str(&format!("line {i}: the same text every version\n"));
            if i % 400 == 0 {
                s.push_str(&format!("edit {n} near line {i}\n"));
            }
        }
        object::encode_blob(s.as_bytes())
    }

    /// A peer's chain of deltas, each against the one before: every link
    /// within the limit is kept as sent, the rest are stored whole, and all
    /// read back exactly.
    #[test]
    fn received_deltas_are_kept_as_sent_up_to_the_chain_limit() {
        let (_d, mut s) = store();
        let mut w = s.writer().expect("writer");
        let mut prev: Option<(ObjectId, Vec<u8>)> = None;
        let mut ids = Vec::new();
        for n in 0..(MAX_CHAIN + 4) {
            let enc = version(n);
            let id = ObjectId::hash(&enc);
            let sent = Stored::encode(
                ObjectKind::Blob,
                &enc,
                prev.as_ref().map(|(b, v)| (*b, v.as_slice())),
            )
            .expect("encode");
            if n > 0 {
                assert_eq!(sent.codec, Codec::Delta);
            }
            w.add_received_blob(id, &sent, &s).expect("add");
            ids.push(id);
            prev = Some((id, enc));
        }
        s.commit(w).expect("commit");
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(s.read_raw(id).expect("read"), version(n), "version {n}");
            assert!(s.delta_depth(id) <= MAX_CHAIN, "version {n}");
        }
        assert_eq!(s.delta_depth(&ids[MAX_CHAIN]), MAX_CHAIN);
        assert_eq!(s.delta_depth(&ids[MAX_CHAIN + 1]), 0, "stored whole");
        // A later batch builds on the landed chain the same way.
        let mut w = s.writer().expect("writer");
        let last = ids[MAX_CHAIN + 3];
        let enc = version(99);
        let sent = Stored::encode(
            ObjectKind::Blob,
            &enc,
            Some((last, &version(MAX_CHAIN + 3))),
        )
        .expect("encode");
        let id = ObjectId::hash(&enc);
        w.add_received_blob(id, &sent, &s).expect("add");
        s.commit(w).expect("commit");
        assert_eq!(s.read_raw(&id).expect("read"), enc);
        let (mut problems, mut bad) = (Vec::new(), hashbrown::HashSet::new());
        s.verify_all(&mut problems, &mut bad);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_missing_base_or_a_wrong_id_is_the_peers_fault_and_writes_nothing() {
        let (_d, s) = store();
        let mut w = s.writer().expect("writer");
        let base = version(0);
        let enc = version(1);
        let sent = Stored::encode(ObjectKind::Blob, &enc, Some((ObjectId::hash(&base), &base)))
            .expect("encode");
        let e = w
            .add_received_blob(ObjectId::hash(&enc), &sent, &s)
            .expect_err("no base");
        assert!(
            matches!(&e, RepoError::Received(r) if r.contains("neither held")),
            "{e}"
        );
        let whole = Stored::encode(ObjectKind::Blob, &enc, None).expect("encode");
        let e = w
            .add_received_blob(ObjectId::hash(&base), &whole, &s)
            .expect_err("wrong id");
        assert!(matches!(e, RepoError::Received(_)), "{e}");
        assert!(w.is_empty());
    }
}
