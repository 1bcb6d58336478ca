//! Three hosts on one LAN, each in a network namespace the test creates: a
//! "switch" namespace holds a bridge, and each host namespace has one veth
//! into it. Daemons run inside the host namespaces with the default ports
//! (9090/9091; every namespace has its own), find each other by discovery
//! broadcasts to the bridge subnet, and a seal made on one host reaches the
//! others with no peer configured anywhere.
//!
//! Nothing touches the machine's real interfaces: all addresses live inside the
//! test's own namespaces (the bridge is not even in the root namespace), every
//! name carries a random test id, and everything is torn down on drop. Without
//! the privileges to create namespaces the test prints why and returns.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ivaldi_tests::p2p::{DISCOVERY_ENV, Daemon, Wrapper, in_netns, p2p_empty, wait_until};
use ivaldi_tests::{Repo, describe_output};

const SUBNET: &str = "10.213.0";
const BROADCAST: &str = "10.213.0.255";

fn ip(args: &[&str]) -> std::io::Result<Output> {
    Command::new("ip").args(args).stdin(Stdio::null()).output()
}

#[track_caller]
fn ip_ok(args: &[&str]) {
    let out = ip(args).unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {}\n{}",
        args.join(" "),
        describe_output(&out)
    );
}

/// Namespaces created by this test; deleted on drop.
struct Lan {
    names: Vec<String>,
}

impl Lan {
    /// The switch and `hosts` host namespaces, or why they cannot be made.
    fn create(id: &str, hosts: usize) -> Result<Lan, String> {
        let mut lan = Lan { names: Vec::new() };
        let sw = format!("{id}sw");
        match ip(&["netns", "add", &sw]) {
            Ok(o) if o.status.success() => lan.names.push(sw.clone()),
            Ok(o) => return Err(format!("`ip netns add` failed: {}", describe_output(&o))),
            Err(e) => return Err(format!("cannot run `ip`: {e}")),
        }
        ip_ok(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &sw, "link", "set", "br0", "up"]);
        for i in 1..=hosts {
            let h = lan.host(id, i);
            ip_ok(&["netns", "add", &h]);
            lan.names.push(h.clone());
            let v = format!("v{i}");
            ip_ok(&[
                "-n", &sw, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &h,
            ]);
            ip_ok(&["-n", &sw, "link", "set", &v, "master", "br0"]);
            ip_ok(&["-n", &sw, "link", "set", &v, "up"]);
            let addr = format!("{SUBNET}.{i}/24");
            ip_ok(&["-n", &h, "addr", "add", &addr, "brd", "+", "dev", "eth0"]);
            ip_ok(&["-n", &h, "link", "set", "eth0", "up"]);
            ip_ok(&["-n", &h, "link", "set", "lo", "up"]);
        }
        Ok(lan)
    }

    fn host(&self, id: &str, i: usize) -> String {
        format!("{id}h{i}")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            if let Ok(o) = ip(&["netns", "del", n])
                && !o.status.success()
            {
                eprintln!("cannot delete netns {n}: {}", describe_output(&o));
            }
        }
    }
}

/// A repository whose commands announce discovery on the bridge subnet.
fn lan_repo() -> Repo {
    let r = p2p_empty();
    r.set_env(DISCOVERY_ENV, BROADCAST);
    r
}

/// Runs `ivaldi ARGS` for `r` inside namespace `ns`.
#[track_caller]
fn ok_in(ns: &str, r: &Repo, args: &[&str]) -> String {
    let out = in_netns(ns, &r.command(args))
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} ivaldi {args:?}: {e}"));
    assert!(
        out.status.success(),
        "`ivaldi {}` in {ns} failed\n{}",
        args.join(" "),
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wrapper(ns: &str) -> Option<Wrapper> {
    let ns = ns.to_owned();
    Some(Box::new(move |cmd: Command| in_netns(&ns, &cmd)))
}

/// Settings for a host: default ports, listening on its LAN address only,
/// discovery every second.
fn configure_host(r: &Repo, i: usize) {
    r.ok(&[
        "p2p",
        "config",
        "--bind-addr",
        &format!("{SUBNET}.{i}"),
        "--discovery",
        "on",
        "--discovery-addr",
        BROADCAST,
        "--discovery-interval",
        "1s",
        "--sync-interval",
        "1s",
    ]);
}

#[test]
fn network_namespace_discovery_and_sync() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Namespace names are global: a short random id (interface names are per
    // namespace, so they need none).
    let id = format!(
        "ivt{:x}",
        (std::process::id() << 12) ^ (nanos >> 8) & 0xffffff
    );
    let lan = match Lan::create(&id, 3) {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipping network_namespace_discovery_and_sync: {why}");
            return;
        }
    };
    let hosts: Vec<String> = (1..=3).map(|i| lan.host(&id, i)).collect();

    let a = lan_repo();
    a.ok(&["forge"]);
    a.write("lan.txt", "on a LAN\n");
    a.seal("first");
    configure_host(&a, 1);
    let da = Daemon::start_via("A@h1", &a, wrapper(&hosts[0]));
    assert_eq!(
        da.port(),
        9090,
        "A listens on the default port inside its namespace"
    );

    // Clone across the bridge: proves the LAN works before discovery is asked to.
    let b = lan_repo();
    let c = lan_repo();
    let origin = format!("{SUBNET}.1:9090");
    for (r, ns) in [(&b, &hosts[1]), (&c, &hosts[2])] {
        let dir = r.path().to_str().expect("UTF-8").to_owned();
        // Joined by invitation, as a user would: the ticket names A's
        // address on the bridge.
        let ticket = da.invite();
        let out = ok_in(ns, r, &["p2p", "clone", &ticket, &dir]);
        assert!(out.contains("Cloned repository"), "{out}");
        // Discovery, not the remembered address, must bring them back.
        r.ok(&["p2p", "remove-peer", &origin]);
    }
    configure_host(&b, 2);
    configure_host(&c, 3);
    let db = Daemon::start_via("B@h2", &b, wrapper(&hosts[1]));
    let dc = Daemon::start_via("C@h3", &c, wrapper(&hosts[2]));
    for d in [&da, &db, &dc] {
        assert_eq!(
            d.status()["discovery"]["enabled"],
            true,
            "{}",
            d.diagnostics()
        );
    }

    a.write("lan.txt", "on a LAN, sealed on h1\n");
    let head = a.seal("second, on h1");
    let started = Instant::now();
    for (r, name) in [(&b, "B on h2"), (&c, "C on h3")] {
        wait_until(
            Duration::from_secs(15),
            &format!("A's seal to reach {name} by discovery on the bridge"),
            || r.head_of("main").as_deref() == Some(head.as_str()),
            || {
                [&da, &db, &dc]
                    .iter()
                    .map(|d| d.repo().ok(&["p2p", "discovered", "--json"]))
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        );
    }
    eprintln!("the seal crossed the LAN in {:?}", started.elapsed());
    c.ok(&["update"]);
    c.assert_tree(&a.snapshot_tree(), "C after update");
    // Drop order tears down daemons, then repositories, then the namespaces.
}
