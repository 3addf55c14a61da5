//! The API objects the stand-in serves, as the real server writes them
//! (JSON: pods, nodes, lists, Status).

use serde_json::{Value, json};

/// A Status error as the API server sends it.
pub fn status(code: u16, reason: &str, message: &str, kind: &str, name: Option<&str>) -> Value {
    let mut details = json!({ "kind": kind });
    if let Some(n) = name {
        details["name"] = n.into();
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    })
}

pub fn success() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" })
}

/// The message of a real 403: who cannot do what, where.
pub fn forbidden_message(
    verb: &str,
    resource: &str,
    name: Option<&str>,
    ns: Option<&str>,
) -> String {
    let base = resource.split('/').next().unwrap_or(resource);
    let what = match name {
        Some(n) => format!("{base} \"{n}\" is forbidden"),
        None => format!("{base} is forbidden"),
    };
    let scope = match ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    format!(
        "{what}: User \"tester\" cannot {verb} resource \"{resource}\" in API group \"\" {scope}"
    )
}

pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": "v1",
        "metadata": { "resourceVersion": "1" },
        "items": items,
    })
}

pub fn node(name: &str, ready: bool, address: &str) -> Value {
    let condition = if ready {
        json!({ "type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status" })
    } else {
        json!({ "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status." })
    };
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        "spec": {},
        "status": {
            "conditions": [condition],
            "addresses": [{ "type": "InternalIP", "address": address }],
        },
    })
}

/// A running pod on `node`.
pub fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value, host_network: bool) -> Value {
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": { "name": name, "namespace": ns, "labels": labels, "uid": format!("uid-{ns}-{name}") },
        "spec": {
            "nodeName": node,
            "hostNetwork": host_network,
            "containers": [{ "name": "agent", "image": "calitrace:test" }],
        },
        "status": running_status(ip),
    })
}

pub fn running_status(ip: &str) -> Value {
    json!({
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{ "ip": ip }],
        "conditions": [{ "type": "PodScheduled", "status": "True" }, { "type": "Ready", "status": "True" }],
        "containerStatuses": [{
            "name": "agent", "image": "calitrace:test", "imageID": "", "ready": true, "restartCount": 0,
            "state": { "running": { "startedAt": "2026-11-29T00:00:00Z" } },
        }],
    })
}

/// A pod that waits: `reason` is ContainerCreating, ImagePullBackOff, ...
pub fn waiting_status(reason: &str, message: &str) -> Value {
    json!({
        "phase": "Pending",
        "conditions": [{ "type": "PodScheduled", "status": "True" }],
        "containerStatuses": [{
            "name": "agent", "image": "calitrace:test", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": reason, "message": message } },
        }],
    })
}

/// Does `obj` match a `k=v,k2=v2` label selector and a `path=value` field
/// selector (only the forms the client uses)?
pub fn matches(obj: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let label_ok = labels.is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            obj["metadata"]["labels"][k] == v
        })
    });
    let field_ok = fields.is_none_or(|sel| {
        sel.split(',').filter(|s| !s.is_empty()).all(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "spec.nodeName" => obj["spec"]["nodeName"] == v,
                "metadata.name" => obj["metadata"]["name"] == v,
                "metadata.namespace" => obj["metadata"]["namespace"] == v,
                _ => false,
            }
        })
    });
    label_ok && field_ok
}

/// What admission says of a pod about to be created: Pod Security
/// admission where the namespace enforces a level other than `privileged`,
/// then the webhook, with the Status bodies a real API server sends
/// (`violates PodSecurity %q: %s`, 403; `admission webhook %q denied the
/// request: %s`, 400 unless the webhook sets a code). None: admitted.
pub fn admission(
    s: &super::State,
    ns: &str,
    name: &str,
    pod: &Value,
) -> Option<http::Response<super::routes::Body>> {
    use http::StatusCode;
    let forbidden = |m: String| format!("pods \"{name}\" is forbidden: {m}");
    if let Some(level) = s
        .pod_security
        .get(ns)
        .filter(|l| !l.starts_with("privileged"))
    {
        let violations = baseline_violations(pod);
        if !violations.is_empty() {
            let m = forbidden(format!(
                "violates PodSecurity \"{level}\": {}",
                violations.join(", ")
            ));
            return Some(super::routes::json(
                StatusCode::FORBIDDEN,
                &status(403, "Forbidden", &m, "pods", Some(name)),
            ));
        }
    }
    let (hook, why) = s.webhook_denies.as_ref()?;
    let m = format!("admission webhook \"{hook}\" denied the request: {why}");
    Some(super::routes::json(
        StatusCode::BAD_REQUEST,
        &status(400, "BadRequest", &m, "pods", Some(name)),
    ))
}

/// The Pod Security baseline checks a pod fails, worded as the admission
/// plugin words them, in its order.
fn baseline_violations(pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    let mut out = Vec::new();
    let hosts: Vec<&str> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|k| spec[*k] == true)
        .collect();
    if !hosts.is_empty() {
        let set: Vec<String> = hosts.iter().map(|k| format!("{k}=true")).collect();
        out.push(format!("host namespaces ({})", set.join(", ")));
    }
    let host_paths: Vec<String> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| !v["hostPath"].is_null())
        .filter_map(|v| v["name"].as_str().map(|n| format!("\"{n}\"")))
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        out.push(format!(
            "hostPath volumes ({noun} {})",
            host_paths.join(", ")
        ));
    }
    for c in spec["containers"].as_array().into_iter().flatten() {
        if c["securityContext"]["privileged"] == true {
            let name = c["name"].as_str().unwrap_or("");
            out.push(format!(
                "privileged (container \"{name}\" must not set securityContext.privileged=true)"
            ));
        }
    }
    out
}
