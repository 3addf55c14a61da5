//! The ephemeral agent pod: the DaemonSet's own pod template, pinned to one
//! node, with a label of its own, so that the two never drift apart. The
//! template is the live DaemonSet's where it exists (the operator's image,
//! registry, pull secrets, volumes, tolerations, priority class, resources),
//! else the one built into the binary (`deploy/agent-daemonset.yaml`).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ObjectMeta;

const DAEMONSET: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/agent-daemonset.yaml"
));

/// The label every calitrace pod carries, and the one that tells the
/// ephemeral agents from the DaemonSet's.
pub const NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "calitrace");
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const DAEMONSET_COMPONENT: &str = "agent";
pub const EPHEMERAL_COMPONENT: &str = "ephemeral-agent";
/// The agent's container in both kinds of pod.
pub const CONTAINER: &str = "agent";

pub fn selector(component: &str) -> String {
    format!("{}={},{COMPONENT}={component}", NAME_LABEL.0, NAME_LABEL.1)
}

/// The DaemonSet's name, in the agents' namespace.
pub const DAEMONSET_NAME: &str = "calitrace-agent";

/// The image of ephemeral agent pods when neither `--image` nor a live
/// DaemonSet names one.
pub const DEFAULT_IMAGE: &str = concat!("calitrace:", env!("CARGO_PKG_VERSION"));

/// The DaemonSet as deployed from `deploy/`.
pub fn daemonset() -> Result<DaemonSet> {
    serde_saphyr::from_str(DAEMONSET).context("deploy/agent-daemonset.yaml as built in")
}

/// How long an ephemeral agent pod may live without `--duration`: a client
/// SIGKILLed or cut off leaves no privileged pod beyond this (the kubelet
/// ends it); `--cleanup` removes it sooner.
pub const EPHEMERAL_LIFETIME_S: i64 = 4 * 3600;
/// What a session with `--duration` is given beyond it: the pod's start
/// (image pull included) and the session's own end.
const START_ALLOWANCE_S: i64 = 300;

/// `activeDeadlineSeconds` of an ephemeral agent pod for a session of
/// `duration` seconds (None: until stopped).
pub fn deadline_s(duration: Option<f64>) -> i64 {
    match duration {
        Some(d) if d.is_finite() && d > 0.0 => d.ceil() as i64 + START_ALLOWANCE_S,
        _ => EPHEMERAL_LIFETIME_S,
    }
}

/// An agent pod for `node`, named `calitrace-agent-<node>-<suffix>`, that
/// the kubelet ends after `deadline_s` seconds.
/// `template`: the live DaemonSet, else the built-in one; `image`: `--image`,
/// which wins over the template's.
pub fn ephemeral_pod(
    node: &str,
    namespace: &str,
    template: Option<&DaemonSet>,
    image: Option<&str>,
    suffix: &str,
    deadline_s: i64,
) -> Result<Pod> {
    let template = match template {
        Some(ds) => ds.spec.template.clone(),
        None => daemonset()?.spec.template,
    };
    let mut spec = template.spec.context("the DaemonSet has a pod spec")?;
    spec.node_name = Some(node.to_string());
    spec.active_deadline_seconds = Some(deadline_s);
    // It runs `calitrace standby` until deleted: a restart would only hide
    // a failure.
    spec.restart_policy = Some("Never".into());
    let agent = spec
        .containers
        .iter_mut()
        .find(|c| c.name == CONTAINER)
        .context("the DaemonSet's pod has an `agent` container")?;
    if let Some(image) = image {
        agent.image = Some(image.to_string());
    }
    if agent.image.as_deref().is_none_or(str::is_empty) {
        agent.image = Some(DEFAULT_IMAGE.to_string());
    }
    let mut labels: BTreeMap<String, String> =
        template.metadata.and_then(|m| m.labels).unwrap_or_default();
    labels.insert(COMPONENT.into(), EPHEMERAL_COMPONENT.into());
    labels.insert(NAME_LABEL.0.into(), NAME_LABEL.1.into());
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(node, suffix)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// `calitrace-agent-<node>-<suffix>`, within the 253 characters of a name.
fn pod_name(node: &str, suffix: &str) -> String {
    let room = 253 - "calitrace-agent--".len() - suffix.len();
    let node: String = node.chars().take(room).collect();
    format!(
        "calitrace-agent-{}-{suffix}",
        node.trim_end_matches(['.', '-'])
    )
}

/// A short random suffix (pod names must be unique; a killed client's pods
/// may still be there).
pub fn suffix() -> String {
    let mut b = [0u8; 3];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id();
        b = [t as u8, (t >> 8) as u8, (t >> 16) as u8];
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an operator can run as shipped: Linux nodes only, seccomp said
    /// explicitly, and nothing that keeps the pod from starting where the
    /// kernel lacks BTF (doctor says so instead).
    #[test]
    fn the_daemonset_runs_on_linux_nodes_with_seccomp_said_and_no_btf_mount() {
        let spec = daemonset().unwrap().spec.template.spec.unwrap();
        let selector = spec.node_selector.clone().unwrap_or_default();
        assert_eq!(
            selector.get("kubernetes.io/os").map(String::as_str),
            Some("linux")
        );
        let agent = spec
            .containers
            .iter()
            .find(|c| c.name == CONTAINER)
            .unwrap();
        let seccomp = agent
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str());
        assert_eq!(seccomp, Some("Unconfined"));
        for v in spec.volumes.iter().flatten() {
            let path = v.host_path.as_ref().map(|h| h.path.as_str()).unwrap_or("");
            assert!(!path.starts_with("/sys"), "{} mounts {path}", v.name);
        }
    }

    #[test]
    fn the_ephemeral_pod_is_the_daemonsets_template_on_one_node() {
        let ds = daemonset().unwrap();
        let spec = ds.spec;
        let template = spec.template.spec.clone().unwrap();
        let selector = spec.selector.match_labels.unwrap();
        let pod = ephemeral_pod(
            "node-a",
            "calitrace",
            None,
            Some("registry.example/calitrace:9"),
            "0a1b2c",
            deadline_s(Some(60.0)),
        )
        .unwrap();
        let mut got = pod.spec.clone().unwrap();
        assert_eq!(got.node_name.as_deref(), Some("node-a"));
        assert_eq!(got.active_deadline_seconds, Some(360));
        assert_eq!(deadline_s(None), EPHEMERAL_LIFETIME_S);
        assert_eq!(got.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            got.containers[0].image.as_deref(),
            Some("registry.example/calitrace:9")
        );
        // Everything else is the template's.
        got.node_name = template.node_name.clone();
        got.restart_policy = template.restart_policy.clone();
        got.active_deadline_seconds = template.active_deadline_seconds;
        got.containers[0].image = template.containers[0].image.clone();
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::to_value(&template).unwrap()
        );
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[COMPONENT], EPHEMERAL_COMPONENT);
        assert_eq!(selector[COMPONENT], DAEMONSET_COMPONENT);
        assert_eq!(
            pod.metadata.name.as_deref(),
            Some("calitrace-agent-node-a-0a1b2c")
        );
        assert_eq!(suffix().len(), 6);
    }

    /// The operator's own DaemonSet (registry, pull secret, toleration,
    /// priority class) is what an ephemeral pod is made of; `--image` wins.
    #[test]
    fn the_live_daemonsets_template_is_followed_and_image_wins() {
        let mut ds = daemonset().unwrap();
        let spec = ds.spec.template.spec.as_mut().unwrap();
        spec.containers[0].image = Some("registry.example/ops/calitrace:0.1.0".into());
        spec.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: "regcred".into(),
        }]);
        spec.priority_class_name = Some("system-node-critical".into());
        let pod = ephemeral_pod("node-a", "calitrace", Some(&ds), None, "0a", 60).unwrap();
        let got = pod.spec.unwrap();
        assert_eq!(
            got.containers[0].image.as_deref(),
            Some("registry.example/ops/calitrace:0.1.0")
        );
        assert_eq!(got.image_pull_secrets.unwrap()[0].name, "regcred");
        assert_eq!(
            got.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        let pod =
            ephemeral_pod("node-a", "calitrace", Some(&ds), Some("mine:1"), "0a", 60).unwrap();
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("mine:1")
        );
        // Without either, the built-in template's image.
        let pod = ephemeral_pod("node-a", "calitrace", None, None, "0a", 60).unwrap();
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some(DEFAULT_IMAGE)
        );
    }
}
