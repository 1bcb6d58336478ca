//! Configuration fails closed: a bad setting is refused, whole, with a message
//! naming its key, whether it comes from `ivaldi p2p config`, from a
//! hand-written config.json at `p2p start`, or from an edit of the file while
//! the daemon runs; and a running daemon applies a valid edit of the file by
//! itself, without a CLI reload.
//!
//! Real daemons on loopback (127.0.0.1, discovery off or confined to
//! 127.255.255.255 by the harness).

use std::path::PathBuf;
use std::time::Duration;

use ivaldi_tests::Repo;
use ivaldi_tests::p2p::{Daemon, configure_loopback, edit_config_file, p2p_forged, wait_until};
use serde_json::{Value, json};

fn config_path(r: &Repo) -> PathBuf {
    r.dot().join("p2p").join("config.json")
}

/// The configuration file as JSON (it must be valid JSON).
fn config_file(r: &Repo) -> Value {
    let text = std::fs::read_to_string(config_path(r)).expect("read config.json");
    serde_json::from_str(&text).expect("config.json is JSON")
}

/// Replaces config.json the way an editor that saves in place does.
fn write_in_place(r: &Repo, text: &str) {
    std::fs::write(config_path(r), text).expect("write config.json");
}

/// Replaces config.json the way tools that save atomically do.
fn write_by_rename(r: &Repo, text: &str) {
    let path = config_path(r);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).expect("write config.json.tmp");
    std::fs::rename(&tmp, &path).expect("rename over config.json");
}

/// The valid configuration with `key` set to `value`, as text.
fn with(base: &Value, key: &str, value: Value) -> String {
    let mut v = base.clone();
    v[key] = value;
    serde_json::to_string_pretty(&v).expect("serialise")
}

#[test]
fn an_overflowing_heartbeat_interval_is_refused_and_the_daemon_still_starts() {
    let r = p2p_forged();
    configure_loopback(&r, &[]);
    let before = config_file(&r);
    let err = r.fails(&[
        "p2p",
        "config",
        "--heartbeat-interval",
        "18446744073709551615s",
    ]);
    assert!(err.contains("heartbeat_interval"), "{err}");
    assert!(err.contains("nothing was saved"), "{err}");
    assert_eq!(config_file(&r), before, "the file must be untouched");
    // A duration too large to represent at all is refused by the parser.
    let err = r.fails(&[
        "p2p",
        "config",
        "--heartbeat-interval",
        "18446744073709551615d",
    ]);
    assert!(err.contains("heartbeat-interval"), "{err}");
    assert!(err.contains("too large"), "{err}");

    let d = Daemon::start("a", &r);
    assert!(d.is_alive());
    let status = d.status();
    assert_eq!(status["sync_interval"], "30s", "{status}");
    // A second restart works too: nothing was left behind to trip over.
    d.shutdown();
    d.restart();
    assert!(d.is_alive());
}

#[test]
fn every_cli_setting_is_checked_with_a_message_naming_its_key() {
    let r = p2p_forged();
    configure_loopback(&r, &[]);
    let before = config_file(&r);
    for (args, key, also) in [
        (vec!["--sync-interval", "8d"], "sync_interval", "at most"),
        (
            vec!["--handshake-timeout", "2h"],
            "handshake_timeout",
            "at most",
        ),
        (
            vec!["--topology-interval", "0s"],
            "topology_interval",
            "at least",
        ),
        (vec!["--max-peers", "10001"], "max_peers", "at most 10000"),
        (
            vec!["--max-message-size", "2147483648"],
            "max_message_size",
            "at most",
        ),
        (vec!["--upload-rate", "2048G"], "upload_rate", "at most"),
        (
            vec![
                "--allowed-network",
                "127.0.0.0/8",
                "--allowed-network",
                "10.0.0.0/99",
            ],
            "allowed_networks",
            "10.0.0.0/99",
        ),
        (
            vec!["--log-level", "inof"],
            "log_level",
            "did you mean \"info\"?",
        ),
        (
            vec!["--log-level", "ivaldi=loud"],
            "log_level",
            "not a level",
        ),
        (
            vec!["--discovery-addr", "127.255.255.255:0"],
            "discovery_addrs",
            "port 0",
        ),
    ] {
        let mut full = vec!["p2p", "config"];
        full.extend_from_slice(&args);
        let err = r.fails(&full);
        assert!(err.contains(key) && err.contains(also), "{args:?}: {err}");
        assert_eq!(config_file(&r), before, "{args:?} changed the file");
    }
    let err = r.fails(&["p2p", "add-peer", "127.0.0.1:0"]);
    assert!(
        err.contains("known_peers") && err.contains("port 0"),
        "{err}"
    );
    assert_eq!(config_file(&r), before);
    // The largest accepted values are saved.
    r.ok(&[
        "p2p",
        "config",
        "--sync-interval",
        "7d",
        "--max-peers",
        "10000",
    ]);
    assert_eq!(config_file(&r)["max_peers"], 10000);
}

#[test]
fn start_refuses_a_hand_written_config_naming_the_key() {
    let r = p2p_forged();
    configure_loopback(&r, &[]);
    let good = config_file(&r);
    let mut typo = good.as_object().expect("an object").clone();
    let hb = typo
        .remove("heartbeat_interval")
        .expect("heartbeat_interval is saved");
    typo.insert("heartbeat_intervall".into(), hb);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            serde_json::to_string_pretty(&typo).expect("serialise"),
            vec![
                r#"unknown key "heartbeat_intervall""#,
                r#"did you mean "heartbeat_interval"?"#,
            ],
        ),
        (
            with(
                &good,
                "allowed_networks",
                json!(["127.0.0.0/8", "not-a-net"]),
            ),
            vec!["allowed_networks", "not-a-net"],
        ),
        (
            with(&good, "max_peers", json!("many")),
            vec!["max_peers", "invalid type"],
        ),
        (with(&good, "max_peers", json!(-1)), vec!["max_peers", "-1"]),
        (
            with(&good, "known_peers", json!(["127.0.0.1:0"])),
            vec!["known_peers", "port 0"],
        ),
        (
            with(&good, "sync_interval", json!("99999999999999999999s")),
            vec!["sync_interval", "too large"],
        ),
        (
            with(&good, "log_level", json!("debg")),
            vec!["log_level", "did you mean \"debug\"?"],
        ),
        (
            "[1, 2, 3]".into(),
            vec!["must be a JSON object", "not an array"],
        ),
        ("\"info\"".into(), vec!["must be a JSON object"]),
        ("{\"port\": 0,".into(), vec!["not valid JSON"]),
    ];
    for (text, wanted) in cases {
        write_in_place(&r, &text);
        let err = r.fails(&["p2p", "start"]);
        for w in &wanted {
            assert!(
                err.contains(w),
                "start with\n{text}\nsaid: {err}\n(wanted {w:?})"
            );
        }
        assert!(
            !r.dot().join("p2p").join("daemon.pid").exists(),
            "a daemon started with\n{text}"
        );
        // The CLI reports the same reason instead of overwriting the file.
        let err = r.fails(&["p2p", "config", "--sync-interval", "5s"]);
        assert!(err.contains(wanted[0]), "{err}");
        assert_eq!(
            std::fs::read_to_string(config_path(&r)).expect("read"),
            text
        );
    }
    write_in_place(&r, &good.to_string());
    let d = Daemon::start("a", &r);
    assert!(d.is_alive());
}

#[test]
fn a_running_daemon_applies_file_edits_and_keeps_its_config_when_they_are_invalid() {
    let r = p2p_forged();
    configure_loopback(&r, &["--sync-interval", "30s"]);
    let d = Daemon::start("a", &r);
    let good = config_file(&r);
    let log = d.log_path();
    let refusals = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("configuration refused")
            .count()
    };

    let mut typo = good.as_object().expect("an object").clone();
    typo.insert("sync_intervall".into(), json!("5s"));
    let invalid = [
        serde_json::to_string_pretty(&typo).expect("serialise"),
        with(&good, "sync_interval", json!("8d")),
        with(&good, "allowed_networks", json!(["127.0.0.1/33"])),
        with(&good, "heartbeat_interval", json!("18446744073709551615s")),
        "[\"sync_interval\", \"5s\"]".into(),
        "{\"sync_interval\": \"5s\"".into(),
    ];
    for (i, text) in invalid.iter().enumerate() {
        let seen = refusals();
        if i % 2 == 0 {
            write_in_place(&r, text);
        } else {
            write_by_rename(&r, text);
        }
        wait_until(
            Duration::from_secs(5),
            "the daemon to refuse the edited config.json",
            || refusals() > seen,
            || d.diagnostics(),
        );
        assert!(d.is_alive(), "the daemon died on\n{text}");
        let status = d.status();
        assert_eq!(status["sync_interval"], "30s", "after\n{text}\n{status}");
        // `ivaldi p2p config` says what is wrong instead of reloading.
        let err = r.fails(&["p2p", "config", "--sync-interval", "5s"]);
        assert!(err.contains("invalid configuration"), "{err}");
    }
    // The reload `ivaldi p2p config` asks for after saving answers with the
    // reason when the file does not validate (the CLI prints it and fails).
    write_in_place(&r, &with(&good, "max_peers", json!(0)));
    let reply = ivaldi_shell_smol::control::request(
        &d.p2p_dir().join("control.sock"),
        &ivaldi_shell_smol::control::Request::ReloadConfig,
        Some(Duration::from_secs(10)),
        |_| {},
    )
    .expect("the daemon answers");
    let error = reply.error.unwrap_or_default();
    assert!(!reply.ok, "{error}");
    assert!(
        error.contains("keeps its old one") && error.contains("max_peers"),
        "{error}"
    );
    assert_eq!(d.status()["sync_interval"], "30s");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains(r#"did you mean "sync_interval"?"#), "{text}");
    assert!(text.contains("allowed_networks"), "{text}");

    // A valid edit is picked up without any CLI reload.
    write_by_rename(&r, &with(&good, "sync_interval", json!("7s")));
    let took = wait_until(
        Duration::from_secs(5),
        "the daemon to apply the edited sync_interval",
        || d.status()["sync_interval"] == "7s",
        || d.diagnostics(),
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    write_in_place(&r, &with(&good, "sync_interval", json!("9s")));
    let took = wait_until(
        Duration::from_secs(5),
        "the daemon to apply a second edit",
        || d.status()["sync_interval"] == "9s",
        || d.diagnostics(),
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");

    // The CLI still works through the same path, and the file edit it makes
    // is not applied a second time.
    r.ok(&["p2p", "config", "--sync-interval", "11s"]);
    assert_eq!(d.status()["sync_interval"], "11s");
    edit_config_file(&r, |c| {
        c.insert("auto_sync".into(), json!(false));
    });
    wait_until(
        Duration::from_secs(5),
        "auto_sync off",
        || d.status()["auto_sync"] == false,
        || d.diagnostics(),
    );
    assert!(d.is_alive());
}

/// `ivaldi p2p config get/set/unset KEY`: any setting by its config.json
/// name, checked as the file is, and applied to a running daemon.
#[test]
fn any_setting_is_read_and_changed_by_name_through_the_file_checks() {
    let r = p2p_forged();
    configure_loopback(&r, &[]);
    let d = Daemon::start("a", &r);

    let out = r.ok(&["p2p", "config", "set", "sync_interval", "7s"]);
    assert!(out.contains("applied to the running daemon"), "{out}");
    assert_eq!(d.status()["sync_interval"], "7s");
    assert_eq!(
        r.ok(&["p2p", "config", "get", "sync_interval"]).trim(),
        "7s"
    );
    assert_eq!(config_file(&r)["sync_interval"], "7s");

    // A setting with no flag of its own, a list, and a map entry.
    r.ok(&["p2p", "config", "set", "max_new_timelines_per_sync", "12"]);
    assert_eq!(config_file(&r)["max_new_timelines_per_sync"], 12);
    r.ok(&[
        "p2p",
        "config",
        "set",
        "known_peers",
        "127.0.0.1:1,127.0.0.1:2",
    ]);
    assert_eq!(
        config_file(&r)["known_peers"],
        json!(["127.0.0.1:1", "127.0.0.1:2"])
    );
    r.ok(&[
        "p2p",
        "config",
        "set",
        "timeline_strategies.release/*",
        "prefer_local",
    ]);
    assert_eq!(
        config_file(&r)["timeline_strategies"],
        json!({"release/*": "prefer_local"})
    );
    r.ok(&["p2p", "config", "unset", "timeline_strategies.release/*"]);
    assert_eq!(config_file(&r)["timeline_strategies"], json!({}));

    // Refused like the file refuses it, and nothing is written.
    let before = config_file(&r);
    let err = r.fails(&["p2p", "config", "set", "sync_intervall", "5s"]);
    assert!(err.contains(r#"did you mean "sync_interval"?"#), "{err}");
    let err = r.fails(&["p2p", "config", "set", "max_peers", "0"]);
    assert!(err.contains("max_peers"), "{err}");
    let err = r.fails(&["p2p", "config", "set", "port", "many"]);
    assert!(err.contains("port"), "{err}");
    assert_eq!(config_file(&r), before);

    r.ok(&["p2p", "config", "unset", "sync_interval"]);
    assert_eq!(d.status()["sync_interval"], "30s");
}
