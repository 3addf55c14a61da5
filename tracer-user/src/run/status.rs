//! `calitrace status`: whether this node can be traced, as one JSON line for
//! `cluster --k8s --status` (run in the DaemonSet's pod) and the DaemonSet's
//! readiness probe: calitrace's version, the kernel, whether eBPF programs
//! can be loaded here (privileges, kernel BTF), the Calico dataplane doctor
//! sees and the doctor's failed checks. Exit 0 when tracing can start, 1
//! when it cannot. Loads nothing into the kernel.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::doctor::checks_under;
use crate::cli::StatusArgs;
use crate::doctor::HostRoot;
use crate::kernel::kallsyms::Kallsyms;
use crate::model::check::CheckId;
use crate::probes::capabilities::Capabilities;

/// What `calitrace status` prints (and the client reads back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub version: String,
    pub kernel: String,
    /// Why tracing cannot start here (None: it can).
    pub cannot_trace: Option<String>,
    /// The doctor's `dataplane` check: which Calico dataplane runs.
    pub dataplane: String,
    pub failed_checks: Vec<String>,
}

pub fn read(root: &HostRoot) -> NodeStatus {
    let caps = Capabilities::detect(&Kallsyms::load().unwrap_or_default());
    let cannot_trace = match (&caps.missing_privileges, caps.btf) {
        (Some(missing), _) => Some(format!("missing privileges: {missing}")),
        (None, false) => Some(
            "the kernel has no BTF (/sys/kernel/btf/vmlinux): calitrace's programs need it".into(),
        ),
        (None, true) => None,
    };
    let checks = checks_under(root);
    NodeStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        kernel: caps.kernel,
        cannot_trace,
        dataplane: checks
            .iter()
            .find(|c| c.id == CheckId::Dataplane)
            .map(|c| c.summary.clone())
            .unwrap_or_default(),
        failed_checks: checks
            .iter()
            .filter(|c| c.failed())
            .map(|c| c.id.as_str().to_string())
            .collect(),
    }
}

pub fn run(args: StatusArgs) -> Result<()> {
    let s = read(&HostRoot::new(&args.host_root));
    let mut line = serde_json::to_value(&s)?;
    line["type"] = "node_status".into();
    println!("{line}");
    if let Some(why) = s.cannot_trace {
        bail!("this node cannot be traced: {why}");
    }
    Ok(())
}
