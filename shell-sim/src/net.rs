//! The virtual network's state: addresses, broadcast domains, connections
//! (sockets with one FIFO pipe per direction), and the partition table.
//!
//! The simulator ([`crate::sim`]) moves bytes through it; everything here is
//! plain data plus the rules for who can reach whom.
//!
//! - Node `i` lives in broadcast domain `i / domain_size`, at
//!   `10.d.d.(i % domain_size + 1):9090` (its discovery socket is port 9091 and
//!   the domain's broadcast address `10.d.d.255:9091`).
//! - A **socket** is one TCP connection: two ends, each with the pipe of bytes it
//!   sent. A pipe is FIFO: each segment's arrival time is at least the previous
//!   one's, after the link's latency and the serialisation time at its
//!   bandwidth. A close (`Fin`) or a reset (`Rst`) is a segment too, so it is
//!   delivered only after the data already in flight.
//! - A **partition** drops traffic between groups; a **one-way** block drops one
//!   direction; a **cut** pair is blocked both ways. Stream bytes that cannot be
//!   delivered stay in their pipe (TCP keeps retransmitting) and arrive after the
//!   heal, unless the receiving end was closed meanwhile; datagrams are dropped.
//! - Under a graph topology ([`crate::graph`]) only neighbours in the graph
//!   reach each other at all: everything else behaves as permanently
//!   partitioned (dials time out, datagrams are lost).
//! - A **hold** stops deliveries on a direction without dropping anything:
//!   bytes and datagrams wait, and arrive when released.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

use ivaldi_core::node::ConnId;

use crate::graph::Graph;

/// The TCP port every simulated node listens on.
pub const PORT: u16 = 9090;
/// The discovery (UDP) port.
pub const DISCOVERY_PORT: u16 = 9091;

/// A socket's id.
pub type SockId = u64;

/// The address of node `i`.
pub fn node_ip(i: usize, domain_size: usize) -> Ipv4Addr {
    let d = i / domain_size;
    Ipv4Addr::new(
        10,
        (d >> 8) as u8,
        (d & 0xff) as u8,
        (i % domain_size + 1) as u8,
    )
}

/// The broadcast address of node `i`'s domain.
pub fn broadcast_of(i: usize, domain_size: usize) -> SocketAddr {
    let d = i / domain_size;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (d >> 8) as u8, (d & 0xff) as u8, 255)),
        DISCOVERY_PORT,
    )
}

/// What travels in a pipe.
#[derive(Debug)]
pub enum SegKind {
    Data(Vec<u8>),
    /// An orderly close, after everything sent before it.
    Fin(String),
    /// A reset (the sending process died).
    Rst(String),
}

#[derive(Debug)]
pub struct Seg {
    pub arrive: u64,
    pub kind: SegKind,
}

/// One direction of a connection.
#[derive(Debug, Default)]
pub struct Pipe {
    pub segs: VecDeque<Seg>,
    /// Data bytes in flight.
    pub bytes: usize,
    /// The sender's serialisation queue drains at this time.
    pub busy_until: u64,
    pub last_arrive: u64,
    /// A delivery event is queued for this pipe.
    pub scheduled: bool,
    /// The sender was told its socket is full.
    pub blocked: bool,
}

/// One end of a connection.
#[derive(Debug)]
pub struct End {
    pub node: usize,
    /// The node's incarnation this end belongs to (a restarted node starts over).
    pub inc: u32,
    /// The node's connection id (the acceptor's is known once it accepts).
    pub conn: Option<ConnId>,
    /// Still open on this side: not closed by its node, not killed by a crash.
    pub open: bool,
    /// What this end sent.
    pub pipe: Pipe,
}

/// A connection between two nodes (end 0 dialled, end 1 accepted).
#[derive(Debug)]
pub struct Socket {
    pub ends: [End; 2],
    pub dialled_at: u64,
    /// The acceptor has taken the connection.
    pub accepted: bool,
}

impl Socket {
    /// Nothing left to do: both ends are closed, so whatever is still in
    /// flight has no one to arrive to.
    pub fn finished(&self) -> bool {
        self.ends.iter().all(|e| !e.open)
    }
}

/// A datagram held back by a hold.
#[derive(Debug)]
pub struct HeldDatagram {
    pub from_node: usize,
    pub to_node: usize,
    pub from: SocketAddr,
    pub data: Rc<[u8]>,
}

/// The network.
#[derive(Debug, Default)]
pub struct Net {
    pub socks: BTreeMap<SockId, Socket>,
    pub next_sock: SockId,
    /// Partition group per node (all equal: no partition).
    pub groups: Vec<u32>,
    /// Incremented by every partition change, so a stale heal does nothing.
    pub partition_epoch: u64,
    /// Directions `(from, to)` that drop traffic (one-way partitions).
    pub blocked: BTreeSet<(usize, usize)>,
    pub oneway_epoch: u64,
    /// Node pairs `(low, high)` cut both ways.
    pub cut: BTreeSet<(usize, usize)>,
    /// Directions `(from, to)` whose deliveries are held.
    pub held: BTreeSet<(usize, usize)>,
    /// Nodes all of whose outgoing deliveries are held.
    pub held_from: BTreeSet<usize>,
    pub held_datagrams: Vec<HeldDatagram>,
    /// Node by IP address.
    pub by_ip: BTreeMap<IpAddr, usize>,
    /// Under a graph topology, the only pairs that may talk.
    pub graph: Option<Graph>,
}

impl Net {
    /// Whether traffic from `a` reaches `b` at all.
    pub fn open(&self, a: usize, b: usize) -> bool {
        if a == b {
            return true;
        }
        self.groups.get(a) == self.groups.get(b)
            && self.graph.as_ref().is_none_or(|g| g.has_edge(a, b))
            && !self.blocked.contains(&(a, b))
            && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Adds node `i` to the graph (if there is one) with edges to `known`: a
    /// node joining a graph topology may reach the nodes it was told of.
    pub fn admit(&mut self, i: usize, known: &[usize]) {
        if let Some(g) = self.graph.as_mut() {
            g.grow(i + 1);
            for &j in known {
                g.add_edge(i, j);
            }
        }
    }

    /// Whether deliveries from `a` to `b` are held.
    pub fn is_held(&self, a: usize, b: usize) -> bool {
        self.held_from.contains(&a) || self.held.contains(&(a, b))
    }

    /// Whether `a` can deliver to `b` right now.
    pub fn passes(&self, a: usize, b: usize) -> bool {
        self.open(a, b) && !self.is_held(a, b)
    }

    /// Whether any partition, block, cut or hold is in force.
    pub fn disturbed(&self) -> bool {
        self.groups.iter().any(|g| *g != 0)
            || !self.blocked.is_empty()
            || !self.cut.is_empty()
            || !self.held.is_empty()
            || !self.held_from.is_empty()
    }
}
