//! Benign drops: marked, counted by reason, never diagnosed; real drops
//! beside them unchanged.

use super::*;
use crate::model::Benign;

const VXLAN_XMIT: u64 = 0xffff_2000;
const SKB_QUEUE_PURGE: u64 = 0xffff_3000;
const NO_TX_TARGET: u32 = 90;
const QUEUE_PURGE: u32 = 91;

fn noisy_facts() -> NodeFacts {
    let mut f = facts();
    f.reasons.insert(NO_TX_TARGET, "NO_TX_TARGET".into());
    f.reasons.insert(QUEUE_PURGE, "QUEUE_PURGE".into());
    f.symbols.insert(VXLAN_XMIT, "vxlan_xmit".into());
    f.symbols
        .insert(SKB_QUEUE_PURGE, "skb_queue_purge_reason".into());
    f
}

/// An MLD report from the node's link-local address.
fn mld() -> tracer_common::PacketMeta {
    let mut p = tracer_common::PacketMeta {
        l3: l3::IPV6,
        proto: proto::ICMPV6,
        icmp_type: 143,
        flags: pkt_flags::L4,
        len: 76,
        ..Default::default()
    };
    set_ip(&mut p.src, "fe80::6463:74ff:fe6c:b".parse().unwrap());
    set_ip(&mut p.dst, "ff02::16".parse().unwrap());
    p
}

#[test]
fn benign_drops_are_marked_counted_and_never_diagnosed() {
    let mut p = pipeline(noisy_facts());
    let out = run(
        &mut p,
        &[
            drop(1_000, NO_TX_TARGET, VXLAN_XMIT, mld()),
            drop(2_000, NO_TX_TARGET, VXLAN_XMIT, mld()),
            drop(3_000, QUEUE_PURGE, SKB_QUEUE_PURGE, Default::default()),
            drop(
                4_000,
                5,
                NF_HOOK_SLOW,
                icmp("10.244.1.10", "10.244.2.10", 7, 62),
            ),
        ],
    );
    let d = drops(&out);
    let benign: Vec<Option<Benign>> = d.iter().map(|d| d.benign).collect();
    assert_eq!(
        benign,
        [
            Some(Benign::LinkLocal),
            Some(Benign::LinkLocal),
            Some(Benign::SocketClosed),
            None
        ]
    );
    let diags = diagnoses(&out);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0].code, Code::NetfilterDrop);
    let counted: Vec<(&str, u64)> = p.benign.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(counted, [("NO_TX_TARGET", 2), ("QUEUE_PURGE", 1)]);
    // A real drop's record does not say `benign` at all.
    let json = serde_json::to_value(Record::Drop(d[3].clone())).unwrap();
    assert!(json.get("benign").is_none(), "{json}");
    let json = serde_json::to_value(Record::Drop(d[0].clone())).unwrap();
    assert_eq!(json["benign"], "link_local");
    assert_eq!(json["proto"], "icmpv6");
}

#[test]
fn a_pod_packet_without_a_vxlan_target_is_still_reported() {
    let mut p = pipeline(noisy_facts());
    let pkt = icmp("10.244.1.10", "10.244.2.10", 9, 63);
    let out = run(&mut p, &[drop(1_000, NO_TX_TARGET, VXLAN_XMIT, pkt)]);
    let d = drops(&out);
    assert_eq!((d.len(), d[0].benign), (1, None));
    assert_eq!(diagnoses(&out)[0].code, Code::Other);
    assert!(p.benign.is_empty());
}
