//! What the bridge remembers between runs, under `.ivaldi/git/`:
//!
//! - `map`: one line per commit, `<git commit id> <seal id>` in hex, in the
//!   order they were first paired. Import and export both read it, so each
//!   commit is converted once; a seal from git maps to its original commit and
//!   a native seal to the commit export made for it.
//! - `refs.json`: which timeline came from which git branch (for names the
//!   mapping rule changed), and every tag with its target and, for an annotated
//!   tag, the raw tag object, which export writes back unchanged.
//!
//! Both files are replaced atomically, after the objects they name have landed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use ivaldi_core::ObjectId;
use ivaldi_shell_smol::repo::{Repository, write_atomic};
use serde::{Deserialize, Serialize};

use crate::error::{BridgeError, Result};
use crate::gitobj::GitId;

/// A tag as the bridge keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRecord {
    /// The commit the tag names (after peeling annotated tags).
    pub commit: String,
    /// The seal of that commit.
    pub seal: String,
    /// The annotated tag object, hex-encoded raw bytes; absent for a
    /// lightweight tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

/// The `refs.json` file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refs {
    /// Timeline → the git branch it came from, when they differ.
    #[serde(default)]
    pub branches: BTreeMap<String, String>,
    /// Tag name (without `refs/tags/`) → the tag.
    #[serde(default)]
    pub tags: BTreeMap<String, TagRecord>,
}

/// The bridge's state, loaded.
#[derive(Debug, Default)]
pub struct State {
    dir: PathBuf,
    pub to_seal: HashMap<GitId, ObjectId>,
    pub to_git: HashMap<ObjectId, GitId>,
    /// Pairs in file order, new ones appended.
    order: Vec<(GitId, ObjectId)>,
    pub refs: Refs,
    /// What is on disk (pairs, refs), so an unchanged state is not rewritten.
    saved: (usize, Refs),
}

impl State {
    /// Loads the state of `repo` (empty if the bridge never ran).
    pub fn load(repo: &Repository) -> Result<State> {
        let dir = repo.dot_dir().join("git");
        let mut st = State {
            dir: dir.clone(),
            ..State::default()
        };
        let map_path = dir.join("map");
        match std::fs::read_to_string(&map_path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let bad = || BridgeError::State {
                        path: map_path.clone(),
                        reason: format!("line {} is not `<git id> <seal id>`", n + 1),
                    };
                    let (g, s) = line.split_once(' ').ok_or_else(bad)?;
                    let g = GitId::from_hex(g.as_bytes()).map_err(|_| bad())?;
                    let s: ObjectId = s.parse().map_err(|_| bad())?;
                    st.insert(g, s);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BridgeError::State {
                    path: map_path,
                    reason: e.to_string(),
                });
            }
        }
        let refs_path = dir.join("refs.json");
        match std::fs::read(&refs_path) {
            Ok(bytes) => {
                st.refs = serde_json::from_slice(&bytes).map_err(|e| BridgeError::State {
                    path: refs_path,
                    reason: e.to_string(),
                })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BridgeError::State {
                    path: refs_path,
                    reason: e.to_string(),
                });
            }
        }
        st.saved = (st.order.len(), st.refs.clone());
        Ok(st)
    }

    /// Pairs a commit and a seal.
    pub fn insert(&mut self, git: GitId, seal: ObjectId) {
        if self.to_seal.insert(git, seal).is_none() {
            self.order.push((git, seal));
        }
        self.to_git.entry(seal).or_insert(git);
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no pair is known.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Writes both files atomically, if anything changed since they were read
    /// or written.
    pub fn save(&mut self) -> Result<()> {
        if self.saved.0 == self.order.len() && self.saved.1 == self.refs {
            return Ok(());
        }
        let err = |e: ivaldi_shell_smol::repo::RepoError| BridgeError::State {
            path: self.dir.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| BridgeError::State {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        let mut map = String::with_capacity(self.order.len() * 106);
        for (g, s) in &self.order {
            map.push_str(&g.to_hex().to_string());
            map.push(' ');
            map.push_str(&s.to_hex());
            map.push('\n');
        }
        write_atomic(&self.dir.join("map"), map.as_bytes(), true).map_err(err)?;
        let refs = serde_json::to_vec_pretty(&self.refs).map_err(|e| BridgeError::State {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.dir.join("refs.json"), &refs, true).map_err(err)?;
        self.saved = (self.order.len(), self.refs.clone());
        Ok(())
    }
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Bytes of lowercase or uppercase hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
