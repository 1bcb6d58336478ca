//! Feeds arbitrary datagrams, from a few source addresses, to a discovery machine.
//!
//! Discovery parses unauthenticated UDP from anyone on the LAN, so no input may
//! make it panic, grow its table past the bound, or account for a datagram
//! twice, or keep more than `max_foreign` entries for nodes that serve none of
//! our repositories. The first byte is the control: its low bit prefixes every
//! datagram with the magic (so the fuzzer reaches the JSON parser and validator
//! at once); its second bit builds a valid announcement from each datagram
//! instead (a sender, which of our repositories' tags it carries, made-up tags,
//! a port), since the fuzzer cannot guess a tag bound to a node id; the rest
//! picks small table bounds. The remaining bytes are datagrams separated by
//! `0xff 0xfe`; each datagram's first byte picks the source address (low 3 bits)
//! and how far time advances before it (the rest, in 100 ms steps).
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use std::collections::BTreeMap;

use ivaldi_core::discovery::{Announcement, Discovery, DiscoveryConfig, MAGIC, repo_tag};
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
    let structured = control & 2 == 2;
    let max_entries = usize::from(control >> 2) % 8 + 1;
    let max_foreign = usize::from(control >> 5) % 4 + 1;
    let cfg = DiscoveryConfig {
        targets: vec!["127.255.255.255:9091".parse().unwrap()],
        allowed_networks: vec!["10.0.0.0/8".into(), "fd00::/8".into(), "127.0.0.0/8".into()],
        max_entries,
        max_foreign,
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
        let bytes = if structured {
            announcement(body)
        } else if with_magic {
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
                // Only our own repositories are ever named.
                assert!(p.repos.keys().all(|id| id == "r" || id == "s"));
                assert_eq!(o.shared, p.repos.keys().cloned().collect::<Vec<_>>());
            }
            Ok(None) => {}
            Err(_) => {}
        }
        assert!(d.peers().count() <= max_entries);
        assert!(d.peers().filter(|p| !p.matching).count() <= max_foreign);
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

/// A valid announcement from fuzz bytes: `[sender, repos, port hi, port lo,
/// digest...]`. The sender is one of four node ids (or ours); bits of `repos`
/// add the tags of our "r" and "s" for that sender, one copied from another
/// sender, and a made-up tag.
fn announcement(body: &[u8]) -> Vec<u8> {
    let get = |i: usize| body.get(i).copied().unwrap_or(0);
    let node = match get(0) % 5 {
        4 => OWN.to_owned(),
        n => format!("{:064x}", 0xb0 + u32::from(n)),
    };
    let port = u16::from_be_bytes([get(2), get(3)]).max(1);
    let digest: String = body
        .iter()
        .skip(4)
        .take(16)
        .map(|b| char::from(b"0123456789abcdef"[usize::from(b & 15)]))
        .collect();
    let digest = if digest.is_empty() {
        "0".into()
    } else {
        digest
    };
    let bits = get(1);
    let mut tags = BTreeMap::new();
    if bits & 1 == 1 {
        tags.insert(repo_tag("r", &node), digest.clone());
    }
    if bits & 2 == 2 {
        tags.insert(repo_tag("s", &node), digest.clone());
    }
    if bits & 4 == 4 {
        tags.insert(repo_tag("r", &format!("{:064x}", 0xb0)), digest.clone());
    }
    if bits & 8 == 8 {
        tags.insert(format!("{:032x}", bits), digest);
    }
    Announcement::from_tags(&node, port, &tags).encode()
}

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
