//! Three-way merging of file contents and of trees.
//!
//! `ivaldi fuse` and the conflict strategies both need to combine two lines of work
//! that share an ancestor. Both are built on the two pure functions here, which see
//! only bytes and in-memory maps: the caller loads blobs and flattens trees, so the
//! merge itself never touches storage and gives the same answer on every peer.
//!
//! [`merge_text`] merges line by line with diff3 semantics: a region changed on one
//! side only takes that change, identical changes are taken once, and different
//! changes to the same region become a conflict hunk between git-style markers.
//!
//! [`merge_trees`] merges path by path over [`FlatTree`]s and reports the paths it
//! could not resolve as [`PathConflict`]s, leaving the decision to the caller.
//!
//! The line diff is [`crate::diff`]'s: `similar`'s Myers in its exact mode, which
//! neither hashes with OS randomness nor reads a clock, the same one `ivaldi diff`
//! shows hunks with.

use std::collections::{BTreeMap, BTreeSet};

use crate::diff::{Interner, split_lines};
use crate::id::ObjectId;
use crate::object::Mode;

/// How many leading bytes of each side are searched for a NUL byte; the same
/// heuristic (and size) git uses, so files are classified the way users expect.
pub const BINARY_SNIFF_LEN: usize = 8000;

/// The names written after the conflict markers, so a user reading a conflicted
/// file can tell which side each half came from (e.g. the two timeline names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MergeLabels {
    /// Written after `<<<<<<<`.
    pub ours: String,
    /// Written after `>>>>>>>`.
    pub theirs: String,
}

impl MergeLabels {
    /// Labels for the two sides; a convenience so callers can pass `&str`s.
    pub fn new(ours: impl Into<String>, theirs: impl Into<String>) -> Self {
        MergeLabels {
            ours: ours.into(),
            theirs: theirs.into(),
        }
    }
}

/// The result of [`merge_text`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TextMerge {
    /// The merged bytes. Conflicted regions hold both versions between conflict
    /// markers; for binary content in conflict this is `ours` unchanged.
    pub content: Vec<u8>,
    /// How many conflicted hunks `content` holds (1 for a binary conflict); 0 means
    /// the merge is clean and `content` can be committed as is.
    pub conflicts: usize,
}

impl TextMerge {
    /// Whether the merge needs no human attention.
    pub fn is_clean(&self) -> bool {
        self.conflicts == 0
    }

    fn clean(content: &[u8]) -> Self {
        TextMerge {
            content: content.to_vec(),
            conflicts: 0,
        }
    }
}

/// Whether `data` is treated as binary: a NUL byte within its first
/// [`BINARY_SNIFF_LEN`] bytes. Line merging binary data would splice unrelated byte
/// runs together, so such content is merged only as a whole.
pub fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_SNIFF_LEN)].contains(&0)
}

/// Merges two descendants of `base` line by line (diff3 semantics).
///
/// Lines keep their own endings (`\n`, `\r\n`, or none for a last line without a
/// newline), so clean merges reproduce every untouched byte exactly. A region
/// changed on one side takes that side; a region changed identically on both
/// sides is taken once; a region changed differently becomes
///
/// ```text
/// <<<<<<< ours-label
/// ours' lines
/// =======
/// theirs' lines
/// >>>>>>> theirs-label
/// ```
///
/// Markers end in `\r\n` when `ours` uses CRLF line endings. If any side is binary
/// (see [`is_binary`]) the files are merged only as wholes: a change on one side
/// is taken, and changes on both sides are one conflict whose content is `ours`.
pub fn merge_text(base: &[u8], ours: &[u8], theirs: &[u8], labels: &MergeLabels) -> TextMerge {
    // Whole-file shortcuts: exact, cheap, and the only rules binary content gets.
    if ours == theirs || base == theirs {
        return TextMerge::clean(ours);
    }
    if base == ours {
        return TextMerge::clean(theirs);
    }
    if is_binary(base) || is_binary(ours) || is_binary(theirs) {
        return TextMerge {
            content: ours.to_vec(),
            conflicts: 1,
        };
    }

    let base_lines = split_lines(base);
    let ours_lines = split_lines(ours);
    let theirs_lines = split_lines(theirs);
    let mut interner = Interner::default();
    let base_ids = interner.intern(&base_lines);
    let ours_ids = interner.intern(&ours_lines);
    let theirs_ids = interner.intern(&theirs_lines);
    let symbols = interner.len();
    let to_ours = match_lines(&base_ids, &ours_ids, symbols);
    let to_theirs = match_lines(&base_ids, &theirs_ids, symbols);

    let eol: &[u8] = if ours_lines.first().is_some_and(|l| l.ends_with(b"\r\n")) {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut out = Output {
        content: Vec::with_capacity(ours.len().max(theirs.len())),
        conflicts: 0,
        eol,
        ours_marker: marker(b"<<<<<<<", &labels.ours),
        theirs_marker: marker(b">>>>>>>", &labels.theirs),
    };

    let (nb, no, nt) = (base_ids.len(), ours_ids.len(), theirs_ids.len());
    let (mut b, mut o, mut t) = (0, 0, 0);
    while b < nb || o < no || t < nt {
        // A stable run: base lines matched at the very next positions of both sides.
        let mut run = 0;
        while b + run < nb
            && to_ours[b + run] == Some(o + run)
            && to_theirs[b + run] == Some(t + run)
        {
            run += 1;
        }
        if run > 0 {
            out.lines(&base_lines[b..b + run]);
            b += run;
            o += run;
            t += run;
            continue;
        }
        // An unstable chunk: everything up to the next base line both sides kept.
        // Matches are increasing, so that line's positions lie past `o` and `t`.
        let mut end = b;
        let (o_end, t_end) = loop {
            match to_ours.get(end).zip(to_theirs.get(end)) {
                None => break (no, nt),
                Some((&Some(x), &Some(y))) => break (x, y),
                Some(_) => end += 1,
            }
        };
        let (bc, oc, tc) = (
            &base_ids[b..end],
            &ours_ids[o..o_end],
            &theirs_ids[t..t_end],
        );
        if oc == bc || oc == tc {
            out.lines(&theirs_lines[t..t_end]);
        } else if tc == bc {
            out.lines(&ours_lines[o..o_end]);
        } else {
            out.conflict(&ours_lines[o..o_end], &theirs_lines[t..t_end]);
        }
        b = end;
        o = o_end;
        t = t_end;
    }

    TextMerge {
        content: out.content,
        conflicts: out.conflicts,
    }
}

/// A marker line's text without its line ending; line breaks in a label would
/// break the marker line, so they become spaces.
fn marker(prefix: &[u8], label: &str) -> Vec<u8> {
    let mut m = prefix.to_vec();
    if !label.is_empty() {
        m.push(b' ');
        m.extend(
            label
                .bytes()
                .map(|c| if c == b'\n' || c == b'\r' { b' ' } else { c }),
        );
    }
    m
}

struct Output {
    content: Vec<u8>,
    conflicts: usize,
    eol: &'static [u8],
    ours_marker: Vec<u8>,
    theirs_marker: Vec<u8>,
}

impl Output {
    fn lines(&mut self, lines: &[&[u8]]) {
        for l in lines {
            self.content.extend_from_slice(l);
        }
    }

    /// Lines that must be followed by a marker line: a last line without a
    /// newline gets one, or the marker would be glued onto it.
    fn terminated_lines(&mut self, lines: &[&[u8]]) {
        self.lines(lines);
        if lines.last().is_some_and(|l| !l.ends_with(b"\n")) {
            self.content.extend_from_slice(self.eol);
        }
    }

    fn conflict(&mut self, ours: &[&[u8]], theirs: &[&[u8]]) {
        self.conflicts += 1;
        self.content.extend_from_slice(&self.ours_marker);
        self.content.extend_from_slice(self.eol);
        self.terminated_lines(ours);
        self.content.extend_from_slice(b"=======");
        self.content.extend_from_slice(self.eol);
        self.terminated_lines(theirs);
        self.content.extend_from_slice(&self.theirs_marker);
        self.content.extend_from_slice(self.eol);
    }
}

/// For each line of `a`, the line of `b` it is matched to in a longest common
/// subsequence, if any. `symbols` bounds the ids in both.
fn match_lines(a: &[u32], b: &[u32], symbols: usize) -> Vec<Option<usize>> {
    let mut matched = vec![None; a.len()];
    for (x, y) in crate::diff::matches(a, b, symbols) {
        matched[x] = Some(y);
    }
    matched
}

/// A flattened tree: every non-directory entry (file, executable, symlink) under
/// its `/`-separated path. Directories are implied by the paths, which is what
/// lets a merge compare three trees path by path without loading subtrees.
pub type FlatTree = BTreeMap<String, (Mode, ObjectId)>;

/// Why a path could not be merged; tells the caller which resolution applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictKind {
    /// Both sides changed the content differently; the caller may try
    /// [`merge_text`] on the three blobs.
    Content,
    /// One side changed the entry, the other deleted it.
    ModifyDelete,
    /// Both sides added the path, differently.
    AddAdd,
    /// Both sides changed the mode differently, content agrees.
    Mode,
    /// The path is a file (or symlink) in the result of one side and a directory
    /// (a prefix of other paths) in the other's; the entries under the directory
    /// that merged cleanly stay in [`TreeMerge::merged`].
    FileDirectory,
}

/// One path the merge left to the caller, with the entry each version has there
/// (`None` where the path is absent).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathConflict {
    /// The `/`-separated path, as in [`FlatTree`].
    pub path: String,
    /// Which rule failed, and so which resolutions make sense.
    pub kind: ConflictKind,
    /// The common ancestor's entry, what a content merge diffs against.
    pub base: Option<(Mode, ObjectId)>,
    /// Our entry.
    pub ours: Option<(Mode, ObjectId)>,
    /// Their entry.
    pub theirs: Option<(Mode, ObjectId)>,
}

/// The result of [`merge_trees`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeMerge {
    /// Entries resolved cleanly. Conflicted paths are absent, so the caller decides
    /// each of them explicitly. Never holds a path that is also a directory prefix.
    pub merged: FlatTree,
    /// The paths left to the caller, sorted by path.
    pub conflicts: Vec<PathConflict>,
}

impl TreeMerge {
    /// Whether `merged` is the whole answer.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty()
    }
}

/// Merges two descendants of `base` path by path.
///
/// A path the same on both sides, or changed on one side only (deletion included),
/// or changed identically on both, merges cleanly. An executable-bit change on one
/// side combines with a content change on the other. Every other difference is a
/// [`PathConflict`]; afterwards a file that would sit where the other paths need a
/// directory becomes a [`ConflictKind::FileDirectory`] conflict.
pub fn merge_trees(base: &FlatTree, ours: &FlatTree, theirs: &FlatTree) -> TreeMerge {
    let paths: BTreeSet<&String> = base
        .keys()
        .chain(ours.keys())
        .chain(theirs.keys())
        .collect();
    let mut merged = FlatTree::new();
    let mut conflicts = Vec::new();
    for path in paths {
        let b = base.get(path).copied();
        let o = ours.get(path).copied();
        let t = theirs.get(path).copied();
        match merge_entry(b, o, t) {
            Ok(Some(entry)) => {
                merged.insert(path.clone(), entry);
            }
            Ok(None) => {}
            Err(kind) => conflicts.push(PathConflict {
                path: path.clone(),
                kind,
                base: b,
                ours: o,
                theirs: t,
            }),
        }
    }

    // Every directory some surviving path needs, whether merged or still contested.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let live = conflicts
        .iter()
        .filter(|c| c.ours.is_some() || c.theirs.is_some())
        .map(|c| &c.path);
    for path in merged.keys().chain(live) {
        for (i, _) in path.match_indices('/') {
            dirs.insert(path[..i].to_owned());
        }
    }
    if !dirs.is_empty() {
        for c in &mut conflicts {
            if dirs.contains(&c.path) {
                c.kind = ConflictKind::FileDirectory;
            }
        }
        let clashing: Vec<String> = merged
            .keys()
            .filter(|p| dirs.contains(*p))
            .cloned()
            .collect();
        for path in clashing {
            merged.remove(&path);
            conflicts.push(PathConflict {
                kind: ConflictKind::FileDirectory,
                base: base.get(&path).copied(),
                ours: ours.get(&path).copied(),
                theirs: theirs.get(&path).copied(),
                path,
            });
        }
        conflicts.sort_by(|a, b| a.path.cmp(&b.path));
    }
    TreeMerge { merged, conflicts }
}

type Entry = Option<(Mode, ObjectId)>;

/// One path's three-way merge: the resulting entry (`None`: absent) or why not.
fn merge_entry(b: Entry, o: Entry, t: Entry) -> Result<Entry, ConflictKind> {
    match (b, o, t) {
        _ if o == t || b == t => Ok(o),
        _ if b == o => Ok(t),
        (Some(_), None, _) | (Some(_), _, None) => Err(ConflictKind::ModifyDelete),
        (None, _, _) => Err(ConflictKind::AddAdd),
        (Some(b), Some(o), Some(t)) => {
            // Both sides changed something, differently: merge mode and content
            // separately. One side's mode joins the other side's content only
            // between plain and executable files; a symlink (or tree) mode paired
            // with the other side's file content would be nonsense.
            let files = b.0.is_file() && o.0.is_file() && t.0.is_file();
            match (pick(b.1, o.1, t.1), pick(b.0, o.0, t.0)) {
                (None, _) => Err(ConflictKind::Content),
                (Some(_), None) => Err(ConflictKind::Mode),
                (Some(id), Some(mode)) if files || o.0 == t.0 || o.1 == t.1 => Ok(Some((mode, id))),
                (Some(_), Some(_)) => Err(ConflictKind::Content),
            }
        }
    }
}

/// The three-way merge of one value: `None` if both sides changed it differently.
fn pick<T: PartialEq + Copy>(b: T, o: T, t: T) -> Option<T> {
    if o == t || b == t {
        Some(o)
    } else if b == o {
        Some(t)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> MergeLabels {
        MergeLabels::new("ours", "theirs")
    }

    fn merge(base: &str, ours: &str, theirs: &str) -> (String, usize) {
        let m = merge_text(
            base.as_bytes(),
            ours.as_bytes(),
            theirs.as_bytes(),
            &labels(),
        );
        (String::from_utf8(m.content).unwrap(), m.conflicts)
    }

    #[test]
    fn one_side_changes_are_taken() {
        let base = "a\nb\nc\n";
        assert_eq!(merge(base, "a\nB\nc\n", base), ("a\nB\nc\n".into(), 0));
        assert_eq!(merge(base, base, "a\nb\nC\n"), ("a\nb\nC\n".into(), 0));
    }

    #[test]
    fn separate_changes_combine() {
        let base = "1\n2\n3\n4\n5\n6\n7\n";
        let ours = "one\n2\n3\n4\n5\n6\n7\n";
        let theirs = "1\n2\n3\n4\n5\n6\nseven\neight\n";
        assert_eq!(
            merge(base, ours, theirs),
            ("one\n2\n3\n4\n5\n6\nseven\neight\n".into(), 0)
        );
        // Deletions and insertions, too.
        let ours = "1\n3\n4\n5\n6\n7\n";
        let theirs = "1\n2\n3\n4\n4.5\n5\n6\n7\n";
        assert_eq!(
            merge(base, ours, theirs),
            ("1\n3\n4\n4.5\n5\n6\n7\n".into(), 0)
        );
    }

    #[test]
    fn identical_changes_are_taken_once() {
        let base = "a\nb\nc\nd\ne\n";
        let ours = "a\nB\nc\nd\nE\n";
        let theirs = "a\nB\nc\nd\ne\n";
        assert_eq!(merge(base, ours, theirs), ("a\nB\nc\nd\nE\n".into(), 0));
    }

    #[test]
    fn overlapping_changes_conflict() {
        let base = "a\nb\nc\nd\ne\n";
        let ours = "a\nX\nc\nd\nE\n";
        let theirs = "a\nY\nc\nd\ne\n";
        assert_eq!(
            merge(base, ours, theirs),
            (
                "a\n<<<<<<< ours\nX\n=======\nY\n>>>>>>> theirs\nc\nd\nE\n".into(),
                1
            )
        );
        // Two separate conflicted hunks are counted separately.
        let ours = "X\nb\nc\nd\nP\n";
        let theirs = "Y\nb\nc\nd\nQ\n";
        assert_eq!(merge(base, ours, theirs).1, 2);
        // Different insertions at the same place conflict; deletion vs edit too.
        assert_eq!(merge("a\nb\n", "a\nx\nb\n", "a\ny\nb\n").1, 1);
        assert_eq!(
            merge("a\nb\nc\n", "a\nc\n", "a\nB\nc\n"),
            ("a\n<<<<<<< ours\n=======\nB\n>>>>>>> theirs\nc\n".into(), 1)
        );
    }

    #[test]
    fn labels_are_written_and_sanitised() {
        let m = merge_text(b"a\n", b"b\n", b"c\n", &MergeLabels::new("main", "x\ny"));
        assert_eq!(m.content, b"<<<<<<< main\nb\n=======\nc\n>>>>>>> x y\n");
        let m = merge_text(b"a\n", b"b\n", b"c\n", &MergeLabels::default());
        assert_eq!(m.content, b"<<<<<<<\nb\n=======\nc\n>>>>>>>\n");
    }

    #[test]
    fn missing_final_newline_survives() {
        let base = "a\nb\nc";
        assert_eq!(merge(base, "A\nb\nc", base), ("A\nb\nc".into(), 0));
        assert_eq!(merge(base, "A\nb\nc", "a\nb\nC"), ("A\nb\nC".into(), 0));
        // Adding the newline is a change to the last line like any other.
        assert_eq!(merge(base, "A\nb\nc", "a\nb\nc\n"), ("A\nb\nc\n".into(), 0));
        // In a conflict the markers still start their own lines.
        assert_eq!(
            merge(base, "a\nb\nx", "a\nb\ny"),
            (
                "a\nb\n<<<<<<< ours\nx\n=======\ny\n>>>>>>> theirs\n".into(),
                1
            )
        );
    }

    #[test]
    fn crlf_is_kept_and_used_for_markers() {
        let base = "a\r\nb\r\nc\r\n";
        assert_eq!(
            merge(base, "A\r\nb\r\nc\r\n", "a\r\nb\r\nC\r\n"),
            ("A\r\nb\r\nC\r\n".into(), 0)
        );
        assert_eq!(
            merge(base, "a\r\nX\r\nc\r\n", "a\r\nY\r\nc\r\n").0,
            "a\r\n<<<<<<< ours\r\nX\r\n=======\r\nY\r\n>>>>>>> theirs\r\nc\r\n"
        );
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(merge("", "", ""), (String::new(), 0));
        assert_eq!(merge("", "a\n", ""), ("a\n".into(), 0));
        assert_eq!(merge("a\n", "", "a\n"), (String::new(), 0));
        assert_eq!(merge("", "a\n", "b\n").1, 1);
        assert_eq!(merge("x\n", "", "y\n").1, 1);
    }

    #[test]
    fn binary_content_is_merged_only_whole() {
        let base = b"a\0\nb\nc\n";
        let ours = b"a\0\nB\nc\n";
        let theirs = b"a\0\nb\nC\n";
        // Would merge cleanly as text, but is binary: one conflict, content = ours.
        let m = merge_text(base, ours, theirs, &labels());
        assert_eq!((m.content.as_slice(), m.conflicts), (&ours[..], 1));
        // One-sided and identical changes are still taken.
        assert!(merge_text(base, ours, base, &labels()) == TextMerge::clean(ours));
        assert!(merge_text(base, base, theirs, &labels()) == TextMerge::clean(theirs));
        assert!(merge_text(base, theirs, theirs, &labels()) == TextMerge::clean(theirs));
        // A NUL in any side counts; beyond the sniffed prefix it does not.
        let m = merge_text(b"a\nb\nc\n", b"A\nb\nc\n", b"a\nb\n\0\n", &labels());
        assert_eq!((m.content, m.conflicts), (b"A\nb\nc\n".to_vec(), 1));
        let mut late = vec![b'x'; BINARY_SNIFF_LEN];
        late.extend_from_slice(b"\n\0\n");
        assert!(!is_binary(&late));
        assert!(is_binary(&late[BINARY_SNIFF_LEN - 10..]));
    }

    #[test]
    fn large_file_with_few_edits() {
        let base: Vec<String> = (0..10_000).map(|i| format!("line {i}\n")).collect();
        let mut ours = base.clone();
        let mut theirs = base.clone();
        ours[10] = "ours 10\n".into();
        ours.insert(5000, "ours inserted\n".into());
        theirs[9000] = "theirs 9000\n".into();
        theirs.remove(100);
        let mut expected = base.clone();
        expected[10] = "ours 10\n".into();
        expected[9000] = "theirs 9000\n".into();
        expected.insert(5000, "ours inserted\n".into());
        expected.remove(100);
        let m = merge_text(
            base.concat().as_bytes(),
            ours.concat().as_bytes(),
            theirs.concat().as_bytes(),
            &labels(),
        );
        assert_eq!(m.conflicts, 0);
        assert_eq!(m.content, expected.concat().as_bytes());
    }

    #[test]
    fn rewritten_files_conflict_as_one_hunk() {
        let base: String = (0..2000).map(|i| format!("b{i}\n")).collect();
        let ours: String = (0..2000).map(|i| format!("o{i}\n")).collect();
        let theirs: String = (0..2000).map(|i| format!("t{i}\n")).collect();
        assert_eq!(merge(&base, &ours, &theirs).1, 1);
    }

    /// A tiny deterministic generator, so the diff can be checked on many inputs.
    fn lcg(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *state >> 33
    }

    fn lcs_len_dp(a: &[u32], b: &[u32]) -> usize {
        let mut row = vec![0usize; b.len() + 1];
        for &x in a {
            let mut diag = 0;
            for (j, &y) in b.iter().enumerate() {
                let up = row[j + 1];
                row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
                diag = up;
            }
        }
        row[b.len()]
    }

    #[test]
    fn line_matching_is_a_longest_common_subsequence() {
        let mut s = 7;
        for round in 0..3000 {
            let alphabet = 1 + (round % 6) as u64;
            let max_len = if round % 4 == 0 { 70 } else { 14 };
            let la = (lcg(&mut s) % max_len) as usize;
            let lb = (lcg(&mut s) % max_len) as usize;
            let a: Vec<u32> = (0..la).map(|_| (lcg(&mut s) % alphabet) as u32).collect();
            let b: Vec<u32> = (0..lb).map(|_| (lcg(&mut s) % alphabet) as u32).collect();
            let m = match_lines(&a, &b, alphabet as usize);
            let pairs: Vec<(usize, usize)> = m
                .iter()
                .enumerate()
                .filter_map(|(i, j)| j.map(|j| (i, j)))
                .collect();
            for &(i, j) in &pairs {
                assert_eq!(a[i], b[j], "{a:?} {b:?}");
            }
            for w in pairs.windows(2) {
                assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1, "{a:?} {b:?}");
            }
            assert_eq!(pairs.len(), lcs_len_dp(&a, &b), "{a:?} {b:?}");
        }
    }

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    fn flat(entries: &[(&str, Mode, u8)]) -> FlatTree {
        entries
            .iter()
            .map(|&(p, m, n)| (p.to_owned(), (m, id(n))))
            .collect()
    }

    use Mode::{Executable as X, File as F, Symlink as L};

    #[test]
    fn trees_take_one_sided_and_identical_changes() {
        let base = flat(&[("a", F, 1), ("b", F, 2), ("c", F, 3), ("d/e", F, 4)]);
        let ours = flat(&[("a", F, 10), ("b", F, 2), ("d/e", F, 4), ("n", F, 9)]);
        let theirs = flat(&[("a", F, 1), ("b", F, 20), ("d/e", F, 4), ("n", F, 9)]);
        let m = merge_trees(&base, &ours, &theirs);
        assert!(m.is_clean());
        assert_eq!(
            m.merged,
            flat(&[("a", F, 10), ("b", F, 20), ("d/e", F, 4), ("n", F, 9)])
        );
        // One side unchanged: the other side is the result.
        assert_eq!(merge_trees(&base, &ours, &base).merged, ours);
        assert_eq!(merge_trees(&base, &base, &theirs).merged, theirs);
    }

    fn only_conflict(m: &TreeMerge) -> &PathConflict {
        assert_eq!(m.conflicts.len(), 1, "{m:?}");
        &m.conflicts[0]
    }

    #[test]
    fn content_conflict() {
        let base = flat(&[("a", F, 1), ("b", F, 2)]);
        let m = merge_trees(
            &base,
            &flat(&[("a", F, 10), ("b", F, 2)]),
            &flat(&[("a", F, 11), ("b", F, 2)]),
        );
        let c = only_conflict(&m);
        assert_eq!(
            c,
            &PathConflict {
                path: "a".into(),
                kind: ConflictKind::Content,
                base: Some((F, id(1))),
                ours: Some((F, id(10))),
                theirs: Some((F, id(11))),
            }
        );
        assert!(!m.merged.contains_key("a"));
        assert_eq!(m.merged, flat(&[("b", F, 2)]));
        // Content on both sides plus a mode change is still a content conflict.
        let m = merge_trees(&base, &flat(&[("a", X, 10)]), &flat(&[("a", F, 11)]));
        assert_eq!(only_conflict(&m).kind, ConflictKind::Content);
    }

    #[test]
    fn modify_delete_conflict() {
        let base = flat(&[("a", F, 1)]);
        let m = merge_trees(&base, &flat(&[("a", F, 2)]), &flat(&[]));
        assert_eq!(only_conflict(&m).kind, ConflictKind::ModifyDelete);
        let m = merge_trees(&base, &flat(&[]), &flat(&[("a", X, 1)]));
        assert_eq!(only_conflict(&m).kind, ConflictKind::ModifyDelete);
        assert!(m.merged.is_empty());
        // Deleted on both sides, or deleted on one and untouched on the other: clean.
        assert!(merge_trees(&base, &flat(&[]), &flat(&[])).is_clean());
        let m = merge_trees(&base, &base, &flat(&[]));
        assert!(m.is_clean() && m.merged.is_empty());
    }

    #[test]
    fn add_add_conflict() {
        let base = flat(&[]);
        let m = merge_trees(&base, &flat(&[("a", F, 1)]), &flat(&[("a", F, 2)]));
        assert_eq!(only_conflict(&m).kind, ConflictKind::AddAdd);
        let m = merge_trees(&base, &flat(&[("a", F, 1)]), &flat(&[("a", X, 1)]));
        assert_eq!(only_conflict(&m).kind, ConflictKind::AddAdd);
        // The same addition on both sides is clean.
        let m = merge_trees(&base, &flat(&[("a", F, 1)]), &flat(&[("a", F, 1)]));
        assert_eq!(m.merged, flat(&[("a", F, 1)]));
    }

    #[test]
    fn mode_and_content_changes_combine() {
        let base = flat(&[("a", F, 1)]);
        let m = merge_trees(&base, &flat(&[("a", X, 1)]), &flat(&[("a", F, 2)]));
        assert!(m.is_clean());
        assert_eq!(m.merged, flat(&[("a", X, 2)]));
        let base = flat(&[("a", X, 1)]);
        let m = merge_trees(&base, &flat(&[("a", X, 3)]), &flat(&[("a", F, 1)]));
        assert_eq!(m.merged, flat(&[("a", F, 3)]));
        // Same content change on both, mode on one.
        let m = merge_trees(&base, &flat(&[("a", X, 3)]), &flat(&[("a", F, 3)]));
        assert_eq!(m.merged, flat(&[("a", F, 3)]));
    }

    #[test]
    fn mode_conflict() {
        let base = flat(&[("a", F, 1)]);
        let m = merge_trees(&base, &flat(&[("a", X, 1)]), &flat(&[("a", L, 1)]));
        assert_eq!(only_conflict(&m).kind, ConflictKind::Mode);
        // Same new content, modes changed differently.
        let m = merge_trees(&base, &flat(&[("a", X, 2)]), &flat(&[("a", L, 2)]));
        assert_eq!(only_conflict(&m).kind, ConflictKind::Mode);
        // A symlink change is not combined with the other side's file content.
        let m = merge_trees(&base, &flat(&[("a", L, 1)]), &flat(&[("a", F, 2)]));
        assert_eq!(only_conflict(&m).kind, ConflictKind::Content);
    }

    #[test]
    fn file_directory_conflict() {
        // Ours adds file "d", theirs adds "d/x": "d" is reported, "d/x" kept.
        let base = flat(&[("k", F, 1)]);
        let m = merge_trees(
            &base,
            &flat(&[("k", F, 1), ("d", F, 2)]),
            &flat(&[("k", F, 1), ("d/x", F, 3)]),
        );
        let c = only_conflict(&m);
        assert_eq!(
            (c.path.as_str(), c.kind),
            ("d", ConflictKind::FileDirectory)
        );
        assert_eq!((c.base, c.ours, c.theirs), (None, Some((F, id(2))), None));
        assert_eq!(m.merged, flat(&[("d/x", F, 3), ("k", F, 1)]));

        // Ours turns directory "d" into a file while theirs edits "d/x".
        let base = flat(&[("d/x", F, 1)]);
        let m = merge_trees(&base, &flat(&[("d", L, 2)]), &flat(&[("d/x", F, 3)]));
        let kinds: Vec<_> = m
            .conflicts
            .iter()
            .map(|c| (c.path.as_str(), c.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("d", ConflictKind::FileDirectory),
                ("d/x", ConflictKind::ModifyDelete)
            ]
        );
        assert!(m.merged.is_empty());

        // Cleanly replacing a directory by a file (other side untouched) is fine.
        let m = merge_trees(&base, &flat(&[("d", F, 2)]), &base);
        assert!(m.is_clean());
        assert_eq!(m.merged, flat(&[("d", F, 2)]));

        // A contested file where the other side keeps a directory.
        let base = flat(&[("d", F, 1)]);
        let m = merge_trees(&base, &flat(&[("d", F, 2)]), &flat(&[("d/y", F, 3)]));
        let c = only_conflict(&m);
        assert_eq!(
            (c.path.as_str(), c.kind),
            ("d", ConflictKind::FileDirectory)
        );
        assert_eq!(m.merged, flat(&[("d/y", F, 3)]));
    }
}
