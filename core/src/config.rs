//! The node's settings, with the feature list's defaults, by layer.
//!
//! [`NodeConfig`] is what the protocol core reads, one section per part of
//! the node ([`ConnectionSettings`], [`SyncSettings`], [`LimitSettings`],
//! [`DiscoverySettings`], [`MeshSettings`], [`AccessSettings`],
//! [`RateSettings`]), each in its own file with its defaults and its checks.
//! What only the daemon reads (bind address, discovery addresses and port,
//! log level, data directory) is the shell's `DaemonConfig`.
//!
//! `config.json` stays one flat object: the sections are flattened into it, so
//! a setting's key is its field name and files written before the split load
//! unchanged. Any type made of flattened sections is a [`Settings`] and is
//! read, checked and edited by name by the same code ([`check`], [`edit`]).
//!
//! Durations are written as text (`"30s"`, `"5m"`, `"250ms"`, `"1h30m"`) in
//! `config.json` and on the command line; [`parse_duration`] is the one parser.
//! [`from_json`] reads a file and refuses it whole when any key is unknown or
//! any value is out of bounds (see [`check`]).

pub mod access;
pub mod check;
pub mod connections;
pub mod discovery;
pub mod edit;
pub mod limits;
pub mod mesh;
pub mod rates;
pub mod sync;
pub use access::AccessSettings;
pub use check::{field_names, from_json};
pub use connections::ConnectionSettings;
pub use discovery::DiscoverySettings;
pub use limits::LimitSettings;
pub use mesh::MeshSettings;
pub use rates::{PeerRates, RateSettings};
pub use sync::SyncSettings;

use std::time::Duration;

use serde::de::DeserializeOwned;
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

/// How a deliberately faulty relay misbehaves (see `MeshSettings::fault_relay`).
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

/// A configuration read from flat JSON keys: [`NodeConfig`] here, the
/// daemon's whole `config.json` in the shell. Everything that reads, checks
/// or edits settings by name works on any of them.
pub trait Settings: Serialize + DeserializeOwned + Default + Clone {
    /// The keys the JSON object may hold. Built from the sections'
    /// `Deserialize` implementations ([`check::keys_of`]), so a new field is
    /// a known key without being listed anywhere.
    fn keys() -> &'static [&'static str];
    /// Checks every value, so a bad config file is refused with a clear
    /// reason instead of misbehaving later.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Everything the protocol core needs to know about its limits and habits,
/// one section per part of the node. A change reaches each part through
/// `node::reconfigure`, which hands every part its section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    #[serde(flatten)]
    pub connections: ConnectionSettings,
    #[serde(flatten)]
    pub sync: SyncSettings,
    #[serde(flatten)]
    pub limits: LimitSettings,
    #[serde(flatten)]
    pub discovery: DiscoverySettings,
    #[serde(flatten)]
    pub mesh: MeshSettings,
    #[serde(flatten)]
    pub access: AccessSettings,
    #[serde(flatten)]
    pub rates: RateSettings,
}

impl NodeConfig {
    /// Checks every section, so a bad config file is refused with a clear
    /// reason instead of misbehaving later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.connections.validate()?;
        self.sync.validate()?;
        self.limits.validate()?;
        self.discovery.validate()?;
        self.mesh.validate()?;
        self.access.validate()?;
        self.rates.validate()
    }

    /// This configuration changed by `f`: a short way to write a variant
    /// (`NodeConfig::default().with(|c| c.connections.max_peers = 2)`).
    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

impl Settings for NodeConfig {
    fn keys() -> &'static [&'static str] {
        static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            [
                check::keys_of::<ConnectionSettings>(),
                check::keys_of::<SyncSettings>(),
                check::keys_of::<LimitSettings>(),
                check::keys_of::<DiscoverySettings>(),
                check::keys_of::<MeshSettings>(),
                check::keys_of::<AccessSettings>(),
                check::keys_of::<RateSettings>(),
            ]
            .concat()
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        NodeConfig::validate(self)
    }
}

impl crate::discovery::DiscoveryConfig {
    /// The discovery defaults, with the node configuration's discovery
    /// interval and `allowed_networks`. Written here, not in `discovery`, so
    /// discovery does not depend on the node's configuration.
    pub fn from_config(cfg: &NodeConfig) -> Self {
        let d = Self::default();
        let interval = cfg.discovery.discovery_interval;
        crate::discovery::DiscoveryConfig {
            allowed_networks: cfg.access.allowed_networks.clone(),
            interval,
            stale_after: interval * 3,
            jitter: d.jitter.min(interval / 4),
            // Many daemons can share one host (and so one source address):
            // allow a few announcements a second per address, still bounding
            // a flood.
            rate_burst: d.rate_burst.max(30),
            rate_per_sec: d.rate_per_sec.max(10),
            ..d
        }
    }
}

/// Smallest frame limit that still carries one maximal chunk with its headers.
pub const MIN_MESSAGE_SIZE: u32 = 1024 * 1024;

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
pub(crate) mod rate_text {
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

pub(crate) mod duration_text {
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
        let c: NodeConfig =
            serde_json::from_str(r#"{"upload_rate": "1M", "download_rate": 2048}"#).unwrap();
        assert_eq!(
            (c.rates.upload_rate, c.rates.download_rate),
            (1 << 20, 2048)
        );
        let peer = "ab".repeat(32);
        let c: NodeConfig = serde_json::from_str(&format!(
            r#"{{"peer_upload_rate": "4K", "peer_rates": {{"{peer}": {{"upload": "1K"}}}}}}"#
        ))
        .unwrap();
        c.validate().unwrap();
        let peer: crate::NodeId = peer.parse().unwrap();
        assert_eq!(c.rates.peer_upload_cap(&peer), 1024);
        assert_eq!(c.rates.peer_download_cap(&peer), 0);
        assert_eq!(c.rates.peer_upload_cap(&crate::NodeId([0xcd; 32])), 4096);
        // An id that is not one is refused as the file is read, naming the key.
        let bad = check::from_json(br#"{"peer_rates": {"nope": {"upload": 1}}}"#).unwrap_err();
        assert!(bad.to_string().contains("peer_rates"), "{bad}");
    }

    #[test]
    fn defaults_match_the_feature_list_and_round_trip() {
        let c = NodeConfig::default();
        assert_eq!((c.connections.port, c.connections.max_peers), (9090, 50));
        assert!(c.sync.auto_sync && c.connections.encryption);
        assert_eq!(c.limits.max_message_size, 10 * 1024 * 1024);
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<NodeConfig>(&json).unwrap(), c);
        assert!(from_json(br#"{"bogus": 1}"#).is_err());
        let bad = c.with(|c| c.connections.max_peers = 0);
        assert!(bad.validate().is_err());
    }

    /// Every key of the flat file before the split into sections, with a
    /// value other than its default: the sections read them all, and write
    /// the same keys and values back.
    #[test]
    fn a_flat_file_from_before_the_sections_reads_and_writes_back() {
        let text = r#"{
            "port": 9100, "max_peers": 7, "known_peers": ["127.0.0.1:9000"],
            "auto_sync": false, "sync_interval": "1m", "sync_timeout": "2m",
            "conflict_strategy": "auto_merge",
            "timeline_strategies": {"release/*": "prefer_local"},
            "max_concurrent_syncs": 2, "max_message_size": 2097152,
            "heartbeat_interval": "10s", "heartbeat_misses": 4, "encryption": false,
            "trusted_peers": [{"id": "PEER", "access": "read"}], "open": "read",
            "allowed_networks": ["127.0.0.0/8"], "compression": false,
            "accept_burst": 5, "accept_rate_per_sec": 3, "handshake_timeout": "5s",
            "reconnect_min": "2s", "reconnect_max": "2m",
            "discovery_interval": "9s", "discovery": false,
            "no_direct": ["PEER"], "relay": false, "relay_rate": 1000,
            "fault_relay": "drop", "topology_interval": "1h",
            "peer_groups": {"team": ["PEER"]},
            "access": [{"timelines": "main", "peers": ["@team"], "access": "read"}],
            "features_off": ["lz4"], "upload_rate": 1024, "download_rate": 2048,
            "peer_upload_rate": 4096, "peer_download_rate": 8192,
            "peer_rates": {"PEER": {"upload": 1, "download": 2}},
            "max_new_timelines_per_sync": 10, "max_new_timelines_per_peer": 20
        }"#
        .replace("PEER", &"ab".repeat(32));
        let old: serde_json::Value = serde_json::from_str(&text).unwrap();
        let bytes = serde_json::to_vec(&old).unwrap();
        let c = from_json(&bytes).unwrap();
        assert_eq!(c.connections.port, 9100);
        assert_eq!(c.access.rules.len(), 1);
        assert!(!c.discovery.enabled);
        assert_eq!(c.mesh.fault_relay, Some(RelayFault::Drop));
        assert_eq!(c.limits.max_new_timelines_per_peer, 20);
        let mut keys: Vec<&str> = old
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut known = NodeConfig::keys().to_vec();
        keys.sort_unstable();
        known.sort_unstable();
        assert_eq!(
            keys, known,
            "every old key is a key of a section, and no other"
        );
        assert_eq!(serde_json::to_value(&c).unwrap(), old);
        // Defaults are written whole, and read back the same.
        let d = serde_json::to_value(NodeConfig::default()).unwrap();
        assert_eq!(
            from_json(d.to_string().as_bytes()).unwrap(),
            NodeConfig::default()
        );
    }
}
