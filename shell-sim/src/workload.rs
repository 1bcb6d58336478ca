//! The simulated users: seals on random nodes and timelines, new timelines,
//! large files.
//!
//! A user writes straight into its node's store, as the repository does when it
//! seals: new blobs (large files chunked like the real repository), the trees
//! on the edited paths, the seal, then the timeline head. The write is durable at
//! once. Then the node is told with `Command::LocalHeadsChanged`.

use std::collections::BTreeMap;

use ivaldi_core::chunk;
use ivaldi_core::conflict;
use ivaldi_core::id::ObjectId;
use ivaldi_core::node::Command;
use ivaldi_core::object::{Mode, Seal, Timestamp, Tree, TreeEntry, encode_blob};
use ivaldi_core::rng::Rng;
use ivaldi_core::store::Store;
use ivaldi_core::sync::{self, Relation};
use ivaldi_core::timeline::TimelineName;

use crate::config::Workload;
use crate::sim::{Ev, Sim};

/// Shared timelines of the diverging workloads.
const SHARED: [&str; 2] = ["main", "dev"];

fn tl(name: &str) -> TimelineName {
    TimelineName::new(name).expect("simulator timeline names are valid")
}

impl Sim {
    /// Starts the users: the first seal comes after `after`.
    pub fn start_workload(&mut self, after: std::time::Duration) {
        self.workload_on = true;
        self.schedule(after, Ev::Workload);
    }

    /// Stops the users.
    pub fn stop_workload(&mut self) {
        self.workload_on = false;
    }

    pub(crate) fn workload_tick(&mut self) {
        // Users who resolve conflicts keep at it after the heal: that is when
        // most conflicts are found.
        if !self.workload_on && !self.cfg.resolvers {
            return;
        }
        let ups: Vec<usize> = self
            .up_nodes()
            .into_iter()
            .filter(|i| self.is_writer(*i))
            .collect();
        if self.workload_on && !ups.is_empty() {
            let n = ups[self.rng.below(ups.len() as u64) as usize];
            let timeline = self.pick_timeline(n);
            let large =
                self.cfg.large_every > 0 && self.rng.below(u64::from(self.cfg.large_every)) == 0;
            self.seal(n, &timeline, large);
        }
        if self.cfg.resolvers {
            self.resolve_one(&ups);
        }
        let mean = self.cfg.seal_every;
        let next = self.between(std::time::Duration::ZERO, mean * 2);
        self.schedule(next, Ev::Workload);
    }

    /// Whether node `i` has a sealing user: with `writers` = k, one node in
    /// every `nodes / k` (nodes joining later never write).
    pub fn is_writer(&self, i: usize) -> bool {
        let (n, k) = (self.cfg.nodes, self.cfg.writers);
        if k == 0 || k >= n {
            return true;
        }
        i < n && i.is_multiple_of(n / k)
    }

    fn pick_timeline(&mut self, n: usize) -> TimelineName {
        let shared = match self.cfg.workload {
            Workload::Own => false,
            Workload::Shared => true,
            Workload::Mixed => self.rng.below(4) == 0,
        };
        let fresh = self.rng.below(12) == 0;
        if shared {
            if fresh {
                return tl(&format!("topic-{}", self.rng.below(4)));
            }
            return tl(SHARED[self.rng.below(SHARED.len() as u64) as usize]);
        }
        let prefix = format!("n{n}/");
        let own: Vec<TimelineName> = self.nodes[n]
            .store
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
        own[self.rng.below(own.len() as u64) as usize].clone()
    }

    /// Node `n`'s user edits a few files (and, if `large`, writes a large file)
    /// and seals on `timeline`. A timeline that does not exist yet branches off
    /// the node's main line. Returns the seal.
    pub fn seal(&mut self, n: usize, timeline: &TimelineName, large: bool) -> Option<ObjectId> {
        if !self.nodes[n].is_up() {
            return None;
        }
        let store = &self.nodes[n].store;
        let heads = store.heads().unwrap_or_default();
        let parent = heads.get(timeline).copied().or_else(|| {
            if timeline.as_str().starts_with(&format!("n{n}/")) {
                heads.get(&tl(&format!("n{n}/main"))).copied()
            } else {
                heads.get(&tl("main")).copied()
            }
        });
        if !heads.contains_key(timeline) {
            self.counters.new_timelines += 1;
        }
        let root = parent
            .and_then(|p| store.raw(&p).and_then(|b| Seal::decode(b).ok()))
            .and_then(|s| store.raw(&s.tree).and_then(|b| Tree::decode(b).ok()))
            .unwrap_or_default();
        let number = self.counters.seals;
        let mut edits: Vec<(String, String, Vec<u8>)> = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            let dir = format!("d{}", self.rng.below(4));
            // Under auto_merge, users edit their own files on shared timelines:
            // the timelines diverge, but the merges are clean (edits clashing on
            // one file fall back to manual by design, and could never converge).
            let file = if self.cfg.strategy == ivaldi_core::config::ConflictStrategy::AutoMerge {
                format!("n{n}-f{}.txt", self.rng.below(8))
            } else {
                format!("f{}.txt", self.rng.below(8))
            };
            let lines = 4 + self.rng.below(40);
            let mut text = String::new();
            for l in 0..lines {
                text.push_str(&format!(
                    "n{n} seal {number} line {l}: {:016x}\n",
                    self.rng.next_u64()
                ));
            }
            edits.push((dir, file, text.into_bytes()));
        }
        if large {
            let mut data = vec![0u8; self.cfg.large_size];
            Rng::from_u64(self.rng.next_u64()).fill(&mut data);
            edits.push((
                "big".into(),
                format!("n{n}-b{}.bin", self.rng.below(2)),
                data,
            ));
        }
        let store = &self.nodes[n].store;
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
        let local = self.local(n).as_micros();
        let seal = Seal {
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
        let count = objects.len();
        self.counters.seals += 1;
        if large {
            self.counters.large_seals += 1;
        }
        let sn = &mut self.nodes[n];
        let changes = sn
            .store
            .commit_local(objects, timeline.clone(), seal_id, &mut self.pool);
        self.after_changes(n, changes);
        self.nodes[n].made.push(seal_id);
        self.made.push((seal_id, n, timeline.clone()));
        if self.trace.enabled() {
            self.trace_line(
                Some(n),
                &format!(
                    "SEAL {} on {timeline} ({count} objects{})",
                    seal_id.short(),
                    if large { ", large file" } else { "" }
                ),
            );
        }
        self.command(n, Command::LocalHeadsChanged);
        Some(seal_id)
    }
}

impl Sim {
    /// One user resolves one conflict its node recorded, as `ivaldi p2p resolve`
    /// does: a clean three-way merge when there is one (`--take merge`), else
    /// one side's tree (`--take local` or `remote`, chosen at random), in a seal
    /// whose parents are both heads. The user is drawn at random among those
    /// whose node lists a divergence that is still real (the node may have
    /// fast-forwarded to another user's resolution meanwhile), so with a tick
    /// every few seconds users act some seconds after the conflict, one at a
    /// time, as people do.
    fn resolve_one(&mut self, users: &[usize]) {
        let mut open: Vec<(usize, TimelineName, ObjectId, ObjectId)> = Vec::new();
        for &n in users {
            let Some(node) = self.nodes[n].node.as_ref() else {
                continue;
            };
            let store = &self.nodes[n].store;
            let heads = store.heads().unwrap_or_default();
            for c in node.conflicts() {
                let Some(&head) = heads.get(&c.timeline) else {
                    continue;
                };
                if !store.has(&c.remote) {
                    continue;
                }
                let relation = sync::relate(Some(head), c.remote, &mut |id| store.seal(id));
                if matches!(relation, Ok(Relation::Diverged { .. }))
                    && !open.iter().any(|(m, t, ..)| *m == n && *t == c.timeline)
                {
                    open.push((n, c.timeline.clone(), head, c.remote));
                }
            }
        }
        if open.is_empty() {
            return;
        }
        let (n, timeline, local, remote) =
            open.swap_remove(self.rng.below(open.len() as u64) as usize);
        let store = &self.nodes[n].store;
        let merged = conflict::auto_merge(store, &local, &remote).ok().flatten();
        let (tree, mut objects, how) = match merged {
            Some(m) => {
                let Some(tree) = m
                    .objects
                    .last()
                    .and_then(|(_, b)| Seal::decode(b).ok())
                    .map(|s| s.tree)
                else {
                    return;
                };
                // The merge's blobs and trees; the user writes its own seal.
                let mut objects = m.objects;
                objects.pop();
                (tree, objects, "merge")
            }
            None => {
                let take_local = self.rng.below(2) == 0;
                let side = if take_local { local } else { remote };
                let Some(tree) = store
                    .raw(&side)
                    .and_then(|b| Seal::decode(b).ok())
                    .map(|s| s.tree)
                else {
                    return;
                };
                (
                    tree,
                    Vec::new(),
                    if take_local { "local" } else { "remote" },
                )
            }
        };
        let seal = Seal {
            tree,
            parents: vec![local, remote],
            author: format!("n{n}"),
            time: Timestamp {
                seconds: 1_700_000_000 + (self.local(n).as_micros() / 1_000_000) as i64,
                offset_minutes: 0,
            },
            message: format!(
                "Resolve {timeline}: take {how} ({} and {})",
                local.short(),
                remote.short()
            ),
        };
        let Ok(bytes) = seal.encode() else { return };
        let id = ObjectId::hash(&bytes);
        objects.push((id, bytes));
        self.counters.resolutions += 1;
        let sn = &mut self.nodes[n];
        let changes = sn
            .store
            .commit_local(objects, timeline.clone(), id, &mut self.pool);
        self.after_changes(n, changes);
        self.nodes[n].made.push(id);
        self.made.push((id, n, timeline.clone()));
        if self.trace.enabled() {
            self.trace_line(
                Some(n),
                &format!("RESOLVE {timeline}: take {how} -> {}", id.short()),
            );
        }
        self.command(n, Command::LocalHeadsChanged);
    }
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
