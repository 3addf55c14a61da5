//! Where each packet was seen on every node, for a while: a drop on one node
//! gets the points its packet passed on the others. Every packet of every
//! node is kept here, so a point is compact (the node and the interface by
//! number); a journey's hops are made only for a drop.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use super::FastMap;
use crate::model::{Detail, Flow, Hop, Icmp, Point, Proto};

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

/// A point's interface number where the interface had no name.
pub const NO_IFACE: u32 = u32::MAX;

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

/// A journey point and the node it was seen on (by its place in the view);
/// its interface is numbered among that node's ([`Names`]).
#[derive(Debug, Clone, PartialEq)]
struct NodePoint {
    node: usize,
    point: Point,
}

impl NodePoint {
    fn hop(&self, names: &Names) -> Hop {
        let node = names.node(self.node).map(str::to_string);
        self.point.hop(node, |_, id| {
            names.ifname(self.node, id).map(str::to_string)
        })
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
    points: FastMap<Identity, Vec<NodePoint>>,
    /// First sighting of each packet, oldest first, for forgetting.
    order: VecDeque<(u64, Identity)>,
    /// Point lists of forgotten packets, emptied, for the next ones.
    spare: Vec<Vec<NodePoint>>,
    /// Each node's rate of new packets, in its stream's time.
    rates: Vec<Rate>,
}

/// How many new packets a node's stream brings per ns of its time: over
/// the last full period of [`RATE_PERIOD_NS`], or the one under way where
/// that is higher (a burst).
#[derive(Default, Clone, Copy)]
struct Rate {
    since: u64,
    last: u64,
    count: u64,
    per_ns: f64,
}

const RATE_PERIOD_NS: u64 = 1_000_000_000;

impl Rate {
    fn add(&mut self, ts: u64) {
        if self.count == 0 {
            self.since = ts;
        }
        self.count += 1;
        self.last = self.last.max(ts);
        let span = self.last.saturating_sub(self.since);
        if span >= RATE_PERIOD_NS {
            self.per_ns = self.count as f64 / span as f64;
            self.count = 0;
        }
    }

    fn per_ns(&self) -> f64 {
        let span = self.last.saturating_sub(self.since);
        let now = if span > 0 && self.count >= 16 {
            self.count as f64 / span as f64
        } else {
            0.0
        };
        self.per_ns.max(now)
    }
}

impl Sightings {
    /// One more point of a packet, seen on node `node`.
    pub fn add(&mut self, id: Identity, node: usize, point: Point) {
        let ts = point.ts_ns;
        let point = NodePoint { node, point };
        match self.points.get_mut(&id) {
            Some(v) if v.len() < MAX_POINTS => v.push(point),
            Some(_) => {}
            None => {
                if self.rates.len() <= node {
                    self.rates.resize(node + 1, Rate::default());
                }
                self.rates[node].add(ts);
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
                    .filter(|p| names.node(p.node) != Some(node) && p.point.ts_ns <= until)
                    .map(|p| p.hop(names))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// How far back in time the packets kept will go at the nodes' current
    /// rates of new packets (each in its own stream's time, so that nodes
    /// read at different places do not skew it); `None` while no node has
    /// brought enough packets to tell.
    pub fn span_ns(&self) -> Option<u64> {
        let per_ns: f64 = self.rates.iter().map(Rate::per_ns).sum();
        (per_ns > 0.0).then(|| ((MAX_PACKETS as f64 / per_ns) as u64).min(KEEP_NS))
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}
