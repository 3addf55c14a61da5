//! API discovery as a real server answers it (`/api`, `/apis` and each group
//! version's resource list): kubectl maps `get pods` to a path through it
//! before anything else. Only the resources calitrace uses are listed.

use serde_json::{Value, json};

/// `GET /api`.
pub fn core_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server }],
    })
}

/// `GET /apis`.
pub fn groups() -> Value {
    let group = |name: &str| {
        let gv = json!({ "groupVersion": format!("{name}/v1"), "version": "v1" });
        json!({ "name": name, "versions": [gv.clone()], "preferredVersion": gv })
    };
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group("apps"), group("authorization.k8s.io")],
    })
}

fn resource(
    name: &str,
    singular: &str,
    namespaced: bool,
    kind: &str,
    verbs: &[&str],
    short: &[&str],
) -> Value {
    json!({
        "name": name,
        "singularName": singular,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": verbs,
        "shortNames": short,
    })
}

/// `GET /api/v1`, `/apis/apps/v1`, `/apis/authorization.k8s.io/v1`.
pub fn resources(group_version: &str) -> Option<Value> {
    let list = match group_version {
        "v1" => vec![
            resource(
                "namespaces",
                "namespace",
                false,
                "Namespace",
                &["get"],
                &["ns"],
            ),
            resource("nodes", "node", false, "Node", &["get", "list"], &["no"]),
            resource(
                "pods",
                "pod",
                true,
                "Pod",
                &["create", "delete", "get", "list"],
                &["po"],
            ),
            resource(
                "pods/exec",
                "",
                true,
                "PodExecOptions",
                &["create", "get"],
                &[],
            ),
        ],
        "apps/v1" => vec![resource(
            "daemonsets",
            "daemonset",
            true,
            "DaemonSet",
            &["get"],
            &["ds"],
        )],
        "authorization.k8s.io/v1" => vec![resource(
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            false,
            "SelfSubjectAccessReview",
            &["create"],
            &[],
        )],
        _ => return None,
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}
