//! The node's settings, with the feature list's defaults.
//!
//! Durations are written as text (`"30s"`, `"5m"`, `"250ms"`, `"1h30m"`) in
//! `config.json` and on the command line; [`parse_duration`] is the one parser.
//! [`from_json`] reads a file and refuses it whole when any key is unknown or
//! any value is out of bounds (see [`check`]).

pub mod check;
pub mod edit;
pub use check::{field_names, from_json};

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

pub use crate::conflict::ConflictStrategy;

/// Here rather than beside the type: its error is a configuration error.
impl std::str::FromStr for ConflictStrategy {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(Self::Manual),
            "auto_merge" => Ok(Self::AutoMerge),
            "prefer_remote" => Ok(Self::PreferRemote),
            "prefer_local" => Ok(Self::PreferLocal),
            _ => Err(ConfigError::Invalid {
                field: "conflict_strategy",
                reason: format!(
                    "{s:?} is not one of manual, auto_merge, prefer_remote, prefer_local"
                ),
            }),
        }
    }
}

/// How a deliberately faulty relay misbehaves (see `Config::fault_relay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayFault {
    Drop,
    Corrupt,
    Replay,
}

/// A setting with an invalid value, or a configuration file that cannot be
/// read as settings. Every message names the key it is about.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ConfigError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A key of `config.json` that is no setting; `suggestion` is the
    /// nearest one, when one is near.
    #[error("unknown key {key:?} in config.json{}", did_you_mean(.suggestion))]
    UnknownKey {
        key: String,
        suggestion: Option<String>,
    },
    /// A setting named on the command line (`config get/set/unset`) that
    /// does not exist.
    #[error("there is no setting {key:?}{}", did_you_mean(.suggestion))]
    UnknownSetting {
        key: String,
        suggestion: Option<String>,
    },
    /// A value of the wrong type or shape for its key.
    #[error("{key}: {reason}")]
    BadValue { key: String, reason: String },
    /// The file as a whole is not a JSON object of settings.
    #[error("{0}")]
    File(String),
}

impl From<crate::access::AccessError> for ConfigError {
    fn from(e: crate::access::AccessError) -> Self {
        ConfigError::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean {s:?}?"))
        .unwrap_or_default()
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Everything the protocol core needs to know about its limits and habits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP port for peer connections.
    pub port: u16,
    /// UDP port for discovery.
    pub discovery_port: u16,
    /// Most peer connections, inbound and outbound together.
    pub max_peers: usize,
    /// Addresses (`host:port`) dialled at start and redialled with backoff.
    pub known_peers: Vec<String>,
    pub auto_sync: bool,
    #[serde(with = "duration_text")]
    pub sync_interval: Duration,
    /// A sync that makes no progress for this long fails.
    #[serde(with = "duration_text")]
    pub sync_timeout: Duration,
    pub conflict_strategy: ConflictStrategy,
    /// Per-timeline strategies: exact names or `prefix/*` patterns.
    pub timeline_strategies: std::collections::BTreeMap<String, ConflictStrategy>,
    pub max_concurrent_syncs: usize,
    /// Largest frame accepted or sent, in bytes.
    pub max_message_size: u32,
    #[serde(with = "duration_text")]
    pub heartbeat_interval: Duration,
    /// A peer silent for this many heartbeat intervals is declared lost.
    pub heartbeat_misses: u32,
    /// Encrypt frames after the (always authenticating) handshake.
    pub encryption: bool,
    /// Keys this node exchanges repository data with, each with the access
    /// it grants (see [`crate::trust`]).
    pub trusted_peers: Vec<crate::trust::TrustedPeer>,
    /// Whether keys that are not trusted are let in: `off` (the default),
    /// `read` or `write`. Only for a throwaway LAN.
    pub open: crate::trust::OpenMode,
    /// CIDR ranges peers may connect from and be discovered in; empty means any.
    pub allowed_networks: Vec<String>,
    /// Compress object frames when the peer supports it.
    pub compression: bool,
    /// Inbound connections one source (an IPv4 address, or an IPv6 /64) may
    /// open in a burst; beyond it they are refused until its allowance
    /// refills at `accept_rate_per_sec`. Keeps one host from churning
    /// connections (every accepted one costs a Noise handshake) while honest
    /// peers, which connect a few times, never notice.
    pub accept_burst: u32,
    /// Refill rate of `accept_burst`, connections per second.
    pub accept_rate_per_sec: u32,
    /// A connection must finish its handshake within this time.
    #[serde(with = "duration_text")]
    pub handshake_timeout: Duration,
    /// Reconnect backoff bounds.
    #[serde(with = "duration_text")]
    pub reconnect_min: Duration,
    #[serde(with = "duration_text")]
    pub reconnect_max: Duration,
    /// Address the TCP listener binds (the port is `port`).
    pub bind_addr: String,
    /// Where discovery announcements go (`ip:port` or `ip`, the discovery port
    /// implied). Empty means every IPv4 interface's broadcast address. The
    /// environment variable `IVALDI_DISCOVERY_ADDRS` (comma-separated) overrides it;
    /// tests set it to `127.255.255.255` so nothing leaves the machine.
    pub discovery_addrs: Vec<String>,
    /// How often discovery announces this node.
    #[serde(with = "duration_text")]
    pub discovery_interval: Duration,
    /// Turn discovery (sending and listening) off entirely.
    pub discovery: bool,
    /// Log filter for the daemon (`RUST_LOG` overrides it), e.g. `info` or `ivaldi=debug`.
    pub log_level: String,
    /// Node ids this node refuses direct connections with; they are still
    /// reached through the mesh. (A policy knob, and how tests build topologies.)
    pub no_direct: Vec<crate::NodeId>,
    /// Relay frames of other nodes' sessions through this node.
    pub relay: bool,
    /// Most bytes per second this node relays for others (0: no cap). Frames
    /// over the cap are dropped; the sessions' end-to-end channels notice.
    pub relay_rate: u64,
    /// Fault injection for tests and the simulator: this node misbehaves as a
    /// relay (drops, corrupts or replays the frames it relays). Never set it in a
    /// real deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_relay: Option<RelayFault>,
    /// How often the mesh re-announces this node's links when nothing changed
    /// (changes are announced at once, and a new neighbour gets the whole
    /// topology on connect). Advertisements not refreshed for three intervals
    /// age out. Every refresh floods the whole mesh, so this is long by default.
    #[serde(with = "duration_text")]
    pub topology_interval: Duration,
    /// Directory for the daemon's state (identity, socket, log); relative paths are
    /// inside `.ivaldi/`.
    pub data_dir: String,
    /// Named groups of peers (node ids), for `access` rules as `@name`.
    pub peer_groups: std::collections::BTreeMap<String, Vec<crate::NodeId>>,
    /// Per-timeline access for peers, first match wins; timelines no rule
    /// matches are writable by every peer allowed to connect (see
    /// [`crate::access`]).
    pub access: Vec<crate::access::AccessRule>,
    /// Protocol features not to offer (`lz4`, `topology-summary`): for testing
    /// that peers lacking a feature still interoperate over the common subset.
    pub features_off: Vec<String>,
    /// Most bytes per second this node sends to all peers together (0: no
    /// cap). Bulk object data waits for the allowance; control messages
    /// (heartbeats, announcements, sync replies) never wait but are counted,
    /// so sessions stay alive on a saturated link. Written as a number of
    /// bytes or as text with a binary suffix (`"500K"`, `"10M"`, `"1G"`).
    #[serde(with = "rate_text")]
    pub upload_rate: u64,
    /// Most bytes per second this node reads from all peers together (0: no
    /// cap). The daemon stops reading a socket while the allowance is spent,
    /// which lets TCP flow control slow the sender down.
    #[serde(with = "rate_text")]
    pub download_rate: u64,
    /// Upload cap for each peer on its own (0: no cap), on top of `upload_rate`.
    #[serde(with = "rate_text")]
    pub peer_upload_rate: u64,
    /// Download cap for each peer on its own (0: no cap), on top of `download_rate`.
    #[serde(with = "rate_text")]
    pub peer_download_rate: u64,
    /// Per-peer caps by node id, replacing `peer_upload_rate` and
    /// `peer_download_rate` for that peer (0 there means no cap for it).
    pub peer_rates: std::collections::BTreeMap<crate::NodeId, PeerRates>,
    /// Most timelines one sync may create on this node; new names a peer
    /// offers beyond it wait for the next sync (see `node::limits`).
    pub max_new_timelines_per_sync: u32,
    /// Most timelines one peer may create on this node while the daemon runs
    /// (the count restarts with the daemon); new names beyond it are refused,
    /// counted in `timelines_refused` and reported once per sync.
    pub max_new_timelines_per_peer: u32,
}

/// Rate caps for one peer (bytes per second, 0: no cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PeerRates {
    #[serde(with = "rate_text")]
    pub upload: u64,
    #[serde(with = "rate_text")]
    pub download: u64,
}

impl Config {
    /// The upload cap for one peer (0: none): its `peer_rates` entry, else
    /// `peer_upload_rate`.
    pub fn peer_upload_cap(&self, peer: &crate::NodeId) -> u64 {
        self.peer_rates
            .get(peer)
            .map_or(self.peer_upload_rate, |r| r.upload)
    }

    /// The download cap for one peer (0: none), like [`Config::peer_upload_cap`].
    pub fn peer_download_cap(&self, peer: &crate::NodeId) -> u64 {
        self.peer_rates
            .get(peer)
            .map_or(self.peer_download_rate, |r| r.download)
    }
}

impl crate::discovery::DiscoveryConfig {
    /// The discovery defaults, with the node configuration's
    /// `allowed_networks`. Written here, not in `discovery`, so discovery does
    /// not depend on the node's configuration.
    pub fn from_config(cfg: &Config) -> Self {
        crate::discovery::DiscoveryConfig {
            allowed_networks: cfg.allowed_networks.clone(),
            ..Self::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 9090,
            discovery_port: 9091,
            max_peers: 50,
            known_peers: Vec::new(),
            auto_sync: true,
            sync_interval: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(60),
            conflict_strategy: ConflictStrategy::Manual,
            timeline_strategies: std::collections::BTreeMap::new(),
            max_concurrent_syncs: 5,
            max_message_size: 10 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_misses: 3,
            encryption: true,
            trusted_peers: Vec::new(),
            open: crate::trust::OpenMode::Off,
            allowed_networks: Vec::new(),
            compression: true,
            handshake_timeout: Duration::from_secs(10),
            accept_burst: 30,
            accept_rate_per_sec: 2,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            bind_addr: "0.0.0.0".to_owned(),
            discovery_addrs: Vec::new(),
            discovery_interval: Duration::from_secs(5),
            discovery: true,
            log_level: "info".to_owned(),
            data_dir: "p2p".to_owned(),
            no_direct: Vec::new(),
            relay: true,
            relay_rate: 0,
            fault_relay: None,
            topology_interval: Duration::from_secs(1800),
            peer_groups: std::collections::BTreeMap::new(),
            access: Vec::new(),
            features_off: Vec::new(),
            upload_rate: 0,
            download_rate: 0,
            peer_upload_rate: 0,
            peer_download_rate: 0,
            peer_rates: std::collections::BTreeMap::new(),
            max_new_timelines_per_sync: 100,
            max_new_timelines_per_peer: 1_000,
        }
    }
}

/// Smallest frame limit that still carries one maximal chunk with its headers.
pub const MIN_MESSAGE_SIZE: u32 = 1024 * 1024;

impl Config {
    /// Checks every value, so a bad config file is refused with a clear reason
    /// instead of misbehaving later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_peers == 0 {
            return Err(invalid("max_peers", "must be at least 1"));
        }
        if self.max_concurrent_syncs == 0 {
            return Err(invalid("max_concurrent_syncs", "must be at least 1"));
        }
        if self.max_new_timelines_per_sync == 0 {
            // 0 per peer refuses every new name; 0 per sync would defer them forever.
            return Err(invalid("max_new_timelines_per_sync", "must be at least 1"));
        }
        if self.max_message_size < MIN_MESSAGE_SIZE {
            return Err(invalid(
                "max_message_size",
                format!("must be at least {MIN_MESSAGE_SIZE} bytes"),
            ));
        }
        // Durations (both bounds), sizes, rates, networks, log filter.
        check::limits(self)?;
        if self.reconnect_max < self.reconnect_min {
            return Err(invalid("reconnect_max", "must not be below reconnect_min"));
        }
        if self.bind_addr.parse::<core::net::IpAddr>().is_err() {
            return Err(invalid(
                "bind_addr",
                format!("{:?} is not an IP address", self.bind_addr),
            ));
        }
        for k in &self.known_peers {
            if k.parse::<core::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "known_peers",
                    format!("{k:?} is not an ip:port address"),
                ));
            }
        }
        for a in &self.discovery_addrs {
            if a.parse::<core::net::SocketAddr>().is_err()
                && a.parse::<core::net::IpAddr>().is_err()
            {
                return Err(invalid(
                    "discovery_addrs",
                    format!("{a:?} is not an ip or ip:port address"),
                ));
            }
        }
        if self.accept_burst == 0 || self.accept_rate_per_sec == 0 {
            return Err(invalid(
                "accept_burst/accept_rate_per_sec",
                "must be at least 1",
            ));
        }
        if self.heartbeat_misses == 0 {
            return Err(invalid("heartbeat_misses", "must be at least 1"));
        }
        crate::access::validate(&self.access, &self.peer_groups)?;
        for p in &self.trusted_peers {
            if p.access == crate::access::Access::None {
                return Err(invalid(
                    "trusted_peers",
                    format!("{}: access must be read or write (use untrust)", p.id),
                ));
            }
        }
        Ok(())
    }
}

/// Parses `"30s"`, `"5m"`, `"250ms"`, `"1h30m"`, `"2d"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?}: expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let too_large = || format!("{text:?}: too large");
        let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
        let d = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => secs(1),
            "m" => secs(60),
            "h" => secs(3600),
            "d" => secs(86_400),
            "" => return Err(format!("{text:?}: missing unit (ms, s, m, h, d)")),
            u => return Err(format!("{text:?}: unknown unit {u:?} (use ms, s, m, h, d)")),
        }
        .ok_or_else(too_large)?;
        // Refused rather than saturated: a clamped value would be accepted
        // as if the user had meant it.
        total = total.checked_add(d).ok_or_else(too_large)?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Parses a rate or size: plain bytes (`"65536"`) or a number with a binary
/// suffix `K`, `M`, `G` (powers of 1024), optionally followed by `B`/`iB` and
/// `/s`: `"500K"`, `"10MB/s"`, `"1GiB"`. `"0"` means no cap.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("{text:?}: unknown unit (use K, M or G)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let digits = digits.trim();
    if digits.is_empty() {
        return Err(format!("{text:?}: expected a number"));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number of bytes"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?}: too large"))
}

/// Formats a rate the way [`parse_rate`] reads it (`"10M"`, `"1500"`).
pub fn format_rate(bytes: u64) -> String {
    for (suffix, m) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes != 0 && bytes.is_multiple_of(m) {
            return format!("{}{suffix}", bytes / m);
        }
    }
    bytes.to_string()
}

/// Rates are stored as numbers; text such as `"10M"` is accepted when read.
mod rate_text {
    use super::*;

    pub fn serialize<S: Serializer>(r: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*r)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => parse_rate(&t).map_err(serde::de::Error::custom),
        }
    }
}

mod duration_text {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615s1s").is_err());
        assert_eq!(
            parse_duration("18446744073709551615s"),
            Ok(Duration::from_secs(u64::MAX))
        );
        for d in ["30s", "5m", "2h", "250ms"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn rates_parse_and_format() {
        assert_eq!(parse_rate("65536"), Ok(65536));
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("10MB/s"), Ok(10 << 20));
        assert_eq!(parse_rate("1G"), Ok(1 << 30));
        assert_eq!(parse_rate("2 MiB/s"), Ok(2 << 20));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("10X").is_err());
        assert!(parse_rate("M").is_err());
        assert!(parse_rate("").is_err());
        assert!(parse_rate("-5").is_err());
        assert!(parse_rate("99999999999999G").is_err());
        for r in ["10M", "500K", "1G", "1500"] {
            assert_eq!(format_rate(parse_rate(r).unwrap()), r);
        }
        let c: Config =
            serde_json::from_str(r#"{"upload_rate": "1M", "download_rate": 2048}"#).unwrap();
        assert_eq!((c.upload_rate, c.download_rate), (1 << 20, 2048));
        let peer = "ab".repeat(32);
        let c: Config = serde_json::from_str(&format!(
            r#"{{"peer_upload_rate": "4K", "peer_rates": {{"{peer}": {{"upload": "1K"}}}}}}"#
        ))
        .unwrap();
        c.validate().unwrap();
        let peer: crate::NodeId = peer.parse().unwrap();
        assert_eq!(c.peer_upload_cap(&peer), 1024);
        assert_eq!(c.peer_download_cap(&peer), 0);
        assert_eq!(c.peer_upload_cap(&crate::NodeId([0xcd; 32])), 4096);
        // An id that is not one is refused as the file is read, naming the key.
        let bad = check::from_json(br#"{"peer_rates": {"nope": {"upload": 1}}}"#).unwrap_err();
        assert!(bad.to_string().contains("peer_rates"), "{bad}");
    }

    #[test]
    fn defaults_match_the_feature_list_and_round_trip() {
        let c = Config::default();
        assert_eq!((c.port, c.discovery_port, c.max_peers), (9090, 9091, 50));
        assert!(c.auto_sync && c.encryption);
        assert_eq!(c.max_message_size, 10 * 1024 * 1024);
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Config>(r#"{"bogus": 1}"#).is_err());
        let bad = Config {
            max_peers: 0,
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }
}
