//! `ivaldi git export`: timelines as branches, seals as commits, recorded tags
//! as tags, into a git repository (created bare if absent).
//!
//! A seal imported from git is rebuilt from its git part to its original
//! bytes, so it gets its original commit id back (checked: a mismatch stops
//! the export before any branch moves). A native seal becomes a commit whose
//! author and committer are the seal's author and time, and whose message is
//! the seal's message: the same seal always gives the same commit.
//!
//! Only seals the git repository lacks are written. A branch moves only
//! forward: one that points at a commit the map does not know, or that is not
//! an ancestor of its timeline's head, is left alone and reported.

use std::collections::HashMap;
use std::path::Path;

use gix::object::Kind;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};
use ivaldi_core::ObjectId;
use ivaldi_core::object::Mode;
use ivaldi_shell_smol::repo::Repository;
use serde::Serialize;

use crate::error::{BridgeError, Result};
use crate::gitobj::{self, GitId};
use crate::import::open_git;
use crate::state::{State, from_hex};

/// What happened to one ref.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RefOutcome {
    pub name: String,
    pub commit: String,
    /// `created`, `moved`, `unchanged`, or `refused: <why>`.
    pub outcome: String,
}

/// What an export did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportReport {
    /// Whether the git repository was created.
    pub created: bool,
    /// Commits written (the rest were there already).
    pub commits_written: usize,
    pub refs: Vec<RefOutcome>,
}

struct Raw<'a> {
    kind: Kind,
    data: &'a [u8],
}

impl gix::objs::WriteTo for Raw<'_> {
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(self.data)
    }
    fn kind(&self) -> Kind {
        self.kind
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

fn write_err(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::GitWrite(e.to_string())
}

struct Writer<'a> {
    git: &'a gix::Repository,
    repo: &'a Repository,
    trees: HashMap<ObjectId, GitId>,
    blobs: HashMap<ObjectId, GitId>,
    commits_written: usize,
}

impl Writer<'_> {
    fn write(&self, kind: Kind, data: &[u8]) -> Result<GitId> {
        self.git
            .write_object(Raw { kind, data })
            .map(|id| id.detach())
            .map_err(write_err)
    }

    fn blob(&mut self, id: &ObjectId) -> Result<GitId> {
        if let Some(g) = self.blobs.get(id) {
            return Ok(*g);
        }
        let content = self.repo.store.file_content(id)?;
        let g = self.write(Kind::Blob, &content)?;
        self.blobs.insert(*id, g);
        Ok(g)
    }

    fn tree(&mut self, id: &ObjectId) -> Result<GitId> {
        if let Some(g) = self.trees.get(id) {
            return Ok(*g);
        }
        let tree = self.repo.store.tree(id)?;
        let mut entries = Vec::with_capacity(tree.entries().len());
        for e in tree.entries() {
            let g = match e.mode {
                Mode::Tree => self.tree(&e.id)?,
                Mode::Gitlink => gitobj::gitlink_from_ivaldi(&e.id),
                Mode::File | Mode::Executable | Mode::Symlink => self.blob(&e.id)?,
            };
            entries.push((e.mode, e.name.as_str(), g));
        }
        let g = self.write(Kind::Tree, &gitobj::encode_tree(&mut entries))?;
        self.trees.insert(*id, g);
        Ok(g)
    }

    /// The commit of `seal`, writing it and the history it needs.
    fn commit(&mut self, seal: &ObjectId, st: &mut State) -> Result<GitId> {
        let mut done: HashMap<ObjectId, GitId> = HashMap::new();
        let mut stack = vec![(*seal, false)];
        while let Some((id, expanded)) = stack.pop() {
            if done.contains_key(&id) {
                continue;
            }
            if let Some(g) = st.to_git.get(&id)
                && self.git.has_object(g)
            {
                done.insert(id, *g);
                continue;
            }
            let s = self.repo.store.seal(&id)?;
            if !expanded {
                stack.push((id, true));
                for p in s.parents.iter().rev() {
                    if !done.contains_key(p) {
                        stack.push((*p, false));
                    }
                }
                continue;
            }
            let mut parents = Vec::with_capacity(s.parents.len());
            for p in &s.parents {
                parents.push(*done.get(p).ok_or_else(|| {
                    BridgeError::GitWrite(format!(
                        "parent {} of {} was not written",
                        p.short(),
                        id.short()
                    ))
                })?);
            }
            let tree = self.tree(&s.tree)?;
            let raw = match &s.git {
                Some(g) => gitobj::encode_commit(
                    &tree,
                    &parents,
                    &g.headers,
                    g.raw_message.as_deref().unwrap_or(s.message.as_bytes()),
                ),
                None => {
                    let sig = gitobj::signature(&s.author, s.time);
                    let headers = format!("author {sig}\ncommitter {sig}\n");
                    gitobj::encode_commit(&tree, &parents, headers.as_bytes(), s.message.as_bytes())
                }
            };
            let g = self.write(Kind::Commit, &raw)?;
            if let Some(expected) = st.to_git.get(&id)
                && *expected != g
            {
                return Err(BridgeError::Mismatch {
                    seal: id.to_hex(),
                    expected: expected.to_string(),
                    actual: g.to_string(),
                });
            }
            st.insert(g, id);
            self.commits_written += 1;
            done.insert(id, g);
        }
        done.get(seal)
            .copied()
            .ok_or_else(|| BridgeError::GitWrite(format!("seal {} was not written", seal.short())))
    }
}

/// Opens `git_dir`, or creates a bare repository there when it does not exist
/// or is an empty directory.
fn open_or_create(git_dir: &Path) -> Result<(gix::Repository, bool)> {
    let empty = match std::fs::read_dir(git_dir) {
        Ok(mut d) => d.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(BridgeError::NotAGitRepository {
                path: git_dir.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    if !empty {
        return Ok((open_git(git_dir)?, false));
    }
    let git = gix::init_bare(git_dir).map_err(|e| BridgeError::CreateGit {
        path: git_dir.to_owned(),
        reason: e.to_string(),
    })?;
    Ok((git, true))
}

/// Exports every timeline and recorded tag of `repo` into `git_dir`.
pub fn export(repo: &mut Repository, git_dir: &Path) -> Result<ExportReport> {
    let lock = repo.lock()?;
    let mut st = State::load(repo)?;
    let (git, created) = open_or_create(git_dir)?;
    let mut report = ExportReport {
        created,
        ..ExportReport::default()
    };
    let mut w = Writer {
        git: &git,
        repo,
        trees: HashMap::new(),
        blobs: HashMap::new(),
        commits_written: 0,
    };
    // Every commit first; refs move only once all of them are written.
    let mut branches = Vec::new();
    for (timeline, head) in repo.timelines()? {
        let branch = st
            .refs
            .branches
            .get(timeline.as_str())
            .cloned()
            .unwrap_or_else(|| timeline.to_string());
        let commit = w.commit(&head, &mut st)?;
        branches.push((format!("refs/heads/{branch}"), head, commit, None));
    }
    let tags: Vec<(String, crate::state::TagRecord)> = st
        .refs
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (name, rec) in tags {
        let bad = |why: &str| BridgeError::State {
            path: repo.dot_dir().join("git/refs.json"),
            reason: format!("tag {name}: {why}"),
        };
        let seal: ObjectId = rec.seal.parse().map_err(|_| bad("bad seal id"))?;
        let commit = w.commit(&seal, &mut st)?;
        let target = match &rec.object {
            Some(hex) => {
                let raw = from_hex(hex).ok_or_else(|| bad("bad tag object"))?;
                w.write(Kind::Tag, &raw)?
            }
            None => commit,
        };
        branches.push((format!("refs/tags/{name}"), seal, target, Some(commit)));
    }
    report.commits_written = w.commits_written;
    st.save()?;

    let mut edits = Vec::new();
    for (name, head, target, tag_commit) in branches {
        let full = FullName::try_from(name.as_str()).map_err(|e| {
            BridgeError::GitWrite(format!("{name:?} is not a valid git ref name: {e}"))
        })?;
        let current = git
            .try_find_reference(name.as_str())
            .map_err(write_err)?
            .and_then(|r| r.target().try_id().map(|i| i.to_owned()));
        let outcome = match current {
            None => "created".to_owned(),
            Some(c) if c == target => "unchanged".to_owned(),
            Some(c) if tag_commit.is_some() => {
                format!("refused: the tag exists in git and names {c}")
            }
            Some(c) => match st.to_seal.get(&c) {
                Some(s) if repo.is_ancestor(s, &head)? => "moved".to_owned(),
                Some(_) => {
                    format!("refused: the branch is at {c}, which the timeline does not contain")
                }
                None => format!(
                    "refused: the branch is at {c}, which is not imported; run `ivaldi git import` first"
                ),
            },
        };
        if outcome == "created" || outcome == "moved" {
            edits.push(RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: "ivaldi git export".into(),
                    },
                    expected: match current {
                        Some(c) => PreviousValue::MustExistAndMatch(Target::Object(c)),
                        None => PreviousValue::MustNotExist,
                    },
                    new: Target::Object(target),
                },
                name: full,
                deref: false,
            });
        }
        report.refs.push(RefOutcome {
            name,
            commit: tag_commit.unwrap_or(target).to_string(),
            outcome,
        });
    }
    if !edits.is_empty() {
        git.edit_references(edits).map_err(write_err)?;
    }
    drop(lock);
    Ok(report)
}
