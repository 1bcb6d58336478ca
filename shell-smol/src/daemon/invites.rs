//! Open invitations on disk: `.ivaldi/p2p/invites.json` (mode 0600, it
//! holds secrets).
//!
//! The CLI creates, lists and revokes them; the daemon hands them to the core
//! (which checks `redeem`s) and spends a use when the core reports one. Expiry
//! is kept as wall-clock seconds, because an invitation outlives a daemon
//! restart; the core gets it translated into its own [`Instant`]s.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use ivaldi_core::access::Access;
use ivaldi_core::time::Instant;
use ivaldi_core::trust::{self, Invite};

use super::setup::P2pPaths;

#[derive(Debug, Error)]
pub enum InviteError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason}")]
    Damaged { path: String, reason: String },
    #[error("no open invitation {0}")]
    Unknown(String),
    #[error("{0}")]
    Setup(#[from] super::setup::SetupError),
}

/// One invitation as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    /// [`trust::invite_id`] of the secret.
    pub id: String,
    /// 64 hex digits.
    pub secret: String,
    pub access: Access,
    pub created_unix: u64,
    pub expires_unix: u64,
    pub uses: u32,
}

impl Stored {
    pub fn secret_bytes(&self) -> Option<[u8; 32]> {
        ivaldi_core::node::unhex32(&self.secret)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    invites: Vec<Stored>,
}

fn path_of(paths: &P2pPaths) -> PathBuf {
    paths.config.with_file_name("invites.json")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InviteError + '_ {
    move |source| InviteError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every stored invitation, expired ones included (see [`prune`]).
pub fn load(paths: &P2pPaths) -> Result<Vec<Stored>, InviteError> {
    let path = path_of(paths);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&path)(e)),
    };
    let file: File = serde_json::from_str(&text).map_err(|e| InviteError::Damaged {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    for s in &file.invites {
        if s.secret_bytes().is_none() {
            return Err(InviteError::Damaged {
                path: path.display().to_string(),
                reason: format!("invitation {} has a malformed secret", s.id),
            });
        }
    }
    Ok(file.invites)
}

/// Writes the invitations (tmp, fsync, rename; readable by the owner only).
pub fn save(paths: &P2pPaths, invites: &[Stored]) -> Result<(), InviteError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path_of(paths);
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let body = serde_json::to_vec_pretty(&File {
        invites: invites.to_vec(),
    })
    .unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(&body).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Drops expired and used-up invitations.
pub fn prune(invites: &mut Vec<Stored>, now_unix: u64) {
    invites.retain(|i| i.uses > 0 && i.expires_unix > now_unix);
}

/// Makes and stores a new invitation; returns it with its secret.
pub fn create(
    paths: &P2pPaths,
    access: Access,
    ttl: Duration,
    uses: u32,
) -> Result<(Stored, [u8; 32]), InviteError> {
    let secret = super::setup::random32()?;
    let now = unix_now();
    let stored = Stored {
        id: trust::invite_id(&secret),
        secret: ivaldi_core::id::to_hex(&secret),
        access,
        created_unix: now,
        expires_unix: now.saturating_add(ttl.as_secs().max(1)),
        uses,
    };
    let mut all = load(paths)?;
    prune(&mut all, now);
    all.push(stored.clone());
    save(paths, &all)?;
    Ok((stored, secret))
}

/// Removes an invitation (by id or a unique prefix of it).
pub fn revoke(paths: &P2pPaths, id: &str) -> Result<Stored, InviteError> {
    let mut all = load(paths)?;
    let hits: Vec<usize> = (0..all.len())
        .filter(|i| all[*i].id.starts_with(&id.to_ascii_lowercase()))
        .collect();
    let [one] = hits.as_slice() else {
        return Err(InviteError::Unknown(id.to_owned()));
    };
    let gone = all.remove(*one);
    save(paths, &all)?;
    Ok(gone)
}

/// Records that a use of `id` was spent (`uses_left` remain).
pub fn spend(paths: &P2pPaths, id: &str, uses_left: u32) -> Result<(), InviteError> {
    let mut all = load(paths)?;
    for i in all.iter_mut().filter(|i| i.id == id) {
        i.uses = uses_left;
    }
    prune(&mut all, unix_now());
    save(paths, &all)
}

/// The invitations as the core checks them: expiry moved onto the node's
/// clock (`node_now` is the node's time at wall-clock `now_unix`).
pub fn for_core(invites: &[Stored], node_now: Instant, now_unix: u64) -> Vec<Invite> {
    invites
        .iter()
        .filter_map(|s| {
            let left = s.expires_unix.saturating_sub(now_unix);
            Some(Invite {
                secret: s.secret_bytes()?,
                access: s.access,
                expires: node_now + Duration::from_secs(left),
                uses: s.uses,
            })
        })
        .collect()
}
