//! `cluster --k8s --status` (`kubectl calitrace status`): before an incident's
//! first minute is gone, per node whether an agent is ready (the DaemonSet's
//! pod runs and `calitrace status` in it says the node can be traced), its
//! version against the client's, the kernel, the Calico dataplane and the
//! doctor's failed checks; and for each API call `cluster --k8s` makes,
//! whether the caller may make it (SelfSubjectAccessReview). Exit 0 only
//! when every node's agent is ready at the client's version and every call
//! is allowed.

use anyhow::{Result, bail};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};

use super::client::{Kube, Limit};
use super::error::{Call, explain};
use super::{agent_pods, exec, targets};
use crate::cli::KubeArgs;
use crate::run::status::NodeStatus;

const STATUS: [&str; 4] = ["/usr/bin/calitrace", "status", "--host-root", "/host"];
/// Nodes asked at the same time (each an exec through the API server).
const CONCURRENT: usize = 16;

/// The API calls `cluster --k8s` makes (README, "RBAC it needs and why"):
/// verb, resource, subresource, in the agents' namespace or not, and what
/// for.
const CALLS: &[(&str, &str, &str, bool, &str)] = &[
    ("get", "nodes", "", false, "--nodes"),
    ("list", "nodes", "", false, "--all-nodes"),
    ("get", "pods", "", false, "--pods NS/NAME"),
    ("list", "pods", "", false, "pod names"),
    ("list", "pods", "", true, "the DaemonSet's agent pods"),
    ("get", "pods/exec", "", true, "the agents' streams"),
    ("create", "pods/exec", "", true, "the agents' streams"),
    ("create", "pods", "", true, "ephemeral agent pods"),
    ("get", "pods", "", true, "ephemeral agent pods"),
    (
        "delete",
        "pods",
        "",
        true,
        "ephemeral agent pods, --cleanup",
    ),
    (
        "get",
        "daemonsets",
        "calitrace-agent",
        true,
        "the ephemeral pods' template",
    ),
];

/// One node's row.
struct Row {
    node: String,
    /// Ok: the agent's status; Err: why there is no ready agent.
    agent: Result<NodeStatus, String>,
}

pub fn run(kube: &Kube, args: &KubeArgs) -> Result<()> {
    let ns = args.namespace.as_str();
    let client_version = env!("CARGO_PKG_VERSION");
    let (rows, calls) = kube.block_on(async {
        let nodes = nodes(kube, args).await?;
        let rows = agents(kube, ns, nodes).await;
        let calls = may(kube, ns).await;
        anyhow::Ok((rows, calls))
    })?;
    let mut bad = Vec::new();
    println!("calitrace {client_version} (this client), agents in namespace {ns}:");
    for r in &rows {
        match &r.agent {
            Ok(s) => {
                let state = match (&s.cannot_trace, s.version == client_version) {
                    (Some(why), _) => format!("cannot trace: {why}"),
                    (None, false) => format!(
                        "ready, but calitrace {} (this client {client_version}): upgrade the older one",
                        s.version
                    ),
                    (None, true) => "ready".to_string(),
                };
                if state != "ready" {
                    bad.push(r.node.clone());
                }
                let failed = if s.failed_checks.is_empty() {
                    "none".to_string()
                } else {
                    s.failed_checks.join(", ")
                };
                println!("  {}: {state}", r.node);
                println!("      kernel {}; {}", s.kernel, s.dataplane);
                println!("      doctor's failed checks: {failed}");
            }
            Err(why) => {
                bad.push(r.node.clone());
                println!("  {}: no ready agent: {why}", r.node);
            }
        }
    }
    println!("API calls of `cluster --k8s` you may make:");
    let mut refused = 0;
    for ((verb, resource, name, namespaced, why), answer) in CALLS.iter().zip(&calls) {
        let place = if *namespaced {
            format!("in {ns}")
        } else {
            "cluster-wide".into()
        };
        let what = if name.is_empty() {
            format!("{verb} {resource}")
        } else {
            format!("{verb} {resource} {name}")
        };
        let (mark, note) = match answer {
            Ok(true) => ("✓", String::new()),
            Ok(false) => {
                refused += 1;
                ("✗", String::new())
            }
            Err(e) => {
                refused += 1;
                ("?", format!(": {e}"))
            }
        };
        println!("  {mark} {what} {place} ({why}){note}");
    }
    match (bad.is_empty(), refused) {
        (true, 0) => Ok(()),
        (true, n) => bail!("{n} API call(s) of `cluster --k8s` refused (✗ above)"),
        (false, 0) => bail!("no ready agent on {}", bad.join(", ")),
        (false, n) => bail!(
            "no ready agent on {}, and {n} API call(s) refused",
            bad.join(", ")
        ),
    }
}

/// The nodes asked for (`--nodes`), else every node; a node that is not
/// Ready is a row of its own.
async fn nodes(kube: &Kube, args: &KubeArgs) -> Result<Vec<(String, Option<String>)>> {
    let api: Api<Node> = Api::all(kube.client.clone());
    if args.node_names.is_empty() {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| explain(e, Call::new("list", "nodes", None)))?;
        return Ok(list
            .items
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    targets::not_ready(n),
                )
            })
            .collect());
    }
    let mut out = Vec::new();
    for name in &args.node_names {
        match api.get_opt(name).await {
            Ok(Some(n)) => out.push((name.clone(), targets::not_ready(&n))),
            Ok(None) => out.push((name.clone(), Some("no such node".into()))),
            Err(e) => return Err(explain(e, Call::new("get", "nodes", None))),
        }
    }
    Ok(out)
}

/// Each node's agent, asked at most [`CONCURRENT`] at a time; rows in the
/// nodes' order.
async fn agents(kube: &Kube, ns: &str, nodes: Vec<(String, Option<String>)>) -> Vec<Row> {
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), ns);
    let limit = Limit::new(CONCURRENT);
    let mut tasks = Vec::new();
    for (node, not_ready) in nodes {
        let (api, limit, ns) = (api.clone(), limit.clone(), ns.to_string());
        tasks.push(tokio::spawn(async move {
            let agent = match not_ready {
                Some(why) => Err(format!("the node is not Ready ({why})")),
                None => limit.run(agent(&api, &ns, &node)).await,
            };
            Row { node, agent }
        }));
    }
    let mut rows = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            rows.push(r);
        }
    }
    rows
}

async fn agent(api: &Api<Pod>, ns: &str, node: &str) -> Result<NodeStatus, String> {
    let pod = agent_pods::daemonset_pod(api, ns, node)
        .await
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| {
            format!("the DaemonSet calitrace-agent has no running pod on it (`kubectl -n {ns} get pods -o wide`); cluster --k8s would start an ephemeral agent pod there")
        })?;
    let command: Vec<String> = STATUS.map(String::from).to_vec();
    let (out, err, failure) = exec::output(api, ns, &pod, &command)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let line = out
        .lines()
        .find(|l| l.contains("\"node_status\""))
        .ok_or_else(|| match failure.clone() {
            Some(f) => format!("`calitrace status` in {ns}/{pod} failed: {f} {}", err.trim()),
            None => format!(
                "`calitrace status` in {ns}/{pod} printed no status (an agent older than `status`?): {}",
                err.trim()
            ),
        })?;
    serde_json::from_str(line).map_err(|e| format!("{ns}/{pod}: unreadable status: {e}"))
}

/// Whether the caller may make each of [`CALLS`].
async fn may(kube: &Kube, ns: &str) -> Vec<Result<bool, String>> {
    let api: Api<SelfSubjectAccessReview> = Api::all(kube.client.clone());
    let mut out = Vec::new();
    for (verb, resource, name, namespaced, _) in CALLS {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (*resource, None),
        };
        let group = (resource == "daemonsets").then(|| "apps".to_string());
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group,
                    resource: Some(resource.to_string()),
                    subresource,
                    name: (!name.is_empty()).then(|| name.to_string()),
                    namespace: namespaced.then(|| ns.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        out.push(match api.create(&PostParams::default(), &review).await {
            Ok(r) => Ok(r.status.is_some_and(|s| s.allowed)),
            Err(e) => Err(format!(
                "{:#}",
                explain(e, Call::new("create", "selfsubjectaccessreviews", None))
            )),
        });
    }
    out
}
