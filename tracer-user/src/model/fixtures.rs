//! Records for unit tests of the layers above: a ping from pod A to pod B
//! and the places that drop it.

use super::{Attribution, Backend, Detail, DropRecord, Flow, Hook, NetfilterInfo, Proto, Stage};

pub const POD_A: &str = "10.244.1.10";
pub const POD_B: &str = "10.244.2.10";

/// An address written in a test.
pub fn ip(a: &str) -> std::net::IpAddr {
    a.parse().expect("a test's address")
}

pub fn icmp_flow(src: &str, dst: &str) -> Flow {
    Flow {
        src: Some(ip(src)),
        dst: Some(ip(dst)),
        proto: Some(Proto::Icmp),
        sport: None,
        dport: None,
        src_pod: None,
        dst_pod: None,
    }
}

/// What the links and the drop location tell of iptables-legacy's FORWARD.
pub fn legacy_forward() -> NetfilterInfo {
    NetfilterInfo {
        backend: Some(Backend::Legacy),
        hook: Some(Hook::Forward),
        attribution: Attribution::Inferred,
        ..Default::default()
    }
}

/// A VXLAN header between two nodes, around an 84-byte ping.
pub fn vxlan_outer() -> super::Outer {
    super::Outer {
        encap: super::Encap::Vxlan,
        src: Some(ip("192.168.7.1")),
        dst: Some(ip("192.168.7.2")),
        proto: Some(Proto::Udp),
        dport: Some(4789),
        len: 134,
        vni: Some(4096),
    }
}

/// An 84-byte ping's details, TTL 63.
pub fn ping_detail() -> Detail {
    Detail {
        ttl: Some(63),
        ip_id: Some(1),
        len: 84,
        icmp: None,
        arp: None,
    }
}

/// A ping from pod A to pod B dropped on `eth0` at `stage` for `reason`.
pub fn ping_drop(stage: Stage, reason: &str, netfilter: Option<NetfilterInfo>) -> DropRecord {
    DropRecord {
        node: None,
        ts_ns: 1_000,
        netns: 100,
        ifname: Some("eth0".into()),
        flow: icmp_flow(POD_A, POD_B),
        reason: super::DropReason::named(reason),
        reason_from_location: false,
        location: Some("nf_hook_slow".into()),
        stage,
        netfilter,
        detail: ping_detail(),
        pod: None,
        journey: vec![],
        benign: None,
        calico_ebpf: None,
    }
}

/// A packet seen by tc on interface `name` of namespace 100 (the
/// fixtures' node), TTL 64.
pub fn iface_hop(name: &str, dir: super::Dir) -> super::Hop {
    super::Hop {
        node: None,
        ts_ns: 1_000,
        netns: 100,
        ifname: Some(name.into()),
        dir,
        ttl: Some(64),
        netfilter: None,
        verdict: None,
        point: None,
        priority: None,
        outer: None,
    }
}
