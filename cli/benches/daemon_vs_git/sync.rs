//! The sync measurements shared by the cases.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::IVALDI;
use crate::data::apply_edits;
use crate::procs::{
    Daemon, GitDaemon, children_cpu, copy_dir, git, ivaldi, ivaldi_at, ivaldi_head, proc_cpu, run,
    timed, vm_hwm_kib, wait_head,
};
use crate::proxy::Proxy;

/// Full sync into an empty repository with the source's id: its daemon connects
/// to `port` and auto-sync pulls everything. Returns the wall time from the
/// `connect` command to the head file naming `head`, the CPU of both daemons and
/// the command, and the new daemon's final status.
pub fn ivaldi_full_sync(
    dst: &Path,
    id: &str,
    src: &Daemon,
    port: u16,
    head: &str,
    name: &str,
    logs: &Path,
) -> (Duration, Duration, Value) {
    run(Command::new(IVALDI).arg("forge").arg(dst));
    fs::write(
        dst.join(".ivaldi").join("repo.json"),
        format!("{{\"id\":\"{id}\"}}\n"),
    )
    .expect("write repo.json");
    ivaldi_pull_into(dst, src, port, head, name, logs)
}

/// Starts a daemon with auto-sync on in `dst` (a repository with the source's
/// id), connects it to `port` and waits until its `main` names `head`. Returns
/// the wall time from the `connect` command, the CPU of both daemons and the
/// command, and the new daemon's final status.
pub fn ivaldi_pull_into(
    dst: &Path,
    src: &Daemon,
    port: u16,
    head: &str,
    name: &str,
    logs: &Path,
) -> (Duration, Duration, Value) {
    let d = Daemon::start(dst, name, true, logs);
    let (cpu_s0, cpu_d0, cpu_c0) = (
        proc_cpu(src.pid(), false),
        proc_cpu(d.pid(), false),
        children_cpu(),
    );
    let t = Instant::now();
    d.connect(src, port);
    let wall = wait_head(dst, head, Duration::from_secs(900)) - t;
    let cpu = proc_cpu(src.pid(), false).saturating_sub(cpu_s0)
        + proc_cpu(d.pid(), false).saturating_sub(cpu_d0)
        + children_cpu().saturating_sub(cpu_c0);
    std::thread::sleep(Duration::from_millis(50)); // the clone's announcement
    let st = d.status();
    (wall, cpu, st)
}

/// `git clone [--bare]` from the git daemon (or a proxy) at `port`; wall time
/// and CPU of both sides.
pub fn git_clone(
    dir: &Path,
    port: u16,
    dst: &Path,
    bare: bool,
    gd: &GitDaemon,
) -> (Duration, Duration) {
    let url = format!("git://127.0.0.1:{port}/git");
    let (cpu_g0, cpu_c0) = (gd.children_cpu(), children_cpu());
    let mut c = git(dir);
    c.args(["clone", "-q"]);
    if bare {
        c.arg("--bare");
    }
    let wall = timed(c.arg(&url).arg(dst));
    let cpu = gd.children_cpu().saturating_sub(cpu_g0) + children_cpu().saturating_sub(cpu_c0);
    (wall, cpu)
}

/// Seals `edits` on the source, waits until the clone's daemon has heard of the
/// new head, then times `ivaldi p2p sync` on the clone. Returns the wall time and
/// the CPU of both daemons and the command, and where `proxy`'s log stood
/// when the sync started.
pub fn ivaldi_one_seal(
    src: &Path,
    ds: &Daemon,
    dd: &Daemon,
    edits: &[(String, Vec<u8>)],
    t: i64,
    proxy: Option<&Proxy>,
) -> (Duration, Duration, usize) {
    let updates0 = dd.status()["stats"]["messages_in"]["timeline_update"]
        .as_u64()
        .unwrap_or(0);
    apply_edits(src, edits);
    run(ivaldi_at(src, t).args(["seal", "-m", "one seal"]));
    let new = ivaldi_head(src).expect("source head");
    dd.wait_messages_in("timeline_update", updates0 + 1);
    let mark = proxy.map_or(0, Proxy::mark);
    let (cpu_s0, cpu_d0, cpu_c0) = (
        proc_cpu(ds.pid(), false),
        proc_cpu(dd.pid(), false),
        children_cpu(),
    );
    let wall = timed(ivaldi(&dd.dir).args(["p2p", "sync"]));
    let cpu = proc_cpu(ds.pid(), false).saturating_sub(cpu_s0)
        + proc_cpu(dd.pid(), false).saturating_sub(cpu_d0)
        + children_cpu().saturating_sub(cpu_c0);
    assert_eq!(
        ivaldi_head(&dd.dir).as_deref(),
        Some(new.as_str()),
        "synced head"
    );
    (wall, cpu, mark)
}

pub struct BigSample {
    pub wall: Duration,
    pub cpu_src: Duration,
    pub cpu_dst: Duration,
    pub hwm_src: u64,
    pub hwm_dst: u64,
    pub hwm_src0: u64,
    pub hwm_dst0: u64,
    pub bytes_in: f64,
}

/// Case 3: fresh daemons on the source (the big file already sealed) and on a
/// copy of the synced clone; connected, then `ivaldi p2p sync` on the clone.
pub fn ivaldi_big_sync(
    src: &Path,
    synced: &Path,
    dst: &Path,
    encryption: bool,
    rep: usize,
    logs: &Path,
) -> BigSample {
    copy_dir(synced, dst);
    let enc = ["--encryption", if encryption { "on" } else { "off" }];
    let tag = if encryption { "" } else { "-plain" };
    let new = ivaldi_head(src).expect("source head");
    let ds = Daemon::start_with(src, &format!("c3-src{rep}{tag}"), true, &enc, logs);
    let dd = Daemon::start_with(dst, &format!("c3-dst{rep}{tag}"), false, &enc, logs);
    dd.connect(&ds, ds.port);
    std::thread::sleep(Duration::from_millis(200));
    let (hwm_src0, hwm_dst0) = (vm_hwm_kib(ds.pid()), vm_hwm_kib(dd.pid()));
    let st0 = dd.status();
    let (cpu_s0, cpu_d0) = (proc_cpu(ds.pid(), false), proc_cpu(dd.pid(), false));
    let wall = timed(ivaldi(dst).args(["p2p", "sync"]));
    let (cpu_src, cpu_dst) = (
        proc_cpu(ds.pid(), false).saturating_sub(cpu_s0),
        proc_cpu(dd.pid(), false).saturating_sub(cpu_d0),
    );
    assert_eq!(ivaldi_head(dst).as_deref(), Some(new.as_str()), "big head");
    let (hwm_src, hwm_dst) = (vm_hwm_kib(ds.pid()), vm_hwm_kib(dd.pid()));
    let st1 = dd.status();
    assert_eq!(
        st1["peers"][0]["encrypted"].as_bool().unwrap_or(encryption),
        encryption,
        "encryption setting not in effect"
    );
    let bytes_in = st1["stats"]["bytes_in"].as_f64().unwrap_or(0.0)
        - st0["stats"]["bytes_in"].as_f64().unwrap_or(0.0);
    BigSample {
        wall,
        cpu_src,
        cpu_dst,
        hwm_src,
        hwm_dst,
        hwm_src0,
        hwm_dst0,
        bytes_in,
    }
}
