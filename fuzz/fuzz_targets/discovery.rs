//! Feeds arbitrary datagrams, from a few source addresses, to a discovery machine.
//!
//! Discovery parses unauthenticated UDP from anyone on the LAN, so no input may
//! make it panic, grow its table past the bound, or account for a datagram
//! twice. The first byte is the control: its low bit prefixes every datagram with
//! the magic (so the fuzzer reaches the JSON parser and validator at once), the
//! rest picks a small table bound. The remaining bytes are datagrams separated by
//! `0xff 0xfe`; each datagram's first byte picks the source address (low 3 bits)
//! and how far time advances before it (the rest, in 100 ms steps).
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use ivaldi_core::discovery::{Discovery, DiscoveryConfig, MAGIC};
use ivaldi_core::rng::Rng;
use ivaldi_core::time::Instant;
use libfuzzer_sys::fuzz_target;

/// Sources: allowed IPv4 (two sharing a host), disallowed IPv4, allowed IPv6,
/// IPv4-mapped IPv6, loopback, disallowed IPv6.
const SOURCES: [&str; 8] = [
    "10.0.0.1:9091",
    "10.0.0.1:40000",
    "10.0.0.2:9091",
    "192.168.5.5:9091",
    "[fd00::1]:9091",
    "[::ffff:10.0.0.3]:9091",
    "127.0.0.1:9091",
    "[2001:db8::1]:9091",
];

const OWN: &str = "00000000000000000000000000000000000000000000000000000000000000aa";

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let with_magic = control & 1 == 1;
    let max_entries = usize::from(control >> 1) % 8 + 1;
    let cfg = DiscoveryConfig {
        targets: vec!["127.255.255.255:9091".parse().unwrap()],
        allowed_networks: vec!["10.0.0.0/8".into(), "fd00::/8".into(), "127.0.0.0/8".into()],
        max_entries,
        ..DiscoveryConfig::default()
    };
    let mut d = Discovery::new(cfg, OWN.into(), 9090, Rng::from_u64(1), Instant::ZERO).unwrap();
    d.set_local(
        vec![
            ("r".into(), "0123456789abcdef".into()),
            ("s".into(), "00".into()),
        ],
        Instant::ZERO,
    );
    let mut now = Instant::ZERO;
    let mut calls = 0u64;
    let mut accepted = 0u64;
    for piece in split(input) {
        let Some((&sel, body)) = piece.split_first() else {
            continue;
        };
        now = now + Duration::from_millis(100 * u64::from(sel >> 3));
        let from: SocketAddr = SOURCES[usize::from(sel & 7)].parse().unwrap();
        let bytes = if with_magic {
            [MAGIC.as_slice(), body].concat()
        } else {
            body.to_vec()
        };
        calls += 1;
        match d.handle_datagram(now, from, &bytes) {
            Ok(Some(o)) => {
                accepted += 1;
                assert!(d.filter().allows(o.addr.ip()));
                assert_eq!(o.addr.ip(), from.ip().to_canonical());
                let p = d
                    .peer(&o.node_id)
                    .expect("an accepted peer is in the table");
                assert_eq!(p.addr, o.addr);
                assert_eq!(p.matching, !o.shared.is_empty());
                assert_ne!(o.node_id, OWN);
            }
            Ok(None) => {}
            Err(_) => {}
        }
        assert!(d.peers().count() <= max_entries);
        if let Some(t) = d.poll_timeout()
            && t <= now
        {
            d.handle_timeout(now);
            while d.poll_datagram().is_some() {}
        }
    }
    let s = d.stats();
    assert_eq!(s.received, calls);
    assert_eq!(
        s.malformed + s.rate_limited + s.not_allowed + s.own + s.table_full + accepted,
        calls
    );
});

/// Splits on `0xff 0xfe`.
fn split(mut input: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(i) = input.windows(2).position(|w| w == [0xff, 0xfe]) {
        out.push(&input[..i]);
        input = &input[i + 2..];
    }
    out.push(input);
    out
}
