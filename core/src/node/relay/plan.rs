//! The relay's decisions, as pure functions from what the node knows to what
//! it should do: where a routed frame goes, which neighbours a flooded
//! advertisement reaches, what a configured relay fault does to a frame, and
//! which relays a failed session makes suspect. The `relay` module gathers the inputs
//! (connections, the mesh, the relay allowance) and carries the plans out, so
//! the rules can be tested here without a network.

use crate::NodeId;
use crate::config::RelayFault;
use crate::node::ConnId;
use crate::wire::RoutedHeader;

/// A next hop with more than this queued gets no more routed frames for now.
pub(super) const HOP_QUEUE_LIMIT: usize = 2 * 1024 * 1024;

/// What a routed frame that arrived is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Ours: it belongs to the session `src` opened with this number.
    Deliver { src: NodeId },
    /// Someone else's, and we may pass it on.
    Relay,
    /// Someone else's, and we may not: relaying is off, the frame has no
    /// hops left, or it claims to come from us (a loop).
    Drop,
}

pub(super) fn arrival(me: NodeId, relay: bool, h: &RoutedHeader) -> Arrival {
    if h.dst == me {
        Arrival::Deliver { src: h.src }
    } else if !relay || h.hops_left == 0 || h.src == me {
        Arrival::Drop
    } else {
        Arrival::Relay
    }
}

/// What to do with a frame to relay once its next hop is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Send(ConnId),
    /// Over `relay_rate` (or behind frames that are): it waits, in order.
    Hold(ConnId),
    Drop,
}

/// `next` is the next hop's connection and what it has queued; `waiting`
/// says frames are already held for the allowance, and `allowed` charges
/// the allowance (it is asked only when nothing waits, so frames keep their
/// order). No hop, or a hop whose queue is full, drops the frame: the two
/// ends notice and reopen, rather than a relay queueing without bound.
pub(super) fn relay_step(
    next: Option<(ConnId, usize)>,
    waiting: bool,
    allowed: impl FnOnce() -> bool,
) -> Step {
    let Some((next, queued)) = next else {
        return Step::Drop;
    };
    if queued > HOP_QUEUE_LIMIT {
        return Step::Drop;
    }
    if waiting || !allowed() {
        return Step::Hold(next);
    }
    Step::Send(next)
}

/// How a configured relay fault treats the frame counted as `relayed` (the
/// count including it): how many copies go out, and whether the last byte
/// is flipped. Tests use the faults to check that the ends notice.
pub(super) fn fault_plan(fault: Option<RelayFault>, relayed: u64) -> (usize, bool) {
    match fault {
        None => (1, false),
        Some(RelayFault::Drop) if relayed.is_multiple_of(3) => (0, false),
        Some(RelayFault::Drop) => (1, false),
        Some(RelayFault::Corrupt) => (1, true),
        Some(RelayFault::Replay) => (2, false),
    }
}

/// The ready direct neighbours an advertisement received from `except` goes
/// on to: all of them for our own (`except` is `None`); otherwise all but
/// `except` and those `reached(neighbour, except)` says have it already.
pub(super) fn flood_targets(
    neighbours: &[(ConnId, NodeId)],
    except: Option<NodeId>,
    reached: impl Fn(&NodeId, &NodeId) -> bool,
) -> Vec<ConnId> {
    neighbours
        .iter()
        .filter(|(_, peer)| except.is_none_or(|from| *peer != from && !reached(peer, &from)))
        .map(|(conn, _)| *conn)
        .collect()
}

/// The relays on a failed session's `path`: every node on it but its two ends.
pub(super) fn relays_on(path: &[NodeId], me: NodeId, dst: NodeId) -> Vec<NodeId> {
    path.iter()
        .copied()
        .filter(|n| *n != me && *n != dst)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn header(src: u8, dst: u8, hops_left: u8) -> RoutedHeader {
        RoutedHeader {
            session: 1,
            src: id(src),
            dst: id(dst),
            hops_left,
        }
    }

    #[test]
    fn a_frame_for_us_is_delivered_even_with_relaying_off() {
        let me = id(1);
        assert_eq!(
            arrival(me, false, &header(2, 1, 0)),
            Arrival::Deliver { src: id(2) }
        );
        assert_eq!(arrival(me, true, &header(2, 3, 1)), Arrival::Relay);
        assert_eq!(arrival(me, false, &header(2, 3, 1)), Arrival::Drop);
        assert_eq!(arrival(me, true, &header(2, 3, 0)), Arrival::Drop);
        // A frame claiming to be ours has looped back.
        assert_eq!(arrival(me, true, &header(1, 3, 5)), Arrival::Drop);
    }

    #[test]
    fn relayed_frames_wait_in_order_and_drop_only_without_a_hop_or_room() {
        let never = || panic!("the allowance is not asked");
        assert_eq!(relay_step(None, false, never), Step::Drop);
        assert_eq!(
            relay_step(Some((4, HOP_QUEUE_LIMIT + 1)), false, never),
            Step::Drop
        );
        assert_eq!(relay_step(Some((4, 0)), true, never), Step::Hold(4));
        assert_eq!(relay_step(Some((4, 0)), false, || false), Step::Hold(4));
        assert_eq!(
            relay_step(Some((4, HOP_QUEUE_LIMIT)), false, || true),
            Step::Send(4)
        );
    }

    #[test]
    fn relay_faults_drop_every_third_corrupt_or_replay() {
        assert_eq!(fault_plan(None, 3), (1, false));
        let drops: Vec<usize> = (1..=6)
            .map(|n| fault_plan(Some(RelayFault::Drop), n).0)
            .collect();
        assert_eq!(drops, [1, 1, 0, 1, 1, 0]);
        assert_eq!(fault_plan(Some(RelayFault::Corrupt), 1), (1, true));
        assert_eq!(fault_plan(Some(RelayFault::Replay), 1), (2, false));
    }

    #[test]
    fn floods_skip_the_sender_and_neighbours_that_have_it() {
        let n = [(10, id(1)), (11, id(2)), (12, id(3))];
        assert_eq!(flood_targets(&n, None, |_, _| true), [10, 11, 12]);
        assert_eq!(flood_targets(&n, Some(id(2)), |_, _| false), [10, 12]);
        let reached = |peer: &NodeId, from: &NodeId| *peer == id(3) && *from == id(2);
        assert_eq!(flood_targets(&n, Some(id(2)), reached), [10]);
    }

    #[test]
    fn a_failed_path_suspects_only_its_relays() {
        let path = [id(1), id(5), id(6), id(9)];
        assert_eq!(relays_on(&path, id(1), id(9)), [id(5), id(6)]);
        assert!(relays_on(&[id(1), id(9)], id(1), id(9)).is_empty());
    }
}
