//! The stand-in API server checked against a real client: kubectl (the
//! machine's) makes the calls calitrace makes (get and list with label and
//! field selectors, create and delete a pod, exec with stdin and stdout over
//! WebSocket, SelfSubjectAccessReview) and must get what a real API server
//! answers; a difference is the stand-in's to fix before calitrace's.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use calitrace_tests::apiserver::ApiServer;
use calitrace_tests::k8s_lab::cluster_of;
use calitrace_tests::{Lab, Mode};
use serde_json::Value;

fn kubectl(api: &ApiServer, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(args)
        .output()
        .expect("kubectl is installed (the machine's image has it)")
}

fn ok(api: &ApiServer, args: &[&str]) -> String {
    let o = kubectl(api, args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(
        o.status.success(),
        "kubectl {args:?}: {}\n{out}\n{err}",
        o.status
    );
    out
}

fn json(api: &ApiServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&ok(api, &a)).unwrap()
}

/// `kubectl exec` of `calitrace COMMAND --host-root /host` in the agent
/// container of `pod`, as calitrace execs it (`-i`: with stdin).
fn exec_args<'a>(pod: &'a str, stdin: bool, command: &'a str) -> Vec<&'a str> {
    let mut a = vec!["exec"];
    if stdin {
        a.push("-i");
    }
    a.extend([
        "-n",
        "calitrace",
        pod,
        "-c",
        "agent",
        "--",
        "/usr/bin/calitrace",
    ]);
    a.extend([command, "--host-root", "/host"]);
    a
}

fn names(list: &Value) -> Vec<String> {
    let mut n: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn kubectl_gets_and_lists_what_calitrace_gets_and_lists() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, true);
    assert_eq!(names(&json(&api, &["get", "nodes"])), ["node-a", "node-b"]);
    let node = json(&api, &["get", "node", "node-b"]);
    assert_eq!(node["status"]["conditions"][0]["type"], "Ready");
    let on_a = json(
        &api,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=node-a",
        ],
    );
    assert_eq!(names(&on_a), ["calitrace-agent-node-a", "frontend-0"]);
    let agent = ok(
        &api,
        &[
            "get",
            "pods",
            "-n",
            "calitrace",
            "-l",
            "app.kubernetes.io/name=calitrace,app.kubernetes.io/component=agent",
            "--field-selector",
            "spec.nodeName=node-b",
            "-o",
            "name",
        ],
    );
    assert_eq!(agent.trim(), "pod/calitrace-agent-node-b");
    let pod = json(&api, &["get", "pod", "-n", "shop", "frontend-0"]);
    assert_eq!(pod["status"]["podIPs"][0]["ip"], lab.pod(0, 0).ip.as_str());
    // A real server's NotFound, as kubectl prints it.
    let missing = kubectl(&api, &["get", "pod", "-n", "shop", "nope"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("Error from server (NotFound): pods \"nope\" not found"),
        "{err}\n{:?}",
        api.with(|s| s.log.iter().rev().take(4).cloned().collect::<Vec<_>>())
    );
}

/// Creates with kubectl the ephemeral agent pod calitrace would make on
/// node-a, from a file as calitrace makes it; returns its name.
fn create_ephemeral_agent_pod(api: &ApiServer) -> String {
    // The pod calitrace would make, as calitrace makes it.
    let pod = tracer_user::run::k8s::podspec::ephemeral_pod(
        "node-a",
        "calitrace",
        None,
        None,
        "kctl01",
        600,
    )
    .unwrap();
    let name = pod.metadata.name.clone().unwrap();
    let file = std::env::temp_dir().join(format!("calitrace-kubectl-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_string(&pod).unwrap()).unwrap();
    // --validate=false: kubectl's own check against the server's OpenAPI
    // documents, which calitrace never fetches (the stand-in serves none).
    let created = ok(
        api,
        &["create", "--validate=false", "-f", file.to_str().unwrap()],
    );
    std::fs::remove_file(&file).ok();
    assert!(
        created.contains(&format!("pod/{name} created")),
        "{created}"
    );
    name
}

/// Waits (30 s at most) until kubectl says the pod `name` is Running.
fn wait_running(api: &ApiServer, name: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let phase = ok(
            api,
            &[
                "get",
                "pod",
                "-n",
                "calitrace",
                name,
                "-o",
                "jsonpath={.status.phase}",
            ],
        );
        if phase == "Running" {
            break;
        }
        assert!(Instant::now() < until, "still {phase}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `kubectl exec -i` of the agent in pod `name`: it streams a recording on
/// stdout until its stdin closes.
fn exec_an_agent_with_stdin(api: &ApiServer, name: &str) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(exec_args(name, true, "agent"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {err}", out.status);
    assert!(err.contains("recording stream on stdout"), "{err}");
    assert!(!out.stdout.is_empty(), "the recording stream came through");
    assert!(
        out.stdout
            .starts_with(tracer_user::recording::format::MAGIC),
        "a recording stream: {err}"
    );
}

/// Deletes the pod `name` with kubectl; the stand-in terminates it.
fn delete_pod(api: &ApiServer, name: &str) {
    let deleted = ok(
        api,
        &["delete", "pod", "-n", "calitrace", name, "--wait=false"],
    );
    assert!(
        deleted.contains(&format!("pod \"{name}\" deleted")),
        "{deleted}"
    );
    assert!(
        api.wait_terminated("calitrace", name, Duration::from_secs(60))
            .is_some()
    );
}

#[test]
fn kubectl_creates_execs_into_and_deletes_an_ephemeral_agent_pod() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, false);
    let name = create_ephemeral_agent_pod(&api);
    wait_running(&api, &name);

    // Exec with stdout only: the node's status.
    let status = ok(&api, &exec_args(&name, false, "status"));
    let v: Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(v["type"], "node_status", "{status}");

    // Exec with stdin: an agent that streams until its stdin closes.
    exec_an_agent_with_stdin(&api, &name);

    delete_pod(&api, &name);
}

#[test]
fn a_selfsubjectaccessreview_gets_the_standins_rbac_answers() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, true);
    api.with(|s| s.forbidden.push(("delete".into(), "pods".into())));
    // As calitrace's client sends it: JSON (kubectl's `auth can-i` sends
    // protobuf, which the stand-in does not read).
    let review = |verb: &str, resource: &str, sub: &str| -> bool {
        let body = serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": { "resourceAttributes": {
                "verb": verb, "resource": resource, "subresource": sub, "namespace": "calitrace",
            }},
        });
        let file =
            std::env::temp_dir().join(format!("calitrace-ssar-{}-{verb}.json", std::process::id()));
        std::fs::write(&file, body.to_string()).unwrap();
        let v = json(
            &api,
            &["create", "--validate=false", "-f", file.to_str().unwrap()],
        );
        std::fs::remove_file(&file).ok();
        v["status"]["allowed"].as_bool().expect("status.allowed")
    };
    assert!(review("create", "pods", "exec"));
    assert!(!review("delete", "pods", ""));
    let forbidden = kubectl(
        &api,
        &["delete", "pod", "-n", "calitrace", "calitrace-agent-node-a"],
    );
    assert!(!forbidden.status.success());
    let err = String::from_utf8_lossy(&forbidden.stderr);
    assert!(err.contains("Error from server (Forbidden)"), "{err}");
}
