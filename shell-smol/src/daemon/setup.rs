//! The daemon's files: configuration, identity, pid, socket and log paths.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::{ConfigFile, DaemonConfig};
use ivaldi_core::noise::Keypair;
use thiserror::Error;

use crate::repo::DOT_DIR;

/// Environment variable that overrides `discovery_addrs` (comma-separated). Every
/// test and `.ci/run` sets it to `127.255.255.255` so no announcement leaves the
/// machine.
pub const DISCOVERY_ENV: &str = "IVALDI_DISCOVERY_ADDRS";

/// Why the daemon could not start or a setting could not be used.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid configuration: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A change refused before it was saved; the file is as it was.
    #[error("refused, nothing was saved: {0}")]
    Refused(ivaldi_core::config::ConfigError),
    #[error("{path}: damaged identity key: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("a daemon is already running for this repository (pid {pid})")]
    AlreadyRunning { pid: String },
    #[error("{0}")]
    Other(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the daemon keeps its state for one repository.
#[derive(Clone, Debug)]
pub struct P2pPaths {
    pub root: PathBuf,
    pub config: PathBuf,
    pub dir: PathBuf,
    pub identity: PathBuf,
    pub socket: PathBuf,
    pub pid: PathBuf,
    pub lock: PathBuf,
    pub log: PathBuf,
}

impl P2pPaths {
    /// The paths for the repository whose working tree is `root`.
    pub fn new(root: &Path) -> Result<P2pPaths, SetupError> {
        let dot = root.join(DOT_DIR);
        let config = dot.join("p2p").join("config.json");
        let dir = dot.join(data_dir_of(&config)?);
        Ok(P2pPaths {
            root: root.to_owned(),
            config,
            identity: dir.join("identity.key"),
            socket: dir.join("control.sock"),
            pid: dir.join("daemon.pid"),
            lock: dir.join("daemon.lock"),
            log: dir.join("daemon.log"),
            dir,
        })
    }

    /// Creates the state directory, readable by the owner only.
    pub fn ensure_dir(&self) -> Result<(), SetupError> {
        for d in [self.config.parent().unwrap_or(&self.dir), &self.dir] {
            fs::create_dir_all(d).map_err(io_at(d))?;
            fs::set_permissions(d, fs::Permissions::from_mode(0o700)).map_err(io_at(d))?;
        }
        Ok(())
    }
}

/// Where the daemon's state lives, read from `data_dir` alone. The rest of the
/// file is not checked here: a running daemon must stay reachable (`status`,
/// `stop`, gc's view of it) while its config.json holds a mistake, which
/// only `start` and a reload refuse.
fn data_dir_of(path: &Path) -> Result<String, SetupError> {
    let default = DaemonConfig::default().data_dir;
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(default),
        Err(e) => return Err(io_at(path)(e)),
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&bytes) else {
        return Ok(default);
    };
    match map.get("data_dir") {
        None => Ok(default),
        Some(v) => {
            let probe = serde_json::json!({ "data_dir": v });
            serde_json::from_value::<ConfigFile>(probe)
                .ok()
                .filter(|c| c.validate().is_ok())
                .map(|c| c.daemon.data_dir)
                .ok_or_else(|| SetupError::Config {
                    path: path.to_owned(),
                    reason: "data_dir: must be a relative directory inside .ivaldi".into(),
                })
        }
    }
}

fn load_config_file(path: &Path) -> Result<ConfigFile, SetupError> {
    let bad = |e: ivaldi_core::config::ConfigError| SetupError::Config {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    match fs::read(path) {
        Ok(bytes) => ConfigFile::from_json(&bytes).map_err(bad),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cfg = ConfigFile::default();
            cfg.validate().map_err(bad)?;
            Ok(cfg)
        }
        Err(e) => Err(io_at(path)(e)),
    }
}

/// The configuration as stored (no environment overrides), validated.
pub fn load_config(paths: &P2pPaths) -> Result<ConfigFile, SetupError> {
    load_config_file(&paths.config)
}

/// The configuration the daemon runs with: the file plus environment overrides.
pub fn effective_config(paths: &P2pPaths) -> Result<ConfigFile, SetupError> {
    let mut cfg = load_config(paths)?;
    if let Ok(addrs) = std::env::var(DISCOVERY_ENV) {
        cfg.daemon.discovery_addrs = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        cfg.validate().map_err(|e| SetupError::Config {
            path: PathBuf::from(format!("${DISCOVERY_ENV}")),
            reason: e.to_string(),
        })?;
    }
    Ok(cfg)
}

/// Validates and saves the configuration atomically.
pub fn save_config(paths: &P2pPaths, cfg: &ConfigFile) -> Result<(), SetupError> {
    cfg.validate().map_err(SetupError::Refused)?;
    paths.ensure_dir()?;
    let json = serde_json::to_vec_pretty(cfg).map_err(|e| SetupError::Other(e.to_string()))?;
    crate::repo::write_atomic(&paths.config, &json, true)
        .map_err(|e| SetupError::Other(e.to_string()))
}

/// Reads, changes and writes back the stored configuration.
pub fn edit_config(
    paths: &P2pPaths,
    f: impl FnOnce(&mut ConfigFile),
) -> Result<ConfigFile, SetupError> {
    let mut cfg = load_config(paths)?;
    f(&mut cfg);
    save_config(paths, &cfg)?;
    Ok(cfg)
}

/// Loads the node's static key, creating it (from the OS random source) on first use.
pub fn load_or_create_identity(paths: &P2pPaths) -> Result<Keypair, SetupError> {
    let path = &paths.identity;
    match fs::read_to_string(path) {
        Ok(text) => {
            let bad = |reason: String| SetupError::Identity {
                path: path.clone(),
                reason,
            };
            let hex = text.trim();
            let bytes = ivaldi_core::id::unhex32(hex)
                .ok_or_else(|| bad("expected 64 hex digits".into()))?;
            Keypair::from_private(bytes).map_err(|e| bad(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            paths.ensure_dir()?;
            let private = random32()?;
            let kp =
                Keypair::from_private(private).map_err(|e| SetupError::Other(e.to_string()))?;
            let tmp = path.with_extension("tmp");
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_at(&tmp))?;
            let hex = ivaldi_core::id::to_hex(&private);
            f.write_all(format!("{hex}\n").as_bytes())
                .map_err(io_at(&tmp))?;
            f.sync_all().map_err(io_at(&tmp))?;
            fs::rename(&tmp, path).map_err(io_at(path))?;
            Ok(kp)
        }
        Err(e) => Err(io_at(path)(e)),
    }
}

/// 32 bytes from the OS random source.
pub fn random32() -> Result<[u8; 32], SetupError> {
    let path = Path::new("/dev/urandom");
    let mut buf = [0u8; 32];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_at(path))?;
    Ok(buf)
}

/// The node id (public key hex) for a repository, creating the identity if needed.
pub fn node_id(paths: &P2pPaths) -> Result<String, SetupError> {
    let kp = load_or_create_identity(paths)?;
    Ok(ivaldi_core::id::to_hex(&kp.public))
}
