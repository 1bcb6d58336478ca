//! The simulated users: seals on random nodes and timelines, new timelines,
//! large files, and (with `resolvers`) conflicts resolved by hand.
//!
//! A user writes straight into its node's store, as the repository does when it
//! seals: new blobs (large files chunked like the real repository), the trees
//! on the edited paths, the seal, then the timeline head. The write is durable at
//! once. Then the node is told with `Command::LocalHeadsChanged`.
//!
//! This module decides what the users write (`Users`, `build_seal`,
//! `open_conflicts`, `resolution`) from a store and the world's random
//! stream; the world (`sim/users.rs`) commits it and tells the node.

use std::collections::BTreeMap;

use ivaldi_core::chunk;
use ivaldi_core::conflict;
use ivaldi_core::history::{self, Relation};
use ivaldi_core::id::ObjectId;
use ivaldi_core::node::Node;
use ivaldi_core::object::{Mode, Seal, Timestamp, Tree, TreeEntry, encode_blob};
use ivaldi_core::rng::Rng;
use ivaldi_core::store::Store;
use ivaldi_core::timeline::TimelineName;

use crate::config::{SimConfig, Workload};
use crate::store::SimStore;

/// Shared timelines of the diverging workloads.
const SHARED: [&str; 2] = ["main", "dev"];

fn tl(name: &str) -> TimelineName {
    TimelineName::new(name).expect("simulator timeline names are valid")
}

/// The objects of a new seal, landing order (blobs first, the seal last).
pub(crate) type Objects = Vec<(ObjectId, Vec<u8>)>;

/// A divergence a user may resolve: `(node, timeline, local head, remote head)`.
pub(crate) type OpenConflict = (usize, TimelineName, ObjectId, ObjectId);

/// Whether the users are sealing, and each node's count of own timelines.
#[derive(Clone, Debug, Default)]
pub(crate) struct Users {
    pub on: bool,
    own_timelines: BTreeMap<usize, u32>,
}

/// Whether node `i` has a sealing user: with `writers` = k, one node in
/// every `nodes / k` (nodes joining later never write).
pub(crate) fn is_writer(cfg: &SimConfig, i: usize) -> bool {
    let (n, k) = (cfg.nodes, cfg.writers);
    if k == 0 || k >= n {
        return true;
    }
    i < n && i.is_multiple_of(n / k)
}

impl Users {
    fn next_own_timeline(&mut self, n: usize) -> u32 {
        let k = self.own_timelines.entry(n).or_default();
        *k += 1;
        *k - 1
    }

    /// The timeline node `n`'s user seals on next: a shared one, one of its
    /// own, or a fresh one, as the workload says.
    pub(crate) fn pick_timeline(
        &mut self,
        workload: Workload,
        rng: &mut Rng,
        n: usize,
        store: &SimStore,
    ) -> TimelineName {
        let shared = match workload {
            Workload::Own => false,
            Workload::Shared => true,
            Workload::Mixed => rng.below(4) == 0,
        };
        let fresh = rng.below(12) == 0;
        if shared {
            if fresh {
                return tl(&format!("topic-{}", rng.below(4)));
            }
            return tl(SHARED[rng.below(SHARED.len() as u64) as usize]);
        }
        let prefix = format!("n{n}/");
        let own: Vec<TimelineName> = store
            .timelines()
            .keys()
            .filter(|t| t.as_str().starts_with(&prefix))
            .cloned()
            .collect();
        if own.is_empty() || fresh {
            let k = self.next_own_timeline(n);
            return if k == 0 || own.is_empty() {
                tl(&format!("n{n}/main"))
            } else {
                tl(&format!("n{n}/t{k}"))
            };
        }
        own[rng.below(own.len() as u64) as usize].clone()
    }
}

/// The parent a seal of node `n` on `timeline` gets: the timeline's head, or
/// for a new timeline the node's main line (`n{n}/main` for its own
/// timelines, `main` for shared ones).
pub(crate) fn parent_of(store: &SimStore, n: usize, timeline: &TimelineName) -> Option<ObjectId> {
    let heads = store.heads().unwrap_or_default();
    heads.get(timeline).copied().or_else(|| {
        if timeline.as_str().starts_with(&format!("n{n}/")) {
            heads.get(&tl(&format!("n{n}/main"))).copied()
        } else {
            heads.get(&tl("main")).copied()
        }
    })
}

/// What node `n`'s user writes to seal on `timeline` after `parent`: a few
/// edited files (and, if `large`, a large file), the trees above them, and
/// the seal (last). `number` names the seal in its text; `local_us` is the
/// node's clock, for the seal's time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_seal(
    store: &SimStore,
    cfg: &SimConfig,
    rng: &mut Rng,
    n: usize,
    timeline: &TimelineName,
    parent: Option<ObjectId>,
    large: bool,
    number: u64,
    local_us: u64,
) -> (Objects, ObjectId) {
    let root = parent
        .and_then(|p| store.raw(&p).and_then(|b| Seal::decode(b).ok()))
        .and_then(|s| store.raw(&s.tree).and_then(|b| Tree::decode(b).ok()))
        .unwrap_or_default();
    let mut edits: Vec<(String, String, Vec<u8>)> = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let dir = format!("d{}", rng.below(4));
        // Under auto_merge, users edit their own files on shared timelines:
        // the timelines diverge, but the merges are clean (edits clashing on
        // one file fall back to manual by design, and could never converge).
        let file = if cfg.strategy == ivaldi_core::config::ConflictStrategy::AutoMerge {
            format!("n{n}-f{}.txt", rng.below(8))
        } else {
            format!("f{}.txt", rng.below(8))
        };
        let lines = 4 + rng.below(40);
        let mut text = String::new();
        for l in 0..lines {
            text.push_str(&format!(
                "n{n} seal {number} line {l}: {:016x}\n",
                rng.next_u64()
            ));
        }
        edits.push((dir, file, text.into_bytes()));
    }
    if large {
        let mut data = vec![0u8; cfg.large_size];
        Rng::from_u64(rng.next_u64()).fill(&mut data);
        edits.push(("big".into(), format!("n{n}-b{}.bin", rng.below(2)), data));
    }
    let mut objects: Vec<(ObjectId, Vec<u8>)> = Vec::new();
    let mut by_dir: BTreeMap<String, Vec<(String, ObjectId)>> = BTreeMap::new();
    for (dir, file, content) in edits {
        let id = put_file(&mut objects, &content);
        by_dir.entry(dir).or_default().push((file, id));
    }
    let mut root_entries: BTreeMap<String, TreeEntry> = root
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    for (dir, files) in by_dir {
        let sub = root_entries
            .get(&dir)
            .filter(|e| e.mode == Mode::Tree)
            .and_then(|e| store.raw(&e.id))
            .and_then(|b| Tree::decode(b).ok())
            .unwrap_or_default();
        let mut entries: BTreeMap<String, TreeEntry> = sub
            .entries()
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect();
        for (name, id) in files {
            entries.insert(
                name.clone(),
                TreeEntry {
                    name,
                    mode: Mode::File,
                    id,
                },
            );
        }
        let tree = Tree::new(entries.into_values().collect()).expect("valid names");
        let bytes = tree.encode();
        let id = ObjectId::hash(&bytes);
        objects.push((id, bytes));
        root_entries.insert(
            dir.clone(),
            TreeEntry {
                name: dir,
                mode: Mode::Tree,
                id,
            },
        );
    }
    let tree = Tree::new(root_entries.into_values().collect()).expect("valid names");
    let tree_bytes = tree.encode();
    let tree_id = ObjectId::hash(&tree_bytes);
    objects.push((tree_id, tree_bytes));
    let local = local_us;
    let seal = Seal {
        git: None,
        tree: tree_id,
        parents: parent.into_iter().collect(),
        author: format!("n{n}"),
        time: Timestamp {
            seconds: 1_700_000_000 + (local / 1_000_000) as i64,
            offset_minutes: 0,
        },
        message: format!("seal {number} by n{n} on {timeline}"),
    };
    let seal_bytes = seal.encode().expect("encodable seal");
    let seal_id = ObjectId::hash(&seal_bytes);
    objects.push((seal_id, seal_bytes));
    (objects, seal_id)
}

/// The divergences among `users`' nodes that are still real (a node may
/// have fast-forwarded to another user's resolution meanwhile), one per node
/// and timeline.
pub(crate) fn open_conflicts<'a>(
    users: impl IntoIterator<Item = (usize, &'a Node, &'a SimStore)>,
) -> Vec<OpenConflict> {
    let mut open: Vec<OpenConflict> = Vec::new();
    for (n, node, store) in users {
        let heads = store.heads().unwrap_or_default();
        for c in node.conflicts() {
            let Some(&head) = heads.get(&c.timeline) else {
                continue;
            };
            if !store.has(&c.remote) {
                continue;
            }
            let relation = history::relate(Some(head), c.remote, &mut |id| store.seal(id));
            if matches!(relation, Ok(Relation::Diverged { .. }))
                && !open.iter().any(|(m, t, ..)| *m == n && *t == c.timeline)
            {
                open.push((n, c.timeline.clone(), head, c.remote));
            }
        }
    }
    open
}

/// How a user resolves a divergence, as `ivaldi p2p resolve` does: a clean
/// three-way merge when there is one (`--take merge`), else one side's tree
/// (`--take local` or `remote`, chosen at random), in a seal whose parents
/// are both heads. Returns the objects to write (the seal last), the seal,
/// and which way was taken.
pub(crate) fn resolution(
    store: &SimStore,
    rng: &mut Rng,
    (n, timeline, local, remote): &OpenConflict,
    local_us: u64,
) -> Option<(Objects, ObjectId, &'static str)> {
    let (n, local, remote) = (*n, *local, *remote);
    let merged = conflict::auto_merge(store, &local, &remote).ok().flatten();
    let (tree, mut objects, how) = match merged {
        Some(m) => {
            let tree = m
                .objects
                .last()
                .and_then(|(_, b)| Seal::decode(b).ok())
                .map(|s| s.tree)?;
            // The merge's blobs and trees; the user writes its own seal.
            let mut objects = m.objects;
            objects.pop();
            (tree, objects, "merge")
        }
        None => {
            let take_local = rng.below(2) == 0;
            let side = if take_local { local } else { remote };
            let tree = store
                .raw(&side)
                .and_then(|b| Seal::decode(b).ok())
                .map(|s| s.tree)?;
            (
                tree,
                Vec::new(),
                if take_local { "local" } else { "remote" },
            )
        }
    };
    let seal = Seal {
        git: None,
        tree,
        parents: vec![local, remote],
        author: format!("n{n}"),
        time: Timestamp {
            seconds: 1_700_000_000 + (local_us / 1_000_000) as i64,
            offset_minutes: 0,
        },
        message: format!(
            "Resolve {timeline}: take {how} ({} and {})",
            local.short(),
            remote.short()
        ),
    };
    let bytes = seal.encode().ok()?;
    let id = ObjectId::hash(&bytes);
    objects.push((id, bytes));
    Some((objects, id, how))
}

/// Adds a file's objects (chunked above the threshold) and returns the id a tree
/// entry names.
fn put_file(objects: &mut Vec<(ObjectId, Vec<u8>)>, content: &[u8]) -> ObjectId {
    if (content.len() as u64) < chunk::CHUNK_THRESHOLD {
        let bytes = encode_blob(content);
        let id = ObjectId::hash(&bytes);
        objects.push((id, bytes));
        return id;
    }
    let mut prev = 0;
    let mut leaves = Vec::new();
    for cut in chunk::cut_points(content) {
        let bytes = encode_blob(&content[prev..cut]);
        let id = ObjectId::hash(&bytes);
        leaves.push((id, (cut - prev) as u64));
        objects.push((id, bytes));
        prev = cut;
    }
    let mut last = None;
    for node in chunk::build_chunk_lists(&leaves) {
        last = Some(node.id);
        objects.push((node.id, node.bytes));
    }
    last.expect("a large file has chunks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_of_the_own_workload_starts_on_its_main_line() {
        let store = SimStore::new("repo", 1);
        let mut users = Users::default();
        let mut rng = Rng::from_u64(3);
        let t = users.pick_timeline(Workload::Own, &mut rng, 4, &store);
        assert_eq!(t.as_str(), "n4/main");
        assert!(is_writer(&SimConfig::default(), 4));
    }

    #[test]
    fn a_built_seal_comes_last_names_its_parent_and_is_the_same_for_the_same_draws() {
        let store = SimStore::new("repo", 1);
        let cfg = SimConfig::default();
        let parent = Some(ObjectId::hash(b"parent"));
        let build = |seed| {
            let mut rng = Rng::from_u64(seed);
            build_seal(
                &store,
                &cfg,
                &mut rng,
                2,
                &tl("main"),
                parent,
                false,
                7,
                5_000_000,
            )
        };
        let (objects, id) = build(9);
        let (last_id, last) = objects.last().expect("objects were written");
        assert_eq!(*last_id, id);
        let seal = Seal::decode(last).expect("the last object is the seal");
        assert_eq!(seal.parents, parent.into_iter().collect::<Vec<_>>());
        assert!(seal.message.contains("seal 7 by n2 on main"));
        assert_eq!(build(9).1, id);
        assert_ne!(build(10).1, id);
    }
}
