//! `ivaldi diff [REV [REV]] [-- PATHS]`: what changed, as a unified diff (as
//! `git diff` prints it), a `--stat` summary or `--json`.
//!
//! No revision: the working tree against its base seal. One: the working tree
//! against that seal. Two: the first seal against the second. A rename shows as
//! a removal and an addition; a change of file type (file to symlink) too.

use std::io::Write;

use ivaldi_core::Mode;
use ivaldi_core::diff::{Hunks, LineKind, unified};
use ivaldi_core::merge::is_binary;
use ivaldi_shell_smol::repo::Repository;
use ivaldi_shell_smol::repo::worktree::{self, Flat};
use serde_json::json;

use crate::{Failed, fail, print_json};

/// Lines of context around each change, as git's default.
const CONTEXT: usize = 3;

/// Where one side's file contents come from.
enum Side {
    Seal,
    WorkTree,
}

/// How a path changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Added,
    Deleted,
    Modified,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Added => "added",
            Status::Deleted => "deleted",
            Status::Modified => "modified",
        }
    }
}

/// One changed path with both versions' contents.
struct FileChange {
    path: String,
    status: Status,
    old_mode: Option<Mode>,
    new_mode: Option<Mode>,
    old: Vec<u8>,
    new: Vec<u8>,
}

impl FileChange {
    fn binary(&self) -> bool {
        is_binary(&self.old) || is_binary(&self.new)
    }

    fn hunks(&self) -> Hunks<'_> {
        if self.binary() || self.old == self.new {
            Hunks::default()
        } else {
            unified(&self.old, &self.new, CONTEXT)
        }
    }
}

fn mode_octal(m: Mode) -> &'static str {
    match m {
        Mode::File => "100644",
        Mode::Executable => "100755",
        Mode::Symlink => "120000",
        Mode::Tree => "040000",
        Mode::Gitlink => "160000",
    }
}

/// Runs `ivaldi diff`.
pub(crate) fn run(
    repo: &Repository,
    revs: &[String],
    paths: &[String],
    stat: bool,
    as_json: bool,
) -> Result<(), Failed> {
    let seal_flat = |rev: &str| -> Result<Flat, Failed> {
        let id = repo.resolve_seal(rev)?;
        let s = repo.store.seal(&id)?;
        Ok(worktree::flatten(&repo.store, &s.tree)?)
    };
    let (old, new, new_side) = match revs {
        [] => {
            let old = match repo.base()? {
                Some(b) => worktree::flatten(&repo.store, &repo.store.seal(&b)?.tree)?,
                None => Flat::new(),
            };
            (old, worktree::scan(repo, None)?.files, Side::WorkTree)
        }
        [a] => (
            seal_flat(a)?,
            worktree::scan(repo, None)?.files,
            Side::WorkTree,
        ),
        [a, b] => (seal_flat(a)?, seal_flat(b)?, Side::Seal),
        _ => {
            return Err(fail(
                "diff takes at most two revisions (put paths after --)",
            ));
        }
    };
    let paths: Vec<String> = paths
        .iter()
        .map(|p| p.trim_end_matches('/').trim_start_matches("./").to_owned())
        .collect();
    let wanted = |p: &str| {
        paths.is_empty()
            || paths
                .iter()
                .any(|w| w.is_empty() || w == "." || p == w || p.starts_with(&format!("{w}/")))
    };
    let content = |side: &Side,
                   path: &str,
                   mode: Mode,
                   id: &ivaldi_core::ObjectId|
     -> Result<Vec<u8>, Failed> {
        // A submodule entry holds a git commit id (20 bytes, padded), not
        // content; git shows it the same way.
        if mode == Mode::Gitlink {
            let hex: String = id.as_bytes()[..20]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            return Ok(format!("Subproject commit {hex}\n").into_bytes());
        }
        match side {
            Side::Seal => Ok(repo.store.file_content(id)?),
            Side::WorkTree => {
                let abs = repo.root().join(path);
                let r = if mode == Mode::Symlink {
                    std::fs::read_link(&abs).map(|t| {
                        use std::os::unix::ffi::OsStrExt;
                        t.as_os_str().as_bytes().to_vec()
                    })
                } else {
                    std::fs::read(&abs)
                };
                r.map_err(|e| fail(format!("{}: {e}", abs.display())))
            }
        }
    };
    let mut changes = Vec::new();
    let all: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for path in all {
        if !wanted(path) {
            continue;
        }
        let o = old.get(path);
        let n = new.get(path);
        if o == n {
            continue;
        }
        let load_old = |(m, id): &(Mode, ivaldi_core::ObjectId)| content(&Side::Seal, path, *m, id);
        let load_new = |(m, id): &(Mode, ivaldi_core::ObjectId)| content(&new_side, path, *m, id);
        // A file that became a symlink (or the reverse) is a removal and an addition.
        let type_change = matches!((o, n), (Some((a, _)), Some((b, _)))
            if (*a == Mode::Symlink) != (*b == Mode::Symlink));
        if let Some(oe) = o
            && (n.is_none() || type_change)
        {
            changes.push(FileChange {
                path: path.clone(),
                status: Status::Deleted,
                old_mode: Some(oe.0),
                new_mode: None,
                old: load_old(oe)?,
                new: Vec::new(),
            });
        }
        match (o, n) {
            (Some(oe), Some(ne)) if !type_change => changes.push(FileChange {
                path: path.clone(),
                status: Status::Modified,
                old_mode: Some(oe.0),
                new_mode: Some(ne.0),
                old: load_old(oe)?,
                new: load_new(ne)?,
            }),
            (_, Some(ne)) => changes.push(FileChange {
                path: path.clone(),
                status: Status::Added,
                old_mode: None,
                new_mode: Some(ne.0),
                old: Vec::new(),
                new: load_new(ne)?,
            }),
            _ => {}
        }
    }
    if as_json {
        print_json(&json!(changes.iter().map(to_json).collect::<Vec<_>>()));
    } else if stat {
        print_stat(&changes);
    } else {
        let mut out = Vec::new();
        for c in &changes {
            write_patch(c, &mut out);
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&out)
            .and_then(|()| stdout.flush())
            .map_err(|e| fail(format!("writing the diff: {e}")))?;
    }
    Ok(())
}

fn write_patch(c: &FileChange, out: &mut Vec<u8>) {
    let p = &c.path;
    out.extend_from_slice(format!("diff --git a/{p} b/{p}\n").as_bytes());
    match (c.status, c.old_mode, c.new_mode) {
        (Status::Added, _, Some(m)) => {
            out.extend_from_slice(format!("new file mode {}\n", mode_octal(m)).as_bytes())
        }
        (Status::Deleted, Some(m), _) => {
            out.extend_from_slice(format!("deleted file mode {}\n", mode_octal(m)).as_bytes())
        }
        (Status::Modified, Some(a), Some(b)) if a != b => out.extend_from_slice(
            format!("old mode {}\nnew mode {}\n", mode_octal(a), mode_octal(b)).as_bytes(),
        ),
        _ => {}
    }
    if c.old == c.new {
        return;
    }
    let a = if c.status == Status::Added {
        "/dev/null".to_owned()
    } else {
        format!("a/{p}")
    };
    let b = if c.status == Status::Deleted {
        "/dev/null".to_owned()
    } else {
        format!("b/{p}")
    };
    if c.binary() {
        out.extend_from_slice(format!("Binary files {a} and {b} differ\n").as_bytes());
        return;
    }
    out.extend_from_slice(format!("--- {a}\n+++ {b}\n").as_bytes());
    c.hunks().write_to(out);
}

fn print_stat(changes: &[FileChange]) {
    let width = changes.iter().map(|c| c.path.len()).max().unwrap_or(0);
    let counts: Vec<(usize, usize)> = changes
        .iter()
        .map(|c| {
            let h = c.hunks();
            (h.added, h.removed)
        })
        .collect();
    let most = counts.iter().map(|(a, r)| a + r).max().unwrap_or(0).max(1);
    let (mut ins, mut del) = (0, 0);
    for (c, (a, r)) in changes.iter().zip(&counts) {
        ins += a;
        del += r;
        if c.binary() && c.old != c.new {
            println!(
                " {:width$} | Bin {} -> {} bytes",
                c.path,
                c.old.len(),
                c.new.len()
            );
            continue;
        }
        // Scaled to at most 50 signs, as git does for wide changes.
        let scale = |n: usize| {
            if most > 50 {
                (n * 50).div_ceil(most)
            } else {
                n
            }
        };
        println!(
            " {:width$} | {:>4} {}{}",
            c.path,
            a + r,
            "+".repeat(scale(*a)),
            "-".repeat(scale(*r))
        );
    }
    let files = changes.len();
    println!(
        " {files} file{} changed, {ins} insertion{}(+), {del} deletion{}(-)",
        if files == 1 { "" } else { "s" },
        if ins == 1 { "" } else { "s" },
        if del == 1 { "" } else { "s" },
    );
}

fn to_json(c: &FileChange) -> serde_json::Value {
    let h = c.hunks();
    let hunks: Vec<serde_json::Value> = h
        .hunks
        .iter()
        .map(|hk| {
            let lines: Vec<String> = hk
                .lines
                .iter()
                .map(|l| {
                    let sign = match l.kind {
                        LineKind::Context => ' ',
                        LineKind::Removed => '-',
                        LineKind::Added => '+',
                    };
                    let text = String::from_utf8_lossy(l.text);
                    format!("{sign}{}", text.strip_suffix('\n').unwrap_or(&text))
                })
                .collect();
            json!({"header": hk.header(), "lines": lines})
        })
        .collect();
    json!({
        "path": c.path,
        "status": c.status.name(),
        "old_mode": c.old_mode.map(mode_octal),
        "new_mode": c.new_mode.map(mode_octal),
        "binary": c.binary(),
        "insertions": h.added,
        "deletions": h.removed,
        "hunks": hunks,
    })
}
