//! The discovery sub-machine: announcements, the peer table and its defences.
//!
//! Machines exchange datagrams by hand in virtual time, so every schedule is
//! exact; the properties check that no datagram, however malformed, panics.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ivaldi_core::discovery::{
    Announcement, Cidr, DIGEST_HEX_LEN, Discovery, DiscoveryConfig, DiscoveryError,
    DiscoveryOutcome, MAGIC, MAX_DATAGRAM, NetworkFilter, OutcomeKind, TAG_HEX_LEN, cidr_contains,
    heads_digest, repo_tag,
};
use ivaldi_core::rng::Rng;
use ivaldi_core::time::Instant;
use ivaldi_core::{ObjectId, TimelineName};
use quickcheck::{Gen, QuickCheck, TestResult};

const BROADCAST: &str = "127.255.255.255:9091";

fn secs(s: f64) -> Instant {
    Instant::from_micros((s * 1_000_000.0).round() as u64)
}

fn node_id(n: u32) -> String {
    format!("{:064x}", u64::from(n) + 0xab00)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg() -> DiscoveryConfig {
    DiscoveryConfig {
        targets: vec![addr(BROADCAST)],
        ..DiscoveryConfig::default()
    }
}

fn machine(n: u32, repos: &[(&str, &str)]) -> Discovery {
    machine_with(cfg(), n, repos)
}

fn machine_with(cfg: DiscoveryConfig, n: u32, repos: &[(&str, &str)]) -> Discovery {
    let mut d = Discovery::new(
        cfg,
        node_id(n),
        9000 + n as u16,
        Rng::from_u64(u64::from(n)),
        Instant::ZERO,
    )
    .unwrap();
    d.set_local(local(repos), Instant::ZERO);
    d
}

fn local(repos: &[(&str, &str)]) -> Vec<(String, String)> {
    repos
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn drain(d: &mut Discovery) -> Vec<(SocketAddr, Vec<u8>)> {
    std::iter::from_fn(|| d.poll_datagram()).collect()
}

/// A valid announcement's bytes.
fn datagram(n: u32, port: u16, repos: &[(&str, &str)]) -> Vec<u8> {
    let repos: BTreeMap<String, String> = local(repos).into_iter().collect();
    Announcement::new(&node_id(n), port, &repos).encode()
}

const D1: &str = "0123456789abcdef";
const D2: &str = "fedcba9876543210";

#[test]
fn announcements_round_trip_and_truncate_deterministically() {
    let repos: BTreeMap<String, String> = [("repo-a", D1), ("repo-b", D2)]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let ann = Announcement::new(&node_id(1), 9090, &repos);
    assert!(!ann.truncated);
    let bytes = ann.encode();
    assert!(bytes.starts_with(MAGIC));
    assert_eq!(Announcement::decode(&bytes).unwrap(), ann);
    let text = std::str::from_utf8(&bytes[MAGIC.len()..]).unwrap();
    // Repository ids are replaced by their tags for this sender, in tag order.
    let (ta, tb) = (
        repo_tag("repo-a", &node_id(1)),
        repo_tag("repo-b", &node_id(1)),
    );
    assert_eq!((ta.len(), tb.len()), (TAG_HEX_LEN, TAG_HEX_LEN));
    let mut entries = [(ta, D1), (tb, D2)];
    entries.sort();
    assert_eq!(
        text,
        format!(
            r#"{{"v":1,"node":"{}","port":9090,"repos":{{"{}":"{}","{}":"{}"}}}}"#,
            node_id(1),
            entries[0].0,
            entries[0].1,
            entries[1].0,
            entries[1].1
        )
    );
    assert!(!text.contains("repo-"), "no repository id in clear");

    // Many repositories: a prefix in tag order, flagged, under the limit.
    let many: BTreeMap<String, String> = (0..200)
        .map(|i| (format!("{:032x}", i * 7919), D1.to_string()))
        .collect();
    let tags: BTreeMap<String, String> = many
        .iter()
        .map(|(id, d)| (repo_tag(id, &node_id(1)), d.clone()))
        .collect();
    let ann = Announcement::new(&node_id(1), 9090, &many);
    let bytes = ann.encode();
    assert!(ann.truncated);
    assert!(bytes.len() <= MAX_DATAGRAM, "{}", bytes.len());
    assert!(ann.repos.len() > 10, "{}", ann.repos.len());
    assert!(
        ann.repos.keys().eq(tags.keys().take(ann.repos.len())),
        "a prefix in tag order"
    );
    // One more entry would not have fitted.
    let mut more = ann.repos.clone();
    let (k, v) = tags.iter().nth(ann.repos.len()).unwrap();
    more.insert(k.clone(), v.clone());
    let bigger = Announcement {
        repos: more,
        ..ann.clone()
    };
    assert!(bigger.encode().len() > MAX_DATAGRAM);
    assert_eq!(Announcement::new(&node_id(1), 9090, &many), ann);
    let back = Announcement::decode(&bytes).unwrap();
    assert!(back.truncated);
    assert_eq!(back, ann);
}

#[test]
fn heads_digests_are_short_stable_and_change_with_heads() {
    let mut heads = BTreeMap::new();
    let empty = heads_digest(&heads);
    assert_eq!(empty.len(), DIGEST_HEX_LEN);
    heads.insert(TimelineName::new("main").unwrap(), ObjectId([1; 32]));
    let one = heads_digest(&heads);
    assert_ne!(one, empty);
    assert_eq!(one, heads_digest(&heads.clone()));
    assert!(
        one.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    heads.insert(TimelineName::new("main").unwrap(), ObjectId([2; 32]));
    assert_ne!(heads_digest(&heads), one);
    // The documented construction.
    let expected = blake3::hash(format!("main={}\n", ObjectId([2; 32]).to_hex()).as_bytes())
        .to_hex()[..16]
        .to_string();
    assert_eq!(heads_digest(&heads), expected);
}

/// Delivers every datagram in `outs` from `from` (the sender's UDP source) to
/// each receiver, collecting outcomes per receiver.
fn deliver(
    now: Instant,
    from: SocketAddr,
    datagrams: &[(SocketAddr, Vec<u8>)],
    receivers: &mut [&mut Discovery],
) -> Vec<Vec<Option<DiscoveryOutcome>>> {
    receivers
        .iter_mut()
        .map(|r| {
            datagrams
                .iter()
                .map(|(to, bytes)| {
                    assert_eq!(*to, addr(BROADCAST));
                    r.handle_datagram(now, from, bytes).unwrap()
                })
                .collect()
        })
        .collect()
}

#[test]
fn two_machines_discover_each_other_and_a_third_does_not_match() {
    let mut a = machine(1, &[("shared", D1)]);
    let mut b = machine(2, &[("shared", D2), ("other", D1)]);
    let mut c = machine(3, &[("elsewhere", D1)]);
    let (ua, ub, uc) = (
        addr("127.0.0.1:9091"),
        addr("127.0.0.2:9091"),
        addr("127.0.0.3:9091"),
    );
    for m in [&mut a, &mut b, &mut c] {
        assert_eq!(m.poll_timeout(), Some(Instant::ZERO), "announces at start");
        m.handle_timeout(Instant::ZERO);
    }
    let (da, db, dc) = (drain(&mut a), drain(&mut b), drain(&mut c));
    assert_eq!((da.len(), db.len(), dc.len()), (1, 1, 1));

    let now = secs(0.01);
    let r = deliver(now, ub, &db, &mut [&mut a, &mut c]);
    let to_a = r[0][0].clone().unwrap();
    assert_eq!(to_a.kind, OutcomeKind::NewMatching);
    assert_eq!(to_a.node_id, node_id(2));
    assert_eq!(
        to_a.addr,
        addr("127.0.0.2:9002"),
        "source IP + announced port"
    );
    assert_eq!(to_a.shared, vec!["shared".to_string()]);
    assert!(to_a.heads_differ);
    assert!(to_a.dial_due);
    assert_eq!(r[1][0].as_ref().unwrap().kind, OutcomeKind::NonMatching);

    let r = deliver(now, ua, &da, &mut [&mut b, &mut c]);
    assert_eq!(r[0][0].as_ref().unwrap().kind, OutcomeKind::NewMatching);
    assert_eq!(r[1][0].as_ref().unwrap().kind, OutcomeKind::NonMatching);
    let r = deliver(now, uc, &dc, &mut [&mut a, &mut b]);
    for o in r.iter().flatten() {
        let o = o.as_ref().unwrap();
        assert_eq!(o.kind, OutcomeKind::NonMatching);
        assert!(o.shared.is_empty() && !o.dial_due);
    }

    let peers: Vec<_> = a.peers().collect();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].node_id, node_id(2));
    assert!(peers[0].matching);
    assert_eq!(peers[0].repos.get("shared").map(String::as_str), Some(D2));
    assert_eq!(peers[0].first_seen, now);
    assert!(!peers[1].matching);
    assert_eq!(a.stats().foreign, 1);
    assert_eq!(
        a.dial_candidates(now),
        vec![(node_id(2), addr("127.0.0.2:9002"))]
    );

    // The next round is a refresh; B's heads now equal A's.
    b.set_local(local(&[("shared", D1), ("other", D1)]), secs(0.5));
    b.handle_timeout(secs(1.0));
    let db = drain(&mut b);
    assert_eq!(db.len(), 1, "early announcement after the heads change");
    let o = a.handle_datagram(secs(1.0), ub, &db[0].1).unwrap().unwrap();
    assert_eq!(o.kind, OutcomeKind::Refreshed);
    assert!(!o.heads_differ);
    assert_eq!(a.peer(&node_id(2)).unwrap().last_seen, secs(1.0));
    assert_eq!(a.peer(&node_id(2)).unwrap().first_seen, now);

    // A moved peer is new again, so the node dials its new address.
    let o = a
        .handle_datagram(secs(1.5), addr("127.0.0.9:9091"), &db[0].1)
        .unwrap()
        .unwrap();
    assert_eq!(o.kind, OutcomeKind::NewMatching);
    assert_eq!(o.addr, addr("127.0.0.9:9002"));

    // C starts serving our repository: reported as a new match.
    c.set_local(local(&[("elsewhere", D1), ("shared", D1)]), secs(2.0));
    c.handle_timeout(secs(2.0));
    let dc = drain(&mut c);
    let o = a.handle_datagram(secs(2.0), uc, &dc[0].1).unwrap().unwrap();
    assert_eq!(o.kind, OutcomeKind::NewMatching);

    // And A stopping to serve it makes B non-matching at once.
    a.set_local(local(&[("solo", D1)]), secs(3.0));
    assert!(a.peers().all(|p| !p.matching));
    assert!(a.dial_candidates(secs(3.0)).is_empty());
}

#[test]
fn own_announcements_are_ignored() {
    let mut a = machine(1, &[("r", D1)]);
    a.handle_timeout(Instant::ZERO);
    let d = drain(&mut a);
    assert_eq!(
        a.handle_datagram(secs(0.1), addr("127.0.0.1:9091"), &d[0].1),
        Ok(None)
    );
    assert_eq!(a.peers().count(), 0);
    assert_eq!(a.stats().own, 1);
    assert_eq!(a.stats().received, 1);
    assert_eq!(a.stats().sent, 1);
}

/// Whether an error is the expected one.
type ErrorCheck = fn(&DiscoveryError) -> bool;

#[test]
fn malformed_datagrams_are_typed_errors() {
    let mut a = machine(1, &[("r", D1)]);
    let from = addr("10.0.0.5:9091");
    let good = datagram(2, 9002, &[("r", D1)]);
    let json = |s: &str| [MAGIC.as_slice(), s.as_bytes()].concat();
    let n = node_id(2);
    let cases: Vec<(Vec<u8>, ErrorCheck)> = vec![
        (vec![], |e| *e == DiscoveryError::BadMagic),
        (b"IVDISC3\n{}".to_vec(), |e| *e == DiscoveryError::BadMagic),
        // The first format, which carried repository ids in clear.
        (
            [b"IVDISC1\n".as_slice(), &good[MAGIC.len()..]].concat(),
            |e| *e == DiscoveryError::BadMagic,
        ),
        (b"hello world".to_vec(), |e| *e == DiscoveryError::BadMagic),
        (vec![b'x'; MAX_DATAGRAM + 1], |e| {
            matches!(e, DiscoveryError::TooLarge { len: 1201, .. })
        }),
        (json(""), |e| matches!(e, DiscoveryError::Malformed(_))),
        (json("{"), |e| matches!(e, DiscoveryError::Malformed(_))),
        (json("[1,2]"), |e| matches!(e, DiscoveryError::Malformed(_))),
        (json(&format!(r#"[1,"{n}",1,{{}},false]"#)), |e| {
            matches!(e, DiscoveryError::Malformed(_))
        }),
        (
            json(&format!(r#" {{"v":1,"node":"{n}","port":1,"repos":{{}}}}"#)),
            |e| matches!(e, DiscoveryError::Malformed(_)),
        ),
        (
            json(&format!(
                r#"{{"v":"1","node":"{n}","port":1,"repos":{{}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Malformed(_)),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":70000,"repos":{{}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Malformed(_)),
        ),
        (
            json(&format!(r#"{{"v":1,"node":"{n}","port":1,"repos":[]}}"#)),
            |e| matches!(e, DiscoveryError::Malformed(_)),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{"r":1}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Malformed(_)),
        ),
        (
            json(&format!(r#"{{"v":1,"node":"{n}","repos":{{}}}}"#)),
            |e| matches!(e, DiscoveryError::Malformed(_)),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{}}}} trailing"#
            )),
            |e| matches!(e, DiscoveryError::Malformed(_)),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{}","port":1,"repos":{{}}}}"#,
                n.to_uppercase()
            )),
            |e| matches!(e, DiscoveryError::Invalid { field: "node", .. }),
        ),
        (json(r#"{"v":1,"node":"abc","port":1,"repos":{}}"#), |e| {
            matches!(e, DiscoveryError::Invalid { field: "node", .. })
        }),
        (
            json(&format!(r#"{{"v":0,"node":"{n}","port":1,"repos":{{}}}}"#)),
            |e| matches!(e, DiscoveryError::Invalid { field: "v", .. }),
        ),
        (
            json(&format!(r#"{{"v":1,"node":"{n}","port":0,"repos":{{}}}}"#)),
            |e| matches!(e, DiscoveryError::Invalid { field: "port", .. }),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{"a b":"00"}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Invalid { field: "repos", .. }),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{"":"00"}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Invalid { field: "repos", .. }),
        ),
        // A repository id in clear, or a tag of the wrong length or case.
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{"r":"00"}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Invalid { field: "repos", .. }),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{"0000000000000000000000000000000":"00"}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Invalid { field: "repos", .. }),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA":"00"}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Invalid { field: "repos", .. }),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{"00000000000000000000000000000000":"XYZ"}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Invalid { field: "repos", .. }),
        ),
        (
            json(&format!(
                r#"{{"v":1,"node":"{n}","port":1,"repos":{{"00000000000000000000000000000000":""}}}}"#
            )),
            |e| matches!(e, DiscoveryError::Invalid { field: "repos", .. }),
        ),
    ];
    let count = cases.len();
    for (i, (bytes, ok)) in cases.into_iter().enumerate() {
        // Spread over time so the rate limit never interferes.
        let now = secs(i as f64);
        let err = a.handle_datagram(now, from, &bytes).unwrap_err();
        assert!(ok(&err), "case {i}: {err:?}");
    }
    assert_eq!(a.stats().malformed, count as u64);
    assert_eq!(a.peers().count(), 0);

    // Every truncation of a valid datagram is an error, never a panic.
    for len in 0..good.len() {
        let now = secs(100.0 + len as f64);
        assert!(a.handle_datagram(now, from, &good[..len]).is_err(), "{len}");
    }
    // Unknown fields are ignored (a later version may add some).
    let extra = json(&format!(
        r#"{{"v":2,"node":"{n}","port":5,"repos":{{"{}":"{D1}"}},"future":[1,{{"x":null}}]}}"#,
        repo_tag("r", &n)
    ));
    let o = a
        .handle_datagram(secs(1000.0), from, &extra)
        .unwrap()
        .unwrap();
    assert_eq!(o.kind, OutcomeKind::NewMatching);
    assert_eq!(a.peer(&n).unwrap().version, 2);
    // Deep nesting is refused by the JSON parser's recursion limit, not the stack.
    let deep = json(&format!("{}{}", "[".repeat(500), "]".repeat(500)));
    assert!(matches!(
        a.handle_datagram(secs(1001.0), from, &deep),
        Err(DiscoveryError::Malformed(_))
    ));
}

#[test]
fn rate_limit_drops_a_flood_from_one_source_only() {
    let mut a = machine(1, &[("r", D1)]);
    let flood = addr("10.0.0.1:9091");
    let t = secs(10.0);
    let mut accepted = 0;
    for i in 0..100 {
        match a.handle_datagram(t, flood, &datagram(2 + i, 9000, &[("r", D1)])) {
            Ok(_) => accepted += 1,
            Err(DiscoveryError::RateLimited(ip)) => assert_eq!(ip, flood.ip()),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(accepted, 10, "the burst");
    assert_eq!(a.stats().rate_limited, 90);
    // Another source is unaffected.
    let o = a.handle_datagram(t, addr("10.0.0.2:9091"), &datagram(500, 9000, &[("r", D1)]));
    assert!(matches!(o, Ok(Some(_))));
    // Malformed datagrams cost tokens too (the limit runs before parsing).
    assert_eq!(
        a.handle_datagram(t, flood, b"junk"),
        Err(DiscoveryError::RateLimited(flood.ip()))
    );
    // Refill: two tokens per second.
    let t2 = secs(11.0);
    let ok = (0..5)
        .filter(|i| {
            a.handle_datagram(t2, flood, &datagram(600 + i, 9000, &[("r", D1)]))
                .is_ok()
        })
        .count();
    assert_eq!(ok, 2);

    // IPv6: one /64 is one source; another /64 is another.
    let mut b = machine(1, &[("r", D1)]);
    for i in 0..10 {
        let from = SocketAddr::new(ip(&format!("fd00:1:2:3::{:x}", i + 1)), 9091);
        assert!(b.handle_datagram(t, from, &datagram(2, 9000, &[])).is_ok());
    }
    let same_64 = SocketAddr::new(ip("fd00:1:2:3:ffff::1"), 9091);
    assert!(matches!(
        b.handle_datagram(t, same_64, &datagram(2, 9000, &[])),
        Err(DiscoveryError::RateLimited(_))
    ));
    let other_64 = SocketAddr::new(ip("fd00:1:2:4::1"), 9091);
    assert!(
        b.handle_datagram(t, other_64, &datagram(2, 9000, &[]))
            .is_ok()
    );
}

#[test]
fn rate_limiter_tracks_a_bounded_number_of_sources() {
    let mut a = machine_with(
        DiscoveryConfig {
            max_sources: 8,
            ..cfg()
        },
        1,
        &[],
    );
    let t = secs(1.0);
    let results: Vec<bool> = (0..20)
        .map(|i| {
            let from = SocketAddr::new(ip(&format!("10.9.0.{}", i + 1)), 9091);
            a.handle_datagram(t, from, &datagram(2, 9000, &[])).is_ok()
        })
        .collect();
    assert_eq!(results.iter().filter(|x| **x).count(), 8);
    // Once the sources are idle (buckets full again), new ones get through.
    let later = secs(100.0);
    let from = SocketAddr::new(ip("10.9.1.1"), 9091);
    assert!(
        a.handle_datagram(later, from, &datagram(2, 9000, &[]))
            .is_ok()
    );
}

#[test]
fn the_table_stays_bounded_under_a_flood_of_node_ids() {
    let mut a = machine_with(
        DiscoveryConfig {
            max_entries: 16,
            ..cfg()
        },
        1,
        &[("ours", D1)],
    );
    let src = |i: u32| {
        SocketAddr::new(
            ip(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)),
            9091,
        )
    };
    // Four matching peers first.
    for i in 0..4 {
        let o = a
            .handle_datagram(
                secs(1.0),
                src(i + 1),
                &datagram(10 + i, 9000, &[("ours", D1)]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(o.kind, OutcomeKind::NewMatching);
    }
    // A flood of non-matching ids, each from its own address.
    for i in 0..2000u32 {
        let now = secs(2.0 + f64::from(i) / 1000.0);
        let o = a
            .handle_datagram(
                now,
                src(1000 + i),
                &datagram(100_000 + i, 9000, &[("theirs", D1)]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(o.kind, OutcomeKind::NonMatching);
        assert!(a.peers().count() <= 16);
    }
    assert_eq!(a.peers().count(), 16);
    assert_eq!(
        a.peers().filter(|p| p.matching).count(),
        4,
        "matching peers survive"
    );
    assert_eq!(a.stats().evicted, 2000 - 12);
    // The newest non-matching ones are kept.
    assert!(a.peer(&node_id(100_000 + 1999)).is_some());
    assert!(a.peer(&node_id(100_000)).is_none());

    // Fill the rest with matching peers: then newcomers are refused.
    for i in 0..12 {
        a.handle_datagram(
            secs(5.0),
            src(5000 + i),
            &datagram(200 + i, 9000, &[("ours", D1)]),
        )
        .unwrap()
        .unwrap();
    }
    assert_eq!(a.peers().filter(|p| p.matching).count(), 16);
    for (i, repo) in ["ours", "theirs"].iter().enumerate() {
        assert_eq!(
            a.handle_datagram(
                secs(5.0),
                src(6000 + i as u32),
                &datagram(300, 9000, &[(repo, D1)])
            ),
            Err(DiscoveryError::TableFull(16))
        );
    }
    assert_eq!(a.stats().table_full, 2);
    // Known peers still refresh.
    let o = a
        .handle_datagram(secs(5.5), src(1), &datagram(10, 9000, &[("ours", D1)]))
        .unwrap()
        .unwrap();
    assert_eq!(o.kind, OutcomeKind::Refreshed);
}

#[test]
fn stale_entries_expire() {
    let mut a = machine(1, &[("r", D1)]);
    a.handle_timeout(Instant::ZERO);
    drain(&mut a);
    let (b, c) = (addr("10.0.0.2:9091"), addr("10.0.0.3:9091"));
    a.handle_datagram(secs(1.0), b, &datagram(2, 9000, &[("r", D1)]))
        .unwrap();
    a.handle_datagram(secs(2.0), c, &datagram(3, 9000, &[("x", D1)]))
        .unwrap();
    // Default stale_after: three 5-second intervals.
    a.handle_datagram(secs(12.0), b, &datagram(2, 9000, &[("r", D1)]))
        .unwrap();
    let mut now = secs(2.0);
    // Follow poll_timeout like a shell would.
    while now < secs(30.0) {
        let next = a.poll_timeout().unwrap();
        assert!(next >= now);
        now = next;
        if now >= secs(30.0) {
            break;
        }
        a.handle_timeout(now);
        drain(&mut a);
        let have_c = a.peer(&node_id(3)).is_some();
        assert_eq!(have_c, now < secs(17.0), "c at {now:?}");
        let have_b = a.peer(&node_id(2)).is_some();
        assert_eq!(have_b, now < secs(27.0), "b at {now:?}");
    }
    assert!(a.peer(&node_id(2)).is_none());
    assert_eq!(a.stats().stale_removed, 2);
    // Early calls are harmless; the expiry deadline was exact.
    let mut d = machine(4, &[]);
    d.handle_datagram(secs(1.0), b, &datagram(2, 9000, &[]))
        .unwrap();
    d.handle_timeout(secs(15.999_999));
    assert_eq!(d.peers().count(), 1);
    d.handle_timeout(secs(16.0));
    assert_eq!(d.peers().count(), 0);
}

#[test]
fn allowed_networks_are_enforced() {
    let mut a = machine_with(
        DiscoveryConfig {
            allowed_networks: vec![
                "10.1.0.0/16".into(),
                "fd00::/8".into(),
                "192.168.1.7/32".into(),
            ],
            ..cfg()
        },
        1,
        &[("r", D1)],
    );
    let data = datagram(2, 9000, &[("r", D1)]);
    for (i, (src, ok)) in [
        ("10.1.2.3", true),
        ("10.1.255.255", true),
        ("10.2.0.1", false),
        ("192.168.1.7", true),
        ("192.168.1.8", false),
        ("fd12::1", true),
        ("2001:db8::1", false),
        ("::ffff:10.1.9.9", true),
        ("::ffff:10.3.9.9", false),
        ("127.0.0.1", false),
    ]
    .iter()
    .enumerate()
    {
        let from = SocketAddr::new(ip(src), 9091);
        let r = a.handle_datagram(secs(i as f64), from, &data);
        if *ok {
            let o = r.unwrap().unwrap();
            // Mapped sources are reported as plain IPv4.
            assert_eq!(o.addr.ip(), ip(src).to_canonical(), "{src}");
        } else {
            assert_eq!(
                r,
                Err(DiscoveryError::NotAllowed(ip(src).to_canonical())),
                "{src}"
            );
        }
    }
    assert_eq!(a.stats().not_allowed, 5);

    assert_eq!(cidr_contains("0.0.0.0/0", ip("1.2.3.4")), Ok(true));
    assert_eq!(cidr_contains("0.0.0.0/0", ip("::1")), Ok(false));
    assert_eq!(cidr_contains("::/0", ip("2001:db8::1")), Ok(true));
    assert_eq!(cidr_contains("::/0", ip("10.0.0.1")), Ok(false));
    assert_eq!(cidr_contains("10.0.0.1/32", ip("10.0.0.1")), Ok(true));
    assert_eq!(cidr_contains("10.0.0.1/32", ip("10.0.0.2")), Ok(false));
    assert_eq!(cidr_contains("10.0.0.1", ip("10.0.0.1")), Ok(true));
    assert_eq!(cidr_contains("::1/128", ip("::1")), Ok(true));
    assert_eq!(cidr_contains("fe80::/10", ip("febf::1")), Ok(true));
    assert_eq!(cidr_contains("fe80::/10", ip("fec0::1")), Ok(false));
    assert_eq!(cidr_contains("127.0.0.0/8", ip("127.255.0.1")), Ok(true));
    assert_eq!(cidr_contains(" 127.0.0.0/8 ", ip("127.0.0.1")), Ok(true));
    assert_eq!(
        cidr_contains("::ffff:10.0.0.0/104", ip("10.5.0.1")),
        Ok(true)
    );
    let c: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
    assert_eq!(c.to_string(), "10.0.0.0/8");
    assert_eq!("fd00::/8".parse::<Cidr>().unwrap().prefix(), 8);

    for bad in [
        "",
        "garbage",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "10.0.0.0/8/8",
        "10.0.0.1/8",
        "10.0.0/8",
        "010.0.0.0/8",
        "::/129",
        "fe80::1/10",
        "fe80::1%eth0/64",
        "10.0.0.0/0008",
    ] {
        assert!(
            matches!(
                bad.parse::<Cidr>(),
                Err(ivaldi_core::network::InvalidCidr { .. })
            ),
            "{bad:?}"
        );
        let r = Discovery::new(
            DiscoveryConfig {
                allowed_networks: vec!["10.0.0.0/8".into(), bad.into()],
                ..cfg()
            },
            node_id(1),
            9000,
            Rng::from_u64(1),
            Instant::ZERO,
        );
        match r {
            Err(DiscoveryError::InvalidCidr(ivaldi_core::network::InvalidCidr {
                cidr, ..
            })) => assert_eq!(cidr, bad),
            other => panic!("{bad:?}: {:?}", other.map(|_| ())),
        }
    }
    assert!(
        NetworkFilter::parse::<&str>(&[])
            .unwrap()
            .allows(ip("8.8.8.8"))
    );
    assert!(
        NetworkFilter::parse(&["127.0.0.0/8"])
            .unwrap()
            .allows(ip("127.0.0.1"))
    );
}

#[test]
fn bad_configs_are_refused() {
    let new = |cfg: DiscoveryConfig, id: String| {
        Discovery::new(cfg, id, 9000, Rng::from_u64(1), Instant::ZERO).map(|_| ())
    };
    assert!(new(cfg(), node_id(1)).is_ok());
    for c in [
        DiscoveryConfig {
            interval: Duration::ZERO,
            ..cfg()
        },
        DiscoveryConfig {
            jitter: Duration::from_secs(5),
            ..cfg()
        },
        DiscoveryConfig {
            stale_after: Duration::from_secs(5),
            ..cfg()
        },
        DiscoveryConfig {
            max_entries: 0,
            ..cfg()
        },
        DiscoveryConfig {
            rate_burst: 0,
            ..cfg()
        },
        DiscoveryConfig {
            redial_max: Duration::from_secs(1),
            ..cfg()
        },
    ] {
        assert!(
            matches!(
                new(c, node_id(1)),
                Err(DiscoveryError::InvalidConfig { .. })
            ),
            "config accepted"
        );
    }
    assert!(matches!(
        new(cfg(), "ABC".into()),
        Err(DiscoveryError::InvalidConfig {
            field: "node_id",
            ..
        })
    ));
    let c = DiscoveryConfig::with_interval(Duration::from_secs(2));
    assert_eq!(c.stale_after, Duration::from_secs(6));
    assert_eq!(
        DiscoveryConfig::from_config(
            &ivaldi_core::config::NodeConfig::default()
                .with(|c| c.access.allowed_networks = vec!["10.0.0.0/8".into()])
        )
        .allowed_networks,
        vec!["10.0.0.0/8".to_string()]
    );
}

/// Announcement times over `until`, with `changes` (heads changes) applied.
fn announce_times(d: &mut Discovery, until: Instant, changes: &[Instant]) -> Vec<Instant> {
    let mut times = Vec::new();
    let mut changes = changes.iter().copied().peekable();
    let mut n = 0;
    loop {
        let mut next = d.poll_timeout().unwrap();
        if let Some(&c) = changes.peek()
            && c <= next
        {
            next = c;
        }
        if next > until {
            return times;
        }
        if changes.peek() == Some(&next) {
            changes.next();
            n += 1;
            d.set_local(vec![("r".into(), format!("{n:016x}"))], next);
            continue;
        }
        d.handle_timeout(next);
        let out = drain(d);
        if !out.is_empty() {
            times.push(next);
        }
    }
}

#[test]
fn heads_changes_announce_early_but_at_most_once_a_second() {
    let mut a = machine(1, &[("r", D1)]);
    a.handle_timeout(Instant::ZERO);
    assert_eq!(drain(&mut a).len(), 1);
    let regular = a.poll_timeout().unwrap();
    assert!(regular >= secs(4.5) && regular <= secs(5.5), "{regular:?}");

    // A change at 2 s: announced at once, with the new digest.
    a.set_local(local(&[("r", D2)]), secs(2.0));
    assert_eq!(a.poll_timeout(), Some(secs(2.0)));
    a.handle_timeout(secs(2.0));
    let d = drain(&mut a);
    assert_eq!(d.len(), 1);
    assert_eq!(
        Announcement::decode(&d[0].1).unwrap().repos[&repo_tag("r", &node_id(1))],
        D2
    );
    // Another at 2.3 s: held until 3 s.
    a.set_local(local(&[("r", D1)]), secs(2.3));
    assert_eq!(a.poll_timeout(), Some(secs(3.0)));
    a.handle_timeout(secs(2.5));
    assert!(drain(&mut a).is_empty());
    a.set_local(local(&[("r", "aaaa")]), secs(2.6));
    a.handle_timeout(secs(3.0));
    let d = drain(&mut a);
    assert_eq!(d.len(), 1);
    assert_eq!(
        Announcement::decode(&d[0].1).unwrap().repos[&repo_tag("r", &node_id(1))],
        "aaaa",
        "the latest"
    );
    // No change, no early announcement.
    a.set_local(local(&[("r", "aaaa")]), secs(3.5));
    assert!(a.poll_timeout().unwrap() >= secs(7.5));

    // Changes every 100 ms for a minute: at most one announcement a second.
    let mut b = machine(2, &[("r", D1)]);
    let changes: Vec<Instant> = (1..600).map(|i| secs(f64::from(i) / 10.0)).collect();
    let times = announce_times(&mut b, secs(60.0), &changes);
    assert!(times.len() <= 61, "{}", times.len());
    assert!(times.len() >= 55, "{}", times.len());
    for w in times.windows(2) {
        assert!(
            w[1].saturating_since(w[0]) >= Duration::from_secs(1),
            "{w:?}"
        );
    }
    assert!(b.stats().announcements as usize == times.len());
}

#[test]
fn jitter_is_deterministic_per_seed_and_bounded() {
    let run = |seed: u64| {
        let mut d =
            Discovery::new(cfg(), node_id(1), 9000, Rng::from_u64(seed), Instant::ZERO).unwrap();
        announce_times(&mut d, secs(300.0), &[])
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    assert_eq!(a[0], Instant::ZERO);
    for w in a.windows(2) {
        let gap = w[1].saturating_since(w[0]);
        assert!(
            gap >= Duration::from_millis(4500) && gap <= Duration::from_millis(5500),
            "{gap:?}"
        );
    }
    // The gaps actually vary.
    let gaps: std::collections::BTreeSet<_> =
        a.windows(2).map(|w| w[1].saturating_since(w[0])).collect();
    assert!(gaps.len() > 10);
}

#[test]
fn announcements_go_to_every_target_and_wait_for_a_port() {
    let mut d = Discovery::new(
        DiscoveryConfig::default(),
        node_id(1),
        0,
        Rng::from_u64(1),
        Instant::ZERO,
    )
    .unwrap();
    assert_eq!(d.poll_timeout(), None, "no targets, no port: nothing to do");
    d.set_targets(
        vec![addr("192.168.1.255:9091"), addr("10.255.255.255:9091")],
        secs(1.0),
    );
    assert_eq!(d.poll_timeout(), None, "no port yet");
    d.set_tcp_port(9090, secs(2.0));
    assert_eq!(d.poll_timeout(), Some(Instant::ZERO));
    d.handle_timeout(secs(2.0));
    let out = drain(&mut d);
    assert_eq!(
        out.iter().map(|o| o.0).collect::<Vec<_>>(),
        vec![addr("192.168.1.255:9091"), addr("10.255.255.255:9091")]
    );
    assert_eq!(out[0].1, out[1].1);
    assert_eq!(Announcement::decode(&out[0].1).unwrap().port, 9090);
    assert_eq!(d.stats().sent, 2);
    // An undrained announcement is replaced, not queued behind.
    d.handle_timeout(secs(10.0));
    d.handle_timeout(secs(20.0));
    assert_eq!(drain(&mut d).len(), 2);
    // A new target is announced to within the gap.
    d.set_targets(vec![addr("127.255.255.255:9091")], secs(20.2));
    assert_eq!(d.poll_timeout(), Some(secs(21.0)));
}

#[test]
fn dial_bookkeeping_backs_off() {
    let mut a = machine(1, &[("r", D1)]);
    let from = addr("10.0.0.2:9091");
    let data = datagram(2, 9002, &[("r", D1)]);
    let o = a.handle_datagram(secs(1.0), from, &data).unwrap().unwrap();
    assert!(o.dial_due);
    assert!(a.mark_dialed(&node_id(2), secs(1.0)));
    assert!(!a.mark_dialed(&node_id(99), secs(1.0)));
    let o = a.handle_datagram(secs(6.0), from, &data).unwrap().unwrap();
    assert!(!o.dial_due, "within redial_min");
    assert!(a.dial_candidates(secs(6.0)).is_empty());
    let p = a.peer(&node_id(2)).unwrap();
    let first = p.next_dial.unwrap();
    assert!(first >= secs(11.0) && first <= secs(13.5), "{first:?}");
    assert_eq!(a.dial_candidates(first).len(), 1);
    // The second attempt waits about twice as long.
    a.mark_dialed(&node_id(2), first);
    let second = a.peer(&node_id(2)).unwrap().next_dial.unwrap();
    let wait = second.saturating_since(first);
    assert!(
        wait >= Duration::from_secs(20) && wait <= Duration::from_secs(25),
        "{wait:?}"
    );
    assert_eq!(a.peer(&node_id(2)).unwrap().dial_attempts, 2);
    // Attempts are capped at redial_max.
    for _ in 0..30 {
        a.mark_dialed(&node_id(2), secs(100.0));
    }
    let capped = a.peer(&node_id(2)).unwrap().next_dial.unwrap();
    assert!(capped.saturating_since(secs(100.0)) <= Duration::from_secs(375));
    // A success resets it.
    a.mark_connected(&node_id(2));
    assert!(a.peer(&node_id(2)).unwrap().dial_due(secs(100.0)));
    assert!(a.remove(&node_id(2)).is_some());
    assert_eq!(a.peers().count(), 0);
}

#[test]
fn set_config_applies_new_filters_and_bounds() {
    let mut a = machine(1, &[("r", D1)]);
    for i in 0..6u32 {
        let from = SocketAddr::new(ip(&format!("10.0.{i}.1")), 9091);
        let repo = if i % 2 == 0 { "r" } else { "x" };
        a.handle_datagram(
            secs(f64::from(i)),
            from,
            &datagram(10 + i, 9000, &[(repo, D1)]),
        )
        .unwrap();
    }
    let mut c = cfg();
    c.allowed_networks = vec!["10.0.0.0/22".into()];
    c.max_entries = 3;
    a.set_config(c.clone(), secs(10.0)).unwrap();
    // 10.0.4.1 and 10.0.5.1 are outside; of the other four, the oldest
    // non-matching one goes.
    let left: Vec<_> = a.peers().map(|p| p.node_id.clone()).collect();
    assert_eq!(left, vec![node_id(10), node_id(12), node_id(13)]);
    c.allowed_networks = vec!["bogus".into()];
    assert!(a.set_config(c, secs(11.0)).is_err());
    assert_eq!(a.filter().networks().len(), 1, "unchanged on error");
}

#[test]
fn arbitrary_bytes_never_panic() {
    fn prop(data: Vec<u8>, with_magic: bool, src: u8) -> TestResult {
        let mut d = machine(1, &[("r", D1)]);
        let from = SocketAddr::new(
            match src % 3 {
                0 => ip("10.0.0.1"),
                1 => ip("fd00::1"),
                _ => ip("::ffff:192.168.0.1"),
            },
            9091,
        );
        let bytes = if with_magic {
            [MAGIC.as_slice(), &data].concat()
        } else {
            data
        };
        let r = d.handle_datagram(secs(1.0), from, &bytes);
        let s = d.stats();
        assert_eq!(s.received, 1);
        match r {
            Ok(Some(_)) => assert_eq!(d.peers().count(), 1),
            Ok(None) => assert_eq!(s.own, 1),
            Err(_) => {
                assert_eq!(s.malformed, 1);
                assert_eq!(d.peers().count(), 0);
            }
        }
        TestResult::passed()
    }
    QuickCheck::new()
        .rng(Gen::new(300))
        .tests(2000)
        .quickcheck(prop as fn(Vec<u8>, bool, u8) -> TestResult);

    // JSON-shaped mutations of a valid datagram reach the validator.
    fn mutate(pos: Vec<usize>, bytes: Vec<u8>) -> TestResult {
        let mut d = machine(1, &[("r", D1)]);
        let mut data = datagram(2, 9002, &[("r", D1), ("s", D2)]);
        for (p, b) in pos.iter().zip(bytes) {
            let len = data.len();
            data[MAGIC.len() + p % (len - MAGIC.len())] = b;
        }
        let _ = d.handle_datagram(secs(1.0), addr("10.0.0.1:9091"), &data);
        TestResult::passed()
    }
    QuickCheck::new()
        .rng(Gen::new(20))
        .tests(2000)
        .quickcheck(mutate as fn(Vec<usize>, Vec<u8>) -> TestResult);
}

// ----- privacy: tags instead of repository ids -----

#[test]
fn announcements_carry_no_repository_id_and_tags_differ_per_sender() {
    let secret = "team-secret-repository";
    let mut a = machine(1, &[(secret, D1)]);
    let mut b = machine(2, &[(secret, D1), ("b-only", D2)]);
    let mut c = machine(3, &[("elsewhere", D1)]);
    for m in [&mut a, &mut b, &mut c] {
        m.handle_timeout(Instant::ZERO);
    }
    let (da, db) = (drain(&mut a), drain(&mut b));
    for (_, bytes) in da.iter().chain(&db) {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("b-only"), "{text}");
    }
    // The same repository has a different tag in each sender's announcements.
    let ta = Announcement::decode(&da[0].1).unwrap();
    let tb = Announcement::decode(&db[0].1).unwrap();
    assert_eq!(ta.repos.len(), 1);
    assert_eq!(tb.repos.len(), 2);
    assert!(ta.repos.keys().all(|t| !tb.repos.contains_key(t)));

    // A holder of the repository recognises it and names it by its id; what it
    // does not hold is only counted.
    let o = a
        .handle_datagram(secs(0.1), addr("127.0.0.2:9091"), &db[0].1)
        .unwrap()
        .unwrap();
    assert_eq!(o.kind, OutcomeKind::NewMatching);
    assert_eq!(o.shared, vec![secret.to_string()]);
    assert!(o.heads_differ == (D1 != D1));
    let p = a.peer(&node_id(2)).unwrap();
    assert_eq!(p.repos.keys().collect::<Vec<_>>(), vec![secret]);
    assert_eq!(p.unknown_repos, 1);
    // What the user sees (`ivaldi p2p discovered`) holds no tag.
    let shown = serde_json::to_string(p).unwrap();
    for tag in tb.repos.keys() {
        assert!(!shown.contains(tag.as_str()), "{shown}");
    }
    assert!(shown.contains("\"unknown_repos\":1"), "{shown}");

    // A node without it learns nothing: no match, no id, two unknown tags.
    let o = c
        .handle_datagram(secs(0.1), addr("127.0.0.2:9091"), &db[0].1)
        .unwrap()
        .unwrap();
    assert_eq!(o.kind, OutcomeKind::NonMatching);
    assert!(o.shared.is_empty() && !o.dial_due);
    let p = c.peer(&node_id(2)).unwrap();
    assert!(p.repos.is_empty() && !p.matching);
    assert_eq!(p.unknown_repos, 2);

    // A tag copied from B's announcement into one claiming another sender
    // matches nothing: tags are bound to the sender.
    let replayed = Announcement::from_tags(&node_id(9), 9009, &tb.repos).encode();
    let o = a
        .handle_datagram(secs(0.2), addr("127.0.0.9:9091"), &replayed)
        .unwrap()
        .unwrap();
    assert_eq!(o.kind, OutcomeKind::NonMatching);
    assert_eq!(a.peer(&node_id(9)).unwrap().unknown_repos, 2);

    // C starting to serve the repository recognises B at once (B's tags are
    // kept), and names it.
    c.set_local(local(&[("elsewhere", D1), (secret, D2)]), secs(1.0));
    let p = c.peer(&node_id(2)).unwrap();
    assert!(p.matching);
    assert_eq!(p.repos.get(secret).map(String::as_str), Some(D1));
    assert_eq!(p.unknown_repos, 1);
}

#[test]
fn a_flood_of_strangers_keeps_few_entries_and_dials_nobody() {
    let mut a = machine(1, &[("ours", D1)]);
    let max_foreign = a.config().max_foreign;
    assert!(max_foreign <= 64, "a small bound: {max_foreign}");
    let src = |i: u32| {
        SocketAddr::new(
            ip(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)),
            9091,
        )
    };
    // A real peer first.
    a.handle_datagram(secs(1.0), src(1), &datagram(10, 9000, &[("ours", D1)]))
        .unwrap()
        .unwrap();
    // 3,000 made-up node ids with made-up tags (and tags of repositories we do
    // not hold), each from its own address.
    for i in 0..3000u32 {
        let now = secs(2.0 + f64::from(i) / 1000.0);
        let bytes = if i % 2 == 0 {
            let tags: BTreeMap<String, String> = [(format!("{i:032x}"), D1.to_string())].into();
            Announcement::from_tags(&node_id(100_000 + i), 9000, &tags).encode()
        } else {
            datagram(100_000 + i, 9000, &[("theirs", D1)])
        };
        let o = a
            .handle_datagram(now, src(1000 + i), &bytes)
            .unwrap()
            .unwrap();
        assert_eq!(o.kind, OutcomeKind::NonMatching);
        assert!(!o.dial_due);
        assert!(a.peers().filter(|p| !p.matching).count() <= max_foreign);
    }
    assert_eq!(a.peers().count(), 1 + max_foreign);
    assert_eq!(a.stats().foreign, 3000, "each one counted");
    assert_eq!(a.stats().evicted, 3000 - max_foreign as u64);
    assert_eq!(a.stats().table_full, 0);
    assert_eq!(
        a.dial_candidates(secs(10.0)),
        vec![(node_id(10), addr("10.0.0.1:9000"))],
        "only the real peer is ever a dial candidate"
    );
    // The newest strangers are the ones kept.
    assert!(a.peer(&node_id(100_000 + 2999)).is_some());
    assert!(a.peer(&node_id(100_000)).is_none());
}

// ----- the node: discovery is a hint about addresses of admitted nodes -----

mod node {
    use super::*;
    use ivaldi_core::access::Access;
    use ivaldi_core::config::NodeConfig;
    use ivaldi_core::store::MemStore;
    use ivaldi_core::testkit::TestNet;

    fn net(mut net: TestNet, repos: &[&str]) -> TestNet {
        for (i, r) in repos.iter().enumerate() {
            let n = net.add(NodeConfig::default(), MemStore::new(r), 100 + i as u64);
            let now = net.now;
            net.nodes[n]
                .node
                .set_discovery_targets(now, vec![addr(BROADCAST)]);
        }
        net
    }

    #[test]
    fn a_team_that_shares_a_repository_connects_by_discovery() {
        let mut net = net(TestNet::new(), &["repo", "repo", "other"]);
        assert!(net.run_until(Duration::from_secs(30), |n| n.connected(0, 1)));
        net.run_for(Duration::from_secs(20));
        assert!(!net.connected(0, 2) && !net.connected(1, 2));
        assert_eq!(
            net.nodes[2].dials, 0,
            "it serves none of their repositories"
        );
        let seen = net.nodes[0].node.discovered();
        let other = seen
            .iter()
            .find(|p| p.node_id == net.nodes[2].node.node_id().to_hex())
            .unwrap();
        assert!(!other.matching && other.repos.is_empty());
        assert_eq!(other.unknown_repos, 1);
    }

    #[test]
    fn strangers_that_share_a_repository_never_dial_each_other() {
        let mut net = net(TestNet::strangers(), &["repo", "repo"]);
        net.run_for(Duration::from_secs(120));
        assert_eq!((net.nodes[0].dials, net.nodes[1].dials), (0, 0));
        assert!(!net.connected(0, 1));
        for (i, j) in [(0, 1), (1, 0)] {
            // Each has heard the other serves the repository, and stays put.
            let seen = net.nodes[i].node.discovered();
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].node_id, net.nodes[j].node.node_id().to_hex());
            assert!(seen[0].matching);
            assert!(net.nodes[i].node.pending().is_empty());
            assert!(net.nodes[i].node.peers().is_empty());
        }
    }

    #[test]
    fn trust_on_one_side_only_dials_with_backoff_and_is_refused() {
        let mut net = net(TestNet::strangers(), &["repo", "repo"]);
        let b_id = net.nodes[1].node.node_id();
        net.nodes[0].node.grant_trust(b_id, Access::Write);
        net.run_for(Duration::from_secs(120));
        assert!(!net.connected(0, 1));
        assert_eq!(net.nodes[1].dials, 0, "B trusts nobody and dials nobody");
        // A dials B, is refused, and backs off: 10 s, 20 s, 40 s, 80 s...
        let dials = net.nodes[0].dials;
        assert!((1..=5).contains(&dials), "{dials} dials in two minutes");
        let pending = net.nodes[1].node.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].id, net.nodes[0].node.node_id());
    }

    #[test]
    fn forged_addresses_for_a_trusted_id_cost_a_bounded_number_of_dials() {
        let mut net = net(TestNet::new(), &["repo", "repo"]);
        let b_id = net.nodes[1].node.node_id().to_hex();
        // The forger knows the repository id (the worst case: it can make
        // tags that match) and B's id. While it floods, A and B cannot reach
        // each other, so nothing resets A's backoff.
        net.blocked_pairs.push((0, 1));
        let forged = |i: u32| {
            let repos: BTreeMap<String, String> = [("repo".to_string(), D1.to_string())].into();
            let from = SocketAddr::new(ip(&format!("10.77.{}.{}", i >> 8, i & 255)), 9091);
            (
                from,
                Announcement::new(&b_id, 40_000 + i as u16, &repos).encode(),
            )
        };
        for i in 0..1000u32 {
            let (from, bytes) = forged(i);
            let now = net.now;
            net.nodes[0].node.handle_datagram(now, from, &bytes);
            net.run_for(Duration::from_millis(3));
        }
        let during = net.nodes[0].dials;
        assert!(
            (1..=2).contains(&during),
            "{during} dials for 1,000 forged announcements in 3 s"
        );
        let stats = net.nodes[0].node.discovery_stats().unwrap();
        assert_eq!(stats.rate_limited, 0, "every forgery was heard");
        // The table holds one entry for B, not one per forged address.
        assert_eq!(net.nodes[0].node.discovered().len(), 1);

        // The flood stops and the link heals: the real B still connects, and
        // A's dials stayed within its backoff (10 s, doubling).
        net.blocked_pairs.clear();
        assert!(net.run_until(Duration::from_secs(60), |n| n.connected(0, 1)));
        let total = net.nodes[0].dials;
        assert!(total <= during + 3, "{total} dials in all");
    }
}

#[test]
fn peers_that_stop_matching_stay_within_the_foreign_bound() {
    // Found by the fuzz target: a matching peer announcing again without our
    // repository became one stranger too many.
    let mut a = machine_with(
        DiscoveryConfig {
            max_foreign: 1,
            ..cfg()
        },
        1,
        &[("ours", D1)],
    );
    let from = addr("10.0.0.2:9091");
    a.handle_datagram(secs(1.0), from, &datagram(2, 9002, &[("ours", D1)]))
        .unwrap();
    a.handle_datagram(secs(1.0), addr("10.0.0.3:9091"), &datagram(3, 9003, &[]))
        .unwrap();
    assert_eq!(a.peers().count(), 2);
    let o = a
        .handle_datagram(secs(1.0), from, &datagram(2, 9002, &[]))
        .unwrap()
        .unwrap();
    assert_eq!(o.kind, OutcomeKind::NonMatching);
    // The peer just heard stays (its outcome names it); the older stranger goes.
    assert_eq!(
        a.peers().map(|p| p.node_id.clone()).collect::<Vec<_>>(),
        vec![node_id(2)]
    );
    assert_eq!(a.stats().evicted, 1);
    // Our repositories changing turns matching peers into strangers: trimmed too.
    a.handle_datagram(
        secs(2.0),
        addr("10.0.0.4:9091"),
        &datagram(4, 9004, &[("ours", D1)]),
    )
    .unwrap();
    a.handle_datagram(
        secs(2.0),
        addr("10.0.0.5:9091"),
        &datagram(5, 9005, &[("ours", D1)]),
    )
    .unwrap();
    a.set_local(local(&[("new", D1)]), secs(3.0));
    assert_eq!(a.peers().count(), 1);
}
