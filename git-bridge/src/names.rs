//! Git branch names to timeline names.
//!
//! Git allows branch names a timeline cannot have (any non-ASCII letter, `#`,
//! `~`-free punctuation, …). The rule, applied to the name after the optional
//! `--timeline-prefix`:
//!
//! 1. a name that is already a valid timeline name is kept as it is;
//! 2. otherwise every byte outside `A-Z a-z 0-9 . _ - + /` (and `@`, the escape
//!    character itself) becomes `@XX`, its value in two upper-case hex digits
//!    (`fix-ü` → `fix-@C3@BC`, `a#1` → `a@231`);
//! 3. a segment that starts with `.` gets `@2E` instead, and one that ends in
//!    `.lock` gets `@2Elock`.
//!
//! Two branches that would map to the same timeline are refused before anything
//! is written. Export writes every timeline that came from git back under its
//! original branch name (the bridge stores the pairs).

use ivaldi_core::TimelineName;

/// The timeline for git branch `branch` (without `refs/heads/`), or why there
/// is none.
pub fn timeline_for_branch(prefix: &str, branch: &str) -> Result<TimelineName, String> {
    let whole = format!("{prefix}{branch}");
    if let Ok(name) = TimelineName::new(&whole) {
        return Ok(name);
    }
    let mut segments = Vec::new();
    for seg in whole.split('/') {
        let mut out = String::new();
        for (i, b) in seg.bytes().enumerate() {
            let plain = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+');
            if plain && !(i == 0 && b == b'.') {
                out.push(b as char);
            } else {
                out.push_str(&format!("@{b:02X}"));
            }
        }
        if let Some(stem) = out.strip_suffix(".lock") {
            out = format!("{stem}@2Elock");
        }
        segments.push(out);
    }
    let mapped = segments.join("/");
    TimelineName::new(&mapped)
        .map_err(|e| format!("git branch {branch:?} cannot be a timeline, even mapped: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str, b: &str) -> String {
        timeline_for_branch(p, b).expect("maps").to_string()
    }

    #[test]
    fn valid_names_are_kept_and_others_are_escaped() {
        assert_eq!(t("", "main"), "main");
        assert_eq!(t("git/", "feature/x"), "git/feature/x");
        assert_eq!(t("", "fix-ü"), "fix-@C3@BC");
        assert_eq!(t("", "a#1"), "a@231");
        assert_eq!(t("", "x/.hidden#"), "x/@2Ehidden@23");
        assert_eq!(t("", "we@ird#"), "we@40ird@23");
    }
}
