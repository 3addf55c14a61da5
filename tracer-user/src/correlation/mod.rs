//! Correlating events: per-packet journeys (the points a packet passed before
//! it died) and ARP requests waiting for an answer.

pub mod arp;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use tracer_common::{PacketMeta, l3};

use crate::model::{Dir, Family, Hook, LinkPoint, NetfilterInfo, NfVerdict, Outer};

/// Identifies one packet across observation points. IPv4 packets carry an IP
/// ID; ICMP echo adds identifier and sequence (stored in the port fields).
/// IPv6 has no ID, so its key is the 5-tuple and journeys may merge packets
/// that follow each other closely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketKey {
    src: [u8; 16],
    dst: [u8; 16],
    l3: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    ip_id: u16,
}

/// Hashes what identifies the packet in as few words as possible (one
/// journey lookup per event: SipHash's cost is per word); equal keys have
/// equal `l3`, so they hash alike.
impl Hash for PacketKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let meta = u64::from(self.l3)
            | u64::from(self.proto) << 8
            | u64::from(self.ip_id) << 16
            | u64::from(self.sport) << 32
            | u64::from(self.dport) << 48;
        let word = |a: &[u8; 16], i: usize| u64::from_ne_bytes(a[i..i + 8].try_into().unwrap());
        if self.l3 == l3::IPV4 {
            let v4 = |a: &[u8; 16]| u64::from(u32::from_ne_bytes([a[0], a[1], a[2], a[3]]));
            h.write_u64((v4(&self.src) << 32) | v4(&self.dst));
            h.write_u64(meta);
        } else {
            h.write_u64(word(&self.src, 0));
            h.write_u64(word(&self.src, 8));
            h.write_u64(word(&self.dst, 0));
            h.write_u64(word(&self.dst, 8));
            h.write_u64(meta);
        }
    }
}

impl PacketKey {
    pub fn of(p: &PacketMeta) -> Option<Self> {
        matches!(p.l3, l3::IPV4 | l3::IPV6).then_some(PacketKey {
            src: p.src,
            dst: p.dst,
            l3: p.l3,
            proto: p.proto,
            sport: p.sport,
            dport: p.dport,
            ip_id: p.ip_id,
        })
    }
}

/// Hops kept per packet: enough for a packet looping a few times.
pub const MAX_HOPS: usize = 16;
const HOPS_GROWTH: usize = 4;

/// One place a packet was seen, as kept while waiting for a drop that may
/// never come: no names (they are looked up when a drop asks for the
/// journey), so that remembering a packet costs one small allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub ts_ns: u64,
    pub netns: u32,
    /// 0 for a netfilter verdict or link point.
    pub ifindex: u32,
    pub dir: Dir,
    pub ttl: Option<u8>,
    /// A netfilter table's verdict (exact probes): the table and the verdict.
    pub verdict: Option<Box<(NetfilterInfo, NfVerdict)>>,
    /// A netfilter link observation point the packet passed.
    pub point: Option<HookPoint>,
    /// The headers the packet travelled in, where tc saw it encapsulated
    /// (boxed: most sightings have none).
    pub outer: Option<Box<Outer>>,
}

/// Where a netfilter link saw a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookPoint {
    pub family: Family,
    pub hook: Option<Hook>,
    pub point: LinkPoint,
    /// The link's priority.
    pub priority: i32,
}

/// Recent packets and where they were seen. Bounded in entries and in time.
pub struct Journeys {
    /// Per packet: when it was first seen, and where.
    hops: HashMap<PacketKey, (u64, Vec<Sighting>)>,
    /// Insertion order, for eviction.
    order: VecDeque<(u64, PacketKey)>,
    max_entries: usize,
    window_ns: u64,
}

impl Journeys {
    pub fn new(max_entries: usize, window_ns: u64) -> Self {
        Self {
            hops: HashMap::new(),
            order: VecDeque::new(),
            max_entries,
            window_ns,
        }
    }

    pub fn len(&self) -> usize {
        self.hops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    pub fn observe(&mut self, key: PacketKey, hop: Sighting) {
        // One hash for the lookup and the insertion.
        match self.hops.entry(key) {
            Entry::Occupied(mut e) => {
                let seen = &mut e.get_mut().1;
                if seen.len() == MAX_HOPS {
                    seen.remove(0);
                } else if seen.len() == seen.capacity() {
                    // Grow by a few, not double: a forwarded packet has about
                    // 9 sightings, and doubling would hold 16 for each.
                    seen.reserve_exact(HOPS_GROWTH);
                }
                seen.push(hop);
                return;
            }
            Entry::Vacant(e) => {
                let ts = hop.ts_ns;
                self.order.push_back((ts, key));
                // Room for the two sightings most packets get on a node (pod's
                // cali* and the uplink); small enough for the allocator's fast path.
                let mut seen = Vec::with_capacity(2);
                seen.push(hop);
                e.insert((ts, seen));
            }
        }
        // The new packet is the newest: never the one evicted.
        if self.hops.len() > self.max_entries {
            self.evict_oldest();
        }
    }

    /// Where a packet was seen, oldest first.
    pub fn get(&self, key: &PacketKey) -> &[Sighting] {
        self.hops.get(key).map(|(_, h)| h.as_slice()).unwrap_or(&[])
    }

    /// Removes the map entry an order entry was made for; a key re-inserted
    /// after eviction has a newer order entry and stays.
    fn remove_if_first_seen(&mut self, key: PacketKey, ts: u64) -> bool {
        match self.hops.entry(key) {
            Entry::Occupied(e) if e.get().0 == ts => {
                e.remove();
                true
            }
            _ => false,
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((ts, key)) = self.order.pop_front() {
            if self.remove_if_first_seen(key, ts) {
                return;
            }
        }
    }

    /// Forgets packets first seen more than the window before `now`.
    pub fn expire(&mut self, now: u64) {
        while let Some(&(ts, key)) = self.order.front() {
            if now.saturating_sub(ts) <= self.window_ns {
                break;
            }
            self.order.pop_front();
            self.remove_if_first_seen(key, ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::set_ip;

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

    fn hop(ts: u64, ifindex: u32) -> Sighting {
        Sighting {
            ts_ns: ts,
            netns: 1,
            ifindex,
            dir: Dir::Ingress,
            ttl: Some(64),
            verdict: None,
            point: None,
            outer: None,
        }
    }

    #[test]
    fn hops_of_the_same_packet_are_joined_in_order() {
        let mut j = Journeys::new(100, 1_000);
        let k = PacketKey::of(&pkt(7)).unwrap();
        j.observe(k, hop(1, 5));
        j.observe(PacketKey::of(&pkt(8)).unwrap(), hop(2, 5));
        j.observe(k, hop(3, 2));
        let ifs: Vec<_> = j.get(&k).iter().map(|h| h.ifindex).collect();
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
    fn arp_has_no_packet_key() {
        let p = PacketMeta {
            l3: l3::ARP,
            ..Default::default()
        };
        assert!(PacketKey::of(&p).is_none());
    }

    #[test]
    fn sightings_stay_small() {
        // 16k packets x ~9 sightings are held at once under load: what only
        // some sightings have (a verdict, outer headers) is boxed.
        assert!(
            std::mem::size_of::<Sighting>() <= 48,
            "{}",
            std::mem::size_of::<Sighting>()
        );
    }
}
