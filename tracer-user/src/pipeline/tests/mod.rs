use std::net::IpAddr;

use tracer_common::{Event, NfEvent, backend, dir, kind, l3, pkt_flags, proto};

use super::*;
use crate::events::set_ip;
use crate::facts::{NodeFacts, RouteFact, ifkey};
use crate::model::{
    Attribution, Backend, Code, Diagnosis, Dir, DropRecord, Hook, Hop, LinkPoint, NetfilterInfo,
    NfVerdict, Stage,
};

mod benign;
mod encap;
mod hooks;

const NODE: u32 = 100;
const ETH0: u32 = 2;
const CALI: u32 = 5;
const NF_HOOK_SLOW: u64 = 0xffff_0000;
const IP_FORWARD: u64 = 0xffff_1000;

fn facts() -> NodeFacts {
    let mut f = NodeFacts {
        netns: NODE,
        kernel: "6.12.0".into(),
        ..Default::default()
    };
    f.ifnames.insert(ifkey(NODE, ETH0), "eth0".into());
    f.ifnames.insert(ifkey(NODE, CALI), "cali1234".into());
    f.reasons.insert(2, "NOT_SPECIFIED".into());
    f.reasons.insert(5, "NETFILTER_DROP".into());
    f.reasons.insert(6, "IP_INHDR".into());
    f.symbols.insert(NF_HOOK_SLOW, "nf_hook_slow".into());
    f.symbols.insert(IP_FORWARD, "ip_forward".into());
    f.local_addrs.insert("192.168.1.2".parse().unwrap());
    f
}

fn pipeline(f: NodeFacts) -> Pipeline {
    Pipeline::new(Environment::replay(f), Options::default())
}

fn icmp(src: &str, dst: &str, id: u16, ttl: u8) -> tracer_common::PacketMeta {
    let mut p = tracer_common::PacketMeta {
        l3: l3::IPV4,
        proto: proto::ICMP,
        ttl,
        ip_id: id,
        icmp_type: 8,
        flags: pkt_flags::L4,
        ..Default::default()
    };
    set_ip(&mut p.src, src.parse::<IpAddr>().unwrap());
    set_ip(&mut p.dst, dst.parse::<IpAddr>().unwrap());
    p
}

fn tc(ts: u64, ifindex: u32, direction: u8, pkt: tracer_common::PacketMeta) -> Input {
    Input::Event(Event {
        ts_ns: ts,
        kind: kind::TC,
        dir: direction,
        ifindex,
        netns: NODE,
        pkt,
        ..Default::default()
    })
}

fn drop(ts: u64, reason: u32, location: u64, pkt: tracer_common::PacketMeta) -> Input {
    Input::Event(Event {
        ts_ns: ts,
        kind: kind::DROP,
        reason,
        location,
        ifindex: ETH0,
        netns: NODE,
        pkt,
        ..Default::default()
    })
}

fn arp(ts: u64, ifindex: u32, op: u16, direction: u8, sender: &str, target: &str) -> Input {
    let mut p = tracer_common::PacketMeta {
        l3: l3::ARP,
        arp_op: op,
        ..Default::default()
    };
    set_ip(&mut p.src, sender.parse::<IpAddr>().unwrap());
    set_ip(&mut p.dst, target.parse::<IpAddr>().unwrap());
    tc(ts, ifindex, direction, p)
}

fn run(p: &mut Pipeline, inputs: &[Input]) -> Vec<Record> {
    let mut out = Vec::new();
    for i in inputs {
        p.process(i, &mut out);
    }
    p.finish(&mut out);
    out
}

fn diagnoses(out: &[Record]) -> Vec<&crate::model::Diagnosis> {
    out.iter()
        .filter_map(|r| match r {
            Record::Diagnosis(d) => Some(d),
            _ => None,
        })
        .collect()
}

fn drops(out: &[Record]) -> Vec<&DropRecord> {
    out.iter()
        .filter_map(|r| match r {
            Record::Drop(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn forward_drop_by_legacy_is_inferred_with_journey_and_one_diagnosis() {
    let mut p = pipeline(facts());
    let pkt = icmp("10.244.1.10", "10.244.2.10", 7, 63);
    let out = run(
        &mut p,
        &[
            tc(1_000, ETH0, dir::INGRESS, pkt),
            drop(
                2_000,
                5,
                NF_HOOK_SLOW,
                icmp("10.244.1.10", "10.244.2.10", 7, 62),
            ),
        ],
    );
    let d = drops(&out);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].reason.as_str(), d[0].stage),
        ("NETFILTER_DROP", Stage::Netfilter)
    );
    let nf = d[0].netfilter.as_ref().unwrap();
    assert_eq!(
        (nf.backend, nf.hook, nf.attribution),
        (
            Some(Backend::Legacy),
            Some(Hook::Forward),
            Attribution::Inferred
        )
    );
    assert_eq!(d[0].journey.len(), 1, "the tc sighting of the same packet");
    let diags = diagnoses(&out);
    assert_eq!(diags.len(), 1);
    assert_eq!((diags[0].code, diags[0].count), (Code::NetfilterDrop, 1));
    assert!(
        matches!(out.iter().position(|r| matches!(r, Record::Drop(_))), Some(i) if matches!(out[i + 1], Record::Diagnosis(_))),
        "drop, then its diagnosis"
    );
}

#[test]
fn without_drop_reasons_the_location_tells_reason_stage_and_not_the_backend() {
    // 5.10: no reasons, nf_tables and x_tables drops both end in nf_hook_slow.
    let mut f = facts();
    f.reasons.clear();
    f.kernel = "5.10.0-32-cloud-amd64".into();
    const RCV_FINISH: u64 = 0xffff_2000;
    const MYSTERY: u64 = 0xffff_3000;
    f.symbols
        .insert(RCV_FINISH, "ip_rcv_finish_core.constprop.0".into());
    f.symbols.insert(MYSTERY, "some_function".into());
    let rp = crate::kernel::system::iface_sysctl_key("ipv4", "conf", "eth0", "rp_filter");
    f.sysctls.insert(rp, "1".into());
    let mut p = pipeline(f);
    let out = run(
        &mut p,
        &[
            drop(
                1_000,
                0,
                NF_HOOK_SLOW,
                icmp("10.244.1.10", "10.244.2.10", 1, 62),
            ),
            drop(
                2_000,
                0,
                IP_FORWARD,
                icmp("10.244.1.10", "10.244.2.10", 2, 1),
            ),
            drop(
                3_000,
                0,
                RCV_FINISH,
                icmp("10.244.1.10", "10.244.2.10", 3, 63),
            ),
            drop(4_000, 0, MYSTERY, icmp("10.244.1.10", "10.244.2.10", 4, 63)),
        ],
    );
    let d = drops(&out);
    let got: Vec<_> = d
        .iter()
        .map(|d| (d.reason.as_str(), d.stage, d.reason_from_location))
        .collect();
    assert_eq!(
        got,
        [
            ("NETFILTER_DROP", Stage::Netfilter, true),
            ("IP_INHDR", Stage::Ttl, true),
            ("IP_RPFILTER", Stage::RpFilter, true),
            ("NOT_SPECIFIED", Stage::Other, true),
        ]
    );
    let nf = d[0].netfilter.as_ref().unwrap();
    assert_eq!(
        (nf.backend, nf.hook, nf.attribution),
        (None, Some(Hook::Forward), Attribution::Inferred),
        "nf_hook_slow does not tell the backend before 6.8"
    );
    let codes: Vec<_> = diagnoses(&out).iter().map(|d| d.code).collect();
    assert!(
        codes.contains(&Code::RpFilter) && codes.contains(&Code::RoutingLoop),
        "{codes:?}"
    );
    assert!(
        out.iter().all(|r| !format!("{r:?}").contains("REASON_")),
        "no made-up reason names"
    );
}

/// A table walk's verdict (exact probes) on `pkt` in the node's netns.
fn walk_verdict(
    ts: u64,
    which: u8,
    hook: u8,
    verdict: u32,
    table_chain: (&str, &str),
    pkt: tracer_common::PacketMeta,
) -> NfEvent {
    let mut nf = NfEvent {
        hook,
        pf: 2,
        backend: which,
        ..Default::default()
    };
    nf.ev = Event {
        ts_ns: ts,
        kind: kind::VERDICT,
        reason: verdict,
        netns: NODE,
        pkt,
        ..Default::default()
    };
    let (table, chain) = table_chain;
    nf.table[..table.len()].copy_from_slice(table.as_bytes());
    nf.chain[..chain.len()].copy_from_slice(chain.as_bytes());
    nf
}

#[test]
fn an_exact_verdict_names_table_and_chain() {
    let mut p = pipeline(facts());
    let pkt = icmp("10.244.1.10", "10.244.2.10", 9, 63);
    let nf = walk_verdict(1_500, backend::NFT, 2, 0, ("filter", "FORWARD"), pkt);
    let out = run(&mut p, &[Input::Verdict(nf), drop(2_000, 5, 0xdead, pkt)]);
    let nfi = drops(&out)[0].netfilter.clone().unwrap();
    assert_eq!(nfi, exact_nft_forward("filter", "FORWARD"));
}

/// What an nf_tables walk at FORWARD names of itself.
fn exact_nft_forward(table: &str, chain: &str) -> NetfilterInfo {
    NetfilterInfo {
        backend: Some(Backend::Nft),
        table: Some(table.into()),
        chain: Some(chain.into()),
        hook: Some(Hook::Forward),
        attribution: Attribution::Exact,
        ..Default::default()
    }
}

#[test]
fn verdict_lines_only_when_asked() {
    let pkt = icmp("10.0.0.1", "10.0.0.2", 1, 64);
    let nf = walk_verdict(1, backend::LEGACY, 1, 1, ("filter", ""), pkt);
    let out = run(&mut pipeline(facts()), &[Input::Verdict(nf)]);
    assert!(out.is_empty());
    let mut p = Pipeline::new(
        Environment::replay(facts()),
        Options {
            verdicts: true,
            ..Options::default()
        },
    );
    let out = run(&mut p, &[Input::Verdict(nf)]);
    assert!(
        matches!(&out[0], Record::Verdict(v) if v.verdict == NfVerdict::Accept && v.netfilter.hook == Some(Hook::Input))
    );
}

/// The looping packet's TTL runs out after `inputs`: the one diagnosis.
fn loop_ends(p: &mut Pipeline, mut inputs: Vec<Input>) -> Diagnosis {
    inputs.push(drop(
        100,
        6,
        IP_FORWARD,
        icmp("10.244.1.10", "10.244.2.10", 3, 1),
    ));
    let out = run(p, &inputs);
    let d = diagnoses(&out);
    assert_eq!(d[0].code, Code::RoutingLoop);
    d[0].clone()
}

#[test]
fn ttl_running_out_in_forward_is_a_routing_loop() {
    let mut f = facts();
    f.routes.insert(
        "10.244.2.10".parse().unwrap(),
        RouteFact::Via("eth0".into()),
    );
    let mut p = pipeline(f);
    let mut inputs = Vec::new();
    for (i, ttl) in [5u8, 3, 1].iter().enumerate() {
        inputs.push(tc(
            i as u64 * 10,
            ETH0,
            dir::INGRESS,
            icmp("10.244.1.10", "10.244.2.10", 3, *ttl),
        ));
    }
    let d = loop_ends(&mut p, inputs);
    assert!(
        d.summary.contains("seen 3 times") && d.summary.contains("out of eth0"),
        "{}",
        d.summary
    );
}

#[test]
fn unanswered_gateway_arp_with_proxy_arp_off() {
    let mut f = facts();
    f.sysctls
        .insert("net.ipv4.conf.cali1234.proxy_arp".into(), "0".into());
    let mut p = pipeline(f);
    let out = run(
        &mut p,
        &[
            arp(0, CALI, 1, dir::INGRESS, "10.244.1.10", "169.254.1.1"),
            arp(
                500_000_000,
                CALI,
                1,
                dir::INGRESS,
                "10.244.1.10",
                "169.254.1.1",
            ),
            Input::Tick(1_200_000_000),
        ],
    );
    let d = diagnoses(&out);
    assert_eq!(d.len(), 1, "{out:?}");
    assert_eq!(
        (d[0].code, d[0].ifname.as_deref(), d[0].target.as_deref()),
        (
            Code::ProxyArpDisabled,
            Some("cali1234"),
            Some("169.254.1.1")
        )
    );
    assert_eq!(d[0].count, 2);
    assert!(d[0].hint.contains("net.ipv4.conf.cali1234.proxy_arp=1"));
}

#[test]
fn unanswered_gateway_arp_without_a_route_is_no_route() {
    let mut f = facts();
    f.sysctls
        .insert("net.ipv4.conf.cali1234.proxy_arp".into(), "1".into());
    f.routes
        .insert("169.254.1.1".parse().unwrap(), RouteFact::None);
    let out = run(
        &mut pipeline(f),
        &[
            arp(0, CALI, 1, dir::INGRESS, "10.244.1.10", "169.254.1.1"),
            Input::Tick(2_000_000_000),
        ],
    );
    assert_eq!(diagnoses(&out)[0].code, Code::NoRoute);
}

#[test]
fn answered_arp_is_healthy() {
    let out = run(
        &mut pipeline(facts()),
        &[
            arp(0, CALI, 1, dir::INGRESS, "10.244.1.10", "169.254.1.1"),
            arp(10, CALI, 2, dir::EGRESS, "169.254.1.1", "10.244.1.10"),
            Input::Tick(5_000_000_000),
        ],
    );
    assert!(diagnoses(&out).is_empty());
    assert_eq!(out.len(), 2, "just the two packets");
}

#[test]
fn diagnosis_updates_are_rate_limited_and_flushed_at_the_end() {
    let mut p = pipeline(facts());
    let mut out = Vec::new();
    for i in 0..10u64 {
        p.process(
            &drop(
                i * 10_000_000,
                5,
                NF_HOOK_SLOW,
                icmp("10.0.0.1", "10.0.0.2", i as u16, 60),
            ),
            &mut out,
        );
    }
    assert_eq!(diagnoses(&out).len(), 1, "updates wait for the interval");
    p.process(&Input::Tick(1_500_000_000), &mut out);
    let d = diagnoses(&out);
    assert_eq!(d.len(), 2);
    assert_eq!(d[1].count, 10);
    p.finish(&mut out);
    assert_eq!(diagnoses(&out).len(), 2, "nothing new to flush");
}

#[test]
fn distinct_problems_are_bounded() {
    use crate::diagnosis::MAX_PROBLEMS;
    let mut p = pipeline(facts());
    let mut out = Vec::new();
    let n = MAX_PROBLEMS as u32 + 1000;
    for i in 0..n {
        let dst = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
        p.process(
            &drop(
                u64::from(i) * 1000,
                5,
                NF_HOOK_SLOW,
                icmp("10.244.1.10", &dst, 1, 60),
            ),
            &mut out,
        );
    }
    let held = p.diagnoser.current();
    assert!(held.len() <= MAX_PROBLEMS, "{} problems held", held.len());
    assert_eq!(
        held.last().and_then(|d| d.dst),
        Some(std::net::Ipv4Addr::from(0x0a00_0000 + n - 1).into()),
        "the newest problem is kept"
    );
    assert_eq!(
        diagnoses(&out).len(),
        n as usize,
        "each new problem reported once"
    );
}

#[test]
fn route_lookup_frees_are_not_drops() {
    let mut f = facts();
    f.symbols.insert(0x42, "inet_rtm_getroute".into());
    let out = run(
        &mut pipeline(f),
        &[drop(1, 2, 0x42, icmp("0.0.0.0", "169.254.1.1", 0, 0))],
    );
    assert!(out.is_empty());
}

#[test]
fn replay_filter_applies_in_userspace() {
    let f = crate::filter::Filter::parse("host 10.0.0.9")
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
    let out = run(
        &mut p,
        &[
            tc(1, ETH0, dir::INGRESS, icmp("10.0.0.1", "10.0.0.2", 1, 64)),
            tc(2, ETH0, dir::INGRESS, icmp("10.0.0.9", "10.0.0.2", 1, 64)),
        ],
    );
    assert_eq!(out.len(), 1);
}

fn link_point(
    ts: u64,
    hook: u8,
    point: u8,
    priority: i32,
    pkt: tracer_common::PacketMeta,
) -> Input {
    let mut nf = NfEvent {
        hook,
        pf: 2,
        point,
        priority,
        ..Default::default()
    };
    nf.ev = Event {
        ts_ns: ts,
        kind: kind::HOOK,
        netns: NODE,
        pkt,
        ..Default::default()
    };
    Input::Verdict(nf)
}

fn point_hop(netns: u32, hook: Hook, point: LinkPoint) -> Hop {
    Hop {
        node: None,
        ts_ns: 0,
        netns,
        ifname: None,
        dir: Dir::Netfilter,
        ttl: None,
        netfilter: Some(NetfilterInfo {
            hook: Some(hook),
            attribution: Attribution::Exact,
            ..Default::default()
        }),
        verdict: None,
        point: Some(point),
        priority: None,
        outer: None,
    }
}

#[test]
fn the_hook_is_the_last_one_entered_and_not_left() {
    let tc_hop = |netns| Hop {
        node: None,
        ts_ns: 0,
        netns,
        ifname: Some("eth0".into()),
        dir: Dir::Ingress,
        ttl: None,
        netfilter: None,
        verdict: None,
        point: None,
        priority: None,
        outer: None,
    };
    let j = [
        tc_hop(NODE),
        point_hop(NODE, Hook::Prerouting, LinkPoint::Entry),
        point_hop(NODE, Hook::Prerouting, LinkPoint::Exit),
        point_hop(NODE, Hook::Input, LinkPoint::Entry),
    ];
    assert_eq!(hook_from_points(&j, NODE), Some(Hook::Input));
    assert_eq!(
        hook_from_points(&j[..3], NODE),
        None,
        "it left PREROUTING: the links do not know where it died"
    );
    let mut after = j.to_vec();
    after.push(point_hop(NODE, Hook::Input, LinkPoint::After));
    assert_eq!(hook_from_points(&after, NODE), Some(Hook::Input));
    assert_eq!(hook_from_points(&j, 9), None, "points of another netns");
    assert_eq!(hook_from_points(&[tc_hop(NODE)], NODE), None);
    // A second pass (a loop): only the latest points count.
    let mut again = j[..3].to_vec();
    again.extend([
        point_hop(NODE, Hook::Forward, LinkPoint::Entry),
        point_hop(NODE, Hook::Forward, LinkPoint::Exit),
        point_hop(NODE, Hook::Prerouting, LinkPoint::Entry),
    ]);
    assert_eq!(hook_from_points(&again, NODE), Some(Hook::Prerouting));
}

#[test]
fn link_points_name_the_hook_of_an_inferred_drop() {
    use tracer_common::nf_point::{AFTER, ENTRY, EXIT};
    // To the node's own address: addresses alone would say INPUT, but
    // the packet never left PREROUTING (a raw table drop).
    let pkt = icmp("192.168.1.1", "192.168.1.2", 11, 64);
    let out = run(
        &mut pipeline(facts()),
        &[
            tc(1_000, ETH0, dir::INGRESS, pkt),
            link_point(1_100, 0, ENTRY, i32::MIN + 1, pkt),
            drop(1_200, 5, NF_HOOK_SLOW, pkt),
        ],
    );
    let d = drops(&out)[0];
    let nf = d.netfilter.as_ref().unwrap();
    assert_eq!(
        (nf.hook, nf.attribution),
        (Some(Hook::Prerouting), Attribution::Inferred)
    );
    let hop = &d.journey[1];
    assert_eq!(
        (hop.dir, hop.point, hop.verdict),
        (Dir::Netfilter, Some(LinkPoint::Entry), None)
    );
    assert_eq!(hop.label(None).to_string(), "PREROUTING entry");
    let json = serde_json::to_value(hop).unwrap();
    assert_eq!(json["netfilter"]["family"], "ip", "nft's name, not serde's");

    // Into INPUT and past the table at -5, with the packet's own hops.
    let pkt = icmp("192.168.1.1", "192.168.1.2", 12, 64);
    let out = run(
        &mut pipeline(facts()),
        &[
            link_point(1_000, 0, ENTRY, i32::MIN + 1, pkt),
            link_point(1_010, 0, EXIT, i32::MAX - 1, pkt),
            link_point(1_020, 1, ENTRY, i32::MIN + 1, pkt),
            link_point(1_030, 1, AFTER, -4, pkt),
            drop(1_200, 5, NF_HOOK_SLOW, pkt),
        ],
    );
    let d = drops(&out)[0];
    assert_eq!(d.netfilter.as_ref().unwrap().hook, Some(Hook::Input));
    let labels: Vec<String> = d
        .journey
        .iter()
        .map(|h| h.label(Some(NODE)).to_string())
        .collect();
    assert_eq!(
        labels,
        [
            "PREROUTING entry",
            "PREROUTING exit",
            "INPUT entry",
            "INPUT after priority -5"
        ]
    );
    let json = serde_json::to_value(&d.journey[3]).unwrap();
    assert_eq!(
        (
            &json["point"],
            &json["priority"],
            &json["netfilter"]["hook"]
        ),
        (&"after".into(), &(-5).into(), &"INPUT".into())
    );
    assert!(
        json.get("verdict").is_none(),
        "a link point is not a verdict"
    );
    assert!(
        diagnoses(&out).iter().all(|x| x.code != Code::RoutingLoop),
        "{out:?}"
    );
}

#[test]
fn link_points_make_no_records_and_no_verdicts() {
    let pkt = icmp("10.0.0.1", "10.0.0.2", 1, 64);
    let mut p = Pipeline::new(
        Environment::replay(facts()),
        Options {
            verdicts: true,
            ..Options::default()
        },
    );
    let out = run(
        &mut p,
        &[link_point(
            1,
            2,
            tracer_common::nf_point::ENTRY,
            i32::MIN + 1,
            pkt,
        )],
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_loop_is_counted_in_interfaces_not_netfilter_points() {
    use tracer_common::nf_point::{ENTRY, EXIT};
    let mut f = facts();
    f.routes.insert(
        "10.244.2.10".parse().unwrap(),
        RouteFact::Via("eth0".into()),
    );
    let mut p = pipeline(f);
    let mut inputs = Vec::new();
    for (i, ttl) in [5u8, 3].iter().enumerate() {
        let pkt = icmp("10.244.1.10", "10.244.2.10", 3, *ttl);
        let t = i as u64 * 10;
        inputs.push(tc(t, ETH0, dir::INGRESS, pkt));
        inputs.push(link_point(t + 1, 0, ENTRY, i32::MIN + 1, pkt));
        inputs.push(link_point(t + 2, 0, EXIT, i32::MAX - 1, pkt));
        inputs.push(tc(t + 3, ETH0, dir::EGRESS, pkt));
    }
    let d = loop_ends(&mut p, inputs);
    assert!(d.summary.contains("seen 4 times"), "{}", d.summary);
}

/// A legacy filter table whose FORWARD policy (DROP) has counted `n` packets.
fn forward_policy(n: u64) -> crate::netfilter::Inventory {
    use crate::netfilter::{Backend, Chain, Counters, Family, Hook, Inventory, Table, Verdict};
    Inventory {
        tables: vec![Table {
            backend: Backend::Legacy,
            family: Family::Ipv4,
            name: "filter".into(),
            chains: vec![Chain {
                name: "FORWARD".into(),
                hook: Some(Hook::Forward),
                priority: Some(0),
                policy: Some(Verdict::Drop),
                policy_counters: Some(Counters {
                    packets: n,
                    bytes: 0,
                }),
                rules: vec![],
            }],
        }],
        errors: vec![],
        traces: vec![],
    }
}

#[test]
fn a_drop_counted_before_the_last_reading_is_still_attributed() {
    use crate::facts::Fact;
    let mut f = facts();
    f.netfilter = Some(forward_policy(0));
    let mut p = pipeline(f);
    let pkt = |id| icmp("10.244.1.10", "10.244.2.10", id, 62);
    let reading = |n| Fact::Netfilter {
        inventory: Box::new(forward_policy(n)),
    };
    let mut out = Vec::new();
    p.process(&drop(0, 5, NF_HOOK_SLOW, pkt(1)), &mut out);
    // The second packet is counted before this reading, its event comes after.
    p.env.apply(&reading(2));
    p.process(&Input::Tick(300 * MS), &mut out);
    p.process(&drop(310 * MS, 5, NF_HOOK_SLOW, pkt(2)), &mut out);
    p.env.apply(&reading(2));
    p.process(&Input::Tick(700 * MS), &mut out);
    let d = drops(&out);
    assert_eq!(d.len(), 2);
    for drop in d {
        let nf = drop.netfilter.as_ref().unwrap();
        assert_eq!(
            (nf.chain.as_deref(), nf.rule.as_deref()),
            (Some("FORWARD"), Some("policy DROP")),
            "{drop:?}"
        );
    }
}

#[test]
fn an_nft_walk_that_freed_the_packet_itself_names_the_drop_exactly() {
    // Newer kernels: nft_do_chain frees the packet (kfree_skb inside it)
    // and returns NF_STOLEN, so the walk's verdict comes after the drop.
    const NFT_DO_CHAIN: u64 = 0xffff_2000;
    let mut f = facts();
    f.symbols.insert(NFT_DO_CHAIN, "nft_do_chain".into());
    f.netfilter = Some(forward_policy(0));
    let mut p = pipeline(f);
    let pkt = icmp("10.244.1.10", "10.244.2.10", 7, 62);
    let walk = |ts, verdict| {
        Input::Verdict(walk_verdict(
            ts,
            backend::NFT,
            2,
            verdict,
            ("mine", "fwd"),
            pkt,
        ))
    };
    let mut out = Vec::new();
    // An earlier walk of another table accepted it: not the dropper.
    p.process(&walk(900, 1), &mut out);
    p.process(&drop(1_000, 5, NFT_DO_CHAIN, pkt), &mut out);
    p.process(&walk(1_100, 2), &mut out);
    p.process(&Input::Tick(500 * MS), &mut out);
    let d = drops(&out);
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].netfilter.as_ref(),
        Some(&exact_nft_forward("mine", "fwd"))
    );
    assert_eq!(
        d[0].journey.last().and_then(|h| h.verdict),
        Some(NfVerdict::Stolen)
    );
    assert_eq!(p.nf_drops_inferred, 0, "an exact drop needs no link points");
}
