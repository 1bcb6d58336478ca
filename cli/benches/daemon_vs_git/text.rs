//! The text-heavy history: many versions of a few large text files (the
//! `Cargo.lock` pattern), as an Ivaldi and a git repository, cached like the
//! main history.
//!
//! Four lock-file-like text files of 100–200 KB (blocks of `[[package]]` name,
//! version, source, checksum, dependencies; the checksums are random hex, as in
//! a real lock file). Then `seals` seals/commits, each editing one or two of the
//! files: one to three packages get a new version and checksum (two lines each),
//! and one seal in eight also adds a package. Times are pinned, so both
//! histories are the same every run. The state `tail` seals before the end is
//! kept too (`ivaldi-base`, a copy of the repository then; `git-base.git`, a
//! `git clone --bare --no-local` then), for the "last seals" sync. `.git` is
//! measured loose (as the commits left it) before `git repack -a -d`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::data::Rng;
use crate::history::commit_both;
use crate::procs::{copy_dir, dir_size, git, git_head, git_quiet_config, ivaldi_head, run};
use crate::{Config, IVALDI, T0};

/// Bump when the generated text history changes.
const TEXT_GENERATOR: &str = "t1";
const NAMES: [&str; 4] = [
    "Cargo.lock",
    "web/package.lock",
    "vendor/deps.lock",
    "tools/xtask/Cargo.lock",
];

pub struct TextHistory {
    pub ivaldi: PathBuf,
    pub git: PathBuf,
    pub ivaldi_base: PathBuf,
    pub git_base: PathBuf,
    pub ivaldi_head: String,
    pub git_head: String,
    /// `.git` as the commits left it, before `git repack -a -d`.
    pub git_loose_bytes: u64,
    /// The four files' size at the last seal.
    pub tree_bytes: u64,
}

fn hex(rng: &mut Rng) -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rng.next(),
        rng.next(),
        rng.next(),
        rng.next()
    )
}

fn version(rng: &mut Rng) -> String {
    format!("{}.{}.{}", rng.below(3), rng.below(40), rng.below(30))
}

/// One `[[package]]` block.
fn block(rng: &mut Rng, name: &str) -> String {
    let mut deps = String::new();
    for _ in 0..rng.below(5) {
        deps.push_str(&format!(" \"dep-{}\",\n", rng.below(5000)));
    }
    format!(
        "[[package]]\nname = \"{name}\"\nversion = \"{}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{}\"\ndependencies = [\n{deps}]\n\n",
        version(rng),
        hex(rng)
    )
}

/// A new version and checksum for the package in `b` (two lines change).
fn bump(rng: &mut Rng, b: &str) -> String {
    let mut out = String::with_capacity(b.len());
    for line in b.split_inclusive('\n') {
        if line.starts_with("version = ") {
            out.push_str(&format!("version = \"{}\"\n", version(rng)));
        } else if line.starts_with("checksum = ") {
            out.push_str(&format!("checksum = \"{}\"\n", hex(rng)));
        } else {
            out.push_str(line);
        }
    }
    out
}

fn write_files(roots: &[&Path], files: &[Vec<String>]) -> u64 {
    let mut total = 0;
    for (name, blocks) in NAMES.iter().zip(files) {
        let content = blocks.concat();
        total += content.len() as u64;
        for root in roots {
            let p = root.join(name);
            fs::create_dir_all(p.parent().expect("parent")).expect("create dir");
            fs::write(&p, &content).expect("write text file");
        }
    }
    total
}

pub fn text_history(cfg: &Config, cache: &Path, version: &str) -> TextHistory {
    let prefix = format!(
        "text-{}s-{}t-{TEXT_GENERATOR}-",
        cfg.text_seals, cfg.text_tail
    );
    let dir = cache.join(format!("{prefix}{version}"));
    let mut h = TextHistory {
        ivaldi: dir.join("ivaldi"),
        git: dir.join("git"),
        ivaldi_base: dir.join("ivaldi-base"),
        git_base: dir.join("git-base.git"),
        ivaldi_head: String::new(),
        git_head: String::new(),
        git_loose_bytes: 0,
        tree_bytes: 0,
    };
    if let Ok(meta) = fs::read_to_string(dir.join("complete")) {
        let f: Vec<&str> = meta.split_whitespace().collect();
        if let [ih, gh, loose, bytes] = f[..]
            && ivaldi_head(&h.ivaldi).as_deref() == Some(ih)
            && git_head(&h.git, "HEAD") == gh
        {
            eprintln!("- using the cached text history in {}", dir.display());
            h.ivaldi_head = ih.to_owned();
            h.git_head = gh.to_owned();
            h.git_loose_bytes = loose.parse().unwrap_or(0);
            h.tree_bytes = bytes.parse().unwrap_or(0);
            return h;
        }
        eprintln!("- the cached text history is damaged; regenerating");
    }
    crate::history::prune_stale(cache, &prefix, &dir);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&h.git).expect("create cache dir");
    let t = Instant::now();
    run(std::process::Command::new(IVALDI)
        .arg("forge")
        .arg(&h.ivaldi));
    run(git(&h.git).args(["init", "-q", "-b", "main"]));
    git_quiet_config(&h.git);
    let mut rng = Rng(0x7E47_10C4);
    let mut files: Vec<Vec<String>> = Vec::new();
    let mut next_pkg = 0usize;
    for _ in 0..NAMES.len() {
        let size = 100_000 + rng.below(100_001);
        let mut blocks = Vec::new();
        let mut len = 0;
        while len < size {
            let b = block(&mut rng, &format!("crate-{next_pkg}"));
            next_pkg += 1;
            len += b.len();
            blocks.push(b);
        }
        files.push(blocks);
    }
    write_files(&[&h.ivaldi, &h.git], &files);
    commit_both(&h.ivaldi, &h.git, "lock files", T0);
    for i in 1..=cfg.text_seals {
        let nfiles = 1 + rng.below(2);
        let first = rng.below(NAMES.len());
        for k in 0..nfiles {
            let blocks = &mut files[(first + k) % NAMES.len()];
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(blocks.len());
                blocks[at] = bump(&mut rng, &blocks[at]);
            }
            if rng.below(8) == 0 {
                let at = rng.below(blocks.len() + 1);
                let b = block(&mut rng, &format!("crate-{next_pkg}"));
                next_pkg += 1;
                blocks.insert(at, b);
            }
        }
        h.tree_bytes = write_files(&[&h.ivaldi, &h.git], &files);
        commit_both(
            &h.ivaldi,
            &h.git,
            &format!("update lock files {i}"),
            T0 + 60 * i as i64,
        );
        if i == cfg.text_seals - cfg.text_tail {
            copy_dir(&h.ivaldi, &h.ivaldi_base);
            run(git(&dir)
                .args(["clone", "-q", "--bare", "--no-local"])
                .arg(&h.git)
                .arg(&h.git_base));
            git_quiet_config(&h.git_base);
        }
    }
    h.git_loose_bytes = dir_size(&h.git.join(".git"));
    run(git(&h.git).args(["repack", "-a", "-d", "-q"]));
    h.ivaldi_head = ivaldi_head(&h.ivaldi).expect("ivaldi head");
    h.git_head = git_head(&h.git, "HEAD");
    fs::write(
        dir.join("complete"),
        format!(
            "{} {} {} {}\n",
            h.ivaldi_head, h.git_head, h.git_loose_bytes, h.tree_bytes
        ),
    )
    .expect("write marker");
    eprintln!(
        "- generated the text history in {:.0} s into {}",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    h
}

/// Case 6: full sync and a last-seals sync of the text history, both through
/// counting proxies. Pushes `tp …` (full sync) and `tt …` (the last seals):
/// `ivaldi|git bytes down|up` and `ivaldi|git ms`.
pub fn measure(th: &TextHistory, work: &Path, logs: &Path, s: &mut crate::stats::Samples) {
    use crate::procs::{Daemon, GitDaemon, repo_id};
    use crate::proxy::Proxy;
    use crate::stats::ms;
    use crate::sync::{git_clone, ivaldi_full_sync, ivaldi_pull_into};

    let dir = work.join("text");
    let src = dir.join("ivaldi-src");
    copy_dir(&th.ivaldi, &src);
    let ds = Daemon::start(&src, "t-src", true, logs);
    let iproxy = Proxy::start(ds.port);
    let gd = GitDaemon::start(th.git.parent().expect("cache dir"), logs);
    let gproxy = Proxy::start(gd.port);
    let id = repo_id(&src);

    // Full sync into an empty repository.
    let mark = iproxy.mark();
    let (wall, _, _) = ivaldi_full_sync(
        &dir.join("ivaldi-full"),
        &id,
        &ds,
        iproxy.port,
        &th.ivaldi_head,
        "t-full",
        logs,
    );
    let tr = iproxy.since(mark);
    s.push("tp ivaldi ms", ms(wall));
    s.push("tp ivaldi bytes down", tr.down as f64);
    s.push("tp ivaldi bytes up", tr.up as f64);
    let mark = gproxy.mark();
    let gfull = dir.join("git-full.git");
    let (wall, _) = git_clone(&dir, gproxy.port, &gfull, true, &gd);
    let tr = gproxy.since(mark);
    assert_eq!(git_head(&gfull, "main"), th.git_head, "text clone head");
    s.push("tp git ms", ms(wall));
    s.push("tp git bytes down", tr.down as f64);
    s.push("tp git bytes up", tr.up as f64);

    // The last seals, into a copy of the repository as it was before them: a
    // daemon with auto-sync on connects (through the proxy) and pulls.
    let tail = dir.join("ivaldi-tail");
    copy_dir(&th.ivaldi_base, &tail);
    let mark = iproxy.mark();
    let (wall, _, _) = ivaldi_pull_into(&tail, &ds, iproxy.port, &th.ivaldi_head, "t-tail", logs);
    let tr = iproxy.since(mark);
    s.push("tt ivaldi ms", ms(wall));
    s.push("tt ivaldi bytes down", tr.down as f64);
    s.push("tt ivaldi bytes up", tr.up as f64);
    let gtail = dir.join("git-tail.git");
    copy_dir(&th.git_base, &gtail);
    let mark = gproxy.mark();
    let t = Instant::now();
    run(git(&gtail).args([
        "fetch",
        "-q",
        &format!("git://127.0.0.1:{}/git", gproxy.port),
        "+refs/heads/*:refs/heads/*",
    ]));
    let wall = t.elapsed();
    let tr = gproxy.since(mark);
    assert_eq!(git_head(&gtail, "main"), th.git_head, "text fetch head");
    s.push("tt git ms", ms(wall));
    s.push("tt git bytes down", tr.down as f64);
    s.push("tt git bytes up", tr.up as f64);
    eprintln!(
        "  text: full sync {:.0} B vs git {:.0} B; last seals {:.0} B vs git {:.0} B",
        s.med("tp ivaldi bytes down") + s.med("tp ivaldi bytes up"),
        s.med("tp git bytes down") + s.med("tp git bytes up"),
        s.med("tt ivaldi bytes down") + s.med("tt ivaldi bytes up"),
        s.med("tt git bytes down") + s.med("tt git bytes up"),
    );
    drop(iproxy);
    drop(gproxy);
    drop(ds);
    drop(gd);
    let _ = fs::remove_dir_all(&dir);
}
