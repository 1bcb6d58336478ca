//! How connections are made, kept and let in: the listening port, the peer
//! slots, dialling and redialling, heartbeats, the handshake deadline and the
//! accept rate. Read by the dialers, admission and every open connection's
//! timers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::{self, DAY, HOUR, WEEK};
use super::{ConfigError, duration_text, invalid};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionSettings {
    /// TCP port for peer connections (announced in the handshake and by
    /// discovery, so the core knows it too).
    pub port: u16,
    /// Most peer connections, inbound and outbound together.
    pub max_peers: usize,
    /// Addresses (`host:port`) dialled at start and redialled with backoff.
    pub known_peers: Vec<String>,
    /// Encrypt frames after the (always authenticating) handshake.
    pub encryption: bool,
    /// Compress object frames when the peer supports it.
    pub compression: bool,
    /// Protocol features not to offer (`lz4`, `topology-summary`): for testing
    /// that peers lacking a feature still interoperate over the common subset.
    pub features_off: Vec<String>,
    #[serde(with = "duration_text")]
    pub heartbeat_interval: Duration,
    /// A peer silent for this many heartbeat intervals is declared lost.
    pub heartbeat_misses: u32,
    /// A connection must finish its handshake within this time.
    #[serde(with = "duration_text")]
    pub handshake_timeout: Duration,
    /// Reconnect backoff bounds.
    #[serde(with = "duration_text")]
    pub reconnect_min: Duration,
    #[serde(with = "duration_text")]
    pub reconnect_max: Duration,
    /// Inbound connections one source (an IPv4 address, or an IPv6 /64) may
    /// open in a burst; beyond it they are refused until its allowance
    /// refills at `accept_rate_per_sec`. Keeps one host from churning
    /// connections (every accepted one costs a Noise handshake) while honest
    /// peers, which connect a few times, never notice.
    pub accept_burst: u32,
    /// Refill rate of `accept_burst`, connections per second.
    pub accept_rate_per_sec: u32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            port: 9090,
            max_peers: 50,
            known_peers: Vec::new(),
            encryption: true,
            compression: true,
            features_off: Vec::new(),
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_misses: 3,
            handshake_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            accept_burst: 30,
            accept_rate_per_sec: 2,
        }
    }
}

impl ConnectionSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_peers == 0 {
            return Err(invalid("max_peers", "must be at least 1"));
        }
        check::durations(&[
            ("heartbeat_interval", self.heartbeat_interval, DAY),
            ("handshake_timeout", self.handshake_timeout, HOUR),
            ("reconnect_min", self.reconnect_min, DAY),
            ("reconnect_max", self.reconnect_max, WEEK),
        ])?;
        check::counts(&[
            ("max_peers", self.max_peers as u64, check::MAX_PEERS as u64),
            (
                "heartbeat_misses",
                self.heartbeat_misses.into(),
                check::MAX_HEARTBEAT_MISSES.into(),
            ),
            (
                "accept_burst",
                self.accept_burst.into(),
                check::MAX_ACCEPT.into(),
            ),
            (
                "accept_rate_per_sec",
                self.accept_rate_per_sec.into(),
                check::MAX_ACCEPT.into(),
            ),
        ])?;
        for k in &self.known_peers {
            match k.parse::<core::net::SocketAddr>() {
                Err(_) => {
                    return Err(invalid(
                        "known_peers",
                        format!("{k:?} is not an ip:port address"),
                    ));
                }
                Ok(a) if a.port() == 0 => {
                    return Err(invalid(
                        "known_peers",
                        format!("{k:?} has port 0, which cannot be dialled"),
                    ));
                }
                Ok(_) => {}
            }
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(invalid("reconnect_max", "must not be below reconnect_min"));
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
        Ok(())
    }
}
