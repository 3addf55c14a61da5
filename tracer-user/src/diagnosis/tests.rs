//! One or more tests per diagnosis code, each driven by a drop record and
//! the facts a recording would carry (sysctls, routes, pods, rulesets).

use super::{Diagnoser, findings};
use crate::facts::{Environment, NodeFacts, PodInfo, RouteFact};
use crate::kernel::system::iface_sysctl_key;
use crate::model::{
    Attribution, Backend, CalicoPlacement, Code, Diagnosis, Dir, DropRecord, Hook, Hop,
    NetfilterInfo, Record, Stage, fixtures,
};
use crate::netfilter::{Chain, Family, Inventory, Table};

const NODE: u32 = 100;
const POD: u32 = 200;

fn env(f: NodeFacts) -> Environment {
    Environment::replay(NodeFacts { netns: NODE, ..f })
}

fn sysctl(f: &mut NodeFacts, ifname: &str, setting: &str, value: &str) {
    f.sysctls.insert(
        iface_sysctl_key("ipv4", "conf", ifname, setting),
        value.into(),
    );
}

fn drop_of(stage: Stage, reason: &str) -> DropRecord {
    let mut d = fixtures::ping_drop(stage, reason, None);
    d.netns = NODE;
    d.location = Some("somewhere".into());
    d.detail.len = 1500;
    d
}

fn netfilter_drop(nf: NetfilterInfo) -> DropRecord {
    DropRecord {
        netfilter: Some(nf),
        ..drop_of(Stage::Netfilter, "NETFILTER_DROP")
    }
}

fn legacy_forward_policy() -> NetfilterInfo {
    NetfilterInfo {
        backend: Some(Backend::Legacy),
        table: Some("filter".into()),
        chain: Some("FORWARD".into()),
        hook: Some(Hook::Forward),
        rule: Some("policy DROP".into()),
        attribution: Attribution::Inferred,
        family: Some(Family::Ipv4),
        ..Default::default()
    }
}

/// A ruleset whose only chain is one of Calico's, in `backend`.
fn calico_in(backends: &[Backend]) -> Inventory {
    Inventory {
        tables: backends
            .iter()
            .map(|b| Table {
                backend: *b,
                family: Family::Ipv4,
                name: "filter".into(),
                chains: vec![Chain {
                    name: "cali-FORWARD".into(),
                    ..Default::default()
                }],
            })
            .collect(),
        errors: vec![],
        traces: vec![],
    }
}

fn diagnose(d: &DropRecord, e: &mut Environment) -> Vec<Diagnosis> {
    findings(d, e).into_iter().map(|f| f.diagnosis).collect()
}

fn one(d: &DropRecord, f: NodeFacts) -> Diagnosis {
    let mut all = diagnose(d, &mut env(f));
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

#[test]
fn netfilter_drop_names_the_place_and_how_to_list_it() {
    let d = one(
        &netfilter_drop(legacy_forward_policy()),
        NodeFacts::default(),
    );
    assert_eq!(d.code, Code::NetfilterDrop);
    assert_eq!(
        (d.backend, d.table.as_deref(), d.hook, d.attribution),
        (
            Some(Backend::Legacy),
            Some("filter"),
            Some(Hook::Forward),
            Some(Attribution::Inferred)
        )
    );
    assert_eq!(
        d.summary,
        "10.244.1.10 > 10.244.2.10 dropped by netfilter: iptables-legacy table ip filter, chain FORWARD, hook FORWARD, rule policy DROP"
    );
    assert!(
        d.hint
            .starts_with("look at the DROP policy of chain FORWARD with `iptables-legacy-save -c`"),
        "{}",
        d.hint
    );
}

#[test]
fn netfilter_drop_of_an_unknown_backend_lists_both() {
    let nf = NetfilterInfo {
        hook: Some(Hook::Input),
        ..Default::default()
    };
    let d = one(&netfilter_drop(nf), NodeFacts::default());
    assert!(
        d.summary.ends_with("backend not known, hook INPUT"),
        "{}",
        d.summary
    );
    assert!(
        d.hint.contains("a DROP rule or a DROP policy in INPUT")
            && d.hint
                .contains("iptables-legacy-save -c; nft -a list ruleset"),
        "{}",
        d.hint
    );
}

#[test]
fn policy_drop_in_calico_chains() {
    let nf = NetfilterInfo {
        backend: Some(Backend::Nft),
        chain: Some("cali-pi-_abc".into()),
        ..Default::default()
    };
    let d = one(&netfilter_drop(nf.clone()), NodeFacts::default());
    assert_eq!(d.code, Code::PolicyDrop);
    assert!(d.hint.contains("NetworkPolicy"), "{}", d.hint);

    let unknown = NetfilterInfo {
        chain: Some("cali-to-wl-dispatch".into()),
        comment: Some("Unknown interface".into()),
        ..nf
    };
    let d = one(&netfilter_drop(unknown.clone()), NodeFacts::default());
    assert_eq!(d.code, Code::PolicyDrop);
    assert!(
        d.summary.contains("(\"Unknown interface\")"),
        "{}",
        d.summary
    );
    assert!(d.hint.contains("Felix has not programmed it"), "{}", d.hint);

    // Named by the counters: the rule as listed carries the comment, which
    // then appears once in the rule and once in the summary.
    let listed = NetfilterInfo {
        backend: Some(Backend::Legacy),
        table: Some("filter".into()),
        rule: Some("#1: -m comment --comment \"Unknown interface\" -j DROP".into()),
        ..unknown
    };
    let d = one(&netfilter_drop(listed), NodeFacts::default());
    assert_eq!(
        d.summary.matches("Unknown interface").count(),
        1,
        "{}",
        d.summary
    );
    let rule = d.rule.as_deref().unwrap_or("");
    assert_eq!(rule.matches("Unknown interface").count(), 1, "{rule}");
}

#[test]
fn backend_mismatch_when_calico_writes_the_other_backend() {
    let facts = NodeFacts {
        netfilter: Some(calico_in(&[Backend::Nft])),
        iptables_binary: Some(Backend::Nft),
        ..Default::default()
    };
    let all = diagnose(&netfilter_drop(legacy_forward_policy()), &mut env(facts));
    let codes: Vec<Code> = all.iter().map(|d| d.code).collect();
    assert_eq!(codes, [Code::NetfilterDrop, Code::IptablesBackendMismatch]);
    let m = &all[1];
    assert_eq!(
        (m.backend, m.calico_backend),
        (Some(Backend::Legacy), Some(CalicoPlacement::Nft))
    );
    assert!(
        m.hint.contains("set FELIX_IPTABLESBACKEND=NFT"),
        "{}",
        m.hint
    );
    let json = serde_json::to_value(m).unwrap();
    assert_eq!(
        (&json["code"], &json["calico_backend"], &json["hook"]),
        (
            &"IPTABLES_BACKEND_MISMATCH".into(),
            &"nft".into(),
            &"FORWARD".into()
        )
    );
}

#[test]
fn backend_mismatch_when_calico_chains_are_in_both() {
    let facts = NodeFacts {
        netfilter: Some(calico_in(&[Backend::Legacy, Backend::Nft])),
        ..Default::default()
    };
    let all = diagnose(&netfilter_drop(legacy_forward_policy()), &mut env(facts));
    let m = &all[1];
    assert_eq!(m.calico_backend, Some(CalicoPlacement::Both));
    assert!(
        m.summary.contains("exist in both iptables backends"),
        "{}",
        m.summary
    );
    assert!(
        m.hint.contains("remove the stale cali-* chains"),
        "{}",
        m.hint
    );
    assert!(
        m.hint.contains("this node's iptables is unknown"),
        "{}",
        m.hint
    );
}

#[test]
fn no_mismatch_when_calico_and_the_drop_share_a_backend() {
    let facts = NodeFacts {
        netfilter: Some(calico_in(&[Backend::Legacy])),
        ..Default::default()
    };
    let all = diagnose(&netfilter_drop(legacy_forward_policy()), &mut env(facts));
    assert_eq!(all.len(), 1, "{all:#?}");
}

#[test]
fn rp_filter_says_where_the_route_back_leaves() {
    let mut f = NodeFacts::default();
    sysctl(&mut f, "eth0", "rp_filter", "1");
    sysctl(&mut f, "all", "rp_filter", "0");
    f.routes.insert(
        "10.244.1.10".parse().unwrap(),
        RouteFact::Via("eth1".into()),
    );
    let d = one(&drop_of(Stage::RpFilter, "IP_RPFILTER"), f);
    assert_eq!(
        (d.code, d.ifname.as_deref()),
        (Code::RpFilter, Some("eth0"))
    );
    assert!(
        d.summary
            .ends_with("arriving on eth0: the route back to 10.244.1.10 leaves by eth1"),
        "{}",
        d.summary
    );
    assert!(
        d.hint.starts_with("rp_filter is 1 on eth0 and 0 for all"),
        "{}",
        d.hint
    );
}

#[test]
fn rp_filter_without_a_route_back() {
    let mut f = NodeFacts::default();
    f.routes
        .insert("10.244.1.10".parse().unwrap(), RouteFact::None);
    let d = one(&drop_of(Stage::RpFilter, "IP_RPFILTER"), f);
    assert!(
        d.summary.ends_with("there is no route back to 10.244.1.10"),
        "{}",
        d.summary
    );
    assert!(
        d.hint.starts_with("rp_filter is ? on eth0"),
        "unknown sysctls say so"
    );
}

#[test]
fn routing_loop_counts_interfaces_not_netfilter_points() {
    let hop = |dir| Hop {
        node: None,
        ts_ns: 0,
        netns: NODE,
        ifname: Some("eth0".into()),
        dir,
        ttl: None,
        netfilter: None,
        verdict: None,
        point: None,
        priority: None,
        outer: None,
    };
    let mut d = drop_of(Stage::Ttl, "IP_INHDR");
    d.journey = vec![hop(Dir::Ingress), hop(Dir::Netfilter), hop(Dir::Egress)];
    let mut f = NodeFacts::default();
    f.routes.insert(
        "10.244.2.10".parse().unwrap(),
        RouteFact::Via("eth0".into()),
    );
    let diag = one(&d, f);
    assert_eq!(diag.code, Code::RoutingLoop);
    assert!(
        diag.summary
            .contains("(seen 2 times here); this node routes it out of eth0"),
        "{}",
        diag.summary
    );
}

#[test]
fn no_route_names_the_destination() {
    let d = one(
        &drop_of(Stage::Routing, "IP_OUTNOROUTES"),
        NodeFacts::default(),
    );
    assert_eq!(d.code, Code::NoRoute);
    assert_eq!(
        d.summary,
        "no route to 10.244.2.10 on this node (IP_OUTNOROUTES)"
    );
    assert!(d.hint.contains("ip route get 10.244.2.10"), "{}", d.hint);
}

#[test]
fn neighbor_unreachable_on_the_node() {
    let d = one(
        &drop_of(Stage::Neighbor, "NEIGH_FAILED"),
        NodeFacts::default(),
    );
    assert_eq!(
        (d.code, d.ifname.as_deref()),
        (Code::NeighborUnreachable, Some("eth0"))
    );
    assert!(d.hint.contains("ip neigh show dev eth0"), "{}", d.hint);
}

/// A drop inside a pod whose cali interface is `cali1`.
fn pod_drop(f: &mut NodeFacts) -> DropRecord {
    f.pods.insert(
        POD,
        PodInfo {
            name: "pod-a".into(),
            host_iface: "cali1".into(),
        },
    );
    DropRecord {
        netns: POD,
        pod: Some("pod-a".into()),
        ..drop_of(Stage::Neighbor, "NEIGH_FAILED")
    }
}

#[test]
fn a_pods_unanswered_gateway_with_proxy_arp_off() {
    let mut f = NodeFacts::default();
    let d = pod_drop(&mut f);
    sysctl(&mut f, "cali1", "proxy_arp", "0");
    let diag = one(&d, f);
    assert_eq!(
        (diag.code, diag.ifname.as_deref(), diag.target.as_deref()),
        (Code::ProxyArpDisabled, Some("cali1"), Some("169.254.1.1"))
    );
    assert!(
        diag.hint
            .starts_with("`sysctl -w net.ipv4.conf.cali1.proxy_arp=1`"),
        "{}",
        diag.hint
    );
}

#[test]
fn a_pods_unanswered_gateway_without_a_node_route_is_no_route() {
    let mut f = NodeFacts::default();
    let d = pod_drop(&mut f);
    sysctl(&mut f, "cali1", "proxy_arp", "1");
    f.routes
        .insert("169.254.1.1".parse().unwrap(), RouteFact::None);
    let diag = one(&d, f);
    assert_eq!(
        (diag.code, diag.stage),
        (Code::NoRoute, Some(Stage::Routing))
    );
    assert!(
        diag.summary.contains("proxy ARP only answers"),
        "{}",
        diag.summary
    );
}

#[test]
fn a_pods_unanswered_gateway_with_proxy_arp_on_lists_what_else_to_check() {
    let mut f = NodeFacts::default();
    let d = pod_drop(&mut f);
    sysctl(&mut f, "cali1", "proxy_arp", "1");
    let diag = one(&d, f);
    assert_eq!(diag.code, Code::ProxyArpDisabled);
    assert!(
        diag.summary.ends_with("although proxy_arp is 1"),
        "{}",
        diag.summary
    );
    assert!(diag.hint.contains("arp_ignore"), "{}", diag.hint);
}

#[test]
fn mtu_exceeded_names_the_size() {
    let d = one(&drop_of(Stage::Mtu, "PKT_TOO_BIG"), NodeFacts::default());
    assert_eq!(d.code, Code::MtuExceeded);
    assert!(d.summary.contains("packet of 1500 bytes"), "{}", d.summary);
}

#[test]
fn other_names_reason_and_location() {
    for stage in [Stage::Tc, Stage::Socket, Stage::Other] {
        let d = one(&drop_of(stage, "NO_SOCKET"), NodeFacts::default());
        assert_eq!((d.code, d.stage), (Code::Other, Some(stage)));
        assert_eq!(
            d.summary,
            "10.244.1.10 > 10.244.2.10 dropped: NO_SOCKET in somewhere"
        );
    }
}

#[test]
fn one_problem_is_counted_not_repeated() {
    let mut dg = Diagnoser::new(1_000_000_000);
    let mut e = env(NodeFacts::default());
    let mut out = Vec::new();
    let d = drop_of(Stage::Routing, "IP_OUTNOROUTES");
    dg.on_drop(&d, &mut e, &mut out);
    dg.on_drop(
        &DropRecord {
            node: None,
            ts_ns: 2_000,
            ..d.clone()
        },
        &mut e,
        &mut out,
    );
    let mut other = d.clone();
    other.flow.dst = Some("10.244.3.10".parse().unwrap());
    other.ts_ns = 3_000;
    dg.on_drop(&other, &mut e, &mut out);
    assert_eq!(out.len(), 2, "each new problem reported once: {out:#?}");
    let counts: Vec<(Option<String>, u64)> = dg
        .current()
        .iter()
        .map(|d| (d.dst.map(|a| a.to_string()), d.count))
        .collect();
    assert_eq!(
        counts,
        [
            (Some("10.244.2.10".into()), 2),
            (Some("10.244.3.10".into()), 1)
        ]
    );
    dg.flush(0, true, &mut out);
    assert!(
        matches!(&out[2], Record::Diagnosis(d) if d.count == 2 && d.last_ts_ns == 2_000),
        "{:?}",
        out.get(2)
    );
}

#[test]
fn the_same_flow_dropped_by_two_rules_is_two_problems() {
    let mut dg = Diagnoser::new(0);
    let mut e = env(NodeFacts::default());
    let mut out = Vec::new();
    let a = legacy_forward_policy();
    let b = NetfilterInfo {
        rule: Some("#3: -j DROP".into()),
        ..a.clone()
    };
    dg.on_drop(&netfilter_drop(a), &mut e, &mut out);
    dg.on_drop(&netfilter_drop(b), &mut e, &mut out);
    assert_eq!(dg.current().len(), 2);
}

#[test]
fn a_diagnosis_cites_the_doctors_failed_check_that_explains_it() {
    use crate::model::{Check, CheckId};
    let mut f = NodeFacts::default();
    let d = pod_drop(&mut f);
    sysctl(&mut f, "cali1", "proxy_arp", "0");
    let mut dg = Diagnoser::new(0);
    dg.cite_checks(&[
        Check::fail(CheckId::ProxyArp, "proxy_arp is 0 on cali1"),
        Check::fail(CheckId::IpForward, "forwarding is off"),
        Check::warn(CheckId::Mtu, "not a failure: not cited"),
    ]);
    let mut out = Vec::new();
    dg.on_drop(&d, &mut env(f), &mut out);
    let Some(Record::Diagnosis(diag)) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(
        (diag.code, diag.check),
        (Code::ProxyArpDisabled, Some(CheckId::ProxyArp))
    );
    assert!(
        diag.hint
            .ends_with("(`calitrace doctor` check proxy_arp fails: proxy_arp is 0 on cali1)"),
        "{}",
        diag.hint
    );
}

#[test]
fn a_drop_in_either_side_of_a_dataplane_split_cites_the_dataplane_check() {
    use crate::model::{Check, CheckId, Owner};
    let split = Check::fail(
        CheckId::Dataplane,
        "Calico: nftables (table ip calico); kube-proxy: iptables-nft (chains in ip filter)",
    )
    .implicates(&[Owner::Calico, Owner::KubeProxy]);
    // kube-proxy's rules dropped it while Calico runs nftables.
    let kube = NetfilterInfo {
        backend: Some(Backend::Nft),
        chain: Some("KUBE-FORWARD".into()),
        rule: Some("handle 4: counter drop".into()),
        refusal: crate::model::Refusal {
            owner: Some(Owner::KubeProxy),
            ..Default::default()
        },
        ..legacy_forward_policy()
    };
    // Calico's policy dropped it, in `ip calico`, the table's owner unknown.
    let calico = NetfilterInfo {
        backend: Some(Backend::Nft),
        table: Some("calico".into()),
        chain: Some("filter-cali-tw-cali1".into()),
        rule: Some("handle 9: drop".into()),
        ..legacy_forward_policy()
    };
    // firewalld's reject is not the split's doing.
    let firewalld = NetfilterInfo {
        backend: Some(Backend::Nft),
        family: Some(Family::Inet),
        table: Some("firewalld".into()),
        chain: Some("filter_FORWARD".into()),
        refusal: crate::model::Refusal {
            owner: Some(Owner::Firewalld),
            ..Default::default()
        },
        ..legacy_forward_policy()
    };
    let cited = |checks: &[Check], nf: &NetfilterInfo| {
        let mut dg = Diagnoser::new(0);
        dg.cite_checks(checks);
        let mut out = Vec::new();
        dg.on_drop(
            &netfilter_drop(nf.clone()),
            &mut env(NodeFacts::default()),
            &mut out,
        );
        let Some(Record::Diagnosis(d)) = out.first() else {
            panic!("{out:?}")
        };
        (d.code, d.check, d.hint.clone())
    };
    let (code, check, hint) = cited(std::slice::from_ref(&split), &kube);
    assert_eq!(
        (code, check),
        (Code::NetfilterDrop, Some(CheckId::Dataplane))
    );
    assert!(
        hint.contains("check dataplane fails: Calico: nftables"),
        "{hint}"
    );
    let (code, check, _) = cited(std::slice::from_ref(&split), &calico);
    assert_eq!((code, check), (Code::PolicyDrop, Some(CheckId::Dataplane)));
    assert_eq!(cited(std::slice::from_ref(&split), &firewalld).1, None);
    // Calico's eBPF dataplane with kube-proxy: only kube-proxy's drops.
    let ebpf =
        Check::fail(CheckId::Dataplane, "kube-proxy beside eBPF").implicates(&[Owner::KubeProxy]);
    assert_eq!(cited(std::slice::from_ref(&ebpf), &calico).1, None);
    assert_eq!(cited(&[ebpf], &kube).1, Some(CheckId::Dataplane));
    // iptables_backend, which implicates nobody, still comes first.
    let backend = Check::fail(CheckId::IptablesBackend, "cali-* chains in both");
    assert_eq!(
        cited(&[split, backend], &kube).1,
        Some(CheckId::IptablesBackend)
    );
}

fn ebpf_drop(reason: &str, policy: Option<crate::model::PolicyRef>) -> DropRecord {
    let mut d = drop_of(Stage::Tc, "TC_EGRESS");
    d.ifname = Some("cali1a2b3c4d5e6".into());
    d.calico_ebpf = Some(Box::new(crate::model::CalicoEbpfDrop {
        reason: reason.into(),
        description: "what Felix says".into(),
        map: "cali_counters6".into(),
        layout: "Calico 3.32.1 or later".into(),
        rule: policy
            .as_ref()
            .map(|_| r#"action:"deny" protocol:{number:1}"#.into()),
        rule_id: policy.as_ref().map(|_| "42".into()),
        policy,
        note: None,
    }));
    d
}

#[test]
fn calicos_ebpf_policy_drop_is_a_policy_drop_naming_policy_and_rule() {
    let policy = crate::model::PolicyRef {
        kind: Some("NetworkPolicy".into()),
        namespace: Some("demo".into()),
        name: Some("deny-icmp".into()),
        tier: Some("default".into()),
        direction: Some("ingress".into()),
    };
    let d = one(
        &ebpf_drop("DROPPED_BY_POLICY", Some(policy.clone())),
        NodeFacts::default(),
    );
    assert_eq!(d.code, Code::PolicyDrop);
    assert_eq!(d.refusal.policy, Some(policy));
    assert_eq!(d.refusal.owner, Some(crate::model::Owner::Calico));
    assert_eq!(d.ifname.as_deref(), Some("cali1a2b3c4d5e6"));
    assert!(
        d.summary.contains(
            "Calico policy in its eBPF program on cali1a2b3c4d5e6 by NetworkPolicy demo/deny-icmp"
        ) && d.summary.contains(r#"rule action:"deny""#),
        "{}",
        d.summary
    );
    assert!(
        d.hint
            .contains("calico-node -bpf policy dump cali1a2b3c4d5e6"),
        "{}",
        d.hint
    );
}

#[test]
fn calicos_other_ebpf_drops_name_felixs_reason_with_a_hint() {
    let d = one(&ebpf_drop("UNAUTH_SOURCE", None), NodeFacts::default());
    assert_eq!(d.code, Code::CalicoEbpfDrop);
    assert!(
        d.summary.contains("UNAUTH_SOURCE, cali_counters6"),
        "{}",
        d.summary
    );
    assert!(d.hint.contains("calicoctl get nodes"), "{}", d.hint);
    // Without Felix's counters the drop stays an unexplained tc drop.
    let mut plain = ebpf_drop("UNAUTH_SOURCE", None);
    plain.calico_ebpf = None;
    assert_eq!(one(&plain, NodeFacts::default()).code, Code::Other);
}

#[test]
fn wireguards_refusals_name_the_device_and_the_peers_allowed_ips() {
    let mut dg = Diagnoser::new(0);
    let mut out = Vec::new();
    let r = crate::model::WireguardRefusal {
        ifname: "wireguard.cali".into(),
        count: 4,
        peers: Some("192.168.1.1:51820 allows 10.244.1.0/32".into()),
    };
    dg.on_wireguard_refused(&r, 1_000, &mut out);
    let d = dg.current();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::WireguardRefused);
    assert_eq!(d[0].count, 4);
    assert!(
        d[0].summary.contains(
            "outside the sending peer's allowed IPs (peers: 192.168.1.1:51820 allows 10.244.1.0/32)"
        ),
        "{}",
        d[0].summary
    );
    assert!(
        d[0].hint.contains("wg show wireguard.cali allowed-ips"),
        "{}",
        d[0].hint
    );
}
