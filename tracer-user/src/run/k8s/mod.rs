//! `calitrace cluster --k8s`: the nodes and pods come from the Kubernetes
//! API server, and so do the agents' streams (exec into the DaemonSet's
//! pod, or into an ephemeral agent pod); the merge and the views are the
//! cluster session's.

pub mod agent_pods;
pub mod client;
pub mod error;
pub mod exec;
pub mod node_cleanup;
pub mod podspec;
pub mod status;
pub mod targets;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::cluster::{self, session};
use super::usage;
use crate::cli::ClusterArgs;
use crate::filter::Filter;
use agent_pods::EphemeralPods;
use client::Kube;
use session::Started;

/// The agent in the pod: the host's files under /host.
const AGENT: [&str; 4] = ["/usr/bin/calitrace", "agent", "--host-root", "/host"];

pub fn run(mut args: ClusterArgs, stop: &AtomicBool) -> Result<()> {
    let k = &args.kube;
    let kube = Kube::connect(k.kubeconfig.as_deref(), k.context.as_deref())?;
    if k.status {
        return status::run(&kube, k);
    }
    if k.cleanup {
        // The pods first: deleting one stops its agent (preStop), and what
        // a killed one left is then the standby's to remove.
        let pods = agent_pods::cleanup(&kube, &k.namespace);
        let nodes = node_cleanup::run(&kube, &k.namespace);
        return pods.and(nodes);
    }
    let targets = targets::resolve(&kube, k)?;
    if args.view.filter.is_empty() && !targets.pod_ips.is_empty() {
        args.view.filter = targets::host_filter(&targets.pod_ips);
    }
    Filter::parse_words(&args.view.filter)
        .and_then(|f| f.compile().map(|_| ()))
        .map_err(|e| usage(e.to_string()))?;
    let names = targets.nodes;
    let pod_names = targets::pod_names(&kube, &names)?;
    let mut command: Vec<String> = AGENT.map(String::from).to_vec();
    command.extend(cluster::agent_words(&args));
    let deadline = podspec::deadline_s(args.duration);
    let pods = EphemeralPods::new(&kube, &args.kube.namespace, deadline);
    let result = match start_agents(&kube, &args, &names, &command, &pods, stop) {
        Err(_) if stop.load(Ordering::Relaxed) => {
            eprintln!("calitrace: stopped before every agent had started");
            Ok(())
        }
        Err(e) => Err(e),
        Ok(agents) => cluster::setup(&args, names.clone()).and_then(|mut setup| {
            setup.cluster.add_pod_names(pod_names);
            session::run_session(setup, agents, stop)
        }),
    };
    pods.delete_all();
    result
}

/// One agent per node, started together (their API calls
/// [`client::CONCURRENT_CALLS`] at a time). A node whose agent cannot be
/// started is told and left out, the others trace on (the session shows it
/// as ended, with why); only when no node's agent starts is that an error,
/// the first node's. What was made is deleted by the caller.
fn start_agents(
    kube: &Kube,
    args: &ClusterArgs,
    nodes: &[String],
    command: &[String],
    pods: &Arc<EphemeralPods>,
    stop: &AtomicBool,
) -> Result<Vec<Result<Started, String>>> {
    let ns = args.kube.namespace.clone();
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), &ns);
    let started: Vec<Option<Result<Started>>> = kube.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, node) in nodes.iter().enumerate() {
            let (api, ns, node, pods) = (api.clone(), ns.clone(), node.clone(), pods.clone());
            let (command, image) = (command.to_vec(), args.kube.image.clone());
            let ephemeral = args.kube.ephemeral;
            set.spawn(async move {
                let one = start_one(
                    &api,
                    &ns,
                    &node,
                    &pods,
                    image.as_deref(),
                    ephemeral,
                    &command,
                );
                (i, one.await)
            });
        }
        let mut started: Vec<Option<Result<Started>>> = nodes.iter().map(|_| None).collect();
        loop {
            tokio::select! {
                next = set.join_next() => match next {
                    None => break,
                    Some(Ok((i, s))) => started[i] = Some(s),
                    Some(Err(e)) => return Err(anyhow!("starting an agent: {e}")),
                },
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::Relaxed) {
                        return Err(anyhow!("stopped before every agent had started"));
                    }
                }
            }
        }
        Ok(started)
    })?;
    if !started.iter().any(|s| matches!(s, Some(Ok(_)))) {
        let first = started.into_iter().flatten().find_map(Result::err);
        return Err(first.unwrap_or_else(|| anyhow!("no agent started")));
    }
    Ok(nodes
        .iter()
        .zip(started)
        .map(|(node, s)| match s {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => {
                eprintln!(
                    "calitrace: {node}: the agent could not start, the other nodes trace on: {e:#}"
                );
                Err(format!("could not start: {e:#}"))
            }
            None => Err("could not start".into()),
        })
        .collect())
}

/// The agent of one node: exec'd in the DaemonSet's pod there, else in an
/// ephemeral agent pod made for it; each API call in its turn.
async fn start_one(
    api: &Api<Pod>,
    ns: &str,
    node: &str,
    pods: &EphemeralPods,
    image: Option<&str>,
    ephemeral: bool,
    command: &[String],
) -> Result<Started> {
    let limit = &pods.limit;
    let pod = match ephemeral {
        false => limit.run(agent_pods::daemonset_pod(api, ns, node)).await?,
        true => None,
    };
    let pod = match pod {
        Some(p) => p,
        None => {
            if !ephemeral {
                eprintln!(
                    "calitrace: {node}: no running pod of the DaemonSet calitrace-agent in namespace {ns}: \
                     starting an ephemeral agent pod (`kubectl apply -k deploy/` deploys the agents)"
                );
            }
            agent_pods::ephemeral(pods, node, image).await?
        }
    };
    limit.run(exec::start(api, ns, &pod, command)).await
}
