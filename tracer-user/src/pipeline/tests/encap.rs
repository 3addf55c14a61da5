//! Encapsulated packets: one journey by the inner packet's key, the outer
//! headers on the sightings and records, and the filter on either.

use tracer_common::{EncapEvent, OuterMeta, encap};

use super::*;
use crate::model::{Encap, Outer, PacketRecord};

const POD_A: &str = "10.244.1.10";
const POD_B: &str = "10.244.2.10";

/// The ping as it arrives on node B's `eth0` from node A, in VXLAN.
fn vxlan_ingress(ts: u64, pkt: tracer_common::PacketMeta) -> Input {
    let mut outer = OuterMeta {
        l3: l3::IPV4,
        proto: proto::UDP,
        encap: encap::VXLAN,
        ttl: 64,
        sport: 41000,
        dport: 4789,
        len: pkt.len + 50,
        vni: 4096,
        ..Default::default()
    };
    set_ip(&mut outer.src, "192.168.7.1".parse().unwrap());
    set_ip(&mut outer.dst, "192.168.7.2".parse().unwrap());
    let Input::Event(ev) = tc(ts, ETH0, dir::INGRESS, pkt) else {
        unreachable!()
    };
    Input::Encap(EncapEvent {
        ev: Event {
            kind: kind::TC_ENCAP,
            ..ev
        },
        outer,
    })
}

fn ping() -> tracer_common::PacketMeta {
    let mut p = icmp(POD_A, POD_B, 77, 63);
    p.len = 84;
    p
}

fn packets(out: &[Record]) -> Vec<&PacketRecord> {
    out.iter()
        .filter_map(|r| match r {
            Record::Packet(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn a_drop_after_the_tunnel_has_the_uplink_hop_with_its_outer_headers() {
    let out = run(
        &mut pipeline(facts()),
        &[
            vxlan_ingress(1_000, ping()),
            drop(2_000, 5, NF_HOOK_SLOW, ping()),
        ],
    );
    let p = packets(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].flow.src.map(|a| a.to_string()).as_deref(),
        Some(POD_A),
        "the inner packet"
    );
    let outer = p[0].outer.as_ref().expect("with its outer headers");
    assert_eq!(
        outer,
        &Outer {
            encap: Encap::Vxlan,
            src: Some("192.168.7.1".parse().unwrap()),
            dst: Some("192.168.7.2".parse().unwrap()),
            proto: Some(crate::model::Proto::Udp),
            dport: Some(4789),
            len: 134,
            vni: Some(4096),
        }
    );
    let d = drops(&out);
    assert_eq!(d.len(), 1);
    let hop = &d[0].journey[0];
    assert_eq!(
        hop.outer.as_ref(),
        Some(outer),
        "the journey keeps the outer headers"
    );
    assert_eq!(hop.label(Some(NODE)).to_string(), "eth0 ingress (VXLAN)");
}

#[test]
fn plain_and_encapsulated_sightings_of_one_packet_join_one_journey() {
    // Node A: the pod's packet on cali, then in the tunnel on eth0.
    let mut egress = vxlan_ingress(2_000, ping());
    if let Input::Encap(e) = &mut egress {
        e.ev.dir = dir::EGRESS;
    }
    let out = run(
        &mut pipeline(facts()),
        &[
            tc(1_000, CALI, dir::INGRESS, icmp(POD_A, POD_B, 77, 64)),
            egress,
            drop(3_000, 5, NF_HOOK_SLOW, ping()),
        ],
    );
    let labels: Vec<String> = drops(&out)[0]
        .journey
        .iter()
        .map(|h| h.label(Some(NODE)).to_string())
        .collect();
    assert_eq!(labels, ["cali1234 ingress", "eth0 egress (VXLAN)"]);
    assert!(drops(&out)[0].journey[0].outer.is_none());
}

#[test]
fn the_replay_filter_passes_an_encapsulated_packet_on_its_inner_or_outer_headers() {
    let seen = |filter: &str| {
        let f = crate::filter::Filter::parse(filter)
            .unwrap()
            .compile()
            .unwrap();
        let mut p = Pipeline::new(
            Environment::replay(facts()),
            Options {
                filter: Some(f),
                ..Options::default()
            },
        );
        packets(&run(&mut p, &[vxlan_ingress(1_000, ping())])).len()
    };
    assert_eq!(seen("host 10.244.2.10"), 1, "inner");
    assert_eq!(seen("icmp"), 1, "inner");
    assert_eq!(seen("host 192.168.7.1"), 1, "outer");
    assert_eq!(seen("udp port 4789"), 1, "outer");
    assert_eq!(seen("host 10.0.0.9"), 0);
    assert_eq!(seen("tcp"), 0);
}
