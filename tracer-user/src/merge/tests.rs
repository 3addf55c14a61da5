//! The merge without a kernel: two nodes' streams made by hand.

use std::net::IpAddr;

use tracer_common::{Event, PacketMeta, dir, kind, l3, pkt_flags, proto};

use super::sightings::Identity;
use super::stage::NodeStage;
use super::{AgentState, Cluster};
use crate::events::{Input, set_ip};
use crate::facts::topology::{RouteEntry, Tunnel};
use crate::facts::{Fact, NodeFacts, Topology, ifkey};
use crate::model::{Code, Diagnosis, Dir, Encap, Record};
use crate::pipeline::Options;
use crate::recording::format::Header;
use crate::recording::reader::Item;

pub(super) const MS: u64 = 1_000_000;
pub(super) const NETNS: [u32; 2] = [100, 200];
pub(super) const ETH0: u32 = 2;
pub(super) const CALI: u32 = 5;
pub(super) const POD: [&str; 2] = ["10.244.1.10", "10.244.2.10"];

fn route(dst: &str, dev: &str) -> RouteEntry {
    RouteEntry {
        dst: dst.into(),
        dev: dev.into(),
        via: None,
    }
}

/// Node `i`: its pod behind `cali`, the other's block via `eth0` (or the
/// VXLAN device), tracing `interfaces`.
pub(super) fn header(i: usize, vxlan: bool, interfaces: &[&str]) -> Header {
    let other_block = if i == 0 {
        "10.244.2.0/26"
    } else {
        "10.244.1.0/26"
    };
    let mut facts = NodeFacts {
        node: format!("host-{i}"),
        netns: NETNS[i],
        topology: Topology {
            routes: vec![
                route(&format!("{}/32", POD[i]), "cali1"),
                route(other_block, if vxlan { "vxlan.calico" } else { "eth0" }),
                route("0.0.0.0/0", "eth0"),
            ],
            tunnels: if vxlan {
                vec![Tunnel {
                    name: "vxlan.calico".into(),
                    kind: "vxlan".into(),
                    remotes: vec![],
                }]
            } else {
                vec![]
            },
            uplinks: vec!["eth0".into()],
        },
        ..Default::default()
    };
    facts.ifnames.insert(ifkey(NETNS[i], ETH0), "eth0".into());
    facts.ifnames.insert(ifkey(NETNS[i], CALI), "cali1".into());
    Header {
        calitrace_version: "test".into(),
        kernel: "6.18".into(),
        node: facts.node.clone(),
        start_realtime_ns: 1_000_000 * MS,
        start_monotonic_ns: 0,
        event_size: tracer_common::EVENT_SIZE as u32,
        filter: String::new(),
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
        probes_attached: vec![],
        probes_unavailable: vec![],
        facts,
    }
}

pub(super) fn ping(from: usize, seq: u16, len: u32) -> PacketMeta {
    let mut p = PacketMeta {
        l3: l3::IPV4,
        proto: proto::ICMP,
        ttl: 63,
        ip_id: 1000 + seq,
        icmp_type: 8,
        sport: 7,
        dport: seq,
        flags: pkt_flags::L4,
        len,
        ..Default::default()
    };
    set_ip(&mut p.src, POD[from].parse::<IpAddr>().unwrap());
    set_ip(&mut p.dst, POD[1 - from].parse::<IpAddr>().unwrap());
    p
}

pub(super) fn tc(node: usize, ts: u64, ifindex: u32, d: u8, pkt: PacketMeta) -> Item {
    Item::Input(Input::Event(Event {
        ts_ns: ts,
        kind: kind::TC,
        dir: d,
        ifindex,
        netns: NETNS[node],
        pkt,
        ..Default::default()
    }))
}

pub(super) fn tick(ts: u64) -> Item {
    Item::Input(Input::Tick(ts))
}

struct Run {
    c: Cluster,
    out: Vec<Record>,
    /// The nodes' stages where they run beside the merge (as on the threads
    /// reading agents), not inside it.
    beside: Option<Vec<NodeStage>>,
    ended: [bool; 2],
}

impl Run {
    fn new(headers: [Header; 2]) -> Run {
        Run::with(headers, Options::default(), false)
    }

    fn with(headers: [Header; 2], opts: Options, beside: bool) -> Run {
        let names = ["node-a".to_string(), "node-b".to_string()];
        let mut r = Run {
            c: Cluster::new(&names, opts),
            out: Vec::new(),
            beside: beside.then(Vec::new),
            ended: [false; 2],
        };
        let stage_opts = r.c.stage_options();
        for (i, h) in headers.into_iter().enumerate() {
            match &mut r.beside {
                Some(stages) => {
                    stages.push(NodeStage::new(&h, &stage_opts));
                    r.c.start_staged(i, h, &mut r.out);
                }
                None => r.c.start(i, h, &mut r.out),
            }
        }
        r
    }

    fn direct() -> Run {
        Run::new([
            header(0, false, &["eth0", "cali1"]),
            header(1, false, &["eth0", "cali1"]),
        ])
    }

    fn feed(&mut self, node: usize, item: Item) {
        match &mut self.beside {
            Some(stages) => {
                let mut staged = Vec::new();
                stages[node].item(item, &mut staged);
                self.c.staged(node, staged, &mut self.out);
            }
            None => self.c.item(node, item, &mut self.out),
        }
    }

    /// Node `node`'s stream ended.
    fn end(&mut self, node: usize, why: Option<String>) {
        if let Some(stages) = &mut self.beside {
            let mut staged = Vec::new();
            stages[node].finish(&mut staged);
            self.c.staged(node, staged, &mut self.out);
        }
        self.ended[node] = true;
        self.c.ended(node, why, &mut self.out);
    }

    /// Node A sends ping `seq`; node B sees it arrive when `arrives`.
    fn ping(&mut self, ts: u64, seq: u16, len: u32, arrives: bool) {
        let p = ping(0, seq, len);
        self.feed(0, tc(0, ts, CALI, dir::INGRESS, p));
        self.feed(0, tc(0, ts + 10_000, ETH0, dir::EGRESS, p));
        if arrives {
            self.feed(1, tc(1, ts + 50_000, ETH0, dir::INGRESS, p));
        }
    }

    /// Both nodes' streams move on to `ts`.
    fn until(&mut self, ts: u64) {
        self.feed(0, tick(ts));
        self.feed(1, tick(ts));
    }

    fn finish(mut self) -> Vec<Record> {
        for n in 0..2 {
            if !self.ended[n] {
                self.end(n, None);
            }
        }
        self.c.finish(&mut self.out);
        self.out
    }
}

pub(super) fn diagnoses(out: &[Record]) -> Vec<&Diagnosis> {
    out.iter()
        .filter_map(|r| match r {
            Record::Diagnosis(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn packets_that_arrive_are_no_problem() {
    let mut r = Run::direct();
    for seq in 0..5 {
        r.ping(seq as u64 * 100 * MS, seq, 84, true);
    }
    r.until(3_000 * MS);
    let out = r.finish();
    assert!(diagnoses(&out).is_empty(), "{out:#?}");
    let nodes: Vec<Option<&str>> = out.iter().map(Record::node).collect();
    assert!(
        nodes.iter().all(|n| n.is_some()),
        "every record names its node"
    );
    assert!(
        out.iter()
            .any(|r| matches!(r, Record::Packet(p) if p.node.as_deref() == Some("node-b") && p.dir == Dir::Ingress))
    );
}

#[test]
fn each_nodes_stats_span_its_own_events() {
    let mut r = Run::direct();
    r.ping(500 * MS, 1, 84, true);
    r.feed(0, tick(2_500 * MS));
    r.feed(1, tick(1_000 * MS));
    let out = r.finish();
    let spans: Vec<(Option<&str>, f64)> = out
        .iter()
        .filter_map(|r| match r {
            Record::Stats(s) => Some((s.node.as_deref(), s.duration_s)),
            _ => None,
        })
        .collect();
    assert_eq!(spans.len(), 2, "{out:#?}");
    for (node, secs) in spans {
        let want = if node == Some("node-a") { 2.0 } else { 0.5 };
        assert!((secs - want).abs() < 0.01, "{node:?}: {secs} s, not {want}");
    }
}

#[test]
fn packets_that_never_arrive_are_an_underlay_drop() {
    let mut r = Run::direct();
    r.ping(0, 1, 84, true);
    r.ping(100 * MS, 2, 84, false);
    r.ping(200 * MS, 3, 84, false);
    r.until(900 * MS);
    assert!(
        diagnoses(&r.out).is_empty(),
        "nothing is lost before the window has passed on the receiver"
    );
    r.until(2_000 * MS);
    let out = r.finish();
    let d = diagnoses(&out);
    assert_eq!(d[0].code, Code::UnderlayDrop, "{d:#?}");
    assert_eq!(
        (
            d[0].src.map(|a| a.to_string()).as_deref(),
            d[0].dst.map(|a| a.to_string()).as_deref()
        ),
        (Some(POD[0]), Some(POD[1]))
    );
    let u = d[0].underlay.as_ref().unwrap();
    assert_eq!(
        (u.src_node.as_str(), u.dst_node.as_str(), u.encap),
        ("node-a", "node-b", Encap::None)
    );
    assert_eq!(d.last().unwrap().count, 2);
    assert!(
        d[0].hint.contains("source/destination checks"),
        "{}",
        d[0].hint
    );
    let json = serde_json::to_value(d[0]).unwrap();
    assert_eq!(
        (&json["code"], &json["src_node"], &json["encap"]),
        (&"UNDERLAY_DROP".into(), &"node-a".into(), &"none".into())
    );
}

#[test]
fn only_the_big_packets_lost_is_the_underlay_mtu() {
    let mut r = Run::new([
        header(0, true, &["eth0", "cali1"]),
        header(1, true, &["eth0", "cali1"]),
    ]);
    for seq in 0..3 {
        r.ping(seq as u64 * 100 * MS, seq, 84, true);
    }
    for seq in 3..6 {
        r.ping(seq as u64 * 100 * MS, seq, 1428, false);
    }
    r.until(3_000 * MS);
    let out = r.finish();
    let d = diagnoses(&out);
    let last = d.last().unwrap();
    assert_eq!(last.code, Code::UnderlayMtu, "{d:#?}");
    let u = last.underlay.as_ref().unwrap();
    assert_eq!(
        (u.encap, u.largest_delivered, u.smallest_lost),
        (Encap::Vxlan, Some(84 + 50), Some(1428 + 50))
    );
    assert!(last.hint.contains("at most 84"), "{}", last.hint);
}

#[test]
fn no_underlay_verdict_when_the_receiver_cannot_tell() {
    // Node B does not trace its uplink.
    let mut r = Run::new([
        header(0, false, &["eth0", "cali1"]),
        header(1, false, &["cali1"]),
    ]);
    r.ping(0, 1, 84, false);
    r.until(3_000 * MS);
    let c = &r.c;
    assert_eq!(
        c.undecided().get("its agent did not trace its uplink"),
        Some(&1)
    );
    assert!(diagnoses(&r.finish()).is_empty());

    // Node B lost events around the send.
    let mut r = Run::direct();
    r.feed(
        1,
        Item::Fact(Fact::Lost {
            ts_ns: 500 * MS,
            lost: 40,
        }),
    );
    r.ping(0, 1, 84, false);
    r.until(3_000 * MS);
    assert_eq!(r.c.undecided().get("its agent lost events then"), Some(&1));
    assert!(diagnoses(&r.finish()).is_empty());

    // Node B's agent ended before the window did.
    let mut r = Run::direct();
    r.ping(0, 1, 84, false);
    r.end(1, Some("exit status 1".into()));
    r.feed(0, tick(3_000 * MS));
    assert_eq!(
        r.c.nodes()[1].state,
        AgentState::Ended(Some("exit status 1".into()))
    );
    let out = r.finish();
    assert!(diagnoses(&out).is_empty(), "{out:#?}");
    assert!(
        out.iter().any(|r| matches!(r, Record::Stats(s) if s.node.as_deref() == Some("node-b") && s.exit.as_deref() == Some("exit status 1")))
    );
}

/// Node B drops node A's ping 1 in netfilter, after it crossed the underlay.
fn a_drop_on_the_receiver(beside: bool, opts: Options) -> Vec<Record> {
    let mut b = header(1, false, &["eth0", "cali1"]);
    b.facts.reasons.insert(5, "NETFILTER_DROP".into());
    let mut r = Run::with([header(0, false, &["eth0", "cali1"]), b], opts, beside);
    r.ping(0, 1, 84, true);
    r.feed(
        1,
        Item::Fact(Fact::Symbol {
            addr: 0xffff_0000,
            name: "nf_hook_slow".into(),
        }),
    );
    r.feed(
        1,
        Item::Input(Input::Event(Event {
            ts_ns: 80_000,
            kind: kind::DROP,
            reason: 5,
            location: 0xffff_0000,
            ifindex: ETH0,
            netns: NETNS[1],
            pkt: ping(0, 1, 84),
            ..Default::default()
        })),
    );
    r.ping(100 * MS, 2, 84, false);
    r.until(3_000 * MS);
    r.finish()
}

#[test]
fn a_drop_on_the_receiver_has_the_senders_points_first() {
    let out = a_drop_on_the_receiver(false, Options::default());
    assert_senders_points_first(&out);
    let d = diagnoses(&out);
    assert_eq!(d[0].code, Code::NetfilterDrop);
    assert_eq!(d[0].node.as_deref(), Some("node-b"));
    // Ping 2 was lost between the nodes; ping 1, dropped on B, was not.
    let underlay = d.iter().rfind(|d| d.code == Code::UnderlayDrop);
    assert_eq!(underlay.map(|d| d.count), Some(1), "{d:#?}");
}

#[test]
fn a_drop_read_before_the_senders_stream_still_gets_its_points() {
    let mut b = header(1, false, &["eth0", "cali1"]);
    b.facts.reasons.insert(7, "TC_EGRESS".into());
    let mut r = Run::with(
        [header(0, false, &["eth0", "cali1"]), b],
        Options::default(),
        false,
    );
    let p = ping(0, 1, 84);
    // Node B's agent is read ahead: its arrival and the drop at cali1 come
    // before node A's stream has reached that time.
    r.feed(1, tc(1, 50_000, ETH0, dir::INGRESS, p));
    r.feed(
        1,
        Item::Input(Input::Event(Event {
            ts_ns: 60_000,
            kind: kind::DROP,
            reason: 7,
            ifindex: CALI,
            netns: NETNS[1],
            pkt: p,
            ..Default::default()
        })),
    );
    r.feed(1, tick(20 * MS));
    assert!(
        !r.out.iter().any(|x| matches!(x, Record::Drop(_))),
        "the drop waits for node A's stream"
    );
    r.feed(0, tc(0, 0, CALI, dir::INGRESS, p));
    r.feed(0, tc(0, 10_000, ETH0, dir::EGRESS, p));
    r.until(3_000 * MS);
    let out = r.finish();
    assert_senders_points_first(&out);
}

/// The drop, on node B, with the points its ping passed on node A first.
fn assert_senders_points_first(out: &[Record]) {
    let drop = out
        .iter()
        .find_map(|r| match r {
            Record::Drop(d) => Some(d),
            _ => None,
        })
        .expect("the drop");
    assert_eq!(drop.node.as_deref(), Some("node-b"));
    let path: Vec<String> = drop
        .journey
        .iter()
        .map(|h| h.label(None).to_string())
        .collect();
    assert_eq!(
        path,
        [
            "node-a cali1 ingress",
            "node-a eth0 egress",
            "node-b eth0 ingress"
        ]
    );
}

#[test]
fn stages_beside_the_merge_give_the_same_records_as_inside_it() {
    for packets in [true, false] {
        let opts = Options {
            packets,
            ..Options::default()
        };
        let inside = a_drop_on_the_receiver(false, opts.clone());
        let beside = a_drop_on_the_receiver(true, opts);
        assert!(
            inside.iter().any(|r| matches!(r, Record::Drop(_)))
                && diagnoses(&inside)
                    .iter()
                    .any(|d| d.code == Code::UnderlayDrop),
            "{inside:#?}"
        );
        assert_eq!(inside, beside, "packets shown: {packets}");
    }
    let vxlan = |beside: bool| {
        let headers = [
            header(0, true, &["eth0", "cali1"]),
            header(1, true, &["eth0", "cali1"]),
        ];
        let mut r = Run::with(headers, Options::default(), beside);
        r.feed(
            1,
            Item::Fact(Fact::Lost {
                ts_ns: 2_500 * MS,
                lost: 3,
            }),
        );
        for seq in 0..6 {
            let len = if seq < 3 { 84 } else { 1428 };
            r.ping(seq as u64 * 100 * MS, seq, len, seq < 3);
        }
        r.until(4_000 * MS);
        r.finish()
    };
    assert_eq!(vxlan(false), vxlan(true));
}

#[test]
fn a_packets_point_is_the_hop_its_record_would_be() {
    let mut r = Run::direct();
    r.ping(0, 1, 84, true);
    let packets: Vec<_> = r
        .out
        .iter()
        .filter_map(|r| match r {
            Record::Packet(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(packets.len(), 3);
    for p in packets {
        let id = Identity::of(&p.flow, &p.detail);
        let hops =
            r.c.sightings
                .elsewhere(&id, "nowhere", u64::MAX, &r.c.names);
        assert!(hops.contains(&p.hop()), "{p:#?} not in {hops:#?}");
    }
}

#[test]
fn an_arrival_read_before_its_send_still_counts() {
    // Live, node B's stream may be read before node A's.
    let mut r = Run::direct();
    for seq in 0..3u16 {
        let ts = u64::from(seq) * 100 * MS;
        let p = ping(0, seq, 84);
        r.feed(1, tc(1, ts + 50_000, ETH0, dir::INGRESS, p));
        r.feed(0, tc(0, ts + 10_000, ETH0, dir::EGRESS, p));
    }
    r.until(3_000 * MS);
    let out = r.finish();
    assert!(diagnoses(&out).is_empty(), "{:#?}", diagnoses(&out));
}

#[test]
fn wireguard_packets_are_matched_by_their_outer_headers_and_timing() {
    let mut headers = [
        header(0, false, &["eth0", "cali1"]),
        header(1, false, &["eth0", "cali1"]),
    ];
    let node_ip = ["192.168.9.1", "192.168.9.2"];
    for (h, ip) in headers.iter_mut().zip(node_ip) {
        h.facts.local_addrs.insert(ip.parse().unwrap());
    }
    let mut r = Run::new(headers);
    // Encrypted: on the uplink only UDP to 51820 between the nodes shows.
    let wg = |ip_id: u16| {
        let mut p = PacketMeta {
            l3: l3::IPV4,
            proto: proto::UDP,
            ttl: 64,
            ip_id,
            sport: 51820,
            dport: 51820,
            flags: pkt_flags::L4,
            len: 148,
            ..Default::default()
        };
        set_ip(&mut p.src, node_ip[0].parse::<IpAddr>().unwrap());
        set_ip(&mut p.dst, node_ip[1].parse::<IpAddr>().unwrap());
        p
    };
    r.feed(0, tc(0, 0, ETH0, dir::EGRESS, wg(1)));
    r.feed(1, tc(1, 40_000, ETH0, dir::INGRESS, wg(1)));
    r.feed(0, tc(0, 100 * MS, ETH0, dir::EGRESS, wg(2)));
    r.until(3_000 * MS);
    let out = r.finish();
    let d = diagnoses(&out);
    assert_eq!(d.len(), 1, "{d:#?}");
    let u = d[0].underlay.as_ref().unwrap();
    assert_eq!(
        (
            u.encap,
            u.outer_dst.map(|a| a.to_string()).as_deref(),
            u.outer_dport
        ),
        (Encap::Wireguard, Some(node_ip[1]), Some(51820))
    );
    assert!(d[0].hint.contains("UDP 51820"), "{}", d[0].hint);
}

#[test]
fn pod_names_from_the_api_server_name_packets_and_underlay_diagnoses() {
    let mut r = Run::direct();
    let pod = |name: &str| crate::model::PodRef {
        namespace: "shop".into(),
        name: name.into(),
    };
    r.c.add_pod_names(
        [
            (POD[0].parse().unwrap(), pod("frontend-0")),
            (POD[1].parse().unwrap(), pod("backend-0")),
        ]
        .into(),
    );
    r.ping(0, 1, 84, true);
    r.ping(100 * MS, 2, 84, false);
    r.until(2_000 * MS);
    let out = r.finish();
    let d = diagnoses(&out);
    assert_eq!(d[0].code, Code::UnderlayDrop, "{d:#?}");
    assert_eq!(
        (d[0].src_pod.as_ref(), d[0].dst_pod.as_ref()),
        (Some(&pod("frontend-0")), Some(&pod("backend-0")))
    );
    assert!(out.iter().any(|r| matches!(
        r,
        Record::Packet(p) if p.flow.src_pod == Some(pod("frontend-0"))
    )));
}

#[test]
fn up_to_256_nodes_keep_at_most_8_single_node_journey_tables() {
    let single = Options::default().max_journeys;
    for nodes in [1, 2, 8, 9, 16, 64, 65, 128, 256] {
        let each = super::journeys_per_node(single, nodes);
        assert!(each <= single, "{nodes} nodes: {each} each");
        assert!(
            each * nodes <= 8 * single,
            "{nodes} nodes keep {} journeys in all",
            each * nodes
        );
    }
    assert_eq!(super::journeys_per_node(single, 2), single);
    assert_eq!(super::journeys_per_node(single, 1000), 512, "a floor");
}
