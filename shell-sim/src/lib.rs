//! The deterministic simulator shell.
//!
//! Not built yet: it needs the protocol state machine of issue 3 to drive, and is
//! the subject of issue 5. The crate exists so the workspace has the layout of the
//! design card; the README lists this as a limitation.
#![forbid(unsafe_code)]
