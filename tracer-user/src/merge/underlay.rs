//! Packets of pod flows that leave one node's uplink are looked for on the
//! receiving node's uplink; those that never arrive, while the receiving
//! node could have seen them, are underlay losses.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
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
    pub outer_src: Option<IpAddr>,
    pub outer_dst: Option<IpAddr>,
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

/// A waiting send's place: its number (in the order sent) and its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticket {
    seq: u64,
    slot: u32,
}

/// The sends waiting for one packet at one receiver, oldest first: nearly
/// always one, kept without an allocation of its own.
struct Tickets {
    first: Ticket,
    more: VecDeque<Ticket>,
}

/// Sends waiting for their arrival, findable by receiver and packet (each
/// arrival) and by receiver in the order sent (each expiry), so that neither
/// walks all that waits. Every packet that leaves a node's uplink passes
/// here, so a send is kept in a reused slot, not a map of its own.
#[derive(Default)]
pub struct Tracker {
    /// Waiting sends, each with its number; freed slots are reused.
    slots: Vec<(u64, Option<Send>)>,
    free: Vec<u32>,
    pending: usize,
    next_seq: u64,
    /// (receiver, packet) -> waiting sends, oldest first.
    waiting: FastMap<(usize, Identity), Tickets>,
    /// Per receiver: (time sent, send), in the order sent; entries of sends
    /// no longer waiting are skipped when met.
    queues: Vec<VecDeque<(u64, Ticket)>>,
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
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push((0, None));
            (self.slots.len() - 1) as u32
        });
        let t = Ticket { seq, slot };
        self.queues[s.to].push_back((s.ts, t));
        match self.waiting.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().more.push_back(t),
            Entry::Vacant(e) => {
                e.insert(Tickets {
                    first: t,
                    more: VecDeque::new(),
                });
            }
        }
        self.slots[slot as usize] = (seq, Some(s));
        self.pending += 1;
        let overflow = (self.pending > MAX_PENDING).then(|| {
            if let Some(old) = self.oldest() {
                self.take(old);
            }
            Outcome::Undecided(Witness::LostEvents)
        });
        (Sent::Waiting, overflow)
    }

    fn is_waiting(&self, t: Ticket) -> bool {
        self.slots
            .get(t.slot as usize)
            .is_some_and(|(seq, s)| *seq == t.seq && s.is_some())
    }

    /// The send waiting longest: the first of the receivers' queues.
    fn oldest(&mut self) -> Option<Ticket> {
        let mut oldest: Option<Ticket> = None;
        for q in 0..self.queues.len() {
            while let Some(&(_, t)) = self.queues[q].front() {
                if self.is_waiting(t) {
                    if oldest.is_none_or(|o| t.seq < o.seq) {
                        oldest = Some(t);
                    }
                    break;
                }
                self.queues[q].pop_front();
            }
        }
        oldest
    }

    /// Removes a waiting send (its queue entry goes stale and is skipped).
    fn take(&mut self, t: Ticket) -> Option<Send> {
        let (seq, slot) = self.slots.get_mut(t.slot as usize)?;
        if *seq != t.seq {
            return None;
        }
        let s = slot.take()?;
        self.free.push(t.slot);
        self.pending -= 1;
        if let Entry::Occupied(mut e) = self.waiting.entry((s.to, s.id)) {
            let w = e.get_mut();
            if w.first == t {
                match w.more.pop_front() {
                    Some(next) => w.first = next,
                    None => {
                        e.remove();
                    }
                }
            } else {
                w.more.retain(|x| *x != t);
            }
        }
        Some(s)
    }

    /// The packet reached `node`'s uplink at `ts` (common clock; `raw_ts` on
    /// its own): the send it answers, if one waits.
    pub fn arrive(&mut self, node: usize, id: &Identity, ts: u64, raw_ts: u64) -> Option<Send> {
        let first = self.waiting.get(&(node, *id)).map(|w| w.first);
        let Some(t) = first else {
            self.remember_early(node, id, ts, raw_ts);
            return None;
        };
        let s = self.take(t)?;
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
            while let Some(&(ts, t)) = self.queues[to].front() {
                if !self.is_waiting(t) {
                    self.queues[to].pop_front(); // delivered or dropped
                    continue;
                }
                if until < ts + WINDOW_NS {
                    break;
                }
                self.queues[to].pop_front();
                due.extend(self.take(t).map(|s| (t.seq, s)));
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
        let n = self.pending;
        self.slots.clear();
        self.free.clear();
        self.pending = 0;
        self.waiting.clear();
        self.queues.clear();
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
            src: s.id.src,
            dst: s.id.dst,
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
        self.pending
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Send number `i` from node 0 to node 1 at time `i`.
    fn send(i: usize) -> Send {
        Send {
            id: Identity {
                src: None,
                dst: None,
                proto: None,
                sport: Some((i >> 16) as u16),
                dport: Some(i as u16),
                ip_id: None,
                icmp: None,
                len: 84,
            },
            from: 0,
            to: 1,
            ts: i as u64,
            raw_ts: i as u64,
            wire_len: 84,
            wire: Wire::plain(Encap::None),
        }
    }

    #[test]
    fn the_same_packet_sent_twice_is_answered_oldest_first() {
        let mut t = Tracker::default();
        let (a, mut b) = (send(7), send(7));
        b.ts = 50;
        t.send(a);
        t.send(b);
        assert_eq!(t.pending(), 2);
        let id = send(7).id;
        assert_eq!(t.arrive(1, &id, 60, 60).map(|s| s.ts), Some(7));
        assert_eq!(t.arrive(1, &id, 70, 70).map(|s| s.ts), Some(50));
        assert!(t.arrive(1, &id, 80, 80).is_none(), "none waits any more");
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn beyond_the_bound_the_oldest_send_goes_undecided() {
        let mut t = Tracker::default();
        for i in 0..MAX_PENDING {
            assert!(t.send(send(i)).1.is_none());
        }
        // One delivered: its slot is used again.
        assert!(t.arrive(1, &send(5).id, 10, 10).is_some());
        assert!(t.send(send(MAX_PENDING)).1.is_none());
        let (_, overflow) = t.send(send(MAX_PENDING + 1));
        assert_eq!(overflow, Some(Outcome::Undecided(Witness::LostEvents)));
        assert_eq!(t.pending(), MAX_PENDING);
        assert!(
            t.arrive(1, &send(0).id, 1, 1).is_none(),
            "the oldest gave way"
        );
        assert_eq!(t.arrive(1, &send(1).id, 1, 1).map(|s| s.ts), Some(1));
        // The rest is judged in the order sent once the window has passed.
        let now = [0, u64::MAX / 2];
        let names = ["a".to_string(), "b".to_string()];
        let judged = t.expire(&now, &names, |_| Witness::LostEvents);
        assert_eq!(judged.len(), MAX_PENDING - 1);
        assert_eq!(t.pending(), 0);
    }
}
