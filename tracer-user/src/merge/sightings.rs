//! Where each packet was seen on every node, for a while: a drop on one node
//! gets the points its packet passed on the others. Every packet of every
//! node is kept here, so a point is compact (the node and the interface by
//! number); a journey's hops are made only for a drop.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use super::FastMap;
use crate::model::{Detail, Dir, Flow, Hop, Icmp, Outer, Proto};

/// A packet across nodes: its (inner) headers, never the TTL. Addresses as
/// parsed, not as written: every packet of every node is looked up by it,
/// so it is small and copied, not a flow's strings cloned and hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<Proto>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// What tells two packets of a flow apart ([`crate::model::PacketId`]).
    pub ip_id: Option<u16>,
    pub icmp: Option<Icmp>,
    pub len: u32,
}

/// Hashed as a few words, not field by field (the fields that tell
/// packets apart best; equal identities still hash the same).
impl Hash for Identity {
    fn hash<H: Hasher>(&self, h: &mut H) {
        fn addr(a: Option<IpAddr>) -> u128 {
            match a {
                None => 0,
                Some(IpAddr::V4(v)) => u128::from(u32::from(v)) | 1 << 64,
                Some(IpAddr::V6(v)) => u128::from(v),
            }
        }
        h.write_u128(addr(self.src));
        h.write_u128(addr(self.dst));
        let word = |v: Option<u16>, shift: u32| u64::from(v.unwrap_or(0)) << shift;
        h.write_u64(
            word(self.sport, 0)
                | word(self.dport, 16)
                | word(self.ip_id, 32)
                | u64::from(self.len as u16) << 48,
        );
    }
}

impl Identity {
    pub fn of(flow: &Flow, detail: &Detail) -> Identity {
        Identity {
            src: flow.src,
            dst: flow.dst,
            proto: flow.proto,
            sport: flow.sport,
            dport: flow.dport,
            ip_id: detail.ip_id,
            icmp: detail.icmp,
            len: detail.len,
        }
    }
}

/// A packet seen by tc on a node, as a journey point: what a [`Hop`] of it
/// says, with the node by its place in the view.
#[derive(Debug, Clone, PartialEq)]
pub struct PacketPoint {
    pub node: usize,
    /// On the common clock.
    pub ts_ns: u64,
    pub netns: u32,
    pub dir: Dir,
    pub ttl: Option<u8>,
    /// The interface by its number among the node's ([`Names`]).
    pub ifname: Option<u32>,
    pub outer: Option<Box<Outer>>,
}

/// The names behind a point's numbers: the nodes', and each node's
/// interfaces'.
#[derive(Debug, Default)]
pub struct Names {
    pub nodes: Vec<String>,
    pub ifnames: Vec<Vec<String>>,
}

impl Names {
    fn node(&self, n: usize) -> Option<&str> {
        self.nodes.get(n).map(String::as_str)
    }

    fn ifname(&self, n: usize, id: u32) -> Option<&str> {
        self.ifnames.get(n)?.get(id as usize).map(String::as_str)
    }

    /// Node `n` calls its interface `id` `name`.
    pub fn add_ifname(&mut self, n: usize, id: u32, name: &str) {
        if self.ifnames.len() <= n {
            self.ifnames.resize_with(n + 1, Vec::new);
        }
        let names = &mut self.ifnames[n];
        if names.len() <= id as usize {
            names.resize(id as usize + 1, String::new());
        }
        names[id as usize] = name.to_string();
    }
}

/// One point of a packet's journey on some node.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    Packet(PacketPoint),
    /// Anything else (a netfilter verdict), as its hop, node named.
    Hop(Box<Hop>),
}

impl Point {
    fn ts_ns(&self) -> u64 {
        match self {
            Point::Packet(p) => p.ts_ns,
            Point::Hop(h) => h.ts_ns,
        }
    }

    fn node<'a>(&'a self, names: &'a Names) -> Option<&'a str> {
        match self {
            Point::Packet(p) => names.node(p.node),
            Point::Hop(h) => h.node.as_deref(),
        }
    }

    /// The point as a journey's hop, its node and interface named.
    pub fn hop(&self, names: &Names) -> Hop {
        match self {
            Point::Packet(p) => Hop {
                node: names.node(p.node).map(str::to_string),
                ts_ns: p.ts_ns,
                netns: p.netns,
                ifname: p
                    .ifname
                    .and_then(|i| names.ifname(p.node, i))
                    .map(str::to_string),
                dir: p.dir,
                ttl: p.ttl,
                netfilter: None,
                verdict: None,
                point: None,
                priority: None,
                outer: p.outer.as_deref().cloned(),
            },
            Point::Hop(h) => (**h).clone(),
        }
    }
}

/// How long a packet's points are kept.
const KEEP_NS: u64 = 5_000_000_000;
/// Packets remembered at most.
const MAX_PACKETS: usize = 16_384;
/// Points kept per packet.
const MAX_POINTS: usize = 32;

#[derive(Default)]
pub struct Sightings {
    points: FastMap<Identity, Vec<Point>>,
    /// First sighting of each packet, oldest first, for forgetting.
    order: VecDeque<(u64, Identity)>,
    /// Point lists of forgotten packets, emptied, for the next ones.
    spare: Vec<Vec<Point>>,
}

impl Sightings {
    /// One more point of a packet.
    pub fn add(&mut self, id: Identity, point: Point) {
        let ts = point.ts_ns();
        match self.points.get_mut(&id) {
            Some(v) if v.len() < MAX_POINTS => v.push(point),
            Some(_) => {}
            None => {
                self.order.push_back((ts, id));
                let mut v = self.spare.pop().unwrap_or_default();
                v.push(point);
                self.points.insert(id, v);
            }
        }
        while self.order.len() > MAX_PACKETS
            || self
                .order
                .front()
                .is_some_and(|(t, _)| ts.saturating_sub(*t) > KEEP_NS)
        {
            if let Some((_, old)) = self.order.pop_front()
                && let Some(mut v) = self.points.remove(&old)
                && self.spare.len() < 64
            {
                v.clear();
                self.spare.push(v);
            }
        }
    }

    /// The packet's points on nodes other than `node`, up to `until`, as
    /// hops; `names`: the nodes' names by their place.
    pub fn elsewhere(&self, id: &Identity, node: &str, until: u64, names: &Names) -> Vec<Hop> {
        self.points
            .get(id)
            .map(|v| {
                v.iter()
                    .filter(|p| p.node(names) != Some(node) && p.ts_ns() <= until)
                    .map(|p| p.hop(names))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}
