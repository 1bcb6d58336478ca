//! Timeline names.
//!
//! A timeline name becomes a path under `.ivaldi/` and arrives from peers, so it is
//! validated once, here, into a type that cannot hold anything else: a name from a
//! peer can never escape its namespace or collide with the store's own files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest accepted name, in bytes.
pub const MAX_TIMELINE_NAME: usize = 200;

/// A validated timeline name: one or more `/`-separated segments of ASCII letters,
/// digits, `.`, `_`, `-`, `+` and `@`; no segment empty, starting with `.`, or
/// ending in `.lock`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimelineName(String);

/// Why a string is not a timeline name.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum TimelineNameError {
    #[error("timeline name is empty")]
    Empty,
    #[error("timeline name is longer than {MAX_TIMELINE_NAME} bytes")]
    TooLong,
    #[error("timeline name {0:?} has an empty segment")]
    EmptySegment(String),
    #[error("timeline name {0:?} has a segment starting with '.'")]
    DotSegment(String),
    #[error("timeline name {0:?} has a segment ending in \".lock\"")]
    LockSegment(String),
    #[error(
        "timeline name {name:?} contains {bad:?}; use letters, digits, '.', '_', '-', '+', '@' and '/'"
    )]
    BadChar { name: String, bad: char },
}

impl TimelineName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, TimelineNameError> {
        if name.is_empty() {
            return Err(TimelineNameError::Empty);
        }
        if name.len() > MAX_TIMELINE_NAME {
            return Err(TimelineNameError::TooLong);
        }
        if let Some(bad) = name.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@' | '/'))
        }) {
            return Err(TimelineNameError::BadChar {
                name: name.to_owned(),
                bad,
            });
        }
        for seg in name.split('/') {
            if seg.is_empty() {
                return Err(TimelineNameError::EmptySegment(name.to_owned()));
            }
            if seg.starts_with('.') {
                return Err(TimelineNameError::DotSegment(name.to_owned()));
            }
            if seg.ends_with(".lock") {
                return Err(TimelineNameError::LockSegment(name.to_owned()));
            }
        }
        Ok(TimelineName(name.to_owned()))
    }

    /// The name as text; safe to use as a relative path.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TimelineName {
    type Err = TimelineNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for TimelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TimelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for TimelineName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TimelineName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["main", "feature/x-1", "v1.2", "alice@laptop/wip", "a_b+c"] {
            assert!(TimelineName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_names_that_could_escape() {
        for n in [
            "", "..", "a/../b", "/abs", "a//b", "a/", ".hidden", "x.lock", "a\\b", "a b", "ä",
            "a\0b",
        ] {
            assert!(TimelineName::new(n).is_err(), "{n:?}");
        }
        assert!(TimelineName::new(&"a".repeat(201)).is_err());
    }
}
