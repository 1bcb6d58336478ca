//! The core's shape, checked: no import circles between its top-level
//! modules, and no source file over 1,200 lines.
//!
//! Circles are what made `Node` hard to split: `sync` and `conflict` used each
//! other, `trust` reached into `node` for a hex helper, `wire` → `mesh` →
//! `discovery` → `wire`. A circle makes every module in it a prerequisite of
//! every other, so none can be read, tested or replaced alone. This test
//! reads the sources (it is a test, so it may), collects each top-level
//! module's `crate::NAME` references outside comments and test modules, and
//! fails naming the circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a file of `core/src` may grow; past it, a concern should move
/// into a sub-machine of its own (see `docs/architecture.md`).
const MAX_LINES: usize = 1200;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` tail
/// (test modules may use anything).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// A circle through `start`, if the graph has one: depth-first search that
/// returns the path back to `start`.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(graph, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn top_level_modules_form_no_circle_and_files_stay_small() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(
        files.len() > 10,
        "no sources found under {}",
        root.display()
    );

    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut too_long = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let lines = text.lines().count();
        if lines > MAX_LINES {
            too_long.push(format!("{} ({lines} lines)", f.display()));
        }
        let rel = f.strip_prefix(&root).expect("under src");
        let first = rel.iter().next().and_then(|s| s.to_str()).unwrap_or("");
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" {
            continue;
        }
        let refs = references(&code(&text));
        graph
            .entry(module.clone())
            .or_default()
            .extend(refs.into_iter().filter(|r| *r != module));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    let circles: Vec<String> = modules
        .iter()
        .filter_map(|m| circle(&graph, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles between core modules:\n{}",
        circles.join("\n")
    );
    assert!(
        too_long.is_empty(),
        "files over {MAX_LINES} lines: {}",
        too_long.join(", ")
    );
}

#[test]
fn the_checker_finds_a_circle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("d".into()).or_default().insert("a".into());
    assert_eq!(circle(&g, "a").unwrap(), ["a", "b", "c"]);
    assert!(circle(&g, "d").is_none());
    assert_eq!(
        references("use crate::id::ObjectId; crate::wire::x"),
        BTreeSet::from(["id".to_owned(), "wire".to_owned()])
    );
    assert!(code("a // crate::x\n#[cfg(test)]\nmod tests { crate::y }").trim() == "a");
}
