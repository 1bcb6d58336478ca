//! Ivaldi's objects and their one canonical byte encoding.
//!
//! Every object is encoded as a kind byte followed by a body; its id is the BLAKE3
//! hash of that whole encoding. Decoders accept exactly the bytes the encoders
//! produce and nothing else, so two peers can never disagree about an id.
//!
//! | kind | byte | body |
//! |---|---|---|
//! | blob | `1` | the raw bytes |
//! | tree | `2` | `u32` count, then per entry: mode `u8`, name length `u16`, name, id (32) |
//! | seal | `3` | tree id, parent count `u8`, parents, time `i64`, offset minutes `i16`, author (`u16` + UTF-8), message (`u32` + UTF-8), then only for a seal imported from git: `1`, git headers (`u32` + bytes), raw message flag `u8` (`1`: `u32` + bytes) |
//! | chunk list | `4` | level `u8`, total size `u64`, `u32` count, then per entry: id (32), size `u64` |
//!
//! All integers are big-endian.
//!
//! A seal made by Ivaldi ends after its message, so the optional git part
//! ([`GitCommit`]) changes neither the bytes nor the id of a native seal. Tree
//! entry mode `5` ([`Mode::Gitlink`]) names a git submodule commit, which is not an
//! Ivaldi object: it is never fetched, stored or required by the closure.

use thiserror::Error;

use crate::id::ObjectId;

/// The four kinds of object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// File content (a whole small file, or one chunk of a large one).
    Blob = 1,
    /// A directory listing.
    Tree = 2,
    /// A snapshot with its history: what a commit is in git.
    Seal = 3,
    /// The index of a large file's chunks (or of lower chunk lists).
    ChunkList = 4,
}

impl ObjectKind {
    /// The kind named by an encoding's first byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Blob),
            2 => Some(Self::Tree),
            3 => Some(Self::Seal),
            4 => Some(Self::ChunkList),
            _ => None,
        }
    }

    /// A lowercase name for messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Blob => "blob",
            Self::Tree => "tree",
            Self::Seal => "seal",
            Self::ChunkList => "chunk-list",
        }
    }
}

/// Why bytes are not a canonical object.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum DecodeError {
    #[error("empty object")]
    Empty,
    #[error("unknown object kind byte {0}")]
    UnknownKind(u8),
    #[error("object is a {found}, expected a {expected}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("object ends early while reading {0}")]
    Truncated(&'static str),
    #[error("{0} trailing bytes after the object")]
    TrailingBytes(usize),
    #[error("unknown tree entry mode {0}")]
    BadMode(u8),
    #[error("invalid entry name: {0}")]
    BadName(#[from] NameError),
    #[error("tree entries are not in strictly ascending order at {0:?}")]
    Unsorted(String),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("seal lists parent {0} twice")]
    DuplicateParent(ObjectId),
    #[error("time zone offset {0} minutes is out of range")]
    BadOffset(i16),
    #[error("chunk list is empty")]
    EmptyChunkList,
    #[error("chunk list entry has size zero")]
    ZeroChunk,
    #[error("chunk list level {0} is too deep")]
    ChunkLevel(u8),
    #[error("chunk list total {stated} does not match its entries' sum {actual}")]
    ChunkTotal { stated: u64, actual: u64 },
    #[error("{0} is too long to encode")]
    TooLong(&'static str),
    #[error("unknown seal part or flag byte {0}")]
    UnknownSealPart(u8),
    #[error("a seal's raw git message is UTF-8; it belongs in the message field")]
    GitMessageIsUtf8,
}

/// How a tree entry is checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// A regular file; the id names a blob or a chunk list.
    File = 1,
    /// A regular file with the executable bit.
    Executable = 2,
    /// A symbolic link; the blob holds the target.
    Symlink = 3,
    /// A subdirectory; the id names a tree.
    Tree = 4,
    /// A git submodule (gitlink): the id holds the submodule's git commit id
    /// (SHA-1, zero-padded to 32 bytes). It names no Ivaldi object; a checkout
    /// shows it as an empty directory, as git does before `submodule init`.
    Gitlink = 5,
}

impl Mode {
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            1 => Ok(Self::File),
            2 => Ok(Self::Executable),
            3 => Ok(Self::Symlink),
            4 => Ok(Self::Tree),
            5 => Ok(Self::Gitlink),
            _ => Err(DecodeError::BadMode(b)),
        }
    }

    /// Whether the entry holds file content (a blob or a chunk list).
    pub fn is_file(self) -> bool {
        matches!(self, Self::File | Self::Executable)
    }
}

/// Why a string is not a valid tree entry name.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("{0:?} is reserved")]
    Reserved(String),
    #[error("{0:?} contains '/' or NUL")]
    Separator(String),
    #[error("name of {0} bytes exceeds 255")]
    TooLong(usize),
}

/// Checks that `name` is one path component that cannot escape its directory
/// when checked out: not empty, `.`, `..` or `.ivaldi`, and without `/` or NUL.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 255 {
        return Err(NameError::TooLong(name.len()));
    }
    if name == "." || name == ".." || name == ".ivaldi" {
        return Err(NameError::Reserved(name.to_owned()));
    }
    if name.bytes().any(|b| b == b'/' || b == 0) {
        return Err(NameError::Separator(name.to_owned()));
    }
    Ok(())
}

/// One named entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TreeEntry {
    pub name: String,
    pub mode: Mode,
    pub id: ObjectId,
}

/// A directory: entries sorted by the bytes of their names, names unique.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tree {
    entries: Vec<TreeEntry>,
}

impl Tree {
    /// Builds a tree from entries in any order; sorting here is what makes the id
    /// independent of the order files were found in.
    pub fn new(mut entries: Vec<TreeEntry>) -> Result<Self, DecodeError> {
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        for e in &entries {
            validate_name(&e.name)?;
        }
        for w in entries.windows(2) {
            if w[0].name == w[1].name {
                return Err(DecodeError::Unsorted(w[1].name.clone()));
            }
        }
        Ok(Tree { entries })
    }

    /// The entries, in canonical order.
    pub fn entries(&self) -> &[TreeEntry] {
        &self.entries
    }

    /// Looks an entry up by name.
    pub fn get(&self, name: &str) -> Option<&TreeEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let size = 5 + self
            .entries
            .iter()
            .map(|e| 35 + e.name.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.push(ObjectKind::Tree as u8);
        // Entry count and name lengths are bounded by `new`/`decode` (names ≤ 255).
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.push(e.mode as u8);
            out.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(e.id.as_bytes());
        }
        out
    }

    /// Decodes a canonical encoding, rejecting anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, ObjectKind::Tree)?;
        let count = r.u32("entry count")? as usize;
        // Each entry needs at least 36 bytes: never allocate more than the input can hold.
        let mut entries = Vec::with_capacity(count.min(r.remaining() / 36));
        for _ in 0..count {
            let mode = Mode::from_byte(r.u8("entry mode")?)?;
            let len = usize::from(r.u16("name length")?);
            let name = std::str::from_utf8(r.take(len, "entry name")?)
                .map_err(|_| DecodeError::NotUtf8("entry name"))?
                .to_owned();
            validate_name(&name)?;
            let id = r.id("entry id")?;
            if let Some(prev) = entries.last().map(|e: &TreeEntry| e.name.as_bytes())
                && prev >= name.as_bytes()
            {
                return Err(DecodeError::Unsorted(name));
            }
            entries.push(TreeEntry { name, mode, id });
        }
        r.finish()?;
        Ok(Tree { entries })
    }

    /// The id of the canonical encoding.
    pub fn id(&self) -> ObjectId {
        ObjectId::hash(&self.encode())
    }
}

/// A moment with the author's UTC offset, so logs can show local time as git does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// The author's offset from UTC in minutes.
    pub offset_minutes: i16,
}

/// A snapshot: a tree, the seals it follows (by hash), who made it, when and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Seal {
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    pub author: String,
    pub time: Timestamp,
    pub message: String,
    /// What git needs to rebuild, byte for byte, the commit this seal was
    /// imported from; `None` for every seal Ivaldi makes itself.
    pub git: Option<GitCommit>,
}

/// The parts of a git commit that a seal does not already hold exactly: with
/// the seal's tree and parents (mapped back to git ids) these rebuild the
/// original commit object, and so its id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GitCommit {
    /// The commit's header lines after `tree` and the `parent` lines, exactly as
    /// git stored them, each ending in `\n`: `author`, `committer` (names, emails,
    /// times and time zones) and any extra header (`encoding`, `gpgsig`,
    /// `mergetag`, …, with their continuation lines).
    pub headers: Vec<u8>,
    /// The message bytes, only when they are not UTF-8 (the seal's `message`
    /// then holds them with U+FFFD replacements). When they are UTF-8 the seal's
    /// `message` is exactly them, so there is one encoding per commit.
    pub raw_message: Option<Vec<u8>>,
}

/// The byte that opens a seal's git part.
const GIT_PART: u8 = 1;

const MAX_OFFSET: i16 = 24 * 60 - 1;

impl Seal {
    /// The canonical encoding; fails only for fields too long for the format.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        self.check()?;
        let mut out = Vec::with_capacity(
            1 + 32
                + 1
                + 32 * self.parents.len()
                + 10
                + 2
                + self.author.len()
                + 4
                + self.message.len(),
        );
        out.push(ObjectKind::Seal as u8);
        out.extend_from_slice(self.tree.as_bytes());
        out.push(self.parents.len() as u8);
        for p in &self.parents {
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(&self.time.seconds.to_be_bytes());
        out.extend_from_slice(&self.time.offset_minutes.to_be_bytes());
        out.extend_from_slice(&(self.author.len() as u16).to_be_bytes());
        out.extend_from_slice(self.author.as_bytes());
        out.extend_from_slice(&(self.message.len() as u32).to_be_bytes());
        out.extend_from_slice(self.message.as_bytes());
        if let Some(git) = &self.git {
            out.push(GIT_PART);
            out.extend_from_slice(&(git.headers.len() as u32).to_be_bytes());
            out.extend_from_slice(&git.headers);
            match &git.raw_message {
                None => out.push(0),
                Some(raw) => {
                    out.push(1);
                    out.extend_from_slice(&(raw.len() as u32).to_be_bytes());
                    out.extend_from_slice(raw);
                }
            }
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if self.parents.len() > usize::from(u8::MAX) {
            return Err(DecodeError::TooLong("parent list"));
        }
        if self.author.len() > usize::from(u16::MAX) {
            return Err(DecodeError::TooLong("author"));
        }
        if u32::try_from(self.message.len()).is_err() {
            return Err(DecodeError::TooLong("message"));
        }
        // Not `abs()`: it overflows on `i16::MIN` (a panic with overflow checks, and
        // without them a wrap to a negative number that passed this test).
        if !(-MAX_OFFSET..=MAX_OFFSET).contains(&self.time.offset_minutes) {
            return Err(DecodeError::BadOffset(self.time.offset_minutes));
        }
        for (i, p) in self.parents.iter().enumerate() {
            if self.parents[..i].contains(p) {
                return Err(DecodeError::DuplicateParent(*p));
            }
        }
        if let Some(git) = &self.git {
            if u32::try_from(git.headers.len()).is_err() {
                return Err(DecodeError::TooLong("git headers"));
            }
            if let Some(raw) = &git.raw_message {
                if u32::try_from(raw.len()).is_err() {
                    return Err(DecodeError::TooLong("git message"));
                }
                // UTF-8 bytes live in `message` alone: one encoding per seal.
                if std::str::from_utf8(raw).is_ok() {
                    return Err(DecodeError::GitMessageIsUtf8);
                }
            }
        }
        Ok(())
    }

    /// Decodes a canonical encoding, rejecting anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, ObjectKind::Seal)?;
        let tree = r.id("tree id")?;
        let n = usize::from(r.u8("parent count")?);
        let mut parents = Vec::with_capacity(n);
        for _ in 0..n {
            parents.push(r.id("parent id")?);
        }
        let seconds = i64::from_be_bytes(r.array("time")?);
        let offset_minutes = i16::from_be_bytes(r.array("time zone")?);
        let alen = usize::from(r.u16("author length")?);
        let author = std::str::from_utf8(r.take(alen, "author")?)
            .map_err(|_| DecodeError::NotUtf8("author"))?
            .to_owned();
        let mlen = r.u32("message length")? as usize;
        let message = std::str::from_utf8(r.take(mlen, "message")?)
            .map_err(|_| DecodeError::NotUtf8("message"))?
            .to_owned();
        let git = if r.remaining() == 0 {
            None
        } else {
            // Anything but a git part after the message is not a seal.
            let rest = r.remaining();
            if r.u8("seal part")? != GIT_PART {
                return Err(DecodeError::TrailingBytes(rest));
            }
            let hlen = r.u32("git headers length")? as usize;
            let headers = r.take(hlen, "git headers")?.to_vec();
            let raw_message = match r.u8("git message flag")? {
                0 => None,
                1 => {
                    let len = r.u32("git message length")? as usize;
                    Some(r.take(len, "git message")?.to_vec())
                }
                b => return Err(DecodeError::UnknownSealPart(b)),
            };
            Some(GitCommit {
                headers,
                raw_message,
            })
        };
        r.finish()?;
        let seal = Seal {
            tree,
            parents,
            author,
            time: Timestamp {
                seconds,
                offset_minutes,
            },
            message,
            git,
        };
        seal.check()?;
        Ok(seal)
    }

    /// The id of the canonical encoding.
    pub fn id(&self) -> Result<ObjectId, DecodeError> {
        Ok(ObjectId::hash(&self.encode()?))
    }

    /// The first line of the message, for one-line logs.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

/// Deepest chunk-list level accepted; 8 levels of even 64 entries address far more
/// than any file system holds, so deeper input can only be hostile.
pub const MAX_CHUNK_LEVEL: u8 = 8;

/// The index of a large file: its chunks in order (level 0) or lower chunk lists
/// (levels above), with their sizes so a reader can seek without fetching.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChunkList {
    pub level: u8,
    pub entries: Vec<(ObjectId, u64)>,
}

impl ChunkList {
    /// The number of file bytes this list covers.
    pub fn total(&self) -> u64 {
        self.entries.iter().map(|e| e.1).sum()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + 40 * self.entries.len());
        out.push(ObjectKind::ChunkList as u8);
        out.push(self.level);
        out.extend_from_slice(&self.total().to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for (id, size) in &self.entries {
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&size.to_be_bytes());
        }
        out
    }

    /// Decodes a canonical encoding, rejecting anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes, ObjectKind::ChunkList)?;
        let level = r.u8("level")?;
        if level > MAX_CHUNK_LEVEL {
            return Err(DecodeError::ChunkLevel(level));
        }
        let stated = r.u64("total size")?;
        let count = r.u32("entry count")? as usize;
        if count == 0 {
            return Err(DecodeError::EmptyChunkList);
        }
        let mut entries = Vec::with_capacity(count.min(r.remaining() / 40));
        let mut actual: u64 = 0;
        for _ in 0..count {
            let id = r.id("chunk id")?;
            let size = r.u64("chunk size")?;
            if size == 0 {
                return Err(DecodeError::ZeroChunk);
            }
            actual = actual.checked_add(size).ok_or(DecodeError::ChunkTotal {
                stated,
                actual: u64::MAX,
            })?;
            entries.push((id, size));
        }
        r.finish()?;
        if actual != stated {
            return Err(DecodeError::ChunkTotal { stated, actual });
        }
        Ok(ChunkList { level, entries })
    }
}

/// Any decoded object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Blob(Vec<u8>),
    Tree(Tree),
    Seal(Seal),
    ChunkList(ChunkList),
}

impl Object {
    /// Decodes any kind of object from its canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match kind_of(bytes)? {
            ObjectKind::Blob => Ok(Object::Blob(bytes[1..].to_vec())),
            ObjectKind::Tree => Tree::decode(bytes).map(Object::Tree),
            ObjectKind::Seal => Seal::decode(bytes).map(Object::Seal),
            ObjectKind::ChunkList => ChunkList::decode(bytes).map(Object::ChunkList),
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        Ok(match self {
            Object::Blob(b) => encode_blob(b),
            Object::Tree(t) => t.encode(),
            Object::Seal(s) => s.encode()?,
            Object::ChunkList(c) => c.encode(),
        })
    }

    /// This object's kind.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Blob(_) => ObjectKind::Blob,
            Object::Tree(_) => ObjectKind::Tree,
            Object::Seal(_) => ObjectKind::Seal,
            Object::ChunkList(_) => ObjectKind::ChunkList,
        }
    }

    /// The ids this object refers to; the closure invariant needs them all present.
    pub fn children(&self) -> Vec<ObjectId> {
        match self {
            Object::Blob(_) => Vec::new(),
            // A gitlink names a commit of another (git) repository, not an object.
            Object::Tree(t) => t
                .entries()
                .iter()
                .filter(|e| e.mode != Mode::Gitlink)
                .map(|e| e.id)
                .collect(),
            Object::Seal(s) => std::iter::once(s.tree)
                .chain(s.parents.iter().copied())
                .collect(),
            Object::ChunkList(c) => c.entries.iter().map(|e| e.0).collect(),
        }
    }
}

/// Encodes file bytes as a blob.
pub fn encode_blob(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(ObjectKind::Blob as u8);
    out.extend_from_slice(data);
    out
}

/// The id a blob with these contents has, without copying them.
pub fn blob_id(data: &[u8]) -> ObjectId {
    let mut h = blake3::Hasher::new();
    h.update(&[ObjectKind::Blob as u8]);
    h.update(data);
    ObjectId(*h.finalize().as_bytes())
}

/// Reads the kind byte of an encoding.
pub fn kind_of(bytes: &[u8]) -> Result<ObjectKind, DecodeError> {
    let b = *bytes.first().ok_or(DecodeError::Empty)?;
    ObjectKind::from_byte(b).ok_or(DecodeError::UnknownKind(b))
}

/// Checks that `bytes` are a canonical object whose id is `expected`: the test every
/// received object passes before it becomes visible.
pub fn verify(expected: &ObjectId, bytes: &[u8]) -> Result<ObjectKind, VerifyError> {
    let actual = ObjectId::hash(bytes);
    if &actual != expected {
        return Err(VerifyError::HashMismatch {
            expected: *expected,
            actual,
        });
    }
    let kind = kind_of(bytes)?;
    match kind {
        ObjectKind::Blob => {}
        ObjectKind::Tree => {
            Tree::decode(bytes)?;
        }
        ObjectKind::Seal => {
            Seal::decode(bytes)?;
        }
        ObjectKind::ChunkList => {
            ChunkList::decode(bytes)?;
        }
    }
    Ok(kind)
}

/// Why an object failed verification.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum VerifyError {
    #[error("object hashes to {actual}, expected {expected}")]
    HashMismatch {
        expected: ObjectId,
        actual: ObjectId,
    },
    #[error("malformed object: {0}")]
    Malformed(#[from] DecodeError),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], expected: ObjectKind) -> Result<Self, DecodeError> {
        let kind = kind_of(bytes)?;
        if kind != expected {
            return Err(DecodeError::WrongKind {
                expected: expected.name(),
                found: kind.name(),
            });
        }
        Ok(Reader { bytes, pos: 1 })
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(what));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    fn id(&mut self, what: &'static str) -> Result<ObjectId, DecodeError> {
        Ok(ObjectId(self.array(what)?))
    }

    fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}
