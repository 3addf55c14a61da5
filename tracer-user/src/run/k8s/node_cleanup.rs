//! `cluster --k8s --cleanup` on the nodes: runs `calitrace cleanup` in every
//! running DaemonSet pod (the standby's container: the node's network
//! namespace and processes), which removes the tc filters and trace tables
//! of agents that were SIGKILLed, and shows its lines per node.

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::client::Kube;
use super::{agent_pods, exec};

const CLEANUP: [&str; 4] = ["/usr/bin/calitrace", "cleanup", "--host-root", "/host"];

pub fn run(kube: &Kube, ns: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(kube.client.clone(), ns);
    let command: Vec<String> = CLEANUP.map(String::from).to_vec();
    kube.block_on(async {
        let running = agent_pods::daemonset_pods(&api, ns).await?;
        if running.is_empty() {
            println!(
                "no running DaemonSet agent pod in namespace {ns}: tc filters of killed agents cannot be looked for"
            );
            return Ok(());
        }
        let mut failed = Vec::new();
        for (pod, node) in running {
            match exec::output(&api, ns, &pod, &command).await {
                Ok((out, err, failure)) => {
                    for line in out.lines().chain(err.lines()) {
                        println!("{node}: {line}");
                    }
                    if let Some(f) = failure {
                        println!("{node}: cleanup failed: {f}");
                        failed.push(node);
                    }
                }
                Err(e) => {
                    println!("{node}: cleanup could not run in {ns}/{pod}: {e:#}");
                    failed.push(node);
                }
            }
        }
        if !failed.is_empty() {
            bail!("cleanup did not finish on {}", failed.join(", "));
        }
        Ok(())
    })
}
