//! `calitrace cluster --k8s` against a stand-in API server: client -> API
//! server -> `calitrace agent` in each lab node (exec over WebSocket) ->
//! merge, and the errors a user meets on a real cluster.

use std::time::Duration;

use calitrace_tests::apiserver::{ApiServer, FakeNode, Protocols};
use calitrace_tests::calitrace::{self, Finished, Trace};
use calitrace_tests::k8s_lab::{cluster_of, env, k8s_run, k8s_view, start, with_operator_rbac};
use calitrace_tests::lab::FabricDrop;
use calitrace_tests::{Lab, Mode};
use serde_json::{Value, json};

/// A stand-in cluster without a lab (for errors that come before any agent).
fn bare_cluster() -> ApiServer {
    let node = |name: &str, ready| FakeNode {
        name: name.into(),
        netns: "no-such-netns".into(),
        ready,
        address: "192.0.2.1".into(),
    };
    let api = ApiServer::start(
        vec![node("node-a", true), node("node-b", false)],
        &calitrace::binary(),
    )
    .unwrap();
    api.add_pod(
        "shop",
        "frontend-0",
        "node-a",
        "10.244.1.10",
        json!({}),
        false,
    );
    api
}

fn pod(ns: &str, name: &str) -> Value {
    json!({ "namespace": ns, "name": name })
}

fn ephemeral_pods(api: &ApiServer) -> Vec<String> {
    api.pod_names()
        .into_iter()
        .filter(|p| {
            p.starts_with("calitrace/calitrace-agent-")
                && !p.ends_with("-node-a")
                && !p.ends_with("-node-b")
        })
        .collect()
}

#[test]
fn an_underlay_drop_through_the_api_server_names_the_pods() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_drop(FabricDrop::ToNet("10.244.0.0/16")).unwrap();
    let api = cluster_of(&lab, true);
    with_operator_rbac(&api);
    let f = k8s_view(&api, &["--pods", "shop/frontend-0,shop/backend-0"], || {
        assert!(!lab.ping(&a, &b.ip, 3), "the fabric drops pod traffic");
    });
    assert!(f.status.success(), "{}", f.dump());
    let d = f
        .diagnoses()
        .into_iter()
        .rfind(|d| d["code"] == "UNDERLAY_DROP")
        .unwrap_or_else(|| panic!("an UNDERLAY_DROP\n{}", f.dump()))
        .clone();
    assert_eq!(
        (&d["src"], &d["dst"]),
        (&a.ip.as_str().into(), &b.ip.as_str().into())
    );
    assert_eq!(
        (&d["src_node"], &d["dst_node"]),
        (&"node-a".into(), &"node-b".into())
    );
    assert_eq!(d["src_pod"], pod("shop", "frontend-0"), "{}", f.dump());
    assert_eq!(d["dst_pod"], pod("shop", "backend-0"), "{}", f.dump());
    let packets = f.of_type("packet");
    assert!(
        packets
            .iter()
            .any(|p| p["src_pod"] == pod("shop", "frontend-0")),
        "packets name their pods\n{}",
        f.dump()
    );
    api.with(|s| {
        assert_eq!(s.exec_protocols, ["v5.channel.k8s.io"; 2], "exec over v5");
        assert!(
            s.created.is_empty(),
            "the DaemonSet's agents are used: {:?}",
            s.created
        );
        let execs: Vec<&String> = s.log.iter().filter(|l| l.contains("/exec?")).collect();
        assert_eq!(execs.len(), 2, "{:?}", s.log);
        // The pods' addresses are the FILTER; the agent runs with the host root.
        for e in execs {
            assert!(e.contains("command=--host-root&command=%2Fhost"), "{e}");
            assert!(e.contains(&format!("command=host&command={}", a.ip)), "{e}");
        }
    });
}

#[test]
fn a_v4_only_api_server_carries_the_streams_too() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let api = cluster_of(&lab, true);
    api.with(|s| s.protocols = Protocols::V4Only);
    let f = k8s_view(&api, &["--nodes", "node-a,node-b"], || {
        assert!(lab.ping(&a, &b.ip, 3), "ping works in the lab");
    });
    assert!(f.status.success(), "{}", f.dump());
    let packets = f.of_type("packet");
    let flow = Finished::between(&packets, &a.ip, &b.ip);
    for node in ["node-a", "node-b"] {
        assert!(
            flow.iter().any(|p| p["node"] == node),
            "seen on {node}\n{}",
            f.dump()
        );
    }
    api.with(|s| assert_eq!(s.exec_protocols, ["v4.channel.k8s.io"; 2]));
}

#[test]
fn ephemeral_agent_pods_run_after_pending_and_are_deleted_at_the_end() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let api = cluster_of(&lab, false);
    with_operator_rbac(&api);
    api.with(|s| s.pending_for = Duration::from_millis(1500));
    let t = start(&api, &["--nodes", "node-a,node-b"]);
    let created = api.with(|s| s.created.clone());
    assert_eq!(created.len(), 2, "one agent pod per node: {created:?}");
    let objects: Vec<Value> = api.with(|s| s.pods.values().map(|p| p.object.clone()).collect());
    for node in ["node-a", "node-b"] {
        let p = objects
            .iter()
            .find(|o| {
                o["spec"]["nodeName"] == node
                    && o["metadata"]["labels"]["app.kubernetes.io/component"] == "ephemeral-agent"
            })
            .unwrap_or_else(|| panic!("an ephemeral agent pod on {node}: {objects:?}"));
        assert!(
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("calitrace-agent-{node}-"))
        );
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["image"], concat!("calitrace:", env!("CARGO_PKG_VERSION")));
        assert_eq!(c["securityContext"]["privileged"], true);
        assert_eq!(p["spec"]["hostNetwork"], true);
        assert_eq!(
            p["spec"]["activeDeadlineSeconds"],
            4 * 3600,
            "the bound without --duration"
        );
    }
    let polls = api.with(|s| {
        s.log
            .iter()
            .filter(|l| l.starts_with("GET /api/v1/namespaces/calitrace/pods/calitrace-agent-"))
            .count()
    });
    assert!(polls >= 4, "the client waited for Running: {polls} polls");
    assert!(lab.ping(&a, &b.ip, 2));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    assert!(!f.of_type("packet").is_empty(), "{}", f.dump());
    assert_eq!(
        ephemeral_pods(&api),
        Vec::<String>::new(),
        "deleted at the end\n{}",
        f.stderr
    );
    let mut deleted = api.with(|s| s.deleted.clone());
    let mut created = created;
    deleted.sort();
    created.sort();
    assert_eq!(deleted, created, "exactly the pods it made");
    assert!(
        f.stderr.contains("deleted the ephemeral agent pod"),
        "{}",
        f.stderr
    );
}

#[test]
fn sigterm_deletes_the_ephemeral_agent_pods() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, false);
    let t = start(&api, &["--ephemeral", "--nodes", "node-a,node-b"]);
    assert_eq!(ephemeral_pods(&api).len(), 2);
    let f = t.stop_with(libc::SIGTERM).unwrap();
    assert!(f.status.success(), "{}", f.dump());
    assert_eq!(ephemeral_pods(&api), Vec::<String>::new(), "{}", f.stderr);
}

#[test]
fn cleanup_removes_every_ephemeral_agent_pod_and_nothing_else() {
    let api = bare_cluster();
    let eph = json!({ "app.kubernetes.io/name": "calitrace", "app.kubernetes.io/component": "ephemeral-agent" });
    api.add_pod(
        "calitrace",
        "calitrace-agent-node-a-0a0a0a",
        "node-a",
        "192.0.2.1",
        eph.clone(),
        true,
    );
    api.add_pod(
        "calitrace",
        "calitrace-agent-node-b-1b1b1b",
        "node-b",
        "192.0.2.2",
        eph,
        true,
    );
    api.add_daemonset_pod(&api.with(|s| s.nodes[0].clone()));
    with_operator_rbac(&api);
    let f = k8s_run(&api, &["--cleanup"]);
    // The DaemonSet's pod then runs `calitrace cleanup`: node-a of this
    // cluster has no lab netns, so there it fails, and says so.
    assert_eq!(f.status.code(), Some(1), "{}", f.dump());
    assert!(f.stdout.contains("node-a: cleanup failed"), "{}", f.stdout);
    assert!(
        f.stderr.contains("cleanup did not finish on node-a"),
        "{}",
        f.stderr
    );
    assert!(
        f.stdout
            .contains("removed calitrace/calitrace-agent-node-a-0a0a0a (node node-a)"),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout
            .contains("removed calitrace/calitrace-agent-node-b-1b1b1b"),
        "{}",
        f.stdout
    );
    assert_eq!(
        api.pod_names(),
        ["calitrace/calitrace-agent-node-a", "shop/frontend-0"],
        "the DaemonSet's and other pods stay"
    );
    let again = k8s_run(&api, &["--cleanup"]);
    assert!(
        again.stdout.contains("no ephemeral agent pod"),
        "{}",
        again.stdout
    );
}

#[test]
fn forbidden_names_the_verb_and_the_resource() {
    let api = bare_cluster();
    api.add_daemonset_pod(&api.with(|s| s.nodes[0].clone()));
    api.with(|s| s.forbidden.push(("list".into(), "pods".into())));
    let f = k8s_run(&api, &["--nodes", "node-a"]);
    assert_eq!(f.status.code(), Some(2), "{}", f.dump());
    assert!(
        f.stderr
            .contains("needs the verb `list` on `pods` cluster-wide"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr
            .contains("User \"tester\" cannot list resource \"pods\""),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("deploy/operator-rbac.yaml"),
        "{}",
        f.stderr
    );

    api.with(|s| s.forbidden = vec![("create".into(), "pods/exec".into())]);
    let f = k8s_run(&api, &["--nodes", "node-a"]);
    assert_eq!(f.status.code(), Some(2), "{}", f.dump());
    assert!(
        f.stderr
            .contains("`create` on `pods/exec` in namespace calitrace"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr
            .contains("kubectl auth can-i create pods/exec -n calitrace"),
        "{}",
        f.stderr
    );
}

#[test]
fn no_agent_and_no_right_to_make_one() {
    let api = bare_cluster();
    api.with(|s| s.forbidden.push(("create".into(), "pods".into())));
    let f = k8s_run(&api, &["--nodes", "node-a"]);
    assert_eq!(f.status.code(), Some(2), "{}", f.dump());
    assert!(
        f.stderr.contains("no calitrace agent on node node-a"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("kubectl apply -k deploy/"),
        "{}",
        f.stderr
    );
}

#[test]
fn no_kubeconfig_says_where_it_looked() {
    let home = std::env::temp_dir().join(format!("calitrace-nohome-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let h = format!("HOME={}", home.display());
    let prefix = [
        "env",
        "-u",
        "KUBECONFIG",
        "-u",
        "KUBERNETES_SERVICE_HOST",
        h.as_str(),
    ];
    let f = calitrace::run(
        None,
        &prefix,
        &["cluster", "--k8s", "--all-nodes"],
        Duration::from_secs(30),
    )
    .unwrap();
    std::fs::remove_dir_all(&home).ok();
    assert_eq!(f.status.code(), Some(2), "{}", f.dump());
    assert!(f.stderr.contains("no kubeconfig"), "{}", f.stderr);
    assert!(f.stderr.contains("--kubeconfig"), "{}", f.stderr);
}

#[test]
fn a_node_that_is_not_ready_is_named() {
    let api = bare_cluster();
    let f = k8s_run(&api, &["--nodes", "node-b"]);
    assert_eq!(f.status.code(), Some(2), "{}", f.dump());
    assert!(
        f.stderr
            .contains("node node-b is not Ready (Ready=Unknown, NodeStatusUnknown"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("kubectl describe node node-b"),
        "{}",
        f.stderr
    );
}

#[test]
fn an_image_that_cannot_be_pulled_is_named_and_its_pod_deleted() {
    let api = bare_cluster();
    api.with(|s| s.image_pull_fails = true);
    let f = k8s_run(
        &api,
        &[
            "--ephemeral",
            "--nodes",
            "node-a",
            "--image",
            "example.invalid/calitrace:0",
        ],
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.dump());
    assert!(
        f.stderr
            .contains("the image example.invalid/calitrace:0 cannot be pulled (ImagePullBackOff"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("--image"), "{}", f.stderr);
    let (created, deleted) = api.with(|s| (s.created.clone(), s.deleted.clone()));
    assert_eq!(created.len(), 1);
    assert_eq!(deleted, created, "the pod that never ran is deleted");
}

#[test]
fn an_unknown_pod_is_named() {
    let api = bare_cluster();
    let f = k8s_run(&api, &["--pods", "shop/nope"]);
    assert_eq!(f.status.code(), Some(2), "{}", f.dump());
    assert!(f.stderr.contains("unknown pod shop/nope"), "{}", f.stderr);
    assert!(
        f.stderr.contains("kubectl get pods -n shop"),
        "{}",
        f.stderr
    );
}

/// The README's capture: `cluster --k8s -o text` on an underlay fault.
/// `cargo test -p calitrace-tests --test k8s -- --ignored --nocapture readme`
#[test]
#[ignore]
fn readme_capture() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    lab.fabric_drop(FabricDrop::ToNet("10.244.0.0/16")).unwrap();
    let api = cluster_of(&lab, true);
    let f = k8s_view(
        &api,
        &[
            "--pods",
            "shop/frontend-0,shop/backend-0",
            "--drops-only",
            "-o",
            "text",
        ],
        || {
            lab.ping(&a, &b.ip, 3);
        },
    );
    println!("{}\n--- stderr ---\n{}", f.stdout, f.stderr);
    api.with(|s| s.forbidden.push(("create".into(), "pods/exec".into())));
    let f = k8s_run(&api, &["--pods", "shop/frontend-0,shop/backend-0"]);
    println!(
        "--- forbidden exec: exit {:?} ---\n{}",
        f.status.code(),
        f.stderr
    );
}

#[test]
fn as_a_kubectl_plugin_cluster_goes_through_the_api_server() {
    let api = bare_cluster();
    let dir = std::env::temp_dir().join(format!("calitrace-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("kubectl-calitrace");
    std::fs::remove_file(&link).ok();
    std::os::unix::fs::symlink(calitrace::binary(), &link).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output();
    let out = |args: &[&str]| {
        // Through kubectl's plugin lookup where kubectl is installed, else
        // as kubectl would start it.
        let mut c = match &kubectl {
            Ok(o) if o.status.success() => {
                let mut c = std::process::Command::new("kubectl");
                c.arg("calitrace");
                c
            }
            _ => std::process::Command::new(&link),
        };
        c.args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", api.kubeconfig())
            .output()
            .unwrap()
    };
    let help = out(&["cluster", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(help.contains("Usage: kubectl calitrace cluster"), "{help}");
    // `kubectl calitrace status` is the cluster's status.
    let status = out(&["status", "--nodes", "node-a"]);
    let said = String::from_utf8_lossy(&status.stdout).to_string();
    assert_eq!(status.status.code(), Some(1), "{said}");
    assert!(said.contains("node-a: no ready agent"), "{said}");
    let f = out(&["cluster", "--pods", "shop/nope"]);
    let err = String::from_utf8_lossy(&f.stderr).to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(f.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown pod shop/nope"),
        "--k8s is implied: {err}"
    );
    assert!(api.with(|s| {
        s.log
            .iter()
            .any(|l| l.contains("/namespaces/shop/pods/nope"))
    }));
}

#[test]
fn the_end_of_duration_deletes_the_ephemeral_agent_pods() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, false);
    let f = k8s_run(
        &api,
        &["--nodes", "node-a", "--duration", "3", "-o", "json"],
    );
    assert!(f.status.success(), "{}", f.dump());
    assert_eq!(f.of_type("stats").len(), 1, "{}", f.dump());
    assert_eq!(api.with(|s| s.created.len()), 1);
    // A client cut off leaves no privileged pod beyond the session: 3 s and
    // the start's allowance.
    let pod = api.with(|s| s.created_pods[0].clone());
    assert_eq!(pod["spec"]["activeDeadlineSeconds"], 303, "{pod}");
    assert_eq!(ephemeral_pods(&api), Vec::<String>::new(), "{}", f.stderr);
}

#[test]
fn ctrl_c_while_an_agent_pod_is_pending_deletes_it() {
    let api = bare_cluster();
    api.with(|s| s.pending_for = Duration::from_secs(60));
    let e = env(&api);
    let t =
        Trace::start_plain(&[&e[0], &e[1]], &["cluster", "--k8s", "--nodes", "node-a"]).unwrap();
    let began = std::time::Instant::now();
    while api.with(|s| s.created.is_empty()) && began.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ephemeral_pods(&api).len(), 1, "an agent pod waits to run");
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    assert!(
        f.stderr.contains("stopped before every agent had started"),
        "{}",
        f.stderr
    );
    assert_eq!(ephemeral_pods(&api), Vec::<String>::new(), "{}", f.stderr);
}

/// The lab's two nodes and a third, node-c (no lab node behind it: its
/// agent's netns is `node_c_netns`), with the DaemonSet's agents where
/// `daemonset` says, in node order.
fn three_nodes(lab: &Lab, node_c_netns: &str, daemonset: [bool; 3]) -> ApiServer {
    let api = cluster_of(lab, false);
    api.with(|s| {
        s.nodes.push(FakeNode {
            name: "node-c".into(),
            netns: node_c_netns.into(),
            ready: true,
            address: "192.0.2.3".into(),
        })
    });
    let nodes = api.with(|s| s.nodes.clone());
    for (n, on) in nodes.iter().zip(daemonset) {
        if on {
            api.add_daemonset_pod(n);
        }
    }
    api
}

/// `cluster --k8s --all-nodes` while pod A pings pod B: node-a and node-b
/// must trace whatever happens to node-c.
fn all_nodes_with_a_broken_one(lab: &Lab, api: &ApiServer) -> Finished {
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let f = k8s_view(api, &["--all-nodes"], || {
        assert!(lab.ping(&a, &b.ip, 2), "ping works in the lab");
    });
    assert_eq!(f.status.code(), Some(1), "a node failed\n{}", f.dump());
    assert!(
        f.stderr.contains("1 of 3 node(s) failed: node-c"),
        "{}",
        f.stderr
    );
    for node in ["node-a", "node-b"] {
        assert!(
            f.of_type("packet").iter().any(|p| p["node"] == node),
            "{node} traced on\n{}",
            f.dump()
        );
    }
    f
}

/// node-c's stats: its `exit` says why it failed.
fn node_c_exit(f: &Finished) -> String {
    let stats = f.of_type("stats");
    let c = stats
        .iter()
        .rfind(|s| s["node"] == "node-c")
        .unwrap_or_else(|| panic!("node-c's stats\n{}", f.dump()));
    c["exit"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_node_whose_kubelet_cannot_be_reached_is_shown_and_the_others_trace() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = three_nodes(&lab, "no-such-netns", [true; 3]);
    api.with(|s| s.unreachable_kubelets.push("node-c".into()));
    let f = all_nodes_with_a_broken_one(&lab, &api);
    assert!(
        f.stderr.contains(
            "node-c: the agent could not start, the other nodes trace on: the API server cannot reach this node's kubelet"
        ),
        "{}",
        f.stderr
    );
    assert!(
        node_c_exit(&f).contains("error dialing backend"),
        "{}",
        f.dump()
    );
}

#[test]
fn a_node_whose_agent_pod_cannot_pull_its_image_is_shown_and_the_others_trace() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = three_nodes(&lab, "no-such-netns", [true, true, false]);
    api.with(|s| s.image_pull_fails_on.push("node-c".into()));
    let f = all_nodes_with_a_broken_one(&lab, &api);
    assert!(node_c_exit(&f).contains("cannot be pulled"), "{}", f.dump());
    let (created, deleted) = api.with(|s| (s.created.clone(), s.deleted.clone()));
    assert_eq!(created.len(), 1, "node-c's ephemeral agent pod");
    assert_eq!(deleted, created, "and it is deleted");
}

#[test]
fn a_node_whose_agent_dies_is_shown_and_the_others_trace() {
    let lab = Lab::new(Mode::Direct).unwrap();
    // The exec runs `ip netns exec` into a netns that does not exist: the
    // agent ends at once, with an error on stderr.
    let api = three_nodes(&lab, "ctlab-no-such-netns", [true; 3]);
    let f = all_nodes_with_a_broken_one(&lab, &api);
    assert!(f.stderr.contains("node-c: agent ended"), "{}", f.stderr);
    assert!(!node_c_exit(&f).is_empty(), "{}", f.dump());
}

/// `calitrace cluster --k8s ARGS` ends with `code`, its stderr saying
/// each of `says` and none of `not`.
fn k8s_fails(api: &ApiServer, args: &[&str], code: i32, says: &[&str], not: &[&str]) {
    let f = k8s_run(api, args);
    assert_eq!(f.status.code(), Some(code), "{}", f.dump());
    for s in says {
        assert!(f.stderr.contains(s), "{s:?} in\n{}", f.stderr);
    }
    for s in not {
        assert!(!f.stderr.contains(s), "no {s:?} in\n{}", f.stderr);
    }
}

#[test]
fn pod_security_admission_and_webhooks_are_named_not_taken_for_rbac() {
    let api = bare_cluster();
    api.with(|s| {
        s.pod_security
            .insert("calitrace".into(), "baseline:latest".into())
    });
    let ephemeral = ["--ephemeral", "--nodes", "node-a"];
    k8s_fails(
        &api,
        &ephemeral,
        2,
        &[
            "Pod Security admission refused the agent pod in namespace calitrace: it enforces \"baseline:latest\"",
            "hostNetwork=true",
            "kubectl label namespace calitrace pod-security.kubernetes.io/enforce=privileged",
        ],
        &["operator-rbac"],
    );
    api.with(|s| {
        s.pod_security.clear();
        s.webhook_denies = Some((
            "validate.kyverno.svc-fail".into(),
            "resource Pod/calitrace/x was blocked due to the following policies: disallow-privileged-containers".into(),
        ));
    });
    k8s_fails(
        &api,
        &ephemeral,
        2,
        &[
            "the admission webhook validate.kyverno.svc-fail refused to create pods",
            "disallow-privileged-containers",
        ],
        &["operator-rbac"],
    );
}

#[test]
fn ephemeral_agent_pods_follow_the_live_daemonsets_template_and_image_wins() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, false);
    with_operator_rbac(&api);
    // The operator's DaemonSet: its own registry, pull secret and priority
    // class; no pod of it runs on node-a.
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/agent-daemonset.yaml"
    );
    let mut ds: Value = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let spec = &mut ds["spec"]["template"]["spec"];
    spec["containers"][0]["image"] = json!("registry.example/ops/calitrace:0.1.0");
    spec["imagePullSecrets"] = json!([{"name": "regcred"}]);
    spec["priorityClassName"] = json!("system-node-critical");
    api.with(|s| {
        s.daemonsets
            .insert(("calitrace".into(), "calitrace-agent".into()), ds)
    });
    let args = ["--nodes", "node-a", "--duration", "3", "-o", "json"];
    let f = k8s_run(&api, &args);
    assert!(f.status.success(), "{}", f.dump());
    assert!(
        f.stderr
            .contains("ephemeral agent pods follow the DaemonSet calitrace/calitrace-agent"),
        "{}",
        f.stderr
    );
    let pod = api.with(|s| s.created_pods[0].clone());
    let spec = &pod["spec"];
    assert_eq!(
        spec["containers"][0]["image"], "registry.example/ops/calitrace:0.1.0",
        "{pod}"
    );
    assert_eq!(spec["imagePullSecrets"][0]["name"], "regcred", "{pod}");
    assert_eq!(spec["priorityClassName"], "system-node-critical", "{pod}");
    assert_eq!(spec["nodeName"], "node-a", "{pod}");

    let mut with_image = args.to_vec();
    with_image.extend(["--image", "mine:1"]);
    let f = k8s_run(&api, &with_image);
    assert!(f.status.success(), "{}", f.dump());
    let pod = api.with(|s| s.created_pods[1].clone());
    assert_eq!(pod["spec"]["containers"][0]["image"], "mine:1", "{pod}");

    // Not allowed to read it: said, and the built-in template serves.
    api.with(|s| s.forbidden.push(("get".into(), "daemonsets".into())));
    let f = k8s_run(&api, &args);
    assert!(f.status.success(), "{}", f.dump());
    assert!(
        f.stderr
            .contains("cannot read the DaemonSet calitrace/calitrace-agent"),
        "{}",
        f.stderr
    );
    let pod = api.with(|s| s.created_pods[2].clone());
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        concat!("calitrace:", env!("CARGO_PKG_VERSION")),
        "{pod}"
    );
    assert!(pod["spec"]["imagePullSecrets"].is_null(), "{pod}");
}
