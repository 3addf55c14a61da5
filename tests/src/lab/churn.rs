//! Pods that come and go while a test runs, and many interfaces at once.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::commands::check_output;
use super::{Lab, MAX_PODS_PER_NODE, Pod};

impl Lab {
    /// Creates one more pod on node `node`, wired like the others (its own
    /// namespace, a `cali*` veth, routes, proxy ARP): what the CNI plugin does
    /// when a pod is scheduled. Its index is one past the highest on the node.
    pub fn add_pod(&mut self, node: usize) -> Result<Pod> {
        let on_node = &self.pods[node];
        let index = on_node.iter().map(|p| p.index + 1).max().unwrap_or(0);
        if index >= MAX_PODS_PER_NODE {
            bail!("at most {MAX_PODS_PER_NODE} pods per node fit in a /26");
        }
        let mut cali_names: HashSet<String> = on_node.iter().map(|p| p.cali.clone()).collect();
        let pod = self.build_pod(node, index, &mut cali_names)?;
        self.pods[node].push(pod.clone());
        Ok(pod)
    }

    /// Deletes pod `index` of node `node`: its namespace goes, and with it
    /// both ends of its veth, as when the pod is deleted.
    pub fn remove_pod(&mut self, node: usize, index: usize) -> Result<Pod> {
        let at = self.pods[node]
            .iter()
            .position(|p| p.index == index)
            .with_context(|| format!("no pod {index} on node {node}"))?;
        let pod = self.pods[node].remove(at);
        let out = Command::new("ip")
            .args(["netns", "del", &pod.netns])
            .stdin(Stdio::null())
            .output()
            .context("running `ip netns del`")?;
        check_output(&format!("ip netns del {}", pod.netns), &out)?;
        self.created.retain(|n| *n != pod.netns);
        Ok(pod)
    }

    /// Adds `n` veth pairs to node `node`, both ends inside it (no pod
    /// behind them): `cali`-named interfaces cheaply, in one `ip -batch`.
    /// Returns the `cali*` names.
    pub fn add_veths(&self, node: usize, n: usize) -> Result<Vec<String>> {
        let netns = &self.node(node).netns;
        let names: Vec<String> = (0..n)
            .map(|i| format!("cali{:011x}", 0xbe000000000u64 + i as u64))
            .collect();
        let mut script = String::new();
        for (i, name) in names.iter().enumerate() {
            script.push_str(&format!(
                "link add {name} type veth peer name vpeer{i}\nlink set {name} up\nlink set vpeer{i} up\n"
            ));
        }
        let mut child = Command::new("ip")
            .args(["-n", netns, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ip -batch")?;
        child
            .stdin
            .take()
            .context("no stdin for ip")?
            .write_all(script.as_bytes())
            .context("writing the batch")?;
        let out = child.wait_with_output().context("waiting for ip")?;
        check_output(&format!("ip -n {netns} -batch - ({n} veths)"), &out)?;
        Ok(names)
    }
}
