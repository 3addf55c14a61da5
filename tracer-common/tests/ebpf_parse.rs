//! The tc programs' header parsing and tunnel decoding, run in userspace on
//! packets built here: `tracer-ebpf/src/parse.rs` and `encap.rs` are plain
//! Rust over a `Reader`, so the same source is compiled into this test.
//! (Only the host kernel's lab can run VXLAN for real, and it has no `ipip`
//! module; this is where the IPIP branch is exercised.)

#[path = "../../tracer-ebpf/src/parse.rs"]
#[allow(dead_code)]
mod parse;

#[path = "../../tracer-ebpf/src/encap.rs"]
mod encap;

mod support;

use parse::{ETH_P_IP, ETH_P_IPV6, Reader, parse_l3};
use support::Bytes;
use tracer_common::{OuterMeta, PacketMeta, encap as kind, l3, pkt_flags, proto};

impl Reader for Bytes {
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.read_at(off)
    }
}

fn ipv4(proto: u8, id: u16, ttl: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&[0x40, 0, ttl, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut h = vec![8, 0, 0, 0];
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&[0xab; 56]);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02; 12];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn vxlan(flags: u8, vni: u32, inner_frame: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut h = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
    h.extend_from_slice(inner_frame);
    h
}

const POD_A: [u8; 4] = [10, 244, 1, 10];
const POD_B: [u8; 4] = [10, 244, 2, 10];
const NODE_A: [u8; 4] = [192, 168, 7, 1];
const NODE_B: [u8; 4] = [192, 168, 7, 2];

fn inner_ping() -> Vec<u8> {
    ipv4(proto::ICMP, 0x1234, 63, POD_A, POD_B, &echo_request(77, 3))
}

/// What the tc program does with an Ethernet frame: the outer packet, and
/// the inner one with its outer headers where it is encapsulated.
fn observe(frame: &[u8], vxlan_port: u16) -> (PacketMeta, Option<(PacketMeta, OuterMeta)>) {
    let r = Bytes(frame.to_vec());
    let mut outer = PacketMeta::default();
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let l4 = parse_l3(&r, 14, ethertype, &mut outer);
    let Some(t) = encap::inner(&r, &outer, l4, vxlan_port) else {
        return (outer, None);
    };
    let mut inner = PacketMeta::default();
    parse_l3(&r, t.off, t.ethertype, &mut inner);
    let meta = OuterMeta::of(&outer, t.encap, t.vni);
    (outer, (inner.l3 != l3::NONE).then_some((inner, meta)))
}

fn assert_inner_ping(inner: &PacketMeta) {
    assert_eq!(inner.l3, l3::IPV4);
    assert_eq!(&inner.src[..4], &POD_A);
    assert_eq!(&inner.dst[..4], &POD_B);
    assert_eq!(inner.proto, proto::ICMP);
    assert_eq!((inner.sport, inner.dport), (77, 3), "echo id and seq");
    assert_eq!((inner.ip_id, inner.ttl, inner.len), (0x1234, 63, 84));
    assert_ne!(inner.flags & pkt_flags::L4, 0);
}

#[test]
fn vxlan_over_ipv4_yields_the_inner_packet_and_the_outer_headers() {
    let payload = vxlan(0x08, 4096, &ethernet(ETH_P_IP, &inner_ping()));
    let frame = ethernet(
        ETH_P_IP,
        &ipv4(
            proto::UDP,
            9,
            64,
            NODE_A,
            NODE_B,
            &udp(41000, 4789, &payload),
        ),
    );
    let (outer, decoded) = observe(&frame, 4789);
    assert_eq!(outer.dport, 4789);
    let (inner, meta) = decoded.expect("decapsulated");
    assert_inner_ping(&inner);
    assert_eq!(meta.encap, kind::VXLAN);
    assert_eq!(meta.vni, 4096);
    assert_eq!((&meta.src[..4], &meta.dst[..4]), (&NODE_A[..], &NODE_B[..]));
    assert_eq!(
        (meta.l3, meta.proto, meta.sport, meta.dport),
        (l3::IPV4, proto::UDP, 41000, 4789)
    );
    assert_eq!(meta.len, 20 + 8 + 8 + 14 + 84, "outer IP total length");
    assert_eq!(meta.ttl, 64);
}

#[test]
fn vxlan_on_another_port_is_decoded_only_when_that_port_is_set() {
    let payload = vxlan(0x08, 1, &ethernet(ETH_P_IP, &inner_ping()));
    let frame = ethernet(
        ETH_P_IP,
        &ipv4(
            proto::UDP,
            9,
            64,
            NODE_A,
            NODE_B,
            &udp(41000, 8472, &payload),
        ),
    );
    assert!(observe(&frame, 4789).1.is_none(), "not the VXLAN port");
    assert!(observe(&frame, 8472).1.is_some());
    assert!(observe(&frame, 0).1.is_none(), "port 0: VXLAN off");
}

#[test]
fn udp_to_the_vxlan_port_without_a_vxlan_header_stays_plain() {
    // VNI flag not set: not VXLAN.
    let payload = vxlan(0x00, 1, &ethernet(ETH_P_IP, &inner_ping()));
    let frame = ethernet(
        ETH_P_IP,
        &ipv4(
            proto::UDP,
            9,
            64,
            NODE_A,
            NODE_B,
            &udp(41000, 4789, &payload),
        ),
    );
    assert!(observe(&frame, 4789).1.is_none());
    // Cut inside the VXLAN header, or inside the inner Ethernet header.
    for cut in [14 + 20 + 8 + 4, 14 + 20 + 8 + 8 + 10] {
        let good = ethernet(
            ETH_P_IP,
            &ipv4(
                proto::UDP,
                9,
                64,
                NODE_A,
                NODE_B,
                &udp(
                    41000,
                    4789,
                    &vxlan(8, 1, &ethernet(ETH_P_IP, &inner_ping())),
                ),
            ),
        );
        let (outer, decoded) = observe(&good[..cut], 4789);
        assert!(decoded.is_none(), "cut at {cut}");
        assert_eq!(outer.dport, 4789, "the outer packet is still reported");
    }
    // An inner frame calitrace cannot read: the outer packet is reported.
    let unknown = vxlan(0x08, 1, &ethernet(0x88cc, &[0; 40]));
    let frame = ethernet(
        ETH_P_IP,
        &ipv4(
            proto::UDP,
            9,
            64,
            NODE_A,
            NODE_B,
            &udp(41000, 4789, &unknown),
        ),
    );
    assert!(observe(&frame, 4789).1.is_none());
}

#[test]
fn vxlan_over_ipv6_is_decoded() {
    let mut a6 = [0u8; 16];
    a6[..2].copy_from_slice(&[0xfd, 0]);
    a6[15] = 1;
    let mut b6 = a6;
    b6[15] = 2;
    let payload = vxlan(0x08, 4097, &ethernet(ETH_P_IP, &inner_ping()));
    let frame = ethernet(
        ETH_P_IPV6,
        &ipv6(proto::UDP, a6, b6, &udp(5000, 4789, &payload)),
    );
    let (_, decoded) = observe(&frame, 4789);
    let (inner, meta) = decoded.expect("decapsulated");
    assert_inner_ping(&inner);
    assert_eq!(
        (meta.l3, meta.src, meta.dst, meta.vni),
        (l3::IPV6, a6, b6, 4097)
    );
}

#[test]
fn ipip_yields_the_inner_ipv4_packet() {
    let frame = ethernet(
        ETH_P_IP,
        &ipv4(
            tracer_common::IPPROTO_IPIP,
            5,
            64,
            NODE_A,
            NODE_B,
            &inner_ping(),
        ),
    );
    let (outer, decoded) = observe(&frame, 4789);
    assert_eq!(outer.proto, tracer_common::IPPROTO_IPIP);
    let (inner, meta) = decoded.expect("decapsulated");
    assert_inner_ping(&inner);
    assert_eq!(meta.encap, kind::IPIP);
    assert_eq!((meta.sport, meta.dport, meta.vni), (0, 0, 0));
    assert_eq!((&meta.src[..4], &meta.dst[..4]), (&NODE_A[..], &NODE_B[..]));
    assert_eq!(meta.len, 20 + 84);
}

#[test]
fn ipip_fragments_and_plain_packets_are_not_decoded() {
    let mut frag = ipv4(
        tracer_common::IPPROTO_IPIP,
        5,
        64,
        NODE_A,
        NODE_B,
        &inner_ping(),
    );
    frag[6] = 0x20; // more fragments
    frag[7] = 0x10; // offset
    assert!(observe(&ethernet(ETH_P_IP, &frag), 4789).1.is_none());
    let plain = ethernet(ETH_P_IP, &inner_ping());
    let (outer, decoded) = observe(&plain, 4789);
    assert!(decoded.is_none());
    assert_inner_ping(&outer);
}

// ------------------------------------------------------------ IPv6 extension headers

const LINK_LOCAL: [u8; 16] = [
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x64, 0x63, 0x74, 0xff, 0xfe, 0x6c, 0, 0xb,
];
const MLDV2_ROUTERS: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16];

/// An extension header of 8 bytes (`len` 0) or more, followed by `next`.
fn ext_header(next: u8, extra_units: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![next, extra_units];
    h.resize(8 + extra_units as usize * 8, 0);
    h.extend_from_slice(payload);
    h
}

/// A fragment header: `offset` in 8-byte units, more-fragments set.
fn fragment_header(next: u8, offset: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&((offset << 3) | 1).to_be_bytes());
    h.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn parse6(packet: &[u8]) -> (PacketMeta, Option<usize>) {
    let frame = ethernet(ETH_P_IPV6, packet);
    let mut pkt = PacketMeta::default();
    let l4 = parse_l3(&Bytes(frame), 14, ETH_P_IPV6, &mut pkt);
    (pkt, l4)
}

#[test]
fn an_mld_report_behind_its_hop_by_hop_header_is_icmpv6() {
    // MLDv2 report (type 143) with the router alert option, as the kernel sends it.
    let mut report = vec![143, 0, 0, 0, 0, 0, 0, 1];
    report.extend_from_slice(&[4, 0, 0, 0]);
    report.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0x6c, 0, 0xb]);
    let mut hop = vec![proto::ICMPV6, 0, 5, 2, 0, 0, 1, 0]; // router alert, PadN
    hop.extend_from_slice(&report);
    let packet = ipv6(IPV6_HOP_BY_HOP, LINK_LOCAL, MLDV2_ROUTERS, &hop);
    let (pkt, l4) = parse6(&packet);
    assert_eq!(pkt.l3, l3::IPV6);
    assert_eq!(pkt.proto, proto::ICMPV6, "not protocol 0");
    assert_eq!((pkt.icmp_type, pkt.icmp_code), (143, 0));
    assert_ne!(pkt.flags & pkt_flags::L4, 0);
    assert_eq!(l4, Some(14 + 40 + 8));
    assert_eq!(pkt.len, 40 + 8 + 28, "the length is the whole packet's");
    assert_eq!((pkt.src, pkt.dst), (LINK_LOCAL, MLDV2_ROUTERS));
}

const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTIONS: u8 = 60;

#[test]
fn every_kind_of_extension_header_is_walked_in_one_packet() {
    let syn = tcp(0x02, 20, &[]);
    // hop-by-hop, destination options (16 bytes), routing (24 bytes), first fragment.
    let packet = ipv6(
        IPV6_HOP_BY_HOP,
        LINK_LOCAL,
        MLDV2_ROUTERS,
        &ext_header(
            IPV6_DEST_OPTIONS,
            0,
            &ext_header(
                IPV6_ROUTING,
                1,
                &ext_header(IPV6_FRAGMENT, 2, &fragment_header(proto::TCP, 0, &syn)),
            ),
        ),
    );
    let (pkt, l4) = parse6(&packet);
    assert_eq!(pkt.proto, proto::TCP);
    assert_eq!((pkt.sport, pkt.dport, pkt.tcp_flags), (40000, 8080, 0x02));
    assert_eq!(l4, Some(14 + 40 + 8 + 16 + 24 + 8));
    assert_ne!(
        pkt.flags & pkt_flags::TCP_NO_DATA,
        0,
        "the segment ends with its header"
    );
}

/// A TCP header of `header` bytes (data offset) with `flags`, then `data`.
fn tcp(flags: u8, header: usize, data: &[u8]) -> Vec<u8> {
    let mut h = vec![0x9c, 0x40, 0x1f, 0x90, 0, 0, 0, 1, 0, 0, 0, 1];
    h.push(((header / 4) as u8) << 4);
    h.push(flags);
    h.resize(header, 0);
    h.extend_from_slice(data);
    h
}

#[test]
fn a_tcp_segment_without_data_is_told_apart_from_one_with_data() {
    const ACK: u8 = 0x10;
    let no_data = |p: &PacketMeta| p.flags & pkt_flags::TCP_NO_DATA != 0;
    let v4 = |seg: &[u8]| {
        let frame = ethernet(ETH_P_IP, &ipv4(proto::TCP, 1, 64, POD_A, POD_B, seg));
        let mut pkt = PacketMeta::default();
        parse_l3(&Bytes(frame), 14, ETH_P_IP, &mut pkt);
        pkt
    };
    // A pure ACK with timestamps (32-byte header), as at a connection's teardown.
    let ack = v4(&tcp(ACK, 32, &[]));
    assert_eq!((ack.sport, ack.dport, ack.tcp_flags), (40000, 8080, ACK));
    assert!(no_data(&ack));
    assert!(
        !no_data(&v4(&tcp(ACK | 0x08, 32, b"hello"))),
        "5 bytes of data"
    );
    assert!(
        !no_data(&v4(&tcp(ACK, 20, &[0; 12]))),
        "data the size of options"
    );
    let v6 = parse6(&ipv6(
        proto::TCP,
        LINK_LOCAL,
        LINK_LOCAL,
        &tcp(ACK, 20, &[]),
    ))
    .0;
    assert!(no_data(&v6));
    let v6_data = parse6(&ipv6(
        proto::TCP,
        LINK_LOCAL,
        LINK_LOCAL,
        &tcp(ACK, 20, &[1]),
    ))
    .0;
    assert!(!no_data(&v6_data));
    assert_eq!(
        v4(&inner_ping()[20..]).flags & pkt_flags::TCP_NO_DATA,
        0,
        "not TCP"
    );
}

#[test]
fn a_later_fragment_has_its_protocol_but_no_ports() {
    let packet = ipv6(
        IPV6_FRAGMENT,
        LINK_LOCAL,
        MLDV2_ROUTERS,
        &fragment_header(proto::UDP, 185, &udp(5353, 5353, &[1; 16])),
    );
    let (pkt, l4) = parse6(&packet);
    assert_eq!(pkt.proto, proto::UDP);
    assert_eq!(
        pkt.flags & pkt_flags::L4,
        0,
        "no UDP header in a later fragment"
    );
    assert_eq!((pkt.sport, pkt.dport), (0, 0));
    assert_eq!(l4, None);
    // The first fragment has them.
    let first = ipv6(
        IPV6_FRAGMENT,
        LINK_LOCAL,
        MLDV2_ROUTERS,
        &fragment_header(proto::UDP, 0, &udp(5353, 53, &[1; 16])),
    );
    let (pkt, _) = parse6(&first);
    assert_eq!((pkt.proto, pkt.sport, pkt.dport), (proto::UDP, 5353, 53));
}

#[test]
fn a_cut_or_overlong_chain_of_extension_headers_stops_without_ports() {
    // Cut inside the hop-by-hop header: its own number is the protocol.
    let cut = ipv6(IPV6_HOP_BY_HOP, LINK_LOCAL, MLDV2_ROUTERS, &[]);
    let (pkt, _) = parse6(&cut);
    assert_eq!((pkt.l3, pkt.proto), (l3::IPV6, IPV6_HOP_BY_HOP));
    assert_eq!(pkt.flags & pkt_flags::L4, 0);
    // Five destination options headers: more than are walked.
    let mut inner = udp(1, 2, &[]);
    for _ in 0..4 {
        inner = ext_header(IPV6_DEST_OPTIONS, 0, &inner);
    }
    let packet = ipv6(
        IPV6_DEST_OPTIONS,
        LINK_LOCAL,
        MLDV2_ROUTERS,
        &ext_header(proto::UDP, 0, &[]),
    );
    let (pkt, _) = parse6(&packet);
    assert_eq!(pkt.proto, proto::UDP, "one is walked: {pkt:?}");
    let too_many = ipv6(IPV6_DEST_OPTIONS, LINK_LOCAL, MLDV2_ROUTERS, &inner);
    let (pkt, _) = parse6(&too_many);
    assert_eq!(pkt.proto, IPV6_DEST_OPTIONS);
    assert_eq!(pkt.flags & pkt_flags::L4, 0);
    // Without extension headers nothing changes.
    let plain = ipv6(proto::UDP, LINK_LOCAL, MLDV2_ROUTERS, &udp(7, 9, &[0; 4]));
    let (pkt, l4) = parse6(&plain);
    assert_eq!(
        (pkt.proto, pkt.sport, pkt.dport, l4),
        (proto::UDP, 7, 9, Some(54))
    );
}
