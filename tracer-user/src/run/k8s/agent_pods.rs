//! Where each node's agent runs: the DaemonSet's pod on the node, else (or
//! with `--ephemeral`) an agent pod made for this session, which is deleted
//! again on every way out.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use super::client::{Kube, Limit};
use super::error::{Call, explain, is_not_found, rbac_forbidden};
use super::podspec::{self, DAEMONSET_COMPONENT, EPHEMERAL_COMPONENT};
use crate::run::usage;

/// How long an ephemeral agent pod may take to run (image pull included).
const START_LIMIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

/// Waiting reasons that will not go away by waiting.
const IMAGE_FAILURES: [&str; 4] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// The ephemeral agent pods this session made; deleted by
/// [`EphemeralPods::delete_all`] or, failing that, when dropped.
pub struct EphemeralPods {
    api: Api<Pod>,
    daemonsets: Api<DaemonSet>,
    /// The live DaemonSet whose template ephemeral pods follow, read once.
    template: tokio::sync::OnceCell<Option<DaemonSet>>,
    handle: tokio::runtime::Handle,
    names: Mutex<Vec<String>>,
    namespace: String,
    deadline_s: i64,
    /// The client's bound on calls in flight, which these calls keep too.
    pub limit: Limit,
}

impl EphemeralPods {
    /// Pods in `namespace` that the kubelet ends after `deadline_s` seconds.
    pub fn new(kube: &Kube, namespace: &str, deadline_s: i64) -> Arc<EphemeralPods> {
        Arc::new(EphemeralPods {
            api: Api::namespaced(kube.client.clone(), namespace),
            daemonsets: Api::namespaced(kube.client.clone(), namespace),
            template: tokio::sync::OnceCell::new(),
            handle: kube.handle(),
            names: Mutex::new(Vec::new()),
            namespace: namespace.to_string(),
            deadline_s,
            limit: kube.limit.clone(),
        })
    }

    /// Deletes every pod made so far (one gone already is no error).
    pub fn delete_all(&self) {
        let names: Vec<String> = std::mem::take(&mut *self.names.lock().unwrap());
        if names.is_empty() {
            return;
        }
        let api = self.api.clone();
        let ns = self.namespace.clone();
        let delete = async move {
            for name in names {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => eprintln!("calitrace: deleted the ephemeral agent pod {ns}/{name}"),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => eprintln!(
                        "calitrace: could not delete the ephemeral agent pod {ns}/{name}: {e}; \
                         `calitrace cluster --k8s --cleanup` removes it"
                    ),
                }
            }
        };
        // Called outside the runtime (the session's thread, or a drop).
        let h = self.handle.clone();
        std::thread::spawn(move || h.block_on(delete)).join().ok();
    }
}

impl Drop for EphemeralPods {
    fn drop(&mut self) {
        self.delete_all();
    }
}

/// The DaemonSet's running agent pod on `node`, if there is one.
pub async fn daemonset_pod(api: &Api<Pod>, ns: &str, node: &str) -> Result<Option<String>> {
    let on_node = format!("spec.nodeName={node}");
    let pods = running_agents(api, ns, Some(&on_node)).await?;
    Ok(pods.into_iter().find_map(|p| p.metadata.name))
}

/// The DaemonSet's running agent pods of the namespace: (pod, node).
pub async fn daemonset_pods(api: &Api<Pod>, ns: &str) -> Result<Vec<(String, String)>> {
    let pods = running_agents(api, ns, None).await?;
    Ok(pods
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.spec?.node_name?)))
        .collect())
}

/// The DaemonSet's running agent pods of the namespace (matching `fields`,
/// a field selector, where given).
async fn running_agents(api: &Api<Pod>, ns: &str, fields: Option<&str>) -> Result<Vec<Pod>> {
    let mut lp = ListParams::default().labels(&podspec::selector(DAEMONSET_COMPONENT));
    if let Some(f) = fields {
        lp = lp.fields(f);
    }
    let list = api
        .list(&lp)
        .await
        .map_err(|e| explain(e, Call::new("list", "pods", Some(ns))))?;
    Ok(list.items.into_iter().filter(runs).collect())
}

/// A pod that runs and is not being deleted.
fn runs(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && phase(p) == "Running"
}

/// The live DaemonSet, said once; `None` (the built-in template) where
/// there is none or it cannot be read.
async fn live_template(pods: &EphemeralPods) -> Option<&DaemonSet> {
    let ns = &pods.namespace;
    let name = podspec::DAEMONSET_NAME;
    pods.template
        .get_or_init(|| async {
            match pods.limit.run(pods.daemonsets.get_opt(name)).await {
                Ok(Some(ds)) => {
                    eprintln!(
                        "calitrace: ephemeral agent pods follow the DaemonSet {ns}/{name}'s pod template (image, pull secrets, volumes, tolerations, priority class, resources)"
                    );
                    Some(ds)
                }
                Ok(None) => None,
                Err(e) => {
                    let why = rbac_forbidden(&e).map_or_else(|| e.to_string(), str::to_string);
                    eprintln!(
                        "calitrace: cannot read the DaemonSet {ns}/{name} ({why}): ephemeral agent pods use the template built into calitrace; `get` on `daemonsets` in {ns} (deploy/operator-rbac.yaml) lets them follow yours"
                    );
                    None
                }
            }
        })
        .await
        .as_ref()
}

/// Makes an ephemeral agent pod on `node` and waits until it runs; `image`:
/// `--image`, over the template's.
pub async fn ephemeral(pods: &EphemeralPods, node: &str, image: Option<&str>) -> Result<String> {
    let ns = &pods.namespace;
    let template = live_template(pods).await;
    let pod = podspec::ephemeral_pod(
        node,
        ns,
        template,
        image,
        &podspec::suffix(),
        pods.deadline_s,
    )?;
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == podspec::CONTAINER))
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let image = image.as_str();
    let name = pod.metadata.name.clone().unwrap_or_default();
    // Known before it exists: a stop during the request still deletes it.
    pods.names.lock().unwrap().push(name.clone());
    let post = PostParams::default();
    let create = pods.api.create(&post, &pod);
    pods.limit
        .run(create)
        .await
        .map_err(|e| match rbac_forbidden(&e) {
            Some(message) => usage(format!(
                "no calitrace agent on node {node}: the DaemonSet calitrace-agent has no running pod there, \
                 and creating an ephemeral agent pod in namespace {ns} is forbidden ({message}). \
                 Deploy the agents (`kubectl apply -k deploy/`) or get `create` on `pods` in namespace {ns} \
                 (deploy/operator-rbac.yaml)"
            )),
            None => explain(e, Call::new("create", "pods", Some(ns))),
        })?;
    eprintln!("calitrace: {node}: started the ephemeral agent pod {ns}/{name}");
    wait_running(pods, &name, node, image).await?;
    Ok(name)
}

async fn wait_running(pods: &EphemeralPods, name: &str, node: &str, image: &str) -> Result<()> {
    let ns = &pods.namespace;
    let started = Instant::now();
    loop {
        let pod = pods
            .limit
            .run(pods.api.get(name))
            .await
            .map_err(|e| explain(e, Call::new("get", "pods", Some(ns))))?;
        if let Some(why) = hopeless(&pod, node, image) {
            return Err(anyhow!("{why}"));
        }
        if phase(&pod) == "Running" && agent_running(&pod) {
            return Ok(());
        }
        if started.elapsed() > START_LIMIT {
            return Err(anyhow!(
                "node {node}: the ephemeral agent pod {ns}/{name} is still {} after {} s{}; \
                 `kubectl describe pod -n {ns} {name}` shows why",
                phase(&pod),
                START_LIMIT.as_secs(),
                waiting(&pod)
                    .map(|(r, m)| format!(" ({r}: {m})"))
                    .unwrap_or_default()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn agent_status(p: &Pod) -> Option<&ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == podspec::CONTAINER)
}

fn agent_running(p: &Pod) -> bool {
    agent_status(p)
        .and_then(|c| c.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

/// The agent container's waiting reason and message.
fn waiting(p: &Pod) -> Option<(String, String)> {
    let w = agent_status(p)?.state.as_ref()?.waiting.as_ref()?;
    Some((
        w.reason.clone().unwrap_or_default(),
        w.message.clone().unwrap_or_default(),
    ))
}

/// Why the pod will never run, when waiting will not help.
fn hopeless(p: &Pod, node: &str, image: &str) -> Option<String> {
    if let Some((reason, message)) = waiting(p)
        && IMAGE_FAILURES.contains(&reason.as_str())
    {
        return Some(format!(
            "node {node}: the image {image} cannot be pulled ({reason}: {message}); \
             push it where the nodes can pull it and pass --image REGISTRY/calitrace:TAG, \
             or load it on the nodes (`cargo xtask image` builds target/image/calitrace-oci.tar)"
        ));
    }
    let status = p.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(c) = unschedulable {
        return Some(format!(
            "node {node}: the ephemeral agent pod cannot be scheduled there: {}",
            c.message.as_deref().unwrap_or("Unschedulable")
        ));
    }
    if matches!(phase(p), "Failed" | "Succeeded") {
        return Some(format!(
            "node {node}: the ephemeral agent pod ended ({}{}{})",
            phase(p),
            status
                .reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default(),
            status
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    None
}

/// `--cleanup`: deletes every ephemeral agent pod in the namespace.
pub fn cleanup(kube: &Kube, ns: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), ns);
    let lp = ListParams::default().labels(&podspec::selector(EPHEMERAL_COMPONENT));
    kube.block_on(async {
        let list = api
            .list(&lp)
            .await
            .map_err(|e| explain(e, Call::new("list", "pods", Some(ns))))?;
        let mut removed = 0;
        for p in list.items {
            let name = p.metadata.name.unwrap_or_default();
            let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    println!("removed {ns}/{name} (node {node})");
                    removed += 1;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(explain(e, Call::new("delete", "pods", Some(ns))));
                }
            }
        }
        if removed == 0 {
            println!("no ephemeral agent pod in namespace {ns}");
        }
        Ok(())
    })
}
