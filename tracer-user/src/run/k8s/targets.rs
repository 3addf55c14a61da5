//! Which nodes to trace (`--pods`, `--nodes`, `--all-nodes`), whether they
//! are Ready, and the names of the pods on them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::ListParams;

use super::client::Kube;
use super::error::{Call, explain, is_not_found};
use crate::cli::KubeArgs;
use crate::model::PodRef;
use crate::run::usage;

pub struct Targets {
    /// Node names, in the order asked, each once.
    pub nodes: Vec<String>,
    /// The addresses of the pods given with `--pods`.
    pub pod_ips: Vec<IpAddr>,
}

pub fn resolve(kube: &Kube, args: &KubeArgs) -> Result<Targets> {
    if args.pods.is_empty() && args.node_names.is_empty() && !args.all_nodes {
        return Err(usage(
            "say which nodes to trace: --pods NS/NAME,..., --nodes A,B or --all-nodes",
        ));
    }
    kube.block_on(async {
        let mut t = Targets {
            nodes: Vec::new(),
            pod_ips: Vec::new(),
        };
        for spec in &args.pods {
            let (node, ips) = pod_node(kube, spec).await?;
            t.pod_ips.extend(ips);
            push_once(&mut t.nodes, node);
        }
        for n in &args.node_names {
            push_once(&mut t.nodes, n.trim().to_string());
        }
        let nodes: Api<Node> = Api::all(kube.client.clone());
        for n in &t.nodes {
            let node = nodes.get(n).await.map_err(|e| {
                if is_not_found(&e) {
                    usage(format!("unknown node {n}: `kubectl get nodes` lists them"))
                } else {
                    explain(e, get_nodes())
                }
            })?;
            if let Some(why) = not_ready(&node) {
                return Err(usage(format!(
                    "node {n} is not Ready ({why}): no agent can run there; `kubectl describe node {n}` shows why"
                )));
            }
        }
        if args.all_nodes {
            let list = nodes
                .list(&ListParams::default())
                .await
                .map_err(|e| explain(e, Call { verb: "list", ..get_nodes() }))?;
            for node in list.items {
                let name = node.metadata.name.clone().unwrap_or_default();
                match not_ready(&node) {
                    Some(why) => eprintln!("calitrace: node {name} is not Ready ({why}): left out"),
                    None => push_once(&mut t.nodes, name),
                }
            }
        }
        if t.nodes.is_empty() {
            return Err(usage("no Ready node to trace"));
        }
        Ok(t)
    })
}

fn get_nodes() -> Call<'static> {
    Call::new("get", "nodes", None)
}

fn push_once(v: &mut Vec<String>, s: String) {
    if !s.is_empty() && !v.contains(&s) {
        v.push(s);
    }
}

/// The node a pod runs on, and its addresses.
async fn pod_node(kube: &Kube, spec: &str) -> Result<(String, Vec<IpAddr>)> {
    let (ns, name) = match spec.trim().split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (
            kube.client.default_namespace().to_string(),
            spec.trim().to_string(),
        ),
    };
    if ns.is_empty() || name.is_empty() {
        return Err(usage(format!("--pods {spec}: give NAMESPACE/NAME")));
    }
    let pods: Api<Pod> = Api::namespaced(kube.client.clone(), &ns);
    let pod = pods.get(&name).await.map_err(|e| {
        if is_not_found(&e) {
            usage(format!(
                "unknown pod {ns}/{name}: no such pod; `kubectl get pods -n {ns}` lists them"
            ))
        } else {
            explain(e, Call::new("get", "pods", Some(&ns)))
        }
    })?;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let status = pod.status.unwrap_or_default();
    let Some(node) = node else {
        return Err(usage(format!(
            "pod {ns}/{name} is not on a node yet (phase {}): trace it once it is scheduled",
            status.phase.as_deref().unwrap_or("unknown")
        )));
    };
    Ok((node, addresses(&status)))
}

fn addresses(status: &k8s_openapi::api::core::v1::PodStatus) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|p| p.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    ips
}

/// Why a node is not Ready, or None when it is.
pub fn not_ready(node: &Node) -> Option<String> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!(
            "Ready={}{}{}",
            c.status,
            c.reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default(),
            c.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )),
        None => Some("it reports no Ready condition".into()),
    }
}

/// Pod names by address, from the pods on the traced nodes (host-network
/// pods share the node's address and are left out). The nodes are asked
/// together, [`super::client::CONCURRENT_CALLS`] at a time.
pub fn pod_names(kube: &Kube, nodes: &[String]) -> Result<BTreeMap<IpAddr, PodRef>> {
    let pods: Api<Pod> = Api::all(kube.client.clone());
    kube.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, node) in nodes.iter().enumerate() {
            let (pods, limit) = (pods.clone(), kube.limit.clone());
            let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
            set.spawn(async move {
                let list = limit.run(pods.list(&lp)).await;
                (i, list.map(|l| named(l.items)))
            });
        }
        let mut lists: Vec<Vec<(IpAddr, PodRef)>> = nodes.iter().map(|_| Vec::new()).collect();
        while let Some(done) = set.join_next().await {
            let (i, list) = done.map_err(|e| anyhow::anyhow!("listing pods: {e}"))?;
            lists[i] = list.map_err(|e| explain(e, Call::new("list", "pods", None)))?;
        }
        // In the nodes' order, as asked one after the other.
        Ok(lists.into_iter().flatten().collect())
    })
}

/// The pods' names by address (host-network pods left out).
fn named(pods: Vec<Pod>) -> Vec<(IpAddr, PodRef)> {
    let mut out = Vec::new();
    for p in pods {
        if p.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            continue;
        }
        let r = PodRef {
            namespace: p.metadata.namespace.clone().unwrap_or_default(),
            name: p.metadata.name.clone().unwrap_or_default(),
        };
        for ip in p.status.as_ref().map(addresses).unwrap_or_default() {
            out.push((ip, r.clone()));
        }
    }
    out
}

/// `host A or host B ...` for the pods' addresses.
pub fn host_filter(ips: &[IpAddr]) -> Vec<String> {
    let mut words = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        if i > 0 {
            words.push("or".into());
        }
        words.extend(["host".to_string(), ip.to_string()]);
    }
    words
}
