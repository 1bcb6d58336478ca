//! Building a new repository aside and moving it into place only when it is
//! complete, so a clone that fails or is killed never leaves a half-made
//! repository where the user asked for one (and a second attempt just works).
//!
//! The repository is built in a hidden sibling, `.<DIR>.ivaldi-clone-<pid>`, in
//! the same directory as `DIR` (so the final rename never crosses file systems).
//! At the end one `rename(2)` makes it `DIR`: it replaces a missing or empty
//! directory atomically, and the parent directory is then fsynced. A staging
//! directory whose process is gone (a clone killed by SIGKILL or a power loss)
//! is debris, removed by the next clone into the same place.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a repository could not be built into place.
#[derive(Debug, Error)]
pub enum CloneDirError {
    #[error("{0} is not a directory name a repository can be cloned into")]
    BadTarget(PathBuf),
    #[error("{0} already exists and is not empty; clone into a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The work done in the staging directory failed; nothing was left behind.
    #[error("{0}")]
    Failed(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CloneDirError + '_ {
    move |source| CloneDirError::Io {
        path: path.to_owned(),
        source,
    }
}

const MARK: &str = ".ivaldi-clone-";

/// The parent directory and the final name of `dir`.
fn split(dir: &Path) -> Result<(PathBuf, String), CloneDirError> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| CloneDirError::BadTarget(dir.to_owned()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_owned()))
}

/// Where this process builds the repository that will become `dir`.
pub fn staging_path(dir: &Path) -> Result<PathBuf, CloneDirError> {
    let (parent, name) = split(dir)?;
    Ok(parent.join(format!(".{name}{MARK}{}", std::process::id())))
}

/// Removes the staging directories of earlier clones into `dir` whose process
/// is gone. A live process's staging directory (a clone still running) is left.
pub fn remove_stale(dir: &Path) -> Result<Vec<PathBuf>, CloneDirError> {
    let (parent, name) = split(dir)?;
    let prefix = format!(".{name}{MARK}");
    let mut removed = Vec::new();
    let entries = match fs::read_dir(&parent) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_at(&parent)(e)),
    };
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || crate::repo::process_alive(pid) {
            continue;
        }
        let path = e.path();
        tracing::info!(path = %path.display(), "removing the staging directory of an interrupted clone");
        fs::remove_dir_all(&path).map_err(io_at(&path))?;
        removed.push(path);
    }
    Ok(removed)
}

/// Builds a repository for `dir` with `fill` (given the staging directory, which
/// exists and is empty) and moves it into place only if `fill` succeeds. `dir`
/// must be missing or an empty directory; on any failure it is left as it was.
pub fn clone_into<T>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, CloneDirError> {
    // An existing target may be named `.` or `sub/..`: use its real name, so the
    // staging sibling and the final rename address the directory itself.
    let real;
    let dir = match dir.canonicalize() {
        Ok(p) => {
            real = p;
            real.as_path()
        }
        Err(_) => dir,
    };
    let (parent, _) = split(dir)?;
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CloneDirError::NotEmpty(dir.to_owned()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(dir)(e)),
    }
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    remove_stale(dir)?;
    let staging = staging_path(dir)?;
    fs::create_dir(&staging).map_err(io_at(&staging))?;
    let outcome = fill(&staging);
    let value = match outcome {
        Ok(v) => v,
        Err(e) => {
            discard(&staging);
            return Err(CloneDirError::Failed(e));
        }
    };
    crate::repo::fault::point("clone.before-rename");
    if let Err(e) = fs::rename(&staging, dir) {
        discard(&staging);
        // Someone made `dir` non-empty meanwhile: say so plainly.
        if e.kind() == io::ErrorKind::DirectoryNotEmpty {
            return Err(CloneDirError::NotEmpty(dir.to_owned()));
        }
        return Err(io_at(dir)(e));
    }
    fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io_at(&parent))?;
    Ok(value)
}

fn discard(staging: &Path) {
    if let Err(e) = fs::remove_dir_all(staging) {
        tracing::warn!(path = %staging.display(), error = %e, "could not remove a failed clone's staging directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fill_leaves_nothing_and_a_good_one_lands_whole() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("work");
        let err = clone_into(&dir, |s| {
            fs::write(s.join("half"), b"x").map_err(|e| e.to_string())?;
            Err::<(), _>("peer went away".into())
        });
        assert!(matches!(err, Err(CloneDirError::Failed(_))), "{err:?}");
        assert!(!dir.exists());
        let names: Vec<_> = fs::read_dir(tmp.path()).expect("ls").flatten().collect();
        assert!(names.is_empty(), "left behind: {names:?}");

        // An empty target directory is replaced; a non-empty one is refused.
        fs::create_dir(&dir).expect("mkdir");
        clone_into(&dir, |s| {
            fs::write(s.join("f"), b"y").map_err(|e| e.to_string())
        })
        .expect("clone into an empty directory");
        assert_eq!(fs::read(dir.join("f")).expect("read"), b"y");
        let again = clone_into(&dir, |_| Ok(()));
        assert!(
            matches!(again, Err(CloneDirError::NotEmpty(_))),
            "{again:?}"
        );
    }

    #[test]
    fn staging_left_by_a_dead_process_is_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("work");
        // Pid 0 is never a user process.
        let stale = tmp.path().join(format!(".work{MARK}0"));
        fs::create_dir_all(stale.join(".ivaldi")).expect("mkdir");
        let live = tmp
            .path()
            .join(format!(".work{MARK}{}", std::process::id()));
        assert_eq!(remove_stale(&dir).expect("clean"), vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(!live.exists());
    }
}
