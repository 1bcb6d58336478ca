//! Repository ids as discovery and the mesh carry them.
//!
//! Both announce which repositories a node serves, and both must refuse the
//! same ids; one definition keeps them from drifting apart.

/// Longest repository id that can be announced, in bytes.
pub const MAX_REPO_ID: usize = 128;

/// Whether `s` can be announced: 1 to [`MAX_REPO_ID`] printable ASCII bytes,
/// so an id never carries spaces or control characters into logs or labels.
pub fn is_repo_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_REPO_ID && s.bytes().all(|c| c.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_and_bounded() {
        assert!(is_repo_id("ivaldi-1234"));
        assert!(is_repo_id(&"x".repeat(MAX_REPO_ID)));
        assert!(!is_repo_id(""));
        assert!(!is_repo_id(&"x".repeat(MAX_REPO_ID + 1)));
        assert!(!is_repo_id("a b"));
        assert!(!is_repo_id("a\nb"));
        assert!(!is_repo_id("é"));
    }
}
