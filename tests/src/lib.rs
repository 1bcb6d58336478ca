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
    /// Extra environment for every command (see [`Repo::set_env`]); empty unless
    /// a test asks.
    env: std::cell::RefCell<Vec<(String, String)>>,
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
            env: Default::default(),
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
        for (k, v) in self.env.borrow().iter() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Sets an environment variable for every later command of this repository
    /// (replacing an earlier value of the same variable).
    pub fn set_env(&self, key: &str, value: &str) {
        let mut env = self.env.borrow_mut();
        env.retain(|(k, _)| k != key);
        env.push((key.to_owned(), value.to_owned()));
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

/// Real daemons on loopback: start them confined to `127.0.0.0/8`, find free
/// ports, wait for conditions with a deadline, throttle a connection, and stop
/// every daemon a test started, by its pid, even when the test fails.
///
/// Network rules every daemon test follows: each `ivaldi` process gets
/// `IVALDI_DISCOVERY_ADDRS=127.255.255.255` (through [`p2p::p2p_repo`]), the TCP
/// listener binds `127.0.0.1` on a port the kernel picks (`--port 0`), and
/// discovery is off unless the test is about it, in which case it gets a UDP port
/// of its own.
pub mod hostile;

pub mod p2p {
    use std::cell::{Cell, RefCell};
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use serde_json::Value;

    use super::{Repo, describe_output};

    /// The variable that overrides where discovery announcements go.
    pub const DISCOVERY_ENV: &str = "IVALDI_DISCOVERY_ADDRS";
    /// Loopback broadcast: announcements never leave the machine.
    pub const LOOPBACK_BROADCAST: &str = "127.255.255.255";

    /// Marks a repository's commands as confined to loopback discovery.
    pub fn p2p_repo(r: Repo) -> Repo {
        r.set_env(DISCOVERY_ENV, LOOPBACK_BROADCAST);
        r
    }

    /// An empty directory whose commands are confined to loopback discovery.
    pub fn p2p_empty() -> Repo {
        p2p_repo(Repo::empty())
    }

    /// A forged repository whose commands are confined to loopback discovery.
    pub fn p2p_forged() -> Repo {
        let r = p2p_empty();
        r.ok(&["forge"]);
        r
    }

    /// Configures a repository's daemon for loopback only: TCP on `127.0.0.1`
    /// with a kernel-chosen port, discovery off (unless `extra` says
    /// `--discovery on`), plus `extra` config flags.
    #[track_caller]
    pub fn configure_loopback(r: &Repo, extra: &[&str]) {
        let mut args = vec!["p2p", "config", "--port", "0", "--bind-addr", "127.0.0.1"];
        if !extra.contains(&"--discovery") {
            args.extend_from_slice(&["--discovery", "off"]);
        }
        args.extend_from_slice(extra);
        r.ok(&args);
    }

    /// `ivaldi p2p whoami` (made on first use).
    #[track_caller]
    pub fn whoami(r: &Repo) -> String {
        r.ok(&["p2p", "whoami"]).trim().to_owned()
    }

    /// Each repository trusts the other's node id, as two users who read
    /// each other their `ivaldi p2p whoami` would (`ivaldi p2p trust ID`).
    #[track_caller]
    pub fn trust_each_other(a: &Repo, b: &Repo) {
        let (ia, ib) = (whoami(a), whoami(b));
        a.ok(&["p2p", "trust", &ib]);
        b.ok(&["p2p", "trust", &ia]);
    }

    /// Every pair of the repositories trusts each other.
    #[track_caller]
    pub fn trust_all(repos: &[&Repo]) {
        for (i, a) in repos.iter().enumerate() {
            for b in &repos[i + 1..] {
                trust_each_other(a, b);
            }
        }
    }

    /// Each pair trusts the other ([`trust_each_other`] for several pairs).
    #[track_caller]
    pub fn trust_pairs(pairs: &[(&Repo, &Repo)]) {
        for (x, y) in pairs {
            trust_each_other(x, y);
        }
    }

    /// The `peer_disconnected` events a daemon reported, as JSON text.
    pub fn disconnects(d: &Daemon) -> Vec<String> {
        d.events()
            .into_iter()
            .filter(|e| e["event"] == "peer_disconnected")
            .map(|e| e.to_string())
            .collect()
    }

    /// Edits `.ivaldi/p2p/config.json` directly, for settings the CLI has no
    /// flag for (such as `handshake_timeout`).
    #[track_caller]
    pub fn edit_config_file(r: &Repo, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        let path = r.dot().join("p2p").join("config.json");
        if !path.exists() {
            r.ok(&["p2p", "config"]);
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()));
        f(v.as_object_mut().expect("config.json is an object"));
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&v).expect("serialise config"),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago.
    pub fn free_tcp_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port()
    }

    /// A UDP port on 127.0.0.1 that was free a moment ago.
    pub fn free_udp_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("bind udp 127.0.0.1:0")
            .port()
    }

    /// Whether a process exists and is not a zombie.
    pub fn alive(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
            Err(_) => false,
        }
    }

    /// The process's state letter from `/proc/PID/stat` (`None` once it is gone).
    pub fn proc_state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')').next()?.trim_start().chars().next()
    }

    /// Sends SIGKILL to `pid` (with `kill(1)`; the test crate has no libc).
    pub fn sigkill(pid: u32) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Polls `cond` every 25 ms until it holds or `timeout` passes; then panics
    /// with `what` and whatever `diag` reports. Returns how long it took.
    #[track_caller]
    pub fn wait_until(
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut() -> bool,
        diag: impl FnOnce() -> String,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if cond() {
                return start.elapsed();
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {:.1} s waiting for {what}\n{}",
                    timeout.as_secs_f64(),
                    diag()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The last `n` lines of a file, or why it could not be read.
    pub fn tail(path: &Path, n: usize) -> String {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            }
            Err(e) => format!("({}: {e})", path.display()),
        }
    }

    /// A running daemon for one repository. Dropping it runs `ivaldi p2p stop`,
    /// then SIGKILLs every daemon pid this guard started that is still alive;
    /// if the test is panicking it first prints the daemon's status and log tail.
    pub struct Daemon<'r> {
        repo: &'r Repo,
        /// Wraps the `p2p start` command (e.g. in `ip netns exec NS`).
        wrap: Option<Wrapper>,
        name: String,
        pid: Cell<u32>,
        port: Cell<u16>,
        pids: RefCell<Vec<u32>>,
        start_output: RefCell<String>,
    }

    /// Turns an `ivaldi` command into the command that actually runs (for
    /// example `ip netns exec NS ivaldi ...`).
    pub type Wrapper = Box<dyn Fn(Command) -> Command>;

    /// Runs `cmd` inside the network namespace `ns`: `ip netns exec NS PROGRAM
    /// ARGS`, keeping its environment and working directory.
    pub fn in_netns(ns: &str, cmd: &Command) -> Command {
        let mut w = Command::new("ip");
        w.args(["netns", "exec", ns])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            w.current_dir(d);
        }
        w
    }

    impl<'r> Daemon<'r> {
        /// `ivaldi p2p start` in `repo` (configure it first); panics with the
        /// log's tail if the daemon does not come up.
        #[track_caller]
        pub fn start(name: &str, repo: &'r Repo) -> Daemon<'r> {
            Self::start_via(name, repo, None)
        }

        /// Like [`Daemon::start`], running `p2p start` through `wrap` (the
        /// daemon inherits what the wrapper sets up, such as a network namespace).
        #[track_caller]
        pub fn start_via(name: &str, repo: &'r Repo, wrap: Option<Wrapper>) -> Daemon<'r> {
            let d = Daemon {
                repo,
                wrap,
                name: name.to_owned(),
                pid: Cell::new(0),
                port: Cell::new(0),
                pids: RefCell::new(Vec::new()),
                start_output: RefCell::new(String::new()),
            };
            d.launch();
            d
        }

        /// Starts the daemon again (after [`Daemon::kill9`] or a stop).
        #[track_caller]
        pub fn restart(&self) -> String {
            self.launch()
        }

        #[track_caller]
        fn launch(&self) -> String {
            let mut cmd = self.repo.command(&["p2p", "start"]);
            if let Some(w) = &self.wrap {
                cmd = w(cmd);
            }
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("daemon {}: cannot run p2p start: {e}", self.name));
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            // Record the pid before judging the outcome, so Drop can clean up.
            if let Some(pid) = self.pid_file() {
                self.pid.set(pid);
                if !self.pids.borrow().contains(&pid) {
                    self.pids.borrow_mut().push(pid);
                }
            }
            if !out.status.success() {
                panic!(
                    "daemon {}: `ivaldi p2p start` failed\n{}\n--- daemon.log ---\n{}",
                    self.name,
                    describe_output(&out),
                    tail(&self.log_path(), 40)
                );
            }
            let status = self.status();
            let pid = status["pid"].as_u64().expect("status has a pid") as u32;
            self.pid.set(pid);
            if !self.pids.borrow().contains(&pid) {
                self.pids.borrow_mut().push(pid);
            }
            self.port
                .set(status["port"].as_u64().expect("status has a port") as u16);
            *self.start_output.borrow_mut() = stdout.clone();
            stdout
        }

        /// The repository this daemon serves.
        pub fn repo(&self) -> &'r Repo {
            self.repo
        }

        /// The daemon's pid (the latest, after a restart).
        pub fn pid(&self) -> u32 {
            self.pid.get()
        }

        /// The TCP port it listens on (127.0.0.1).
        pub fn port(&self) -> u16 {
            self.port.get()
        }

        /// `127.0.0.1:PORT`.
        pub fn addr(&self) -> String {
            format!("127.0.0.1:{}", self.port())
        }

        /// `127.0.0.1:PORT` as a socket address.
        pub fn socket_addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.port()))
        }

        /// What `p2p start` printed last.
        pub fn start_output(&self) -> String {
            self.start_output.borrow().clone()
        }

        /// `.ivaldi/p2p/`.
        pub fn p2p_dir(&self) -> PathBuf {
            self.repo.dot().join("p2p")
        }

        /// `.ivaldi/p2p/daemon.log`.
        pub fn log_path(&self) -> PathBuf {
            self.p2p_dir().join("daemon.log")
        }

        /// The pid in `.ivaldi/p2p/daemon.pid`, if the file is there.
        pub fn pid_file(&self) -> Option<u32> {
            std::fs::read_to_string(self.p2p_dir().join("daemon.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
        }

        /// `p2p status --json` (panics if it fails).
        #[track_caller]
        pub fn status(&self) -> Value {
            self.repo.json(&["p2p", "status", "--json"])
        }

        /// The node id, from the status.
        #[track_caller]
        pub fn node_id(&self) -> String {
            self.status()["node_id"]
                .as_str()
                .expect("status has a node_id")
                .to_owned()
        }

        /// `ivaldi p2p invite --json` in this daemon's repository: a fresh
        /// one-use ticket, the way a user lets another machine in.
        #[track_caller]
        pub fn invite(&self) -> String {
            self.invite_with(&[])
        }

        /// Like [`Daemon::invite`], with extra flags (`--read`, `--uses N`,
        /// `--expires 5s`).
        #[track_caller]
        pub fn invite_with(&self, flags: &[&str]) -> String {
            let mut args = vec!["p2p", "invite", "--json"];
            args.extend_from_slice(flags);
            self.repo.json(&args)["ticket"]
                .as_str()
                .expect("invite --json prints a ticket")
                .to_owned()
        }

        /// Node ids of the peers with a ready connection.
        #[track_caller]
        pub fn peer_ids(&self) -> Vec<String> {
            let v = self.repo.json(&["p2p", "peers", "--json"]);
            v["peers"]
                .as_array()
                .expect("peers --json has a peers array")
                .iter()
                .filter(|p| p["state"] == "ready")
                .filter_map(|p| p["peer"].as_str().map(str::to_owned))
                .collect()
        }

        /// `p2p events --json`: the recent events, oldest first.
        #[track_caller]
        pub fn events(&self) -> Vec<Value> {
            let out = self.repo.ok(&["p2p", "events", "--json"]);
            out.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("events --json line is not JSON ({e}): {l}"))
                })
                .collect()
        }

        /// Whether the daemon process is alive.
        pub fn is_alive(&self) -> bool {
            alive(self.pid())
        }

        /// SIGKILLs the daemon and waits until it is gone.
        #[track_caller]
        pub fn kill9(&self) {
            let pid = self.pid();
            sigkill(pid);
            let start = Instant::now();
            while alive(pid) {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "daemon {} (pid {pid}) survived SIGKILL for 10 s",
                    self.name
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Status and log tail, for failure messages.
        pub fn diagnostics(&self) -> String {
            let status = self.repo.run(&["p2p", "status", "--json"]);
            format!(
                "===== daemon {} (pid {}, port {}, repo {}) =====\n--- p2p status --json ---\n{}\n{}\n--- daemon.log (tail) ---\n{}\n",
                self.name,
                self.pid(),
                self.port(),
                self.repo.path().display(),
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&status.stderr),
                tail(&self.log_path(), 60)
            )
        }

        /// Whether `pid` is a daemon of this guard's repository (guards against
        /// a recycled pid).
        fn is_ours(&self, pid: u32) -> bool {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            let dir = self
                .repo
                .path()
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            cmdline.contains("p2p") && !dir.is_empty() && cmdline.contains(&dir)
        }

        /// `p2p stop` (bounded to 10 s), then SIGKILL whatever is left.
        pub fn shutdown(&self) {
            let mut cmd = self.repo.command(&["p2p", "stop"]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            if let Ok(mut child) = cmd.spawn() {
                let start = Instant::now();
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if start.elapsed() > Duration::from_secs(10) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }
            let mut pids = self.pids.borrow().clone();
            if let Some(p) = self.pid_file()
                && !pids.contains(&p)
                && self.is_ours(p)
            {
                pids.push(p);
            }
            for pid in pids {
                let start = Instant::now();
                while alive(pid) && start.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if alive(pid) && self.is_ours(pid) {
                    eprintln!(
                        "daemon {} (pid {pid}) still alive after stop: SIGKILL",
                        self.name
                    );
                    sigkill(pid);
                }
            }
        }
    }

    impl Drop for Daemon<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("{}", self.diagnostics());
            }
            self.shutdown();
        }
    }

    /// A loopback TCP relay to `target` that can throttle what flows back from
    /// the target (bytes per second; 0 = unlimited). Lets a test catch a large
    /// transfer in the middle. Stops accepting and closes every relayed
    /// connection on drop.
    pub struct Relay {
        addr: SocketAddr,
        rate: Arc<AtomicU64>,
        stop: Arc<AtomicBool>,
        streams: Arc<Mutex<Vec<TcpStream>>>,
        accept: Option<JoinHandle<()>>,
    }

    impl Relay {
        /// Starts relaying from a fresh 127.0.0.1 port to `target`.
        pub fn start(target: SocketAddr, bytes_per_sec: u64) -> Relay {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
            listener
                .set_nonblocking(true)
                .expect("nonblocking relay listener");
            let addr = listener.local_addr().expect("relay address");
            let rate = Arc::new(AtomicU64::new(bytes_per_sec));
            let stop = Arc::new(AtomicBool::new(false));
            let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
            let (r, s, st) = (rate.clone(), stop.clone(), streams.clone());
            let accept = std::thread::spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            let Ok(server) =
                                TcpStream::connect_timeout(&target, Duration::from_secs(5))
                            else {
                                continue;
                            };
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            if let Ok(mut list) = st.lock() {
                                for x in [&client, &server] {
                                    if let Ok(c) = x.try_clone() {
                                        list.push(c);
                                    }
                                }
                            }
                            let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                                (Ok(a), Ok(b)) => (a, b),
                                _ => continue,
                            };
                            let unlimited = Arc::new(AtomicU64::new(0));
                            std::thread::spawn(move || pump(client, server, unlimited));
                            let r = r.clone();
                            std::thread::spawn(move || pump(s2, c2, r));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Relay {
                addr,
                rate,
                stop,
                streams,
                accept: Some(accept),
            }
        }

        /// Where to connect (`127.0.0.1:PORT`).
        pub fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// Changes the throttle (0 = unlimited).
        pub fn set_rate(&self, bytes_per_sec: u64) {
            self.rate.store(bytes_per_sec, Ordering::SeqCst);
        }

        /// Closes every relayed connection (the relay keeps accepting new ones).
        pub fn cut(&self) {
            if let Ok(mut list) = self.streams.lock() {
                for s in list.drain(..) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }

    fn pump(mut from: TcpStream, mut to: TcpStream, rate: Arc<AtomicU64>) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let r = rate.load(Ordering::SeqCst);
            let want = if r == 0 {
                buf.len()
            } else {
                buf.len().min((r / 50).max(1) as usize)
            };
            let n = match from.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            if r != 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / r as f64));
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    }

    impl Drop for Relay {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            self.cut();
            if let Some(h) = self.accept.take() {
                let _ = h.join();
            }
        }
    }
}
