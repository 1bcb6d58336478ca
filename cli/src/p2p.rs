//! `ivaldi p2p ...`: the daemon's command line. Commands that read state ask the
//! running daemon over its control socket; configuration commands edit
//! `.ivaldi/p2p/config.json` and tell a running daemon to reload.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use ivaldi_core::config::{ConflictStrategy, parse_duration};
use ivaldi_shell_smol::config::ConfigFile;
use ivaldi_shell_smol::control::replies::{
    self, Conflicts, Count, Discovered, Done, PeerView, Peers, Route, Status, SyncStatus,
    TopologyReply,
};
use ivaldi_shell_smol::control::{self, ControlError, Line, Reply, Request};
use ivaldi_shell_smol::daemon::{self, P2pPaths, setup};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Failed, fail, print_json};

#[derive(Subcommand, Debug)]
pub enum P2pCmd {
    /// Start the daemon for this repository (in the background unless --foreground).
    Start {
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the daemon gracefully.
    Stop,
    /// Show the daemon's state: peers, traffic, syncs, conflicts, discovery, events.
    Status(JsonFlag),
    /// List connected peers.
    Peers {
        #[arg(long)]
        json: bool,
        /// Every connection with its state machine (handshake phase, sync, queues).
        #[arg(long)]
        verbose: bool,
    },
    /// List peers found by LAN discovery.
    Discovered(JsonFlag),
    /// Connect to a peer now.
    Connect { address: String, port: u16 },
    /// Close the connection to a peer (any unique prefix of its id).
    Disconnect { peer: String },
    /// Remember a peer address and keep reconnecting to it.
    AddPeer { address: String },
    /// Forget a remembered peer address.
    RemovePeer { address: String },
    /// Sync with every connected peer (or one) and wait for the result.
    Sync {
        #[arg(long)]
        peer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Turn background syncing on or off.
    AutoSync { state: OnOff },
    /// Set the background sync interval (e.g. 30s, 5m).
    Interval { duration: String },
    /// Per-peer sync state: last sync, heads seen, bytes and objects, failures.
    SyncStatus(JsonFlag),
    /// Diverged timelines found while syncing.
    Conflicts(JsonFlag),
    /// Resolve a diverged timeline: keep the local or the remote side (in a seal
    /// with both heads as parents, so peers fast-forward), or merge them.
    Resolve {
        /// The diverged timeline (HEAD or @: the checked-out one).
        timeline: String,
        #[arg(long, value_enum)]
        take: TakeArg,
        /// Whose head to resolve against, when several peers diverged (id prefix).
        #[arg(long)]
        peer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show or change the configuration.
    Config(Box<ConfigArgs>),
    /// Print this node's id.
    Whoami(JsonFlag),
    /// Allow a node id to connect (once the list is non-empty, only listed ids may).
    Trust {
        node_id: String,
        #[command(flatten)]
        access: crate::pairing::AccessFlags,
    },
    /// Remove a node id from the trusted list.
    Untrust { node_id: String },
    /// Make a working copy of a peer's repository (same repository id), sync all
    /// of it, and check out its main timeline.
    Clone {
        /// An invitation ticket (from `ivaldi p2p invite`), or ADDRESS:PORT of
        /// a node that already trusts everyone (open mode).
        source: String,
        dir: Option<PathBuf>,
    },
    /// Open an invitation: prints a ticket another machine joins with.
    Invite(Box<crate::pairing::InviteArgs>),
    /// Nodes refused lately because they are not trusted.
    Pending(JsonFlag),
    /// Join with an invitation ticket, in an existing clone of its repository.
    Join { ticket: String },
    /// The mesh as this node sees it: nodes, links and their round-trip times.
    Topology {
        #[arg(long)]
        json: bool,
        /// Graphviz DOT (render with `dot -Tsvg`).
        #[arg(long, conflicts_with = "json")]
        dot: bool,
    },
    /// The path to a node through the mesh and its cost.
    Route {
        peer: String,
        #[arg(long)]
        json: bool,
    },
    /// Show recent events, or follow them as they happen.
    Events {
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show protocol messages as they pass: direction, type, size, peer, sync.
    Trace {
        /// Only messages with the peer whose id starts with this.
        #[arg(long)]
        peer: Option<String>,
        /// Keep printing new messages until interrupted.
        #[arg(long)]
        follow: bool,
        /// Include each message's JSON payload (object data is never shown).
        #[arg(long)]
        payloads: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct JsonFlag {
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TakeArg {
    Local,
    Remote,
    Merge,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    fn on(self) -> bool {
        matches!(self, OnOff::On)
    }
}

/// `ivaldi p2p config get|set|unset KEY`: any setting by its name in
/// `config.json`, so a new setting needs no flag of its own.
#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print one setting: a key of config.json, or `KEY.NAME` for one entry
    /// of a map setting (`peer_rates.NODE_ID`, `timeline_strategies.NAME`).
    Get {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Change one setting, checked as config.json is, and apply it to a
    /// running daemon.
    ///
    /// VALUE is JSON or plain text (`5s`, `10M`, `on`); a list takes commas,
    /// and `none` empties it.
    Set { key: String, value: String },
    /// Put one setting back to its default, or remove one entry of a map setting.
    Unset { key: String },
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: Option<ConfigAction>,
    #[arg(long)]
    json: bool,
    /// Restore every default.
    #[arg(long)]
    reset: bool,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    discovery_port: Option<u16>,
    #[arg(long)]
    conflict_strategy: Option<String>,
    /// Let nodes that are not trusted in: off (the default), read or write.
    /// Only for a throwaway network.
    #[arg(long)]
    open: Option<String>,
    /// A per-timeline strategy, `NAME=STRATEGY` or `PREFIX/*=STRATEGY`
    /// (repeatable; `NAME=default` removes an override).
    #[arg(long = "timeline-strategy")]
    timeline_strategies: Vec<String>,
    #[arg(long)]
    max_peers: Option<usize>,
    #[arg(long)]
    sync_interval: Option<String>,
    #[arg(long)]
    sync_timeout: Option<String>,
    #[arg(long)]
    heartbeat_interval: Option<String>,
    #[arg(long)]
    max_concurrent_syncs: Option<usize>,
    #[arg(long)]
    max_message_size: Option<u32>,
    #[arg(long)]
    encryption: Option<OnOff>,
    #[arg(long)]
    compression: Option<OnOff>,
    #[arg(long)]
    discovery: Option<OnOff>,
    #[arg(long)]
    discovery_interval: Option<String>,
    /// Replace the discovery target addresses (repeatable; "none" clears).
    #[arg(long = "discovery-addr")]
    discovery_addrs: Vec<String>,
    /// Replace the allowed network ranges (repeatable CIDR; "none" clears).
    #[arg(long = "allowed-network")]
    allowed_networks: Vec<String>,
    #[arg(long)]
    bind_addr: Option<String>,
    #[arg(long)]
    log_level: Option<String>,
    #[arg(long)]
    auto_sync: Option<OnOff>,
    /// Relay other nodes' sessions through this node.
    #[arg(long)]
    relay: Option<OnOff>,
    /// Refuse direct connections with this node id (repeatable; "none" clears);
    /// it is still reached through the mesh.
    #[arg(long = "no-direct")]
    no_direct: Vec<String>,
    #[arg(long)]
    topology_interval: Option<String>,
    #[arg(long)]
    handshake_timeout: Option<String>,
    /// Upload cap for the whole node, bytes per second: `500K`, `10M`,
    /// `1G`, `10MB/s` (powers of 1024) or plain bytes; `0` removes it.
    #[arg(long)]
    upload_rate: Option<String>,
    /// Download cap for the whole node, like `--upload-rate`.
    #[arg(long)]
    download_rate: Option<String>,
    /// Upload cap for each peer on its own, like `--upload-rate`.
    #[arg(long)]
    peer_upload_rate: Option<String>,
    /// Download cap for each peer on its own, like `--upload-rate`.
    #[arg(long)]
    peer_download_rate: Option<String>,
    /// Caps for one peer, `NODE_ID=UPLOAD[,DOWNLOAD]` (repeatable;
    /// `NODE_ID=default` removes the override).
    #[arg(long = "peer-rate")]
    peer_rates: Vec<String>,
}

/// A `--*-rate` value in bytes per second.
fn rate_arg(flag: &str, text: &str) -> Result<u64, Failed> {
    ivaldi_core::config::parse_rate(text).map_err(|e| fail(format!("--{flag}: {e}")))
}

pub(crate) fn setup_err(e: setup::SetupError) -> Failed {
    fail(e)
}

fn ctl_err(e: ControlError) -> Failed {
    match e {
        ControlError::NotRunning => {
            eprintln!(
                "error: no daemon is running for this repository; start it with `ivaldi p2p start`"
            );
            Failed(1)
        }
        e => fail(e),
    }
}

/// Asks the daemon and reads its reply as `T`, the reply type of `req`
/// (see `control::replies`).
pub(crate) fn ask<T: DeserializeOwned>(paths: &P2pPaths, req: &Request) -> Result<T, Failed> {
    let r = control::request(&paths.socket, req, Some(Duration::from_secs(30)), |_| {})
        .map_err(ctl_err)?;
    reply_data(r)
}

fn reply_data<T: DeserializeOwned>(r: Reply) -> Result<T, Failed> {
    r.data_as().map_err(fail)
}

/// The objects and bytes a progress line reports.
fn progress_of(progress: &Value) -> replies::Progress {
    serde_json::from_value(progress.clone()).unwrap_or_default()
}

/// What a running daemon made of `repair`'s request to refetch objects.
pub enum Refetched {
    /// No daemon runs for this repository.
    NotRunning,
    /// The daemon answered: its message, and how many objects it received
    /// meanwhile.
    Answered { message: String, objects: u64 },
}

/// Asks the running daemon to fetch `missing` again from its peers and waits,
/// showing progress on a terminal.
pub fn refetch(
    root: &Path,
    missing: Vec<ivaldi_core::ObjectId>,
    json: bool,
) -> Result<Refetched, Failed> {
    let paths = P2pPaths::new(root).map_err(fail)?;
    let tty = std::io::stderr().is_terminal() && !json;
    let asked = missing.len();
    let req = Request::Refetch {
        peer: None,
        missing,
    };
    let mut objects = 0u64;
    let r = control::request(&paths.socket, &req, None, |l| {
        if let Line::Progress { progress } = l {
            objects += progress_of(progress).objects;
            if tty {
                eprint!("\rfetching {asked} missing objects from peers: {objects} received   ");
            }
        }
    });
    if tty && objects > 0 {
        eprintln!();
    }
    match r {
        Err(ControlError::NotRunning) => Ok(Refetched::NotRunning),
        Err(e) => Err(fail(e)),
        Ok(r) => Ok(Refetched::Answered {
            message: match r.data_as::<Done>() {
                Ok(d) => d.message,
                Err(ControlError::Refused(e)) => e,
                Err(_) => "done".into(),
            },
            objects,
        }),
    }
}

/// Tells a running daemon that local heads changed; silent when none runs.
pub fn notify_local_change(root: &Path) {
    if let Ok(paths) = P2pPaths::new(root) {
        let _ = control::request(
            &paths.socket,
            &Request::LocalChanged,
            Some(Duration::from_secs(5)),
            |_| {},
        );
    }
}

pub(crate) fn reload_if_running(paths: &P2pPaths) -> Result<bool, Failed> {
    match control::request(
        &paths.socket,
        &Request::ReloadConfig,
        Some(Duration::from_secs(10)),
        |_| {},
    ) {
        Ok(r) => reply_data::<Done>(r).map(|_| true),
        Err(ControlError::NotRunning) => Ok(false),
        Err(e) => Err(ctl_err(e)),
    }
}

pub(crate) fn edit_config(
    paths: &P2pPaths,
    f: impl FnOnce(&mut ConfigFile) -> Result<(), Failed>,
) -> Result<ConfigFile, Failed> {
    let mut cfg = setup::load_config(paths).map_err(setup_err)?;
    f(&mut cfg)?;
    setup::save_config(paths, &cfg).map_err(setup_err)?;
    Ok(cfg)
}

pub(crate) fn applied(paths: &P2pPaths, what: &str) -> Result<(), Failed> {
    if reload_if_running(paths)? {
        println!("{what} (applied to the running daemon)");
    } else {
        println!("{what}");
    }
    Ok(())
}

fn duration_arg(field: &str, text: &str) -> Result<Duration, Failed> {
    parse_duration(text).map_err(|e| fail(format!("{field}: {e}")))
}

pub(crate) fn node_id_arg(id: &str) -> Result<ivaldi_core::NodeId, Failed> {
    id.parse().map_err(|_| {
        fail(format!(
            "{:?} is not a node id (64 hex digits; see `ivaldi p2p whoami`)",
            id.to_ascii_lowercase()
        ))
    })
}

pub fn run(root: &Path, cmd: P2pCmd) -> Result<(), Failed> {
    let paths = P2pPaths::new(root).map_err(setup_err)?;
    match cmd {
        P2pCmd::Start { foreground } => start(root, &paths, foreground),
        P2pCmd::Stop => stop(&paths),
        P2pCmd::Status(j) => {
            let v: Status = ask(&paths, &Request::Status)?;
            if j.json {
                print_json(&v);
            } else {
                print_status(&v);
            }
            Ok(())
        }
        P2pCmd::Peers { json, verbose } => {
            let v: Peers = ask(&paths, &Request::Peers { verbose })?;
            if json {
                print_json(&v);
            } else {
                print_peers(&v.peers, verbose);
            }
            Ok(())
        }
        P2pCmd::Discovered(j) => {
            let v: Discovered = ask(&paths, &Request::Discovered)?;
            if j.json {
                print_json(&v);
            } else {
                if v.discovered.is_empty() {
                    println!("No peers discovered yet");
                }
                for v in v.discovered {
                    let p = &v.peer;
                    // Announcements name repositories by tags only a holder can
                    // recognise: ours are shown by id, the rest only counted.
                    let ours: Vec<&str> = p.repos.keys().map(String::as_str).collect();
                    let unknown = p.unknown_repos;
                    let mut what = if ours.is_empty() {
                        "no repository of ours".to_owned()
                    } else {
                        format!("same repository: {}", ours.join(", "))
                    };
                    if unknown > 0 {
                        what.push_str(&format!(" (+{unknown} we do not hold)"));
                    }
                    println!(
                        "{}  {}  {}  seen {} ms ago",
                        short(&p.node_id),
                        p.addr,
                        what,
                        v.last_seen_ago_ms
                    );
                }
            }
            Ok(())
        }
        P2pCmd::Connect { address, port } => {
            let addr = format!("{address}:{port}");
            let addr = addr
                .parse::<std::net::SocketAddr>()
                .map(|a| a.to_string())
                .map_err(|_| fail(format!("{address} {port}: not an IP address and port")))?;
            let v: Done = ask(&paths, &Request::Connect { addr })?;
            println!("{}", v.message);
            Ok(())
        }
        P2pCmd::Disconnect { peer } => {
            let v: Done = ask(&paths, &Request::Disconnect { peer })?;
            println!("{}", v.message);
            Ok(())
        }
        P2pCmd::AddPeer { address } => {
            let addr: std::net::SocketAddr = address
                .parse()
                .map_err(|_| fail(format!("{address:?} is not an ip:port address")))?;
            edit_config(&paths, |c| {
                if !c
                    .node
                    .connections
                    .known_peers
                    .iter()
                    .any(|k| k.parse() == Ok(addr))
                {
                    c.node.connections.known_peers.push(addr.to_string());
                }
                Ok(())
            })?;
            applied(&paths, &format!("Added known peer {addr}"))
        }
        P2pCmd::RemovePeer { address } => {
            let addr: std::net::SocketAddr = address
                .parse()
                .map_err(|_| fail(format!("{address:?} is not an ip:port address")))?;
            let mut found = false;
            edit_config(&paths, |c| {
                let before = c.node.connections.known_peers.len();
                c.node
                    .connections
                    .known_peers
                    .retain(|k| k.parse::<std::net::SocketAddr>() != Ok(addr));
                found = before != c.node.connections.known_peers.len();
                Ok(())
            })?;
            if !found {
                return Err(fail(format!("{addr} is not a known peer")));
            }
            applied(&paths, &format!("Removed known peer {addr}"))
        }
        P2pCmd::Sync { peer, json } => sync(&paths, peer, json),
        P2pCmd::AutoSync { state } => {
            edit_config(&paths, |c| {
                c.node.sync.auto_sync = state.on();
                Ok(())
            })?;
            applied(
                &paths,
                &format!("Auto-sync {}", if state.on() { "on" } else { "off" }),
            )
        }
        P2pCmd::Interval { duration } => {
            let d = duration_arg("interval", &duration)?;
            edit_config(&paths, |c| {
                c.node.sync.sync_interval = d;
                Ok(())
            })?;
            applied(
                &paths,
                &format!(
                    "Sync interval set to {}",
                    ivaldi_core::config::format_duration(d)
                ),
            )
        }
        P2pCmd::SyncStatus(j) => {
            let v: SyncStatus = ask(&paths, &Request::SyncStatus)?;
            if j.json {
                print_json(&v);
            } else {
                if v.peers.is_empty() {
                    println!("No peer has synced yet");
                }
                for (id, r) in v.peers {
                    println!(
                        "{}  syncs {}  failures {}  in {} objects / {} B  out {} objects / {} B{}",
                        short(&id.to_hex()),
                        r.syncs,
                        r.failures,
                        r.objects_in,
                        r.bytes_in,
                        r.objects_out,
                        r.bytes_out,
                        r.last_error
                            .map(|e| format!("  last error: {e}"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        P2pCmd::Conflicts(j) => {
            let v: Conflicts = ask(&paths, &Request::Conflicts)?;
            if j.json {
                print_json(&v);
            } else {
                if v.conflicts.is_empty() {
                    println!("No diverged timelines");
                }
                for c in v.conflicts {
                    println!(
                        "{}: local {} vs remote {} from {} (base {})",
                        c.timeline,
                        c.local.short(),
                        c.remote.short(),
                        short(&c.peer.to_hex()),
                        c.base.map_or_else(|| "-".to_owned(), |b| b.short())
                    );
                }
            }
            Ok(())
        }
        P2pCmd::Config(args) => config(&paths, *args),
        P2pCmd::Resolve {
            timeline,
            take,
            peer,
            json,
        } => resolve(root, &paths, &timeline, take, peer.as_deref(), json),
        P2pCmd::Whoami(j) => {
            let id = setup::node_id(&paths).map_err(setup_err)?;
            if j.json {
                print_json(&json!({ "node_id": id }));
            } else {
                println!("{id}");
            }
            Ok(())
        }
        P2pCmd::Trust { node_id, access } => crate::pairing::trust(&paths, &node_id, &access),
        P2pCmd::Untrust { node_id } => crate::pairing::untrust(&paths, &node_id),
        P2pCmd::Invite(a) => crate::pairing::invite(&paths, &a),
        P2pCmd::Pending(j) => crate::pairing::pending(&paths, j.json),
        P2pCmd::Join { ticket } => crate::pairing::join(&paths, &ticket),
        P2pCmd::Clone { source, dir } => clone_cmd(root, &source, dir.as_deref()),
        P2pCmd::Topology { json, dot } => {
            let v: TopologyReply = ask(&paths, &Request::Topology)?;
            if dot {
                println!("{}", v.dot.as_deref().unwrap_or("digraph mesh {}"));
            } else if json {
                print_json(&v.topology);
            } else {
                let (nodes, edges, me) = v
                    .topology
                    .map(|t| (t.nodes, t.edges, t.me))
                    .unwrap_or_default();
                println!("{} nodes known", nodes.len());
                for n in &nodes {
                    let me = if n.id == me { " (this node)" } else { "" };
                    println!("  {}{me}  repos {}", short(&n.id), n.repos.len());
                }
                for e in edges {
                    println!(
                        "  {} -- {}  {:.1} ms{}",
                        short(&e.a),
                        short(&e.b),
                        e.rtt_us as f64 / 1000.0,
                        if e.usable {
                            ""
                        } else {
                            "  (one-sided, unused)"
                        }
                    );
                }
            }
            Ok(())
        }
        P2pCmd::Route { peer, json } => {
            let v: Route = ask(&paths, &Request::Route { peer })?;
            if json {
                print_json(&v);
            } else {
                let path: Vec<String> = v.path.iter().map(|p| short(p)).collect();
                println!(
                    "{} ({} hops, cost {:.1} ms)",
                    path.join(" -> "),
                    v.hops,
                    v.cost_micros as f64 / 1000.0
                );
            }
            Ok(())
        }
        P2pCmd::Trace {
            peer,
            follow,
            payloads,
            json,
        } => {
            let timeout = if follow {
                None
            } else {
                Some(Duration::from_secs(30))
            };
            let req = Request::Trace {
                peer,
                follow,
                payloads,
            };
            let r = control::request(&paths.socket, &req, timeout, |l| {
                if let Line::Event { event } = l {
                    if json {
                        println!("{}", serde_json::to_string(event).unwrap_or_default());
                    } else {
                        println!("{}", describe_message(event));
                    }
                }
            })
            .map_err(ctl_err)?;
            reply_data::<Count>(r).map(|_| ())
        }
        P2pCmd::Events { follow, json } => {
            let timeout = if follow {
                None
            } else {
                Some(Duration::from_secs(30))
            };
            let r = control::request(&paths.socket, &Request::Events { follow }, timeout, |l| {
                if let Line::Event { event } = l {
                    if json {
                        println!("{}", serde_json::to_string(event).unwrap_or_default());
                    } else {
                        println!("{}", describe_event(event));
                    }
                }
            })
            .map_err(ctl_err)?;
            reply_data::<Count>(r).map(|_| ())
        }
    }
}

/// The first 12 characters of an id, as the CLI shows ids.
fn short(id: &str) -> String {
    ivaldi_core::node_id::short(id).to_owned()
}

/// [`short`] of a string in a streamed event, `-` if there is none.
fn short_of(v: &Value) -> String {
    v.as_str().map_or_else(|| "-".to_owned(), short)
}

/// One traced message as a line: `out sync_request 312 B peer 1a2b3c4d sync 7`.
fn describe_message(m: &Value) -> String {
    let mut line = format!(
        "{:<3} {:<18} {:>9} B  peer {}",
        m["dir"].as_str().unwrap_or("?"),
        m["kind"].as_str().unwrap_or("?"),
        m["bytes"],
        short_of(&m["peer"])
    );
    if let Some(s) = m["sync"].as_u64() {
        line.push_str(&format!("  sync {s}"));
    }
    if let Some(p) = m["payload"].as_str() {
        line.push_str("  ");
        line.push_str(p);
    }
    line
}

fn describe_event(e: &Value) -> String {
    let kind = e["event"].as_str().unwrap_or("event");
    match kind {
        "peer_connected" => format!(
            "peer connected: {} at {}",
            short_of(&e["peer"]),
            e["addr"].as_str().unwrap_or("?")
        ),
        "peer_disconnected" => format!(
            "peer disconnected: {} ({})",
            short_of(&e["peer"]),
            e["reason"].as_str().unwrap_or("")
        ),
        "timeline_updated" => format!(
            "timeline {} moved to {} (from {})",
            e["timeline"].as_str().unwrap_or("?"),
            short_of(&e["new"]),
            short_of(&e["peer"])
        ),
        "conflict_detected" => format!(
            "conflict on {}: local {} vs remote {} from {}",
            e["timeline"].as_str().unwrap_or("?"),
            short_of(&e["local"]),
            short_of(&e["remote"]),
            short_of(&e["peer"])
        ),
        "access_refused" => format!(
            "refused {} from {}",
            e["what"].as_str().unwrap_or("?"),
            short_of(&e["peer"])
        ),
        _ => format!("{kind}: {e}"),
    }
}

fn print_status(v: &Status) {
    use ivaldi_core::trust::OpenMode;
    println!("Node      {}", v.node_id);
    match v.open {
        OpenMode::Off => println!(
            "Trust     {} trusted node(s); strangers refused: {}{}",
            v.trusted_peers,
            v.stats.untrusted_refused,
            match v.pending {
                n if n > 0 => format!(" ({n} waiting: `ivaldi p2p pending`)"),
                _ => String::new(),
            }
        ),
        mode => println!(
            "Trust     OPEN MODE ({}): ANY node that reaches this one may {}. Turn it off with `ivaldi p2p config --open off`",
            if mode == OpenMode::Read {
                "read"
            } else {
                "write"
            },
            if mode == OpenMode::Read {
                "read every timeline"
            } else {
                "read and write every timeline"
            }
        ),
    }
    println!(
        "Listening tcp {}  discovery {}",
        v.port,
        v.discovery_port
            .map_or_else(|| "null".to_owned(), |p| p.to_string())
    );
    println!(
        "Uptime    {} s   auto-sync {} every {}",
        v.uptime_secs,
        if v.auto_sync { "on" } else { "off" },
        v.sync_interval
    );
    let s = &v.stats;
    println!(
        "Traffic   in {} B / out {} B   syncs ok {} failed {}   conflicts {}",
        s.bytes_in, s.bytes_out, s.syncs_completed, s.syncs_failed, v.conflicts
    );
    println!(
        "Messages  in {}  out {}",
        json!(s.messages_in),
        json!(s.messages_out)
    );
    println!(
        "Access    {} refused (heads from peers without write access, requests without read access)",
        s.access_refused
    );
    println!("Discovery {}", json!(v.discovery));
    println!("Events    {}", json!(v.events));
    print_peers(&v.peers, false);
}

fn print_peers(peers: &[PeerView], verbose: bool) {
    if peers.is_empty() {
        println!("No peers connected");
        return;
    }
    for v in peers {
        let p = &v.status;
        let rtt = p
            .rtt_micros
            .map(|r| format!("{:.1} ms", r as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        print!(
            "{}  {}  {}  rtt {}  seen {} ms ago",
            p.peer
                .map_or_else(|| "-".to_owned(), |id| short(&id.to_hex())),
            p.addr,
            as_text(&p.direction),
            rtt,
            v.last_seen_ago_ms
        );
        if verbose {
            print!(
                "\n    handshake {}  sync {}  serving {}  queued {} B  encrypted {}  routed {}\n    features {}  last error {}",
                as_text(&p.state),
                p.sync_phase,
                p.serving,
                p.queued_bytes,
                p.encrypted,
                p.routed_via_mesh,
                p.features.join(","),
                p.last_error.as_deref().unwrap_or("none"),
            );
        }
        println!();
    }
}

/// A core enum as the control JSON writes it (`inbound`, `ready`).
fn as_text(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn sync(paths: &P2pPaths, peer: Option<String>, json: bool) -> Result<(), Failed> {
    let tty = std::io::stderr().is_terminal() && !json;
    let start = Instant::now();
    let mut objects = 0u64;
    let mut bytes = 0u64;
    let r = control::request(paths.socket.as_path(), &Request::Sync { peer }, None, |l| {
        if let Line::Progress { progress } = l {
            let p = progress_of(progress);
            objects += p.objects;
            bytes += p.bytes;
            if tty {
                let secs = start.elapsed().as_secs_f64().max(0.001);
                eprint!(
                    "\rreceiving: {objects} objects, {:.1} MiB, {:.1} MiB/s   ",
                    bytes as f64 / 1048576.0,
                    bytes as f64 / 1048576.0 / secs
                );
            }
        }
    })
    .map_err(ctl_err)?;
    if tty && objects > 0 {
        eprintln!();
    }
    let v: Done = reply_data(r)?;
    if json {
        print_json(&json!({"ok": true, "message": v.message, "objects": objects, "bytes": bytes}));
    } else {
        println!("{}", v.message);
    }
    Ok(())
}

fn stop(paths: &P2pPaths) -> Result<(), Failed> {
    let pid = std::fs::read_to_string(&paths.pid)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    ask::<Done>(paths, &Request::Stop)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    if let Some(pid) = pid {
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if Instant::now() > deadline {
                return Err(fail(format!("daemon (pid {pid}) did not stop within 15 s")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    println!("Daemon stopped");
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn start(root: &Path, paths: &P2pPaths, foreground: bool) -> Result<(), Failed> {
    let cfg = setup::effective_config(paths).map_err(setup_err)?;
    if foreground {
        init_daemon_logging(paths, &cfg)?;
        return daemon::run(root, |s| {
            println!(
                "Daemon running (pid {}): node {} on tcp port {}{}",
                s.pid,
                s.node_id,
                s.port,
                s.discovery_port
                    .map(|p| format!(", discovery port {p}"))
                    .unwrap_or_default()
            );
        })
        .map_err(fail);
    }
    if daemon::is_running(paths) {
        return Err(fail(
            "a daemon is already running for this repository (see `ivaldi p2p status`)",
        ));
    }
    paths.ensure_dir().map_err(setup_err)?;
    let exe =
        std::env::current_exe().map_err(|e| fail(format!("cannot find the ivaldi binary: {e}")))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| fail(format!("{}: {e}", paths.log.display())))?;
    let log2 = log.try_clone().map_err(|e| fail(e.to_string()))?;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(exe)
        .args([
            "-C",
            &root.display().to_string(),
            "p2p",
            "start",
            "--foreground",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start the daemon: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(d) = control::request(
            &paths.socket,
            &Request::Whoami,
            Some(Duration::from_secs(2)),
            |_| {},
        )
        .and_then(Reply::data_as::<replies::Whoami>)
        {
            println!(
                "Daemon started (pid {}): node {} on tcp port {}{}",
                d.pid,
                d.node_id,
                d.port,
                d.discovery_port
                    .map(|p| format!(", discovery port {p}"))
                    .unwrap_or_default()
            );
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = log_tail(&paths.log);
            return Err(fail(format!(
                "the daemon exited ({status}) before it was ready:\n{tail}"
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(fail(format!(
                "the daemon did not become ready within 15 s; see {}",
                paths.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn log_tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn init_daemon_logging(paths: &P2pPaths, cfg: &ConfigFile) -> Result<(), Failed> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.daemon.log_level))
        .map_err(|e| fail(format!("log_level {:?}: {e}", cfg.daemon.log_level)))?;
    paths.ensure_dir().map_err(setup_err)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(|e| fail(format!("{}: {e}", paths.log.display())))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

fn config(paths: &P2pPaths, a: ConfigArgs) -> Result<(), Failed> {
    if let Some(action) = a.action {
        return config_action(paths, action);
    }
    let changing = a.reset
        || a.port.is_some()
        || a.discovery_port.is_some()
        || a.conflict_strategy.is_some()
        || a.open.is_some()
        || !a.timeline_strategies.is_empty()
        || a.max_peers.is_some()
        || a.sync_interval.is_some()
        || a.sync_timeout.is_some()
        || a.heartbeat_interval.is_some()
        || a.max_concurrent_syncs.is_some()
        || a.max_message_size.is_some()
        || a.encryption.is_some()
        || a.compression.is_some()
        || a.discovery.is_some()
        || a.discovery_interval.is_some()
        || !a.discovery_addrs.is_empty()
        || !a.allowed_networks.is_empty()
        || a.bind_addr.is_some()
        || a.log_level.is_some()
        || a.auto_sync.is_some()
        || a.relay.is_some()
        || !a.no_direct.is_empty()
        || a.topology_interval.is_some()
        || a.handshake_timeout.is_some()
        || a.upload_rate.is_some()
        || a.download_rate.is_some()
        || a.peer_upload_rate.is_some()
        || a.peer_download_rate.is_some()
        || !a.peer_rates.is_empty();
    let cfg = if changing {
        let cfg = edit_config(paths, |c| {
            if a.reset {
                // Settings go back to their defaults; whom we trust stays.
                let trusted = std::mem::take(&mut c.node.access.trusted_peers);
                *c = ConfigFile::default();
                c.node.access.trusted_peers = trusted;
            }
            if let Some(o) = &a.open {
                c.node.access.open = o
                    .parse::<ivaldi_core::trust::OpenMode>()
                    .map_err(|e| fail(format!("--open: {e}")))?;
            }
            if let Some(p) = a.port {
                c.node.connections.port = p;
            }
            if let Some(p) = a.discovery_port {
                c.daemon.discovery_port = p;
            }
            if let Some(s) = &a.conflict_strategy {
                c.node.sync.conflict_strategy = s.parse::<ConflictStrategy>().map_err(fail)?;
            }
            for spec in &a.timeline_strategies {
                let (name, strat) = spec.split_once('=').ok_or_else(|| {
                    fail(format!(
                        "--timeline-strategy {spec:?}: expected NAME=STRATEGY"
                    ))
                })?;
                let pattern = name.strip_suffix('*').unwrap_or(name).trim_end_matches('/');
                if !pattern.is_empty() {
                    ivaldi_core::TimelineName::new(pattern)
                        .map_err(|e| fail(format!("--timeline-strategy {spec:?}: {e}")))?;
                }
                if strat == "default" {
                    c.node.sync.timeline_strategies.remove(name);
                } else {
                    c.node.sync.timeline_strategies.insert(
                        name.to_owned(),
                        strat.parse::<ConflictStrategy>().map_err(fail)?,
                    );
                }
            }
            if let Some(n) = a.max_peers {
                c.node.connections.max_peers = n;
            }
            if let Some(d) = &a.sync_interval {
                c.node.sync.sync_interval = duration_arg("sync-interval", d)?;
            }
            if let Some(d) = &a.sync_timeout {
                c.node.sync.sync_timeout = duration_arg("sync-timeout", d)?;
            }
            if let Some(d) = &a.heartbeat_interval {
                c.node.connections.heartbeat_interval = duration_arg("heartbeat-interval", d)?;
            }
            if let Some(n) = a.max_concurrent_syncs {
                c.node.sync.max_concurrent_syncs = n;
            }
            if let Some(n) = a.max_message_size {
                c.node.limits.max_message_size = n;
            }
            if let Some(v) = a.encryption {
                c.node.connections.encryption = v.on();
            }
            if let Some(v) = a.compression {
                c.node.connections.compression = v.on();
            }
            if let Some(v) = a.discovery {
                c.node.discovery.enabled = v.on();
            }
            if let Some(d) = &a.discovery_interval {
                c.node.discovery.discovery_interval = duration_arg("discovery-interval", d)?;
            }
            if !a.discovery_addrs.is_empty() {
                c.daemon.discovery_addrs = a
                    .discovery_addrs
                    .iter()
                    .filter(|x| *x != "none")
                    .cloned()
                    .collect();
            }
            if !a.allowed_networks.is_empty() {
                c.node.access.allowed_networks = a
                    .allowed_networks
                    .iter()
                    .filter(|x| *x != "none")
                    .cloned()
                    .collect();
            }
            if let Some(b) = &a.bind_addr {
                c.daemon.bind_addr = b.clone();
            }
            if let Some(l) = &a.log_level {
                c.daemon.log_level = l.clone();
            }
            if let Some(v) = a.auto_sync {
                c.node.sync.auto_sync = v.on();
            }
            if let Some(v) = a.relay {
                c.node.mesh.relay = v.on();
            }
            if !a.no_direct.is_empty() {
                c.node.mesh.no_direct = Vec::new();
                for id in a.no_direct.iter().filter(|x| *x != "none") {
                    c.node.mesh.no_direct.push(node_id_arg(id)?);
                }
            }
            if let Some(d) = &a.topology_interval {
                c.node.mesh.topology_interval = duration_arg("topology-interval", d)?;
            }
            if let Some(d) = &a.handshake_timeout {
                c.node.connections.handshake_timeout = duration_arg("handshake-timeout", d)?;
            }
            if let Some(r) = &a.upload_rate {
                c.node.rates.upload_rate = rate_arg("upload-rate", r)?;
            }
            if let Some(r) = &a.download_rate {
                c.node.rates.download_rate = rate_arg("download-rate", r)?;
            }
            if let Some(r) = &a.peer_upload_rate {
                c.node.rates.peer_upload_rate = rate_arg("peer-upload-rate", r)?;
            }
            if let Some(r) = &a.peer_download_rate {
                c.node.rates.peer_download_rate = rate_arg("peer-download-rate", r)?;
            }
            for spec in &a.peer_rates {
                let (id, rates) = spec.split_once('=').ok_or_else(|| {
                    fail(format!(
                        "--peer-rate {spec:?}: expected NODE_ID=UPLOAD[,DOWNLOAD]"
                    ))
                })?;
                let id = node_id_arg(id)?;
                if rates == "default" {
                    c.node.rates.peer_rates.remove(&id);
                    continue;
                }
                let (up, down) = rates.split_once(',').unwrap_or((rates, "0"));
                c.node.rates.peer_rates.insert(
                    id,
                    ivaldi_core::config::PeerRates {
                        upload: rate_arg("peer-rate", up)?,
                        download: rate_arg("peer-rate", down)?,
                    },
                );
            }
            Ok(())
        })?;
        if reload_if_running(paths)? {
            eprintln!(
                "Configuration saved and applied to the running daemon (port changes need a restart)"
            );
        } else {
            eprintln!("Configuration saved");
        }
        cfg
    } else {
        setup::load_config(paths).map_err(setup_err)?
    };
    let v = serde_json::to_value(&cfg).unwrap_or_default();
    if a.json {
        print_json(&v);
    } else if let Some(map) = v.as_object() {
        for (k, val) in map {
            println!("{k:22} {val}");
        }
    }
    Ok(())
}

fn config_action(paths: &P2pPaths, action: ConfigAction) -> Result<(), Failed> {
    use ivaldi_core::config::edit;
    let (key, changed) = match action {
        ConfigAction::Get { key, json } => {
            let cfg = setup::load_config(paths).map_err(setup_err)?;
            let v = edit::get(&cfg, &key).map_err(fail)?;
            match v {
                serde_json::Value::String(s) if !json => println!("{s}"),
                v => print_json(&v),
            }
            return Ok(());
        }
        ConfigAction::Set { key, value } => {
            let c = edit_config(paths, |c| {
                *c = edit::set(c, &key, &value).map_err(fail)?;
                Ok(())
            })?;
            (key, c)
        }
        ConfigAction::Unset { key } => {
            let c = edit_config(paths, |c| {
                *c = edit::unset(c, &key).map_err(fail)?;
                Ok(())
            })?;
            (key, c)
        }
    };
    let now = edit::get(&changed, &key).map_err(fail)?;
    applied(paths, &format!("{key} = {now}"))
}

/// `ivaldi p2p clone ADDRESS:PORT [DIR]`; runs outside any repository.
pub fn clone_cmd(here: &Path, source: &str, dir: Option<&Path>) -> Result<(), Failed> {
    let ticket = ivaldi_core::trust::Ticket::parse(source);
    let addr: Option<std::net::SocketAddr> = source.parse().ok();
    if let (Err(e), None) = (&ticket, addr) {
        return Err(fail(
            if source.trim().to_ascii_lowercase().starts_with("ivaldi") {
                e.to_string()
            } else {
                format!("{source:?} is neither an invitation ticket nor an ip:port address")
            },
        ));
    }
    let dir = match dir {
        Some(d) if d.is_absolute() => d.to_owned(),
        Some(d) => here.join(d),
        None => here.join("ivaldi-clone"),
    };
    if dir.join(ivaldi_shell_smol::repo::DOT_DIR).exists() {
        return Err(fail(format!(
            "{} is already an Ivaldi repository",
            dir.display()
        )));
    }
    let result = match (ticket, addr) {
        (Ok(t), _) => ivaldi_shell_smol::oneshot::clone_ticket(&t, &dir)
            .map_err(|e| fail(format!("clone with the ticket failed: {e}"))),
        (_, Some(addr)) => ivaldi_shell_smol::oneshot::clone(addr, &dir)
            .map_err(|e| fail(format!("clone from {addr} failed: {e}"))),
        (Err(e), None) => Err(fail(e)),
    };
    let report = match result {
        Ok(r) => {
            crate::clone_log::save(&dir);
            r
        }
        Err(e) => {
            crate::clone_log::print_after_failure();
            return Err(e);
        }
    };
    println!(
        "Cloned repository {} from {} into {}: {} objects, {:.1} MiB{}",
        report.repo_id,
        report.peer.short(),
        dir.display(),
        report.objects,
        report.bytes as f64 / 1048576.0,
        report
            .timeline
            .map(|t| format!(", checked out {t}"))
            .unwrap_or_else(|| ", no timelines yet".into())
    );
    Ok(())
}

fn resolve(
    root: &Path,
    paths: &P2pPaths,
    timeline: &str,
    take: TakeArg,
    peer: Option<&str>,
    json: bool,
) -> Result<(), Failed> {
    use ivaldi_shell_smol::repo::{Repository, ops};
    let mut repo = Repository::open(root)?;
    let name = match timeline {
        "HEAD" | "@" => repo.head_timeline()?,
        t => ivaldi_core::TimelineName::new(t)
            .map_err(|e| fail(format!("invalid timeline name: {e}")))?,
    };
    let candidates: Vec<(String, ivaldi_core::ObjectId)> = ops::diverged_remotes(&repo, &name)?
        .into_iter()
        .filter(|(p, _)| peer.is_none_or(|want| p.starts_with(&want.to_ascii_lowercase())))
        .collect();
    let remote = match candidates.as_slice() {
        [(_, id)] => *id,
        [] => {
            return Err(fail(format!(
                "timeline {name} has not diverged from any peer's head"
            )));
        }
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|(p, id)| format!("{} ({})", &p[..12.min(p.len())], id.short()))
                .collect();
            return Err(fail(format!(
                "timeline {name} diverged from several peers: {}; choose one with --peer",
                ids.join(", ")
            )));
        }
    };
    let sig = crate::signature(&repo, None)?;
    let take = match take {
        TakeArg::Local => ops::Take::Local,
        TakeArg::Remote => ops::Take::Remote,
        TakeArg::Merge => ops::Take::Merge,
    };
    let r = ops::resolve(&mut repo, &name, &remote, take, &sig)?;
    drop(repo);
    notify_local_change(root);
    let _ = paths;
    if json {
        print_json(&serde_json::to_value(&r).unwrap_or_default());
    } else {
        match r.head {
            Some(h) => println!(
                "Resolved {name}: new head {} (parents {} and {})",
                h.short(),
                r.local.short(),
                r.remote.short()
            ),
            None => {
                println!("Merging left conflicts in:");
                for p in &r.conflicted {
                    println!("  {p}");
                }
                println!("Fix them, then `ivaldi seal -m ...` records both parents.");
                return Err(Failed(1));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ivaldi_core::config::check::check_log_level;
    use tracing_subscriber::EnvFilter;

    /// The core checks `log_level` without `tracing-subscriber`; whatever it
    /// accepts must also be a filter the daemon can install, or `p2p start`
    /// would fail on a configuration that validated.
    #[test]
    fn every_log_level_the_core_accepts_is_a_valid_env_filter() {
        for l in [
            "info",
            "WARN",
            "Debug",
            "off",
            "trace",
            "error",
            "ivaldi=debug",
            "info,ivaldi_core::node=trace",
            "ivaldi-cli=error, info",
            "a.b=warn,",
        ] {
            assert_eq!(check_log_level(l), Ok(()), "{l}");
            assert!(EnvFilter::try_new(l).is_ok(), "{l}");
        }
    }
}
