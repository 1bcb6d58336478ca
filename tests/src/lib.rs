//! Helpers for Ivaldi's end-to-end tests: find (or build) the `ivaldi` binary,
//! run it in a throwaway repository, and compare working trees byte for byte.
//!
//! Every failure message carries the command, its exit status, stdout and stderr,
//! so a red CI run can be diagnosed from its log alone.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;

/// The author every test seal records.
pub const AUTHOR: &str = "Ivaldi Tester <tester@ivaldi.invalid>";
/// The first timestamp a [`Repo`] hands out; each command gets the next second.
pub const EPOCH: i64 = 1_700_000_000;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_owned()
}

/// Where cargo put the running test executable: the target directory, the
/// optional target triple and the profile directory's name.
struct TargetLayout {
    target_dir: PathBuf,
    triple: Option<String>,
    profile_dir: PathBuf,
    profile: String,
}

fn target_layout() -> TargetLayout {
    let exe = std::env::current_exe().expect("cannot locate the running test executable");
    // .../target/<profile>/deps/<test>-<hash>  (or target/<triple>/<profile>/deps/...)
    let mut profile_dir = exe
        .parent()
        .expect("test executable has no parent")
        .to_owned();
    if profile_dir.file_name() == Some(OsStr::new("deps")) {
        profile_dir.pop();
    }
    let profile = profile_dir
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or("debug")
        .to_owned();
    let above = profile_dir.parent().unwrap_or(&profile_dir).to_owned();
    // The target directory root carries cargo's CACHEDIR.TAG; a triple directory does not.
    let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() || above.parent().is_none() {
        (above, None)
    } else {
        let triple = above.file_name().and_then(OsStr::to_str).map(str::to_owned);
        (above.parent().unwrap_or(&above).to_owned(), triple)
    };
    TargetLayout {
        target_dir,
        triple,
        profile_dir,
        profile,
    }
}

/// The `ivaldi` binary next to the running test executable, built on first use.
///
/// `cargo test -p ivaldi-tests` does not build other packages' binaries, so the
/// first call in each test process runs `cargo build -p ivaldi-cli --bin ivaldi`
/// for the same profile and target directory (a no-op when it is up to date, and
/// it keeps a stale binary from being tested). Set `IVALDI_BIN` to test a given
/// binary instead, or `IVALDI_TEST_NO_BUILD=1` to use whatever binary is there
/// and build only if it is missing. Parallel tests wait for one build.
pub fn ivaldi_bin() -> PathBuf {
    // The outcome, failure included, is decided once: after a failed build every
    // test fails at once with the same message instead of building again.
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(find_or_build_ivaldi) {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn find_or_build_ivaldi() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("IVALDI_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!("IVALDI_BIN={} is not a file", p.display()));
        }
        return Ok(p);
    }
    let layout = target_layout();
    let bin = layout.profile_dir.join("ivaldi");
    let no_build =
        std::env::var_os("IVALDI_TEST_NO_BUILD").is_some_and(|v| !v.is_empty() && v != "0");
    if !(no_build && bin.is_file()) {
        build_ivaldi(&layout)?;
    }
    if !bin.is_file() {
        return Err(format!(
            "built ivaldi but {} does not exist (target layout: {} / {:?} / {})",
            bin.display(),
            layout.target_dir.display(),
            layout.triple,
            layout.profile
        ));
    }
    Ok(bin)
}

fn build_ivaldi(layout: &TargetLayout) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "ivaldi-cli", "--bin", "ivaldi"])
        .arg("--target-dir")
        .arg(&layout.target_dir);
    match layout.profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(t) = &layout.triple {
        cmd.args(["--target", t]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cargo:?} to build ivaldi: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building ivaldi failed: {cmd:?}\n{}",
            describe_output(&out)
        ));
    }
    Ok(())
}

/// Human-readable exit status: the code, or the signal that ended the process.
pub fn status_text(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{status}"),
    }
}

/// The status, stdout and stderr of a finished command, for failure messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
        status_text(&out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Panics if a command's stderr shows a Rust panic: errors must be reported, not crash.
pub fn assert_no_panic(args: &[&str], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "ivaldi {args:?} panicked\n{}",
        describe_output(out)
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "ivaldi {args:?} exited with 101 (a panic)\n{}",
        describe_output(out)
    );
}

/// One path of a working tree, as far as Ivaldi tracks it.
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file without any execute bit.
    File(Vec<u8>),
    /// A regular file with an execute bit.
    Exec(Vec<u8>),
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
}

impl Entry {
    /// The file's bytes or the link's target.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Entry::File(b) | Entry::Exec(b) | Entry::Symlink(b) => b,
        }
    }

    /// "file", "exec" or "symlink".
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::File(_) => "file",
            Entry::Exec(_) => "exec",
            Entry::Symlink(_) => "symlink",
        }
    }
}

/// FNV-1a, only to tell large contents apart in failure messages.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes();
        if b.len() <= 64 {
            write!(f, "{}({:?})", self.kind(), String::from_utf8_lossy(b))
        } else {
            write!(
                f,
                "{}({} bytes, fnv {:016x}, starts {:?})",
                self.kind(),
                b.len(),
                fnv(b),
                String::from_utf8_lossy(&b[..48])
            )
        }
    }
}

/// A working tree by relative `/`-separated path.
pub type Snapshot = BTreeMap<String, Entry>;

/// Walks `root` (skipping a top-level `.ivaldi`) and records every file and symlink.
pub fn snapshot_dir(root: &Path) -> Snapshot {
    fn go(root: &Path, dir: &Path, out: &mut Snapshot) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            if dir == root && e.file_name() == ".ivaldi" {
                continue;
            }
            let meta = fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            let rel = path
                .strip_prefix(root)
                .expect("walked path is under the root")
                .to_str()
                .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
                .to_owned();
            let ft = meta.file_type();
            if ft.is_dir() {
                go(root, &path, out);
            } else if ft.is_symlink() {
                let target = fs::read_link(&path)
                    .unwrap_or_else(|e| panic!("readlink {}: {e}", path.display()));
                out.insert(rel, Entry::Symlink(target.as_os_str().as_bytes().to_vec()));
            } else {
                let bytes =
                    fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                if meta.permissions().mode() & 0o111 != 0 {
                    out.insert(rel, Entry::Exec(bytes));
                } else {
                    out.insert(rel, Entry::File(bytes));
                }
            }
        }
    }
    let mut out = Snapshot::new();
    go(root, root, &mut out);
    out
}

/// Directories under `root` (skipping `.ivaldi`) that hold nothing at all.
pub fn empty_dirs(root: &Path) -> Vec<String> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut any = false;
        for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let e = e.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            any = true;
            if dir == root && e.file_name() == ".ivaldi" {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                go(root, &e.path(), out);
            }
        }
        if !any && dir != root {
            out.push(
                dir.strip_prefix(root)
                    .unwrap_or(dir)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

/// Asserts two snapshots are equal, listing only the paths that differ.
#[track_caller]
pub fn assert_same_tree(expected: &Snapshot, actual: &Snapshot, context: &str) {
    if expected == actual {
        return;
    }
    let mut report = String::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => report.push_str(&format!("  missing  {p:?}: expected {e:?}\n")),
            Some(a) if a != e => {
                report.push_str(&format!("  differs  {p:?}: expected {e:?}, found {a:?}\n"))
            }
            Some(_) => {}
        }
    }
    for (p, a) in actual {
        if !expected.contains_key(p) {
            report.push_str(&format!("  extra    {p:?}: {a:?}\n"));
        }
    }
    panic!("working tree differs from the expected snapshot ({context}):\n{report}");
}

/// Total size in bytes of the regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

/// Copies a directory tree, keeping symlinks as symlinks and permission bits.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("mkdir {}: {e}", to.display()));
    for e in fs::read_dir(from).unwrap_or_else(|e| panic!("read_dir {}: {e}", from.display())) {
        let e = e.unwrap_or_else(|e| panic!("read_dir {}: {e}", from.display()));
        let src = e.path();
        let dst = to.join(e.file_name());
        let m =
            fs::symlink_metadata(&src).unwrap_or_else(|e| panic!("stat {}: {e}", src.display()));
        if m.is_dir() {
            copy_tree(&src, &dst);
        } else if m.file_type().is_symlink() {
            let t =
                fs::read_link(&src).unwrap_or_else(|e| panic!("readlink {}: {e}", src.display()));
            std::os::unix::fs::symlink(&t, &dst)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", dst.display()));
        } else {
            fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copy {} → {}: {e}", src.display(), dst.display()));
            fs::set_permissions(&dst, m.permissions())
                .unwrap_or_else(|e| panic!("chmod {}: {e}", dst.display()));
        }
    }
}

/// A throwaway directory to run `ivaldi` in; deleted on drop.
///
/// Each command gets a fresh pinned timestamp (`IVALDI_TIME`), one second after
/// the previous, so seal ids are reproducible and `log` order is by time.
pub struct Repo {
    dir: TempDir,
    clock: Cell<i64>,
}

impl Default for Repo {
    fn default() -> Self {
        Self::empty()
    }
}

impl Repo {
    /// An empty directory, not yet a repository.
    pub fn empty() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("ivaldi-test-")
            .tempdir()
            .expect("cannot create a temporary directory");
        Repo {
            dir,
            clock: Cell::new(EPOCH),
        }
    }

    /// A freshly forged, empty repository.
    pub fn forged() -> Repo {
        let r = Repo::empty();
        r.ok(&["forge"]);
        r
    }

    /// A copy of this repository (working tree and `.ivaldi`) in a new directory,
    /// with the same clock: the same command there makes the same seal id.
    pub fn copy_of(&self) -> Repo {
        let r = Repo::empty();
        copy_tree(self.path(), r.path());
        r.clock.set(self.clock.get());
        r
    }

    /// The working tree's root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `.ivaldi` inside the working tree.
    pub fn dot(&self) -> PathBuf {
        self.path().join(".ivaldi")
    }

    /// An absolute path inside the working tree.
    pub fn abs(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Sets the timestamp the next command will use.
    pub fn set_clock(&self, seconds: i64) {
        self.clock.set(seconds);
    }

    /// A configured `ivaldi -C <dir> ARGS` command: fixed author, pinned time, no
    /// `RUST_LOG`, no inherited crash point. Used directly by tests that spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_at(self.path(), args)
    }

    /// Like [`Repo::command`] with `-C dir` instead of the repository's root (a
    /// subdirectory, or somewhere that does not exist).
    pub fn command_at(&self, dir: &Path, args: &[&str]) -> Command {
        let t = self.clock.get();
        self.clock.set(t + 1);
        let mut cmd = Command::new(ivaldi_bin());
        cmd.arg("-C")
            .arg(dir)
            .args(args)
            .current_dir(self.path())
            .env("IVALDI_AUTHOR", AUTHOR)
            .env("IVALDI_TIME", t.to_string())
            .env_remove("RUST_LOG")
            .env_remove("IVALDI_CRASH_AT")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ivaldi -C dir ARGS` and returns whatever happened.
    pub fn run_at(&self, dir: &Path, args: &[&str]) -> Output {
        self.command_at(dir, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", ivaldi_bin().display()))
    }

    /// Runs `ivaldi -C <dir> ARGS` and returns whatever happened.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Like [`Repo::run`] with extra environment variables.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", ivaldi_bin().display()))
    }

    /// Runs a command that must succeed; returns its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            panic!(
                "`ivaldi {}` failed in {}\n{}",
                args.join(" "),
                self.path().display(),
                describe_output(&out)
            );
        }
        assert_no_panic(args, &out);
        String::from_utf8(out.stdout).expect("stdout is not UTF-8")
    }

    /// Runs a command that must fail cleanly (non-zero exit, no panic, no signal);
    /// returns its stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if out.status.success() || out.status.code().is_none() {
            panic!(
                "`ivaldi {}` should have failed with an error in {}\n{}",
                args.join(" "),
                self.path().display(),
                describe_output(&out)
            );
        }
        assert_no_panic(args, &out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Like [`Repo::fails`], returning the whole output (some commands explain a
    /// failure on stdout).
    #[track_caller]
    pub fn fails_output(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        if out.status.success() || out.status.code().is_none() {
            panic!(
                "`ivaldi {}` should have failed with an error in {}\n{}",
                args.join(" "),
                self.path().display(),
                describe_output(&out)
            );
        }
        assert_no_panic(args, &out);
        out
    }

    /// Runs a command that must succeed and parses its stdout as JSON.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "`ivaldi {}` printed invalid JSON ({e}):\n{out}",
                args.join(" ")
            )
        })
    }

    /// Seals the working tree and returns the new seal's full id.
    #[track_caller]
    pub fn seal(&self, message: &str) -> String {
        let out = self.ok(&["seal", "-m", message]);
        assert!(
            out.starts_with('['),
            "seal did not report a new seal:\n{out}"
        );
        let head = self
            .base()
            .unwrap_or_else(|| panic!("no base after sealing:\n{out}"));
        let short = &head[..12];
        assert!(
            out.contains(short),
            "seal printed {out:?}, but the base is {head}"
        );
        head
    }

    /// The full id of a timeline's head, from `timeline list --json`.
    #[track_caller]
    pub fn head_of(&self, timeline: &str) -> Option<String> {
        let v = self.json(&["timeline", "list", "--json"]);
        v["timelines"]
            .as_array()
            .expect("timeline list --json has a timelines array")
            .iter()
            .find(|t| t["name"] == timeline)
            .map(|t| t["head"].as_str().expect("head is a string").to_owned())
    }

    /// The working tree's base seal, from `status --json`.
    #[track_caller]
    pub fn base(&self) -> Option<String> {
        self.json(&["status", "--json"])["base"]
            .as_str()
            .map(str::to_owned)
    }

    /// The checked-out timeline, from `status --json`.
    #[track_caller]
    pub fn current_timeline(&self) -> String {
        self.json(&["status", "--json"])["timeline"]
            .as_str()
            .expect("status has a timeline")
            .to_owned()
    }

    /// `log --json` from `start` (or the current timeline).
    #[track_caller]
    pub fn log(&self, start: Option<&str>) -> Vec<Value> {
        let mut args = vec!["log", "--json"];
        args.extend(start);
        match self.json(&args) {
            Value::Array(a) => a,
            other => panic!("log --json printed {other}"),
        }
    }

    /// Writes a file (creating parent directories), replacing a symlink if one is there.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let p = self.abs(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    }

    /// Reads a file's bytes.
    pub fn read(&self, rel: &str) -> Vec<u8> {
        let p = self.abs(rel);
        fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// Reads a file as UTF-8.
    pub fn read_string(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel)).unwrap_or_else(|_| panic!("{rel} is not UTF-8"))
    }

    /// Whether anything (even a dangling symlink) exists at `rel`.
    pub fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.abs(rel)).is_ok()
    }

    /// Removes a file or symlink.
    pub fn remove(&self, rel: &str) {
        let p = self.abs(rel);
        fs::remove_file(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
    }

    /// Sets a file's permission bits.
    pub fn set_mode(&self, rel: &str, mode: u32) {
        let p = self.abs(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    }

    /// `chmod +x`.
    pub fn chmod_x(&self, rel: &str) {
        let p = self.abs(rel);
        let mode = fs::metadata(&p)
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
            .permissions()
            .mode();
        self.set_mode(rel, mode | 0o111);
    }

    /// `chmod -x`.
    pub fn chmod_no_x(&self, rel: &str) {
        let p = self.abs(rel);
        let mode = fs::metadata(&p)
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
            .permissions()
            .mode();
        self.set_mode(rel, mode & !0o111);
    }

    /// Creates a symlink at `rel` pointing at `target`, replacing what is there.
    pub fn symlink(&self, target: &str, rel: &str) {
        let p = self.abs(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        if fs::symlink_metadata(&p).is_ok() {
            fs::remove_file(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
        }
        std::os::unix::fs::symlink(target, &p)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
    }

    /// Every file and symlink of the working tree (excluding `.ivaldi`), by path.
    pub fn snapshot_tree(&self) -> Snapshot {
        snapshot_dir(self.path())
    }

    /// Asserts the working tree equals `expected`, listing the paths that differ.
    #[track_caller]
    pub fn assert_tree(&self, expected: &Snapshot, context: &str) {
        assert_same_tree(expected, &self.snapshot_tree(), context);
    }

    /// Total bytes under `.ivaldi/objects`.
    pub fn objects_size(&self) -> u64 {
        dir_size(&self.dot().join("objects"))
    }

    /// The pack files under `.ivaldi/objects`, sorted by name.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let dir = self.dot().join("objects");
        let mut v: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "ivp"))
            .collect();
        v.sort();
        v
    }
}

/// Ids of the `parents` array of a `log --json` / `show --json` entry.
pub fn parents_of(seal: &Value) -> Vec<String> {
    seal["parents"]
        .as_array()
        .unwrap_or_else(|| panic!("no parents array in {seal}"))
        .iter()
        .map(|p| p.as_str().expect("parent is a string").to_owned())
        .collect()
}

/// The `id` of a `log --json` / `show --json` entry.
pub fn id_of(seal: &Value) -> String {
    seal["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {seal}"))
        .to_owned()
}

/// A string array (such as `changes.added`) of a JSON value, sorted.
pub fn strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("{v} is not an array"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("{s} is not a string"))
                .to_owned()
        })
        .collect();
    out.sort();
    out
}

/// A deterministic pseudo-random byte stream (xorshift), for large test files.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
