//! Who may exchange repository data with this node at all.
//!
//! A node talks to another node's key only if it trusts that key. Trust comes
//! from three places, checked in this order:
//!
//! 1. `trusted_peers` in the configuration (`ivaldi p2p trust ID [--read]`),
//!    each with the access it grants: `write` (the default) or `read`;
//! 2. keys admitted by redeeming an invitation ticket during this run (the
//!    shell writes them into `trusted_peers` as well, so they survive a
//!    restart);
//! 3. `open`: `off` (the default) admits nobody else; `read` or `write` admit
//!    any key with that access, for a throwaway LAN.
//!
//! A connection whose key is not admitted is refused right after the Noise
//! handshake, before either side sends its `handshake` message, so a stranger
//! never learns a timeline name, a head or an object. The refusal is explained
//! to the stranger in a `refused` message and remembered in a bounded list of
//! [`Pending`] keys, so that the owner can trust one with a single command.
//!
//! # Invitations
//!
//! `ivaldi p2p invite` makes a [`Ticket`]: the inviter's node id, addresses,
//! the repository id and a fresh 32-byte secret. The secret never travels
//! again. The newcomer dials the inviter and, as its first message, sends a
//! `redeem` naming the invitation ([`invite_id`], a digest of the secret) and a
//! [`proof`]: a BLAKE3 MAC keyed by the secret over the Noise handshake hash
//! and both static keys. The handshake hash is unique to that encrypted
//! session, so a proof overheard or replayed on another session is worthless,
//! and only a holder of the secret can make one.
//!
//! Pure: no clock, no randomness. Expiry is an [`Instant`] the shell computes
//! from the wall clock when it hands the open invitations in.

use core::net::{IpAddr, SocketAddr};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::NodeId;
use crate::access::Access;
use crate::time::Instant;

/// Whether strangers (keys not trusted) are let in, and with what access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenMode {
    /// Only trusted keys (the default).
    #[default]
    Off,
    /// Any key may read every timeline the access rules let it read.
    Read,
    /// Any key may read and write: a throwaway LAN.
    Write,
}

impl OpenMode {
    /// The access a stranger gets, if any.
    pub fn access(self) -> Option<Access> {
        match self {
            OpenMode::Off => None,
            OpenMode::Read => Some(Access::Read),
            OpenMode::Write => Some(Access::Write),
        }
    }
}

impl std::str::FromStr for OpenMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(OpenMode::Off),
            "read" => Ok(OpenMode::Read),
            "write" => Ok(OpenMode::Write),
            _ => Err(format!("{s:?} is not one of off, read, write")),
        }
    }
}

/// One trusted key. Written in `config.json` as the bare id for write access
/// (the form older versions wrote), or as `{"id": ..., "access": "read"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedPeer {
    pub id: NodeId,
    pub access: Access,
}

impl TrustedPeer {
    pub fn write(id: NodeId) -> TrustedPeer {
        TrustedPeer {
            id,
            access: Access::Write,
        }
    }
}

impl Serialize for TrustedPeer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Full<'a> {
            id: &'a NodeId,
            access: Access,
        }
        match self.access {
            Access::Write => self.id.serialize(s),
            access => Full {
                id: &self.id,
                access,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for TrustedPeer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Bare(NodeId),
            Full {
                id: NodeId,
                #[serde(default = "write")]
                access: Access,
            },
        }
        fn write() -> Access {
            Access::Write
        }
        Ok(match Form::deserialize(d)? {
            Form::Bare(id) => TrustedPeer::write(id),
            Form::Full { id, access } => TrustedPeer { id, access },
        })
    }
}

/// The id an invitation is known by on the wire: a digest of its secret, so
/// the secret itself never travels.
pub fn invite_id(secret: &[u8; 32]) -> String {
    let key = blake3::derive_key("ivaldi-p2p 2026-12 invitation id", secret);
    crate::id::to_hex(&key[..8])
}

/// The proof that the sender of a `redeem` holds an invitation's secret,
/// bound to one Noise session (its handshake hash) and to both keys.
pub fn proof(
    secret: &[u8; 32],
    handshake_hash: &[u8],
    joiner: &[u8; 32],
    inviter: &[u8; 32],
) -> blake3::Hash {
    let mut mac = blake3::Hasher::new_keyed(secret);
    mac.update(b"ivaldi-p2p invitation proof v1\0");
    mac.update(&(handshake_hash.len() as u64).to_le_bytes());
    mac.update(handshake_hash);
    mac.update(joiner);
    mac.update(inviter);
    mac.finalize()
}

/// A ticket as text: this prefix, then unpadded lowercase base32 of the
/// binary form (see [`Ticket::encode`]).
pub const TICKET_PREFIX: &str = "ivaldi1";
/// Longest ticket accepted, in characters; a ticket is pasted by hand.
pub const MAX_TICKET_LEN: usize = 2048;
/// Most addresses a ticket carries.
pub const MAX_TICKET_ADDRS: usize = 16;

/// Why a ticket could not be read.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum TicketError {
    #[error("not an Ivaldi invitation ticket (it should start with {TICKET_PREFIX})")]
    Prefix,
    #[error("the ticket is too long ({0} characters)")]
    TooLong(usize),
    #[error("the ticket is damaged: {0} (was it copied whole?)")]
    Damaged(&'static str),
}

/// Everything a newcomer needs to join: whom to dial, where, which
/// repository, and the secret that proves the invitation.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The inviter's node id (its static key).
    pub node: [u8; 32],
    pub addrs: Vec<SocketAddr>,
    pub repo: String,
    pub secret: [u8; 32],
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, not even in a debug log.
        f.debug_struct("Ticket")
            .field("node", &crate::id::to_hex(&self.node))
            .field("addrs", &self.addrs)
            .field("repo", &self.repo)
            .field("invite", &invite_id(&self.secret))
            .finish()
    }
}

const BASE32: data_encoding::Encoding = data_encoding::BASE32_NOPAD;

impl Ticket {
    /// The inviter's node id.
    pub fn node_id(&self) -> NodeId {
        NodeId(self.node)
    }

    /// The ticket as one copy-pasteable string. Binary form: version byte 1,
    /// node id (32), secret (32), repository id (length byte + bytes), address
    /// count, each address (4 or 6, the IP bytes, port big-endian), then the
    /// first 4 bytes of the BLAKE3 of everything before, to catch a mangled
    /// copy before anything is dialled.
    pub fn encode(&self) -> String {
        let mut b = vec![1u8];
        b.extend_from_slice(&self.node);
        b.extend_from_slice(&self.secret);
        let repo = &self.repo.as_bytes()[..self.repo.len().min(255)];
        b.push(repo.len() as u8);
        b.extend_from_slice(repo);
        let addrs = &self.addrs[..self.addrs.len().min(MAX_TICKET_ADDRS)];
        b.push(addrs.len() as u8);
        for a in addrs {
            match a.ip() {
                IpAddr::V4(ip) => {
                    b.push(4);
                    b.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    b.push(6);
                    b.extend_from_slice(&ip.octets());
                }
            }
            b.extend_from_slice(&a.port().to_be_bytes());
        }
        let check = blake3::hash(&b);
        b.extend_from_slice(&check.as_bytes()[..4]);
        format!("{TICKET_PREFIX}{}", BASE32.encode(&b).to_ascii_lowercase())
    }

    /// Reads a ticket, whatever surrounds it on the line and in any case.
    pub fn parse(text: &str) -> Result<Ticket, TicketError> {
        let t = text.trim();
        if t.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong(t.len()));
        }
        let body = t
            .get(..TICKET_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(TICKET_PREFIX))
            .map(|_| &t[TICKET_PREFIX.len()..])
            .ok_or(TicketError::Prefix)?;
        let b = BASE32
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError::Damaged("not base32"))?;
        let Some((payload, check)) = b.split_last_chunk::<4>() else {
            return Err(TicketError::Damaged("too short"));
        };
        if blake3::hash(payload).as_bytes()[..4] != check[..] {
            return Err(TicketError::Damaged("checksum mismatch"));
        }
        let mut r = Reader(payload);
        if r.take(1)? != [1] {
            return Err(TicketError::Damaged("unknown ticket version"));
        }
        let node: [u8; 32] = r.array()?;
        let secret: [u8; 32] = r.array()?;
        let repo_len = r.take(1)?[0] as usize;
        let repo = std::str::from_utf8(r.take(repo_len)?)
            .map_err(|_| TicketError::Damaged("repository id is not text"))?
            .to_owned();
        if repo.is_empty() || !repo.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(TicketError::Damaged("repository id is not printable"));
        }
        let count = r.take(1)?[0] as usize;
        if count > MAX_TICKET_ADDRS {
            return Err(TicketError::Damaged("too many addresses"));
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match r.take(1)?[0] {
                4 => IpAddr::from(r.array::<4>()?),
                6 => IpAddr::from(r.array::<16>()?),
                _ => return Err(TicketError::Damaged("unknown address family")),
            };
            let port = u16::from_be_bytes(r.array()?);
            if port == 0 {
                return Err(TicketError::Damaged("address with port 0"));
            }
            addrs.push(SocketAddr::new(ip, port));
        }
        if !r.0.is_empty() {
            return Err(TicketError::Damaged("trailing bytes"));
        }
        if addrs.is_empty() {
            return Err(TicketError::Damaged("no address to dial"));
        }
        Ok(Ticket {
            node,
            addrs,
            repo,
            secret,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TicketError> {
        if self.0.len() < n {
            return Err(TicketError::Damaged("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TicketError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// An open invitation, as the node checks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    pub secret: [u8; 32],
    pub access: Access,
    /// After this the ticket is refused as expired.
    pub expires: Instant,
    /// Redemptions left.
    pub uses: u32,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("id", &invite_id(&self.secret))
            .field("access", &self.access)
            .field("expires", &self.expires)
            .field("uses", &self.uses)
            .finish()
    }
}

/// Why a `redeem` was refused; the text goes to the newcomer as it is.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum RedeemError {
    #[error(
        "invitation {0} is unknown here: it was revoked, already used up, or made by another node"
    )]
    Unknown(String),
    #[error("invitation {0} has expired; ask for a new one (`ivaldi p2p invite`)")]
    Expired(String),
    #[error("invitation {0} has no uses left; ask for a new one (`ivaldi p2p invite`)")]
    Spent(String),
    #[error("the proof for invitation {0} is wrong (the ticket's secret does not match)")]
    BadProof(String),
}

/// A key that was refused, for `ivaldi p2p pending`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub first: Instant,
    pub last: Instant,
    pub attempts: u64,
}

/// Most refused keys remembered; the oldest is forgotten first.
pub const MAX_PENDING: usize = 64;

/// What was granted when an invitation was redeemed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub invite: String,
    pub access: Access,
    /// Uses left after this one (the shell persists it).
    pub uses_left: u32,
}

/// The trust sub-machine: who is admitted, open invitations, refused keys.
#[derive(Debug, Default)]
pub struct Trust {
    open: OpenMode,
    configured: BTreeMap<NodeId, Access>,
    /// Admitted for this run by the owner of the node (see [`Trust::grant`]).
    granted: BTreeMap<NodeId, Access>,
    /// Admitted by an invitation and not yet in the configuration: the shell
    /// writes them into `trusted_peers` and applies that configuration at
    /// once, after which the configuration alone decides (so an `untrust`
    /// that follows is never undone by a stale grant).
    redeemed: BTreeMap<NodeId, Access>,
    invites: BTreeMap<String, Invite>,
    /// Invitations used up during this run, so a late newcomer is told its
    /// ticket was spent rather than unknown (bounded).
    spent: std::collections::VecDeque<String>,
    pending: BTreeMap<NodeId, Pending>,
}

impl Trust {
    pub fn new(open: OpenMode, trusted: &[TrustedPeer]) -> Trust {
        let mut t = Trust::default();
        t.configure(open, trusted);
        t
    }

    /// Takes a new configuration: it replaces every admission by invitation
    /// (see the field), and keys granted for the run stay.
    pub fn configure(&mut self, open: OpenMode, trusted: &[TrustedPeer]) {
        self.open = open;
        self.configured = trusted.iter().map(|p| (p.id, p.access)).collect();
        self.redeemed.clear();
        self.granted
            .retain(|id, _| !self.configured.contains_key(id));
        for id in self.configured.keys() {
            self.pending.remove(id);
        }
    }

    /// Admits a key for this run (the newcomer's side of an invitation: the
    /// ticket names the inviter's key).
    pub fn grant(&mut self, id: NodeId, access: Access) {
        if !self.configured.contains_key(&id) {
            self.granted.insert(id, access);
        }
    }

    /// Drops a key granted for the run (it was untrusted).
    pub fn forget(&mut self, id: &NodeId) {
        self.granted.remove(id);
    }

    pub fn open(&self) -> OpenMode {
        self.open
    }

    /// The access a key has as a whole, or `None` if it is not admitted.
    pub fn admits(&self, id: &NodeId) -> Option<Access> {
        self.configured
            .get(id)
            .or_else(|| self.granted.get(id))
            .or_else(|| self.redeemed.get(id))
            .copied()
            .or_else(|| self.open.access())
    }

    /// Whether some admitted key is limited to reading, so that per-timeline
    /// checks cannot be skipped.
    pub fn limits_anyone(&self) -> bool {
        self.open == OpenMode::Read
            || self
                .configured
                .values()
                .chain(self.granted.values())
                .chain(self.redeemed.values())
                .any(|a| *a < Access::Write)
    }

    /// Replaces the open invitations.
    pub fn set_invites(&mut self, invites: Vec<Invite>) {
        self.invites = invites
            .into_iter()
            .map(|i| (invite_id(&i.secret), i))
            .collect();
    }

    /// Checks a `redeem` and, if it holds, admits `joiner` with the
    /// invitation's access and spends one use.
    pub fn redeem(
        &mut self,
        now: Instant,
        invite: &str,
        claimed: &[u8; 32],
        handshake_hash: &[u8],
        joiner: &[u8; 32],
        inviter: &[u8; 32],
    ) -> Result<Granted, RedeemError> {
        let key = invite.to_ascii_lowercase();
        let Some(inv) = self.invites.get_mut(&key) else {
            if self.spent.contains(&key) {
                return Err(RedeemError::Spent(key));
            }
            return Err(RedeemError::Unknown(key));
        };
        if now >= inv.expires {
            return Err(RedeemError::Expired(key));
        }
        if inv.uses == 0 {
            return Err(RedeemError::Spent(key));
        }
        // blake3::Hash compares in constant time.
        if proof(&inv.secret, handshake_hash, joiner, inviter) != blake3::Hash::from(*claimed) {
            return Err(RedeemError::BadProof(key));
        }
        inv.uses -= 1;
        let granted = Granted {
            invite: key.clone(),
            access: inv.access,
            uses_left: inv.uses,
        };
        if inv.uses == 0 {
            self.invites.remove(&key);
            if self.spent.len() >= MAX_PENDING {
                self.spent.pop_front();
            }
            self.spent.push_back(key);
        }
        let id = NodeId(*joiner);
        self.pending.remove(&id);
        if !self.configured.contains_key(&id) {
            self.redeemed.insert(id, granted.access);
        }
        Ok(granted)
    }

    /// Records a refused key (bounded: the least recently seen is forgotten).
    pub fn record_refusal(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.last = now;
            p.addr = addr;
            p.attempts += 1;
            return;
        }
        if self.pending.len() >= MAX_PENDING
            && let Some(oldest) = self
                .pending
                .values()
                .min_by_key(|p| (p.last, p.id))
                .map(|p| p.id)
        {
            self.pending.remove(&oldest);
        }
        self.pending.insert(
            id,
            Pending {
                id,
                addr,
                first: now,
                last: now,
                attempts: 1,
            },
        );
    }

    /// Keys refused lately, most recent first.
    pub fn pending(&self) -> Vec<Pending> {
        let mut v: Vec<Pending> = self.pending.values().cloned().collect();
        v.sort_by(|a, b| b.last.cmp(&a.last).then_with(|| a.id.cmp(&b.id)));
        v
    }
}

/// What a refused stranger is told, in plain words.
pub fn refusal_text(stranger: &NodeId, own: &NodeId) -> String {
    format!(
        "node {}… is not trusted by {}…; ask its owner to run `ivaldi p2p trust {stranger}`, or use an invitation (`ivaldi p2p invite` there, then `ivaldi p2p join TICKET` here)",
        stranger.short(),
        own.short(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> NodeId {
        std::iter::repeat_n(c, 64)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    fn text(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn n(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    fn ticket() -> Ticket {
        Ticket {
            node: [7; 32],
            addrs: vec![
                "127.0.0.1:9090".parse().unwrap(),
                "[::1]:9191".parse().unwrap(),
            ],
            repo: "r-1234abcd".into(),
            secret: [9; 32],
        }
    }

    #[test]
    fn tickets_round_trip_and_tolerate_case_and_spaces() {
        let t = ticket();
        let text = t.encode();
        assert!(text.starts_with(TICKET_PREFIX));
        assert!(text.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(Ticket::parse(&text).unwrap(), t);
        assert_eq!(
            Ticket::parse(&format!("  {}\n", text.to_ascii_uppercase())).unwrap(),
            t
        );
        assert!(!format!("{t:?}").contains(&crate::id::to_hex(&t.secret)));
    }

    #[test]
    fn damaged_tickets_are_refused_with_a_reason() {
        let text = ticket().encode();
        assert_eq!(Ticket::parse("hello"), Err(TicketError::Prefix));
        assert!(matches!(
            Ticket::parse(&text[..text.len() - 3]),
            Err(TicketError::Damaged(_))
        ));
        // One character changed: the checksum catches it.
        let mut bad = text.clone().into_bytes();
        let i = text.len() / 2;
        bad[i] = if bad[i] == b'a' { b'b' } else { b'a' };
        assert!(matches!(
            Ticket::parse(std::str::from_utf8(&bad).unwrap()),
            Err(TicketError::Damaged(_))
        ));
        assert!(matches!(
            Ticket::parse(&"x".repeat(5000)),
            Err(TicketError::TooLong(_))
        ));
    }

    #[test]
    fn trusted_peers_read_the_old_and_the_new_form() {
        let v: Vec<TrustedPeer> = serde_json::from_str(&format!(
            r#"["{}", {{"id":"{}","access":"read"}}]"#,
            text('A'),
            text('b')
        ))
        .unwrap();
        assert_eq!(v[0], TrustedPeer::write(id('a')));
        assert_eq!(v[1].access, Access::Read);
        let back = serde_json::to_string(&v).unwrap();
        assert_eq!(
            back,
            format!(
                r#"["{}",{{"id":"{}","access":"read"}}]"#,
                text('a'),
                text('b')
            )
        );
    }

    #[test]
    fn strangers_are_admitted_only_in_open_mode() {
        let t = Trust::new(
            OpenMode::Off,
            &[
                TrustedPeer::write(id('a')),
                TrustedPeer {
                    id: id('b'),
                    access: Access::Read,
                },
            ],
        );
        assert_eq!(t.admits(&id('a')), Some(Access::Write));
        assert_eq!(t.admits(&id('B')), Some(Access::Read));
        assert_eq!(t.admits(&id('c')), None);
        assert!(t.limits_anyone());
        let t = Trust::new(OpenMode::Read, &[]);
        assert_eq!(t.admits(&id('c')), Some(Access::Read));
    }

    #[test]
    fn an_invitation_admits_once_with_a_proof_bound_to_the_session() {
        let mut t = Trust::new(OpenMode::Off, &[]);
        let secret = [5u8; 32];
        let (joiner, inviter) = ([1u8; 32], [2u8; 32]);
        t.set_invites(vec![Invite {
            secret,
            access: Access::Read,
            expires: Instant::from_micros(1_000),
            uses: 1,
        }]);
        let inv = invite_id(&secret);
        let hh = [3u8; 32];
        let good = *proof(&secret, &hh, &joiner, &inviter).as_bytes();
        let other_session = *proof(&secret, &[4u8; 32], &joiner, &inviter).as_bytes();
        let now = Instant::from_micros(10);
        assert_eq!(
            t.redeem(now, &inv, &other_session, &hh, &joiner, &inviter),
            Err(RedeemError::BadProof(inv.clone()))
        );
        let g = t.redeem(now, &inv, &good, &hh, &joiner, &inviter).unwrap();
        assert_eq!((g.access, g.uses_left), (Access::Read, 0));
        assert_eq!(t.admits(&NodeId(joiner)), Some(Access::Read));
        assert!(matches!(
            t.redeem(now, &inv, &good, &hh, &joiner, &inviter),
            Err(RedeemError::Spent(_))
        ));
    }

    #[test]
    fn expired_invitations_are_refused() {
        let mut t = Trust::new(OpenMode::Off, &[]);
        let secret = [5u8; 32];
        t.set_invites(vec![Invite {
            secret,
            access: Access::Write,
            expires: Instant::from_micros(100),
            uses: 3,
        }]);
        let late = Instant::from_micros(100);
        let p = *proof(&secret, &[0; 32], &[1; 32], &[2; 32]).as_bytes();
        assert!(matches!(
            t.redeem(late, &invite_id(&secret), &p, &[0; 32], &[1; 32], &[2; 32]),
            Err(RedeemError::Expired(_))
        ));
    }

    #[test]
    fn the_pending_list_is_bounded_and_newest_first() {
        let mut t = Trust::new(OpenMode::Off, &[]);
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for i in 0..(MAX_PENDING as u8 + 10) {
            t.record_refusal(Instant::from_micros(u64::from(i)), n(i), addr);
        }
        t.record_refusal(Instant::from_micros(999), n(70), addr);
        let p = t.pending();
        assert_eq!(p.len(), MAX_PENDING);
        assert_eq!(p[0].id, n(70));
        assert_eq!(p[0].attempts, 2);
        t.configure(OpenMode::Off, &[TrustedPeer::write(n(70))]);
        assert_eq!(t.pending().len(), MAX_PENDING - 1);
    }
}
