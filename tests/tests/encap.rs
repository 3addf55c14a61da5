//! Encapsulated packets on the uplink (VXLAN lab): the tc programs report
//! them by their inner packet, with the outer headers beside it, so that a
//! pod's packet is recognised on `eth0` of both nodes; the filter matches
//! the inner or the outer packet; recordings and replay keep the outer.
//! The IPIP lab needs the `ipip` module, which these machines' kernel lacks:
//! that test runs in the kernel matrix (`cargo xtask vm-test`), and the
//! decoding itself also in `tracer-common/tests/ebpf_parse.rs`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::lab::{IPIP_DEV, VXLAN_PORT, VXLAN_VNI};
use calitrace_tests::{Backend, Lab, Mode, Pod, kernel};
use serde_json::Value;

const IFACES: [&str; 6] = [
    "--iface",
    "eth0",
    "--iface",
    "cali*",
    "--iface",
    "vxlan.calico",
];

/// Traces on `node` (the uplink, the pods' `cali*` and the lab's tunnel
/// device) while `traffic` runs, then stops with Ctrl-C.
fn trace(lab: &Lab, node: usize, extra: &[&str], traffic: impl FnOnce()) -> Finished {
    let mut args = IFACES.to_vec();
    if lab.mode() == Mode::Ipip {
        args[5] = IPIP_DEV;
    }
    args.extend_from_slice(extra);
    let t = Trace::start(&lab.node(node).netns, &args).expect("calitrace starts");
    traffic();
    std::thread::sleep(Duration::from_millis(1000));
    let f = t.stop().expect("calitrace stops");
    assert!(f.status.success(), "calitrace failed\n{}", f.dump());
    if std::env::var_os("CALITRACE_TEST_DUMP").is_some() {
        eprintln!("{}", f.dump());
    }
    f
}

fn pods(lab: &Lab) -> (Pod, Pod) {
    (lab.pod(0, 0).clone(), lab.pod(1, 0).clone())
}

/// Packet records of `from` → `to` on `ifname` in `dir`.
fn packets<'a>(f: &'a Finished, from: &str, to: &str, ifname: &str, dir: &str) -> Vec<&'a Value> {
    f.of_type("packet")
        .into_iter()
        .filter(|p| p["src"] == from && p["dst"] == to && p["ifname"] == ifname && p["dir"] == dir)
        .collect()
}

/// The outer headers a pod's packet from node `from` to node `to` has.
fn assert_vxlan_outer(p: &Value, lab: &Lab, from: usize, to: usize) {
    let o = &p["outer"];
    assert_eq!(o["encap"], "vxlan", "{p}");
    assert_eq!(o["src"], lab.node(from).underlay_ip.as_str(), "{p}");
    assert_eq!(o["dst"], lab.node(to).underlay_ip.as_str(), "{p}");
    assert_eq!(o["proto"], "udp", "{p}");
    assert_eq!(o["dport"], u64::from(VXLAN_PORT), "{p}");
    assert_eq!(o["vni"], u64::from(VXLAN_VNI), "{p}");
    // Outer IPv4 + UDP + VXLAN + inner Ethernet: 50 bytes around the packet.
    assert_eq!(o["len"].as_u64(), p["len"].as_u64().map(|l| l + 50), "{p}");
}

#[test]
fn vxlan_uplink_packets_are_the_pods_packets_with_the_outer_headers() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let (a, b) = pods(&lab);
    let f = trace(&lab, 0, &[], || {
        assert!(lab.ping(&a, &b.ip, 3), "ping works in the lab");
    });
    let out = packets(&f, &a.ip, &b.ip, "eth0", "egress");
    assert!(
        !out.is_empty(),
        "the ping leaves eth0 as the pod's packet\n{}",
        f.dump()
    );
    for p in &out {
        assert_eq!(p["proto"], "icmp", "{p}");
        assert_vxlan_outer(p, &lab, 0, 1);
    }
    // The same echo requests (id and sequence) as the pod sent on its cali*.
    let echoes = |ps: &[&Value]| -> Vec<String> {
        ps.iter()
            .filter_map(|p| p["icmp"].as_str().map(str::to_string))
            .filter(|i| i.starts_with("echo request"))
            .collect()
    };
    let sent = echoes(&packets(&f, &a.ip, &b.ip, &a.cali, "ingress"));
    assert_eq!(sent.len(), 3, "{}", f.dump());
    assert_eq!(echoes(&out), sent, "the same pings on the uplink");
    // The replies arrive on eth0 from node B, in VXLAN.
    let back = packets(&f, &b.ip, &a.ip, "eth0", "ingress");
    assert!(!back.is_empty(), "{}", f.dump());
    for p in &back {
        assert_vxlan_outer(p, &lab, 1, 0);
    }
    // The tunnel's packets are reported as the pods' only: nothing on eth0
    // is left looking like bare UDP to the VXLAN port.
    assert!(
        f.of_type("packet")
            .iter()
            .all(|p| p["dport"] != u64::from(VXLAN_PORT)),
        "{}",
        f.dump()
    );
    // Inside the tunnel device, no outer headers.
    let inner = packets(&f, &a.ip, &b.ip, "vxlan.calico", "egress");
    assert!(!inner.is_empty() && inner.iter().all(|p| p.get("outer").is_none()));
    calitrace::assert_nothing_attached(&lab, 0, "eth0");
}

#[test]
fn the_filter_matches_an_encapsulated_packet_by_its_inner_or_outer_headers() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let (a, b) = pods(&lab);
    let by_pod = trace(&lab, 0, &["host", &b.ip], || {
        assert!(lab.ping(&a, &b.ip, 2));
    });
    let up = packets(&by_pod, &a.ip, &b.ip, "eth0", "egress");
    assert!(
        !up.is_empty(),
        "`host POD` sees the uplink\n{}",
        by_pod.dump()
    );
    assert_vxlan_outer(up[0], &lab, 0, 1);

    let node_b = lab.node(1).underlay_ip.clone();
    let by_node = trace(&lab, 0, &["host", &node_b], || {
        assert!(lab.ping(&a, &b.ip, 2));
    });
    assert!(
        !packets(&by_node, &a.ip, &b.ip, "eth0", "egress").is_empty(),
        "`host NODE` matches the outer headers\n{}",
        by_node.dump()
    );
    assert!(
        packets(&by_node, &a.ip, &b.ip, &a.cali, "ingress").is_empty(),
        "but not the pod's packet before the tunnel\n{}",
        by_node.dump()
    );
    // The pods' packets on cali* and in the tunnel device never reach the
    // parser: their addresses alone turn them away (4 pings, each way, at
    // least on cali* and vxlan.calico).
    let stats = by_node.of_type("stats");
    let prefiltered = stats[0]["events"]["tc_prefiltered"].as_u64();
    assert!(
        prefiltered >= Some(8),
        "tc_prefiltered {prefiltered:?}\n{}",
        by_node.dump()
    );
}

#[test]
fn a_drop_on_the_receiving_node_has_the_uplink_hop_with_the_outer_headers() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let (a, b) = pods(&lab);
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let f = trace(&lab, 1, &[], || {
        assert!(!lab.ping(&a, &b.ip, 2));
    });
    let drops = f.drops();
    let d = Finished::between(&drops, &a.ip, &b.ip);
    assert!(!d.is_empty(), "the drop is reported\n{}", f.dump());
    assert_eq!(d[0]["reason"], "NETFILTER_DROP", "{}", d[0]);
    let journey = d[0]["journey"].as_array().expect("a journey");
    let uplink = journey
        .iter()
        .find(|h| h["ifname"] == "eth0" && h["dir"] == "ingress")
        .unwrap_or_else(|| panic!("the journey starts on the uplink: {}", d[0]));
    let o = &uplink["outer"];
    assert_eq!(o["encap"], "vxlan", "{uplink}");
    assert_eq!(o["src"], lab.node(0).underlay_ip.as_str());
    assert_eq!(o["dst"], lab.node(1).underlay_ip.as_str());
    assert_eq!(o["dport"], u64::from(VXLAN_PORT));
    assert!(
        journey
            .iter()
            .any(|h| h["ifname"] == "vxlan.calico" && h.get("outer").is_none()),
        "then out of the tunnel: {}",
        d[0]
    );
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calitrace-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn recordings_replay_and_export_encapsulated_packets() {
    let dir = tmpdir("encap");
    let file = dir.join("vxlan.calitrace");
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let (a, b) = pods(&lab);
    let live = trace(&lab, 0, &["-w", file.to_str().unwrap(), "icmp"], || {
        assert!(lab.ping(&a, &b.ip, 2));
    });
    let replayed = calitrace::run(
        None,
        &[],
        &["replay", file.to_str().unwrap(), "--output", "json"],
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(replayed.status.success(), "{}", replayed.dump());
    let encapsulated = |f: &Finished| -> Vec<Value> {
        f.of_type("packet")
            .into_iter()
            .filter(|p| p.get("outer").is_some())
            .cloned()
            .collect()
    };
    let (l, r) = (encapsulated(&live), encapsulated(&replayed));
    assert!(!l.is_empty(), "{}", live.dump());
    assert_eq!(l, r, "replay shows the same encapsulated packets");

    let pcap = dir.join("out.pcapng");
    let out = Command::new(calitrace::binary())
        .args(["replay", file.to_str().unwrap(), "--output", "pcap"])
        .stdout(std::fs::File::create(&pcap).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tshark = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "frame.comment",
        ])
        .output()
        .expect("tshark is installed");
    let text = String::from_utf8_lossy(&tshark.stdout);
    assert!(
        text.lines()
            .any(|row| row.starts_with(&format!("{}\t{}\t", a.ip, b.ip))
                && row.contains("\"outer\"")),
        "the inner packet, with the outer headers in its comment:\n{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ipip_uplink_packets_are_the_pods_packets_and_a_drop_after_the_tunnel_keeps_the_hop() {
    if kernel::must_skip(kernel::IPIP) {
        return;
    }
    let lab = Lab::new(Mode::Ipip).unwrap();
    let (a, b) = pods(&lab);
    let f = trace(&lab, 0, &[], || {
        assert!(lab.ping(&a, &b.ip, 2), "ping works in the IPIP lab");
    });
    let out = packets(&f, &a.ip, &b.ip, "eth0", "egress");
    assert!(
        !out.is_empty(),
        "the ping leaves eth0 as the pod's packet\n{}",
        f.dump()
    );
    for p in &out {
        let o = &p["outer"];
        assert_eq!(o["encap"], "ipip", "{p}");
        assert_eq!(o["src"], lab.node(0).underlay_ip.as_str(), "{p}");
        assert_eq!(o["dst"], lab.node(1).underlay_ip.as_str(), "{p}");
        assert_eq!(o["proto"], 4, "{p}");
        assert!(o["dport"].is_null() && o["vni"].is_null(), "{p}");
        assert_eq!(o["len"].as_u64(), p["len"].as_u64().map(|l| l + 20), "{p}");
    }
    let inner = packets(&f, &a.ip, &b.ip, IPIP_DEV, "egress");
    assert!(
        !inner.is_empty() && inner.iter().all(|p| p.get("outer").is_none()),
        "the tunnel device sees the packet itself\n{}",
        f.dump()
    );

    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let f = trace(&lab, 1, &[], || {
        assert!(!lab.ping(&a, &b.ip, 2));
    });
    let drops = f.drops();
    let d = Finished::between(&drops, &a.ip, &b.ip);
    assert!(!d.is_empty(), "the drop is reported\n{}", f.dump());
    let uplink = d[0]["journey"]
        .as_array()
        .and_then(|j| {
            j.iter()
                .find(|h| h["ifname"] == "eth0" && h["dir"] == "ingress")
        })
        .unwrap_or_else(|| panic!("the journey starts on the uplink: {}", d[0]));
    assert_eq!(uplink["outer"]["encap"], "ipip", "{uplink}");
    assert_eq!(uplink["outer"]["src"], lab.node(0).underlay_ip.as_str());
}
