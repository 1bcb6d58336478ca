//! Each conflict strategy with two real daemons on loopback: each side seals on
//! its own while they are apart, then they connect and sync. The tests check the
//! heads, the kept and tracking names, and the working trees.

use std::time::Duration;

use ivaldi_tests::p2p::{Daemon, configure_loopback, p2p_empty, p2p_forged, wait_until};
use ivaldi_tests::{Repo, parents_of};
use serde_json::Value;

const BASE: &str = "one\ntwo\nthree\nfour\nfive\n";

/// A and B share a base seal, then each makes a seal of its own while apart.
/// A edits the first line; B edits the last (or, with `clash`, the first too).
/// B seals later, so B's head is the newer one. Returns (a, b, base, ha, hb).
fn diverged(strategy: &str, clash: bool) -> (Repo, Repo, String, String, String) {
    let a = p2p_forged();
    a.write("shared.txt", BASE);
    let base = a.seal("base");
    configure_loopback(&a, &["--conflict-strategy", strategy]);
    let b = p2p_empty();
    {
        let da = Daemon::start("A (for the clone)", &a);
        let dir = b.path().to_str().expect("UTF-8 path").to_owned();
        b.ok(&["p2p", "clone", &da.invite(), &dir]);
    }
    configure_loopback(&b, &["--conflict-strategy", strategy]);
    a.write("shared.txt", BASE.replace("one", "ONE"));
    a.write("a.txt", "from a\n");
    let ha = a.seal("a's work");
    b.set_clock(2_000_000_000);
    if clash {
        b.write("shared.txt", BASE.replace("one", "uno"));
    } else {
        b.write("shared.txt", BASE.replace("five", "FIVE"));
    }
    b.write("b.txt", "from b\n");
    let hb = b.seal("b's work");
    (a, b, base, ha, hb)
}

fn connect<'r>(a: &'r Repo, b: &'r Repo) -> (Daemon<'r>, Daemon<'r>) {
    let da = Daemon::start("A", a);
    let db = Daemon::start("B", b);
    b.ok(&["p2p", "connect", "127.0.0.1", &da.port().to_string()]);
    (da, db)
}

fn timelines(r: &Repo) -> Value {
    r.json(&["timeline", "list", "--all", "--json"])
}

/// Kept (replaced) heads: `kept/...` timelines, which sync like any timeline,
/// and any local kept refs.
fn kept(r: &Repo) -> Vec<String> {
    let t = timelines(r);
    let mut out: Vec<String> = t["timelines"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter(|e| e["name"].as_str().is_some_and(|n| n.starts_with("kept/")))
                .filter_map(|e| e["head"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.extend(
        t["kept"]
            .as_array()
            .map(|k| {
                k.iter()
                    .filter_map(|e| e["head"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    );
    out
}

fn tracking(r: &Repo) -> Vec<String> {
    timelines(r)["tracking"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter_map(|e| e["head"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
fn wait_heads(a: &Repo, b: &Repo, what: &str, ok: impl Fn(Option<String>, Option<String>) -> bool) {
    wait_until(
        Duration::from_secs(20),
        what,
        || ok(a.head_of("main"), b.head_of("main")),
        || {
            format!(
                "A main = {:?}, B main = {:?}",
                a.head_of("main"),
                b.head_of("main")
            )
        },
    );
}

fn conflicts(r: &Repo) -> Vec<Value> {
    r.json(&["p2p", "conflicts", "--json"])["conflicts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn manual_keeps_both_heads_until_the_user_resolves() {
    let (a, b, _, ha, hb) = diverged("manual", false);
    let (_da, _db) = connect(&a, &b);
    wait_until(
        Duration::from_secs(20),
        "both daemons to list the conflict",
        || conflicts(&a).len() == 1 && conflicts(&b).len() == 1,
        || format!("A: {:?}\nB: {:?}", conflicts(&a), conflicts(&b)),
    );
    assert_eq!(a.head_of("main").as_deref(), Some(ha.as_str()));
    assert_eq!(b.head_of("main").as_deref(), Some(hb.as_str()));
    assert!(
        tracking(&b).contains(&ha),
        "B keeps A's head under A's tracking name"
    );
    assert!(tracking(&a).contains(&hb));
    // The working trees are untouched.
    assert!(!b.exists("a.txt") && !a.exists("b.txt"));

    // The user on B merges; A fast-forwards to the merge.
    let out = b.ok(&["p2p", "resolve", "main", "--take", "merge", "--json"]);
    let v: Value = serde_json::from_str(&out).expect("resolve --json");
    let merged = v["head"].as_str().expect("a clean merge").to_owned();
    let seal = b.json(&["show", &merged, "--json"]);
    let mut parents = parents_of(&seal);
    parents.sort();
    let mut want = vec![ha.clone(), hb.clone()];
    want.sort();
    assert_eq!(parents, want);
    wait_heads(&a, &b, "A to fast-forward to B's merge", |x, _| {
        x.as_deref() == Some(merged.as_str())
    });
    a.ok(&["update"]);
    for r in [&a, &b] {
        assert_eq!(
            r.read_string("shared.txt"),
            BASE.replace("one", "ONE").replace("five", "FIVE")
        );
        assert!(r.exists("a.txt") && r.exists("b.txt"));
    }
    wait_until(
        Duration::from_secs(20),
        "the conflict to clear after the resolution",
        || conflicts(&a).is_empty() && conflicts(&b).is_empty(),
        || format!("A: {:?}\nB: {:?}", conflicts(&a), conflicts(&b)),
    );
}

#[test]
fn auto_merge_converges_on_one_merge_seal() {
    let (a, b, _, ha, hb) = diverged("auto_merge", false);
    let (_da, _db) = connect(&a, &b);
    wait_heads(
        &a,
        &b,
        "both heads to become the same merge seal",
        |x, y| {
            x.is_some()
                && x == y
                && x.as_deref() != Some(ha.as_str())
                && x.as_deref() != Some(hb.as_str())
        },
    );
    let head = a.head_of("main").expect("a head");
    let seal = a.json(&["show", &head, "--json"]);
    let mut parents = parents_of(&seal);
    parents.sort();
    let mut want = vec![ha, hb];
    want.sort();
    assert_eq!(parents, want, "the merge seal has both heads as parents");
    for r in [&a, &b] {
        let st = r.json(&["status", "--json"]);
        assert!(
            st["arrived"].is_object(),
            "status says the timeline moved: {st}"
        );
        r.ok(&["update"]);
        assert_eq!(
            r.read_string("shared.txt"),
            BASE.replace("one", "ONE").replace("five", "FIVE")
        );
        assert!(r.exists("a.txt") && r.exists("b.txt"));
        r.ok(&["verify"]);
    }
}

#[test]
fn auto_merge_with_a_clash_falls_back_to_manual() {
    let (a, b, _, ha, hb) = diverged("auto_merge", true);
    let (_da, _db) = connect(&a, &b);
    wait_until(
        Duration::from_secs(20),
        "the unclean merge to be recorded as a conflict",
        || !conflicts(&a).is_empty() && !conflicts(&b).is_empty(),
        || format!("A: {:?}\nB: {:?}", conflicts(&a), conflicts(&b)),
    );
    assert_eq!(a.head_of("main").as_deref(), Some(ha.as_str()));
    assert_eq!(b.head_of("main").as_deref(), Some(hb.as_str()));
}

#[test]
fn prefer_remote_agrees_on_the_newer_head_and_keeps_the_other() {
    let (a, b, _, ha, hb) = diverged("prefer_remote", true);
    let (_da, _db) = connect(&a, &b);
    wait_heads(&a, &b, "both on B's (newer) head", |x, y| {
        x.as_deref() == Some(hb.as_str()) && y.as_deref() == Some(hb.as_str())
    });
    assert!(
        kept(&a).contains(&ha),
        "A's replaced head is kept: {}",
        timelines(&a)
    );
    let st = a.json(&["status", "--json"]);
    assert_eq!(st["arrived"]["fast_forward"], Value::Bool(false), "{st}");
    a.ok(&["update"]);
    assert_eq!(a.read_string("shared.txt"), BASE.replace("one", "uno"));
    assert!(a.exists("b.txt") && !a.exists("a.txt"));
    // A's work can be brought back from the kept name.
    a.ok(&["timeline", "create", "restored", "--from", &ha[..12]]);
    assert_eq!(a.head_of("restored").as_deref(), Some(ha.as_str()));
}

#[test]
fn prefer_local_agrees_on_the_newer_head_and_nothing_is_lost() {
    let (a, b, _, ha, hb) = diverged("prefer_local", true);
    let (_da, _db) = connect(&a, &b);
    wait_heads(&a, &b, "both on B's (newer) head", |x, y| {
        x.as_deref() == Some(hb.as_str()) && y.as_deref() == Some(hb.as_str())
    });
    assert!(
        kept(&a).contains(&ha),
        "A's head is kept: {}",
        timelines(&a)
    );
    a.ok(&["update"]);
    assert_eq!(a.read_string("shared.txt"), BASE.replace("one", "uno"));
    a.ok(&["verify"]);
    b.ok(&["verify"]);
}
