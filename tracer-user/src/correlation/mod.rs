//! Correlating events: per-packet journeys (the points a packet passed before
//! it died) and ARP requests waiting for an answer.

pub mod arp;

use std::collections::hash_map::Entry;

pub use crate::events::PacketKey;
use crate::model::{FastMap, Point};

/// Hops kept per packet: enough for a packet looping a few times.
pub const MAX_HOPS: usize = 16;
const HOPS_GROWTH: usize = 4;
/// A slot's list is reused for the next packet up to this capacity.
const REUSED_HOPS: usize = 6;

/// Recent packets and where they were seen. Bounded in entries and in time.
///
/// Packets live in a ring of slots, in the order they were first seen; a new
/// packet takes the oldest packet's slot (and its allocation). The index
/// from keys to slots is not told: an entry whose slot has moved on is
/// stale, skipped when looked up and swept out in bulk. Under a stream of
/// new packets, evicting one used to be a lookup of a key long out of the
/// cache: the largest single cost of tracing everything.
pub struct Journeys {
    /// Packet key to the sequence number of its slot (maybe stale).
    index: FastMap<PacketKey, u64>,
    /// Slot `seq % max_entries` holds the packet of sequence `seq`.
    slots: Vec<Slot>,
    /// Sequence of the next new packet.
    next: u64,
    /// Oldest sequence still held: older ones were evicted or expired.
    oldest: u64,
    max_entries: usize,
    window_ns: u64,
}

/// Keys the index holds before its stale ones are swept out.
fn max_index(max_entries: usize) -> usize {
    max_entries + max_entries / 2
}

/// The index's capacity: a hash map whose deleted slots run out grows
/// while it holds more than half its capacity, so at twice its most keys it
/// never does (memory would step up an hour into tracing). Pages of the
/// table are touched only as keys land in them, and a sweep walks the whole
/// table: hence 1.5 times the packets held, not more.
fn index_capacity(max_entries: usize) -> usize {
    2 * (max_index(max_entries) + 1)
}

struct Slot {
    seq: u64,
    /// When the packet was first seen.
    first_ts: u64,
    seen: Vec<Point>,
}

impl Journeys {
    pub fn new(max_entries: usize, window_ns: u64) -> Self {
        let max_entries = max_entries.max(1);
        Self {
            index: FastMap::with_capacity_and_hasher(
                index_capacity(max_entries),
                Default::default(),
            ),
            slots: Vec::new(),
            next: 0,
            oldest: 0,
            max_entries,
            window_ns,
        }
    }

    pub fn len(&self) -> usize {
        (self.next - self.oldest) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot_of(&self, seq: u64) -> Option<usize> {
        live_slot(&self.slots, self.oldest, self.max_entries, seq)
    }

    pub fn observe(&mut self, key: PacketKey, hop: Point) {
        // One hash for the lookup and, for a new packet, the insertion.
        let seq = match self.index.entry(key) {
            Entry::Occupied(e) => {
                let seq = *e.get();
                if let Some(at) = live_slot(&self.slots, self.oldest, self.max_entries, seq) {
                    push_hop(&mut self.slots[at].seen, hop);
                    return;
                }
                *e.into_mut() = self.next;
                self.next
            }
            Entry::Vacant(e) => *e.insert(self.next),
        };
        self.next += 1;
        self.take_slot(seq, hop);
        if self.index.len() > max_index(self.max_entries) {
            self.sweep();
        }
    }

    /// Puts the new packet `seq` in its slot, evicting what was there.
    fn take_slot(&mut self, seq: u64, hop: Point) {
        let at = (seq % self.max_entries as u64) as usize;
        let first_ts = hop.ts_ns;
        if at == self.slots.len() {
            // Room for the two sightings most packets get on a node (pod's
            // cali* and the uplink); small enough for the allocator's fast path.
            let mut seen = Vec::with_capacity(2);
            seen.push(hop);
            self.slots.push(Slot {
                seq,
                first_ts,
                seen,
            });
        } else {
            let slot = &mut self.slots[at];
            slot.seq = seq;
            slot.first_ts = first_ts;
            if slot.seen.capacity() > REUSED_HOPS {
                // A long journey's list is not kept for every packet after
                // it: memory would creep up towards 16 sightings per slot.
                slot.seen = Vec::with_capacity(2);
            } else {
                slot.seen.clear();
            }
            slot.seen.push(hop);
        }
        self.oldest = self
            .oldest
            .max(self.next.saturating_sub(self.max_entries as u64));
    }

    /// Drops the index's stale entries (every `max_entries / 2` new packets
    /// at most: the index holds at most 1.5 times the packets held).
    fn sweep(&mut self) {
        let (oldest, slots, ring) = (self.oldest, &self.slots, self.max_entries);
        self.index
            .retain(|_, seq| live_slot(slots, oldest, ring, *seq).is_some());
    }

    /// Where a packet was seen, oldest first.
    pub fn get(&self, key: &PacketKey) -> &[Point] {
        self.index
            .get(key)
            .and_then(|&seq| self.slot_of(seq))
            .map_or(&[], |at| self.slots[at].seen.as_slice())
    }

    /// Forgets packets first seen more than the window before `now`.
    pub fn expire(&mut self, now: u64) {
        while self.oldest < self.next {
            let at = (self.oldest % self.max_entries as u64) as usize;
            let slot = &mut self.slots[at];
            if now.saturating_sub(slot.first_ts) <= self.window_ns {
                break;
            }
            // What the sightings box (verdicts, outer headers) goes now.
            slot.seen.clear();
            self.oldest += 1;
        }
        if self.is_empty() && !self.index.is_empty() {
            self.index.clear();
        }
    }
}

/// Where the packet of sequence `seq` is in a ring of `ring` slots, if it
/// is still held.
fn live_slot(slots: &[Slot], oldest: u64, ring: usize, seq: u64) -> Option<usize> {
    if seq < oldest {
        return None;
    }
    let at = (seq % ring as u64) as usize;
    slots.get(at).filter(|s| s.seq == seq).map(|_| at)
}

/// Appends a sighting to a packet's list, dropping the oldest past
/// [`MAX_HOPS`].
fn push_hop(seen: &mut Vec<Point>, hop: Point) {
    if seen.len() == MAX_HOPS {
        seen.remove(0);
    } else if seen.len() == seen.capacity() {
        // Grow by a few, not double: a forwarded packet has about 9
        // sightings, and doubling would hold 16 for each.
        seen.reserve_exact(HOPS_GROWTH);
    }
    seen.push(hop);
}

#[cfg(test)]
mod tests {
    use tracer_common::{PacketMeta, l3};

    use super::*;
    use crate::events::set_ip;
    use crate::model::{At, Dir};

    fn pkt(id: u16) -> PacketMeta {
        let mut p = PacketMeta {
            l3: l3::IPV4,
            proto: 1,
            ip_id: id,
            ..Default::default()
        };
        set_ip(&mut p.src, "10.244.1.10".parse().unwrap());
        set_ip(&mut p.dst, "10.244.2.10".parse().unwrap());
        p
    }

    fn hop(ts: u64, ifindex: u32) -> Point {
        Point {
            ts_ns: ts,
            netns: 1,
            ttl: Some(64),
            at: At::Iface {
                iface: ifindex,
                dir: Dir::Ingress,
                outer: None,
            },
        }
    }

    fn ifindex(p: &Point) -> u32 {
        match p.at {
            At::Iface { iface, .. } => iface,
            _ => 0,
        }
    }

    #[test]
    fn hops_of_the_same_packet_are_joined_in_order() {
        let mut j = Journeys::new(100, 1_000);
        let k = PacketKey::of(&pkt(7)).unwrap();
        j.observe(k, hop(1, 5));
        j.observe(PacketKey::of(&pkt(8)).unwrap(), hop(2, 5));
        j.observe(k, hop(3, 2));
        let ifs: Vec<_> = j.get(&k).iter().map(ifindex).collect();
        assert_eq!(ifs, [5, 2]);
    }

    #[test]
    fn bounded_in_entries_hops_and_time() {
        let mut j = Journeys::new(2, 1_000);
        for id in 0..5 {
            j.observe(PacketKey::of(&pkt(id)).unwrap(), hop(id as u64, 1));
        }
        assert_eq!(j.len(), 2);
        let k = PacketKey::of(&pkt(4)).unwrap();
        for t in 0..40 {
            j.observe(k, hop(10 + t, 2));
        }
        assert_eq!(j.get(&k).len(), MAX_HOPS);
        j.expire(5_000);
        assert!(j.is_empty());
    }

    #[test]
    fn an_evicted_packet_seen_again_starts_a_new_journey() {
        let mut j = Journeys::new(3, 1_000_000);
        let k = |id| PacketKey::of(&pkt(id)).unwrap();
        j.observe(k(0), hop(0, 1));
        j.observe(k(0), hop(1, 2));
        for id in 1..4 {
            j.observe(k(id), hop(10 + id as u64, 1));
        }
        // Packet 0's slot went to packet 3.
        assert!(j.get(&k(0)).is_empty());
        assert_eq!(j.get(&k(3)).len(), 1);
        j.observe(k(0), hop(20, 7));
        let ifs: Vec<_> = j.get(&k(0)).iter().map(ifindex).collect();
        assert_eq!(ifs, [7]);
        // ... taking packet 1's slot; 2 and 3 keep theirs.
        assert!(j.get(&k(1)).is_empty());
        assert_eq!((j.get(&k(2)).len(), j.get(&k(3)).len(), j.len()), (1, 1, 3));
    }

    #[test]
    fn the_index_stays_bounded_and_expiry_keeps_the_newest() {
        let mut j = Journeys::new(100, 1_000);
        let key = |id: u16| PacketKey::of(&pkt(id)).unwrap();
        for id in 0..10_000u16 {
            j.observe(key(id), hop(id.into(), 1));
            assert!(j.index.len() <= 200, "{}", j.index.len());
        }
        assert_eq!(j.len(), 100);
        // Packets first seen at 9,900..=9,999; the window is 1,000.
        j.expire(10_950);
        assert_eq!(j.len(), 50);
        assert_eq!(j.get(&key(9_999)).len(), 1);
        assert!(j.get(&key(9_949)).is_empty());
        j.expire(20_000);
        assert!(j.is_empty() && j.index.is_empty());
    }

    #[test]
    fn arp_has_no_packet_key() {
        let p = PacketMeta {
            l3: l3::ARP,
            ..Default::default()
        };
        assert!(PacketKey::of(&p).is_none());
    }

    #[test]
    fn points_stay_small() {
        // 16k packets x ~9 points are held at once under load: what only
        // some points have (a verdict, outer headers) is boxed.
        assert!(
            std::mem::size_of::<Point>() <= 32,
            "{}",
            std::mem::size_of::<Point>()
        );
    }
}
