//! Signal, not noise: a healthy lab node with IPv6 on (link-local
//! addresses, neighbour discovery, MLD, router solicitations), pod traffic
//! (pings and TCP both ways) and its rules read with `nft list ruleset` and
//! `iptables-nft-save` while tracing reports no drop and no diagnosis; the
//! benign frees are counted in `stats`, and shown, marked, with
//! `--all-drops`. A fault on such a node is still reported as before.

use std::path::PathBuf;
use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::lab::VXLAN_DEV;
use calitrace_tests::{Backend, Lab, Mode};
use serde_json::Value;

/// Calico-like rules in node B that accept everything (so that listing the
/// rules has something to read), made with iptables-nft.
fn calico_like_rules(lab: &Lab) {
    let ipt = |args: &[&str]| lab.iptables(1, Backend::Nft, args).unwrap();
    ipt(&["-N", "cali-FORWARD"]);
    ipt(&[
        "-A",
        "FORWARD",
        "-m",
        "comment",
        "--comment",
        "cali:wUHhoiAYhphO9Mso",
        "-j",
        "cali-FORWARD",
    ]);
    ipt(&[
        "-A",
        "cali-FORWARD",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ]);
    ipt(&[
        "-A",
        "cali-FORWARD",
        "-m",
        "mark",
        "--mark",
        "0x10000/0x10000",
        "-j",
        "ACCEPT",
    ]);
    ipt(&["-A", "cali-FORWARD", "-i", "cali+", "-j", "ACCEPT"]);
}

/// Node B's own IPv6 chatter while tracing: a new address on a device makes
/// it send duplicate address detection and MLD reports (on `vxlan.calico`
/// they have no VXLAN target); then the rules are read the ways an operator
/// reads them.
fn housekeeping(lab: &Lab, dev: &str) {
    let node = &lab.node(1).netns;
    lab.sh(node, &format!("ip -6 addr add fd00:cafe::2/64 dev {dev}"))
        .unwrap();
    for list in [
        "nft list ruleset",
        "iptables-nft-save",
        "nft -a list ruleset",
    ] {
        let out = lab.sh(node, list).unwrap();
        assert!(out.contains("cali-FORWARD"), "{list}:\n{out}");
    }
}

/// Pod traffic both ways: pings, a TCP exchange each way, a larger transfer.
fn pod_traffic(lab: &Lab) {
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    assert!(lab.ping(&a, &b.ip, 3), "ping A to B");
    assert!(lab.ping(&b, &a.ip, 2), "ping B to A");
    let t = Duration::from_secs(5);
    assert!(lab.tcp_check(&a, &b, 0, t), "tcp A to B");
    assert!(lab.tcp_check(&b, &a, 0, t), "tcp B to A");
    lab.tcp_transfer(&a.netns, &b.netns, &b.ip, 0, 200_000, t)
        .expect("a larger transfer");
}

/// Traces node B of a healthy lab with IPv6 on while the node does its
/// housekeeping and pods talk; `args` for calitrace.
fn trace_healthy(lab: &Lab, args: &[&str]) -> Finished {
    let dev = if lab.mode() == Mode::Vxlan {
        VXLAN_DEV
    } else {
        "eth0"
    };
    let t = Trace::start(&lab.node(1).netns, args).expect("calitrace starts");
    housekeeping(lab, dev);
    pod_traffic(lab);
    // Router solicitations and MLD reports come again within seconds.
    std::thread::sleep(Duration::from_secs(3));
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

/// No drop and no diagnosis; the benign frees are counted by reason.
fn assert_quiet(f: &Finished) -> &Value {
    assert!(
        f.drops().is_empty(),
        "no drop on a healthy node\n{}",
        f.dump()
    );
    assert!(
        f.diagnoses().is_empty(),
        "no diagnosis on a healthy node\n{}",
        f.dump()
    );
    let s = stats(f);
    assert_eq!(s["lost"], 0, "{s}");
    let benign = s["benign"]
        .as_object()
        .unwrap_or_else(|| panic!("stats has a benign object: {s}"));
    assert!(
        benign.values().all(|v| v.as_u64().is_some_and(|n| n > 0)),
        "{s}"
    );
    &s["benign"]
}

#[test]
fn a_healthy_direct_node_with_ipv6_reports_no_drop_and_no_diagnosis() {
    let lab = Lab::with_ipv6(Mode::Direct).unwrap();
    calico_like_rules(&lab);
    let f = trace_healthy(&lab, &[]);
    assert_quiet(&f);
    let packets = f.of_type("packet");
    assert!(
        packets.iter().any(|p| p["proto"] == "tcp"),
        "pod traffic was traced\n{}",
        f.dump()
    );
}

#[test]
fn a_healthy_vxlan_node_with_ipv6_reports_no_drop_and_no_diagnosis() {
    let lab = Lab::with_ipv6(Mode::Vxlan).unwrap();
    calico_like_rules(&lab);
    let file = recording("vxlan");
    let f = trace_healthy(&lab, &["-w", file.to_str().unwrap()]);
    let benign = assert_quiet(&f);
    assert!(
        benign.as_object().is_some_and(|b| !b.is_empty()),
        "the IPv6 multicast vxlan.calico has no target for is counted: {benign}"
    );

    // The same recording with --all-drops: the benign frees, marked. MLD
    // reports sit behind a hop-by-hop header and are ICMPv6 all the same.
    let all = calitrace::run(
        None,
        &[],
        &[
            "replay",
            file.to_str().unwrap(),
            "--all-drops",
            "-o",
            "json",
        ],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(all.status.success(), "{}", all.dump());
    let drops = all.drops();
    assert!(!drops.is_empty(), "{}", all.dump());
    for d in &drops {
        assert!(d["benign"].is_string(), "only benign drops: {d}");
    }
    assert!(all.diagnoses().is_empty(), "{}", all.dump());
    // NO_TX_TARGET on newer kernels (6.18 here), NOT_SPECIFIED on older ones (6.1).
    let no_target: Vec<&&Value> = drops.iter().filter(|d| d["ifname"] == VXLAN_DEV).collect();
    assert!(
        no_target.iter().all(|d| d["benign"] == "link_local"
            && (d["reason"] == "NO_TX_TARGET" || d["reason"] == "NOT_SPECIFIED")),
        "{}",
        all.dump()
    );
    assert!(
        no_target
            .iter()
            .any(|d| d["proto"] == "icmpv6" && d["icmp"] == "type 143 code 0"),
        "an MLDv2 report is icmpv6 type 143, not protocol 0\n{}",
        all.dump()
    );
    assert!(
        drops.iter().all(|d| d["proto"] != 0),
        "no drop of protocol 0\n{}",
        all.dump()
    );
    assert_eq!(
        stats(&all)["benign"],
        stats(&f)["benign"],
        "replay counts the same"
    );
    std::fs::remove_file(&file).ok();
}

#[test]
fn a_fault_on_a_noisy_node_is_still_reported() {
    let lab = Lab::with_ipv6(Mode::Vxlan).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let t = Trace::start(&lab.node(1).netns, &[]).expect("calitrace starts");
    housekeeping_without_rules(&lab);
    assert!(!lab.ping(&a, &b.ip, 2), "the fault drops the ping");
    std::thread::sleep(Duration::from_millis(1500));
    let f = t.stop().expect("calitrace stops");
    let drops = f.drops();
    let flow = Finished::between(&drops, &a.ip, &b.ip);
    assert!(!flow.is_empty(), "the drop is reported\n{}", f.dump());
    assert!(
        flow.iter()
            .all(|d| d["reason"] == "NETFILTER_DROP" && d.get("benign").is_none()),
        "{}",
        f.dump()
    );
    assert!(
        drops.iter().all(|d| d["src"] == a.ip.as_str()),
        "nothing but the fault\n{}",
        f.dump()
    );
    let codes: Vec<&Value> = f.diagnoses().iter().map(|d| &d["code"]).collect();
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == "NETFILTER_DROP"),
        "{}",
        f.dump()
    );
}

/// IPv6 chatter on `vxlan.calico` without reading rules.
fn housekeeping_without_rules(lab: &Lab) {
    let node = &lab.node(1).netns;
    lab.sh(
        node,
        &format!("ip -6 addr add fd00:cafe::2/64 dev {VXLAN_DEV}"),
    )
    .unwrap();
}

fn recording(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "calitrace-noise-{}-{name}.calitrace",
        std::process::id()
    ))
}
