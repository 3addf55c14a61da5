//! Packets of pod flows that leave one node's uplink are looked for on the
//! receiving node's uplink; those that never arrive, while the receiving
//! node could have seen them, are underlay losses.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::FastMap;
use super::sightings::Identity;
use crate::diagnosis::Loss;
use crate::model::{Encap, Proto, Underlay};

/// How long a packet may take between two nodes' uplinks (clock offsets
/// included) before it counts as lost.
pub const WINDOW_NS: u64 = 1_000_000_000;
/// Sends waiting at most; beyond, the oldest go undecided.
const MAX_PENDING: usize = 65_536;

/// A pod packet that left a node's uplink towards another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    pub id: Identity,
    pub from: usize,
    pub to: usize,
    /// On the common clock, and on the sender's own.
    pub ts: u64,
    pub raw_ts: u64,
    /// Bytes on the wire (the outer packet's, when encapsulated).
    pub wire_len: u32,
    pub wire: Wire,
}

/// How a send went on the wire: its encapsulation and outer header, for
/// `UNDERLAY_*` (which adds the nodes' names).
#[derive(Debug, Clone, PartialEq)]
pub struct Wire {
    pub encap: Encap,
    pub outer_src: Option<String>,
    pub outer_dst: Option<String>,
    pub outer_proto: Option<Proto>,
    pub outer_dport: Option<u16>,
}

impl Wire {
    pub fn plain(encap: Encap) -> Wire {
        Wire {
            encap,
            outer_src: None,
            outer_dst: None,
            outer_proto: None,
            outer_dport: None,
        }
    }
}

/// What the receiving node can say about a time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Witness {
    /// Its agent ran, traced its uplink and lost no events then.
    Able,
    AgentNotRunning,
    NotTracingUplink,
    LostEvents,
}

impl Witness {
    pub fn why_not(self) -> &'static str {
        match self {
            Witness::Able => "",
            Witness::AgentNotRunning => "its agent was not running",
            Witness::NotTracingUplink => "its agent did not trace its uplink",
            Witness::LostEvents => "its agent lost events then",
        }
    }
}

/// A send judged: lost, or why it could not be judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Lost, sent at this time (common clock).
    Lost(Loss, u64),
    Undecided(Witness),
}

/// Bytes on the wire that got through and that did not, per flow path.
#[derive(Debug, Clone, Copy, Default)]
struct Sizes {
    largest_delivered: Option<u32>,
    smallest_lost: Option<u32>,
}

type PathKey = (Option<IpAddr>, Option<IpAddr>, usize, usize);

/// Sends waiting for their arrival, findable by receiver and packet (each
/// arrival) and by receiver in the order sent (each expiry), so that neither
/// walks all that waits.
#[derive(Default)]
pub struct Tracker {
    /// Waiting sends by the order they were sent.
    sends: FastMap<u64, Send>,
    next_seq: u64,
    /// (receiver, packet) -> waiting sends, oldest first.
    waiting: FastMap<(usize, Identity), VecDeque<u64>>,
    /// Per receiver: (time sent, send), in the order sent.
    queues: Vec<VecDeque<(u64, u64)>>,
    /// Every waiting send in the order sent, for the bound.
    order: VecDeque<u64>,
    /// Arrivals no send was waiting for yet: live, one agent's stream may
    /// run ahead of another's. (node, packet) -> (common time, raw time).
    early: FastMap<(usize, Identity), (u64, u64)>,
    early_order: VecDeque<(u64, usize, Identity)>,
    sizes: FastMap<PathKey, Sizes>,
}

/// What a send met: nothing yet, or its arrival (on the receiver's own clock).
pub enum Sent {
    Waiting,
    Arrived { raw_arrival: u64 },
}

fn path_key(s: &Send) -> PathKey {
    (s.id.src, s.id.dst, s.from, s.to)
}

impl Tracker {
    /// A packet left for another node; it may have been seen arriving already.
    pub fn send(&mut self, s: Send) -> (Sent, Option<Outcome>) {
        let key = (s.to, s.id);
        if let Some((_, raw_arrival)) = self.early.remove(&key) {
            self.delivered(&s);
            return (Sent::Arrived { raw_arrival }, None);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.queues.len() <= s.to {
            self.queues.resize_with(s.to + 1, VecDeque::new);
        }
        self.queues[s.to].push_back((s.ts, seq));
        self.waiting.entry(key).or_default().push_back(seq);
        self.order.push_back(seq);
        self.sends.insert(seq, s);
        let overflow = (self.sends.len() > MAX_PENDING).then(|| {
            while let Some(old) = self.order.pop_front() {
                if self.take(old).is_some() {
                    break;
                }
            }
            Outcome::Undecided(Witness::LostEvents)
        });
        (Sent::Waiting, overflow)
    }

    /// Removes a waiting send (its queue entries go stale and are skipped).
    fn take(&mut self, seq: u64) -> Option<Send> {
        let s = self.sends.remove(&seq)?;
        let key = (s.to, s.id);
        if let Some(w) = self.waiting.get_mut(&key) {
            w.retain(|x| *x != seq);
            if w.is_empty() {
                self.waiting.remove(&key);
            }
        }
        Some(s)
    }

    /// The packet reached `node`'s uplink at `ts` (common clock; `raw_ts` on
    /// its own): the send it answers, if one waits.
    pub fn arrive(&mut self, node: usize, id: &Identity, ts: u64, raw_ts: u64) -> Option<Send> {
        let first = self
            .waiting
            .get(&(node, *id))
            .and_then(|w| w.front().copied());
        let Some(seq) = first else {
            self.remember_early(node, id, ts, raw_ts);
            return None;
        };
        let s = self.take(seq)?;
        self.delivered(&s);
        Some(s)
    }

    fn delivered(&mut self, s: &Send) {
        let sizes = self.sizes.entry(path_key(s)).or_default();
        sizes.largest_delivered = Some(sizes.largest_delivered.unwrap_or(0).max(s.wire_len));
    }

    fn remember_early(&mut self, node: usize, id: &Identity, ts: u64, raw_ts: u64) {
        self.early.insert((node, *id), (ts, raw_ts));
        self.early_order.push_back((ts, node, *id));
        while self.early_order.len() > MAX_PENDING
            || self
                .early_order
                .front()
                .is_some_and(|(t, _, _)| ts.saturating_sub(*t) > 2 * WINDOW_NS)
        {
            if let Some((t, n, old)) = self.early_order.pop_front()
                && self.early.get(&(n, old)).is_some_and(|(at, _)| *at == t)
            {
                self.early.remove(&(n, old));
            }
        }
    }

    /// Judges the sends whose window has passed on their receiver's clock
    /// (`now[to]`, common clock); `witness` says whether the receiver could
    /// have seen them. In the order they were sent; `names`: the nodes'.
    pub fn expire(
        &mut self,
        now: &[u64],
        names: &[String],
        mut witness: impl FnMut(&Send) -> Witness,
    ) -> Vec<Outcome> {
        let mut due: Vec<(u64, Send)> = Vec::new();
        for to in 0..self.queues.len() {
            let until = now.get(to).copied().unwrap_or(0);
            while let Some(&(ts, seq)) = self.queues[to].front() {
                if !self.sends.contains_key(&seq) {
                    self.queues[to].pop_front(); // delivered or dropped
                    continue;
                }
                if until < ts + WINDOW_NS {
                    break;
                }
                self.queues[to].pop_front();
                due.extend(self.take(seq).map(|s| (seq, s)));
            }
        }
        due.sort_unstable_by_key(|(seq, _)| *seq);
        due.into_iter()
            .map(|(_, s)| match witness(&s) {
                Witness::Able => {
                    let ts = s.ts;
                    Outcome::Lost(self.lost(s, names), ts)
                }
                w => Outcome::Undecided(w),
            })
            .collect()
    }

    /// Forgets what still waits, when no more will come; how many.
    pub fn drain(&mut self) -> usize {
        let n = self.sends.len();
        self.sends.clear();
        self.waiting.clear();
        self.queues.clear();
        self.order.clear();
        n
    }

    fn lost(&mut self, s: Send, names: &[String]) -> Loss {
        let sizes = self.sizes.entry(path_key(&s)).or_default();
        sizes.smallest_lost = Some(
            sizes
                .smallest_lost
                .map_or(s.wire_len, |m| m.min(s.wire_len)),
        );
        Loss {
            src: s.id.src.map_or_else(|| "?".into(), |a| a.to_string()),
            dst: s.id.dst.map_or_else(|| "?".into(), |a| a.to_string()),
            path: Underlay {
                src_node: names.get(s.from).cloned().unwrap_or_default(),
                dst_node: names.get(s.to).cloned().unwrap_or_default(),
                encap: s.wire.encap,
                outer_src: s.wire.outer_src,
                outer_dst: s.wire.outer_dst,
                outer_proto: s.wire.outer_proto,
                outer_dport: s.wire.outer_dport,
                largest_delivered: sizes.largest_delivered,
                smallest_lost: sizes.smallest_lost,
            },
        }
    }

    pub fn pending(&self) -> usize {
        self.sends.len()
    }
}

/// The path of a packet between two nodes, before the outer header is known.
pub fn path(src_node: &str, dst_node: &str, encap: Encap) -> Underlay {
    Underlay {
        src_node: src_node.to_string(),
        dst_node: dst_node.to_string(),
        encap,
        outer_src: None,
        outer_dst: None,
        outer_proto: None,
        outer_dport: None,
        largest_delivered: None,
        smallest_lost: None,
    }
}
