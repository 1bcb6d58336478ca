//! Line diffs, for the three-way merge ([`crate::merge`]) and for `ivaldi diff`.
//!
//! Both use one algorithm: Myers' diff from the `similar` crate, in its exact
//! mode ([`similar::algorithms::myers::diff_deadline_raw`] without a deadline).
//! That mode neither hashes (`similar`'s heuristic pre-pass keys its hashes with
//! `RandomState`, i.e. OS randomness, which this crate must never consult) nor
//! reads a clock, so the same inputs give the same diff on every peer. Lines are
//! first interned into small integers through a `BTreeMap` (no random seed, no
//! way for hostile input to degrade it), and lines found on one side only are
//! dropped before the search, which keeps rewritten files (few common lines)
//! away from the algorithm's worst case.
//!
//! [`unified`] groups the result into hunks with context, as `diff -u` and
//! `git diff` print them; [`Hunks::write_to`] renders them byte for byte.

use std::collections::BTreeMap;
use std::convert::Infallible;

use similar::algorithms::DiffHook;

/// Splits after every `\n`; a non-empty tail without one is a line of its own, so
/// joining the lines gives back the input byte for byte.
pub fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|&c| c == b'\n').collect()
}

/// Maps distinct lines to dense small integers so the diff compares integers.
#[derive(Default)]
pub struct Interner<'a> {
    ids: BTreeMap<&'a [u8], u32>,
}

impl<'a> Interner<'a> {
    /// The ids of `lines`, equal lines getting equal ids across calls.
    pub fn intern(&mut self, lines: &[&'a [u8]]) -> Vec<u32> {
        lines
            .iter()
            .map(|l| {
                let next = self.ids.len() as u32;
                *self.ids.entry(l).or_insert(next)
            })
            .collect()
    }

    /// How many distinct lines were seen; every id is below this.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no line was seen.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The matched positions `(i, j)` of a longest common subsequence of `a` and
/// `b`, increasing in both. `symbols` bounds the ids in both.
pub fn matches(a: &[u32], b: &[u32], symbols: usize) -> Vec<(usize, usize)> {
    // A line absent from the other side can never be matched.
    let mut in_a = vec![false; symbols];
    let mut in_b = vec![false; symbols];
    for &x in a {
        in_a[x as usize] = true;
    }
    for &y in b {
        in_b[y as usize] = true;
    }
    let keep_a: Vec<usize> = (0..a.len()).filter(|&i| in_b[a[i] as usize]).collect();
    let keep_b: Vec<usize> = (0..b.len()).filter(|&j| in_a[b[j] as usize]).collect();
    let fa: Vec<u32> = keep_a.iter().map(|&i| a[i]).collect();
    let fb: Vec<u32> = keep_b.iter().map(|&j| b[j]).collect();
    let mut pairs = Pairs(Vec::new());
    // Infallible: the hook never fails.
    let Ok(()) = similar::algorithms::myers::diff_deadline_raw(
        &mut pairs,
        &fa,
        0..fa.len(),
        &fb,
        0..fb.len(),
        None,
    );
    pairs
        .0
        .into_iter()
        .map(|(x, y)| (keep_a[x], keep_b[y]))
        .collect()
}

/// Collects the equal runs of a diff as matched pairs.
struct Pairs(Vec<(usize, usize)>);

impl DiffHook for Pairs {
    type Error = Infallible;

    fn equal(&mut self, old: usize, new: usize, len: usize) -> Result<(), Infallible> {
        self.0.extend((0..len).map(|i| (old + i, new + i)));
        Ok(())
    }
}

/// What a line of a hunk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// In both versions (` `).
    Context,
    /// Only in the old version (`-`).
    Removed,
    /// Only in the new version (`+`).
    Added,
}

impl LineKind {
    /// The character a unified diff starts the line with.
    pub fn sign(self) -> u8 {
        match self {
            LineKind::Context => b' ',
            LineKind::Removed => b'-',
            LineKind::Added => b'+',
        }
    }
}

/// One line of a hunk: its kind and its text with its line ending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HunkLine<'a> {
    pub kind: LineKind,
    /// The line as stored, ending in `\n` unless it is a last line without one.
    pub text: &'a [u8],
}

/// A run of changes with its context, as `@@ -old +new @@` introduces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hunk<'a> {
    /// First old line (1-based; for an empty range, the line before it).
    pub old_start: usize,
    pub old_len: usize,
    /// First new line (1-based; for an empty range, the line before it).
    pub new_start: usize,
    pub new_len: usize,
    pub lines: Vec<HunkLine<'a>>,
}

impl Hunk<'_> {
    /// `@@ -A,B +C,D @@`, with `,1` left out as `diff -u` does.
    pub fn header(&self) -> String {
        fn range(start: usize, len: usize) -> String {
            if len == 1 {
                start.to_string()
            } else {
                format!("{start},{len}")
            }
        }
        format!(
            "@@ -{} +{} @@",
            range(self.old_start, self.old_len),
            range(self.new_start, self.new_len)
        )
    }
}

/// The hunks of a text diff, with the number of lines added and removed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hunks<'a> {
    pub hunks: Vec<Hunk<'a>>,
    pub added: usize,
    pub removed: usize,
}

impl Hunks<'_> {
    /// The hunks as a unified diff prints them (headers and lines; a line
    /// without a newline is followed by `\ No newline at end of file`).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for h in &self.hunks {
            out.extend_from_slice(h.header().as_bytes());
            out.push(b'\n');
            for l in &h.lines {
                out.push(l.kind.sign());
                out.extend_from_slice(l.text);
                if !l.text.ends_with(b"\n") {
                    out.extend_from_slice(b"\n\\ No newline at end of file\n");
                }
            }
        }
    }
}

/// The line diff of `old` and `new` as hunks with `context` lines around each
/// change; changes closer than twice that share a hunk. Within a change,
/// removed lines come before added ones.
pub fn unified<'a>(old: &'a [u8], new: &'a [u8], context: usize) -> Hunks<'a> {
    let a = split_lines(old);
    let b = split_lines(new);
    let mut interner = Interner::default();
    let ia = interner.intern(&a);
    let ib = interner.intern(&b);
    let pairs = matches(&ia, &ib, interner.len());
    // The edit script as ops: equal runs, and between them a deletion then an
    // insertion.
    let mut ops = Vec::new();
    let (mut x, mut y) = (0, 0);
    for &(i, j) in pairs.iter().chain(std::iter::once(&(a.len(), b.len()))) {
        if i > x {
            ops.push(similar::DiffOp::Delete {
                old_index: x,
                old_len: i - x,
                new_index: y,
            });
        }
        if j > y {
            ops.push(similar::DiffOp::Insert {
                old_index: i,
                new_index: y,
                new_len: j - y,
            });
        }
        if i < a.len() {
            // Equal lines in a row are one run: hunks are cut out of runs.
            match ops.last_mut() {
                Some(similar::DiffOp::Equal { len, .. }) if i == x && j == y => *len += 1,
                _ => ops.push(similar::DiffOp::Equal {
                    old_index: i,
                    new_index: j,
                    len: 1,
                }),
            }
        }
        (x, y) = (i + 1, j + 1);
    }
    let mut out = Hunks::default();
    for group in similar::group_diff_ops(ops, context) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let old = first.old_range().start..last.old_range().end;
        let new = first.new_range().start..last.new_range().end;
        let mut lines = Vec::new();
        for op in &group {
            match *op {
                similar::DiffOp::Equal { old_index, len, .. } => {
                    lines.extend(a[old_index..old_index + len].iter().map(|t| HunkLine {
                        kind: LineKind::Context,
                        text: t,
                    }));
                }
                similar::DiffOp::Delete {
                    old_index, old_len, ..
                } => {
                    out.removed += old_len;
                    lines.extend(a[old_index..old_index + old_len].iter().map(|t| HunkLine {
                        kind: LineKind::Removed,
                        text: t,
                    }));
                }
                similar::DiffOp::Insert {
                    new_index, new_len, ..
                } => {
                    out.added += new_len;
                    lines.extend(b[new_index..new_index + new_len].iter().map(|t| HunkLine {
                        kind: LineKind::Added,
                        text: t,
                    }));
                }
                similar::DiffOp::Replace {
                    old_index,
                    old_len,
                    new_index,
                    new_len,
                } => {
                    out.removed += old_len;
                    out.added += new_len;
                    lines.extend(a[old_index..old_index + old_len].iter().map(|t| HunkLine {
                        kind: LineKind::Removed,
                        text: t,
                    }));
                    lines.extend(b[new_index..new_index + new_len].iter().map(|t| HunkLine {
                        kind: LineKind::Added,
                        text: t,
                    }));
                }
            }
        }
        // An empty range is numbered by the line before it, as diff -u does.
        let start = |r: &std::ops::Range<usize>| if r.is_empty() { r.start } else { r.start + 1 };
        out.hunks.push(Hunk {
            old_start: start(&old),
            old_len: old.len(),
            new_start: start(&new),
            new_len: new.len(),
            lines,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(old: &str, new: &str) -> String {
        let mut out = Vec::new();
        unified(old.as_bytes(), new.as_bytes(), 3).write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn identical_inputs_have_no_hunks() {
        assert_eq!(render("a\nb\n", "a\nb\n"), "");
        assert_eq!(render("", ""), "");
    }

    #[test]
    fn a_changed_line_with_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            render(old, new),
            "@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n"
        );
        let h = unified(old.as_bytes(), new.as_bytes(), 3);
        assert_eq!((h.added, h.removed), (1, 1));
    }

    #[test]
    fn added_and_removed_files_number_from_zero() {
        assert_eq!(render("", "a\nb\n"), "@@ -0,0 +1,2 @@\n+a\n+b\n");
        assert_eq!(render("a\n", ""), "@@ -1 +0,0 @@\n-a\n");
    }

    #[test]
    fn far_apart_changes_get_their_own_hunks() {
        let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let new: String = (1..=20)
            .map(|i| match i {
                2 => "two\n".to_owned(),
                19 => "nineteen\n".to_owned(),
                i => format!("{i}\n"),
            })
            .collect();
        let h = unified(old.as_bytes(), new.as_bytes(), 3);
        assert_eq!(h.hunks.len(), 2);
        assert_eq!(h.hunks[0].header(), "@@ -1,5 +1,5 @@");
        assert_eq!(h.hunks[1].header(), "@@ -16,5 +16,5 @@");
    }

    #[test]
    fn a_missing_final_newline_is_marked() {
        assert_eq!(
            render("a\nb", "a\nb\n"),
            "@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"
        );
    }

    #[test]
    fn matches_are_increasing_and_equal() {
        let a = [0, 1, 2, 1, 0];
        let b = [1, 0, 2, 0, 1];
        let m = matches(&a, &b, 3);
        assert_eq!(m.len(), 3);
        for w in m.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1);
        }
        for (i, j) in m {
            assert_eq!(a[i], b[j]);
        }
    }
}
