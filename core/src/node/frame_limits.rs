//! Every size the node derives from `max_message_size`, in one place.
//!
//! The setting bounds four things: the frames an admitted peer may send us,
//! the node-wide memory budget for partly received frames, how much may queue
//! for a peer that does not read, and how big the objects frames we build
//! are. They used to be derived at each use site, four different ways, and a
//! configuration change reached only the sites that happened to read the
//! setting again — open connections kept their old frame limit. Now the
//! limits are derived once per configuration ([`FrameLimits::of`]) and a
//! change is applied to every open connection ([`Node::apply_frame_limits`]).

use super::Node;
use super::admission::PRE_ADMISSION_FRAME;
use super::budget::DEFAULT_LIMIT;
use super::conn::ConnState;
use crate::config::NodeConfig;

/// Least bytes a connection may have queued before its peer counts as not
/// reading: a whole frame must fit, with room for the replies behind it.
pub(super) const MAX_QUEUED_MIN: usize = 16 * 1024 * 1024;
/// Largest objects frame the node builds (bounded further by the setting).
pub(super) const OBJECT_FRAME_TARGET: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Longest frame an admitted peer may send (before admission it is
    /// [`PRE_ADMISSION_FRAME`]).
    pub frame: u32,
    /// The memory budget for partly received frames across all peers: 64 MiB,
    /// or two whole frames when that is more (one large frame must always fit
    /// beside another peer's).
    pub budget: usize,
    /// Bytes that may wait for one peer before it is closed as not reading.
    pub queued: usize,
    /// The size objects frames aim at: half the largest frame a peer takes,
    /// within 64 KiB and [`OBJECT_FRAME_TARGET`].
    pub objects_frame: usize,
}

impl FrameLimits {
    pub fn of(cfg: &NodeConfig) -> FrameLimits {
        let max = cfg.limits.max_message_size as usize;
        FrameLimits {
            frame: cfg.limits.max_message_size,
            budget: DEFAULT_LIMIT.max(2 * (max + 4)),
            queued: max.saturating_mul(2).max(MAX_QUEUED_MIN),
            objects_frame: (max / 2).clamp(64 * 1024, OBJECT_FRAME_TARGET),
        }
    }
}

impl Node {
    pub(super) fn frame_limits(&self) -> FrameLimits {
        FrameLimits::of(&self.cfg)
    }

    /// After a configuration change: admitted connections take the new frame
    /// limit at once (a frame already being received keeps the room it was
    /// given), and the budget its new size.
    pub(super) fn apply_frame_limits(&mut self) {
        let limits = self.frame_limits();
        for c in self.conns.values_mut() {
            let admitted =
                matches!(c.state(), ConnState::AwaitHello | ConnState::Ready) || c.route.is_some();
            c.frames.set_max(if admitted {
                limits.frame
            } else {
                PRE_ADMISSION_FRAME.min(limits.frame)
            });
        }
        self.admission.budget.set_limit(limits.budget);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::node::conn::{Conn, Direction};
    use crate::node::{Command, Output};
    use crate::noise::Keypair;
    use crate::rng::Rng;
    use crate::store::MemStore;
    use crate::time::Instant;

    /// The bug: after `max_message_size` changed, an open connection kept
    /// the frame limit it was admitted with.
    #[test]
    fn a_configuration_change_reaches_open_connections() {
        let cfg = NodeConfig::default();
        let keypair = Keypair::generate(&mut Rng::from_seed([1; 32]));
        let mut node = Node::new(cfg.clone(), keypair, [2; 32], Instant::ZERO);
        let store = MemStore::new("repo");
        node.start(Instant::ZERO, &store);
        let addr = "127.0.0.1:9".parse().expect("address");
        let hb = Duration::from_secs(30);
        let mut admitted = Conn::new(
            1,
            addr,
            Direction::Inbound,
            Instant::ZERO,
            hb,
            cfg.limits.max_message_size,
        );
        admitted.authenticated(crate::NodeId([1; 32]));
        admitted.set_state(ConnState::Ready);
        let mut stranger = Conn::new(
            2,
            addr,
            Direction::Inbound,
            Instant::ZERO,
            hb,
            PRE_ADMISSION_FRAME,
        );
        stranger.authenticated(crate::NodeId([2; 32]));
        stranger.set_state(ConnState::Admission);
        node.conns.insert(1, admitted);
        node.conns.insert(2, stranger);

        let smaller = cfg.with(|c| c.limits.max_message_size = 2 << 20);
        node.handle_command(
            Instant::ZERO,
            7,
            Command::SetConfig(Box::new(smaller)),
            &store,
        );
        assert!(
            std::iter::from_fn(|| node.poll_output()).any(|o| matches!(
                o,
                Output::Event(crate::node::Event::CommandDone {
                    id: 7,
                    ok: true,
                    ..
                })
            )),
            "the change was applied"
        );
        assert_eq!(node.conns[&1].frames.max(), 2 << 20);
        assert_eq!(node.conns[&2].frames.max(), PRE_ADMISSION_FRAME);
        assert_eq!(node.frame_limits(), FrameLimits::of(&node.cfg));
    }

    fn limits(max: u32) -> FrameLimits {
        FrameLimits::of(&NodeConfig::default().with(|c| c.limits.max_message_size = max))
    }

    #[test]
    fn small_settings_keep_the_floors_and_large_ones_scale() {
        let small = limits(1 << 20);
        assert_eq!(small.frame, 1 << 20);
        assert_eq!(small.budget, DEFAULT_LIMIT);
        assert_eq!(small.queued, MAX_QUEUED_MIN);
        assert_eq!(small.objects_frame, 512 * 1024);
        let large = limits(64 << 20);
        assert_eq!(large.budget, 2 * ((64 << 20) + 4));
        assert_eq!(large.queued, 128 << 20);
        assert_eq!(large.objects_frame, OBJECT_FRAME_TARGET);
        assert_eq!(limits(u32::MAX).objects_frame, OBJECT_FRAME_TARGET);
        assert_eq!(limits(1024).objects_frame, 64 * 1024);
    }
}
