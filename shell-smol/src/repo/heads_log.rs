//! Landing many head updates for the price of one: the heads log.
//!
//! Every head (timeline, tracking name, kept head) is a small file, and moving
//! one durably costs two fsyncs (the file, then its directory). A sync that
//! creates 1,000 timelines writes 2,000 such files (the timeline and its
//! tracking name): seconds of fsyncs on an ordinary disk, during which the
//! store writer lands nothing for any other peer.
//!
//! So a batch of head updates (one sync's `Land`) is written ahead:
//!
//! 1. The batch's objects are already durable (their pack is committed first).
//! 2. Every update of the batch goes into one log file, `.ivaldi/heads-log/<seq>`
//!    (`<id> <path under .ivaldi>` a line), written atomically and durably:
//!    two fsyncs for the whole batch.
//! 3. Each head file is then replaced (temporary sibling, rename) without an
//!    fsync of its own.
//!
//! A crash before step 2 completes leaves every head as it was; after it, the
//! log holds the new value of every head of the batch, and [`settle`] (run when
//! the repository is next opened with its lock free and the log's writer gone)
//! writes them again, this time durably, and removes the log. So each head is the old or the new value,
//! never a mix within a head, and never a head whose objects are missing.
//!
//! While a log exists it is the truth for the heads it names, so every other
//! head change settles the logs first (under the repository lock): a later
//! change is never overwritten by an older log. The daemon also settles them
//! when its store writer is idle; by then the kernel has usually written the
//! files back and the fsyncs are cheap.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use ivaldi_core::ObjectId;
use ivaldi_core::store::RefName;

use super::error::{IoContext, RepoError, Result};
use super::{RepoLock, Repository, pack, write_atomic};

const DIR: &str = "heads-log";

/// The log directory.
fn dir(repo: &Repository) -> PathBuf {
    repo.dot_dir().join(DIR)
}

/// The pending logs, oldest first.
fn logs(repo: &Repository) -> Result<Vec<(u64, PathBuf)>> {
    Ok(logs_with_pid(repo)?
        .into_iter()
        .map(|(seq, _, p)| (seq, p))
        .collect())
}

/// The pending logs with the pid of the process that wrote each, oldest first.
fn logs_with_pid(repo: &Repository) -> Result<Vec<(u64, u32, PathBuf)>> {
    let dir = dir(repo);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.at(&dir)?;
        // Temporary siblings (`.N.PID.tmp`) are not logs; `clean_tmp` removes them.
        let name = e.file_name();
        let parsed = name.to_str().and_then(|n| {
            let (seq, pid) = n.split_once('-')?;
            Some((seq.parse::<u64>().ok()?, pid.parse::<u32>().ok()?))
        });
        if let Some((seq, pid)) = parsed {
            out.push((seq, pid, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether head updates are logged but not yet settled.
pub fn pending(repo: &Repository) -> bool {
    logs(repo).is_ok_and(|l| !l.is_empty())
}

/// Whether a log was left by a process that is gone (a crash): opening the
/// repository then settles it. A live daemon's logs are its own to settle
/// when idle, so a command that only reads never pays for them.
pub fn left_by_dead_writer(repo: &Repository) -> bool {
    logs_with_pid(repo).is_ok_and(|l| l.iter().any(|(_, pid, _)| !super::process_alive(*pid)))
}

/// A head file's path relative to `.ivaldi`, as the log records it: only
/// paths under the head directories, with no `.`/`..` component.
fn checked(rel: &str) -> Option<&str> {
    let mut parts = rel.split('/');
    let top = parts.next()?;
    let ok = matches!(top, "timelines" | "tracking" | "kept")
        && parts.all(|p| !p.is_empty() && p != "." && p != "..");
    ok.then_some(rel)
}

/// Moves the heads `updates` (path relative to `.ivaldi`, new seal) as one
/// logged batch. The caller holds the lock, has checked every compare-and-set
/// and made the objects durable.
pub fn land(repo: &Repository, _lock: &RepoLock, updates: &[(String, ObjectId)]) -> Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut text = String::with_capacity(updates.len() * 100);
    for (rel, id) in updates {
        if checked(rel).is_none() {
            return Err(RepoError::Refused(format!("{rel:?} is not a head path")));
        }
        text.push_str(&format!("{id} {rel}\n"));
    }
    let dir = dir(repo);
    fs::create_dir_all(&dir).at(&dir)?;
    let seq = logs(repo)?.last().map_or(1, |(s, _)| s + 1);
    let name = format!("{seq:020}-{}", std::process::id());
    write_atomic(&dir.join(name), text.as_bytes(), true)?;
    super::fault::point("sync.heads-logged");
    for (i, (rel, id)) in updates.iter().enumerate() {
        write_head(repo, rel, id, false)?;
        if i == 0 {
            super::fault::point("sync.head-moved");
        }
    }
    Ok(())
}

fn write_head(repo: &Repository, rel: &str, id: &ObjectId, durable: bool) -> Result<PathBuf> {
    let path = repo.dot_dir().join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).at(parent)?;
    }
    write_atomic(&path, format!("{id}\n").as_bytes(), durable)?;
    Ok(path)
}

/// Makes every logged head durable and removes the logs, oldest first. A head
/// that already holds its logged value only needs its fsync; one that does not
/// (a crash lost its write) is written again. Idempotent: a crash while
/// settling leaves logs that settle again.
pub fn settle(repo: &Repository, _lock: &RepoLock) -> Result<usize> {
    let logs = logs(repo)?;
    let mut heads = 0;
    for (_, log) in &logs {
        let text = fs::read_to_string(log).at(log)?;
        let mut dirs = std::collections::BTreeSet::new();
        for line in text.lines() {
            let parsed = line
                .split_once(' ')
                .and_then(|(id, rel)| Some((id.parse::<ObjectId>().ok()?, checked(rel)?)));
            let Some((id, rel)) = parsed else {
                // A log is written whole or not at all (atomically); a line
                // that does not parse was not written by us.
                return Err(RepoError::BadFile {
                    path: log.clone(),
                    reason: format!("not a heads-log line: {line:?}"),
                });
            };
            let path = repo.dot_dir().join(rel);
            let holds = fs::read_to_string(&path).is_ok_and(|t| t.trim() == id.to_hex());
            if holds {
                File::open(&path).and_then(|f| f.sync_all()).at(&path)?;
            } else {
                write_head(repo, rel, &id, true)?;
            }
            if let Some(parent) = path.parent() {
                dirs.insert(parent.to_owned());
            }
            heads += 1;
        }
        for d in &dirs {
            pack::sync_dir(d)?;
        }
        fs::remove_file(log).at(log)?;
    }
    if !logs.is_empty() {
        pack::sync_dir(&dir(repo))?;
        tracing::debug!(logs = logs.len(), heads, "head updates settled");
    }
    Ok(heads)
}

/// Settles pending logs if there are any (before any other head change).
pub fn settle_pending(repo: &Repository, lock: &RepoLock) -> Result<()> {
    if pending(repo) {
        settle(repo, lock)?;
    }
    Ok(())
}

/// Where the head `name` is stored, relative to `.ivaldi`, for the log.
pub fn ref_path(repo: &Repository, name: &RefName, id: &ObjectId) -> Result<String> {
    let path = match name {
        RefName::Timeline(t) => repo.timeline_path(t),
        RefName::Tracking { peer, timeline } => repo.tracking_path(peer, timeline)?,
        RefName::Kept { timeline } => repo
            .dot_dir()
            .join("kept")
            .join(timeline.as_str())
            .join(id.to_hex()),
    };
    relative(repo, &path).ok_or_else(|| RepoError::Refused(format!("{name:?} has no head path")))
}

fn relative(repo: &Repository, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(repo.dot_dir()).ok()?.to_str()?;
    checked(rel).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn setup() -> (tempfile::TempDir, Repository, ObjectId, ObjectId) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = Repository::forge(tmp.path()).expect("forge");
        (tmp, repo, ObjectId::hash(b"one"), ObjectId::hash(b"two"))
    }

    fn lock(repo: &Repository) -> RepoLock {
        RepoLock::acquire(&repo.dot_dir().join("lock"), Duration::ZERO).expect("lock")
    }

    fn read(repo: &Repository, rel: &str) -> Option<String> {
        fs::read_to_string(repo.dot_dir().join(rel))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    #[test]
    fn a_logged_batch_is_visible_at_once_and_settles_into_plain_files() {
        let (_tmp, repo, one, two) = setup();
        let l = lock(&repo);
        let updates: Vec<(String, ObjectId)> = (0..1000)
            .map(|i| (format!("timelines/many/{i:04}"), one))
            .chain([("tracking/x/main".to_owned(), two)])
            .collect();
        land(&repo, &l, &updates).expect("land");
        assert_eq!(read(&repo, "timelines/many/0999"), Some(one.to_hex()));
        assert!(pending(&repo));
        assert_eq!(settle(&repo, &l).expect("settle"), 1001);
        assert!(!pending(&repo));
        assert_eq!(read(&repo, "tracking/x/main"), Some(two.to_hex()));
    }

    #[test]
    fn a_crash_after_the_log_is_repaired_by_settling() {
        let (_tmp, repo, one, two) = setup();
        let l = lock(&repo);
        land(
            &repo,
            &l,
            &[("timelines/a".into(), one), ("timelines/b/c".into(), two)],
        )
        .expect("land");
        // What a crash can leave of writes that were not fsynced: a head
        // file lost, another empty.
        fs::remove_file(repo.dot_dir().join("timelines/a")).expect("rm");
        fs::write(repo.dot_dir().join("timelines/b/c"), "").expect("truncate");
        settle(&repo, &l).expect("settle");
        assert_eq!(read(&repo, "timelines/a"), Some(one.to_hex()));
        assert_eq!(read(&repo, "timelines/b/c"), Some(two.to_hex()));
        // Later logs win over earlier ones, in order.
        land(&repo, &l, &[("timelines/a".into(), two)]).expect("land");
        land(&repo, &l, &[("timelines/a".into(), one)]).expect("land");
        fs::write(repo.dot_dir().join("timelines/a"), "").expect("truncate");
        settle(&repo, &l).expect("settle");
        assert_eq!(read(&repo, "timelines/a"), Some(one.to_hex()));
    }

    #[test]
    fn opening_the_repository_settles_a_log_left_by_a_crash() {
        let (tmp, repo, one, _) = setup();
        let l = lock(&repo);
        land(&repo, &l, &[("timelines/x".into(), one)]).expect("land");
        drop(l);
        // Our own (live) log is left alone by an opening reader...
        Repository::open(tmp.path()).expect("open");
        assert!(pending(&repo));
        // ...one whose writer died is settled.
        let (seq, _, log) = logs_with_pid(&repo).expect("logs").remove(0);
        let dead = repo
            .dot_dir()
            .join(DIR)
            .join(format!("{seq:020}-{}", u32::MAX - 1));
        fs::rename(log, dead).expect("rename");
        fs::remove_file(repo.dot_dir().join("timelines/x")).expect("rm");
        let reopened = Repository::open(tmp.path()).expect("open");
        assert!(!pending(&reopened));
        assert_eq!(read(&reopened, "timelines/x"), Some(one.to_hex()));
    }

    #[test]
    fn only_head_paths_are_logged() {
        let (_tmp, repo, one, _) = setup();
        let l = lock(&repo);
        for bad in ["HEAD", "timelines/../HEAD", "objects/x", "timelines//a"] {
            assert!(land(&repo, &l, &[(bad.into(), one)]).is_err(), "{bad}");
        }
        assert!(!pending(&repo));
    }
}
