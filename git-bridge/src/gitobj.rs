//! Git's object formats, as far as the bridge needs them: pure functions over
//! bytes, no repository access.
//!
//! The bridge reads and writes the raw object bytes itself (gitoxide moves them
//! in and out of the object database) because it must rebuild every object
//! byte for byte: a commit's id covers its tree's id, which covers every
//! entry's mode string, name order and blob id.

use ivaldi_core::object::{self, Mode};
use ivaldi_core::{ObjectId, Timestamp};

/// A git object id (SHA-1).
pub type GitId = gix::ObjectId;

/// One entry of a git tree, borrowed from the raw bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawEntry<'a> {
    pub mode: &'a [u8],
    pub name: &'a [u8],
    pub id: [u8; 20],
}

/// Splits a raw git tree into its entries.
pub fn parse_tree(data: &[u8]) -> Result<Vec<RawEntry<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("tree entry without a mode")?;
        let mode = &rest[..sp];
        rest = &rest[sp + 1..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("tree entry name without its terminating NUL")?;
        let name = &rest[..nul];
        rest = &rest[nul + 1..];
        if rest.len() < 20 {
            return Err("tree entry id is cut short");
        }
        let mut id = [0u8; 20];
        id.copy_from_slice(&rest[..20]);
        rest = &rest[20..];
        out.push(RawEntry { mode, name, id });
    }
    Ok(out)
}

/// The Ivaldi mode of a canonical git mode string; `None` for anything else
/// (old git's `100664`, a zero-padded `040000`, …), which could not be written
/// back to the same bytes.
pub fn mode_from_git(mode: &[u8]) -> Option<Mode> {
    match mode {
        b"100644" => Some(Mode::File),
        b"100755" => Some(Mode::Executable),
        b"120000" => Some(Mode::Symlink),
        b"40000" => Some(Mode::Tree),
        b"160000" => Some(Mode::Gitlink),
        _ => None,
    }
}

/// The git mode string of an Ivaldi mode.
pub fn mode_to_git(mode: Mode) -> &'static [u8] {
    match mode {
        Mode::File => b"100644",
        Mode::Executable => b"100755",
        Mode::Symlink => b"120000",
        Mode::Tree => b"40000",
        Mode::Gitlink => b"160000",
    }
}

/// A submodule's commit id held in a tree entry's 32-byte id: the 20 SHA-1 bytes,
/// then zeros.
pub fn gitlink_to_ivaldi(id: &[u8; 20]) -> ObjectId {
    let mut out = [0u8; 32];
    out[..20].copy_from_slice(id);
    ObjectId(out)
}

/// The submodule commit id a gitlink entry holds.
pub fn gitlink_from_ivaldi(id: &ObjectId) -> GitId {
    let mut out = [0u8; 20];
    out.copy_from_slice(&id.0[..20]);
    GitId::from(out)
}

/// Encodes a git tree: entries in git's order, where a subtree sorts as if its
/// name ended in `/`.
pub fn encode_tree(entries: &mut [(Mode, &str, GitId)]) -> Vec<u8> {
    fn key(mode: Mode, name: &str) -> impl Iterator<Item = u8> + '_ {
        name.bytes().chain((mode == Mode::Tree).then_some(b'/'))
    }
    entries.sort_by(|a, b| key(a.0, a.1).cmp(key(b.0, b.1)));
    let mut out = Vec::with_capacity(entries.len() * 40);
    for (mode, name, id) in entries.iter() {
        out.extend_from_slice(mode_to_git(*mode));
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// A raw git commit split into what a seal keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawCommit<'a> {
    pub tree: GitId,
    pub parents: Vec<GitId>,
    /// The header lines after the parents (author, committer, extras), each
    /// ending in `\n`.
    pub headers: &'a [u8],
    pub message: &'a [u8],
}

fn hex_line<'a>(data: &'a [u8], key: &[u8]) -> Option<(GitId, &'a [u8])> {
    let rest = data.strip_prefix(key)?;
    let hex = rest.get(..40)?;
    if rest.get(40) != Some(&b'\n') || hex.iter().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let id = GitId::from_hex(hex).ok()?;
    Some((id, &rest[41..]))
}

/// Splits a raw commit; `None` when it is not laid out as git writes commits
/// (`tree`, the `parent`s, the other headers, a blank line, the message).
pub fn parse_commit(data: &[u8]) -> Option<RawCommit<'_>> {
    let (tree, mut rest) = hex_line(data, b"tree ")?;
    let mut parents = Vec::new();
    while let Some((p, r)) = hex_line(rest, b"parent ") {
        parents.push(p);
        rest = r;
    }
    let end = if rest.first() == Some(&b'\n') {
        0
    } else {
        rest.windows(2).position(|w| w == b"\n\n")? + 1
    };
    Some(RawCommit {
        tree,
        parents,
        headers: &rest[..end],
        message: &rest[end + 1..],
    })
}

/// Rebuilds a raw commit from its parts: the inverse of [`parse_commit`].
pub fn encode_commit(tree: &GitId, parents: &[GitId], headers: &[u8], message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(46 + 48 * parents.len() + headers.len() + 1 + message.len());
    out.extend_from_slice(b"tree ");
    out.extend_from_slice(tree.to_hex().to_string().as_bytes());
    out.push(b'\n');
    for p in parents {
        out.extend_from_slice(b"parent ");
        out.extend_from_slice(p.to_hex().to_string().as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(headers);
    out.push(b'\n');
    out.extend_from_slice(message);
    out
}

/// The first header line starting with `key ` (without the key and newline).
pub fn header<'a>(headers: &'a [u8], key: &str) -> Option<&'a [u8]> {
    headers.split(|&b| b == b'\n').find_map(|line| {
        line.strip_prefix(key.as_bytes())
            .and_then(|r| r.strip_prefix(b" "))
    })
}

/// Splits a git signature (`Name <email> 1700000000 +0100`) into the identity
/// and the time. The time falls back to zero (UTC) when it does not parse; the
/// raw header keeps the exact bytes either way.
pub fn parse_signature(sig: &[u8]) -> (String, Timestamp) {
    let text = String::from_utf8_lossy(sig);
    let mut parts = text.rsplitn(3, ' ');
    let tz = parts.next().unwrap_or("");
    let secs = parts.next().unwrap_or("");
    let who = parts.next();
    let parsed = (|| {
        let seconds: i64 = secs.parse().ok()?;
        let (sign, digits) = match tz.as_bytes().first()? {
            b'+' => (1i16, &tz[1..]),
            b'-' => (-1i16, &tz[1..]),
            _ => return None,
        };
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hh: i16 = digits[..2].parse().ok()?;
        let mm: i16 = digits[2..].parse().ok()?;
        let offset_minutes = sign * (hh * 60 + mm);
        (offset_minutes.abs() < 24 * 60).then_some(Timestamp {
            seconds,
            offset_minutes,
        })
    })();
    match (who, parsed) {
        (Some(who), Some(time)) => (who.to_owned(), time),
        _ => (
            text.into_owned(),
            Timestamp {
                seconds: 0,
                offset_minutes: 0,
            },
        ),
    }
}

/// A git signature line's value for an Ivaldi author and time: the author as
/// `Name <email>` (an author without an email gets `<>`), no newlines.
pub fn signature(author: &str, time: Timestamp) -> String {
    let clean: String = author
        .chars()
        .map(|c| if c == '\n' || c == '\0' { ' ' } else { c })
        .collect();
    let who = if clean.contains('<') && clean.ends_with('>') {
        clean
    } else {
        format!("{} <>", clean.trim())
    };
    let sign = if time.offset_minutes < 0 { '-' } else { '+' };
    let off = time.offset_minutes.unsigned_abs();
    format!(
        "{who} {} {sign}{:02}{:02}",
        time.seconds,
        off / 60,
        off % 60
    )
}

/// Git's id of an object with these bytes.
pub fn git_hash(kind: gix::object::Kind, data: &[u8]) -> Result<GitId, String> {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data).map_err(|e| e.to_string())
}

/// Checks that a name from git can be an Ivaldi tree entry name.
pub fn entry_name(name: &[u8]) -> Result<&str, String> {
    let s = std::str::from_utf8(name).map_err(|_| "the name is not UTF-8".to_owned())?;
    object::validate_name(s).map_err(|e| e.to_string())?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_sorts_as_if_its_name_ended_in_a_slash() {
        let id = GitId::null(gix::hash::Kind::Sha1);
        let mut e = vec![
            (Mode::File, "a.b", id),
            (Mode::Tree, "a", id),
            (Mode::File, "a-", id),
            (Mode::File, "a0", id),
        ];
        encode_tree(&mut e);
        let names: Vec<&str> = e.iter().map(|e| e.1).collect();
        // '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < '0' (0x30)
        assert_eq!(names, ["a-", "a.b", "a", "a0"]);
    }

    #[test]
    fn a_commit_splits_and_rebuilds_to_the_same_bytes() {
        let raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
parent 0000000000000000000000000000000000000001\n\
author A <a@x> 1 +0000\ncommitter C <c@x> 2 -0130\nencoding latin1\n\nmsg";
        let c = parse_commit(raw).expect("parses");
        assert_eq!(c.parents.len(), 1);
        assert_eq!(c.message, b"msg");
        assert_eq!(
            encode_commit(&c.tree, &c.parents, c.headers, c.message),
            raw.to_vec()
        );
        let (who, t) = parse_signature(header(c.headers, "committer").expect("committer"));
        assert_eq!(who, "C <c@x>");
        assert_eq!(t.offset_minutes, -90);
    }

    #[test]
    fn a_native_signature_has_an_email_and_a_git_time_zone() {
        let t = Timestamp {
            seconds: 5,
            offset_minutes: -90,
        };
        assert_eq!(signature("Ada", t), "Ada <> 5 -0130");
        assert_eq!(signature("Ada <a@b>", t), "Ada <a@b> 5 -0130");
    }
}
