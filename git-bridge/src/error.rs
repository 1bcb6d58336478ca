//! Why an import or export failed.

use std::path::PathBuf;

use ivaldi_shell_smol::repo::RepoError;
use thiserror::Error;

/// Every way the bridge fails. Nothing from the git repository or the user
/// panics: it ends here, naming the commit, path or ref involved.
#[derive(Debug, Error)]
pub enum BridgeError {
    #[error("{path} is not a git repository: {reason}")]
    NotAGitRepository { path: PathBuf, reason: String },
    #[error("cannot create a git repository at {path}: {reason}")]
    CreateGit { path: PathBuf, reason: String },
    #[error("reading the git repository: {0}")]
    GitRead(String),
    #[error("writing the git repository: {0}")]
    GitWrite(String),
    #[error("commit {commit}, path {path:?}: {reason}; nothing was imported")]
    Path {
        commit: String,
        path: String,
        reason: String,
    },
    #[error("commit {commit}: {reason}; nothing was imported")]
    Commit { commit: String, reason: String },
    #[error("{0}; nothing was imported")]
    Refused(String),
    #[error(
        "seal {seal} was imported from git commit {expected} but rebuilds as {actual}; \
         the export stopped before moving any branch"
    )]
    Mismatch {
        seal: String,
        expected: String,
        actual: String,
    },
    #[error("the bridge's state in {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Shorthand.
pub type Result<T, E = BridgeError> = std::result::Result<T, E>;
