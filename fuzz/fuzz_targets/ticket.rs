//! Feeds arbitrary text to the invitation-ticket parser.
//!
//! A ticket is pasted by hand from another machine, so any string may reach
//! `Ticket::parse`: it must never panic, and whatever it accepts must encode
//! back to a ticket that parses to the same value.
#![no_main]

use ivaldi_core::trust::Ticket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = Ticket::parse(&text) {
        let again = Ticket::parse(&t.encode()).expect("an encoded ticket parses");
        assert_eq!(again, t);
    }
});
