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

use parse::{ETH_P_IP, ETH_P_IPV6, Reader, parse_l3};
use tracer_common::{OuterMeta, PacketMeta, encap as kind, l3, pkt_flags, proto};

/// Packet bytes, read as `bpf_skb_load_bytes` would: `None` past the end.
struct Bytes(Vec<u8>);

impl Reader for Bytes {
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        let end = off.checked_add(std::mem::size_of::<T>())?;
        let b = self.0.get(off..end)?;
        // SAFETY: T is a byte array here; the length was checked.
        Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
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
