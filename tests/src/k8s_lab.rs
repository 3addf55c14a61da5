//! The stand-in cluster of a two-node lab, and `calitrace cluster --k8s`
//! run against it: what the `cluster --k8s` tests share.

use std::time::Duration;

use serde_json::json;

use crate::Lab;
use crate::apiserver::{ApiServer, FakeNode, rbac};
use crate::calitrace::{self, Finished, Trace};

/// The stand-in cluster of a lab: its two nodes, with or without the
/// DaemonSet's agents, and one application pod on each.
pub fn cluster_of(lab: &Lab, daemonset: bool) -> ApiServer {
    let nodes: Vec<FakeNode> = ["node-a", "node-b"]
        .iter()
        .enumerate()
        .map(|(i, name)| FakeNode {
            name: name.to_string(),
            netns: lab.node(i).netns.clone(),
            ready: true,
            address: lab.node(i).underlay_ip.clone(),
        })
        .collect();
    let api =
        ApiServer::start(nodes.clone(), &calitrace::binary()).expect("the stand-in API server");
    if daemonset {
        for n in &nodes {
            api.add_daemonset_pod(n);
        }
    }
    let app = |tier: &str| json!({ "app": "shop", "tier": tier });
    api.add_pod(
        "shop",
        "frontend-0",
        "node-a",
        &lab.pod(0, 0).ip,
        app("frontend"),
        false,
    );
    api.add_pod(
        "shop",
        "backend-0",
        "node-b",
        &lab.pod(1, 0).ip,
        app("backend"),
        false,
    );
    api
}

/// Only what deploy/operator-rbac.yaml allows is allowed.
pub fn with_operator_rbac(api: &ApiServer) {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/operator-rbac.yaml");
    let rules = rbac::rules(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(!rules.is_empty());
    api.with(|s| s.rbac = Some(rules));
}

pub fn env(api: &ApiServer) -> [String; 2] {
    [
        "env".into(),
        format!("KUBECONFIG={}", api.kubeconfig().display()),
    ]
}

/// `calitrace cluster --k8s ARGS` while `traffic` runs.
pub fn k8s_view(api: &ApiServer, args: &[&str], traffic: impl FnOnce()) -> Finished {
    let t = start(api, args);
    traffic();
    std::thread::sleep(Duration::from_millis(2500));
    let f = t.stop().expect("the cluster view stops");
    if std::env::var_os("CALITRACE_TEST_DUMP").is_some() {
        eprintln!("{}", f.dump());
    }
    f
}

pub fn start(api: &ApiServer, args: &[&str]) -> Trace {
    let e = env(api);
    let prefix: Vec<&str> = e.iter().map(String::as_str).collect();
    let mut full = vec!["cluster", "--k8s"];
    full.extend_from_slice(args);
    if !args.contains(&"-o") {
        full.extend(["-o", "json"]);
    }
    Trace::start_agents(&prefix, &full, 2).expect("both agents trace through the API server")
}

/// Runs a `cluster --k8s` that is expected to end by itself.
pub fn k8s_run(api: &ApiServer, args: &[&str]) -> Finished {
    let e = env(api);
    let prefix: Vec<&str> = e.iter().map(String::as_str).collect();
    let mut full = vec!["cluster", "--k8s"];
    full.extend_from_slice(args);
    calitrace::run(None, &prefix, &full, Duration::from_secs(60)).unwrap()
}
