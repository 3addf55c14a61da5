//! Every table on the node: drops in tables that are not Calico's iptables
//! chains, named with table (and family), chain, rule, owner, drop or reject,
//! through nftables' own trace (which needs no kprobes). The rule sets are
//! rendered as the real software renders them: Calico's nftables dataplane
//! as Felix writes `table ip calico` (chain layers `filter-`, comments
//! `cali:<hash>; <text>`, dispatch verdict maps, the accept mark 0x10000;
//! the `filter-FORWARD` rules verbatim from Felix's captured ruleset), and
//! firewalld 1.x's `table inet firewalld` (priority filter + 10, the public
//! zone's final `reject with icmpx admin-prohibited`). Needs root.

use std::time::Duration;

use calitrace_tests::calitrace::{Finished, Trace};
use calitrace_tests::{Backend, Lab, Mode, Pod, kernel};
use serde_json::Value;

/// Felix 3.32's nftables rendering of node B, for one workload (`cali`),
/// admitted by its namespace profile, or denied by a Kubernetes
/// NetworkPolicy (`deny`).
fn calico_nft(cali: &str, deny: bool) -> String {
    calico_nft_in("ip", cali, deny)
}

/// [`calico_nft`] in `family` (`ip` or `ip6`: Felix writes one table each).
fn calico_nft_in(family: &str, cali: &str, deny: bool) -> String {
    let policy = if deny {
        r#"
        chain filter-cali-pi-knp/default/deny-all {
            counter meta mark set meta mark | 0x00040000 comment "cali:Bbbbbbbbbbbbbbb1; KubernetesNetworkPolicy default/deny-all ingress"
            meta mark & 0x00040000 == 0x00040000 counter drop comment "cali:Bbbbbbbbbbbbbbb2;"
        }"#
        .to_string()
    } else {
        String::new()
    };
    let tier = if deny {
        r#"
            counter meta mark set meta mark & 0xfffdffff comment "cali:Aaaaaaaaaaaaaaa4; Start of tier default"
            meta mark & 0x00020000 == 0x00000000 counter jump filter-cali-pi-knp/default/deny-all comment "cali:Aaaaaaaaaaaaaaa5;"
            meta mark & 0x00010000 == 0x00010000 counter return comment "cali:Aaaaaaaaaaaaaaa6; Return if policy accepted"
            meta mark & 0x00020000 == 0x00000000 counter drop comment "cali:Aaaaaaaaaaaaaaa7; End of tier default. Drop if no policies passed packet""#
    } else {
        ""
    };
    format!(
        r#"
table {family} calico {{
    map filter-cali-to-wl-dispatch {{
        type ifname : verdict
        elements = {{ "{cali}" : goto filter-cali-tw-{cali} }}
    }}
    chain filter-FORWARD {{
        type filter hook forward priority filter; policy accept;
        counter jump filter-cali-FORWARD comment "cali:dpfqBgJrpRwlrqw1;"
        meta mark & 0x00010000 == 0x00010000 counter accept comment "cali:yp7iNUYNEhDmKF6E; Policy explicitly accepted packet."
        counter meta mark set meta mark | 0x00010000 comment "cali:fXaqbwKfGHq5dvHP;"
    }}
    chain filter-cali-FORWARD {{
        counter meta mark set meta mark & 0xffe5ffff comment "cali:DjLNGAdnReheqqCp;"
        oifname "cali*" counter jump filter-cali-to-wl-dispatch comment "cali:j573pOiV4ETpv7o4;"
    }}
    chain filter-cali-to-wl-dispatch {{
        oifname vmap @filter-cali-to-wl-dispatch comment "cali:ljtHSLJQhigspPd1;"
        counter drop comment "cali:zeZtiiPDsE6BwqUG; Unknown interface"
    }}
    chain filter-cali-tw-{cali} {{
        ct state established,related counter accept comment "cali:Aaaaaaaaaaaaaaa1;"
        ct state invalid counter drop comment "cali:Aaaaaaaaaaaaaaa2;"
        counter meta mark set meta mark & 0xfffcffff comment "cali:Aaaaaaaaaaaaaaa3;"{tier}
        counter jump filter-cali-pri-kns.default comment "cali:Aaaaaaaaaaaaaaa8;"
        meta mark & 0x00010000 == 0x00010000 counter return comment "cali:Aaaaaaaaaaaaaaa9; Return if profile accepted"
        counter drop comment "cali:Aaaaaaaaaaaaaa12; Drop if no profiles matched"
    }}
    chain filter-cali-pri-kns.default {{
        counter meta mark set meta mark | 0x00010000 comment "cali:Cccccccccccccc01; Profile kns.default ingress"
    }}{policy}
}}
"#
    )
}

/// firewalld 1.x's filter chains for a node whose uplink is in the public
/// zone (what `nft list ruleset` shows; its nat and mangle chains left out).
const FIREWALLD: &str = r#"
table inet firewalld {
    chain filter_INPUT {
        type filter hook input priority filter + 10; policy accept;
        ct state { established, related } accept
        ct status dnat accept
        iifname "lo" accept
        ct state invalid drop
        jump filter_INPUT_ZONES
        reject with icmpx admin-prohibited
    }
    chain filter_FORWARD {
        type filter hook forward priority filter + 10; policy accept;
        ct state { established, related } accept
        ct status dnat accept
        iifname "lo" accept
        ct state invalid drop
        ip6 daddr { ::/96, ::ffff:0.0.0.0/96, 2002::/24, 2002:a00::/24, 2002:7f00::/24, 2002:a9fe::/32, 2002:ac10::/28, 2002:c0a8::/32, 2002:e000::/19 } reject with icmpv6 addr-unreachable
        jump filter_FORWARD_ZONES
        reject with icmpx admin-prohibited
    }
    chain filter_INPUT_ZONES {
        iifname "eth0" goto filter_IN_public
        goto filter_IN_public
    }
    chain filter_FORWARD_ZONES {
        iifname "eth0" goto filter_FWD_public
        goto filter_FWD_public
    }
    chain filter_IN_public {
        jump filter_IN_public_allow
        meta l4proto { icmp, ipv6-icmp } accept
        reject with icmpx admin-prohibited
    }
    chain filter_IN_public_allow {
        tcp dport 22 accept
    }
    chain filter_FWD_public {
        jump filter_FWD_public_allow
        reject with icmpx admin-prohibited
    }
    chain filter_FWD_public_allow {
        oifname "eth0" accept
    }
}
"#;

struct Run {
    lab: Lab,
    a: Pod,
    b: Pod,
}

impl Run {
    fn new() -> Run {
        let lab = Lab::new(Mode::Direct).unwrap();
        let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
        Run { lab, a, b }
    }

    /// Traces node B (JSON, drops only) while pod A pings pod B five times,
    /// which must fail.
    fn trace(&self) -> Finished {
        let t = Trace::start(&self.lab.node(1).netns, &["--drops-only"]).unwrap();
        assert!(!self.lab.ping(&self.a, &self.b.ip, 5), "the ping must fail");
        std::thread::sleep(Duration::from_millis(600));
        let f = t.stop().unwrap();
        assert!(f.status.success(), "{}", f.dump());
        assert_no_trace_table(&self.lab);
        f
    }

    /// The flow's last drop: by then nftables' trace names it.
    fn last_drop(&self, f: &Finished) -> Value {
        let drops = f.drops();
        let flow = Finished::between(&drops, &self.a.ip, &self.b.ip);
        assert!(flow.len() >= 2, "drops of the flow\n{}", f.dump());
        flow[flow.len() - 1].clone()
    }
}

/// Nothing of calitrace's is left in node B's ruleset.
fn assert_no_trace_table(lab: &Lab) {
    let tables = lab.sh(&lab.node(1).netns, "nft list tables").unwrap();
    assert!(
        !tables.contains("calitrace"),
        "calitrace's trace table left behind:\n{tables}"
    );
}

#[test]
fn firewalld_rejects_what_calico_allowed() {
    let r = Run::new();
    r.lab.nft(1, &calico_nft(&r.b.cali, false)).unwrap();
    r.lab.nft(1, FIREWALLD).unwrap();
    let f = r.trace();
    let d = r.last_drop(&f);
    let nf = &d["netfilter"];
    assert_eq!(nf["backend"], "nft", "{d}");
    assert_eq!(nf["family"], "inet", "{d}");
    assert_eq!(nf["table"], "firewalld", "{d}");
    assert_eq!(nf["chain"], "filter_FWD_public", "{d}");
    assert_eq!(nf["hook"], "FORWARD", "{d}");
    assert_eq!(nf["attribution"], "exact", "nftables' trace: {d}");
    assert_eq!(nf["owner"], "firewalld", "{d}");
    assert_eq!(nf["verdict"], "reject", "{d}");
    assert_eq!(nf["reject_with"], "icmpx admin-prohibited", "{d}");
    assert_eq!(
        nf["allowed_by"], "calico",
        "Calico's filter-FORWARD accepted it: {d}"
    );
    assert!(
        nf["rule"].as_str().unwrap().contains("reject with icmpx"),
        "the rule as nft lists it: {d}"
    );
    let n = f.diagnosis("NETFILTER_DROP");
    assert_eq!(n["owner"], "firewalld", "{n}");
    assert_eq!(n["family"], "inet", "{n}");
    let summary = n["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Calico allowed it; firewalld rejected"),
        "{n}"
    );
    assert!(summary.contains("icmpx admin-prohibited"), "{n}");
    assert!(n["hint"].as_str().unwrap().contains("trusted zone"), "{n}");
}

#[test]
fn calico_nftables_policy_drop_names_the_policy() {
    let r = Run::new();
    r.lab.nft(1, &calico_nft(&r.b.cali, true)).unwrap();
    let f = r.trace();
    let d = r.last_drop(&f);
    let nf = &d["netfilter"];
    assert_eq!(
        (nf["family"].as_str(), nf["table"].as_str()),
        (Some("ip"), Some("calico")),
        "{d}"
    );
    assert_eq!(nf["chain"], "filter-cali-pi-knp/default/deny-all", "{d}");
    assert_eq!(nf["owner"], "calico", "{d}");
    assert_eq!(nf["verdict"], "drop", "{d}");
    assert_eq!(nf["attribution"], "exact", "{d}");
    let p = f.diagnosis("POLICY_DROP");
    assert_eq!(p["policy"]["kind"], "KubernetesNetworkPolicy", "{p}");
    assert_eq!(p["policy"]["namespace"], "default", "{p}");
    assert_eq!(p["policy"]["name"], "deny-all", "{p}");
    assert_eq!(p["policy"]["direction"], "ingress", "{p}");
    assert_eq!(p["backend"], "nft", "{p}");
    assert!(
        p["hint"]
            .as_str()
            .unwrap()
            .contains("kubectl get networkpolicy -n default deny-all"),
        "{p}"
    );
    assert!(
        p["summary"]
            .as_str()
            .unwrap()
            .contains("KubernetesNetworkPolicy default/deny-all"),
        "{p}"
    );
}

#[test]
fn the_distros_reject_before_calicos_accept() {
    let r = Run::new();
    // RHEL's /etc/sysconfig/iptables (iptables-services), loaded as the
    // distribution does.
    r.lab
        .iptables(
            1,
            Backend::Legacy,
            &[
                "-A",
                "FORWARD",
                "-j",
                "REJECT",
                "--reject-with",
                "icmp-host-prohibited",
            ],
        )
        .unwrap();
    let f = r.trace();
    let d = r.last_drop(&f);
    let nf = &d["netfilter"];
    assert_eq!(nf["backend"], "legacy", "{d}");
    assert_eq!(nf["owner"], "distro", "{d}");
    assert_eq!(nf["verdict"], "reject", "{d}");
    assert_eq!(nf["reject_with"], "icmp host-prohibited", "{d}");
    assert!(
        nf["rule"]
            .as_str()
            .unwrap()
            .contains("--reject-with icmp-host-prohibited"),
        "{d}"
    );
    let n = f.diagnosis("NETFILTER_DROP");
    assert!(
        n["hint"].as_str().unwrap().contains("sysconfig/iptables"),
        "{n}"
    );
}

#[test]
fn the_trace_table_goes_with_a_killed_calitrace() {
    let r = Run::new();
    r.lab.nft(1, FIREWALLD).unwrap();
    let t = Trace::start(&r.lab.node(1).netns, &["--drops-only"]).unwrap();
    assert!(!r.lab.ping(&r.a, &r.b.ip, 3));
    std::thread::sleep(Duration::from_millis(300));
    let tables = r.lab.sh(&r.lab.node(1).netns, "nft list tables").unwrap();
    assert!(
        tables.contains("table inet calitrace_"),
        "the trace table exists while drops are attributed:\n{tables}"
    );
    let f = t.stop_with(libc::SIGKILL).unwrap();
    assert!(!f.status.success());
    std::thread::sleep(Duration::from_millis(200));
    if kernel::version() < (5, 12) {
        // No tables owned by a socket: the next calitrace sweeps it.
        let again = Trace::start(&r.lab.node(1).netns, &["--drops-only"]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        again.stop().unwrap();
    }
    // Owned by calitrace's netlink socket: the kernel removed it.
    assert_no_trace_table(&r.lab);
}

/// Gives pods a0 and b0 IPv6 addresses as Calico does (a /128 on `eth0`, the
/// default route via the `cali` interface's link-local address, which its
/// MAC ee:ee:ee:ee:ee:ee makes `fe80::ecee:eeff:feee:eeee`), and the nodes
/// routes to each other's pods over IPv6 underlay addresses. Returns the
/// pods' addresses once a ping gets through.
fn ipv6_pods(r: &Run) -> (String, String) {
    let (a6, b6) = ("fd00:244:1::10", "fd00:244:2::10");
    let (na, nb) = (&r.lab.node(0).netns, &r.lab.node(1).netns);
    for (ns, me, other, pod, cali, other_pods) in [
        (
            na,
            "fd00:cafe::1",
            "fd00:cafe::2",
            a6,
            &r.a.cali,
            "fd00:244:2::/64",
        ),
        (
            nb,
            "fd00:cafe::2",
            "fd00:cafe::1",
            b6,
            &r.b.cali,
            "fd00:244:1::/64",
        ),
    ] {
        r.lab
            .sh(
                ns,
                &format!(
                    "set -e; sysctl -qw net.ipv6.conf.all.forwarding=1; \
                     ip -6 addr add {me}/64 dev eth0 nodad; \
                     ip -6 route add {pod}/128 dev {cali}; \
                     ip -6 route add {other_pods} via {other}"
                ),
            )
            .unwrap();
    }
    for (pod, addr) in [(&r.a, a6), (&r.b, b6)] {
        r.lab
            .sh(
                &pod.netns,
                &format!(
                    "set -e; ip -6 addr add {addr}/128 dev eth0 nodad; \
                     ip -6 route add default via fe80::ecee:eeff:feee:eeee dev eth0"
                ),
            )
            .unwrap();
    }
    // Link-local addresses finish duplicate address detection first.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !r.lab.ping(&r.a, b6, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "IPv6 between the lab's pods never worked"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    (a6.to_string(), b6.to_string())
}

#[test]
fn ipv6_firewalld_rejects_what_calicos_ip6_table_allowed() {
    let lab = Lab::with_ipv6(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let r = Run { lab, a, b };
    let (a6, b6) = ipv6_pods(&r);
    r.lab
        .nft(1, &calico_nft_in("ip6", &r.b.cali, false))
        .unwrap();
    r.lab.nft(1, FIREWALLD).unwrap();
    let t = Trace::start(&r.lab.node(1).netns, &["--drops-only"]).unwrap();
    assert!(!r.lab.ping(&r.a, &b6, 5), "the ping must fail");
    std::thread::sleep(Duration::from_millis(600));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let drops = f.drops();
    let flow = Finished::between(&drops, &a6, &b6);
    assert!(flow.len() >= 2, "drops of the IPv6 flow\n{}", f.dump());
    let d = flow[flow.len() - 1];
    let nf = &d["netfilter"];
    assert_eq!(d["proto"], "icmpv6", "{d}");
    assert_eq!(
        (
            nf["family"].as_str(),
            nf["table"].as_str(),
            nf["owner"].as_str()
        ),
        (Some("inet"), Some("firewalld"), Some("firewalld")),
        "{d}"
    );
    assert_eq!(nf["reject_with"], "icmpx admin-prohibited", "{d}");
    assert_eq!(nf["allowed_by"], "calico", "ip6 calico accepted it: {d}");
    assert_eq!(nf["attribution"], "exact", "{d}");
    assert_no_trace_table(&r.lab);
}

#[test]
fn the_cluster_view_names_each_nodes_tables() {
    let r = Run::new();
    r.lab.nft(1, &calico_nft(&r.b.cali, false)).unwrap();
    r.lab.nft(1, FIREWALLD).unwrap();
    let nodes = [
        ("node-a", r.lab.node(0).netns.as_str()),
        ("node-b", r.lab.node(1).netns.as_str()),
    ];
    let t = Trace::start_cluster(&nodes, &["--drops-only"]).unwrap();
    assert!(!r.lab.ping(&r.a, &r.b.ip, 5));
    std::thread::sleep(Duration::from_millis(2500));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let drops = f.drops();
    let flow = Finished::between(&drops, &r.a.ip, &r.b.ip);
    let d = flow
        .last()
        .unwrap_or_else(|| panic!("no drop\n{}", f.dump()));
    assert_eq!(d["node"], "node-b", "{d}");
    assert_eq!(d["netfilter"]["owner"], "firewalld", "{d}");
    assert_eq!(d["netfilter"]["allowed_by"], "calico", "{d}");
    let n = f.diagnosis("NETFILTER_DROP");
    assert_eq!(
        (n["node"].as_str(), n["owner"].as_str()),
        (Some("node-b"), Some("firewalld")),
        "{n}"
    );
    assert!(
        f.diagnoses()
            .iter()
            .all(|d| !d["code"].as_str().unwrap_or("").starts_with("UNDERLAY")),
        "node B's own drop is not the underlay's\n{}",
        f.dump()
    );
    for (_, ns) in nodes {
        let tables = r.lab.sh(ns, "nft list tables").unwrap();
        assert!(!tables.contains("calitrace"), "{tables}");
    }
}

/// kube-proxy's nftables mode (Kubernetes 1.31-1.33 layout) as it lists:
/// its ClusterIP checks, one Service at 10.96.0.10.
const KUBE_PROXY_NFT: &str = r#"
table ip kube-proxy {
    comment "rules for kube-proxy"
    set cluster-ips {
        type ipv4_addr
        comment "Active ClusterIPs"
        elements = { 10.96.0.10 }
    }
    chain filter-forward {
        type filter hook forward priority -110; policy accept;
        ct state new jump cluster-ips-check
    }
    chain cluster-ips-check {
        ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
        ip daddr { 10.96.0.0/12 } drop comment "Drop traffic to unallocated ClusterIPs"
    }
}
"#;

#[test]
fn kube_proxys_nftables_reject_and_drop_are_named_as_its_own() {
    let r = Run::new();
    r.lab.nft(0, KUBE_PROXY_NFT).unwrap();
    let t = Trace::start(&r.lab.node(0).netns, &["--drops-only"]).unwrap();
    assert!(
        !r.lab.ping(&r.a, "10.96.0.10", 4),
        "a ClusterIP without that port"
    );
    assert!(
        !r.lab.ping(&r.a, "10.96.0.99", 4),
        "an unallocated ClusterIP"
    );
    std::thread::sleep(Duration::from_millis(600));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let drops = f.drops();
    let last = |dst: &str| {
        let flow = Finished::between(&drops, &r.a.ip, dst);
        assert!(flow.len() >= 2, "drops to {dst}\n{}", f.dump());
        flow[flow.len() - 1].clone()
    };
    let rejected = last("10.96.0.10");
    let nf = &rejected["netfilter"];
    assert_eq!(
        (
            nf["table"].as_str(),
            nf["owner"].as_str(),
            nf["verdict"].as_str()
        ),
        (Some("kube-proxy"), Some("kube-proxy"), Some("reject")),
        "{rejected}"
    );
    assert_eq!(nf["chain"], "cluster-ips-check", "{rejected}");
    assert_eq!(nf["hook"], "FORWARD", "{rejected}");
    assert_eq!(nf["reject_with"], "icmp port-unreachable", "{rejected}");
    let dropped = last("10.96.0.99");
    let nf = &dropped["netfilter"];
    assert_eq!(
        (
            nf["owner"].as_str(),
            nf["verdict"].as_str(),
            nf["reject_with"].as_str()
        ),
        (Some("kube-proxy"), Some("drop"), None),
        "{dropped}"
    );
    assert!(
        nf["rule"]
            .as_str()
            .unwrap()
            .contains("Drop traffic to unallocated ClusterIPs"),
        "{dropped}"
    );
    let n = f.diagnosis("NETFILTER_DROP");
    assert!(n["hint"].as_str().unwrap().contains("kube-proxy"), "{n}");
}

#[test]
fn calico_in_nftables_and_kube_proxy_in_iptables_is_a_split_the_drop_cites() {
    let r = Run::new();
    r.lab.nft(1, &calico_nft(&r.b.cali, false)).unwrap();
    // kube-proxy in iptables mode (iptables-nft): a Service without endpoints.
    let kube = format!(
        "set -e; iptables-nft -N KUBE-SERVICES; \
         iptables-nft -A FORWARD -m conntrack --ctstate NEW -m comment --comment 'kubernetes service portals' -j KUBE-SERVICES; \
         iptables-nft -A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment 'default/web:http has no endpoints' -m tcp --dport 8080 -j REJECT --reject-with icmp-port-unreachable",
        r.b.ip
    );
    r.lab.sh(&r.lab.node(1).netns, &kube).unwrap();
    let t = Trace::start(&r.lab.node(1).netns, &["--drops-only"]).unwrap();
    // Three connections, each refused at its SYN: the last is named by
    // nftables' trace where a table walk (fexit) names only the base chain.
    for _ in 0..3 {
        let refused = r.lab.tcp_probe(
            &r.a.netns,
            &r.b.netns,
            &r.b.ip,
            8080,
            Duration::from_secs(2),
        );
        assert!(refused.is_err(), "the Service has no endpoints");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(600));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let start = &f.of_type("start")[0];
    let checks = start["checks"].as_array().cloned().unwrap_or_default();
    assert!(
        checks
            .iter()
            .any(|c| c["id"] == "dataplane" && c["status"] == "fail"),
        "doctor's dataplane check fails on the split: {start}"
    );
    let drops = f.drops();
    let flow = Finished::between(&drops, &r.a.ip, &r.b.ip);
    let d = *flow
        .last()
        .unwrap_or_else(|| panic!("no drop\n{}", f.dump()));
    let nf = &d["netfilter"];
    assert_eq!(
        (
            nf["owner"].as_str(),
            nf["chain"].as_str(),
            nf["verdict"].as_str()
        ),
        (Some("kube-proxy"), Some("KUBE-SERVICES"), Some("reject")),
        "{d}"
    );
    assert_eq!(nf["reject_with"], "icmp port-unreachable", "{d}");
    let n = f.diagnosis("NETFILTER_DROP");
    assert_eq!(n["check"], "dataplane", "the split explains it: {n}");
}

#[test]
fn firewalld_after_calico_in_iptables_nft_is_told_by_calicos_accept_mark() {
    let r = Run::new();
    // Felix's FORWARD rules as iptables-nft stores them (hashes from Felix's
    // captured ruleset); the workload's policy accepting is cut to one mark.
    let calico = format!(
        "set -e; iptables-nft -N cali-FORWARD; \
         iptables-nft -A FORWARD -m comment --comment cali:wUHhoiAYhphO9Mso -j cali-FORWARD; \
         iptables-nft -A FORWARD -m comment --comment cali:S93hcgKJrXEqnTfs -m comment --comment 'Policy explicitly accepted packet.' -m mark --mark 0x10000/0x10000 -j ACCEPT; \
         iptables-nft -A FORWARD -m comment --comment cali:mp77cMpurHhyjLrM -j MARK --set-xmark 0x10000/0x10000; \
         iptables-nft -A cali-FORWARD -m comment --comment cali:W_vvds1Nw3n9QE2f -j MARK --set-xmark 0x0/0x1a0000; \
         iptables-nft -A cali-FORWARD -o {} -m comment --comment cali:policyaccepted -j MARK --set-xmark 0x10000/0x10000",
        r.b.cali
    );
    r.lab.sh(&r.lab.node(1).netns, &calico).unwrap();
    r.lab.nft(1, FIREWALLD).unwrap();
    let f = r.trace();
    let d = r.last_drop(&f);
    let nf = &d["netfilter"];
    assert_eq!(
        (
            nf["table"].as_str(),
            nf["owner"].as_str(),
            nf["verdict"].as_str()
        ),
        (Some("firewalld"), Some("firewalld"), Some("reject")),
        "{d}"
    );
    assert_eq!(
        nf["allowed_by"], "calico",
        "the accept mark 0x10000 was set: {d}"
    );
    let n = f.diagnosis("NETFILTER_DROP");
    assert!(
        n["summary"]
            .as_str()
            .unwrap()
            .starts_with("Calico allowed it; firewalld rejected"),
        "{n}"
    );
}

/// Felix 3.32's `table arp calico-arp` for one workload (`cali`, `ip`), as
/// `nft list table arp calico-arp` shows it: `filter-OUTPUT` jumps to the
/// dispatch chain, whose verdict map sends the workload's interface to its
/// chain; that drops the host's ARP replies claiming the workload's address.
fn calico_arp(cali: &str, ip: &str) -> String {
    format!(
        r#"
table arp calico-arp {{
    map filter-cali-arp-dispatch {{
        type ifname : verdict
        elements = {{ "{cali}" : goto filter-cali-arp-{cali} }}
    }}
    chain filter-OUTPUT {{
        type filter hook output priority filter; policy accept;
        counter jump filter-cali-arp-dispatch comment "cali:2yDVBtaOhPNjuLqU;"
    }}
    chain filter-cali-arp-dispatch {{
        oifname vmap @filter-cali-arp-dispatch comment "cali:b4Hwn0rwVlDJgaGf;"
    }}
    chain filter-cali-arp-{cali} {{
        oifname "{cali}" arp operation reply arp saddr ip {ip} counter drop comment "cali:MVwOfWWNQkLVsLqT;"
    }}
}}
"#
    )
}

#[test]
fn calicos_arp_table_keeping_the_host_from_claiming_a_pods_address_is_benign() {
    let r = Run::new();
    let b = &r.b;
    r.lab.nft(1, &calico_arp(&b.cali, &b.ip)).unwrap();
    // The workload moved (a VM's live migration): node B routes its address
    // elsewhere, so proxy ARP on its cali interface answers the gratuitous
    // ARP it sends on arrival (arp_notify, on a new MAC) claiming it.
    let node = &r.lab.node(1).netns;
    let elsewhere = format!(
        "ip route replace {}/32 via {} dev eth0 onlink",
        b.ip,
        r.lab.node(0).underlay_ip
    );
    r.lab.sh(node, &elsewhere).unwrap();
    r.lab
        .sysctl(&b.netns, "net.ipv4.conf.eth0.arp_notify", "1")
        .unwrap();
    let t = Trace::start(node, &["--all-drops"]).unwrap();
    r.lab
        .sh(&b.netns, "ip link set eth0 address 02:00:00:00:00:b1")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let drop = f
        .drops()
        .into_iter()
        .find(|d| d["netfilter"]["table"] == "calico-arp")
        .unwrap_or_else(|| panic!("a drop in calico-arp\n{}", f.dump()))
        .clone();
    let nf = &drop["netfilter"];
    assert_eq!(nf["family"], "arp", "{drop}");
    assert_eq!(nf["chain"], format!("filter-cali-arp-{}", b.cali), "{drop}");
    assert_eq!(nf["hook"], "OUTPUT", "{drop}");
    assert_eq!(nf["owner"], "calico", "{drop}");
    assert!(
        nf["rule"]
            .as_str()
            .unwrap()
            .contains(&format!("arp saddr ip {}", b.ip)),
        "{drop}"
    );
    assert_eq!(drop["benign"], "calico_arp", "{drop}");
    assert_eq!(
        drop["src"],
        b.ip.as_str(),
        "the reply claims the pod's address: {drop}"
    );
    assert!(
        f.diagnoses().is_empty(),
        "Calico's ARP suppression is no fault\n{}",
        f.dump()
    );
    let proof = r
        .lab
        .sh(node, "nft list chain arp calico-arp filter-OUTPUT")
        .unwrap();
    assert!(
        !proof.contains("packets 0 "),
        "the table dropped it: {proof}"
    );
}
