//! Which tracking names a peer already has here, so a pull writes only those
//! that moved.
//!
//! A pull records the head each of the peer's timelines had (a tracking name,
//! `RefName::Tracking`) unless it is recorded already. What this node wrote
//! since it started is in the peer's `heads_seen`, but that starts empty: the
//! first pull after a restart used to rewrite every tracking name, one file
//! per timeline (1,000 writes for a repository with 1,000 timelines, for one
//! new seal). So the names the store holds for the peer are read once, when
//! the peer connects ([`Store::tracking`]), and kept up to date with every
//! tracking update that lands.

use std::collections::BTreeMap;

use super::Node;
use crate::NodeId;
use crate::id::ObjectId;
use crate::store::{Store, StoreError};
use crate::sync;
use crate::timeline::TimelineName;

impl Node {
    /// Reads the tracking names the store holds for `peer`, once per run.
    pub(super) fn load_tracked(&mut self, peer: &NodeId, store: &dyn Store) {
        let rec = self.puller.peers.entry(peer.to_owned()).or_default();
        if rec.tracked.is_none() {
            rec.tracked = Some(store.tracking(&peer.to_hex()));
        }
    }

    /// The tracking names recorded for `peer`: what the store held when it
    /// connected, with what this node wrote since on top.
    pub(super) fn tracked(
        &mut self,
        peer: &NodeId,
        store: &dyn Store,
    ) -> BTreeMap<TimelineName, ObjectId> {
        self.load_tracked(peer, store);
        let rec = &self.puller.peers[peer];
        let mut out = rec.tracked.clone().unwrap_or_default();
        out.extend(rec.heads_seen.iter().map(|(t, h)| (t.clone(), *h)));
        out
    }

    /// A tracking update for `peer` landed.
    pub(super) fn tracking_landed(
        &mut self,
        peer: &NodeId,
        timeline: &TimelineName,
        head: ObjectId,
    ) {
        if let Some(rec) = self.puller.peers.get_mut(peer) {
            rec.heads_seen.insert(timeline.clone(), head);
            if let Some(t) = rec.tracked.as_mut() {
                t.insert(timeline.clone(), head);
            }
        }
    }

    /// The "have" list of a pull from `peer` ([`sync::haves`]): this node's
    /// heads and the heads last seen from the peer. When this node holds a
    /// head last seen from the peer, the peer knows the common history from
    /// it (the sender counts everything beneath a have as held), so the
    /// ancestor samples, there to find a common point in an unknown history,
    /// are left out: an announced seal costs one have, not 24 (about 1.5 KB).
    pub(super) fn pull_haves(
        &self,
        peer: &NodeId,
        store: &dyn Store,
    ) -> Result<Vec<ObjectId>, StoreError> {
        let local: Vec<ObjectId> = store.heads().unwrap_or_default().into_values().collect();
        let seen: Vec<ObjectId> = self
            .puller
            .peers
            .get(peer)
            .map(|r| r.heads_seen.values().copied().collect())
            .unwrap_or_default();
        let per_head = if seen.iter().any(|h| store.has(h)) {
            1
        } else {
            sync::HAVES_PER_HEAD
        };
        sync::haves_sampled(store, &local, &seen, per_head)
    }
}
