//! Where each packet was seen on every node, for a while: a drop on one node
//! gets the points its packet passed on the others.

use std::collections::{HashMap, VecDeque};

use crate::model::{Flow, Hop, PacketId};

/// A packet across nodes: its (inner) headers, never the TTL.
pub type Identity = (Flow, PacketId);

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
                self.order.push_back((ts, id.clone()));
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
