//! Properties of the three-way merges in `ivaldi_core::merge`.
//!
//! Raw bytes check robustness; generated "texts" (lines over a tiny vocabulary, so
//! lines repeat and diffs are ambiguous) check the line algorithm itself.

use std::collections::BTreeSet;

use ivaldi_core::ObjectId;
use ivaldi_core::merge::{FlatTree, MergeLabels, TextMerge, merge_text, merge_trees};
use ivaldi_core::object::Mode;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

fn labels() -> MergeLabels {
    MergeLabels::new("ours", "theirs")
}

fn check<A: quickcheck::Testable>(prop: A) {
    QuickCheck::new()
        .rng(Gen::new(40))
        .tests(300)
        .quickcheck(prop);
}

fn clean(content: &[u8]) -> TextMerge {
    TextMerge {
        content: content.to_vec(),
        conflicts: 0,
    }
}

/// Text made of short lines from a small vocabulary, with mixed endings and
/// sometimes no final newline.
#[derive(Clone, Debug)]
struct Text(Vec<u8>);

const WORDS: &[&str] = &["a", "b", "c", "}", "", "fn x() {", "  return;"];

fn gen_lines(g: &mut Gen, max: usize) -> Vec<Vec<u8>> {
    let n = usize::arbitrary(g) % (max + 1);
    (0..n)
        .map(|_| {
            let mut line = g.choose(WORDS).copied().unwrap_or("").as_bytes().to_vec();
            let ending = *g.choose(&[0u8, 1, 1, 1, 1, 1, 2]).unwrap_or(&1);
            line.extend_from_slice(match ending {
                0 => b"",
                1 => b"\n",
                _ => b"\r\n",
            });
            line
        })
        .collect()
}

impl Arbitrary for Text {
    fn arbitrary(g: &mut Gen) -> Self {
        let size = g.size();
        Text(gen_lines(g, size).concat())
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        Box::new(self.0.shrink().map(Text))
    }
}

#[test]
fn unchanged_theirs_gives_ours() {
    fn prop(b: Vec<u8>, x: Vec<u8>) -> bool {
        merge_text(&b, &x, &b, &labels()) == clean(&x)
    }
    check(prop as fn(Vec<u8>, Vec<u8>) -> bool);
    fn text(b: Text, x: Text) -> bool {
        merge_text(&b.0, &x.0, &b.0, &labels()) == clean(&x.0)
    }
    check(text as fn(Text, Text) -> bool);
}

#[test]
fn unchanged_ours_gives_theirs() {
    fn prop(b: Vec<u8>, y: Vec<u8>) -> bool {
        merge_text(&b, &b, &y, &labels()) == clean(&y)
    }
    check(prop as fn(Vec<u8>, Vec<u8>) -> bool);
    fn text(b: Text, y: Text) -> bool {
        merge_text(&b.0, &b.0, &y.0, &labels()) == clean(&y.0)
    }
    check(text as fn(Text, Text) -> bool);
}

#[test]
fn identical_changes_give_that_change() {
    fn prop(b: Vec<u8>, x: Vec<u8>) -> bool {
        merge_text(&b, &x, &x, &labels()) == clean(&x)
    }
    check(prop as fn(Vec<u8>, Vec<u8>) -> bool);
    fn text(b: Text, x: Text) -> bool {
        merge_text(&b.0, &x.0, &x.0, &labels()) == clean(&x.0)
    }
    check(text as fn(Text, Text) -> bool);
}

#[test]
fn never_panics_on_arbitrary_bytes() {
    fn prop(b: Vec<u8>, x: Vec<u8>, y: Vec<u8>) -> bool {
        let m = merge_text(&b, &x, &y, &labels());
        m.is_clean() == (m.conflicts == 0)
    }
    check(prop as fn(Vec<u8>, Vec<u8>, Vec<u8>) -> bool);
    fn text(b: Text, x: Text, y: Text) -> bool {
        let m = merge_text(&b.0, &x.0, &y.0, &labels());
        m.is_clean() == (m.conflicts == 0)
    }
    check(text as fn(Text, Text, Text) -> bool);
}

/// Swapping the sides finds the same conflicts, and the same result when clean.
#[test]
fn merge_is_symmetric() {
    fn prop(b: Text, x: Text, y: Text) -> bool {
        let xy = merge_text(&b.0, &x.0, &y.0, &labels());
        let yx = merge_text(&b.0, &y.0, &x.0, &labels());
        xy.conflicts == yx.conflicts && (!xy.is_clean() || xy.content == yx.content)
    }
    check(prop as fn(Text, Text, Text) -> bool);
}

/// Each counted conflict is one marker block in the content (the vocabulary has
/// no marker-like lines, so every marker was written by the merge).
#[test]
fn conflicts_match_marker_blocks() {
    fn prop(b: Text, x: Text, y: Text) -> bool {
        let m = merge_text(&b.0, &x.0, &y.0, &labels());
        let count = |marker: &[u8]| {
            m.content
                .split(|&c| c == b'\n')
                .filter(|l| l.strip_suffix(b"\r").unwrap_or(l) == marker)
                .count()
        };
        count(b"<<<<<<< ours") == m.conflicts
            && count(b"=======") == m.conflicts
            && count(b">>>>>>> theirs") == m.conflicts
    }
    check(prop as fn(Text, Text, Text) -> bool);
}

/// Base lines are all distinct; ours edits only lines 0 mod 4 and theirs only
/// lines 2 mod 4 (replacing, deleting or inserting), so untouched lines separate
/// every pair of edits: the merge must be clean and apply both sets.
#[test]
fn separated_edits_merge_cleanly() {
    #[derive(Clone, Debug)]
    struct Case {
        base: Vec<Vec<u8>>,
        ours: Vec<Option<Vec<Vec<u8>>>>,
        theirs: Vec<Option<Vec<Vec<u8>>>>,
    }
    impl Arbitrary for Case {
        fn arbitrary(g: &mut Gen) -> Self {
            let n = usize::arbitrary(g) % 40;
            let base: Vec<Vec<u8>> = (0..n).map(|i| format!("base {i}\n").into_bytes()).collect();
            let edit = |g: &mut Gen, side: &str, i: usize| {
                if !bool::arbitrary(g) {
                    return None;
                }
                let k = usize::arbitrary(g) % 4; // 0 deletes the line
                Some(
                    (0..k)
                        .map(|j| format!("{side} {i}.{j}\n").into_bytes())
                        .collect(),
                )
            };
            let ours = (0..n)
                .map(|i| if i % 4 == 0 { edit(g, "ours", i) } else { None })
                .collect();
            let theirs = (0..n)
                .map(|i| {
                    if i % 4 == 2 {
                        edit(g, "theirs", i)
                    } else {
                        None
                    }
                })
                .collect();
            Case { base, ours, theirs }
        }
    }
    fn apply(base: &[Vec<u8>], edits: &[&[Option<Vec<Vec<u8>>>]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, line) in base.iter().enumerate() {
            match edits.iter().find_map(|e| e[i].as_ref()) {
                Some(replacement) => out.extend(replacement.concat()),
                None => out.extend_from_slice(line),
            }
        }
        out
    }
    fn prop(c: Case) -> bool {
        let base = c.base.concat();
        let ours = apply(&c.base, &[&c.ours]);
        let theirs = apply(&c.base, &[&c.theirs]);
        let expected = apply(&c.base, &[&c.ours, &c.theirs]);
        merge_text(&base, &ours, &theirs, &labels()) == clean(&expected)
    }
    check(prop as fn(Case) -> bool);
}

/// A valid flattened tree over a small set of paths (some of which are
/// directories of others), modes and ids, so sides often coincide.
#[derive(Clone, Debug)]
struct Flat(FlatTree);

const PATHS: &[&str] = &["a", "b", "d", "d/e", "d/f", "g/h", "g/h/i", "x y", "ä"];

impl Arbitrary for Flat {
    fn arbitrary(g: &mut Gen) -> Self {
        let mut tree = FlatTree::new();
        for p in PATHS {
            if bool::arbitrary(g) {
                let mode = *g
                    .choose(&[Mode::File, Mode::Executable, Mode::Symlink])
                    .unwrap_or(&Mode::File);
                let id = ObjectId([u8::arbitrary(g) % 3; 32]);
                tree.insert((*p).to_owned(), (mode, id));
            }
        }
        Flat(valid(tree))
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let tree = self.0.clone();
        Box::new(tree.clone().into_keys().map(move |k| {
            let mut t = tree.clone();
            t.remove(&k);
            Flat(t)
        }))
    }
}

/// Drops every path some other path needs as a directory.
fn valid(mut tree: FlatTree) -> FlatTree {
    let dirs = dirs_of(tree.keys());
    tree.retain(|p, _| !dirs.contains(p));
    tree
}

fn dirs_of<'a>(paths: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
    paths
        .flat_map(|p| p.match_indices('/').map(|(i, _)| p[..i].to_owned()))
        .collect()
}

#[test]
fn tree_with_one_unchanged_side_gives_the_other() {
    fn prop(b: Flat, x: Flat) -> bool {
        let ours = merge_trees(&b.0, &x.0, &b.0);
        let theirs = merge_trees(&b.0, &b.0, &x.0);
        let both = merge_trees(&b.0, &x.0, &x.0);
        [ours, theirs, both]
            .iter()
            .all(|m| m.is_clean() && m.merged == x.0)
    }
    check(prop as fn(Flat, Flat) -> bool);
}

#[test]
fn tree_merge_is_symmetric_and_well_formed() {
    fn prop(b: Flat, x: Flat, y: Flat) -> TestResult {
        let xy = merge_trees(&b.0, &x.0, &y.0);
        let yx = merge_trees(&b.0, &y.0, &x.0);
        if xy.merged != yx.merged || xy.conflicts.len() != yx.conflicts.len() {
            return TestResult::failed();
        }
        for (c, d) in xy.conflicts.iter().zip(&yx.conflicts) {
            let swapped = c.path == d.path
                && c.kind == d.kind
                && c.base == d.base
                && (c.ours, c.theirs) == (d.theirs, d.ours);
            if !swapped || xy.merged.contains_key(&c.path) {
                return TestResult::failed();
            }
        }
        // Conflicts are sorted and unique; merged never holds a file where a
        // directory is needed.
        let sorted = xy.conflicts.windows(2).all(|w| w[0].path < w[1].path);
        let dirs = dirs_of(xy.merged.keys());
        let no_clash = xy.merged.keys().all(|p| !dirs.contains(p));
        // Every merged entry's content and mode come from some side.
        let from_sides = xy.merged.iter().all(|(p, (mode, id))| {
            let sides = [x.0.get(p), y.0.get(p)];
            sides.iter().flatten().any(|e| e.0 == *mode)
                && sides.iter().flatten().any(|e| e.1 == *id)
        });
        TestResult::from_bool(sorted && no_clash && from_sides)
    }
    check(prop as fn(Flat, Flat, Flat) -> TestResult);
}
