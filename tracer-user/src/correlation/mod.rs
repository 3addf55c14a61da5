//! Correlating events: per-packet journeys (the points a packet passed before
//! it died) and ARP requests waiting for an answer.

pub mod arp;

use std::collections::{HashMap, VecDeque};

use tracer_common::{PacketMeta, l3};

use crate::events::records::Hop;

/// Identifies one packet across observation points. IPv4 packets carry an IP
/// ID; ICMP echo adds identifier and sequence (stored in the port fields).
/// IPv6 has no ID, so its key is the 5-tuple and journeys may merge packets
/// that follow each other closely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketKey {
    src: [u8; 16],
    dst: [u8; 16],
    l3: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    ip_id: u16,
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

/// Recent packets and where they were seen. Bounded in entries and in time.
pub struct Journeys {
    /// Per packet: when it was first seen, and its hops.
    hops: HashMap<PacketKey, (u64, Vec<Hop>)>,
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

    pub fn observe(&mut self, key: PacketKey, hop: Hop) {
        let ts = hop.ts_ns;
        let (_, entry) = self.hops.entry(key).or_insert_with(|| {
            self.order.push_back((ts, key));
            (ts, Vec::new())
        });
        if entry.len() == MAX_HOPS {
            entry.remove(0);
        }
        entry.push(hop);
        while self.hops.len() > self.max_entries {
            self.evict_oldest();
        }
    }

    /// The hops of a packet, oldest first.
    pub fn get(&self, key: &PacketKey) -> &[Hop] {
        self.hops.get(key).map(|(_, h)| h.as_slice()).unwrap_or(&[])
    }

    fn evict_oldest(&mut self) {
        while let Some((ts, key)) = self.order.pop_front() {
            if self.hops.get(&key).is_some_and(|(first, _)| *first == ts) {
                self.hops.remove(&key);
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
            // A key re-inserted after eviction has a newer order entry: only
            // drop the map entry this order entry was made for.
            if self.hops.get(&key).is_some_and(|(first, _)| *first == ts) {
                self.hops.remove(&key);
            }
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

    fn hop(ts: u64, ifname: &str) -> Hop {
        Hop {
            ts_ns: ts,
            netns: 1,
            ifname: Some(ifname.into()),
            dir: "ingress",
            ttl: Some(64),
            netfilter: None,
            verdict: None,
        }
    }

    #[test]
    fn hops_of_the_same_packet_are_joined_in_order() {
        let mut j = Journeys::new(100, 1_000);
        let k = PacketKey::of(&pkt(7)).unwrap();
        j.observe(k, hop(1, "cali1"));
        j.observe(PacketKey::of(&pkt(8)).unwrap(), hop(2, "cali1"));
        j.observe(k, hop(3, "eth0"));
        let names: Vec<_> = j
            .get(&k)
            .iter()
            .map(|h| h.ifname.clone().unwrap())
            .collect();
        assert_eq!(names, ["cali1", "eth0"]);
    }

    #[test]
    fn bounded_in_entries_hops_and_time() {
        let mut j = Journeys::new(2, 1_000);
        for id in 0..5 {
            j.observe(PacketKey::of(&pkt(id)).unwrap(), hop(id as u64, "a"));
        }
        assert_eq!(j.len(), 2);
        let k = PacketKey::of(&pkt(4)).unwrap();
        for t in 0..40 {
            j.observe(k, hop(10 + t, "b"));
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
}
