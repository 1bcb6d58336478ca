//! The pack codec lives in the core (`ivaldi_core::codec`), because the sync
//! engine sends stored forms on the wire as they are; the store uses it from here.

pub use ivaldi_core::codec::*;
