//! `ivaldi git import`: a git repository's branches, tags and whole commit
//! graph into seals and timelines.
//!
//! Order of work, so a failure leaves the repository as it was:
//! 1. read every ref and map branch names (a collision or an unreadable ref
//!    stops here, before anything is written);
//! 2. walk the commits not yet in the map, parents first, converting each
//!    commit, tree and blob into one pack; every tree and commit is checked to
//!    rebuild to git's exact bytes, or the import stops naming the commit and path;
//! 3. land the pack, save the map, then move timelines (only forward: a
//!    timeline that has seals git does not know is left alone and reported),
//!    then record tags.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use ivaldi_core::chunk::{self, CHUNK_THRESHOLD};
use ivaldi_core::object::{self, GitCommit, Mode};
use ivaldi_core::{ObjectId, Seal, TimelineName, Tree, TreeEntry};
use ivaldi_shell_smol::repo::{PackWriter, Repository};
use serde::Serialize;

use crate::error::{BridgeError, Result};
use crate::gitobj::{self, GitId};
use crate::names;
use crate::state::{State, TagRecord, to_hex};

/// Deepest directory nesting accepted from git.
const MAX_DEPTH: usize = 256;

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Put before every timeline name made from a branch (`git/` makes `git/main`).
    pub timeline_prefix: String,
}

/// What happened to one branch.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BranchOutcome {
    pub branch: String,
    pub timeline: String,
    pub seal: String,
    /// `created`, `moved`, `unchanged`, or `diverged` (the timeline has seals
    /// the branch lacks; it was not moved).
    pub outcome: &'static str,
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// Commits converted into new seals by this run.
    pub commits_imported: usize,
    /// Objects (seals, trees, blobs, chunks) newly stored.
    pub objects_stored: usize,
    pub branches: Vec<BranchOutcome>,
    /// Branches whose timeline name differs from the branch name: (branch, timeline).
    pub renamed: Vec<(String, String)>,
    /// Tags recorded (new or changed).
    pub tags: Vec<String>,
    /// Refs left out, each with the reason.
    pub skipped: Vec<String>,
}

/// Progress, reported after each commit.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub commits_done: usize,
    pub commits_total: usize,
    pub objects: usize,
}

/// Opens a git repository (bare, or a working tree with `.git`).
pub fn open_git(path: &Path) -> Result<gix::Repository> {
    if !path.is_dir() {
        return Err(BridgeError::NotAGitRepository {
            path: path.to_owned(),
            reason: "no such directory".into(),
        });
    }
    gix::open_opts(path, gix::open::Options::isolated()).map_err(|e| {
        BridgeError::NotAGitRepository {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })
}

fn read_err(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::GitRead(e.to_string())
}

/// Reads a tag object's `object` and `type` headers.
fn tag_target(data: &[u8]) -> Option<(GitId, &[u8])> {
    let rest = data.strip_prefix(b"object ")?;
    let id = GitId::from_hex(rest.get(..40)?).ok()?;
    let rest = rest.get(41..)?.strip_prefix(b"type ")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    Some((id, &rest[..end]))
}

struct Refs {
    /// (branch, timeline, tip)
    branches: Vec<(String, TimelineName, GitId)>,
    /// name → (commit, raw annotated tag object)
    tags: BTreeMap<String, (GitId, Option<Vec<u8>>)>,
    skipped: Vec<String>,
}

fn read_refs(git: &gix::Repository, prefix: &str) -> Result<Refs> {
    let platform = git.references().map_err(read_err)?;
    let mut out = Refs {
        branches: Vec::new(),
        tags: BTreeMap::new(),
        skipped: Vec::new(),
    };
    let mut taken: BTreeMap<TimelineName, String> = BTreeMap::new();
    for r in platform.local_branches().map_err(read_err)? {
        let r = r.map_err(read_err)?;
        let full = r.name().as_bstr().to_string();
        let Ok(branch) = std::str::from_utf8(r.name().shorten()) else {
            return Err(BridgeError::Refused(format!(
                "branch {full:?} is not UTF-8 and cannot name a timeline"
            )));
        };
        let Some(tip) = r.target().try_id().map(|i| i.to_owned()) else {
            out.skipped
                .push(format!("{full}: a symbolic ref, not imported"));
            continue;
        };
        let kind = git.find_header(tip).map_err(read_err)?.kind();
        if kind != gix::object::Kind::Commit {
            out.skipped
                .push(format!("{full}: points at a {kind}, not a commit"));
            continue;
        }
        let timeline = names::timeline_for_branch(prefix, branch).map_err(BridgeError::Refused)?;
        if let Some(other) = taken.insert(timeline.clone(), branch.to_owned()) {
            return Err(BridgeError::Refused(format!(
                "branches {other:?} and {branch:?} both map to timeline {timeline}"
            )));
        }
        out.branches.push((branch.to_owned(), timeline, tip));
    }
    for r in platform.tags().map_err(read_err)? {
        let r = r.map_err(read_err)?;
        let full = r.name().as_bstr().to_string();
        let Ok(name) = std::str::from_utf8(r.name().shorten()) else {
            out.skipped.push(format!("{full}: name is not UTF-8"));
            continue;
        };
        let Some(target) = r.target().try_id().map(|i| i.to_owned()) else {
            out.skipped
                .push(format!("{full}: a symbolic ref, not imported"));
            continue;
        };
        let obj = git.find_object(target).map_err(read_err)?;
        match obj.kind {
            gix::object::Kind::Commit => {
                out.tags.insert(name.to_owned(), (target, None));
            }
            gix::object::Kind::Tag => match tag_target(&obj.data) {
                Some((commit, b"commit")) => {
                    out.tags
                        .insert(name.to_owned(), (commit, Some(obj.data.clone())));
                }
                Some((_, kind)) => out.skipped.push(format!(
                    "{full}: an annotated tag of a {}, only tags of commits are kept",
                    String::from_utf8_lossy(kind)
                )),
                None => out
                    .skipped
                    .push(format!("{full}: the tag object does not parse")),
            },
            kind => out.skipped.push(format!(
                "{full}: a tag of a {kind}, only tags of commits are kept"
            )),
        }
    }
    Ok(out)
}

/// Converts git objects into Ivaldi objects, into one pack.
struct Converter<'a> {
    git: &'a gix::Repository,
    repo: &'a Repository,
    writer: PackWriter,
    trees: HashMap<GitId, ObjectId>,
    blobs: HashMap<(GitId, bool), ObjectId>,
    objects: usize,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

impl Converter<'_> {
    fn add(&mut self, id: ObjectId, bytes: &[u8]) -> Result<()> {
        if !self.repo.store.contains(&id) && !self.writer.holds(&id) {
            self.writer.add_trusted(id, bytes)?;
            self.objects += 1;
        }
        Ok(())
    }

    fn add_blob(&mut self, data: &[u8]) -> Result<ObjectId> {
        let id = object::blob_id(data);
        if !self.repo.store.contains(&id) && !self.writer.holds(&id) {
            self.writer.add_blob(data)?;
            self.objects += 1;
        }
        Ok(id)
    }

    /// A file's content as the working-tree scan would store it: one blob, or
    /// chunks and chunk lists at and above [`CHUNK_THRESHOLD`] (never for a
    /// symlink), so the same file has the same id however it arrived.
    fn blob(
        &mut self,
        id: GitId,
        symlink: bool,
        at: &dyn Fn(String) -> BridgeError,
    ) -> Result<ObjectId> {
        if let Some(done) = self.blobs.get(&(id, symlink)) {
            return Ok(*done);
        }
        let obj = self.git.find_object(id).map_err(|e| at(e.to_string()))?;
        if obj.kind != gix::object::Kind::Blob {
            return Err(at(format!("entry {id} is a {}, not a blob", obj.kind)));
        }
        let data = &obj.data;
        let out = if symlink || (data.len() as u64) < CHUNK_THRESHOLD {
            self.add_blob(data)?
        } else {
            let mut leaves = Vec::new();
            let mut start = 0;
            for end in chunk::cut_points(data) {
                let piece = &data[start..end];
                leaves.push((self.add_blob(piece)?, piece.len() as u64));
                start = end;
            }
            let nodes = chunk::build_chunk_lists(&leaves);
            for n in &nodes {
                self.add(n.id, &n.bytes)?;
            }
            nodes
                .last()
                .map(|n| n.id)
                .ok_or_else(|| at("a large file produced no chunks".into()))?
        };
        self.blobs.insert((id, symlink), out);
        Ok(out)
    }

    /// Converts git tree `id`. `base` is the same directory in the first
    /// parent, imported by an earlier run (git tree, Ivaldi tree): entries
    /// unchanged since then are taken from it unread, so a commit costs what
    /// it changed, not the size of its tree.
    fn tree(
        &mut self,
        id: GitId,
        commit: &GitId,
        path: &str,
        depth: usize,
        base: Option<(GitId, ObjectId)>,
    ) -> Result<ObjectId> {
        if let Some(done) = self.trees.get(&id) {
            return Ok(*done);
        }
        if let Some((bg, bi)) = base
            && bg == id
        {
            self.trees.insert(id, bi);
            return Ok(bi);
        }
        // name -> (git mode, git id, Ivaldi id) of the base directory.
        let mut old: HashMap<Vec<u8>, (Vec<u8>, GitId, ObjectId)> = HashMap::new();
        if let Some((bg, bi)) = base
            && let (Ok(gt), Ok(it)) = (self.git.find_object(bg), self.repo.store.tree(&bi))
            && let Ok(entries) = gitobj::parse_tree(&gt.data)
        {
            for e in entries {
                if let Some(ie) = std::str::from_utf8(e.name).ok().and_then(|n| it.get(n)) {
                    old.insert(e.name.to_vec(), (e.mode.to_vec(), GitId::from(e.id), ie.id));
                }
            }
        }
        let at = |p: &str| {
            let commit = commit.to_string();
            let p = p.to_owned();
            move |reason: String| BridgeError::Path {
                commit: commit.clone(),
                path: if p.is_empty() { "/".into() } else { p.clone() },
                reason,
            }
        };
        if depth > MAX_DEPTH {
            return Err(at(path)(format!(
                "directories nest deeper than {MAX_DEPTH}"
            )));
        }
        let obj = self
            .git
            .find_object(id)
            .map_err(|e| at(path)(e.to_string()))?;
        if obj.kind != gix::object::Kind::Tree {
            return Err(at(path)(format!("{id} is a {}, not a tree", obj.kind)));
        }
        let raw = gitobj::parse_tree(&obj.data).map_err(|e| at(path)(e.into()))?;
        let mut entries = Vec::with_capacity(raw.len());
        let mut back = Vec::with_capacity(raw.len());
        for e in &raw {
            let shown = join(path, &String::from_utf8_lossy(e.name));
            let name = gitobj::entry_name(e.name).map_err(|r| {
                at(&shown)(format!(
                    "{r}; Ivaldi cannot hold this name, so it is refused rather than changed"
                ))
            })?;
            let mode = gitobj::mode_from_git(e.mode).ok_or_else(|| {
                at(&shown)(format!(
                    "mode {:?} is not one git writes today, so it could not be exported to the same id",
                    String::from_utf8_lossy(e.mode)
                ))
            })?;
            let gid = GitId::from(e.id);
            let prev = old.get(e.name).filter(|o| o.0 == e.mode);
            let reuse = prev
                .filter(|o| mode != Mode::Tree && o.1 == gid)
                .map(|o| o.2);
            let iid = match (reuse, mode) {
                (Some(i), _) => i,
                (None, Mode::Tree) => {
                    self.tree(gid, commit, &shown, depth + 1, prev.map(|o| (o.1, o.2)))?
                }
                (None, Mode::Gitlink) => gitobj::gitlink_to_ivaldi(&e.id),
                (None, Mode::File | Mode::Executable | Mode::Symlink) => {
                    self.blob(gid, mode == Mode::Symlink, &at(&shown))?
                }
            };
            entries.push(TreeEntry {
                name: name.to_owned(),
                mode,
                id: iid,
            });
            back.push((mode, name, gid));
        }
        if gitobj::encode_tree(&mut back) != obj.data {
            return Err(at(path)(
                "the tree is not in git's canonical form (entry order or duplicate names), \
                 so it could not be exported to the same id"
                    .into(),
            ));
        }
        let tree = Tree::new(entries).map_err(|e| at(path)(e.to_string()))?;
        let bytes = tree.encode();
        let tid = ObjectId::hash(&bytes);
        self.add(tid, &bytes)?;
        self.trees.insert(id, tid);
        Ok(tid)
    }

    fn commit(&mut self, id: &GitId, raw: &[u8], st: &State) -> Result<(ObjectId, Seal)> {
        let bad = |reason: String| BridgeError::Commit {
            commit: id.to_string(),
            reason,
        };
        let c = gitobj::parse_commit(raw)
            .ok_or_else(|| bad("the commit is not laid out as git writes commits".into()))?;
        if gitobj::encode_commit(&c.tree, &c.parents, c.headers, c.message) != raw {
            return Err(bad("the commit does not rebuild to the same bytes".into()));
        }
        // The first parent's trees, when an earlier run imported it.
        let base = match c
            .parents
            .first()
            .and_then(|p| Some((*p, *st.to_seal.get(p)?)))
        {
            Some((p, seal)) if !self.trees.contains_key(&c.tree) && !self.writer.holds(&seal) => {
                let ptree = self
                    .git
                    .find_object(p)
                    .ok()
                    .and_then(|o| gitobj::parse_commit(&o.data).map(|pc| pc.tree));
                let itree = self.repo.store.seal(&seal).ok().map(|s| s.tree);
                ptree.zip(itree)
            }
            _ => None,
        };
        let tree = self.tree(c.tree, id, "", 0, base)?;
        let mut parents = Vec::with_capacity(c.parents.len());
        for p in &c.parents {
            parents.push(
                *st.to_seal
                    .get(p)
                    .ok_or_else(|| bad(format!("parent {p} was not imported first")))?,
            );
        }
        let (author, time) = gitobj::header(c.headers, "author")
            .map(gitobj::parse_signature)
            .unwrap_or_else(|| gitobj::parse_signature(b""));
        let (message, raw_message) = match std::str::from_utf8(c.message) {
            Ok(s) => (s.to_owned(), None),
            Err(_) => (
                String::from_utf8_lossy(c.message).into_owned(),
                Some(c.message.to_vec()),
            ),
        };
        let seal = Seal {
            tree,
            parents,
            author,
            time,
            message,
            git: Some(GitCommit {
                headers: c.headers.to_vec(),
                raw_message,
            }),
        };
        let bytes = seal.encode().map_err(|e| bad(e.to_string()))?;
        let sid = ObjectId::hash(&bytes);
        self.add(sid, &bytes)?;
        Ok((sid, seal))
    }
}

/// Imports `git_dir` into `repo`. Only commits the map does not hold yet are
/// read and converted.
pub fn import(
    repo: &mut Repository,
    git_dir: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ImportReport> {
    let git = open_git(git_dir)?;
    let refs = read_refs(&git, &opts.timeline_prefix)?;
    let lock = repo.lock()?;
    let mut st = State::load(repo)?;
    let known = |st: &State, id: &GitId| st.to_seal.get(id).is_some_and(|s| repo.store.contains(s));

    // Parents first: an explicit stack, so deep histories cannot overflow.
    let tips: Vec<GitId> = refs
        .branches
        .iter()
        .map(|b| b.2)
        .chain(refs.tags.values().map(|t| t.0))
        .collect();
    let mut order = Vec::new();
    let mut raw: HashMap<GitId, Vec<u8>> = HashMap::new();
    let mut seen: HashSet<GitId> = HashSet::new();
    let mut stack: Vec<(GitId, bool)> = tips.iter().rev().map(|t| (*t, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            order.push(id);
            continue;
        }
        if seen.contains(&id) || known(&st, &id) {
            continue;
        }
        seen.insert(id);
        let obj = git.find_object(id).map_err(|e| BridgeError::Commit {
            commit: id.to_string(),
            reason: e.to_string(),
        })?;
        if obj.kind != gix::object::Kind::Commit {
            return Err(BridgeError::Commit {
                commit: id.to_string(),
                reason: format!("a parent or ref names a {}, not a commit", obj.kind),
            });
        }
        stack.push((id, true));
        let parents = gitobj::parse_commit(&obj.data)
            .map(|c| c.parents)
            .ok_or_else(|| BridgeError::Commit {
                commit: id.to_string(),
                reason: "the commit is not laid out as git writes commits".into(),
            })?;
        for p in parents.iter().rev() {
            if !seen.contains(p) && !known(&st, p) {
                stack.push((*p, false));
            }
        }
        raw.insert(id, obj.data.clone());
    }

    let mut conv = Converter {
        git: &git,
        repo,
        writer: repo.store.writer()?,
        trees: HashMap::new(),
        blobs: HashMap::new(),
        objects: 0,
    };
    let total = order.len();
    let mut fresh = Vec::with_capacity(total);
    for (i, id) in order.iter().enumerate() {
        let bytes = raw.remove(id).unwrap_or_default();
        let (sid, _) = conv.commit(id, &bytes, &st)?;
        st.insert(*id, sid);
        fresh.push(*id);
        progress(Progress {
            commits_done: i + 1,
            commits_total: total,
            objects: conv.objects,
        });
    }
    let writer = conv.writer;
    drop(raw);
    let mut report = ImportReport {
        commits_imported: fresh.len(),
        skipped: refs.skipped,
        ..ImportReport::default()
    };
    report.objects_stored = repo.store.commit(writer)?;
    st.save()?;

    for (branch, timeline, tip) in &refs.branches {
        let seal = *st.to_seal.get(tip).ok_or_else(|| BridgeError::Commit {
            commit: tip.to_string(),
            reason: "the branch tip was not imported".into(),
        })?;
        let outcome = match repo.timeline(timeline)? {
            None => {
                repo.update_timeline(&lock, timeline, None, &seal)?;
                "created"
            }
            Some(cur) if cur == seal => "unchanged",
            Some(cur) if repo.is_ancestor(&cur, &seal)? => {
                repo.update_timeline(&lock, timeline, Some(&cur), &seal)?;
                "moved"
            }
            Some(_) => "diverged",
        };
        if timeline.as_str() != branch.as_str() {
            report.renamed.push((branch.clone(), timeline.to_string()));
            st.refs
                .branches
                .insert(timeline.to_string(), branch.clone());
        }
        report.branches.push(BranchOutcome {
            branch: branch.clone(),
            timeline: timeline.to_string(),
            seal: seal.short(),
            outcome,
        });
    }

    // A tag whose commit no timeline reaches is kept as a kept head, so gc
    // never removes what export must restore.
    let mut reach: Option<HashSet<ObjectId>> = None;
    for (name, (commit, object)) in &refs.tags {
        let Some(seal) = st.to_seal.get(commit).copied() else {
            continue;
        };
        let rec = TagRecord {
            commit: commit.to_string(),
            seal: seal.to_hex(),
            object: object.as_deref().map(to_hex),
        };
        if st.refs.tags.get(name) == Some(&rec) {
            continue;
        }
        let reach = match &mut reach {
            Some(r) => r,
            None => {
                let mut r = HashSet::new();
                for head in repo.timelines()?.values() {
                    r.extend(repo.ancestors(head)?);
                }
                reach.insert(r)
            }
        };
        if !reach.contains(&seal) {
            let kept =
                names::timeline_for_branch("git-tags/", name).map_err(BridgeError::Refused)?;
            repo.keep(&lock, &kept, &seal)?;
        }
        st.refs.tags.insert(name.clone(), rec);
        report.tags.push(name.clone());
    }
    st.save()?;
    drop(lock);
    Ok(report)
}
