//! Geometric repacking: the number of packs grows with the logarithm of the
//! number of writes, not with the writes.
//!
//! Every seal and every landed sync writes one pack. Left alone, a repository
//! with a long history holds thousands of packs: each costs an index load at
//! open, a directory entry and (in a running daemon) a file descriptor. After
//! a writing command publishes its pack, it calls [`after_write`] under the
//! writer lock it already holds. That sorts the packs by size and merges the
//! smallest ones until the sizes form a geometric progression with factor 2
//! (each pack at least twice the size of the next smaller one), as
//! `git repack --geometric=2` does. A run of N equal writes then leaves at
//! most about log2(N) packs, and a big old pack is rewritten only when the
//! small ones together have grown to half its size, so each byte is copied
//! O(log N) times over the whole history.
//!
//! Merging copies every stored entry as it is (codec, stored bytes, delta
//! base): no decompression, no recompression. The new pack is published like
//! any other (`tmp/`, fsync, closure check, rename, directory fsync). Then a
//! record (`.ivaldi/repack-pending`: the new pack and the packs it replaces)
//! is written, the old packs are deleted, and the record removed. A crash
//! before the rename leaves the old packs; after it, both (every object twice,
//! which the index tolerates), and the next writing command finishes the
//! deletions the record names. A reader in another process that finds a pack
//! gone reads the object from the pack it moved to (`pack_files.rs`).
//!
//! Checkpoint packs of a running daemon's unfinished pull
//! (`tmp/pull-<pid>-<batch>.keep`, see `gc.rs`) are never merged: that pull
//! names them in its record, and they stay as they are until it ends.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{IoContext, RepoError, Result};
use super::{RepoLock, Repository, fault, gc, pack};

/// Crash points inside a repack, in the order it reaches them.
pub const REPACK_POINTS: &[&str] = &["repack.pack-landed", "repack.old-pack-removed"];

/// Each pack must be at least this many times the size of the next smaller one.
pub const FACTOR: u64 = 2;

/// The record of a repack whose old packs may not all be deleted yet.
const PENDING: &str = "repack-pending";

/// Which packs to merge so the sizes that remain, plus the merged pack, form
/// a geometric progression (factor [`FACTOR`]). `sizes` are the candidates'
/// sizes in any order; the answer is their indices, smallest first, empty
/// when the set is already geometric (merging one pack would only copy it).
///
/// The packs are sorted by size. Going down from the largest, the first pair
/// whose larger member is less than twice the smaller breaks the progression:
/// that pair and everything smaller are merged. The merged pack may in turn be
/// too large for the next larger pack, which then joins it, and so on.
pub fn plan(sizes: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| (sizes[i], i));
    let size = |k: usize| sizes[order[k]].max(1);
    let n = order.len();
    // `split`: how many of the smallest packs are merged.
    let mut split = 0;
    for k in (1..n).rev() {
        if size(k) < FACTOR.saturating_mul(size(k - 1)) {
            split = k + 1;
            break;
        }
    }
    let mut total: u64 = (0..split).map(size).sum();
    while split < n && FACTOR.saturating_mul(total) >= size(split) {
        total = total.saturating_add(size(split));
        split += 1;
    }
    if split < 2 {
        return Vec::new();
    }
    order.truncate(split);
    order
}

/// What one repack did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RepackReport {
    /// Packs merged into the new one.
    pub merged: usize,
    /// Objects copied (each once, though some were in two packs).
    pub objects: usize,
    /// Bytes of the merged packs' files.
    pub bytes: u64,
    /// Packs left over by an interrupted repack and deleted now.
    pub finished: usize,
}

/// Repacks after a writing command published a pack; a failure is logged and
/// leaves the repository as it was (the command itself succeeded).
pub fn after_write(repo: &mut Repository, lock: &RepoLock) {
    if let Err(e) = repack(repo, lock) {
        tracing::warn!(error = %e, "geometric repack failed; the packs stay as they are");
    }
}

/// Finishes an interrupted repack, then merges the packs [`plan`] chooses.
/// The caller holds the writer lock.
pub fn repack(repo: &mut Repository, _lock: &RepoLock) -> Result<RepackReport> {
    let mut report = RepackReport {
        finished: finish_pending(repo)?,
        ..Default::default()
    };
    if report.finished > 0 {
        repo.store.refresh()?;
    }
    if !repo.store.damaged_packs().is_empty() {
        // Copying from a damaged pack is `repair`'s job, not ours.
        return Ok(report);
    }
    let protected = gc::protected_packs(repo);
    let candidates: Vec<PathBuf> = repo
        .store
        .pack_paths()
        .into_iter()
        .filter(|p| !protected.contains(p))
        .collect();
    let mut sizes = Vec::with_capacity(candidates.len());
    for p in &candidates {
        sizes.push(fs::metadata(p).at(p)?.len());
    }
    let chosen: Vec<&PathBuf> = plan(&sizes).into_iter().map(|i| &candidates[i]).collect();
    if chosen.is_empty() {
        return Ok(report);
    }
    // Largest first: when the same object is in two packs (an interrupted
    // repack), the copy kept is the one most packs already agreed on.
    let mut writer = repo.store.writer()?;
    for path in chosen.iter().rev() {
        let file = File::open(path).at(*path)?;
        // Stored bytes are copied, not decoded, so a damaged pack would pass
        // its damage on under a fresh checksum: check it first.
        pack::verify_pack_checksum(&file, path)?;
        let mut buf = Vec::new();
        for e in pack::read_index(&file, path)? {
            if writer.holds(&e.id) {
                continue;
            }
            buf.resize(e.len as usize, 0);
            file.read_exact_at(&mut buf, e.offset).at(*path)?;
            writer.add_stored(&e, &buf)?;
        }
        report.bytes += fs::metadata(path).at(*path)?.len();
    }
    report.merged = chosen.len();
    report.objects = writer.len();
    repo.store.commit(writer)?;
    let new_pack = repo
        .store
        .pack_paths()
        .last()
        .cloned()
        .ok_or_else(|| RepoError::Refused("the merged pack is not in the store".into()))?;
    let old: Vec<PathBuf> = chosen
        .into_iter()
        .filter(|p| **p != new_pack)
        .cloned()
        .collect();
    write_pending(repo, &new_pack, &old)?;
    fault::point("repack.pack-landed");
    remove_packs(repo, &old)?;
    repo.store.refresh()?;
    tracing::debug!(
        merged = report.merged,
        objects = report.objects,
        bytes = report.bytes,
        packs = repo.store.pack_paths().len(),
        "geometric repack"
    );
    Ok(report)
}

fn pending_path(repo: &Repository) -> PathBuf {
    repo.dot_dir().join(PENDING)
}

/// Records that `new` holds every object of `old`, durably, before any of
/// `old` is deleted.
fn write_pending(repo: &Repository, new: &Path, old: &[PathBuf]) -> Result<()> {
    let name = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .ok_or_else(|| RepoError::Refused(format!("odd pack name {}", p.display())))
    };
    let mut text = format!("new {}\n", name(new)?);
    for p in old {
        text.push_str(&format!("old {}\n", name(p)?));
    }
    super::write_atomic(&pending_path(repo), text.as_bytes(), true)
}

/// Deletes `old` (already merged), then the record that named them.
fn remove_packs(repo: &Repository, old: &[PathBuf]) -> Result<()> {
    for (i, p) in old.iter().enumerate() {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(p),
        }
        if i == 0 {
            fault::point("repack.old-pack-removed");
        }
    }
    pack::sync_dir(repo.store.dir())?;
    let record = pending_path(repo);
    match fs::remove_file(&record) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at(record),
    }
}

/// Deletes the packs an interrupted repack had merged, if the pack they were
/// merged into is there; returns how many it deleted. A record whose new pack
/// is gone (a later `gc` replaced it) deletes nothing.
fn finish_pending(repo: &Repository) -> Result<usize> {
    let record = pending_path(repo);
    let text = match fs::read_to_string(&record) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).at(record),
    };
    // Plain pack file names only: the record never points elsewhere.
    let plain = |n: &str| n.starts_with("pack-") && n.ends_with(".ivp") && !n.contains('/');
    let dir = repo.store.dir();
    let mut new = None;
    let mut old = Vec::new();
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("new", n)) if plain(n) => new = Some(dir.join(n)),
            Some(("old", n)) if plain(n) => old.push(dir.join(n)),
            _ => {}
        }
    }
    let present: Vec<PathBuf> = match new {
        Some(n) if pack::check_pack(&n).is_ok() => {
            old.into_iter().filter(|p| *p != n && p.exists()).collect()
        }
        _ => Vec::new(),
    };
    tracing::info!(
        packs = present.len(),
        "finishing an interrupted repack: deleting packs already merged"
    );
    remove_packs(repo, &present)?;
    Ok(present.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates `writes` writes of `each` bytes, repacking after each one as
    /// a writing command does; returns the pack sizes after every write and
    /// the bytes copied in all.
    fn simulate(start: Vec<u64>, writes: usize, each: u64) -> (Vec<Vec<u64>>, u64) {
        let mut packs = start;
        let mut copied = 0;
        let mut history = Vec::new();
        for _ in 0..writes {
            packs.push(each);
            let chosen = plan(&packs);
            if !chosen.is_empty() {
                let merged: u64 = chosen.iter().map(|&i| packs[i]).sum();
                copied += merged;
                let mut keep: Vec<u64> = packs
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !chosen.contains(i))
                    .map(|(_, s)| *s)
                    .collect();
                keep.push(merged);
                packs = keep;
            }
            history.push(packs.clone());
        }
        (history, copied)
    }

    fn log2(n: usize) -> f64 {
        (n as f64).log2()
    }

    #[test]
    fn equal_writes_leave_a_logarithmic_number_of_packs() {
        for n in [1usize, 2, 3, 10, 100, 1000, 5000] {
            let (history, copied) = simulate(Vec::new(), n, 1000);
            for (i, packs) in history.iter().enumerate() {
                let bound = 2.0 * log2(i + 1) + 2.0;
                assert!(
                    packs.len() as f64 <= bound,
                    "after {} writes: {} packs (bound {bound}): {packs:?}",
                    i + 1,
                    packs.len()
                );
                assert_eq!(packs.iter().sum::<u64>(), 1000 * (i as u64 + 1));
            }
            // Each byte is copied O(log n) times.
            let per_byte = copied as f64 / (1000.0 * n as f64);
            assert!(per_byte <= log2(n) + 2.0, "{n} writes: {per_byte} copies");
        }
    }

    #[test]
    fn a_big_old_pack_is_not_rewritten_by_small_writes() {
        let big = 1_000_000;
        let (history, copied) = simulate(vec![big], 200, 100);
        for packs in &history {
            assert!(packs.contains(&big), "the big pack was merged: {packs:?}");
        }
        assert!(copied < 200 * 100 * 10, "{copied}");
        // Once the small ones outgrow half of it, it joins them.
        assert!(plan(&[100, 60, 50]).len() == 3);
        assert_eq!(plan(&[1000, 300, 300]).len(), 3);
    }

    /// A repository with `n` packs of one delta-encoded blob each (versions
    /// of one text), written without repacking.
    fn many_packs(n: usize) -> (tempfile::TempDir, Repository, Vec<ivaldi_core::ObjectId>) {
        let d = tempfile::tempdir().expect("tempdir");
        let mut repo = Repository::forge(d.path()).expect("forge");
        let mut ids: Vec<ivaldi_core::ObjectId> = Vec::new();
        for v in 0..n {
            let text: String = (0..400)
                .map(|i| format!("line {i} of version {}\n", if i == v { v } else { 0 }))
                .collect();
            let mut w = repo.store.writer().expect("writer");
            let base = ids.last().and_then(|b| repo.store.offer_base(b));
            let id = ivaldi_core::object::blob_id(text.as_bytes());
            let mut enc = vec![ivaldi_core::object::ObjectKind::Blob as u8];
            enc.extend_from_slice(text.as_bytes());
            w.add_with_base(id, &enc, base.as_ref()).expect("add");
            repo.store.commit(w).expect("commit");
            ids.push(id);
        }
        (d, repo, ids)
    }

    #[test]
    fn a_repack_copies_entries_as_stored_and_loses_nothing() {
        let (_d, mut repo, ids) = many_packs(12);
        assert_eq!(repo.store.pack_paths().len(), 12);
        let before: Vec<_> = ids
            .iter()
            .map(|id| (repo.store.encoded_len(id), repo.store.delta_base_of(id)))
            .collect();
        assert!(before.iter().skip(1).all(|(_, b)| b.is_some()), "deltas");
        let lock = repo.lock().expect("lock");
        let report = repack(&mut repo, &lock).expect("repack");
        assert!(report.merged >= 2, "{report:?}");
        let packs = repo.store.pack_paths().len();
        assert!(packs <= 4, "{packs} packs after repacking 12 equal ones");
        let after: Vec<_> = ids
            .iter()
            .map(|id| (repo.store.encoded_len(id), repo.store.delta_base_of(id)))
            .collect();
        assert_eq!(before, after, "entries are copied as they are stored");
        let (mut problems, mut bad) = (Vec::new(), hashbrown::HashSet::new());
        repo.store.verify_all(&mut problems, &mut bad);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!repo.dot_dir().join(PENDING).exists());
        // Already geometric: a second repack does nothing.
        let again = repack(&mut repo, &lock).expect("repack");
        assert_eq!(again.merged, 0);
    }

    #[test]
    fn a_reader_whose_pack_was_merged_away_reads_from_the_new_pack() {
        let (d, mut writer, ids) = many_packs(16);
        // Another process (the daemon's store) loaded every pack, and keeps
        // one file open, so its reads must reopen.
        let mut reader = Repository::open(d.path()).expect("open");
        reader.store.set_open_pack_limit(1);
        assert_eq!(reader.store.read_raw(&ids[0]).map(|_| ()).ok(), Some(()));
        let lock = writer.lock().expect("lock");
        let report = repack(&mut writer, &lock).expect("repack");
        assert!(report.merged >= 8, "{report:?}");
        // Every object, deltas and their bases included, still reads, with
        // no refresh: from the pack each one moved to.
        for id in ids.iter().rev() {
            let raw = reader.store.read_raw(id).expect("read after the repack");
            assert_eq!(ivaldi_core::ObjectId::hash(&raw), *id);
        }
        assert!(reader.store.open_pack_files() <= 1);
        reader.store.refresh().expect("refresh");
        assert_eq!(reader.store.pack_paths(), writer.store.pack_paths());
        for id in &ids {
            reader.store.read_raw(id).expect("read after refresh");
        }
    }

    #[test]
    fn an_interrupted_repack_is_finished_by_the_next_one() {
        let (_d, mut repo, ids) = many_packs(4);
        let lock = repo.lock().expect("lock");
        // As a crash after publishing left it: the merged pack, the old packs
        // and the record.
        let old = repo.store.pack_paths();
        let mut w = repo.store.writer().expect("writer");
        for p in &old {
            let f = File::open(p).expect("open");
            for e in pack::read_index(&f, p).expect("index") {
                let mut buf = vec![0u8; e.len as usize];
                f.read_exact_at(&mut buf, e.offset).expect("read");
                w.add_stored(&e, &buf).expect("add");
            }
        }
        repo.store.commit(w).expect("commit");
        let new = repo.store.pack_paths().last().cloned().expect("new pack");
        write_pending(&repo, &new, &old).expect("record");
        let report = repack(&mut repo, &lock).expect("repack");
        assert_eq!(report.finished, 4);
        assert_eq!(repo.store.pack_paths(), vec![new]);
        for id in &ids {
            repo.store.read_raw(id).expect("read");
        }
        // A record whose new pack is gone deletes nothing.
        let only = repo.store.pack_paths();
        write_pending(&repo, &repo.store.dir().join("pack-gone.ivp"), &only).expect("record");
        assert_eq!(repack(&mut repo, &lock).expect("repack").finished, 0);
        assert_eq!(repo.store.pack_paths(), only);
    }

    #[test]
    fn a_geometric_set_is_left_alone() {
        assert!(plan(&[]).is_empty());
        assert!(plan(&[5]).is_empty());
        assert!(plan(&[64, 32, 16, 8, 4, 2, 1]).is_empty());
        assert!(plan(&[1, 1000, 10, 100]).is_empty());
        // An equal pair at the bottom is merged; the merged pack (6) is then
        // too big for the 10 above it, which joins, and 16 fits under 100.
        let mut chosen = plan(&[100, 10, 3, 3]);
        chosen.sort();
        assert_eq!(chosen, vec![1, 2, 3]);
    }
}
