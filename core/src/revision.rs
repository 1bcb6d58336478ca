//! Revision names, as a git user types them.
//!
//! A revision is a *base* followed by any number of *steps*:
//!
//! - the base is `HEAD` or `@` (the working tree's base seal), a timeline name,
//!   or a short seal id (four or more hex digits);
//! - `~N` goes back N generations along first parents (`~` alone is `~1`);
//! - `^N` takes the Nth parent (`^` alone is `^1`; `^0` is the seal itself).
//!
//! Steps combine left to right: `main~2^2` is the second parent of main's
//! grandparent. `~` and `^` can never be part of a timeline name
//! ([`crate::timeline`]), so splitting at the first of them is unambiguous.
//!
//! This module only parses and walks; what a base names (a timeline's head, a
//! prefix's seal) and where parents come from are the caller's, so the walk
//! sees a function from a seal to its parents and nothing else.

use std::fmt;

use thiserror::Error;

use crate::id::ObjectId;

/// Longest revision text accepted, in bytes (a timeline name is at most 200).
pub const MAX_REVISION_LEN: usize = 1024;

/// Largest N accepted in `~N` or `^N`.
pub const MAX_STEP: u32 = 1_000_000;

/// Where a revision starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// `HEAD` or `@`: the working tree's base seal.
    Head,
    /// A timeline name or a short seal id, resolved by the caller.
    Name(String),
}

/// One step back from a seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `~N`: N generations back along first parents.
    Ancestor(u32),
    /// `^N`: the Nth parent (1-based); `^0` is the seal itself.
    Parent(u32),
}

/// A parsed revision: its text, base and steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revision {
    text: String,
    /// Where the revision starts.
    pub base: Base,
    /// The steps, in the order they are taken.
    pub steps: Vec<Step>,
}

/// Why a text is not a revision. Every message names the revision.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum RevisionError {
    #[error("empty revision: name a timeline, a seal id, HEAD or @")]
    Empty,
    #[error("revision {0:?} is longer than {MAX_REVISION_LEN} bytes")]
    TooLong(String),
    #[error(
        "revision {0:?} has nothing before its first '~' or '^': start with a timeline, a seal id, HEAD or @"
    )]
    NoBase(String),
    #[error(
        "revision {rev:?}: {found:?} is not allowed after '~' or '^'; use digits, as in main~2 or main^2"
    )]
    BadStep { rev: String, found: char },
    #[error("revision {rev:?}: {n} is too large a step (at most {MAX_STEP})")]
    StepTooLarge { rev: String, n: String },
}

impl Revision {
    /// Parses `text`. Never panics; every refusal names the revision.
    pub fn parse(text: &str) -> Result<Self, RevisionError> {
        if text.is_empty() {
            return Err(RevisionError::Empty);
        }
        if text.len() > MAX_REVISION_LEN {
            let mut end = 40;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            return Err(RevisionError::TooLong(format!("{}…", &text[..end])));
        }
        let split = text.find(['~', '^']).unwrap_or(text.len());
        let (base, mut rest) = text.split_at(split);
        let base = match base {
            "" => return Err(RevisionError::NoBase(text.to_owned())),
            "HEAD" | "@" => Base::Head,
            name => Base::Name(name.to_owned()),
        };
        let mut steps = Vec::new();
        while let Some(op) = rest.chars().next() {
            // `op` is '~' or '^': the split and the loop below stop only there.
            rest = &rest[1..];
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (num, after) = rest.split_at(digits);
            if let Some(c) = after.chars().next()
                && c != '~'
                && c != '^'
            {
                return Err(RevisionError::BadStep {
                    rev: text.to_owned(),
                    found: c,
                });
            }
            let n = if num.is_empty() {
                1
            } else {
                num.parse::<u32>()
                    .ok()
                    .filter(|n| *n <= MAX_STEP)
                    .ok_or_else(|| RevisionError::StepTooLarge {
                        rev: text.to_owned(),
                        n: num.to_owned(),
                    })?
            };
            steps.push(if op == '~' {
                Step::Ancestor(n)
            } else {
                Step::Parent(n)
            });
            rest = after;
        }
        Ok(Revision {
            text: text.to_owned(),
            base,
            steps,
        })
    }

    /// The revision as typed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Follows the steps from `start` (what the base named), asking `parents`
    /// for a seal's parents. Stops with [`WalkError::Missing`] at the first
    /// step that has nowhere to go, naming how far the walk got.
    pub fn walk<E>(
        &self,
        start: ObjectId,
        mut parents: impl FnMut(&ObjectId) -> Result<Vec<ObjectId>, E>,
    ) -> Result<ObjectId, WalkError<E>> {
        let mut at = start;
        // The revision text up to the seal we are at, for messages.
        let mut here = match &self.base {
            Base::Head => "HEAD".to_owned(),
            Base::Name(n) => n.clone(),
        };
        for step in &self.steps {
            match *step {
                Step::Ancestor(n) => {
                    for i in 0..n {
                        let ps = parents(&at).map_err(WalkError::Lookup)?;
                        match ps.first() {
                            Some(p) => at = *p,
                            None => {
                                return Err(WalkError::Missing {
                                    rev: self.text.clone(),
                                    reason: format!(
                                        "{}{} ({}) is a first seal: it has no parent",
                                        here,
                                        if i == 0 {
                                            String::new()
                                        } else {
                                            format!("~{i}")
                                        },
                                        at.short()
                                    ),
                                });
                            }
                        }
                    }
                    here = format!("{here}~{n}");
                }
                Step::Parent(0) => here = format!("{here}^0"),
                Step::Parent(n) => {
                    let ps = parents(&at).map_err(WalkError::Lookup)?;
                    match ps.get(n as usize - 1) {
                        Some(p) => at = *p,
                        None => {
                            return Err(WalkError::Missing {
                                rev: self.text.clone(),
                                reason: format!(
                                    "{here} ({}) has {} parent{}, so it has no parent {n}",
                                    at.short(),
                                    ps.len(),
                                    if ps.len() == 1 { "" } else { "s" }
                                ),
                            });
                        }
                    }
                    here = format!("{here}^{n}");
                }
            }
        }
        Ok(at)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a parsed revision names no seal.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum WalkError<E> {
    /// A step has nowhere to go (past a first seal, or a parent it lacks).
    #[error("revision {rev:?} names no seal: {reason}")]
    Missing { rev: String, reason: String },
    /// The caller's parent lookup failed.
    #[error("{0}")]
    Lookup(E),
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    #[test]
    fn plain_names_ids_and_head() {
        let r = Revision::parse("main").unwrap();
        assert_eq!(r.base, Base::Name("main".into()));
        assert!(r.steps.is_empty());
        assert_eq!(Revision::parse("HEAD").unwrap().base, Base::Head);
        assert_eq!(Revision::parse("@").unwrap().base, Base::Head);
        assert_eq!(
            Revision::parse("a1b2c3").unwrap().base,
            Base::Name("a1b2c3".into())
        );
        // '@' inside a name is part of the name.
        assert_eq!(
            Revision::parse("alice@laptop/wip~1").unwrap().base,
            Base::Name("alice@laptop/wip".into())
        );
    }

    #[test]
    fn steps_default_to_one_and_combine() {
        let r = Revision::parse("main~2^2").unwrap();
        assert_eq!(r.steps, [Step::Ancestor(2), Step::Parent(2)]);
        let r = Revision::parse("HEAD~^~3^0^").unwrap();
        assert_eq!(r.base, Base::Head);
        assert_eq!(
            r.steps,
            [
                Step::Ancestor(1),
                Step::Parent(1),
                Step::Ancestor(3),
                Step::Parent(0),
                Step::Parent(1)
            ]
        );
        assert_eq!(r.to_string(), "HEAD~^~3^0^");
    }

    #[test]
    fn bad_input_is_refused_with_the_revision_named() {
        assert_eq!(Revision::parse(""), Err(RevisionError::Empty));
        for (text, needle) in [
            ("~1", "nothing before"),
            ("^", "nothing before"),
            ("main~x", "'x'"),
            ("main^2a", "'a'"),
            ("main~-1", "'-'"),
            ("main~1 ", "' '"),
            ("main~99999999999999999999", "too large"),
            ("main~1000001", "too large"),
            ("main^é", "'é'"),
        ] {
            let e = Revision::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            if !e.contains("nothing before") {
                assert!(e.contains(&format!("{text:?}")), "{text:?}: {e}");
            }
        }
        let long = "é".repeat(600);
        assert!(matches!(
            Revision::parse(&long),
            Err(RevisionError::TooLong(_))
        ));
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let alphabet = ['a', '~', '^', '1', '0', '@', 'é', ' ', '/'];
        // Every string of up to five of these characters.
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for t in &texts {
                for c in alphabet {
                    next.push(format!("{t}{c}"));
                }
            }
            texts.extend(next);
        }
        for t in texts {
            let _ = Revision::parse(&t);
        }
    }

    /// 1 <- 2 <- 3 <- 5, and 4 a side branch fused into 5 (5's parents: 3, 4).
    fn graph() -> BTreeMap<ObjectId, Vec<ObjectId>> {
        BTreeMap::from([
            (id(1), vec![]),
            (id(2), vec![id(1)]),
            (id(3), vec![id(2)]),
            (id(4), vec![id(1)]),
            (id(5), vec![id(3), id(4)]),
        ])
    }

    fn walk(text: &str, start: ObjectId) -> Result<ObjectId, WalkError<String>> {
        let g = graph();
        Revision::parse(text)
            .unwrap()
            .walk(start, |s| g.get(s).cloned().ok_or(format!("no {s}")))
    }

    #[test]
    fn walking_follows_first_and_nth_parents() {
        assert_eq!(walk("main", id(5)), Ok(id(5)));
        assert_eq!(walk("main~", id(5)), Ok(id(3)));
        assert_eq!(walk("main~2", id(5)), Ok(id(2)));
        assert_eq!(walk("main^", id(5)), Ok(id(3)));
        assert_eq!(walk("main^2", id(5)), Ok(id(4)));
        assert_eq!(walk("main^2~1", id(5)), Ok(id(1)));
        assert_eq!(walk("main~0^0", id(5)), Ok(id(5)));
        assert_eq!(walk("HEAD~3", id(5)), Ok(id(1)));
    }

    #[test]
    fn walking_past_the_first_seal_or_a_missing_parent_says_where() {
        let e = walk("main~4", id(5)).unwrap_err().to_string();
        assert!(e.contains("\"main~4\"") && e.contains("main~3"), "{e}");
        assert!(e.contains("no parent"), "{e}");
        let e = walk("main~1^2", id(5)).unwrap_err().to_string();
        assert!(e.contains("main~1") && e.contains("has 1 parent,"), "{e}");
        let e = walk("main^3", id(5)).unwrap_err().to_string();
        assert!(e.contains("has 2 parents"), "{e}");
        assert_eq!(
            walk("x~1", id(9)),
            Err(WalkError::Lookup(format!("no {}", id(9))))
        );
    }
}
