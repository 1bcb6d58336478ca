//! The drain rule, written once for every driver.
//!
//! After an input a node may have both outputs (dials, closes, store writes,
//! events, datagrams) and bytes to send. Carrying out an output can feed the
//! node another input at once (a dial refused on the spot is a
//! `handle_closed`, a synchronous store answers with `handle_store_done`),
//! and that makes more of both; a transmit can close a connection that was
//! refusing, which is an output. So one pass of each is not enough: the
//! driver alternates [`Node::poll_output`] and [`Node::poll_transmit`] until a
//! whole round yields neither. Only then is [`Node::poll_timeout`] the
//! deadline of work still to do.
//!
//! [`drain`] is that loop. What differs between drivers (sockets, a simulated
//! pipe, an in-memory link) is what they do with one output and one slice of
//! bytes, and when a connection is full; that is the [`Drive`] trait.

use super::{ConnId, Node, Output};
use crate::store::Store;
use crate::time::Instant;

/// One driver's side of the drain: reaching its node and store, and carrying
/// out what the node asks for.
///
/// The node stays inside the driver (not lent to [`drain`] apart from it), so
/// `perform` can call back into it the way every driver already does.
pub trait Drive {
    /// The node being driven and the store it reads. `None` when the node is
    /// gone (a simulated crash while carrying out an output): draining stops.
    fn parts(&mut self) -> Option<(&mut Node, &dyn Store)>;

    /// The time passed to each `poll_transmit`. It is asked per call, so a
    /// real clock lets the rate caps see the present.
    fn now(&self) -> Instant;

    /// Carries out one output. It may give the node inputs (through
    /// [`parts`](Drive::parts) or the driver's own fields); whatever they make
    /// is drained by the same [`drain`].
    fn perform(&mut self, out: Output);

    /// Hands over the bytes for `conn`: take them (`std::mem::take`) or copy
    /// them, whatever is left is discarded. Returns whether the connection can
    /// take more now. On `false`, `drain` marks it blocked
    /// ([`Node::set_blocked`]), so the node stops producing bulk data for it;
    /// the driver unblocks it when the connection has room again.
    fn transmit(&mut self, conn: ConnId, bytes: &mut Vec<u8>) -> bool;
}

/// Alternates outputs and transmits until the node has neither. Call it after
/// every input, then sleep until [`Node::poll_timeout`].
pub fn drain<D: Drive + ?Sized>(driver: &mut D) {
    let mut buf = Vec::new();
    loop {
        let mut progress = false;
        while let Some(out) = driver.parts().and_then(|(node, _)| node.poll_output()) {
            progress = true;
            driver.perform(out);
        }
        loop {
            let now = driver.now();
            let Some((node, store)) = driver.parts() else {
                return;
            };
            buf.clear();
            let Some(conn) = node.poll_transmit(now, store, &mut buf) else {
                break;
            };
            progress = true;
            if !driver.transmit(conn, &mut buf)
                && let Some((node, _)) = driver.parts()
            {
                node.set_blocked(conn, true);
            }
        }
        if !progress {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::node::{Command, Event};
    use crate::noise::Keypair;
    use crate::rng::Rng;
    use crate::store::MemStore;
    use core::net::SocketAddr;

    /// A driver with no network: dials connect (or are refused) on the spot
    /// and bytes go nowhere.
    struct Fake {
        node: Node,
        store: MemStore,
        refuse_dials: bool,
        /// Whether a connection has room after taking bytes.
        room: bool,
        performed: Vec<String>,
        sent: Vec<(ConnId, usize)>,
    }

    impl Fake {
        fn new(refuse_dials: bool, room: bool) -> Fake {
            let mut rng = Rng::from_u64(3);
            let cfg = NodeConfig::default().with(|c| {
                c.discovery.enabled = false;
                c.connections.known_peers = Vec::new();
            });
            let mut node = Node::new(cfg, Keypair::generate(&mut rng), [3; 32], Instant::ZERO);
            let store = MemStore::new("repo");
            node.start(Instant::ZERO, &store);
            Fake {
                node,
                store,
                refuse_dials,
                room,
                performed: Vec::new(),
                sent: Vec::new(),
            }
        }

        fn connect(&mut self) {
            let addr: SocketAddr = "192.0.2.1:7000".parse().expect("an address");
            let cmd = Command::Connect(addr);
            self.node.handle_command(Instant::ZERO, 1, cmd, &self.store);
        }

        fn idle(&mut self) -> bool {
            let mut buf = Vec::new();
            self.node.poll_output().is_none()
                && self
                    .node
                    .poll_transmit(Instant::ZERO, &self.store, &mut buf)
                    .is_none()
        }
    }

    impl Drive for Fake {
        fn parts(&mut self) -> Option<(&mut Node, &dyn Store)> {
            Some((&mut self.node, &self.store))
        }

        fn now(&self) -> Instant {
            Instant::ZERO
        }

        fn perform(&mut self, out: Output) {
            match out {
                Output::Dial { conn, .. } => {
                    self.performed.push("dial".into());
                    if self.refuse_dials {
                        let store = &self.store;
                        let refused = crate::node::CloseReason::Transport("refused".into());
                        self.node
                            .handle_closed(Instant::ZERO, conn, &refused, store);
                    } else {
                        self.node.handle_connected(Instant::ZERO, conn);
                    }
                }
                Output::Event(Event::CommandDone { ok, .. }) => {
                    self.performed.push(format!("done ok={ok}"));
                }
                Output::Event(_) => self.performed.push("event".into()),
                Output::Close { .. } => self.performed.push("close".into()),
                Output::Store(_) => self.performed.push("store".into()),
                Output::Datagram { .. } => self.performed.push("datagram".into()),
            }
        }

        fn transmit(&mut self, conn: ConnId, bytes: &mut Vec<u8>) -> bool {
            self.sent.push((conn, bytes.len()));
            self.room
        }
    }

    #[test]
    fn one_drain_carries_out_the_outputs_and_sends_the_bytes_they_make() {
        let mut d = Fake::new(false, true);
        d.connect();
        drain(&mut d);
        assert_eq!(d.performed.first().map(String::as_str), Some("dial"));
        // The handshake only exists once `perform` answered the dial.
        assert_eq!(d.sent.len(), 1, "{:?}", d.sent);
        assert!(d.sent[0].1 > 0);
        assert!(d.idle(), "nothing left after a drain");
    }

    #[test]
    fn what_an_input_given_inside_perform_makes_is_drained_too() {
        let mut d = Fake::new(true, true);
        d.connect();
        drain(&mut d);
        // The refusal fails the `connect` command within the same drain.
        assert_eq!(d.performed[0], "dial");
        assert!(
            d.performed.iter().any(|p| p == "done ok=false"),
            "{:?}",
            d.performed
        );
        assert!(d.sent.is_empty());
        assert!(d.idle());
    }

    #[test]
    fn a_connection_without_room_is_marked_blocked() {
        let mut d = Fake::new(false, false);
        d.connect();
        drain(&mut d);
        let (conn, _) = d.sent[0];
        assert!(d.node.conns.get(&conn).is_some_and(|c| c.blocked));
        let mut open = Fake::new(false, true);
        open.connect();
        drain(&mut open);
        let (conn, _) = open.sent[0];
        assert!(open.node.conns.get(&conn).is_some_and(|c| !c.blocked));
    }

    #[test]
    fn a_driver_whose_node_is_gone_stops_draining() {
        struct Gone;
        impl Drive for Gone {
            fn parts(&mut self) -> Option<(&mut Node, &dyn Store)> {
                None
            }
            fn now(&self) -> Instant {
                Instant::ZERO
            }
            fn perform(&mut self, _: Output) {
                unreachable!("no node, no outputs")
            }
            fn transmit(&mut self, _: ConnId, _: &mut Vec<u8>) -> bool {
                unreachable!("no node, no bytes")
            }
        }
        drain(&mut Gone);
    }
}
