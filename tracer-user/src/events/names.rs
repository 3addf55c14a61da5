//! The kernel's numbers in an event, named: the one place where tc
//! directions, netfilter families, hooks, verdicts, link points, backends,
//! protocols, ICMP and ARP codes become the model's types.

use tracer_common::{
    BackendKind, Direction, EncapKind, LinkPointKind, NfEvent, OuterMeta, PacketMeta, l3,
    pkt_flags, proto,
};

use super::{dst_ip, kernel_name, src_ip};
use crate::model::{
    ArpOp, Backend, Detail, Dir, Encap, Family, Headers, Hook, Icmp, LinkPoint, NetfilterInfo,
    NfVerdict, Outer, Proto, TcpSegment,
};

/// The direction of a tc observation (egress where the byte is no
/// direction: only tc writes one).
pub fn tc_dir(d: u8) -> Dir {
    match Direction::from_u8(d) {
        Some(Direction::Ingress) => Dir::Ingress,
        Some(Direction::Egress | Direction::None) | None => Dir::Egress,
    }
}

/// A table walk's backend (legacy where the byte is none of them).
pub fn backend(b: u8) -> Backend {
    match BackendKind::from_u8(b) {
        Some(BackendKind::Nft) => Backend::Nft,
        Some(BackendKind::Legacy) | None => Backend::Legacy,
    }
}

/// A link point (after a table's priority where the byte is none of them).
pub fn link_point(p: u8) -> LinkPoint {
    match LinkPointKind::from_u8(p) {
        Some(LinkPointKind::Entry) => LinkPoint::Entry,
        Some(LinkPointKind::Exit) => LinkPoint::Exit,
        Some(LinkPointKind::After) | None => LinkPoint::After,
    }
}

/// The verdict a table walk returned (kept in the event's reason field).
pub fn walk_verdict(nf: &NfEvent) -> NfVerdict {
    NfVerdict::from_kernel(nf.ev.reason)
}

/// The family of a netfilter event as nft names it: links only see ip and ip6.
pub fn link_family(pf: u8) -> Family {
    if Family::from_nfproto(pf) == Some(Family::Ipv6) {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

/// What a table walk says of itself. Exact where the walk named its table;
/// where the kernel's BTF lacks the layout (no module BTF before 5.11), the
/// rule counters will name it later.
pub fn walk_netfilter(nf: &NfEvent) -> NetfilterInfo {
    let table = Some(kernel_name(&nf.table)).filter(|t| !t.is_empty());
    NetfilterInfo {
        backend: Some(backend(nf.backend)),
        attribution: if table.is_some() {
            crate::model::Attribution::Exact
        } else {
            crate::model::Attribution::Inferred
        },
        table,
        chain: Some(kernel_name(&nf.chain)).filter(|c| !c.is_empty()),
        hook: Hook::of_family(nf.pf, nf.hook),
        ..Default::default()
    }
}

pub fn arp_op(op: u16) -> ArpOp {
    match op {
        1 => ArpOp::Request,
        2 => ArpOp::Reply,
        _ => ArpOp::Other,
    }
}

/// The protocol of a packet; none where calitrace read no layer 3.
pub fn packet_proto(p: &PacketMeta) -> Option<Proto> {
    match p.l3 {
        l3::ARP => Some(Proto::Arp),
        l3::NONE => None,
        _ => Some(Proto::from_ip(p.proto)),
    }
}

pub fn flow(p: &PacketMeta) -> crate::model::Flow {
    let ports = p.flags & pkt_flags::L4 != 0
        && matches!(p.proto, proto::TCP | proto::UDP)
        && p.l3 != l3::ARP;
    crate::model::Flow {
        src: src_ip(p),
        dst: dst_ip(p),
        proto: packet_proto(p),
        sport: ports.then_some(p.sport),
        dport: ports.then_some(p.dport),
        src_pod: None,
        dst_pod: None,
    }
}

/// A packet's headers, typed.
pub fn headers(p: &PacketMeta) -> Headers {
    let tcp = p.flags & pkt_flags::L4 != 0
        && p.proto == proto::TCP
        && matches!(p.l3, l3::IPV4 | l3::IPV6);
    Headers {
        flow: flow(p),
        detail: detail(p),
        tcp: tcp.then_some(TcpSegment {
            flags: p.tcp_flags,
            data: p.flags & pkt_flags::TCP_NO_DATA == 0,
        }),
    }
}

pub fn detail(p: &PacketMeta) -> Detail {
    let ip = matches!(p.l3, l3::IPV4 | l3::IPV6);
    let icmp = ip && matches!(p.proto, proto::ICMP | proto::ICMPV6) && p.flags & pkt_flags::L4 != 0;
    Detail {
        ttl: ip.then_some(p.ttl),
        ip_id: (p.l3 == l3::IPV4).then_some(p.ip_id),
        len: p.len,
        // The eBPF programs keep an echo's id and sequence in the port fields.
        icmp: icmp.then(|| {
            Icmp::from_header(
                p.proto == proto::ICMPV6,
                p.icmp_type,
                p.icmp_code,
                p.sport,
                p.dport,
            )
        }),
        arp: (p.l3 == l3::ARP).then(|| arp_op(p.arp_op)),
    }
}

/// The headers an encapsulated packet travelled in.
pub fn outer(o: &OuterMeta) -> Outer {
    let p = o.packet();
    let encap = match EncapKind::from_u8(o.encap) {
        Some(EncapKind::Vxlan) => Encap::Vxlan,
        Some(EncapKind::Ipip) => Encap::Ipip,
        None => Encap::None,
    };
    Outer {
        encap,
        src: src_ip(&p),
        dst: dst_ip(&p),
        proto: packet_proto(&p),
        dport: (o.proto == proto::UDP).then_some(o.dport),
        len: o.len,
        vni: (encap == Encap::Vxlan).then_some(o.vni),
    }
}

/// The stats' `events` from the programs' counters (indexed by
/// `tracer_common::counter`), and the events lost.
pub fn event_counts(c: &[u64]) -> (std::collections::BTreeMap<String, u64>, u64) {
    use tracer_common::counter;
    let at = |i: u32| c.get(i as usize).copied().unwrap_or(0);
    let prefiltered = at(counter::TC_PREFILTERED);
    let named = [
        ("tc_seen", at(counter::TC_SEEN) + prefiltered),
        ("tc_prefiltered", prefiltered),
        ("tc", at(counter::TC_EMITTED)),
        ("kfree_skb_seen", at(counter::DROP_SEEN)),
        ("kfree_skb", at(counter::DROP_EMITTED)),
        ("netfilter_verdicts_seen", at(counter::VERDICT_SEEN)),
        ("netfilter_verdicts", at(counter::VERDICT_EMITTED)),
        ("netfilter_links_seen", at(counter::HOOK_SEEN)),
        ("netfilter_links", at(counter::HOOK_EMITTED)),
    ];
    let events = named.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    (events, at(counter::LOST))
}

#[cfg(test)]
mod tests {
    use tracer_common::{dir, encap, nf_point};

    use super::*;

    #[test]
    fn packet_codes_are_named() {
        let mut p = PacketMeta {
            l3: l3::IPV6,
            proto: proto::ICMPV6,
            icmp_type: 129,
            sport: 7,
            dport: 2,
            flags: pkt_flags::L4,
            ..Default::default()
        };
        assert_eq!(packet_proto(&p), Some(Proto::Icmpv6));
        assert_eq!(detail(&p).icmp, Some(Icmp::EchoReply { id: 7, seq: 2 }));
        assert_eq!(flow(&p).sport, None, "ICMP has no ports");
        p.l3 = l3::ARP;
        p.arp_op = 2;
        assert_eq!(detail(&p).arp, Some(ArpOp::Reply));
        assert_eq!(detail(&p).ttl, None);
        p.l3 = l3::IPV4;
        p.proto = 47;
        assert_eq!(packet_proto(&p), Some(Proto::Other(47)));
        assert_eq!(tc_dir(dir::EGRESS), Dir::Egress);
        assert_eq!(link_point(nf_point::EXIT), LinkPoint::Exit);
        assert_eq!(link_family(10), Family::Ipv6);
        assert_eq!(backend(tracer_common::backend::NFT), Backend::Nft);
    }

    #[test]
    fn outer_headers_are_named() {
        let mut o = OuterMeta {
            l3: l3::IPV4,
            proto: proto::UDP,
            encap: encap::VXLAN,
            sport: 40000,
            dport: 4789,
            len: 134,
            vni: 4096,
            ..Default::default()
        };
        o.src[..4].copy_from_slice(&[192, 168, 7, 1]);
        o.dst[..4].copy_from_slice(&[192, 168, 7, 2]);
        let v = outer(&o);
        assert_eq!(v, crate::model::fixtures::vxlan_outer());
        o.encap = encap::IPIP;
        o.proto = tracer_common::IPPROTO_IPIP;
        let i = outer(&o);
        assert_eq!(
            (i.encap, i.proto, i.dport, i.vni),
            (Encap::Ipip, Some(Proto::Other(4)), None, None)
        );
        o.l3 = l3::IPV6;
        o.src = [0xfd; 16];
        assert_eq!(
            outer(&o).src.map(|a| a.to_string()).as_deref(),
            Some("fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd")
        );
    }

    #[test]
    fn every_wire_code_has_its_name() {
        use tracer_common::{BackendKind, Direction, EncapKind, LinkPointKind};
        let dirs: Vec<Dir> = Direction::ALL.iter().map(|&d| tc_dir(d as u8)).collect();
        assert_eq!(dirs, [Dir::Ingress, Dir::Egress, Dir::Egress]);
        let points: Vec<LinkPoint> = LinkPointKind::ALL
            .iter()
            .map(|&p| link_point(p as u8))
            .collect();
        assert_eq!(
            points,
            [LinkPoint::Entry, LinkPoint::After, LinkPoint::Exit]
        );
        let backends: Vec<Backend> = BackendKind::ALL.iter().map(|&b| backend(b as u8)).collect();
        assert_eq!(backends, [Backend::Legacy, Backend::Nft]);
        assert_eq!(EncapKind::ALL.len(), 2, "VXLAN and IPIP, named in `outer`");
    }
}
