//! Properties of the wire format in `ivaldi_core::wire`.
//!
//! Frames come from peers, so the decoder and the parser must survive any bytes,
//! every message must come back exactly as it was sent however the stream is
//! split, and an oversized frame must be refused from its length prefix alone.

use std::collections::BTreeMap;

use ivaldi_core::wire::{
    self, ConflictResolve, Decoded, Envelope, FrameDecoder, Handshake, Heartbeat,
    MAX_OBJECTS_PER_FRAME, MESSAGE_TYPES, Message, ObjectsHeader, PeerDiscovery, PeerInfo,
    RepoAdvert, SealBroadcast, SyncComplete, SyncRequest, SyncResponse, TimelineUpdate, WireError,
};
use ivaldi_core::{NodeId, ObjectId, TimelineName};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

fn check<A: quickcheck::Testable>(prop: A) {
    QuickCheck::new()
        .rng(Gen::new(40))
        .tests(500)
        .quickcheck(prop);
}

fn id(g: &mut Gen) -> ObjectId {
    let mut bytes = [0u8; 32];
    for b in &mut bytes {
        *b = u8::arbitrary(g);
    }
    ObjectId(bytes)
}

fn ids(g: &mut Gen) -> Vec<ObjectId> {
    let n = usize::arbitrary(g) % 6;
    (0..n).map(|_| id(g)).collect()
}

const TL_CHARS: &[char] = &['a', 'Z', '0', '9', '.', '_', '-', '+', '@', '/'];

fn timeline(g: &mut Gen) -> TimelineName {
    loop {
        let len = 1 + usize::arbitrary(g) % 16;
        let name: String = (0..len)
            .map(|_| *g.choose(TL_CHARS).unwrap_or(&'a'))
            .collect();
        if let Ok(t) = TimelineName::new(&name) {
            return t;
        }
    }
}

fn heads(g: &mut Gen) -> BTreeMap<TimelineName, ObjectId> {
    let n = usize::arbitrary(g) % 4;
    (0..n).map(|_| (timeline(g), id(g))).collect()
}

/// Any text, including quotes, escapes, control characters and non-ASCII.
fn text(g: &mut Gen) -> String {
    let pool = [
        'a', '"', '\\', '\n', '\u{0}', '\u{1f}', 'é', '木', '😀', '/', ' ',
    ];
    if bool::arbitrary(g) {
        String::arbitrary(g)
    } else {
        let n = usize::arbitrary(g) % 12;
        (0..n).map(|_| *g.choose(&pool).unwrap_or(&'a')).collect()
    }
}

fn opt<T>(g: &mut Gen, f: impl FnOnce(&mut Gen) -> T) -> Option<T> {
    bool::arbitrary(g).then(|| f(g))
}

/// A message of any known type with valid names and ids.
#[derive(Clone, Debug)]
struct ArbMessage(Message);

impl Arbitrary for ArbMessage {
    fn arbitrary(g: &mut Gen) -> Self {
        let m = match u8::arbitrary(g) % 10 {
            0 => Message::Handshake(Handshake {
                versions: Vec::arbitrary(g),
                listen_port: u16::arbitrary(g),
                repos: (0..usize::arbitrary(g) % 3)
                    .map(|_| RepoAdvert {
                        id: text(g),
                        heads: heads(g),
                    })
                    .collect(),
                features: (0..usize::arbitrary(g) % 3).map(|_| text(g)).collect(),
                agent: text(g),
                conflict: bool::arbitrary(g).then(|| ivaldi_core::wire::StrategyAdvert {
                    default: ivaldi_core::config::ConflictStrategy::AutoMerge,
                    timelines: [(
                        "release/*".to_owned(),
                        ivaldi_core::config::ConflictStrategy::PreferRemote,
                    )]
                    .into_iter()
                    .collect(),
                }),
            }),
            1 => Message::SyncRequest(SyncRequest {
                sync: u64::arbitrary(g),
                repo: text(g),
                wants: ids(g),
                haves: ids(g),
                resume: ids(g),
                refetch: ids(g),
            }),
            2 => Message::SyncResponse(SyncResponse {
                sync: u64::arbitrary(g),
                error: opt(g, text),
                objects: u64::arbitrary(g),
                bytes: u64::arbitrary(g),
            }),
            3 => Message::Objects(ObjectsHeader {
                sync: u64::arbitrary(g),
                count: u32::arbitrary(g),
                compression: opt(g, text),
                format: opt(g, text),
            }),
            4 => Message::SyncComplete(SyncComplete {
                sync: u64::arbitrary(g),
                objects: u64::arbitrary(g),
                bytes: u64::arbitrary(g),
                error: opt(g, text),
            }),
            5 => Message::TimelineUpdate(TimelineUpdate {
                repo: text(g),
                timeline: timeline(g),
                head: id(g),
                previous: opt(g, id),
            }),
            6 => Message::SealBroadcast(SealBroadcast {
                repo: text(g),
                timeline: timeline(g),
                seal: id(g),
            }),
            7 => Message::Heartbeat(Heartbeat {
                ping: Option::arbitrary(g),
                pong: Option::arbitrary(g),
            }),
            8 => Message::PeerDiscovery(PeerDiscovery {
                peers: (0..usize::arbitrary(g) % 4)
                    .map(|_| PeerInfo {
                        node: NodeId(id(g).0),
                        addr: text(g),
                    })
                    .collect(),
            }),
            _ => Message::ConflictResolve(ConflictResolve {
                repo: text(g),
                timeline: timeline(g),
                local: id(g),
                remote: id(g),
                strategy: text(g),
                resolution: opt(g, id),
            }),
        };
        ArbMessage(m)
    }
}

#[derive(Clone, Debug)]
struct ArbEnvelope(Envelope);

impl Arbitrary for ArbEnvelope {
    fn arbitrary(g: &mut Gen) -> Self {
        ArbEnvelope(Envelope {
            id: u64::arbitrary(g),
            from: NodeId(id(g).0),
            ts: u64::arbitrary(g),
            message: ArbMessage::arbitrary(g).0,
        })
    }
}

/// Every frame `bytes` holds, fed to a decoder in pieces cut at `cuts`.
fn decode_all(
    bytes: &[u8],
    cuts: &[usize],
    max: u32,
) -> (Vec<Vec<u8>>, Option<WireError>, FrameDecoder) {
    let mut d = FrameDecoder::new(max);
    let mut frames = Vec::new();
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| c % (bytes.len() + 1))
        .chain([bytes.len()])
        .collect();
    points.sort_unstable();
    let mut prev = 0;
    for p in points {
        d.push(&bytes[prev..p]);
        prev = p;
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), d),
            }
        }
    }
    (frames, None, d)
}

#[test]
fn arbitrary_bytes_never_panic_the_decoder_or_parser() {
    fn prop(bytes: Vec<u8>, cuts: Vec<usize>, max: u32) -> bool {
        let max = max % (1 << 16);
        let (frames, _, d) = decode_all(&bytes, &cuts, max);
        assert!(d.buffered() <= bytes.len());
        for f in &frames {
            assert!(f.len() <= max as usize);
            let _ = wire::parse_frame(f);
        }
        let _ = wire::parse_frame(&bytes);
        true
    }
    check(prop as fn(Vec<u8>, Vec<usize>, u32) -> bool);
}

#[test]
fn arbitrary_envelopes_never_panic_the_parser() {
    // Well-formed frames around JSON that is nearly an envelope: known and unknown
    // types, payloads of the wrong shape, hostile names, missing fields.
    fn prop(kind: u8, payload: Vec<(String, u8)>, id: u64, bin: Vec<u8>) -> bool {
        let kinds: Vec<&str> = MESSAGE_TYPES
            .iter()
            .copied()
            .chain(["", "future", "Objects", "\"", "handshake\u{0}"])
            .collect();
        let kind = kinds[kind as usize % kinds.len()];
        let values = [
            "null",
            "1",
            "\"../../etc\"",
            "[]",
            "{}",
            "\"0000000000000000000000000000000000000000000000000000000000000000\"",
            "18446744073709551616",
            "-1",
            "{\"x\":[1,{}]}",
        ];
        let mut fields: Vec<String> = payload
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}:{}",
                    serde_json::to_string(k).unwrap_or_default(),
                    values[*v as usize % values.len()]
                )
            })
            .collect();
        fields.dedup();
        let json = format!(
            r#"{{"id":{id},"type":{},"from":"{}","ts":0,"payload":{{{}}}}}"#,
            serde_json::to_string(kind).unwrap_or_default(),
            "ab".repeat(32),
            fields.join(",")
        );
        let mut body = (json.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(json.as_bytes());
        body.extend_from_slice(&bin);
        match wire::parse_frame(&body) {
            Ok(Decoded::Unknown { kind: k, id: i }) => {
                assert!(!MESSAGE_TYPES.contains(&k.as_str()));
                assert_eq!(i, id);
            }
            Ok(Decoded::Message(env, b)) => {
                assert_eq!(env.message.type_name(), kind);
                assert_eq!(b, bin);
            }
            Err(_) => {}
        }
        true
    }
    check(prop as fn(u8, Vec<(String, u8)>, u64, Vec<u8>) -> bool);
}

#[test]
fn frames_round_trip_in_any_split() {
    fn prop(msgs: Vec<(ArbEnvelope, Vec<u8>)>, cuts: Vec<usize>) -> bool {
        let mut stream = Vec::new();
        for (env, bin) in &msgs {
            wire::encode_frame(&env.0, bin, &mut stream);
        }
        let (frames, err, d) = decode_all(&stream, &cuts, u32::MAX);
        assert_eq!(err, None);
        assert_eq!(d.buffered(), 0);
        assert_eq!(frames.len(), msgs.len());
        for (frame, (env, bin)) in frames.iter().zip(&msgs) {
            assert_eq!(
                wire::parse_frame(frame),
                Ok(Decoded::Message(Box::new(env.0.clone()), bin.clone()))
            );
        }
        true
    }
    check(prop as fn(Vec<(ArbEnvelope, Vec<u8>)>, Vec<usize>) -> bool);
}

#[test]
fn frame_length_prefix_matches_what_is_written() {
    fn prop(env: ArbEnvelope, bin: Vec<u8>) -> bool {
        let mut out = Vec::new();
        wire::encode_frame(&env.0, &bin, &mut out);
        let len = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
        let json = u32::from_be_bytes([out[4], out[5], out[6], out[7]]) as usize;
        assert_eq!(len + 4, out.len());
        assert_eq!(out.len(), wire::frame_len(json, bin.len()));
        // The JSON section is one JSON object and nothing else.
        let v: serde_json::Value = serde_json::from_slice(&out[8..8 + json]).expect("json");
        assert_eq!(v["type"], env.0.message.type_name());
        true
    }
    check(prop as fn(ArbEnvelope, Vec<u8>) -> bool);
}

#[test]
fn oversized_frames_are_refused_from_the_prefix() {
    fn prop(max: u32, over: u32, tail: Vec<u8>) -> TestResult {
        let max = max % (64 << 20);
        let Some(len) = max.checked_add(1 + over % (1 << 20)) else {
            return TestResult::discard();
        };
        let mut d = FrameDecoder::new(max);
        // Only the prefix and a few bytes have arrived: refused already, with
        // nothing buffered beyond what was pushed.
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&tail[..tail.len().min(16)]);
        d.push(&bytes);
        let err = d.next_frame();
        assert_eq!(
            err,
            Err(WireError::TooLarge {
                len: u64::from(len),
                max: u64::from(max)
            })
        );
        assert!(d.buffered() <= bytes.len());
        // The refusal is final.
        d.push(&tail);
        assert!(d.next_frame().is_err());
        TestResult::passed()
    }
    check(prop as fn(u32, u32, Vec<u8>) -> TestResult);
}

#[test]
fn a_frame_of_exactly_the_limit_is_accepted() {
    fn prop(env: ArbEnvelope, bin: Vec<u8>) -> bool {
        let mut out = Vec::new();
        wire::encode_frame(&env.0, &bin, &mut out);
        let len = (out.len() - 4) as u32;
        let mut d = FrameDecoder::new(len);
        d.push(&out);
        assert!(matches!(d.next_frame(), Ok(Some(_))));
        let mut d = FrameDecoder::new(len - 1);
        d.push(&out[..4]);
        assert!(matches!(d.next_frame(), Err(WireError::TooLarge { .. })));
        true
    }
    check(prop as fn(ArbEnvelope, Vec<u8>) -> bool);
}

#[test]
fn split_objects_never_panics_on_arbitrary_bytes() {
    fn prop(bytes: Vec<u8>, count: u32) -> bool {
        for c in [count, count % 8, u32::MAX, MAX_OBJECTS_PER_FRAME as u32 + 1] {
            if let Ok(objs) = wire::split_objects(&bytes, c) {
                assert_eq!(objs.len(), c as usize);
                let total: usize = objs.iter().map(|(_, e)| 36 + e.len()).sum();
                assert_eq!(total, bytes.len(), "every byte belongs to an object");
            }
        }
        true
    }
    check(prop as fn(Vec<u8>, u32) -> bool);
}

#[derive(Clone, Debug)]
struct ArbId(ObjectId);

impl Arbitrary for ArbId {
    fn arbitrary(g: &mut Gen) -> Self {
        ArbId(id(g))
    }
}

#[test]
fn object_sections_round_trip() {
    fn prop(objs: Vec<(ArbId, Vec<u8>)>, extra: u8) -> bool {
        let objs: Vec<(ObjectId, Vec<u8>)> = objs.into_iter().map(|(i, o)| (i.0, o)).collect();
        let mut bin = Vec::new();
        for (i, o) in &objs {
            wire::push_object(&mut bin, i, o);
        }
        let n = objs.len() as u32;
        let back: Vec<(ObjectId, Vec<u8>)> = wire::split_objects(&bin, n)
            .expect("round trip")
            .into_iter()
            .map(|(i, e)| (i, e.to_vec()))
            .collect();
        assert_eq!(back, objs);
        // A wrong count or a trailing byte is an error, never a panic.
        assert!(wire::split_objects(&bin, n + 1).is_err());
        if n > 0 {
            assert!(wire::split_objects(&bin, n - 1).is_err());
        }
        bin.push(extra);
        assert!(wire::split_objects(&bin, n).is_err());
        true
    }
    check(prop as fn(Vec<(ArbId, Vec<u8>)>, u8) -> bool);
}
