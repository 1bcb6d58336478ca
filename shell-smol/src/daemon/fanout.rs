//! The event and trace fan-out: what `ivaldi p2p events` and `trace` read.
//!
//! The node's events and traced messages are kept in two bounded rings, so a
//! client that asks after the fact still sees what just happened, and are
//! copied to every following client. A follower's queue is bounded too: a
//! slow reader loses its oldest lines (counted as dropped), it never makes the
//! driver wait or the daemon's memory grow.
//!
//! [`Fanout`] owns that state and knows nothing of the node; the driver hands
//! it each event's JSON and applies the [`TraceMode`] it asks for.

use std::collections::VecDeque;

use ivaldi_core::NodeId;
use ivaldi_core::node::{Event, TraceMode};
use serde_json::Value;
use smol::channel::Sender;

use super::driver::Driver;
use crate::control::Line;

/// Most events kept for `events` without `--follow`.
const RECENT_EVENTS: usize = 1000;
/// Lines queued per follower before the oldest are dropped; also the size of a
/// control connection's reply queue.
pub(super) const SUBSCRIBER_QUEUE: usize = 256;
/// Most protocol messages kept for `trace` without `--follow`.
const RECENT_TRACE: usize = 512;

/// A `trace --follow` client: its peer filter and whether it wants payloads.
struct TraceFollower {
    reply: Sender<String>,
    /// A lowercase prefix of the peer ids it wants.
    peer: Option<String>,
    payloads: bool,
}

/// Counters for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FanoutStats {
    pub emitted: u64,
    pub dropped: u64,
    pub subscribers: usize,
}

/// The recent events and messages, and who follows them.
#[derive(Default)]
pub(super) struct Fanout {
    subscribers: Vec<Sender<String>>,
    recent: VecDeque<Value>,
    /// Headers only: payloads are large and asked for by few.
    recent_trace: VecDeque<Value>,
    tracers: Vec<TraceFollower>,
    emitted: u64,
    dropped: u64,
}

impl Fanout {
    pub(super) fn stats(&self) -> FanoutStats {
        FanoutStats {
            emitted: self.emitted,
            dropped: self.dropped,
            subscribers: self.subscribers.len(),
        }
    }

    /// Keeps an event and sends it to every subscriber.
    pub(super) fn event(&mut self, value: Value) {
        self.emitted += 1;
        if self.recent.len() >= RECENT_EVENTS {
            self.recent.pop_front();
            self.dropped += 1;
        }
        let line = Line::Event {
            event: value.clone(),
        }
        .to_line();
        self.recent.push_back(value);
        self.subscribers.retain(|s| !s.is_closed());
        for s in &self.subscribers {
            if let Ok(Some(_)) = s.force_send(line.clone()) {
                self.dropped += 1;
            }
        }
    }

    /// Replays the recent events to `reply` and, with `follow`, keeps sending
    /// it new ones. Returns how many are kept, for the final reply of a
    /// request that does not follow.
    pub(super) fn replay_events(&mut self, reply: Sender<String>, follow: bool) -> Option<usize> {
        // The reply queue holds SUBSCRIBER_QUEUE lines: the newest events that
        // fit, and room for the final reply.
        let skip = self.recent.len().saturating_sub(SUBSCRIBER_QUEUE - 1);
        for e in self.recent.iter().skip(skip) {
            let _ = reply.try_send(Line::Event { event: e.clone() }.to_line());
        }
        if follow {
            self.subscribers.push(reply);
            None
        } else {
            Some(self.recent.len())
        }
    }

    /// A protocol message passed: kept for `trace`, sent to followers whose
    /// filter it matches (payloads only to those that asked for them).
    /// Returns the trace mode the node should switch to when followers left.
    pub(super) fn message(&mut self, peer: Option<&NodeId>, value: Value) -> Option<TraceMode> {
        let mut headers = value.clone();
        if let Some(o) = headers.as_object_mut() {
            o.remove("payload");
        }
        if self.recent_trace.len() >= RECENT_TRACE {
            self.recent_trace.pop_front();
        }
        self.recent_trace.push_back(headers.clone());
        let before = self.tracers.len();
        self.tracers.retain(|t| !t.reply.is_closed());
        let with = Line::Event { event: value }.to_line();
        let without = Line::Event { event: headers }.to_line();
        let peer = peer.map(NodeId::to_hex);
        for t in &self.tracers {
            if peer_matches(t.peer.as_deref(), peer.as_deref()) {
                let line = if t.payloads { &with } else { &without };
                let _ = t.reply.force_send(line.clone());
            }
        }
        (self.tracers.len() != before).then(|| self.trace_mode())
    }

    /// Replays the recent messages of peers starting with `peer` and, with
    /// `follow`, keeps sending new ones. Returns the count kept (when not
    /// following) and the trace mode the node needs now.
    pub(super) fn replay_trace(
        &mut self,
        reply: Sender<String>,
        peer: Option<String>,
        follow: bool,
        payloads: bool,
    ) -> (Option<usize>, TraceMode) {
        let peer = peer.map(|p| p.to_ascii_lowercase());
        let matching: Vec<&Value> = self
            .recent_trace
            .iter()
            .filter(|m| peer_matches(peer.as_deref(), m["peer"].as_str()))
            .collect();
        let skip = matching.len().saturating_sub(SUBSCRIBER_QUEUE - 1);
        for m in matching.into_iter().skip(skip) {
            let _ = reply.try_send(Line::Event { event: m.clone() }.to_line());
        }
        if follow {
            self.tracers.push(TraceFollower {
                reply,
                peer,
                payloads,
            });
            (None, self.trace_mode())
        } else {
            (Some(self.recent_trace.len()), self.trace_mode())
        }
    }

    /// Payloads are serialised only while some follower wants them; headers
    /// always, so `trace` can show what happened before it was asked.
    pub(super) fn trace_mode(&self) -> TraceMode {
        if self.tracers.iter().any(|t| t.payloads) {
            TraceMode::Payloads
        } else {
            TraceMode::Headers
        }
    }
}

/// Whether a message of `peer` passes a follower's prefix filter; a message
/// without a peer passes only the empty filter.
fn peer_matches(filter: Option<&str>, peer: Option<&str>) -> bool {
    filter.is_none_or(|p| peer.is_some_and(|x| x.starts_with(p)))
}

impl Driver {
    /// Routes one event of the node: to the trace ring, to the shell's own
    /// reactions (a redeemed invitation, a finished command, sync progress),
    /// and to the event subscribers.
    pub(super) fn on_event(&mut self, e: Event) {
        let value = serde_json::to_value(&e).unwrap_or_default();
        if let Event::Message(m) = &e {
            tracing::trace!(message = %value, "message");
            if let Some(mode) = self.fanout.message(m.peer.as_ref(), value) {
                self.node.set_trace(mode);
            }
            return;
        }
        tracing::info!(event = %value, "event");
        match &e {
            Event::InviteRedeemed {
                peer,
                invite,
                access,
                uses_left,
            } => self.record_redeemed(peer, invite, *access, *uses_left),
            Event::CommandDone { id, ok, message } => self.commands.finish(*id, *ok, message),
            Event::ObjectReceived { .. } => self.commands.progress(&value),
            _ => {}
        }
        self.fanout.event(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(rx: &smol::channel::Receiver<String>) -> Vec<Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| serde_json::from_str::<Value>(&l).unwrap_or_default()["event"].clone())
            .collect()
    }

    #[test]
    fn late_client_sees_the_newest_events_and_the_ring_stays_bounded() {
        let mut f = Fanout::default();
        for n in 0..RECENT_EVENTS + 10 {
            f.event(json!({ "n": n }));
        }
        let stats = f.stats();
        assert_eq!(stats.emitted, (RECENT_EVENTS + 10) as u64);
        assert_eq!(stats.dropped, 10);
        let (tx, rx) = smol::channel::bounded(SUBSCRIBER_QUEUE);
        assert_eq!(f.replay_events(tx, false), Some(RECENT_EVENTS));
        let seen = lines(&rx);
        // Room is left for the final reply.
        assert_eq!(seen.len(), SUBSCRIBER_QUEUE - 1);
        assert_eq!(seen.last(), Some(&json!({ "n": RECENT_EVENTS + 9 })));
    }

    #[test]
    fn slow_subscriber_loses_its_oldest_lines_and_they_are_counted() {
        let mut f = Fanout::default();
        let (tx, rx) = smol::channel::bounded(2);
        assert_eq!(f.replay_events(tx, true), None);
        for n in 0..5 {
            f.event(json!({ "n": n }));
        }
        assert_eq!(f.stats().dropped, 3);
        assert_eq!(lines(&rx), vec![json!({ "n": 3 }), json!({ "n": 4 })]);
        drop(rx);
        f.event(json!({ "n": 5 }));
        assert_eq!(f.stats().subscribers, 0, "a closed subscriber is forgotten");
    }

    #[test]
    fn trace_keeps_headers_filters_by_peer_and_sends_payloads_only_when_asked() {
        let mut f = Fanout::default();
        let (headers_tx, headers_rx) = smol::channel::bounded(16);
        let (payload_tx, payload_rx) = smol::channel::bounded(16);
        let (_, mode) = f.replay_trace(headers_tx, Some("AB".into()), true, false);
        assert_eq!(mode, TraceMode::Headers);
        let (_, mode) = f.replay_trace(payload_tx, None, true, true);
        assert_eq!(mode, TraceMode::Payloads);

        let (abcd, ffff) = (NodeId([0xab; 32]), NodeId([0xff; 32]));
        let msg = json!({ "peer": abcd, "kind": "ping", "payload": "{}" });
        assert_eq!(f.message(Some(&abcd), msg.clone()), None);
        f.message(Some(&ffff), json!({ "peer": ffff, "kind": "pong" }));
        f.message(None, json!({ "kind": "hello" }));

        assert_eq!(
            lines(&headers_rx),
            vec![json!({ "peer": abcd, "kind": "ping" })]
        );
        assert_eq!(lines(&payload_rx).first(), Some(&msg));

        // A late reader of peer "ff" sees the stored headers of that peer only.
        let (tx, rx) = smol::channel::bounded(16);
        let (count, _) = f.replay_trace(tx, Some("ff".into()), false, false);
        assert_eq!(count, Some(3));
        assert_eq!(lines(&rx), vec![json!({ "peer": ffff, "kind": "pong" })]);
    }

    #[test]
    fn payload_mode_ends_when_its_last_follower_leaves() {
        let mut f = Fanout::default();
        let (tx, rx) = smol::channel::bounded(16);
        f.replay_trace(tx, None, true, true);
        drop(rx);
        assert_eq!(
            f.message(None, json!({ "kind": "ping" })),
            Some(TraceMode::Headers)
        );
        assert_eq!(f.message(None, json!({ "kind": "ping" })), None);
    }
}
