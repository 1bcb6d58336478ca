//! `config.json` as the daemon reads it: the settings only the daemon uses
//! ([`DaemonConfig`]: where it listens, where discovery datagrams go, its log
//! and its state directory) beside the core's [`NodeConfig`].
//!
//! Both are flattened into one JSON object, so the file is the flat list of
//! keys it always was; [`ConfigFile`] is a [`Settings`], so the core's
//! reader ([`read_json`]) and `config get/set/unset` (`edit`) work on the
//! whole file, daemon keys included, with the same checks and messages.

use ivaldi_core::config::check::{check_log_level, keys_of, read_json};
use ivaldi_core::config::{ConfigError, NodeConfig, Settings};
use serde::{Deserialize, Serialize};

/// What only the daemon reads. None of it reaches the core, and a change
/// takes effect at the next start (see `daemon::reload`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DaemonConfig {
    /// UDP port for discovery.
    pub discovery_port: u16,
    /// Address the TCP listener binds (the port is `port`).
    pub bind_addr: String,
    /// Where discovery announcements go (`ip:port` or `ip`, the discovery port
    /// implied). Empty means every IPv4 interface's broadcast address. The
    /// environment variable `IVALDI_DISCOVERY_ADDRS` (comma-separated) overrides it;
    /// tests set it to `127.255.255.255` so nothing leaves the machine.
    pub discovery_addrs: Vec<String>,
    /// Log filter for the daemon (`RUST_LOG` overrides it), e.g. `info` or `ivaldi=debug`.
    pub log_level: String,
    /// Directory for the daemon's state (identity, socket, log); relative paths are
    /// inside `.ivaldi/`.
    pub data_dir: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            discovery_port: 9091,
            bind_addr: "0.0.0.0".to_owned(),
            discovery_addrs: Vec::new(),
            log_level: "info".to_owned(),
            data_dir: "p2p".to_owned(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl DaemonConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bind_addr.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "bind_addr",
                format!("{:?} is not an IP address", self.bind_addr),
            ));
        }
        for a in &self.discovery_addrs {
            match a.parse::<std::net::SocketAddr>() {
                Ok(s) if s.port() == 0 => {
                    return Err(invalid(
                        "discovery_addrs",
                        format!("{a:?} has port 0, which nothing listens on"),
                    ));
                }
                Ok(_) => {}
                Err(_) if a.parse::<std::net::IpAddr>().is_ok() => {}
                Err(_) => {
                    return Err(invalid(
                        "discovery_addrs",
                        format!("{a:?} is not an ip or ip:port address"),
                    ));
                }
            }
        }
        check_log_level(&self.log_level).map_err(|e| invalid("log_level", e))?;
        if self.data_dir.is_empty()
            || self.data_dir.contains("..")
            || self.data_dir.starts_with('/')
        {
            return Err(invalid(
                "data_dir",
                "must be a relative directory inside .ivaldi",
            ));
        }
        Ok(())
    }
}

/// The whole of `config.json`: the core's settings and the daemon's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(flatten)]
    pub node: NodeConfig,
    #[serde(flatten)]
    pub daemon: DaemonConfig,
}

impl ConfigFile {
    /// Reads `config.json`'s bytes, refusing the file whole when any key is
    /// unknown or any value out of bounds.
    pub fn from_json(bytes: &[u8]) -> Result<ConfigFile, ConfigError> {
        read_json(bytes)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.node.validate()?;
        self.daemon.validate()
    }
}

impl Settings for ConfigFile {
    fn keys() -> &'static [&'static str] {
        static KEYS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| [NodeConfig::keys(), keys_of::<DaemonConfig>()].concat())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ConfigFile::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ivaldi_core::config::edit;

    /// A config.json as written before the settings were split by layer
    /// (every key, in the old order, pretty-printed as `save_config` does).
    const OLD_FILE: &str = r#"{
  "port": 9090,
  "discovery_port": 9191,
  "max_peers": 50,
  "known_peers": ["127.0.0.1:9000"],
  "auto_sync": true,
  "sync_interval": "30s",
  "sync_timeout": "1m",
  "conflict_strategy": "manual",
  "timeline_strategies": {},
  "max_concurrent_syncs": 5,
  "max_message_size": 10485760,
  "heartbeat_interval": "30s",
  "heartbeat_misses": 3,
  "encryption": true,
  "trusted_peers": [],
  "open": "off",
  "allowed_networks": [],
  "compression": true,
  "accept_burst": 30,
  "accept_rate_per_sec": 2,
  "handshake_timeout": "10s",
  "reconnect_min": "1s",
  "reconnect_max": "1m",
  "bind_addr": "127.0.0.1",
  "discovery_addrs": ["127.255.255.255"],
  "discovery_interval": "5s",
  "discovery": true,
  "log_level": "debug",
  "no_direct": [],
  "relay": true,
  "relay_rate": 0,
  "topology_interval": "30m",
  "data_dir": "p2p",
  "peer_groups": {},
  "access": [],
  "features_off": [],
  "upload_rate": 0,
  "download_rate": 0,
  "peer_upload_rate": 0,
  "peer_download_rate": 0,
  "peer_rates": {},
  "max_new_timelines_per_sync": 100,
  "max_new_timelines_per_peer": 1000
}"#;

    #[test]
    fn an_old_flat_file_loads_and_writes_back_the_same_settings() {
        let cfg = ConfigFile::from_json(OLD_FILE.as_bytes()).expect("the old file loads");
        assert_eq!(cfg.daemon.discovery_port, 9191);
        assert_eq!(cfg.daemon.bind_addr, "127.0.0.1");
        assert_eq!(cfg.daemon.log_level, "debug");
        assert_eq!(cfg.node.connections.known_peers, ["127.0.0.1:9000"]);
        // Written back: the same keys with the same values (serde_json's map
        // compares without order), and read again to the same settings.
        let written = serde_json::to_string_pretty(&cfg).expect("serialise");
        let old: serde_json::Value = serde_json::from_str(OLD_FILE).expect("json");
        let new: serde_json::Value = serde_json::from_str(&written).expect("json");
        assert_eq!(old, new);
        assert_eq!(ConfigFile::from_json(written.as_bytes()), Ok(cfg));
    }

    #[test]
    fn every_key_is_known_once_and_unknown_ones_are_refused() {
        let keys = ConfigFile::keys();
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len(), "a key in two sections");
        let e = ConfigFile::from_json(br#"{"log_levle": "info"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown key "log_levle" in config.json; did you mean "log_level"?"#
        );
    }

    #[test]
    fn daemon_settings_are_checked_and_edited_by_name() {
        for (json, key) in [
            (r#"{"log_level": "inof"}"#, "log_level"),
            (r#"{"data_dir": "../x"}"#, "data_dir"),
            (r#"{"bind_addr": "nowhere"}"#, "bind_addr"),
            (r#"{"discovery_addrs": ["127.0.0.1:0"]}"#, "discovery_addrs"),
        ] {
            let e = ConfigFile::from_json(json.as_bytes()).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("{key}: ")),
                "{json}: {e}"
            );
        }
        let c = edit::set(&ConfigFile::default(), "log_level", "debug").expect("set");
        assert_eq!(c.daemon.log_level, "debug");
        let c = edit::set(&c, "max_peers", "7").expect("set");
        assert_eq!(c.node.connections.max_peers, 7);
        assert_eq!(edit::get(&c, "log_level"), Ok("debug".into()));
        assert_eq!(
            edit::unset(&c, "log_level").map(|c| c.daemon),
            Ok(DaemonConfig::default())
        );
    }
}
