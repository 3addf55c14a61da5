//! Records for unit tests of the layers above: a ping from pod A to pod B
//! and the places that drop it.

use super::{Attribution, Backend, Detail, DropRecord, Flow, Hook, NetfilterInfo, Proto, Stage};

pub const POD_A: &str = "10.244.1.10";
pub const POD_B: &str = "10.244.2.10";

pub fn icmp_flow(src: &str, dst: &str) -> Flow {
    Flow {
        src: Some(src.into()),
        dst: Some(dst.into()),
        proto: Some(Proto::Icmp),
        sport: None,
        dport: None,
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

/// A ping from pod A to pod B dropped on `eth0` at `stage` for `reason`.
pub fn ping_drop(stage: Stage, reason: &str, netfilter: Option<NetfilterInfo>) -> DropRecord {
    DropRecord {
        node: None,
        ts_ns: 1_000,
        netns: 100,
        ifname: Some("eth0".into()),
        flow: icmp_flow(POD_A, POD_B),
        reason: reason.into(),
        reason_from_location: false,
        location: Some("nf_hook_slow".into()),
        stage,
        netfilter,
        detail: Detail {
            ttl: Some(63),
            ip_id: Some(1),
            len: 84,
            icmp: None,
            arp: None,
        },
        pod: None,
        journey: vec![],
        benign: None,
    }
}
