//! The authenticated, encrypted channel between two peers.
//!
//! Every peer connection starts with a Noise `XX` handshake
//! ([`PATTERN`], prologue [`PROLOGUE`]): both sides prove that they hold the
//! private half of a long-lived X25519 static key, and learn the other's public
//! half, which is how peers identify each other. Each side also sends an opaque
//! *payload* inside the handshake (the caller puts its capabilities there), so
//! that nothing about a peer is trusted before it is authenticated.
//!
//! [`Session`] is the whole channel as a sans-IO state machine: feed it whatever
//! bytes the socket produced ([`Session::receive`]), however they were split, and
//! it hands back plaintext and the bytes to write. It never touches the OS: the
//! ephemeral keys come from the seeded [`Rng`] passed to [`Session::new`], so the
//! simulator can replay a connection byte for byte.
//!
//! # Wire format
//!
//! Everything on the wire is a *record*: a big-endian `u16` length, then that many
//! bytes (never zero). The first three records are the Noise handshake messages:
//!
//! 1. initiator → responder: `e` (no payload);
//! 2. responder → initiator: `e, ee, s, es` + flags + the responder's payload;
//! 3. initiator → responder: `s, se` + flags + the initiator's payload.
//!
//! The flags byte's bit 0 means "I want encryption"; the other bits are reserved
//! and ignored. After the handshake every record carries application bytes:
//! Noise transport ciphertext (at most [`MAX_RECORD_PLAINTEXT`] bytes of
//! plaintext plus a 16-byte tag) or, when *both* sides asked for no encryption,
//! the plaintext itself. Unencrypted mode exists for trusted networks where the
//! cipher would be the bottleneck; the handshake still authenticates both static
//! keys, but the records that follow are neither secret nor tamper-proof.

use std::cell::Cell;
use std::fmt;

use snow::params::{DHChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{HandshakeState, TransportState};
use thiserror::Error;

use crate::rng::Rng;

/// The Noise protocol name: the `XX` pattern, so neither side needs to know the
/// other's key beforehand, with primitives that are fast without hardware AES.
pub const PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Mixed into the handshake hash, so a handshake of another protocol (or of a
/// future, incompatible version of this one) can never complete against ours.
pub const PROLOGUE: &[u8] = b"ivaldi-p2p/1";

/// The largest record body Noise allows (and a `u16` length can express).
pub const MAX_RECORD_LEN: usize = 65535;

/// The length of the authentication tag that follows each encrypted record.
pub const TAG_LEN: usize = 16;

/// The most plaintext [`Session::send`] puts in one record, so that its
/// ciphertext fits in [`MAX_RECORD_LEN`].
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD_LEN - TAG_LEN;

/// The largest payload [`Session::new`] accepts. It has to fit, with the flags
/// byte, into handshake message 2 next to the responder's ephemeral key (32
/// bytes), encrypted static key (32 + 16) and the payload's own tag (16).
pub const MAX_PAYLOAD_LEN: usize = MAX_RECORD_LEN - 32 - (32 + TAG_LEN) - TAG_LEN - 1;

/// Length of X25519 keys.
const KEY_LEN: usize = 32;

/// Flags bit 0: the sender wants the transport to be encrypted.
const FLAG_ENCRYPT: u8 = 1;

/// Why a key, a handshake or a record was rejected.
///
/// Every error except [`NoiseError::InvalidKey`] and
/// [`NoiseError::PayloadTooLarge`] (which [`Session::new`] returns) leaves the
/// session dead: later calls return [`NoiseError::Dead`], and the caller should
/// close the connection. Errors caused by the peer deliberately carry no detail
/// from the cryptography, so that nothing useful leaks into logs an attacker
/// might read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// A private key of all zeroes: never generated, so a sign of a corrupted
    /// or uninitialised key file.
    #[error("invalid private key")]
    InvalidKey,
    /// The handshake payload does not fit in a handshake message.
    #[error("handshake payload is {len} bytes, at most {max} fit")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// [`MAX_PAYLOAD_LEN`].
        max: usize,
    },
    /// A handshake message was malformed, failed authentication, or was not
    /// what the pattern expects at this point.
    #[error("bad handshake message: {0}")]
    BadHandshake(&'static str),
    /// The peer's static key is a low-order point: anyone could claim it, so
    /// it cannot identify anyone.
    #[error("peer's static key is a low-order point")]
    WeakRemoteKey,
    /// A record's length is zero or too short to hold an authentication tag
    /// and at least one byte.
    #[error("invalid record length {0}")]
    BadRecordLength(u16),
    /// A transport record failed authentication: it was tampered with,
    /// reordered, or not made with this session's keys.
    #[error("record failed to decrypt")]
    Decrypt,
    /// [`Session::send`] was called before the handshake completed.
    #[error("the handshake has not completed")]
    NotEstablished,
    /// An initiator received bytes before [`Session::start`]: a responder never
    /// speaks first.
    #[error("received data before the handshake started")]
    NotStarted,
    /// The cryptography failed locally (a setup problem or an exhausted nonce);
    /// not caused by the peer's bytes.
    #[error("noise failure: {0}")]
    Crypto(&'static str),
    /// The session failed earlier and cannot be used any more.
    #[error("the session has failed")]
    Dead,
}

/// Which side of the handshake a session plays: the one that dialled
/// (`Initiator`) speaks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The dialling side; sends handshake messages 1 and 3.
    Initiator,
    /// The accepting side; sends handshake message 2.
    Responder,
}

/// A long-lived X25519 static key pair: the public half is the peer's identity.
///
/// `Debug` prints only the public half, so a key pair can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Keypair {
    /// The private scalar (unclamped; X25519 clamps it on use). The daemon
    /// persists only this.
    pub private: [u8; 32],
    /// The public key derived from `private`.
    pub public: [u8; 32],
}

impl Keypair {
    /// A fresh key pair drawn from `rng`: the same stream gives the same key, so
    /// simulated peers have stable identities.
    pub fn generate(rng: &mut Rng) -> Keypair {
        loop {
            let mut private = [0u8; 32];
            rng.fill(&mut private);
            // Only the all-zero key is refused (probability 2^-256), and the
            // curve is compiled in, so this returns on the first turn.
            if let Ok(keypair) = Keypair::from_private(private) {
                return keypair;
            }
        }
    }

    /// Rebuilds the key pair from its private half (the only part persisted).
    ///
    /// # Errors
    /// [`NoiseError::InvalidKey`] for an all-zero key.
    pub fn from_private(private: [u8; 32]) -> Result<Keypair, NoiseError> {
        if private == [0u8; 32] {
            return Err(NoiseError::InvalidKey);
        }
        let mut dh = curve25519()?;
        dh.set(&private);
        let public = to_key(dh.pubkey()).ok_or(NoiseError::Crypto("X25519 public key length"))?;
        Ok(Keypair { private, public })
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("public", &Hex(&self.public))
            .finish_non_exhaustive()
    }
}

/// Hex formatting for keys in `Debug` output.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::id::to_hex(self.0))
    }
}

/// Where a session is in its life.
enum State {
    /// Handshaking. Boxed: a handshake state is several times larger than a
    /// transport state and lives for three messages only.
    Handshake(Box<HandshakeState>),
    /// Established; records are application data.
    Transport(TransportState),
    /// Failed; every call errors.
    Dead,
}

/// One side of a peer connection: the Noise handshake, then the record layer.
///
/// Stream-oriented and sans-IO: [`receive`](Session::receive) takes raw bytes
/// split anywhere and buffers at most one partial record (at most
/// 2 + [`MAX_RECORD_LEN`] bytes), so a slow or hostile peer cannot make it hold
/// more. Output is appended to caller-owned buffers, so a long transfer does not
/// allocate per record.
pub struct Session {
    role: Role,
    state: State,
    /// Initiator only: message 1 has been written.
    started: bool,
    /// Flags byte + our payload, until it has been sent.
    local_payload: Vec<u8>,
    /// Whether we asked for encryption.
    want_encrypt: bool,
    /// Negotiated once established.
    encrypted: bool,
    remote_static: Option<[u8; 32]>,
    remote_payload: Option<Vec<u8>>,
    /// The Noise handshake hash, once established: unique to this session,
    /// so a proof bound to it cannot be replayed on another.
    handshake_hash: Option<Vec<u8>>,
    /// A partial record (header included) carried over between `receive` calls.
    rx: Vec<u8>,
}

impl Session {
    /// A session that will authenticate as `keypair`, drawing its ephemeral key
    /// from `rng`, and send `payload` to the peer inside the handshake.
    ///
    /// `encrypt = false` asks for an unencrypted transport; it is granted only
    /// if the peer asks for it too (see [`Session::encrypted`]).
    ///
    /// # Errors
    /// [`NoiseError::PayloadTooLarge`] if `payload` exceeds [`MAX_PAYLOAD_LEN`];
    /// [`NoiseError::InvalidKey`] for an all-zero private key.
    pub fn new(
        role: Role,
        keypair: &Keypair,
        rng: Rng,
        encrypt: bool,
        payload: Vec<u8>,
    ) -> Result<Session, NoiseError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(NoiseError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        if keypair.private == [0u8; 32] {
            return Err(NoiseError::InvalidKey);
        }
        let params: NoiseParams = PATTERN
            .parse()
            .map_err(|_| NoiseError::Crypto("pattern not supported"))?;
        let resolver = SeededResolver {
            rng: Cell::new(Some(rng)),
        };
        let builder = snow::Builder::with_resolver(params, Box::new(resolver))
            .prologue(PROLOGUE)
            .and_then(|b| b.local_private_key(&keypair.private))
            .map_err(|_| NoiseError::Crypto("builder"))?;
        let handshake = match role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .map_err(|_| NoiseError::Crypto("building the handshake state"))?;

        let mut local_payload = Vec::with_capacity(1 + payload.len());
        local_payload.push(if encrypt { FLAG_ENCRYPT } else { 0 });
        local_payload.extend_from_slice(&payload);
        Ok(Session {
            role,
            state: State::Handshake(Box::new(handshake)),
            started: false,
            local_payload,
            want_encrypt: encrypt,
            encrypted: true,
            remote_static: None,
            remote_payload: None,
            handshake_hash: None,
            rx: Vec::new(),
        })
    }

    /// This session's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Opens the handshake: an initiator appends message 1 to `out`. A
    /// responder waits for the initiator, so for it (and for a second call) this
    /// does nothing. A failure here kills the session, and the next call reports
    /// it.
    pub fn start(&mut self, out: &mut Vec<u8>) {
        if self.role != Role::Initiator || self.started {
            return;
        }
        self.started = true;
        let result = match &mut self.state {
            State::Handshake(hs) => write_handshake(hs, &[], out),
            _ => Ok(()),
        };
        if result.is_err() {
            self.state = State::Dead;
        }
    }

    /// Consumes bytes from the peer, split anywhere.
    ///
    /// During the handshake, each complete handshake message is processed and
    /// any reply appended to `out`; once established, each complete record is
    /// decrypted and its plaintext appended to `plaintext`. Records that follow
    /// the last handshake message in the same slice are decoded as transport
    /// records. An incomplete trailing record is kept for the next call.
    ///
    /// # Errors
    /// Any [`NoiseError`] caused by the bytes kills the session. Plaintext and
    /// replies from records *before* the failing one have been appended (they
    /// were authentic), but the caller should close the connection.
    pub fn receive(
        &mut self,
        data: &[u8],
        plaintext: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        if matches!(self.state, State::Dead) {
            return Err(NoiseError::Dead);
        }
        let result = self.receive_inner(data, plaintext, out);
        if result.is_err() {
            self.kill();
        }
        result
    }

    /// Encrypts `plaintext` (or frames it, unencrypted) into records appended to
    /// `out`: as many as needed, each at most [`MAX_RECORD_PLAINTEXT`] bytes of
    /// plaintext. An empty `plaintext` writes nothing.
    ///
    /// # Errors
    /// [`NoiseError::NotEstablished`] before the handshake completes (which is
    /// a caller bug, and also kills the session); [`NoiseError::Dead`] after an
    /// earlier failure.
    pub fn send(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let State::Transport(transport) = &mut self.state else {
            let err = if matches!(self.state, State::Dead) {
                NoiseError::Dead
            } else {
                NoiseError::NotEstablished
            };
            self.kill();
            return Err(err);
        };
        let records = plaintext.len().div_ceil(MAX_RECORD_PLAINTEXT);
        let overhead = if self.encrypted { 2 + TAG_LEN } else { 2 };
        out.reserve(plaintext.len() + records * overhead);
        for chunk in plaintext.chunks(MAX_RECORD_PLAINTEXT) {
            if self.encrypted {
                let start = out.len();
                out.resize(start + 2 + chunk.len() + TAG_LEN, 0);
                let written = match transport.write_message(chunk, &mut out[start + 2..]) {
                    Ok(n) => n,
                    Err(_) => {
                        out.truncate(start);
                        self.kill();
                        return Err(NoiseError::Crypto("encryption failed"));
                    }
                };
                out.truncate(start + 2 + written);
                out[start..start + 2].copy_from_slice(&record_header(written));
            } else {
                out.extend_from_slice(&record_header(chunk.len()));
                out.extend_from_slice(chunk);
            }
        }
        Ok(())
    }

    /// Whether the handshake has completed: [`send`](Session::send) works and
    /// the peer's key and payload are known.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    /// Whether the session failed (and every call now errors).
    pub fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead)
    }

    /// The handshake hash, once established (see the field).
    pub fn handshake_hash(&self) -> Option<&[u8]> {
        self.handshake_hash.as_deref()
    }

    /// The peer's authenticated static public key, once established: the
    /// peer's identity.
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.remote_static
    }

    /// The payload the peer sent in the handshake (flags stripped), once
    /// established. It is authenticated by the peer's static key.
    pub fn remote_payload(&self) -> Option<&[u8]> {
        self.remote_payload.as_deref()
    }

    /// Whether records are encrypted: true unless both sides asked for no
    /// encryption. Before the handshake completes nothing is negotiated yet, and
    /// this is true (the handshake itself is always encrypted).
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    fn kill(&mut self) {
        self.state = State::Dead;
        self.local_payload = Vec::new();
        self.rx = Vec::new();
    }

    fn receive_inner(
        &mut self,
        mut data: &[u8],
        plaintext: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        if self.role == Role::Initiator && !self.started && !data.is_empty() {
            return Err(NoiseError::NotStarted);
        }
        // First complete the record left over from the last call, copying only
        // as many bytes as it still lacks.
        if !self.rx.is_empty() {
            loop {
                let want = match header(&self.rx) {
                    Some(len) => 2 + self.check_len(len)?,
                    None => 2,
                };
                if self.rx.len() == want {
                    break;
                }
                let take = (want - self.rx.len()).min(data.len());
                self.rx.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.rx.len() < want {
                    return Ok(());
                }
            }
            // Move the buffer out so the record can be processed with `&mut
            // self`, then put it back (emptied) to keep its capacity.
            let mut record = std::mem::take(&mut self.rx);
            let result = self.process_record(&record[2..], plaintext, out);
            record.clear();
            self.rx = record;
            result?;
        }
        // Then decode complete records straight from `data`, without copying.
        while let Some(len) = header(data) {
            let len = self.check_len(len)?;
            let Some(body) = data.get(2..2 + len) else {
                break;
            };
            self.process_record(body, plaintext, out)?;
            data = &data[2 + len..];
        }
        // Keep the incomplete tail (at most one record) for the next call.
        self.rx.extend_from_slice(data);
        Ok(())
    }

    /// Validates a record length for the current state, returning it as `usize`.
    fn check_len(&self, len: u16) -> Result<usize, NoiseError> {
        let min = match self.state {
            // An encrypted record holds at least one byte and the tag: `send`
            // never writes empty records.
            State::Transport(_) if self.encrypted => TAG_LEN + 1,
            _ => 1,
        };
        let len_usize = usize::from(len);
        if len_usize < min {
            return Err(NoiseError::BadRecordLength(len));
        }
        Ok(len_usize)
    }

    /// Processes one complete record body.
    fn process_record(
        &mut self,
        body: &[u8],
        plaintext: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        match &mut self.state {
            State::Transport(transport) => {
                if self.encrypted {
                    let start = plaintext.len();
                    plaintext.resize(start + body.len() - TAG_LEN, 0);
                    match transport.read_message(body, &mut plaintext[start..]) {
                        Ok(n) => {
                            plaintext.truncate(start + n);
                            Ok(())
                        }
                        Err(_) => {
                            plaintext.truncate(start);
                            Err(NoiseError::Decrypt)
                        }
                    }
                } else {
                    plaintext.extend_from_slice(body);
                    Ok(())
                }
            }
            State::Handshake(_) => self.process_handshake(body, out),
            State::Dead => Err(NoiseError::Dead),
        }
    }

    /// Processes one handshake message and writes the reply, if any.
    fn process_handshake(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let State::Handshake(hs) = &mut self.state else {
            return Err(NoiseError::Dead);
        };
        if hs.is_my_turn() {
            // The initiator after message 1, or a responder after message 1
            // whose reply failed: either way the peer spoke out of turn.
            return Err(NoiseError::BadHandshake("message out of turn"));
        }
        let mut payload = vec![0u8; message.len()];
        let n = hs
            .read_message(message, &mut payload)
            .map_err(|_| NoiseError::BadHandshake("rejected by noise"))?;
        payload.truncate(n);
        match self.role {
            Role::Responder if !hs.is_handshake_finished() => {
                // Message 1 carries only the initiator's ephemeral key: a
                // payload there would be unauthenticated and unencrypted.
                if !payload.is_empty() {
                    return Err(NoiseError::BadHandshake("payload in message 1"));
                }
                let ours = std::mem::take(&mut self.local_payload);
                write_handshake(hs, &ours, out)
            }
            Role::Responder => self.establish(payload),
            Role::Initiator => {
                let ours = std::mem::take(&mut self.local_payload);
                write_handshake(hs, &ours, out)?;
                self.establish(payload)
            }
        }
    }

    /// Switches to transport mode once the handshake is finished, with the
    /// peer's flags + payload from its last handshake message.
    fn establish(&mut self, mut payload: Vec<u8>) -> Result<(), NoiseError> {
        let State::Handshake(hs) = std::mem::replace(&mut self.state, State::Dead) else {
            return Err(NoiseError::Dead);
        };
        if !hs.is_handshake_finished() {
            return Err(NoiseError::BadHandshake("handshake incomplete"));
        }
        let Some(&flags) = payload.first() else {
            return Err(NoiseError::BadHandshake("missing flags"));
        };
        payload.remove(0);
        let remote_static = hs
            .get_remote_static()
            .and_then(to_key)
            .ok_or(NoiseError::BadHandshake("no remote static key"))?;
        if is_low_order(&remote_static)? {
            return Err(NoiseError::WeakRemoteKey);
        }
        self.handshake_hash = Some(hs.get_handshake_hash().to_vec());
        let transport = hs
            .into_transport_mode()
            .map_err(|_| NoiseError::Crypto("entering transport mode"))?;
        self.encrypted = self.want_encrypt || flags & FLAG_ENCRYPT != 0;
        self.remote_static = Some(remote_static);
        self.remote_payload = Some(payload);
        self.state = State::Transport(transport);
        Ok(())
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Handshake(_) => "handshake",
            State::Transport(_) => "established",
            State::Dead => "dead",
        };
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("state", &state)
            .field("encrypted", &self.encrypted)
            .field(
                "remote_static",
                &self.remote_static.as_ref().map(|k| Hex(k)),
            )
            .field("buffered", &self.rx.len())
            .finish_non_exhaustive()
    }
}

/// The record header for a body of `len` bytes (callers keep `len` within
/// [`MAX_RECORD_LEN`]).
fn record_header(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

/// The body length announced by a buffer's record header, if it has one.
fn header(buf: &[u8]) -> Option<u16> {
    match buf {
        [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// Writes the next handshake message, framed, to the end of `out`.
fn write_handshake(
    hs: &mut HandshakeState,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), NoiseError> {
    let start = out.len();
    out.resize(start + 2 + MAX_RECORD_LEN, 0);
    match hs.write_message(payload, &mut out[start + 2..]) {
        Ok(n) => {
            out.truncate(start + 2 + n);
            out[start..start + 2].copy_from_slice(&record_header(n));
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(NoiseError::Crypto("writing a handshake message"))
        }
    }
}

fn to_key(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

/// snow's X25519 implementation.
fn curve25519() -> Result<Box<dyn Dh>, NoiseError> {
    DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .ok_or(NoiseError::Crypto("X25519 not compiled in"))
}

/// Whether `public` is a point of small order (including non-canonical
/// encodings of one). X25519 clamps every scalar to a multiple of the cofactor
/// 8, which sends exactly those points to zero; the fixed scalar below is not a
/// multiple of either large prime subgroup order, so no other point maps there.
fn is_low_order(public: &[u8; 32]) -> Result<bool, NoiseError> {
    let mut dh = curve25519()?;
    dh.set(&[0x5a; KEY_LEN]);
    let mut shared = [0u8; KEY_LEN];
    dh.dh(public, &mut shared)
        .map_err(|_| NoiseError::Crypto("X25519"))?;
    Ok(shared == [0u8; KEY_LEN])
}

/// Hands snow our seeded stream as its only source of randomness, and snow's
/// own primitives for everything else.
struct SeededResolver {
    /// Taken by the first (and only) `resolve_rng` call, when the handshake
    /// state is built. A second call gets `None`, which snow reports as an error
    /// rather than falling back to the OS.
    rng: Cell<Option<Rng>>,
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.rng
            .take()
            .map(|rng| Box::new(SeededRandom(rng)) as Box<dyn Random>)
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// Our [`Rng`] as snow's randomness source.
struct SeededRandom(Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_order_points_are_detected() {
        // u = 0 and u = 1, and p - 1, p, p + 1 (non-canonical encodings).
        let mut weak = vec![[0u8; 32]];
        let mut one = [0u8; 32];
        one[0] = 1;
        weak.push(one);
        for low in [0xec, 0xed, 0xee] {
            let mut p = [0xff; 32];
            p[0] = low;
            p[31] = 0x7f;
            weak.push(p);
        }
        for key in &weak {
            assert_eq!(is_low_order(key), Ok(true), "{:?}", Hex(key));
        }
        let mut rng = Rng::from_u64(7);
        for _ in 0..32 {
            let kp = Keypair::generate(&mut rng);
            assert_eq!(is_low_order(&kp.public), Ok(false));
        }
    }

    #[test]
    fn payload_limit_fills_message_two_exactly() {
        let mut rng = Rng::from_u64(1);
        let a = Keypair::generate(&mut rng);
        let b = Keypair::generate(&mut rng);
        let mut init =
            Session::new(Role::Initiator, &a, rng.child("i", 0), true, Vec::new()).unwrap();
        let mut resp = Session::new(
            Role::Responder,
            &b,
            rng.child("r", 0),
            true,
            vec![7; MAX_PAYLOAD_LEN],
        )
        .unwrap();
        let (mut m1, mut m2, mut p) = (Vec::new(), Vec::new(), Vec::new());
        init.start(&mut m1);
        resp.receive(&m1, &mut p, &mut m2).unwrap();
        assert_eq!(m2.len(), 2 + MAX_RECORD_LEN);
        assert_eq!(
            Session::new(Role::Responder, &b, rng, true, vec![0; MAX_PAYLOAD_LEN + 1]).err(),
            Some(NoiseError::PayloadTooLarge {
                len: MAX_PAYLOAD_LEN + 1,
                max: MAX_PAYLOAD_LEN
            })
        );
    }
}
