//! Trace events grouped by packet (trace id) into what calitrace needs of
//! them: for a packet that a table dropped, the packet, the place, and the
//! base chains that had accepted it before.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::message::{Step, TraceEvent};
use super::{TracedDrop, TracedPacket, TracedPlace};
use crate::netfilter::Family;

/// Packets followed at once; the oldest is forgotten past this.
const MAX_WALKS: usize = 4096;

#[derive(Debug, Default)]
struct Walk {
    packet: Option<TracedPacket>,
    /// The base chain of the table walk in progress (its first event).
    base: Option<TracedPlace>,
    accepted: Vec<TracedPlace>,
}

/// Walks in progress, by trace id.
#[derive(Debug, Default)]
pub(super) struct Walks {
    walks: HashMap<u32, Walk>,
    order: VecDeque<u32>,
    /// calitrace's own table, whose events are only the marking.
    own_table: String,
}

impl Walks {
    pub fn new(own_table: &str) -> Self {
        Walks {
            own_table: own_table.to_string(),
            ..Default::default()
        }
    }

    /// Takes one event; a drop completes its packet's walk.
    pub fn take(&mut self, ev: TraceEvent) -> Option<TracedDrop> {
        if ev.table == self.own_table {
            return None;
        }
        let family = Family::from_nfproto(ev.family)?;
        let packet = ev
            .network
            .as_deref()
            .and_then(|n| packet_of(n, ev.transport.as_deref()));
        let walk = self.walk(ev.id);
        if let Some(p) = packet {
            // Headers come with the first event of each table's walk; other
            // headers under the same id are another packet (skb reused).
            if walk.packet.is_some_and(|old| old != p) {
                *walk = Walk::default();
            }
            walk.packet = Some(p);
            walk.base = Some(TracedPlace {
                family,
                table: ev.table.clone(),
                chain: ev.chain.clone(),
            });
        }
        match ev.step {
            Step::Other => None,
            Step::Accept => {
                walk.accepted.extend(walk.base.take());
                None
            }
            Step::Drop => {
                let walk = self.walks.remove(&ev.id)?;
                Some(TracedDrop {
                    packet: walk.packet?,
                    family,
                    base_chain: walk
                        .base
                        .filter(|b| b.table == ev.table && b.family == family)
                        .map(|b| b.chain),
                    table: ev.table,
                    chain: ev.chain,
                    rule: ev.rule,
                    mark: ev.mark,
                    accepted_by: walk.accepted,
                })
            }
        }
    }

    fn walk(&mut self, id: u32) -> &mut Walk {
        if !self.walks.contains_key(&id) {
            if self.order.len() >= MAX_WALKS
                && let Some(old) = self.order.pop_front()
            {
                self.walks.remove(&old);
            }
            self.order.push_back(id);
        }
        self.walks.entry(id).or_default()
    }
}

/// The packet of a trace's network and transport headers, identified as the
/// tc programs identify it (ICMP: id and sequence in the port fields).
pub(super) fn packet_of(network: &[u8], transport: Option<&[u8]>) -> Option<TracedPacket> {
    let (src, dst, proto, ip_id): (IpAddr, IpAddr, u8, u16) = match network.first()? >> 4 {
        4 if network.len() >= 20 => (
            Ipv4Addr::from(<[u8; 4]>::try_from(&network[12..16]).ok()?).into(),
            Ipv4Addr::from(<[u8; 4]>::try_from(&network[16..20]).ok()?).into(),
            network[9],
            u16::from_be_bytes([network[4], network[5]]),
        ),
        6 if network.len() >= 40 => (
            Ipv6Addr::from(<[u8; 16]>::try_from(&network[8..24]).ok()?).into(),
            Ipv6Addr::from(<[u8; 16]>::try_from(&network[24..40]).ok()?).into(),
            network[6],
            0,
        ),
        _ => return None,
    };
    let word = |t: &[u8], at: usize| t.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (sport, dport) = match (proto, transport) {
        (6 | 17, Some(t)) => (word(t, 0).unwrap_or(0), word(t, 2).unwrap_or(0)),
        (1 | 58, Some(t)) => (word(t, 4).unwrap_or(0), word(t, 6).unwrap_or(0)),
        _ => (0, 0),
    };
    Some(TracedPacket {
        src,
        dst,
        proto,
        sport,
        dport,
        ip_id,
    })
}

#[cfg(test)]
mod tests {
    use super::super::message::build::{Fake, trace};
    use super::super::message::trace_event;
    use super::*;

    fn ipv4(id: u16) -> Vec<u8> {
        let mut h = vec![
            0x45,
            0,
            0,
            84,
            (id >> 8) as u8,
            id as u8,
            0x40,
            0,
            63,
            1,
            0,
            0,
        ];
        h.extend([10, 244, 1, 10, 10, 244, 2, 10]);
        h
    }

    const ECHO: [u8; 8] = [8, 0, 0, 0, 0x12, 0x34, 0, 7];

    fn ev(
        table: &str,
        chain: &str,
        rule: Option<u64>,
        code: i32,
        hdr: Option<&[u8]>,
    ) -> TraceEvent {
        let (ty, p) = trace(&Fake {
            id: 77,
            family: if table == "firewalld" { 1 } else { 2 },
            table,
            chain,
            rule,
            code,
            mark: 0x10000,
            network: hdr,
            transport: hdr.map(|_| &ECHO[..]),
        });
        trace_event(ty, &p).unwrap()
    }

    #[test]
    fn a_drop_after_calicos_accept_names_both() {
        let h = ipv4(0x0102);
        let mut w = Walks::new("calitrace_1");
        assert!(
            w.take(ev("calitrace_1", "pre", Some(2), -1, Some(&h)))
                .is_none()
        );
        assert!(
            w.take(ev("calico", "filter-FORWARD", Some(5), -3, Some(&h)))
                .is_none()
        );
        assert!(
            w.take(ev("calico", "filter-cali-to-wl-dispatch", Some(9), 1, None))
                .is_none()
        );
        let d = w
            .take(ev("firewalld", "filter_FORWARD", Some(31), 0, Some(&h)))
            .expect("the drop completes the walk");
        assert_eq!(d.table, "firewalld");
        assert_eq!(d.family, Family::Inet);
        assert_eq!(d.rule, Some(31));
        assert_eq!(d.base_chain.as_deref(), Some("filter_FORWARD"));
        assert_eq!(d.accepted_by.len(), 1);
        assert_eq!(d.accepted_by[0].table, "calico");
        assert_eq!(d.accepted_by[0].chain, "filter-FORWARD");
        assert_eq!(d.packet.ip_id, 0x0102);
        assert_eq!((d.packet.sport, d.packet.dport), (0x1234, 7));
        assert_eq!(d.packet.src.to_string(), "10.244.1.10");
    }

    #[test]
    fn a_reused_trace_id_with_another_packet_starts_afresh() {
        let mut w = Walks::new("own");
        w.take(ev("calico", "filter-FORWARD", None, 1, Some(&ipv4(1))));
        let d = w
            .take(ev("filter", "FORWARD", None, 0, Some(&ipv4(2))))
            .unwrap();
        assert!(d.accepted_by.is_empty(), "the accept was another packet's");
        assert_eq!(d.rule, None, "a policy drop");
    }

    #[test]
    fn the_number_of_walks_is_bounded() {
        let mut w = Walks::new("own");
        for id in 0..(MAX_WALKS as u32 + 10) {
            let mut e = ev("calico", "filter-FORWARD", Some(1), -1, Some(&ipv4(1)));
            e.id = id;
            w.take(e);
        }
        assert_eq!(w.walks.len(), MAX_WALKS);
    }

    #[test]
    fn ipv6_headers_and_short_ones() {
        let mut h = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        h.extend([0xfd; 16]);
        h.extend([0xfe; 16]);
        let p = packet_of(&h, Some(&[0, 53, 0x30, 0x39])).unwrap();
        assert_eq!((p.proto, p.sport, p.dport, p.ip_id), (17, 53, 12345, 0));
        assert!(packet_of(&h[..30], None).is_none());
        assert!(packet_of(&[], None).is_none());
    }
}
