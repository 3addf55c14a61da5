//! `calitrace cluster --k8s --status` (`kubectl calitrace status`) against
//! the stand-in API server: per node whether an agent is ready, its version,
//! kernel, dataplane and failed doctor checks, and whether the caller may
//! make each API call of `cluster --k8s` (SelfSubjectAccessReview answered by
//! the stand-in's RBAC). Also `calitrace status` on a node.

use calitrace_tests::apiserver::{ApiServer, FakeNode};
use calitrace_tests::calitrace;
use calitrace_tests::k8s_lab::{cluster_of, k8s_run, with_operator_rbac};
use calitrace_tests::{Lab, Mode};
use serde_json::Value;

fn node(name: &str, netns: &str, ready: bool) -> FakeNode {
    FakeNode {
        name: name.into(),
        netns: netns.into(),
        ready,
        address: "192.0.2.9".into(),
    }
}

#[test]
fn status_on_a_node_is_one_json_line_and_its_exit_says_whether_it_can_trace() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let netns = lab.node(0).netns.clone();
    lab.sysctl(&netns, "net.ipv4.ip_forward", "0").unwrap();
    let f = calitrace::run(
        Some(&netns),
        &[],
        &["status"],
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    assert!(f.status.success(), "{}", f.stderr);
    let v: Value = serde_json::from_str(f.stdout.trim()).unwrap();
    assert_eq!(v["type"], "node_status");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["cannot_trace"], Value::Null);
    assert!(v["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    assert_eq!(v["failed_checks"], serde_json::json!(["ip_forward"]), "{v}");
    // Without the privileges to load programs: it says so, exit 1.
    let f = calitrace::run(
        Some(&netns),
        &[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ],
        &["status"],
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(f.status.code(), Some(1), "{}\n{}", f.stdout, f.stderr);
    let v: Value = serde_json::from_str(f.stdout.trim()).unwrap();
    assert!(
        v["cannot_trace"]
            .as_str()
            .is_some_and(|w| w.contains("missing privileges")),
        "{v}"
    );
    assert!(
        f.stderr.contains("this node cannot be traced"),
        "{}",
        f.stderr
    );
}

/// With every node's agent ready and every call allowed: each node ready
/// with its kernel and failed doctor checks, every call ticked, exit 0.
fn assert_all_ready_and_allowed(api: &ApiServer) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();

    let f = k8s_run(api, &["--status"]);
    assert_eq!(f.status.code(), Some(0), "{}", f.dump());
    assert!(f.stdout.contains("node-a: ready\n"), "{}", f.stdout);
    assert!(f.stdout.contains("node-b: ready\n"), "{}", f.stdout);
    assert!(
        f.stdout.contains(&format!("kernel {}", kernel.trim())),
        "{}",
        f.stdout
    );
    // A failed doctor check is the node's problem, not the agent's.
    assert!(
        f.stdout.contains("doctor's failed checks: ip_forward"),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout.contains("doctor's failed checks: none"),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout.contains("✓ create pods/exec in calitrace"),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout.contains("✓ list pods cluster-wide"),
        "{}",
        f.stdout
    );
    assert!(!f.stdout.contains('✗'), "{}", f.stdout);
}

/// Adds nodes without a ready agent (node-c, node-d, node-e) and forbids
/// deleting pods: each node's reason and the refused call are said, exit 1.
fn assert_unready_agents_and_refused_calls_said(api: &ApiServer) {
    // node-c: no DaemonSet pod; node-d: its kubelet unreachable; node-e:
    // not Ready; and the caller may not delete pods.
    api.with(|s| {
        s.nodes.push(node("node-c", "no-such-netns", true));
        s.nodes.push(node("node-d", "no-such-netns", true));
        s.nodes.push(node("node-e", "no-such-netns", false));
        s.unreachable_kubelets.push("node-d".into());
        s.forbidden.push(("delete".into(), "pods".into()));
    });
    api.add_daemonset_pod(&node("node-d", "no-such-netns", true));
    let f = k8s_run(api, &["--status"]);
    if std::env::var_os("CALITRACE_TEST_DUMP").is_some() {
        eprintln!("{}", f.stdout);
    }
    assert_eq!(f.status.code(), Some(1), "{}", f.dump());
    for says in [
        "node-a: ready",
        "node-c: no ready agent: the DaemonSet calitrace-agent has no running pod on it",
        "node-d: no ready agent:",
        "error dialing backend",
        "node-e: no ready agent: the node is not Ready (Ready=Unknown",
        "✗ delete pods in calitrace (ephemeral agent pods, --cleanup)",
        "✓ get pods/exec in calitrace",
    ] {
        assert!(f.stdout.contains(says), "{says:?} in\n{}", f.stdout);
    }
    assert!(
        f.stderr
            .contains("no ready agent on node-c, node-d, node-e, and 1 API call(s) refused"),
        "{}",
        f.stderr
    );
}

/// `--nodes node-a` with agents of version 0.0.9: only node-a, its agent's
/// older version named, exit 1.
fn assert_an_older_agent_named(api: &ApiServer) {
    let dir = std::env::temp_dir().join(format!("calitrace-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let older = dir.join("calitrace-0.0.9");
    std::fs::write(
        &older,
        "#!/bin/sh\necho '{\"type\":\"node_status\",\"version\":\"0.0.9\",\"kernel\":\"5.10.0\",\"cannot_trace\":null,\"dataplane\":\"Calico in iptables mode\",\"failed_checks\":[]}'\n",
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&older).unwrap().permissions(),
        0o755,
    );
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&older)
        .status()
        .unwrap();
    api.with(|s| {
        s.forbidden.clear();
        s.calitrace = older.clone();
    });
    let f = k8s_run(api, &["--status", "--nodes", "node-a"]);
    assert_eq!(f.status.code(), Some(1), "{}", f.dump());
    assert!(
        f.stdout.contains(&format!(
            "node-a: ready, but calitrace 0.0.9 (this client {}): upgrade the older one",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        f.stdout
    );
    assert!(!f.stdout.contains("node-b"), "{}", f.stdout);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cluster_status_shows_each_nodes_agent_and_the_calls_the_caller_may_make() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, true);
    with_operator_rbac(&api);
    lab.sysctl(&lab.node(1).netns, "net.ipv4.ip_forward", "0")
        .unwrap();
    assert_all_ready_and_allowed(&api);
    assert_unready_agents_and_refused_calls_said(&api);

    // --nodes: only those; an agent of another version is named.
    assert_an_older_agent_named(&api);
}
