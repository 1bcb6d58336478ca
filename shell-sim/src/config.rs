//! What a simulation run is: every parameter, with a command-line form that
//! round-trips exactly, so a failure report can print the one command that
//! reproduces it.

use std::fmt;
use std::time::Duration;

use ivaldi_core::config::{ConflictStrategy, format_duration, parse_duration};

/// The script a run follows during its fault phase. Every script ends the same
/// way: faults stop, the network heals, and the liveness phase begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Faults drawn at random from the enabled set for the whole fault phase.
    Random,
    /// Node 0 is cut off from the rest after a warm-up, until the phase ends.
    Partition,
    /// The nodes split into two halves after a warm-up, until the phase ends.
    SplitBrain,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Random => "random",
            Scenario::Partition => "partition",
            Scenario::SplitBrain => "split-brain",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Scenario::Random),
            "partition" => Ok(Scenario::Partition),
            "split-brain" => Ok(Scenario::SplitBrain),
            _ => Err(format!(
                "unknown scenario {s:?} (random, partition, split-brain)"
            )),
        }
    }
}

/// Which timelines the simulated users write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Node `i` writes only timelines under `n{i}/`: concurrent edits never
    /// diverge a timeline, so heads converge under any conflict strategy.
    Own,
    /// Every node writes the shared timelines `main` and `dev`: diverging edits.
    /// Heads converge only under a resolving conflict strategy.
    Shared,
    /// Both: one seal in four goes to a shared timeline.
    Mixed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Own => "own",
            Workload::Shared => "shared",
            Workload::Mixed => "mixed",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "own" => Ok(Workload::Own),
            "shared" => Ok(Workload::Shared),
            "mixed" => Ok(Workload::Mixed),
            _ => Err(format!("unknown workload {s:?} (own, shared, mixed)")),
        }
    }
}

/// One kind of fault the random scenario may inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Split the nodes into groups; traffic between groups is dropped.
    Partition,
    /// Traffic from one set of nodes to the rest is dropped, not the reverse.
    OneWay,
    /// Reset every connection between two nodes and block the pair for a while.
    Cut,
    /// Stop delivering the bytes in flight on some paths, then release them.
    Hold,
    /// Crash a node (durable store kept, volatile state and unflushed writes
    /// lost) and restart it later.
    Crash,
    /// Make a node's store fail and delay writes (and some reads) for a while.
    Store,
    /// Change a node's clock rate or jump it forward.
    Skew,
    /// Nodes join and leave.
    Churn,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::Partition,
        Fault::OneWay,
        Fault::Cut,
        Fault::Hold,
        Fault::Crash,
        Fault::Store,
        Fault::Skew,
        Fault::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Partition => "partition",
            Fault::OneWay => "oneway",
            Fault::Cut => "cut",
            Fault::Hold => "hold",
            Fault::Crash => "crash",
            Fault::Store => "store",
            Fault::Skew => "skew",
            Fault::Churn => "churn",
        }
    }
}

/// A set of enabled faults.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultSet(u16);

impl FaultSet {
    pub const NONE: FaultSet = FaultSet(0);

    pub fn all() -> FaultSet {
        FaultSet::NONE.with_all(&Fault::ALL)
    }

    pub fn with_all(mut self, faults: &[Fault]) -> FaultSet {
        for f in faults {
            self.0 |= 1 << (*f as u16);
        }
        self
    }

    pub fn contains(self, f: Fault) -> bool {
        self.0 & (1 << (f as u16)) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn list(self) -> Vec<Fault> {
        Fault::ALL
            .iter()
            .copied()
            .filter(|f| self.contains(*f))
            .collect()
    }

    /// Parses `all`, `none`, or a comma-separated list of fault names.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "all" => return Ok(FaultSet::all()),
            "none" | "" => return Ok(FaultSet::NONE),
            _ => {}
        }
        let mut set = FaultSet::NONE;
        for part in s.split(',') {
            let f = Fault::ALL
                .iter()
                .find(|f| f.name() == part.trim())
                .ok_or_else(|| {
                    format!(
                        "unknown fault {part:?} (all, none, or a list of: {})",
                        Fault::ALL.map(|f| f.name()).join(", ")
                    )
                })?;
            set = set.with_all(&[*f]);
        }
        Ok(set)
    }
}

impl fmt::Display for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == FaultSet::all() {
            return f.write_str("all");
        }
        if self.is_empty() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.list().iter().map(|x| x.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for FaultSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultSet({self})")
    }
}

/// Who may connect to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Everyone may reach everyone (faults aside): each node knows
    /// [`NetConfig::known_degree`] random earlier nodes and discovers its
    /// broadcast domain.
    Full,
    /// Traffic flows only along the edges of a random connected graph drawn
    /// from the seed, in which every node has at least `degree` neighbours
    /// (see [`crate::graph`]); each node knows its neighbours. Everything else
    /// goes through the mesh.
    RandomGraph { degree: usize },
}

impl Topology {
    fn parse(s: &str) -> Result<Self, String> {
        if s == "full" {
            return Ok(Topology::Full);
        }
        s.strip_prefix("graph:")
            .and_then(|d| d.parse().ok())
            .filter(|d| *d >= 1)
            .map(|degree| Topology::RandomGraph { degree })
            .ok_or_else(|| format!("unknown topology {s:?} (full, or graph:D with D >= 1)"))
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Full => f.write_str("full"),
            Topology::RandomGraph { degree } => write!(f, "graph:{degree}"),
        }
    }
}

/// How much of the run is written to the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// Nothing formatted (benchmarks).
    Off,
    /// Lines are formatted and hashed, not printed (tests: the determinism check).
    Hash,
    /// Lines are hashed and printed to standard output.
    Print,
}

/// The virtual network's behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// One-way latency between two nodes of the same broadcast domain.
    pub lan_latency: Duration,
    /// One-way latency between domains: each pair gets a fixed value in this range.
    pub wan_latency: (Duration, Duration),
    /// Bytes per second each direction of a connection carries.
    pub bandwidth: u64,
    /// Bytes a sender may have in flight on one connection before its socket is
    /// reported full (`Node::set_blocked`).
    pub window: usize,
    /// Datagram loss, in parts per million.
    pub loss_ppm: u32,
    /// Datagram duplication, in parts per million.
    pub dup_ppm: u32,
    /// Extra random delay per datagram, up to this: datagrams reorder.
    pub jitter: Duration,
    /// Nodes per broadcast domain (one /24 each); discovery stays inside one.
    pub domain_size: usize,
    /// Each node knows this many earlier nodes' addresses (`known_peers`), which
    /// links the domains into one connected graph.
    pub known_degree: usize,
    /// A dial across a partition fails after this.
    pub connect_timeout: Duration,
    /// Who may connect to whom.
    pub topology: Topology,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            lan_latency: Duration::from_millis(1),
            wan_latency: (Duration::from_millis(10), Duration::from_millis(80)),
            bandwidth: 12_500_000,
            window: 512 * 1024,
            loss_ppm: 20_000,
            dup_ppm: 10_000,
            jitter: Duration::from_millis(30),
            domain_size: 6,
            known_degree: 2,
            connect_timeout: Duration::from_secs(3),
            topology: Topology::Full,
        }
    }
}

/// Everything a run depends on. Two runs with equal configurations are
/// identical, event for event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub scenario: Scenario,
    /// Faults the random scenario may inject (scripted scenarios ignore it).
    pub faults: FaultSet,
    /// Length of the fault phase (safety: faults and workload everywhere).
    pub duration: Duration,
    /// Liveness bound: after the heal, all nodes must hold identical heads within
    /// this much virtual time.
    pub bound: Duration,
    pub workload: Workload,
    pub strategy: ConflictStrategy,
    /// Simulated users resolve the conflicts their nodes record, as a user runs
    /// `ivaldi p2p resolve` (a clean merge, else one side), every few seconds,
    /// during the run and after the heal. Meant for `manual`.
    pub resolvers: bool,
    /// Mean virtual time between two seals, network-wide.
    pub seal_every: Duration,
    /// How many nodes have users who seal (spread evenly over the nodes; 0: every
    /// node). The others only replicate.
    pub writers: usize,
    /// How many nodes hold the repository (spread evenly over the nodes; 0:
    /// every node). The others serve an unrelated repository of their own, so
    /// they only relay (through the mesh) and never store its seals; they are
    /// left out of the convergence check. Nodes joining later hold it.
    pub holders: usize,
    /// One seal in this many adds a large file (0: never).
    pub large_every: u32,
    /// Size of a large file, in bytes (above the chunking threshold, 1 MiB).
    pub large_size: usize,
    /// Mean virtual time between two random faults.
    pub fault_every: Duration,
    pub net: NetConfig,
    /// Encrypt connections (the Noise handshake authenticates either way).
    pub encryption: bool,
    /// Nodes' heartbeat interval (a peer silent for three is declared lost).
    pub heartbeat: Duration,
    /// How often queue bounds and convergence are checked.
    pub audit_every: Duration,
    pub trace: TraceMode,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            nodes: 10,
            scenario: Scenario::Random,
            faults: FaultSet::all(),
            duration: Duration::from_secs(180),
            bound: Duration::from_secs(180),
            workload: Workload::Own,
            strategy: ConflictStrategy::Manual,
            resolvers: false,
            seal_every: Duration::from_secs(2),
            writers: 0,
            holders: 0,
            large_every: 40,
            large_size: 1536 * 1024,
            fault_every: Duration::from_secs(8),
            net: NetConfig::default(),
            encryption: true,
            heartbeat: Duration::from_secs(10),
            audit_every: Duration::from_secs(1),
            trace: TraceMode::Hash,
        }
    }
}

fn strategy_name(s: ConflictStrategy) -> &'static str {
    match s {
        ConflictStrategy::Manual => "manual",
        ConflictStrategy::AutoMerge => "auto_merge",
        ConflictStrategy::PreferRemote => "prefer_remote",
        ConflictStrategy::PreferLocal => "prefer_local",
    }
}

/// The command-line help.
pub const USAGE: &str = "\
ivaldi-sim: deterministic simulation of many Ivaldi nodes

USAGE: cargo run -p ivaldi-sim --release -- [OPTIONS]

  --seed S            the seed (default: drawn from the clock, printed first)
  --nodes N           number of nodes at start (default 10)
  --scenario K        random | partition | split-brain (default random)
  --faults LIST       all | none | comma list of partition,oneway,cut,hold,crash,
                      store,skew,churn (default all; used by the random scenario)
  --duration D        fault phase, e.g. 3m (default 3m)
  --bound D           liveness bound after the heal (default 3m)
  --workload W        own | shared | mixed (default own)
  --strategy S        manual | auto_merge | prefer_remote | prefer_local (default manual)
  --seal-every D      mean time between seals, network-wide (default 2s)
  --writers N         only N nodes (spread evenly) have sealing users, 0 = all
                      (default 0)
  --holders N         only N nodes (spread evenly) hold the repository, the
                      others only relay, 0 = all (default 0)
  --large-every N     one seal in N adds a large file, 0 = never (default 40)
  --large-size BYTES  size of a large file (default 1572864)
  --fault-every D     mean time between random faults (default 8s)
  --domain-size N     nodes per broadcast domain (default 6)
  --known-degree N    known_peers per node (default 2)
  --topology T        full | graph:D: connections only along a random connected
                      graph with at least D neighbours per node (default full)
  --loss PPM          datagram loss, parts per million (default 20000)
  --dup PPM           datagram duplication, parts per million (default 10000)
  --jitter D          datagram reordering jitter (default 30ms)
  --bandwidth B/S     per-connection bandwidth in bytes/s (default 12500000)
  --window BYTES      per-connection send window (default 524288)
  --heartbeat D       nodes' heartbeat interval (default 10s)
  --no-encryption     plaintext records after the authenticating handshake
  --resolve           simulated users resolve recorded conflicts (for manual)
  --audit-every D     invariant audit period (default 1s)
  --quiet             no trace, only the seed and the summary
  --trace             print the trace (the default)
  --help              this text

Durations: 250ms, 30s, 5m, 1h30m.";

impl SimConfig {
    /// The options that reproduce this configuration (defaults left out), in
    /// the order `--help` lists them.
    pub fn to_args(&self) -> Vec<String> {
        let d = SimConfig::default();
        let mut a: Vec<String> = vec!["--seed".into(), self.seed.to_string()];
        let mut push = |cond: bool, k: &str, v: String| {
            if cond {
                a.push(k.into());
                a.push(v);
            }
        };
        push(self.nodes != d.nodes, "--nodes", self.nodes.to_string());
        push(
            self.scenario != d.scenario,
            "--scenario",
            self.scenario.name().into(),
        );
        push(self.faults != d.faults, "--faults", self.faults.to_string());
        push(
            self.duration != d.duration,
            "--duration",
            format_duration(self.duration),
        );
        push(
            self.bound != d.bound,
            "--bound",
            format_duration(self.bound),
        );
        push(
            self.workload != d.workload,
            "--workload",
            self.workload.name().into(),
        );
        push(
            self.strategy != d.strategy,
            "--strategy",
            strategy_name(self.strategy).into(),
        );
        push(
            self.seal_every != d.seal_every,
            "--seal-every",
            format_duration(self.seal_every),
        );
        push(
            self.writers != d.writers,
            "--writers",
            self.writers.to_string(),
        );
        push(
            self.holders != d.holders,
            "--holders",
            self.holders.to_string(),
        );
        push(
            self.large_every != d.large_every,
            "--large-every",
            self.large_every.to_string(),
        );
        push(
            self.large_size != d.large_size,
            "--large-size",
            self.large_size.to_string(),
        );
        push(
            self.fault_every != d.fault_every,
            "--fault-every",
            format_duration(self.fault_every),
        );
        push(
            self.net.domain_size != d.net.domain_size,
            "--domain-size",
            self.net.domain_size.to_string(),
        );
        push(
            self.net.known_degree != d.net.known_degree,
            "--known-degree",
            self.net.known_degree.to_string(),
        );
        push(
            self.net.topology != d.net.topology,
            "--topology",
            self.net.topology.to_string(),
        );
        push(
            self.net.loss_ppm != d.net.loss_ppm,
            "--loss",
            self.net.loss_ppm.to_string(),
        );
        push(
            self.net.dup_ppm != d.net.dup_ppm,
            "--dup",
            self.net.dup_ppm.to_string(),
        );
        push(
            self.net.jitter != d.net.jitter,
            "--jitter",
            format_duration(self.net.jitter),
        );
        push(
            self.net.bandwidth != d.net.bandwidth,
            "--bandwidth",
            self.net.bandwidth.to_string(),
        );
        push(
            self.net.window != d.net.window,
            "--window",
            self.net.window.to_string(),
        );
        push(
            self.heartbeat != d.heartbeat,
            "--heartbeat",
            format_duration(self.heartbeat),
        );
        push(
            self.audit_every != d.audit_every,
            "--audit-every",
            format_duration(self.audit_every),
        );
        if !self.encryption {
            a.push("--no-encryption".into());
        }
        if self.resolvers {
            a.push("--resolve".into());
        }
        a
    }

    /// The command that reruns this configuration.
    pub fn command(&self) -> String {
        format!(
            "cargo run -p ivaldi-sim --release -- {}",
            self.to_args().join(" ")
        )
    }

    /// Parses options (without the program name). Returns the configuration and
    /// whether a seed was given; `--help` is an `Err` holding the usage text.
    pub fn from_args<I, S>(args: I) -> Result<(SimConfig, bool), String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut c = SimConfig {
            trace: TraceMode::Print,
            ..SimConfig::default()
        };
        let mut seeded = false;
        let args: Vec<String> = args.into_iter().map(|s| s.as_ref().to_owned()).collect();
        let mut i = 0;
        while i < args.len() {
            let key = args[i].as_str();
            let flag = matches!(
                key,
                "--no-encryption" | "--resolve" | "--quiet" | "--trace" | "--help"
            );
            let val = if flag {
                ""
            } else {
                i += 1;
                args.get(i)
                    .map(String::as_str)
                    .ok_or_else(|| format!("{key} needs a value"))?
            };
            let dur = |v: &str| parse_duration(v).map_err(|e| format!("{key}: {e}"));
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{key}: {v:?} is not a number"))
            };
            match key {
                "--help" => return Err(USAGE.to_owned()),
                "--seed" => {
                    c.seed = num(val)?;
                    seeded = true;
                }
                "--nodes" => c.nodes = num(val)? as usize,
                "--scenario" => c.scenario = Scenario::parse(val)?,
                "--faults" => c.faults = FaultSet::parse(val)?,
                "--duration" => c.duration = dur(val)?,
                "--bound" => c.bound = dur(val)?,
                "--workload" => c.workload = Workload::parse(val)?,
                "--strategy" => {
                    c.strategy = val
                        .parse()
                        .map_err(|e: ivaldi_core::config::ConfigError| e.to_string())?
                }
                "--seal-every" => c.seal_every = dur(val)?,
                "--writers" => c.writers = num(val)? as usize,
                "--holders" => c.holders = num(val)? as usize,
                "--large-every" => c.large_every = num(val)? as u32,
                "--large-size" => c.large_size = num(val)? as usize,
                "--fault-every" => c.fault_every = dur(val)?,
                "--domain-size" => c.net.domain_size = num(val)? as usize,
                "--known-degree" => c.net.known_degree = num(val)? as usize,
                "--topology" => c.net.topology = Topology::parse(val)?,
                "--loss" => c.net.loss_ppm = num(val)?.min(1_000_000) as u32,
                "--dup" => c.net.dup_ppm = num(val)?.min(1_000_000) as u32,
                "--jitter" => c.net.jitter = dur(val)?,
                "--bandwidth" => c.net.bandwidth = num(val)?,
                "--window" => c.net.window = num(val)? as usize,
                "--heartbeat" => c.heartbeat = dur(val)?,
                "--audit-every" => c.audit_every = dur(val)?,
                "--no-encryption" => c.encryption = false,
                "--resolve" => c.resolvers = true,
                "--quiet" => c.trace = TraceMode::Hash,
                "--trace" => c.trace = TraceMode::Print,
                _ => return Err(format!("unknown option {key:?}\n\n{USAGE}")),
            }
            i += 1;
        }
        c.validate()?;
        Ok((c, seeded))
    }

    /// Refuses values the simulator cannot run.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if self.nodes > 60_000 {
            return Err("--nodes: at most 60000".into());
        }
        if self.net.domain_size == 0 || self.net.domain_size > 250 {
            return Err("--domain-size must be 1 to 250".into());
        }
        if self.net.bandwidth < 1000 {
            return Err("--bandwidth must be at least 1000 bytes/s".into());
        }
        if self.net.window < 64 * 1024 {
            return Err("--window must be at least 65536".into());
        }
        if self.heartbeat < Duration::from_millis(100) {
            return Err("--heartbeat must be at least 100ms".into());
        }
        if self.seal_every.is_zero() || self.fault_every.is_zero() || self.audit_every.is_zero() {
            return Err("--seal-every, --fault-every and --audit-every must be positive".into());
        }
        if self.large_every > 0 && (self.large_size as u64) > 64 * 1024 * 1024 {
            return Err("--large-size: at most 64 MiB".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let c = SimConfig {
            seed: 42,
            nodes: 50,
            scenario: Scenario::SplitBrain,
            faults: FaultSet::NONE.with_all(&[Fault::Crash, Fault::Hold]),
            duration: Duration::from_secs(90),
            workload: Workload::Shared,
            strategy: ConflictStrategy::AutoMerge,
            holders: 7,
            net: NetConfig {
                topology: Topology::RandomGraph { degree: 3 },
                ..NetConfig::default()
            },
            encryption: false,
            resolvers: true,
            trace: TraceMode::Print,
            ..SimConfig::default()
        };
        let (back, seeded) = SimConfig::from_args(c.to_args()).unwrap();
        assert!(seeded);
        assert_eq!(back, c);
        assert!(SimConfig::from_args(["--nodes"]).is_err());
        assert!(SimConfig::from_args(["--faults", "bogus"]).is_err());
        assert!(SimConfig::from_args(["--topology", "graph:0"]).is_err());
        assert!(SimConfig::from_args(["--topology", "ring"]).is_err());
        assert_eq!(FaultSet::parse("all").unwrap().to_string(), "all");
    }
}
