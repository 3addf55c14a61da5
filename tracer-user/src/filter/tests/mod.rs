//! Tests of FILTER: parsing, errors, the compiled program, what matches, and
//! randomized agreement between the AST and the program.

mod compiling;
mod errors;
mod parsing;
mod random;
mod semantics;

use std::net::IpAddr;

use tracer_common::filter::matches as prog_matches;
use tracer_common::filter::{FilterInsn, FilterProg, MAX_INSNS, op};
use tracer_common::{PacketMeta, l3, pkt_flags, proto};

use super::{Filter, FilterError};

fn ip(s: &str) -> (u8, [u8; 16]) {
    let mut a = [0u8; 16];
    match s.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v) => {
            a[..4].copy_from_slice(&v.octets());
            (l3::IPV4, a)
        }
        IpAddr::V6(v) => (l3::IPV6, v.octets()),
    }
}

/// A TCP/UDP/ICMP packet between `src` and `dst` (family from the address).
fn pkt(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> PacketMeta {
    let (l3, src) = ip(src);
    let (_, dst) = ip(dst);
    PacketMeta {
        src,
        dst,
        l3,
        proto,
        flags: pkt_flags::L4,
        sport,
        dport,
        ..Default::default()
    }
}

fn arp(sender: &str, target: &str) -> PacketMeta {
    let (_, src) = ip(sender);
    let (_, dst) = ip(target);
    PacketMeta {
        src,
        dst,
        l3: l3::ARP,
        arp_op: 1,
        ..Default::default()
    }
}

/// Matches through the compiled program, checking that the AST agrees.
fn m(filter: &str, p: &PacketMeta) -> bool {
    let f = Filter::parse(filter).unwrap_or_else(|e| panic!("{}", e.with_caret()));
    let prog = f.compile().unwrap();
    let r = prog_matches(&prog, p);
    assert_eq!(
        r,
        f.matches(p),
        "AST and program disagree on {filter:?} for {p:?}"
    );
    r
}

fn err(filter: &str) -> FilterError {
    match Filter::parse(filter) {
        Ok(f) => panic!("{filter:?} parsed as {f}"),
        Err(e) => e,
    }
}

fn canon(filter: &str) -> String {
    Filter::parse(filter)
        .unwrap_or_else(|e| panic!("{}", e.with_caret()))
        .to_string()
}
