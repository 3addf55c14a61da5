//! What is read from the machine before anything is loaded: capabilities,
//! symbols, BTF, interfaces, pods behind them, and the node's facts.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::usage;
use crate::doctor;
use crate::facts::topology::{self, Tunnel};
use crate::facts::{NodeFacts, PodInfo, Topology, ifkey};
use crate::kernel::{btf::KernelBtf, kallsyms::Kallsyms, netlink, netns, system};
use crate::model::CheckStatus;
use crate::netfilter::{Inventory, iptables_binary_backend};
use crate::probes::capabilities::Capabilities;
use crate::probes::tc::ifaces;

/// Everything read from the machine before loading programs.
pub struct Setup {
    pub caps: Capabilities,
    pub kallsyms: Kallsyms,
    pub btf: Option<KernelBtf>,
    pub own_netns: u32,
    pub links: Vec<netlink::Link>,
}

impl Setup {
    pub fn read() -> Result<Setup> {
        let kallsyms = Kallsyms::load().unwrap_or_default();
        let caps = Capabilities::detect(&kallsyms);
        let btf = if caps.btf {
            KernelBtf::load().ok()
        } else {
            None
        };
        Ok(Setup {
            caps,
            kallsyms,
            btf,
            own_netns: system::own_netns().context("reading /proc/self/ns/net")?,
            links: netlink::links().context("listing interfaces")?,
        })
    }

    pub fn require_privileges(&self) -> Result<()> {
        if let Some(missing) = &self.caps.missing_privileges {
            return Err(usage(format!(
                "calitrace needs root to load eBPF programs (missing {missing}): run it with sudo, or use `calitrace replay FILE` without root"
            )));
        }
        Ok(())
    }
}

/// The patterns that select interfaces: the user's globs, or Calico's
/// defaults plus the uplinks. Interfaces that appear while tracing are
/// selected by the same patterns.
pub fn patterns(asked: &[String]) -> Vec<String> {
    if !asked.is_empty() {
        return asked.to_vec();
    }
    let mut pats: Vec<String> = ifaces::DEFAULT_PATTERNS
        .iter()
        .map(|s| s.to_string())
        .collect();
    pats.extend(system::default_route_ifaces());
    pats
}

/// The interfaces to attach to: the user's globs, or Calico's defaults plus uplinks.
pub fn interfaces<'a>(
    links: &'a [netlink::Link],
    asked: &[String],
) -> Result<Vec<&'a netlink::Link>> {
    let chosen = ifaces::select(links, &patterns(asked));
    if chosen.is_empty() && !asked.is_empty() {
        let here: Vec<&str> = links
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| *n != "lo")
            .collect();
        let loopback = asked.iter().any(|p| ifaces::glob_match(p, "lo"));
        return Err(usage(format!(
            "no interface matches --iface {} ({}interfaces here: {})",
            asked.join(" --iface "),
            if loopback {
                "loopback is never traced; "
            } else {
                ""
            },
            if here.is_empty() {
                "none but lo".to_string()
            } else {
                here.join(", ")
            }
        )));
    }
    Ok(chosen)
}

/// The pods behind the chosen cali* veths, so that drops inside them are
/// reported too.
pub fn pods(setup: &Setup, chosen: &[&netlink::Link]) -> Vec<netns::PeerNetns> {
    let veths: Vec<netlink::Link> = chosen
        .iter()
        .filter(|l| l.kind == "veth" && l.name.starts_with("cali"))
        .map(|l| (*l).clone())
        .collect();
    netns::discover(setup.own_netns, &veths)
}

/// The node's routes, tunnels and uplinks.
fn topology(links: &[netlink::Link]) -> Topology {
    let routes = topology::read_routes();
    let tunnels = links
        .iter()
        .filter(|l| matches!(l.kind.as_str(), "vxlan" | "ipip" | "wireguard"))
        .map(|l| Tunnel {
            name: l.name.clone(),
            kind: l.kind.clone(),
            remotes: match l.kind.as_str() {
                "vxlan" => netlink::fdb_remotes(l.index).unwrap_or_default(),
                _ => routes
                    .iter()
                    .filter(|r| r.dev == l.name)
                    .filter_map(|r| r.via)
                    .collect(),
            },
        })
        .collect();
    Topology {
        routes,
        tunnels,
        uplinks: system::default_route_ifaces(),
    }
}

/// How long the container runtime may take to list its pods: tracing waits for it.
const CRI_TIMEOUT: Duration = Duration::from_secs(1);

/// What is known about the node when tracing starts.
pub fn node_facts(setup: &Setup, pods: &[netns::PeerNetns], host_root: &Path) -> NodeFacts {
    let mut facts = NodeFacts {
        node: system::node_name(),
        kernel: setup.caps.kernel.clone(),
        netns: setup.own_netns,
        reasons: setup
            .btf
            .as_ref()
            .map(KernelBtf::drop_reasons)
            .unwrap_or_default(),
        local_addrs: system::local_addresses().into_iter().collect(),
        netfilter: Some(Inventory::read()),
        iptables_binary: iptables_binary_backend(),
        topology: topology(&setup.links),
        ..Default::default()
    };
    facts.pod_names = crate::facts::pods::from_kubelet_logs(host_root, &facts.topology.routes);
    // The runtime knows every pod it runs: its names win over the kubelet's directories.
    if let Some(from_runtime) = crate::facts::cri::from_cri(host_root, CRI_TIMEOUT) {
        facts.pod_names.extend(from_runtime);
    }
    facts.checks = doctor::run_checks(&doctor::Inputs::live(doctor::HostRoot::new(host_root)))
        .into_iter()
        .filter(|c| matches!(c.status, CheckStatus::Warn | CheckStatus::Fail))
        .collect();
    for l in &setup.links {
        facts
            .ifnames
            .insert(ifkey(setup.own_netns, l.index), l.name.clone());
    }
    for p in pods {
        facts.pods.insert(
            p.inode,
            PodInfo {
                name: p.name.clone(),
                host_iface: p.host_iface.clone(),
            },
        );
        for (idx, name) in &p.links {
            facts.ifnames.insert(ifkey(p.inode, *idx), name.clone());
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_for_loopback_is_told_it_is_never_traced() {
        let link = netlink::Link::ethernet;
        let links = [link(1, "lo"), link(2, "eth0")];
        let e = interfaces(&links, &["lo".into()]).unwrap_err().to_string();
        assert!(e.contains("loopback is never traced"), "{e}");
        assert!(e.contains("interfaces here: eth0)"), "{e}");
        let e = interfaces(&links[..1], &["nosuch*".into()])
            .unwrap_err()
            .to_string();
        assert!(!e.contains("loopback"), "{e}");
        assert!(e.contains("interfaces here: none but lo"), "{e}");
    }
}
