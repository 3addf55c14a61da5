//! End to end: the real calitrace binary, real programs in this kernel, real
//! packets between lab pods; assertions on its JSON lines.

use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::{Backend, Lab, Mode, Pod, kernel};
use serde_json::Value;

/// Traces on `node` while `traffic` runs, then stops with Ctrl-C.
fn trace(lab: &Lab, node: usize, args: &[&str], traffic: impl FnOnce()) -> Finished {
    let t = Trace::start(&lab.node(node).netns, args).expect("calitrace starts");
    traffic();
    // Let time-based rules (unanswered ARP) see the clock move on.
    std::thread::sleep(Duration::from_millis(1500));
    let f = t.stop().expect("calitrace stops");
    assert!(f.status.success(), "calitrace failed\n{}", f.dump());
    if std::env::var_os("CALITRACE_TEST_DUMP").is_some() {
        eprintln!("{}", f.dump());
    }
    f
}

fn stats(f: &Finished) -> &Value {
    f.of_type("stats")
        .into_iter()
        .last()
        .unwrap_or_else(|| panic!("no stats line\n{}", f.dump()))
}

fn healthy(mode: Mode) {
    let lab = Lab::new(mode).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let f = trace(&lab, 1, &[], || {
        assert!(lab.ping(&a, &b.ip, 3), "ping works in the lab");
        assert!(
            lab.tcp_check(&a, &b, 0, Duration::from_secs(5)),
            "tcp works in the lab"
        );
    });
    let packets = f.of_type("packet");
    let flow = Finished::between(&packets, &a.ip, &b.ip);
    assert!(
        flow.iter().any(|p| p["ifname"] == b.cali.as_str()
            && p["dir"] == "egress"
            && p["proto"] == "icmp"),
        "the ping is seen leaving towards pod B on {}\n{}",
        b.cali,
        f.dump()
    );
    assert!(
        flow.iter()
            .any(|p| p["proto"] == "tcp" && p["dport"].is_u64()),
        "tcp with ports is seen\n{}",
        f.dump()
    );
    if mode == Mode::Vxlan {
        assert!(
            flow.iter().any(|p| p["ifname"] == "vxlan.calico"),
            "seen on vxlan.calico\n{}",
            f.dump()
        );
    }
    // A teardown duplicate ACK after the socket is gone (slow, emulated machines
    // make them) or a ping reply no socket wanted is a benign free: counted in
    // stats, never a drop or a diagnosis of the flow.
    let drops = f.drops();
    assert!(
        Finished::between(&drops, &a.ip, &b.ip).is_empty(),
        "no drop for a healthy flow\n{}",
        f.dump()
    );
    let diags = f.diagnoses();
    assert!(
        Finished::between(&diags, &a.ip, &b.ip).is_empty(),
        "no diagnosis for a healthy flow\n{}",
        f.dump()
    );
    let s = stats(&f);
    assert_eq!(s["lost"], 0);
    assert!(s["events"]["tc"].as_u64().unwrap() >= 6, "{s}");
    calitrace::assert_nothing_attached(&lab, 1, &b.cali);
}

/// `calitrace probes` says what this kernel offers and what it lacks, and why.
#[test]
fn probes_say_what_this_kernel_offers() {
    let out = calitrace::probes();
    let version = kernel::version();
    let line = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?}\n{out}"))
    };
    // TCX from 6.6, the netlink clsact qdisc before.
    let tc = if version >= (6, 6) {
        "ok   tc classifier (TCX): loadable"
    } else {
        "ok   tc classifier (netlink clsact): loadable"
    };
    assert_eq!(line("ok   tc classifier"), tc, "{out}");
    let kfree = line("ok   kfree_skb");
    if kernel::has_drop_reasons() {
        let n: u32 = kfree
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or(0);
        assert!(
            n > 10 && kfree.ends_with("drop reasons from BTF"),
            "{kfree}"
        );
    } else {
        assert!(
            kfree.contains("no drop reasons") && kfree.contains("location only"),
            "says what is missing: {kfree}"
        );
    }
    // Every probe is either there or not, and then says why.
    let probes: Vec<&str> = out
        .lines()
        .skip_while(|l| l.trim() != "probes:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert!(probes.len() >= 3, "{out}");
    for p in &probes {
        assert!(p.starts_with("ok   ") || p.starts_with("no   "), "{p}");
        if let Some(rest) = p.strip_prefix("no   ") {
            let why = rest.split_once(": ").map(|(_, w)| w.trim()).unwrap_or("");
            assert!(!why.is_empty(), "an unavailable probe says why: {p}");
        }
    }
    let dataplanes: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "dataplanes read from their own state:")
        .skip(1)
        .map(str::trim)
        .collect();
    assert!(
        dataplanes.len() == 2
            && dataplanes[0].starts_with("Calico eBPF: ")
            && dataplanes[1].starts_with("WireGuard: "),
        "each dataplane reader says what it reads\n{out}"
    );
    let a = calitrace::attribution();
    let backends: Vec<&str> = a.per_backend.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(
        backends,
        ["legacy", "nft"],
        "one attribution line per backend\n{out}"
    );
    if a.per_backend.iter().any(|(_, how)| *how == "exact") {
        assert!(a.exact, "{out}");
    }
    if !a.exact {
        assert!(
            probes.iter().any(|p| p.starts_with("no   ")
                && (p.contains("nft_do_chain") || p.contains("ipt_do_table"))),
            "inferred attribution: the probes say what the exact one lacks\n{out}"
        );
    }
}

#[test]
fn healthy_cross_node_traffic_direct() {
    healthy(Mode::Direct);
}

#[test]
fn healthy_cross_node_traffic_vxlan() {
    healthy(Mode::Vxlan);
}

#[test]
fn legacy_forward_policy_drop() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let f = trace(&lab, 1, &[], || {
        assert!(!lab.ping(&a, &b.ip, 2));
    });
    let drops = f.drops();
    let d = Finished::between(&drops, &a.ip, &b.ip);
    assert!(!d.is_empty(), "the drop is reported\n{}", f.dump());
    assert_eq!(d[0]["reason"], "NETFILTER_DROP");
    assert_eq!(
        d[0]["reason_from_location"].as_bool().unwrap_or(false),
        !kernel::has_drop_reasons(),
        "named from the location exactly where the kernel gives no reason: {}",
        d[0]
    );
    assert_eq!(d[0]["stage"], "netfilter");
    assert_eq!(d[0]["proto"], "icmp");
    assert_eq!(d[0]["ifname"], "eth0");
    assert_eq!(d[0]["netfilter"]["hook"], "FORWARD");
    assert_eq!(d[0]["netfilter"]["backend"], "legacy");
    assert!(d[0]["location"].as_str().is_some_and(|l| !l.is_empty()));
    assert!(
        d[0]["journey"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["ifname"] == "eth0" && h["dir"] == "ingress"),
        "the drop carries where the packet was seen first\n{}",
        f.dump()
    );
    let diags = f.diagnoses();
    let nd: Vec<_> = diags
        .iter()
        .filter(|d| d["code"] == "NETFILTER_DROP")
        .collect();
    assert!(!nd.is_empty(), "{}", f.dump());
    assert_eq!(nd[0]["src"], a.ip.as_str());
    assert!(
        nd.last().unwrap()["count"].as_u64().unwrap() >= 2,
        "count updated\n{}",
        f.dump()
    );
}

#[test]
fn strict_rp_filter() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let nb = lab.node(1).netns.clone();
    // The way back to pod A now leaves by B's cali interface, not eth0.
    lab.sh(&nb, &format!("ip route add {}/32 dev {}", a.ip, b.cali))
        .unwrap();
    lab.sysctl(&nb, "net.ipv4.conf.all.rp_filter", "1").unwrap();
    lab.sysctl(&nb, "net.ipv4.conf.eth0.rp_filter", "1")
        .unwrap();
    let f = trace(&lab, 1, &[], || {
        assert!(!lab.ping(&a, &b.ip, 2));
    });
    let drops = f.drops();
    let d = Finished::between(&drops, &a.ip, &b.ip);
    assert!(
        d.iter().any(|d| d["reason"] == "IP_RPFILTER"
            && d["stage"] == "rp_filter"
            && d["reason_from_location"].as_bool().unwrap_or(false) != kernel::has_drop_reasons()),
        "{}",
        f.dump()
    );
    let diag = f
        .diagnoses()
        .into_iter()
        .find(|d| d["code"] == "RP_FILTER")
        .unwrap_or_else(|| panic!("{}", f.dump()));
    assert_eq!(diag["ifname"], "eth0");
    assert!(
        diag["summary"].as_str().unwrap().contains(&b.cali),
        "names where the route back goes: {diag}"
    );
    assert!(
        diag["hint"].as_str().unwrap().contains("rp_filter"),
        "{diag}"
    );
}

#[test]
fn missing_pod_route_on_receiving_node_loops() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.sh(&lab.node(1).netns, &format!("ip route del {}/32", b.ip))
        .unwrap();
    let f = trace(&lab, 1, &[], || {
        assert!(!lab.ping(&a, &b.ip, 2));
    });
    let drops = f.drops();
    let d = Finished::between(&drops, &a.ip, &b.ip);
    let ttl = d
        .iter()
        .find(|d| d["stage"] == "ttl")
        .unwrap_or_else(|| panic!("{}", f.dump()));
    assert!(
        ttl["journey"].as_array().unwrap().len() >= 2,
        "the loop is visible in the journey: {ttl}"
    );
    let diag = f
        .diagnoses()
        .into_iter()
        .find(|d| d["code"] == "ROUTING_LOOP")
        .unwrap_or_else(|| panic!("{}", f.dump()));
    assert_eq!(diag["dst"], b.ip.as_str());
    assert!(
        diag["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("ip route get {}", b.ip)),
        "{diag}"
    );
}

/// Pod `a` on node A pings pod `b` (without an answer) with its neighbour table
/// flushed, traced on node A.
fn unanswered_ping_traced_on_node_a(lab: &Lab, a: &Pod, b: &Pod) -> Finished {
    lab.sh(&a.netns, "ip neigh flush dev eth0").unwrap();
    trace(lab, 0, &[], || {
        assert!(!lab.ping(a, &b.ip, 2));
    })
}

#[test]
fn no_route_on_sender() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let na = lab.node(0).netns.clone();
    lab.sh(&na, "ip route del 10.244.2.0/26; ip route del default")
        .unwrap();
    let f = unanswered_ping_traced_on_node_a(&lab, &a, &b);
    let diag = f
        .diagnoses()
        .into_iter()
        .find(|d| d["code"] == "NO_ROUTE" || d["code"] == "PROXY_ARP_DISABLED")
        .unwrap_or_else(|| panic!("{}", f.dump()));
    let text = format!("{} {}", diag["summary"], diag["hint"]);
    assert!(text.contains("route"), "the hint is about routing: {diag}");
    assert!(
        !text.contains("proxy_arp is 0"),
        "proxy_arp is 1 here: {diag}"
    );
}

#[test]
fn proxy_arp_disabled_on_sender_cali() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.sysctl(
        &lab.node(0).netns,
        &format!("net.ipv4.conf.{}.proxy_arp", a.cali),
        "0",
    )
    .unwrap();
    let f = unanswered_ping_traced_on_node_a(&lab, &a, &b);
    let diag = f
        .diagnoses()
        .into_iter()
        .find(|d| d["code"] == "PROXY_ARP_DISABLED")
        .unwrap_or_else(|| panic!("{}", f.dump()));
    assert_eq!(diag["ifname"], a.cali.as_str());
    assert_eq!(diag["target"], "169.254.1.1");
    assert!(
        diag["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("net.ipv4.conf.{}.proxy_arp=1", a.cali)),
        "{diag}"
    );
    // The doctor's check saw it at the start, and the diagnosis cites it.
    assert_eq!(diag["check"], "proxy_arp", "{diag}");
    let start = &f.of_type("start")[0];
    assert!(
        start["checks"].as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["id"] == "proxy_arp" && c["status"] == "fail")),
        "{start}"
    );
    assert!(
        f.of_type("packet").iter().any(|p| p["proto"] == "arp"
            && p["arp"] == "request"
            && p["ifname"] == a.cali.as_str()),
        "the unanswered ARP requests are shown\n{}",
        f.dump()
    );
}

#[test]
fn sigterm_ends_cleanly_and_detaches() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let b = lab.pod(1, 0).clone();
    let t = Trace::start(&lab.node(1).netns, &[]).unwrap();
    let f = t.stop_with(libc::SIGTERM).unwrap();
    assert!(f.status.success(), "{}", f.dump());
    assert_eq!(f.of_type("stats").len(), 1, "{}", f.dump());
    calitrace::assert_nothing_attached(&lab, 1, &b.cali);
    calitrace::assert_nothing_attached(&lab, 1, "eth0");
}

/// `--tc-attach netlink`: clsact qdiscs and filters instead of TCX links
/// (the only way before 6.6); they see the traffic and are removed on exit,
/// qdiscs included, where calitrace created them.
#[test]
fn netlink_attach_sees_traffic_and_removes_what_it_added() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let node = &lab.node(1).netns;
    let clsact = |iface: &str| {
        lab.sh(node, &format!("tc qdisc show dev {iface}"))
            .unwrap()
            .contains("clsact")
    };
    assert!(!clsact(&b.cali), "no clsact before");
    let f = trace(&lab, 1, &["--tc-attach", "netlink"], || {
        assert!(clsact(&b.cali), "calitrace added a clsact qdisc");
        assert!(lab.ping(&a, &b.ip, 2));
    });
    assert!(
        f.stderr.contains("tc classifier (netlink clsact)"),
        "{}",
        f.dump()
    );
    let packets = f.of_type("packet");
    assert!(
        Finished::between(&packets, &a.ip, &b.ip)
            .iter()
            .any(|p| p["ifname"] == b.cali.as_str() && p["dir"] == "egress"),
        "{}",
        f.dump()
    );
    calitrace::assert_nothing_attached(&lab, 1, &b.cali);
    calitrace::assert_nothing_attached(&lab, 1, "eth0");
    assert!(!clsact(&b.cali), "the qdisc calitrace added is gone");
    assert!(!clsact("eth0"), "the qdisc calitrace added is gone");
}

#[test]
fn duration_stops_by_itself() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let f = calitrace::run(
        Some(&lab.node(0).netns),
        &[],
        &["--output", "json", "--duration", "1"],
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(f.status.success(), "{}", f.dump());
    assert_eq!(f.of_type("start").len(), 1);
    let s = stats(&f);
    assert!(s["probes_attached"].as_array().unwrap().len() >= 2, "{s}");
    assert!(s["duration_s"].as_f64().unwrap() >= 1.0);
}

/// `calitrace --duration 1 ARGS` on node A of `lab`, run to its end.
fn run_for_a_second(lab: &Lab, args: &[&str]) -> Finished {
    let mut full = vec!["--duration", "1"];
    full.extend_from_slice(args);
    calitrace::run(
        Some(&lab.node(0).netns),
        &[],
        &full,
        Duration::from_secs(20),
    )
    .unwrap()
}

fn assert_usage_error(f: &Finished, needle: &str) {
    assert_eq!(f.status.code(), Some(2), "{}", f.dump());
    let lines: Vec<&str> = f.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one clear line: {:?}", f.stderr);
    assert!(
        lines[0].contains(needle),
        "{:?} should mention {needle:?}",
        lines[0]
    );
    assert!(!f.stderr.contains("panicked"));
}

#[test]
fn bad_filter_is_a_usage_error() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let f = run_for_a_second(&lab, &["host", "10.0.0.300"]);
    assert_usage_error(&f, "bad filter");
    let f = run_for_a_second(&lab, &["port", "80", "and"]);
    assert_usage_error(&f, "bad filter");
}

#[test]
fn unknown_interface_is_a_usage_error() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let f = run_for_a_second(&lab, &["--iface", "nosuch*"]);
    assert_usage_error(&f, "no interface matches --iface nosuch*");
}

#[test]
fn without_privileges_it_says_so() {
    let lab = Lab::new(Mode::Direct).unwrap();
    // Root without any capability, as an unprivileged user would be.
    let f = calitrace::run(
        Some(&lab.node(0).netns),
        &["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"],
        &["--duration", "1"],
        Duration::from_secs(20),
    )
    .unwrap();
    assert_usage_error(&f, "needs root");
    assert!(f.stderr.contains("sudo"), "{}", f.stderr);
}
