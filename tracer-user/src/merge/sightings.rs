//! Where each packet was seen on every node, for a while: a drop on one node
//! gets the points its packet passed on the others.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use crate::model::{Detail, Flow, Hop, Icmp, Proto};

/// A packet across nodes: its (inner) headers, never the TTL. Addresses as
/// parsed, not as written: every packet of every node is looked up by it,
/// so it is small and copied, not a flow's strings cloned and hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl Identity {
    pub fn of(flow: &Flow, detail: &Detail) -> Identity {
        let ip = |a: &Option<String>| a.as_deref().and_then(|a| a.parse().ok());
        Identity {
            src: ip(&flow.src),
            dst: ip(&flow.dst),
            proto: flow.proto,
            sport: flow.sport,
            dport: flow.dport,
            ip_id: detail.ip_id,
            icmp: detail.icmp,
            len: detail.len,
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
    points: HashMap<Identity, Vec<Hop>>,
    /// First sighting of each packet, oldest first, for forgetting.
    order: VecDeque<(u64, Identity)>,
}

impl Sightings {
    /// One more point of a packet (its hop names the node).
    pub fn add(&mut self, id: Identity, hop: Hop) {
        let ts = hop.ts_ns;
        match self.points.get_mut(&id) {
            Some(v) if v.len() < MAX_POINTS => v.push(hop),
            Some(_) => {}
            None => {
                self.order.push_back((ts, id));
                self.points.insert(id, vec![hop]);
            }
        }
        while self.order.len() > MAX_PACKETS
            || self
                .order
                .front()
                .is_some_and(|(t, _)| ts.saturating_sub(*t) > KEEP_NS)
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.points.remove(&old);
            }
        }
    }

    /// The packet's points on nodes other than `node`, up to `until`.
    pub fn elsewhere(&self, id: &Identity, node: &str, until: u64) -> Vec<Hop> {
        self.points
            .get(id)
            .map(|v| {
                v.iter()
                    .filter(|h| h.node.as_deref() != Some(node) && h.ts_ns <= until)
                    .cloned()
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
