//! `ivaldi p2p trust | untrust | invite | pending | join`: who this
//! repository exchanges data with (see `ivaldi_core::trust`).

use std::time::Duration;

use clap::Args;
use ivaldi_core::access::Access;
use ivaldi_core::config::{format_duration, parse_duration};
use ivaldi_core::trust::{Ticket, TrustedPeer};
use ivaldi_shell_smol::control::Request;
use ivaldi_shell_smol::control::replies::{Done, Pending, Status};
use ivaldi_shell_smol::daemon::{P2pPaths, invites, setup};
use serde_json::{Value, json};

use crate::p2p::{applied, ask, edit_config, node_id_arg, reload_if_running, setup_err};
use crate::{Failed, fail, print_json};

/// Longest an invitation may stay open.
const MAX_INVITE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Args, Debug)]
pub struct AccessFlags {
    /// The peer may fetch but not move timelines.
    #[arg(long, conflicts_with = "write")]
    read: bool,
    /// The peer may fetch and move timelines (the default).
    #[arg(long)]
    write: bool,
}

impl AccessFlags {
    fn access(&self) -> Access {
        if self.read {
            Access::Read
        } else {
            Access::Write
        }
    }
}

#[derive(Args, Debug)]
pub struct InviteArgs {
    #[command(flatten)]
    access: AccessFlags,
    /// How long the ticket stays valid (`30m`, `1h`, `2d`; at most 30 days).
    #[arg(long, default_value = "1h")]
    expires: String,
    /// How many nodes may join with the ticket.
    #[arg(long, default_value_t = 1)]
    uses: u32,
    /// List the open invitations instead.
    #[arg(long, conflicts_with = "revoke")]
    list: bool,
    /// Revoke an open invitation (its id, or a unique prefix).
    #[arg(long)]
    revoke: Option<String>,
    /// Address to put in the ticket instead of the daemon's own (repeatable),
    /// e.g. the address of this machine on the VPN.
    #[arg(long = "addr")]
    addrs: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub fn trust(paths: &P2pPaths, node_id: &str, flags: &AccessFlags) -> Result<(), Failed> {
    let id = node_id_arg(node_id)?;
    let access = flags.access();
    edit_config(paths, |c| {
        c.node.access.trusted_peers.retain(|t| t.id != id);
        c.node.access.trusted_peers.push(TrustedPeer { id, access });
        Ok(())
    })?;
    let what = match access {
        Access::Read => "read only",
        _ => "read and write",
    };
    applied(paths, &format!("Trusted {id} ({what})"))
}

pub fn untrust(paths: &P2pPaths, node_id: &str) -> Result<(), Failed> {
    let id = node_id_arg(node_id)?;
    let mut found = false;
    edit_config(paths, |c| {
        let before = c.node.access.trusted_peers.len();
        c.node.access.trusted_peers.retain(|t| t.id != id);
        found = before != c.node.access.trusted_peers.len();
        Ok(())
    })?;
    if !found {
        return Err(fail(format!("{id} is not trusted")));
    }
    applied(
        paths,
        &format!("No longer trusting {id}; its connections are closed"),
    )
}

pub fn invite(paths: &P2pPaths, a: &InviteArgs) -> Result<(), Failed> {
    if a.list {
        return list_invites(paths, a.json);
    }
    if let Some(id) = &a.revoke {
        let gone = invites::revoke(paths, id).map_err(fail)?;
        reload_if_running(paths)?;
        println!("Revoked invitation {}", gone.id);
        return Ok(());
    }
    let ttl = parse_duration(&a.expires).map_err(|e| fail(format!("--expires: {e}")))?;
    if ttl.is_zero() || ttl > MAX_INVITE_TTL {
        return Err(fail("--expires: must be between 1s and 30d"));
    }
    if a.uses == 0 || a.uses > 1000 {
        return Err(fail("--uses: must be between 1 and 1000"));
    }
    let addrs = ticket_addrs(paths, &a.addrs)?;
    let repo_id = ivaldi_shell_smol::repo::Repository::open(&paths.root)?
        .info()?
        .id;
    let kp = setup::load_or_create_identity(paths).map_err(setup_err)?;
    let (stored, secret) = invites::create(paths, a.access.access(), ttl, a.uses).map_err(fail)?;
    let ticket = Ticket {
        node: kp.public,
        addrs,
        repo: repo_id,
        secret,
    };
    let running = reload_if_running(paths)?;
    let text = ticket.encode();
    if a.json {
        print_json(&json!({
            "ticket": text,
            "id": stored.id,
            "access": stored.access,
            "expires_unix": stored.expires_unix,
            "uses": stored.uses,
            "addrs": ticket.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "daemon_running": running,
        }));
        return Ok(());
    }
    println!("{text}");
    println!(
        "Invitation {} for {} access, valid for {}, {} use(s).",
        stored.id,
        if stored.access == Access::Read {
            "read"
        } else {
            "write"
        },
        format_duration(ttl),
        stored.uses
    );
    println!(
        "On the other machine: ivaldi p2p clone TICKET [DIR]   (or, in a clone: ivaldi p2p join TICKET)"
    );
    if !running {
        println!("Note: start the daemon (`ivaldi p2p start`) so the ticket can be redeemed.");
    }
    Ok(())
}

/// Where the newcomer should dial: the `--addr`s given, else the running
/// daemon's address (its bind address, or loopback when it binds all).
fn ticket_addrs(paths: &P2pPaths, given: &[String]) -> Result<Vec<std::net::SocketAddr>, Failed> {
    if !given.is_empty() {
        return given
            .iter()
            .map(|a| {
                a.parse::<std::net::SocketAddr>()
                    .ok()
                    .filter(|s| s.port() != 0)
                    .ok_or_else(|| fail(format!("--addr: {a:?} is not an ip:port address")))
            })
            .collect();
    }
    let cfg = setup::effective_config(paths).map_err(setup_err)?;
    let port = match ask::<Status>(paths, &Request::Status) {
        Ok(v) => v.port,
        Err(_) => cfg.node.connections.port,
    };
    if port == 0 {
        return Err(fail(
            "the daemon's port is not known yet: start the daemon first, or give --addr IP:PORT",
        ));
    }
    let ip: std::net::IpAddr = cfg.daemon.bind_addr.parse().map_err(|_| {
        fail(format!(
            "bind_addr {:?} is not an IP address",
            cfg.daemon.bind_addr
        ))
    })?;
    let ip = if ip.is_unspecified() {
        eprintln!(
            "note: the daemon listens on every interface; the ticket names 127.0.0.1. Give --addr IP:PORT with this machine's LAN or VPN address for another machine."
        );
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        ip
    };
    Ok(vec![std::net::SocketAddr::new(ip, port)])
}

fn list_invites(paths: &P2pPaths, json_out: bool) -> Result<(), Failed> {
    let mut all = invites::load(paths).map_err(fail)?;
    let now = invites::unix_now();
    invites::prune(&mut all, now);
    if json_out {
        let list: Vec<Value> = all
            .iter()
            .map(|i| {
                json!({
                    "id": i.id,
                    "access": i.access,
                    "uses": i.uses,
                    "expires_unix": i.expires_unix,
                    "expires_in_secs": i.expires_unix.saturating_sub(now),
                })
            })
            .collect();
        print_json(&json!({ "invites": list }));
        return Ok(());
    }
    if all.is_empty() {
        println!("No open invitations");
    }
    for i in &all {
        println!(
            "{}  {}  {} use(s) left  expires in {}",
            i.id,
            if i.access == Access::Read {
                "read "
            } else {
                "write"
            },
            i.uses,
            format_duration(Duration::from_secs(i.expires_unix.saturating_sub(now)))
        );
    }
    Ok(())
}

pub fn pending(paths: &P2pPaths, json_out: bool) -> Result<(), Failed> {
    let v: Pending = ask(paths, &Request::Pending)?;
    if json_out {
        print_json(&v);
        return Ok(());
    }
    if v.pending.is_empty() {
        println!("No node was refused lately");
    }
    for p in v.pending {
        let id = p.id;
        println!(
            "{id}  from {}  {} attempt(s), last {} s ago",
            p.addr,
            p.attempts,
            p.last_seen_ago_ms / 1000
        );
        println!("    trust it with: ivaldi p2p trust {id}");
    }
    Ok(())
}

/// `join TICKET` in an existing clone of the same repository.
pub fn join(paths: &P2pPaths, text: &str) -> Result<(), Failed> {
    let ticket = Ticket::parse(text).map_err(fail)?;
    let here = ivaldi_shell_smol::repo::Repository::open(&paths.root)?
        .info()?
        .id;
    if here != ticket.repo {
        return Err(fail(format!(
            "the ticket is for repository {}, this is {here}; use `ivaldi p2p clone TICKET DIR` for a new clone",
            ticket.repo
        )));
    }
    let inviter = ticket.node_id();
    setup::edit_config(paths, |c| {
        if !c.node.access.trusted_peers.iter().any(|t| t.id == inviter) {
            c.node
                .access
                .trusted_peers
                .push(TrustedPeer::write(inviter));
        }
    })
    .map_err(setup_err)?;
    if !reload_if_running(paths)? {
        return Err(fail(
            "no daemon is running for this repository; start it with `ivaldi p2p start`, then run join again",
        ));
    }
    let v: Done = ask(
        paths,
        &Request::Join {
            ticket: text.trim().to_owned(),
        },
    )?;
    // Remember where the inviter is only now: dialled as a known peer
    // before the invitation was redeemed, it would have refused us.
    setup::edit_config(paths, |c| {
        for a in &ticket.addrs {
            let a = a.to_string();
            if !c.node.connections.known_peers.contains(&a) {
                c.node.connections.known_peers.push(a);
            }
        }
    })
    .map_err(setup_err)?;
    reload_if_running(paths)?;
    println!("{}", v.message);
    Ok(())
}
