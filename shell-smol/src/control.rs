//! The control protocol between the `ivaldi` CLI and a running daemon: JSON
//! lines over a Unix socket under `.ivaldi/p2p/` that only the repository's owner
//! can open (the socket is created mode 0600 inside a 0700 directory).
//!
//! One request per connection. The daemon answers with one [`Reply`] line, or,
//! for streaming requests (`events --follow`, `sync` progress), with any number of
//! `event`/`progress` lines before the final reply.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub mod replies;

/// What the CLI asks of the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Peers {
        #[serde(default)]
        verbose: bool,
    },
    Discovered,
    Connect {
        addr: String,
    },
    Disconnect {
        peer: String,
    },
    Sync {
        #[serde(default)]
        peer: Option<String>,
    },
    SyncStatus,
    /// Fetch objects the repository lost (`ivaldi repair`) from one peer or
    /// each connected one in turn; `sync`-like progress lines, then the reply.
    Refetch {
        #[serde(default)]
        peer: Option<String>,
        missing: Vec<ivaldi_core::ObjectId>,
    },
    Conflicts,
    Events {
        #[serde(default)]
        follow: bool,
    },
    /// Protocol messages as they pass: the recent ones, then (with `follow`)
    /// each new one; only those with a peer whose id starts with `peer`.
    Trace {
        #[serde(default)]
        peer: Option<String>,
        #[serde(default)]
        follow: bool,
        /// Include each message's JSON payload (object data never).
        #[serde(default)]
        payloads: bool,
    },
    /// Re-read `config.json` (after the CLI changed it) and apply what can change
    /// without a restart.
    ReloadConfig,
    /// Keys refused lately for want of trust.
    Pending,
    /// Redeem an invitation ticket with the running daemon.
    Join {
        ticket: String,
    },
    /// The local repository changed (a seal, a switch): announce the new heads.
    LocalChanged,
    Whoami,
    /// The mesh graph as this node sees it.
    Topology,
    /// The path to a node through the mesh.
    Route {
        peer: String,
    },
    Stop,
}

/// One line from the daemon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Reply(Reply),
    Event { event: serde_json::Value },
    Progress { progress: serde_json::Value },
}

/// The final answer to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// A success with data.
    pub fn ok(data: serde_json::Value) -> Reply {
        Reply {
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    /// A success carrying one of the typed [`replies`].
    pub fn with(data: &impl Serialize) -> Reply {
        match serde_json::to_value(data) {
            Ok(v) => Reply::ok(v),
            Err(e) => Reply::err(format!("cannot encode the reply: {e}")),
        }
    }

    /// The reply's data as the type its request answers with (see
    /// [`replies`]); a failure is [`ControlError::Refused`].
    pub fn data_as<T: DeserializeOwned>(self) -> Result<T, ControlError> {
        if !self.ok {
            return Err(ControlError::Refused(
                self.error
                    .unwrap_or_else(|| "the daemon refused".to_owned()),
            ));
        }
        let data = self.data.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(data).map_err(|e| ControlError::Malformed(e.to_string()))
    }

    /// A failure with a reason.
    pub fn err(reason: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            data: None,
            error: Some(reason.into()),
        }
    }
}

impl Line {
    /// The line as the daemon writes it (without the newline).
    pub fn to_line(&self) -> String {
        match self {
            Line::Reply(r) => r.to_line(),
            other => serde_json::to_string(other).unwrap_or_default(),
        }
    }
}

impl Reply {
    /// The reply as the daemon writes it (without the newline). A reply that
    /// cannot be encoded still ends the client's wait, as a failure.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| "{\"ok\":false,\"error\":\"serialisation\"}".into())
    }
}

/// Why talking to the daemon failed.
#[derive(Debug, Error)]
pub enum ControlError {
    #[error("no daemon is running for this repository (start one with `ivaldi p2p start`)")]
    NotRunning,
    #[error("control socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon sent a malformed reply: {0}")]
    Malformed(String),
    #[error("the daemon closed the connection without replying")]
    NoReply,
    /// The daemon answered with a failure; its reason, as the user reads it.
    #[error("{0}")]
    Refused(String),
}

/// Sends `req` to the daemon listening on `socket` and returns its reply,
/// handing every streamed line to `on_line` first. `timeout` bounds each read
/// (`None` waits forever, for `events --follow` and long syncs).
pub fn request(
    socket: &Path,
    req: &Request,
    timeout: Option<Duration>,
    mut on_line: impl FnMut(&Line),
) -> Result<Reply, ControlError> {
    let io = |source| ControlError::Io {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning);
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(timeout).map_err(io)?;
    let mut line =
        serde_json::to_string(req).map_err(|e| ControlError::Malformed(e.to_string()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let reader = BufReader::new(stream);
    for l in reader.lines() {
        let l = l.map_err(io)?;
        if l.trim().is_empty() {
            continue;
        }
        let parsed: Line =
            serde_json::from_str(&l).map_err(|e| ControlError::Malformed(format!("{e}: {l}")))?;
        if let Line::Reply(r) = parsed {
            return Ok(r);
        }
        on_line(&parsed);
    }
    Err(ControlError::NoReply)
}

#[cfg(test)]
mod tests {
    use super::replies::{Count, Done};
    use super::*;

    #[test]
    fn a_typed_reply_reads_back_as_its_type_and_a_refusal_as_its_reason() {
        let line = Reply::with(&Count { count: 3 }).to_line();
        assert_eq!(line, r#"{"ok":true,"data":{"count":3}}"#, "the wire format");
        let Ok(Line::Reply(r)) = serde_json::from_str::<Line>(&line) else {
            panic!("a reply line: {line}");
        };
        assert_eq!(r.data_as::<Count>().ok(), Some(Count { count: 3 }));
        let refused = Reply::err("no peer id starts with \"ff\"").data_as::<Done>();
        assert!(
            matches!(&refused, Err(ControlError::Refused(e)) if e.contains("no peer id")),
            "{refused:?}"
        );
        let wrong = Reply::with(&Count { count: 3 }).data_as::<Done>();
        assert!(
            matches!(wrong, Err(ControlError::Malformed(_))),
            "{wrong:?}"
        );
    }
}
