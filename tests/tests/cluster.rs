//! `calitrace cluster`: two agents, one per lab node, merged into one view.

use std::time::Duration;

use calitrace_tests::calitrace::{Finished, Trace};
use calitrace_tests::{Lab, Mode};
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
    items.iter().copied().filter(|v| v["node"] == node).collect()
}

#[test]
fn healthy_direct_traffic_is_seen_on_both_nodes_with_no_diagnosis() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let f = cluster(&lab, &["-w", "/tmp/cl.calitrace"], || {
        assert!(lab.ping(&a, &b.ip, 3), "ping works in the lab");
    });
    let all: Vec<&Value> = f.lines.iter().collect();
    assert!(all.iter().all(|r| r["node"].is_string()), "every record names its node\n{}", f.dump());
    let packets = f.of_type("packet");
    let flow = Finished::between(&packets, &a.ip, &b.ip);
    for (node, dir) in [("node-a", "egress"), ("node-b", "ingress")] {
        assert!(
            on(&flow, node).iter().any(|p| p["ifname"] == "eth0" && p["dir"] == dir),
            "the ping is seen on {node}'s eth0 {dir}\n{}",
            f.dump()
        );
    }
    let diags = f.diagnoses();
    assert!(
        diags.iter().all(|d| !d["code"].as_str().unwrap_or("").starts_with("UNDERLAY")),
        "no underlay diagnosis for healthy traffic\n{}",
        f.dump()
    );
    let stats = f.of_type("stats");
    assert_eq!(stats.len(), 2, "one stats line per node\n{}", f.dump());
}
