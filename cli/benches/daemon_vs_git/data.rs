//! Deterministic data (the same generator style as the foundation benchmark).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::Path;

/// splitmix64: tiny, fast, and the same stream on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

pub const WORDS: &[&str] = &[
    "fn", "let", "mut", "self", "return", "if", "else", "match", "struct", "impl", "pub", "use",
    "for", "in", "while", "loop", "break", "Some", "None", "Ok", "Err", "value", "index", "buffer",
    "count", "len", "path", "node", "tree", "seal", "timeline", "store", "error", "result",
    "config", "file", "bytes", "write", "read", "parse", "=", "+", "-", "{", "}", "(", ")", ";",
    "->", "&", "0", "1", "42", "String", "Vec", "Option", "// TODO", "assert!", "println!",
];
pub const DIR_NAMES: &[&str] = &[
    "src", "lib", "tests", "docs", "core", "util", "net", "ui", "data", "tools", "proto", "sync",
];
pub const EXTS: &[&str] = &["rs", "c", "h", "txt", "md", "json", "toml", "py"];

/// Source-like text of exactly `size` bytes.
pub fn text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    while out.len() < size {
        let indent = rng.below(4) * 4;
        out.extend(std::iter::repeat_n(b' ', indent));
        for w in 0..3 + rng.below(10) {
            if w > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
            if rng.below(8) == 0 {
                out.extend_from_slice(rng.below(100_000).to_string().as_bytes());
            }
        }
        out.push(b'\n');
    }
    out.truncate(size);
    out
}

/// Writes `files` files (log-uniform 100 B–20 KB, ~90% text, ~10% binary) over a
/// random tree of nested directories (depth ≤ 6, ~16 files a directory) into every
/// root. Returns the relative paths and the total size.
pub fn generate_tree(roots: &[&Path], files: usize) -> (Vec<String>, u64) {
    let mut rng = Rng(0x1FA1_D1F0_0DA7_1011);
    let mut dirs: Vec<(String, usize)> = vec![(String::new(), 0)];
    let ndirs = (files / 16).max(4);
    while dirs.len() < ndirs {
        let (parent, depth) = dirs[rng.below(dirs.len())].clone();
        if depth >= 6 {
            continue;
        }
        let name = format!("{}{}", DIR_NAMES[rng.below(DIR_NAMES.len())], dirs.len());
        let path = if parent.is_empty() {
            name
        } else {
            format!("{parent}/{name}")
        };
        dirs.push((path, depth + 1));
    }
    let mut paths = Vec::with_capacity(files);
    let mut total = 0u64;
    for i in 0..files {
        let (dir, _) = &dirs[rng.below(dirs.len())];
        let size = (100.0 * 200f64.powf(rng.unit())) as usize;
        let binary = rng.below(10) == 0;
        let ext = if binary {
            "bin"
        } else {
            EXTS[rng.below(EXTS.len())]
        };
        let name = format!("{}_{i}.{ext}", WORDS[rng.below(12)]);
        let rel = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        let content = if binary {
            let mut b = vec![0u8; size];
            rng.fill(&mut b);
            b
        } else {
            text(&mut rng, size)
        };
        for root in roots {
            let abs = root.join(&rel);
            fs::create_dir_all(abs.parent().expect("file has a parent")).expect("create dir");
            fs::write(&abs, &content).expect("write file");
        }
        total += content.len() as u64;
        paths.push(rel);
    }
    (paths, total)
}

/// One edit: text files get a line inserted at a random line boundary; binary
/// files get 64 bytes overwritten at a random offset.
pub fn edit(rng: &mut Rng, old: &[u8], binary: bool) -> Vec<u8> {
    if binary {
        let mut v = old.to_vec();
        let len = 64.min(v.len());
        let at = rng.below(v.len() - len + 1);
        rng.fill(&mut v[at..at + len]);
        return v;
    }
    let guess = rng.below(old.len().max(1));
    let cut = old[guess.min(old.len())..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(old.len(), |p| guess + p + 1);
    let mut v = old[..cut].to_vec();
    v.extend_from_slice(format!("    let edited = {};\n", rng.next() % 1_000_000_007).as_bytes());
    v.extend_from_slice(&old[cut..]);
    v
}

/// Picks `n` distinct files and computes their edited contents from `root`.
pub fn plan_edits(
    rng: &mut Rng,
    root: &Path,
    paths: &[String],
    n: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut picked = BTreeSet::new();
    while picked.len() < n.min(paths.len()) {
        picked.insert(rng.below(paths.len()));
    }
    picked
        .into_iter()
        .map(|i| {
            let rel = &paths[i];
            let old = fs::read(root.join(rel)).expect("read file to edit");
            (rel.clone(), edit(rng, &old, rel.ends_with(".bin")))
        })
        .collect()
}

pub fn apply_edits(root: &Path, edits: &[(String, Vec<u8>)]) {
    for (rel, content) in edits {
        fs::write(root.join(rel), content).expect("write edited file");
    }
}

pub fn write_big(path: &Path, size: u64) {
    let mut rng = Rng(0xB16F_11E0);
    let mut f =
        std::io::BufWriter::with_capacity(1 << 20, File::create(path).expect("create big file"));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write big file");
        left -= n as u64;
    }
    f.flush().expect("flush big file");
}
