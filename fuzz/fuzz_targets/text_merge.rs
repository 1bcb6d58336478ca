//! Three-way text merge on arbitrary input: must never panic, and must honour the
//! rules that need no diff to check.
//!
//! The input is cut into base, ours and theirs by its first two bytes (each taken
//! modulo what is left), so the fuzzer controls all three lengths.
#![no_main]

use ivaldi_core::merge::{MergeLabels, merge_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let base_len = usize::from(*a) % (rest.len() + 1);
    let (base, rest) = rest.split_at(base_len);
    let ours_len = usize::from(*b) % (rest.len() + 1);
    let (ours, theirs) = rest.split_at(ours_len);

    let labels = MergeLabels::new("ours", "theirs");
    let m = merge_text(base, ours, theirs, &labels);
    if ours == theirs || base == theirs {
        assert!(m.is_clean() && m.content == ours);
    }
    if base == ours {
        assert!(m.is_clean() && m.content == theirs);
    }
    // Swapping the sides finds the same number of conflicts.
    let swapped = merge_text(base, theirs, ours, &labels);
    assert_eq!(m.conflicts, swapped.conflicts);
    if m.is_clean() {
        assert_eq!(m.content, swapped.content);
    }
});
