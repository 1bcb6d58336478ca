//! Why a connection closed.
//!
//! Reasons used to be text, and the node read its own text back
//! (`reason.starts_with("duplicate")`) to decide whether a routed path was to
//! blame. A variant per cause lets that logic match, while `Display` keeps the
//! exact words users and logs have always seen.

use std::fmt;

use crate::NodeId;

/// The cause of a close, from the node's side or from the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Refused at admission or trust (`refused: …`).
    Refused(String),
    /// The peer told us why it refused us.
    RefusedBy {
        peer: NodeId,
        reason: String,
    },
    /// Access was revoked or changed for an open connection (`closed: …`).
    Closed(String),
    /// The Noise session could not be created.
    Session(String),
    /// The handshake finished but the peer is not one we may talk to here
    /// (ourselves, the wrong end of a routed session, a `no_direct` node).
    Handshake(String),
    /// The peer broke the protocol; the text names what it sent.
    Violation(String),
    NoCommonVersion(Vec<u32>),
    HandshakeTimeout,
    PeerLost,
    SyncTimeout,
    SyncFailed,
    ByUser,
    /// Another connection to the same peer won the tie-break.
    Duplicate,
    /// The peer does not read what we queue for it.
    NotReading {
        queued: usize,
        limit: usize,
    },
    /// An unauthenticated connection made room for a less represented address.
    PoolEvicted,
    NoPeerSlot {
        max: usize,
    },
    /// The memory budget for unauthenticated frames ran out.
    BudgetSpent,
    /// The shell's socket or dial failed, or the peer hung up.
    Transport(String),
}

impl CloseReason {
    /// Whether the close says something about the path it travelled: a
    /// routed session that stalled or broke blames its relays, one closed by
    /// a tie-break or by the user does not.
    pub fn blames_path(&self) -> bool {
        !matches!(self, CloseReason::Duplicate | CloseReason::ByUser)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Refused(r) => write!(f, "refused: {r}"),
            CloseReason::RefusedBy { peer, reason } => {
                write!(f, "refused by {}: {reason}", peer.short())
            }
            CloseReason::Closed(why) => write!(f, "closed: {why}"),
            CloseReason::Session(e) => write!(f, "cannot create a session: {e}"),
            CloseReason::Handshake(e) => f.write_str(e),
            CloseReason::Violation(r) => write!(f, "protocol violation: {r}"),
            CloseReason::NoCommonVersion(v) => {
                write!(f, "no common protocol version (peer speaks {v:?})")
            }
            CloseReason::HandshakeTimeout => f.write_str("handshake timed out"),
            CloseReason::PeerLost => {
                f.write_str("peer lost: no traffic for too many heartbeat intervals")
            }
            CloseReason::SyncTimeout => f.write_str("sync timed out"),
            CloseReason::SyncFailed => f.write_str("sync failed"),
            CloseReason::ByUser => f.write_str("disconnected by the user"),
            CloseReason::Duplicate => f.write_str("duplicate connection to the same peer"),
            CloseReason::NotReading { queued, limit } => write!(
                f,
                "peer is not reading: {queued} bytes queued for it (limit {limit})"
            ),
            CloseReason::PoolEvicted => {
                f.write_str("unauthenticated pool full: made room for a less represented address")
            }
            CloseReason::NoPeerSlot { max } => {
                write!(f, "no peer slot: {max} peers are connected (max_peers)")
            }
            CloseReason::BudgetSpent => {
                f.write_str("memory budget for buffered frames is spent; not admitted yet")
            }
            CloseReason::Transport(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_the_words_users_saw() {
        assert_eq!(
            CloseReason::Duplicate.to_string(),
            "duplicate connection to the same peer"
        );
        assert_eq!(
            CloseReason::Violation("second handshake".into()).to_string(),
            "protocol violation: second handshake"
        );
        let by = CloseReason::RefusedBy {
            peer: "0123456789abcdef".repeat(4).parse().unwrap(),
            reason: "not trusted".into(),
        };
        assert_eq!(by.to_string(), "refused by 0123456789ab: not trusted");
    }

    #[test]
    fn only_a_tie_break_or_the_user_spare_the_path() {
        assert!(!CloseReason::Duplicate.blames_path());
        assert!(!CloseReason::ByUser.blames_path());
        assert!(CloseReason::SyncTimeout.blames_path());
        assert!(CloseReason::PeerLost.blames_path());
    }
}
