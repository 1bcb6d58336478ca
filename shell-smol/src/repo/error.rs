//! Errors of the on-disk repository.

use std::io;
use std::path::PathBuf;

use ivaldi_core::ObjectId;
use ivaldi_core::object::{DecodeError, VerifyError};
use ivaldi_core::revision::RevisionError;
use ivaldi_core::timeline::TimelineNameError;
use thiserror::Error;

/// Everything that can go wrong with a repository on disk; each variant names the
/// file, object or argument at fault so the user knows where to look.
#[derive(Debug, Error)]
pub enum RepoError {
    #[error(
        "not an Ivaldi repository (or any parent up to /): {0}\n  run `ivaldi forge` to create one"
    )]
    NotARepository(PathBuf),
    #[error("{0} is already an Ivaldi repository")]
    AlreadyExists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt object {id} in {path}: {reason}")]
    CorruptObject {
        id: ObjectId,
        path: PathBuf,
        reason: String,
    },
    #[error("corrupt pack {path}: {reason}")]
    CorruptPack { path: PathBuf, reason: String },
    #[error("missing object {0}: the repository is incomplete")]
    MissingObject(ObjectId),
    #[error("{id} is a {found}, expected a {expected}")]
    WrongKind {
        id: ObjectId,
        expected: &'static str,
        found: &'static str,
    },
    #[error("damaged file {path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("invalid timeline name: {0}")]
    BadTimelineName(#[from] TimelineNameError),
    #[error("no timeline named {0:?}")]
    UnknownTimeline(String),
    #[error("timeline {0:?} already exists")]
    TimelineExists(String),
    #[error("timeline {name:?} moved: expected {expected}, found {found}")]
    HeadMoved {
        name: String,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    BadRevision(#[from] RevisionError),
    #[error("no seal matches {0:?}")]
    UnknownSeal(String),
    #[error("{prefix:?} is ambiguous: it matches {count} seals; type more digits")]
    AmbiguousPrefix { prefix: String, count: usize },
    #[error("the repository is locked by process {pid} ({path}); wait for it, or stop it")]
    Locked { pid: String, path: PathBuf },
    #[error("object would break the closure invariant: {id} refers to missing {missing}")]
    Closure { id: ObjectId, missing: ObjectId },
    #[error("invalid object: {0}")]
    Decode(#[from] DecodeError),
    #[error("object failed verification: {0}")]
    Verify(#[from] VerifyError),
    #[error("{path}: {reason}")]
    WorkTree { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
    /// An object a peer sent does not decode or verify: the peer's fault.
    #[error("invalid object from a peer: {0}")]
    Received(String),
}

/// Shorthand used across the repository code.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Attaches the path to an I/O error, so no error reaches the user without it.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| RepoError::Io {
            path: path.into(),
            source,
        })
    }
}
