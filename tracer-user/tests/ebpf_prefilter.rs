//! The tc programs' prefilter (`tracer-ebpf/src/prefilter.rs`) beside their
//! full parse and filter (`parse.rs`, `encap.rs`, the filter's program), run
//! in userspace on random frames and filters: the prefilter never turns away
//! a packet the filter passes, its inner packet included, and does turn
//! packets away.

#[path = "../../tracer-ebpf/src/parse.rs"]
#[allow(dead_code)]
mod parse;

#[path = "../../tracer-ebpf/src/encap.rs"]
#[allow(dead_code)]
mod encap;

#[path = "../../tracer-ebpf/src/prefilter.rs"]
mod prefilter;

#[path = "../../tracer-common/tests/support/mod.rs"]
mod support;

use parse::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, Reader, parse_l3};
use support::{Bytes, XorShift};
use tracer_common::filter::{FilterProg, matches};
use tracer_common::{IPPROTO_IPIP, PacketMeta, l3, proto};
use tracer_user::filter::Filter;

const VXLAN_PORT: u16 = 4789;

impl Reader for Bytes {
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.read_at(off)
    }
}

/// The same bytes read as the tc programs read packet data: the addresses
/// a word at a time (`Reader::PLAIN_LOADS`).
struct Loads<'a>(&'a Bytes);

impl Reader for Loads<'_> {
    const PLAIN_LOADS: bool = true;

    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.read_at(off)
    }
}

const V4: &[[u8; 4]] = &[
    [10, 244, 1, 10],
    [10, 244, 2, 10],
    [192, 168, 7, 1],
    [192, 168, 7, 2],
];
const V6: &[[u8; 16]] = &[
    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
];

#[rustfmt::skip]
const PRIMS: &[&str] = &[
    "host 10.244.1.10", "src host 10.244.2.10", "dst net 192.168.7.0/24", "net 10.244.0.0/16",
    "host fd00::1", "dst net fd00::/64", "net 0.0.0.0/0", "port 53", "tcp", "udp", "icmp",
    "arp", "ip6", "port 4789",
];

fn random_filter(r: &mut XorShift, depth: u32) -> String {
    if depth == 0 || r.below(3) == 0 {
        return r.pick(PRIMS).to_string();
    }
    match r.below(5) {
        0 => format!("not ({})", random_filter(r, depth - 1)),
        1 | 2 => format!(
            "({}) and ({})",
            random_filter(r, depth - 1),
            random_filter(r, depth - 1)
        ),
        _ => format!(
            "({}) or ({})",
            random_filter(r, depth - 1),
            random_filter(r, depth - 1)
        ),
    }
}

fn l4(r: &mut XorShift, proto: u8) -> Vec<u8> {
    let mut h: Vec<u8> = (0..20).map(|_| r.next() as u8).collect();
    let any = r.next() as u16;
    let dport = r.pick(&[53, 80, VXLAN_PORT, any]);
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == proto::TCP {
        h[12] = 5 << 4;
    }
    h
}

/// A random IPv4 or IPv6 packet (or ARP), maybe carrying VXLAN or IPIP with
/// a packet inside; `depth` limits the nesting.
fn l3_packet(r: &mut XorShift, depth: u32) -> (u16, Vec<u8>) {
    let proto = r.pick(&[
        proto::TCP,
        proto::UDP,
        proto::ICMP,
        proto::ICMPV6,
        IPPROTO_IPIP,
        0,
        43,
    ]);
    let mut payload = l4(r, proto);
    if depth > 0 && (proto == proto::UDP && r.below(2) == 0 || proto == IPPROTO_IPIP) {
        let (ethertype, inner) = l3_packet(r, depth - 1);
        if proto == IPPROTO_IPIP {
            payload.clear();
        } else {
            payload.truncate(8);
            payload[2..4].copy_from_slice(&VXLAN_PORT.to_be_bytes());
            payload.extend_from_slice(&[r.pick(&[0x08, 0x00]), 0, 0, 0, 0, 0x10, 0, 0]);
            payload.extend_from_slice(&[2; 12]);
            payload.extend_from_slice(&ethertype.to_be_bytes());
        }
        payload.extend_from_slice(&inner);
    }
    match r.below(5) {
        0 | 1 => {
            let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
            let len = (20 + payload.len()) as u16;
            h[2..4].copy_from_slice(&len.to_be_bytes());
            if r.below(8) == 0 {
                h[6] = 0x20; // a later fragment
                h[7] = 9;
            }
            h.extend_from_slice(&r.pick(V4));
            h.extend_from_slice(&r.pick(V4));
            h.extend_from_slice(&payload);
            (ETH_P_IP, h)
        }
        2 | 3 => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&r.pick(V6));
            h.extend_from_slice(&r.pick(V6));
            h.extend_from_slice(&payload);
            (ETH_P_IPV6, h)
        }
        _ => {
            let mut h = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 2, 2, 2, 2, 2];
            h.extend_from_slice(&r.pick(V4));
            h.extend_from_slice(&[0; 6]);
            h.extend_from_slice(&r.pick(V4));
            (ETH_P_ARP, h)
        }
    }
}

/// Whether the tc program's full path reports the frame: the filter passes
/// its packet, or for a tunnel packet the inner or the outer one.
fn full_path_reports(frame: &Bytes, prog: &FilterProg) -> bool {
    let Some(eth) = frame.read::<[u8; 14]>(0) else {
        return false;
    };
    let mut outer = PacketMeta::default();
    let l4 = parse_l3(
        frame,
        14,
        u16::from_be_bytes([eth[12], eth[13]]),
        &mut outer,
    );
    if let Some(t) = encap::inner(frame, &outer, l4, VXLAN_PORT) {
        let mut inner = PacketMeta::default();
        parse_l3(frame, t.off, t.ethertype, &mut inner);
        if inner.l3 != l3::NONE {
            return matches(prog, &inner) || matches(prog, &outer);
        }
    }
    matches(prog, &outer)
}

#[test]
fn the_prefilter_never_turns_away_what_the_filter_reports() {
    let mut r = XorShift(0x005e_ed0f_ca11_7ace);
    let (mut turned_away, mut reported, mut checked) = (0, 0, 0);
    for _ in 0..3000 {
        let Ok(filter) = Filter::parse(&random_filter(&mut r, 3)) else {
            continue;
        };
        let prog = filter.compile().unwrap();
        for _ in 0..40 {
            let (ethertype, packet) = l3_packet(&mut r, 2);
            let mut frame = vec![2; 12];
            frame.extend_from_slice(&ethertype.to_be_bytes());
            frame.extend_from_slice(&packet);
            // Sometimes only the first bytes are linear data.
            if r.below(6) == 0 {
                frame.truncate(r.below(frame.len() + 1));
            }
            let frame = Bytes(frame);
            let reports = full_path_reports(&frame, &prog);
            let away = frame.read::<[u8; 2]>(12).is_some_and(|t| {
                prefilter::turned_away(&frame, 14, u16::from_be_bytes(t), &prog.quick, VXLAN_PORT)
            });
            let away_by_words = frame.read::<[u8; 2]>(12).is_some_and(|t| {
                let t = u16::from_be_bytes(t);
                prefilter::turned_away(&Loads(&frame), 14, t, &prog.quick, VXLAN_PORT)
            });
            assert_eq!(away, away_by_words, "{filter}: {:?}", frame.0);
            assert!(
                !(away && reports),
                "{filter} turned away a packet it reports: {:?}",
                frame.0
            );
            turned_away += away as usize;
            reported += reports as usize;
            checked += 1;
        }
    }
    assert!(checked > 20_000, "{checked} frames checked");
    assert!(
        turned_away > checked / 20,
        "{turned_away} of {checked} turned away"
    );
    assert!(reported > checked / 20, "{reported} of {checked} reported");
}
