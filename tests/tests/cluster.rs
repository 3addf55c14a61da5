//! `calitrace cluster`: two agents, one per lab node, merged into one view;
//! faults between the nodes are made in the lab's fabric.

use std::path::PathBuf;
use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::lab::FabricDrop;
use calitrace_tests::{Backend, Lab, Mode, kernel};
use serde_json::Value;

/// Runs a cluster view of both lab nodes while `traffic` runs.
fn cluster(lab: &Lab, args: &[&str], traffic: impl FnOnce()) -> Finished {
    let nodes = [
        ("node-a", lab.node(0).netns.as_str()),
        ("node-b", lab.node(1).netns.as_str()),
    ];
    let t = Trace::start_cluster(&nodes, args).expect("the cluster view starts");
    traffic();
    // The underlay window (1 s) must pass on the receiving node.
    std::thread::sleep(Duration::from_millis(2500));
    let f = t.stop().expect("the cluster view stops");
    assert!(f.status.success(), "calitrace cluster failed\n{}", f.dump());
    if std::env::var_os("CALITRACE_TEST_DUMP").is_some() {
        eprintln!("{}", f.dump());
    }
    f
}

fn on<'a>(items: &[&'a Value], node: &str) -> Vec<&'a Value> {
    items
        .iter()
        .copied()
        .filter(|v| v["node"] == node)
        .collect()
}

fn with_code<'a>(f: &'a Finished, code: &str) -> Vec<&'a Value> {
    f.diagnoses()
        .into_iter()
        .filter(|d| d["code"] == code)
        .collect()
}

fn no_underlay(f: &Finished) -> bool {
    f.diagnoses()
        .iter()
        .all(|d| !d["code"].as_str().unwrap_or("").starts_with("UNDERLAY"))
}

/// A file for a recording, removed with the test's lab directory.
fn temp_file(lab: &Lab, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("calitrace-{}", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The last count of each diagnosis, by what it is about.
fn final_diagnoses(lines: &[Value]) -> Vec<String> {
    let mut last = std::collections::BTreeMap::new();
    for d in lines.iter().filter(|l| l["type"] == "diagnosis") {
        let key = format!(
            "{} {} {} > {} {}>{}",
            d["code"], d["node"], d["src"], d["dst"], d["src_node"], d["dst_node"]
        );
        last.insert(key, d["count"].clone());
    }
    last.into_iter().map(|(k, c)| format!("{k} x{c}")).collect()
}

fn replay_json(files: &[&PathBuf]) -> Vec<Value> {
    let mut args: Vec<String> = ["replay", "-o", "json"].map(String::from).to_vec();
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let f = calitrace::run(None, &[], &args, Duration::from_secs(60)).unwrap();
    assert!(f.status.success(), "replay failed\n{}", f.dump());
    f.lines
}

#[test]
fn healthy_direct_traffic_is_seen_on_both_nodes_and_replays_the_same() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let file = temp_file(&lab, "healthy.calitrace");
    let f = cluster(&lab, &["-w", file.to_str().unwrap()], || {
        assert!(lab.ping(&a, &b.ip, 3), "ping works in the lab");
    });
    assert!(
        f.lines.iter().all(|r| r["node"].is_string()),
        "every record names its node\n{}",
        f.dump()
    );
    let packets = f.of_type("packet");
    let flow = Finished::between(&packets, &a.ip, &b.ip);
    for (node, dir) in [("node-a", "egress"), ("node-b", "ingress")] {
        assert!(
            on(&flow, node)
                .iter()
                .any(|p| p["ifname"] == "eth0" && p["dir"] == dir),
            "the ping is seen on {node}'s eth0 {dir}\n{}",
            f.dump()
        );
    }
    assert!(no_underlay(&f), "healthy traffic\n{}", f.dump());
    assert_eq!(
        f.of_type("stats").len(),
        2,
        "one stats line per node\n{}",
        f.dump()
    );

    let replayed = replay_json(&[&file]);
    assert_eq!(final_diagnoses(&replayed), final_diagnoses(&f.lines));
    let count = |lines: &[Value], node: &str| {
        lines
            .iter()
            .filter(|l| l["type"] == "packet" && l["node"] == node)
            .count()
    };
    for node in ["node-a", "node-b"] {
        assert_eq!(
            count(&replayed, node),
            count(&f.lines, node),
            "{node}'s packets"
        );
    }
    std::fs::remove_dir_all(file.parent().unwrap()).ok();
}

#[test]
fn fabric_dropping_pod_addresses_is_an_underlay_drop_in_direct_mode() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_drop(FabricDrop::ToNet("10.244.0.0/16")).unwrap();
    let file = temp_file(&lab, "dropped.calitrace");
    let f = cluster(&lab, &["-w", file.to_str().unwrap()], || {
        assert!(!lab.ping(&a, &b.ip, 3), "the fabric drops pod traffic");
    });
    let d = with_code(&f, "UNDERLAY_DROP");
    let d = d
        .last()
        .unwrap_or_else(|| panic!("an UNDERLAY_DROP\n{}", f.dump()));
    assert_eq!(
        (
            &d["src"],
            &d["dst"],
            &d["src_node"],
            &d["dst_node"],
            &d["encap"]
        ),
        (
            &a.ip.as_str().into(),
            &b.ip.as_str().into(),
            &"node-a".into(),
            &"node-b".into(),
            &"none".into()
        ),
        "{}",
        f.dump()
    );
    assert!(d["count"].as_u64().unwrap() >= 2, "{}", f.dump());
    assert!(d["hint"].as_str().unwrap().contains("source/destination"));
    assert_eq!(
        final_diagnoses(&replay_json(&[&file])),
        final_diagnoses(&f.lines)
    );
    std::fs::remove_dir_all(file.parent().unwrap()).ok();
}

#[test]
fn replies_lost_on_the_way_back_name_the_answering_node() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    // Only what goes to node A's pods: the replies.
    lab.sh(
        lab.fabric_netns(),
        &format!(
            "nft add table bridge replies; nft add chain bridge replies f '{{ type filter hook forward priority 0; }}'; nft add rule bridge replies f ip daddr {} drop",
            lab.node(0).pod_cidr
        ),
    )
    .unwrap();
    let f = cluster(&lab, &[], || {
        assert!(!lab.ping(&a, &b.ip, 3), "replies cannot come back");
    });
    let d = with_code(&f, "UNDERLAY_DROP");
    assert!(
        d.iter()
            .all(|d| d["src_node"] == "node-b" && d["src"] == b.ip.as_str()),
        "only the replies are lost\n{}",
        f.dump()
    );
    assert!(!d.is_empty(), "{}", f.dump());
}

#[test]
fn only_big_packets_lost_between_nodes_is_the_underlay_mtu() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_mtu(1200).unwrap();
    let f = cluster(&lab, &[], || {
        assert!(lab.ping(&a, &b.ip, 2), "small packets pass");
        for _ in 0..3 {
            assert!(!lab.ping_df(&a.netns, &b.ip, 1300), "big ones do not");
        }
    });
    let d = with_code(&f, "UNDERLAY_MTU");
    let d = d
        .last()
        .unwrap_or_else(|| panic!("an UNDERLAY_MTU\n{}", f.dump()));
    assert_eq!(d["src_node"], "node-a");
    assert_eq!(d["smallest_lost"], 1328, "{}", f.dump());
    assert!(
        d["largest_delivered"].as_u64().unwrap() < 1200,
        "{}",
        f.dump()
    );
    assert!(d["hint"].as_str().unwrap().contains("MTU"), "{}", f.dump());
}

#[test]
fn a_netfilter_drop_on_the_receiving_node_is_no_underlay_problem() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    let f = cluster(&lab, &[], || {
        assert!(!lab.ping(&a, &b.ip, 3));
    });
    let nf = with_code(&f, "NETFILTER_DROP");
    assert!(
        nf.iter()
            .any(|d| d["node"] == "node-b" && d["chain"] == "FORWARD"),
        "{}",
        f.dump()
    );
    assert!(no_underlay(&f), "the packets arrived\n{}", f.dump());
    let drops = f.drops();
    let drop = drops
        .iter()
        .find(|d| d["node"] == "node-b" && d["src"] == a.ip.as_str())
        .unwrap_or_else(|| panic!("the drop on node-b\n{}", f.dump()));
    let journey = drop["journey"].as_array().unwrap();
    let nodes: Vec<&str> = journey.iter().filter_map(|h| h["node"].as_str()).collect();
    assert_eq!(nodes.first(), Some(&"node-a"), "{}", f.dump());
    assert_eq!(nodes.last(), Some(&"node-b"), "{}", f.dump());
}

#[test]
fn no_underlay_verdict_when_the_receiver_does_not_trace_its_uplink() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_drop(FabricDrop::ToNet("10.244.0.0/16")).unwrap();
    let f = cluster(&lab, &["--iface", "cali*"], || {
        assert!(!lab.ping(&a, &b.ip, 3));
    });
    assert!(no_underlay(&f), "nobody watched the uplinks\n{}", f.dump());
}

#[test]
fn an_agent_that_cannot_start_is_shown_and_the_other_goes_on() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let good = format!(
        "node-a=ip netns exec {} {}",
        lab.node(0).netns,
        calitrace::binary().display()
    );
    let args = [
        "cluster",
        "-o",
        "json",
        "--node",
        &good,
        "--node",
        "node-b=/nonexistent/calitrace",
    ];
    let mut t = Trace::start_plain(&[], &args).unwrap();
    t.wait_for_stderr(
        "node-a: agent on",
        calitrace::startup_limit(Duration::from_secs(90)),
    )
    .unwrap();
    lab.ping(&a, &b.ip, 2);
    let f = t.stop().unwrap();
    assert_eq!(f.status.code(), Some(1), "a node failed\n{}", f.dump());
    assert!(
        f.stderr.contains("1 of 2 node(s) failed: node-b"),
        "{}",
        f.stderr
    );
    let stats = f.of_type("stats");
    let bad = stats
        .iter()
        .find(|s| s["node"] == "node-b")
        .unwrap_or_else(|| panic!("node-b's stats\n{}", f.dump()));
    let exit = bad["exit"].as_str().unwrap_or_default();
    assert!(
        exit.contains("exit status: 127") && exit.contains("nonexistent"),
        "{exit}"
    );
    assert!(f.stderr.contains("node-b: agent ended"), "{}", f.stderr);
    assert!(
        f.of_type("packet").iter().any(|p| p["node"] == "node-a"),
        "node-a's agent went on\n{}",
        f.dump()
    );
}

#[test]
fn an_agent_that_dies_mid_run_is_shown_and_the_other_goes_on() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let bin = calitrace::binary();
    let nodes = [
        format!(
            "node-a=ip netns exec {} {}",
            lab.node(0).netns,
            bin.display()
        ),
        // Killed hard after 4 s: nothing of its own to say goodbye with.
        format!(
            "node-b=ip netns exec {} timeout -s KILL 4 {}",
            lab.node(1).netns,
            bin.display()
        ),
    ];
    let mut args = vec!["cluster", "-o", "json"];
    for n in &nodes {
        args.extend(["--node", n.as_str()]);
    }
    let mut t = Trace::start_plain(&[], &args).unwrap();
    let limit = calitrace::startup_limit(Duration::from_secs(90));
    t.wait_for_stderr("node-a: agent on", limit).unwrap();
    lab.ping(&a, &b.ip, 2);
    t.wait_for_stderr("node-b: agent ended", limit).unwrap();
    lab.ping(&a, &b.ip, 2);
    let f = t.stop().unwrap();
    assert_eq!(f.status.code(), Some(1), "a node failed\n{}", f.dump());
    assert!(
        f.stderr.contains("1 of 2 node(s) failed: node-b"),
        "{}",
        f.stderr
    );
    let stats = f.of_type("stats");
    let b_stats = stats.iter().find(|s| s["node"] == "node-b").unwrap();
    assert!(
        b_stats["exit"]
            .as_str()
            .is_some_and(|e| e.contains("signal: 9") || e.contains("137")),
        "{}",
        f.dump()
    );
    assert!(
        stats
            .iter()
            .any(|s| s["node"] == "node-a" && s["exit"].is_null()),
        "{}",
        f.dump()
    );
    // No verdict about packets node-b could no longer see.
    assert!(no_underlay(&f), "{}", f.dump());
    // Node B's agent is gone, and detached what it had attached.
    calitrace::assert_nothing_attached(&lab, 1, "eth0");
}

#[test]
fn two_single_node_recordings_replay_as_one_cluster_view() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_drop(FabricDrop::ToNet("10.244.0.0/16")).unwrap();
    let files = [
        temp_file(&lab, "node-a.calitrace"),
        temp_file(&lab, "node-b.calitrace"),
    ];
    let traces: Vec<Trace> = (0..2)
        .map(|i| Trace::start(&lab.node(i).netns, &["-w", files[i].to_str().unwrap()]).unwrap())
        .collect();
    assert!(!lab.ping(&a, &b.ip, 3));
    std::thread::sleep(Duration::from_millis(2500));
    for t in traces {
        assert!(t.stop().unwrap().status.success());
    }
    let lines = replay_json(&[&files[0], &files[1]]);
    let d: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "diagnosis" && l["code"] == "UNDERLAY_DROP")
        .collect();
    assert!(!d.is_empty(), "{lines:#?}");
    // Both nodes are named by their files (the lab's nodes share a host name).
    assert_eq!(
        (&d[0]["src_node"], &d[0]["dst_node"]),
        (&"node-a".into(), &"node-b".into())
    );
    std::fs::remove_dir_all(files[0].parent().unwrap()).ok();
}

#[test]
fn healthy_vxlan_traffic_is_matched_across_nodes_by_its_inner_headers() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let f = cluster(&lab, &[], || {
        assert!(lab.ping(&a, &b.ip, 3), "ping works in the lab");
    });
    let packets = f.of_type("packet");
    let flow = Finished::between(&packets, &a.ip, &b.ip);
    let uplink = |node: &str, dir: &str| {
        on(&flow, node)
            .into_iter()
            .find(|p| p["ifname"] == "eth0" && p["dir"] == dir)
            .unwrap_or_else(|| panic!("{node} eth0 {dir}\n{}", f.dump()))
    };
    let (sent, arrived) = (uplink("node-a", "egress"), uplink("node-b", "ingress"));
    for p in [sent, arrived] {
        assert_eq!(p["outer"]["encap"], "vxlan", "{p}");
        assert_eq!(p["outer"]["dst"], lab.node(1).underlay_ip.as_str(), "{p}");
    }
    assert!(no_underlay(&f), "healthy traffic\n{}", f.dump());
}

#[test]
fn fabric_dropping_vxlan_is_an_underlay_drop_with_the_outer_header() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_drop(FabricDrop::UdpPort(4789)).unwrap();
    let f = cluster(&lab, &[], || {
        assert!(!lab.ping(&a, &b.ip, 3), "the fabric drops VXLAN");
    });
    let d = with_code(&f, "UNDERLAY_DROP");
    let d = d
        .iter()
        .find(|d| d["src"] == a.ip.as_str())
        .unwrap_or_else(|| panic!("an UNDERLAY_DROP\n{}", f.dump()));
    assert_eq!(
        (&d["encap"], &d["src_node"], &d["dst_node"]),
        (&"vxlan".into(), &"node-a".into(), &"node-b".into())
    );
    assert_eq!(
        (
            &d["outer_src"],
            &d["outer_dst"],
            &d["outer_proto"],
            &d["outer_dport"]
        ),
        (
            &lab.node(0).underlay_ip.as_str().into(),
            &lab.node(1).underlay_ip.as_str().into(),
            &"udp".into(),
            &4789.into()
        ),
        "{}",
        f.dump()
    );
    assert!(
        d["hint"].as_str().unwrap().contains("UDP 4789"),
        "{}",
        f.dump()
    );
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .contains("encapsulated as VXLAN"),
        "{}",
        f.dump()
    );
}

#[test]
fn a_fabric_mtu_below_the_tunnels_is_the_underlay_mtu_in_vxlan_mode() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_mtu(1200).unwrap();
    let f = cluster(&lab, &[], || {
        assert!(lab.ping(&a, &b.ip, 2), "small packets pass");
        for _ in 0..3 {
            assert!(!lab.ping_df(&a.netns, &b.ip, 1300), "big ones do not");
        }
    });
    let d = with_code(&f, "UNDERLAY_MTU");
    let d = d
        .last()
        .unwrap_or_else(|| panic!("an UNDERLAY_MTU\n{}", f.dump()));
    assert_eq!(
        (&d["encap"], &d["src_node"]),
        (&"vxlan".into(), &"node-a".into())
    );
    // 1328 bytes inside, 50 of VXLAN around them.
    assert_eq!(d["smallest_lost"], 1378, "{}", f.dump());
    assert!(
        d["hint"].as_str().unwrap().contains("FELIX_VXLANMTU"),
        "{}",
        f.dump()
    );
}

#[test]
fn fabric_dropping_ipip_is_an_underlay_drop_named_ipip() {
    if kernel::must_skip(kernel::IPIP) {
        return;
    }
    let lab = Lab::new(Mode::Ipip).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_drop(FabricDrop::IpProto(4)).unwrap();
    let f = cluster(&lab, &[], || {
        assert!(!lab.ping(&a, &b.ip, 3), "the fabric drops IPIP");
    });
    let d = with_code(&f, "UNDERLAY_DROP");
    let d = d
        .iter()
        .find(|d| d["src"] == a.ip.as_str())
        .unwrap_or_else(|| panic!("an UNDERLAY_DROP\n{}", f.dump()));
    assert_eq!(
        (&d["encap"], &d["outer_dst"], &d["outer_proto"]),
        (
            &"ipip".into(),
            &lab.node(1).underlay_ip.as_str().into(),
            &4.into()
        ),
        "{}",
        f.dump()
    );
    assert!(
        d["hint"].as_str().unwrap().contains("IP protocol 4"),
        "{}",
        f.dump()
    );
}

#[test]
fn a_nodes_stream_says_where_its_pods_tunnels_and_uplink_are() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let file = temp_file(&lab, "node-a.calitrace");
    let t = Trace::start(&lab.node(0).netns, &["-w", file.to_str().unwrap()]).unwrap();
    assert!(t.stop().unwrap().status.success());
    let (header, _) = tracer_user::recording::reader::open(&file).unwrap();
    let topo = &header.facts.topology;
    assert_eq!(topo.uplinks, ["eth0"], "{topo:?}");
    let pod: std::net::IpAddr = lab.pod(0, 0).ip.parse().unwrap();
    assert!(topo.has_pod(pod), "{topo:?}");
    let vxlan = topo
        .tunnels
        .iter()
        .find(|t| t.name == "vxlan.calico")
        .unwrap_or_else(|| panic!("{topo:?}"));
    let b: std::net::IpAddr = lab.node(1).underlay_ip.parse().unwrap();
    assert_eq!(
        (vxlan.kind.as_str(), vxlan.remotes.as_slice()),
        ("vxlan", &[b][..])
    );
    assert!(
        header
            .facts
            .local_addrs
            .contains(&lab.node(0).underlay_ip.parse().unwrap()),
        "its own addresses"
    );
    std::fs::remove_dir_all(file.parent().unwrap()).ok();
}
