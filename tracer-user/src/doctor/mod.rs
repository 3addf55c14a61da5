//! `calitrace doctor`: checks of this node's Calico datapath configuration,
//! read from files, sysctls, netlink and the netfilter rules, without loading
//! any eBPF program.
//!
//! Every check reads [`Inputs`] only: the host's files under a [`HostRoot`],
//! and the readings of the current network namespace (links, routes,
//! netfilter rules), so tests give them a fake root and made-up readings.

mod backend;
mod bgp;
mod cni;
mod dataplane;
mod ebpf;
#[cfg(test)]
mod fake;
pub mod host;
mod mtu;
mod routing;
mod runtime;
mod sysctl;
mod wireguard;

use std::collections::BTreeMap;

use crate::facts::topology::{RouteEntry, read_routes_in};
use crate::kernel::{netlink, system};
pub use crate::model::check::{Check, CheckId, Status};
use crate::netfilter::{Backend, Inventory};
pub use host::HostRoot;

/// One network interface of the node's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    /// `veth`, `vxlan`, `ipip`, `wireguard`, ... (empty for physical devices).
    pub kind: String,
    pub up: bool,
    pub mtu: Option<u32>,
}

/// Everything the checks read.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub root: HostRoot,
    /// The interfaces of the current network namespace, or why not.
    pub links: Result<Vec<Iface>, String>,
    /// The main routing table (from `/proc/net` under the root), or why not.
    pub routes: Result<Vec<RouteEntry>, String>,
    /// Both backends' netfilter rules of the current namespace, or why not.
    pub netfilter: Result<Inventory, String>,
    /// Which backend the host's `iptables` command uses, from its symlinks.
    pub iptables_command: Option<Backend>,
    /// Whether this process may read what root may (netfilter rules, other
    /// processes' environments).
    pub privileged: bool,
    /// Sysctl values by key (`net.ipv4.ip_forward`) that win over the files
    /// under `/proc/sys` (readings injected by tests).
    pub sysctls: BTreeMap<String, String>,
    /// What the kernel shows of Calico's eBPF dataplane.
    pub ebpf: ebpf::EbpfReadings,
    /// What WireGuard reports of Calico's devices.
    pub wireguard: wireguard::WireguardReadings,
}

const CAP_NET_ADMIN: u32 = 12;

impl Inputs {
    /// Reads the live node: files under `root`, the current namespace's links
    /// and netfilter rules.
    pub fn live(root: HostRoot) -> Inputs {
        let privileged = system::effective_caps() & (1 << CAP_NET_ADMIN) != 0;
        let routes_dir = root.path("/proc/net");
        let netfilter = if privileged {
            Ok(Inventory::read())
        } else {
            Err("not root: reading the netfilter rules needs CAP_NET_ADMIN".to_string())
        };
        let links = live_links();
        Inputs {
            ebpf: ebpf::EbpfReadings::live(&root, &links),
            wireguard: wireguard::WireguardReadings::live(&links),
            links,
            routes: read_routes_in(&routes_dir)
                .ok_or_else(|| format!("{}/route cannot be read", routes_dir.display())),
            netfilter,
            iptables_command: backend::iptables_command(&root),
            privileged,
            sysctls: BTreeMap::new(),
            root,
        }
    }

    /// A sysctl's value, or why it cannot be read.
    pub fn sysctl(&self, s: &Sysctl) -> Result<String, String> {
        if let Some(v) = self.sysctls.get(&s.key) {
            return Ok(v.clone());
        }
        let path = self.root.path(format!("/proc/sys/{}", s.path));
        std::fs::read_to_string(&path)
            .map(|v| v.trim().to_string())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("{} is absent", path.display()),
                _ => format!("{}: {e}", path.display()),
            })
    }

    /// The links, or a skip of check `id` saying why there are none.
    fn links_or_skip(&self, id: CheckId) -> Result<&[Iface], Check> {
        self.links
            .as_deref()
            .map_err(|e| Check::skip(id, format!("the interfaces cannot be read: {e}")))
    }

    fn routes_or_skip(&self, id: CheckId) -> Result<&[RouteEntry], Check> {
        self.routes
            .as_deref()
            .map_err(|e| Check::skip(id, format!("the routes cannot be read: {e}")))
    }
}

fn live_links() -> Result<Vec<Iface>, String> {
    let links = netlink::links().map_err(|e| format!("netlink: {e}"))?;
    let mtus: BTreeMap<String, u32> = netlink::link_mtus()
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    Ok(links
        .into_iter()
        .map(|l| Iface {
            mtu: mtus.get(&l.name).copied(),
            name: l.name,
            kind: l.kind,
            up: l.up,
        })
        .collect())
}

/// A sysctl: its key as `sysctl` names it and its path under `/proc/sys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    pub path: String,
}

impl Sysctl {
    /// A sysctl without an interface name in it: `net.ipv4.ip_forward`.
    pub fn global(key: &str) -> Sysctl {
        Sysctl {
            key: key.to_string(),
            path: key.replace('.', "/"),
        }
    }

    /// An interface's setting; names may contain dots (`vxlan.calico`).
    pub fn iface(family: &str, section: &str, ifname: &str, setting: &str) -> Sysctl {
        Sysctl {
            key: system::iface_sysctl_key(family, section, ifname, setting),
            path: format!("net/{family}/{section}/{ifname}/{setting}"),
        }
    }
}

/// Calico's tunnel devices: name, kind, and the bytes its encapsulation adds.
pub(crate) const TUNNELS: [(&str, &str, u32); 5] = [
    ("vxlan.calico", "VXLAN", 50),
    ("vxlan-v6.calico", "VXLAN (IPv6)", 70),
    ("tunl0", "IPIP", 20),
    ("wireguard.cali", "WireGuard", 60),
    ("wg-v6.cali", "WireGuard (IPv6)", 80),
];

pub(crate) fn is_tunnel(name: &str) -> bool {
    TUNNELS.iter().any(|(t, ..)| *t == name)
}

/// The interfaces behind which Calico puts its pods.
pub(crate) fn cali_ifaces(links: &[Iface]) -> impl Iterator<Item = &Iface> {
    links.iter().filter(|l| l.name.starts_with("cali"))
}

/// The uplink: the interface of the default route, IPv4 first.
pub(crate) fn uplink(routes: &[RouteEntry]) -> Option<&str> {
    let default = |v4: bool| {
        routes.iter().find(|r| {
            r.net()
                .is_some_and(|(a, len)| len == 0 && a.is_ipv4() == v4 && r.dev != "*")
        })
    };
    default(true).or(default(false)).map(|r| r.dev.as_str())
}

/// Every check, in the contract's order.
pub fn run_checks(inputs: &Inputs) -> Vec<Check> {
    vec![
        backend::iptables_backend(inputs),
        cni::cni_bin_dir(inputs),
        cni::cni_config(inputs),
        sysctl::ip_forward(inputs),
        sysctl::rp_filter(inputs),
        sysctl::proxy_arp(inputs),
        routing::default_route(inputs),
        mtu::mtu(inputs),
        sysctl::conntrack(inputs),
        routing::tunnel(inputs),
        routing::routes(inputs),
        bgp::bgp(inputs),
        dataplane::dataplane(inputs),
        ebpf::ebpf(inputs),
        wireguard::wireguard(inputs),
    ]
}

/// Whether any check failed: doctor's exit status is 1 then.
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(Check::failed)
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeRoot, iface, route};
    use super::*;

    #[test]
    fn every_check_runs_once_in_order_on_an_empty_root() {
        let f = FakeRoot::new();
        let checks = run_checks(&f.inputs());
        let ids: Vec<CheckId> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, CheckId::ALL);
        for c in &checks {
            assert!(!c.summary.is_empty(), "{c:?}");
        }
    }

    #[test]
    fn a_missing_root_gives_skips_not_failures() {
        let mut inputs = FakeRoot::new().inputs();
        inputs.root = HostRoot::new("/nonexistent/calitrace-doctor");
        inputs.routes = Err("absent".into());
        let checks = run_checks(&inputs);
        assert!(!any_failed(&checks), "{checks:#?}");
        let ip_forward = &checks[3];
        assert_eq!(ip_forward.status, Status::Skip);
        assert!(ip_forward.summary.contains("absent"), "{ip_forward:?}");
    }

    #[test]
    fn sysctls_come_from_the_root_or_injected_readings() {
        let f = FakeRoot::new();
        f.sysctl("net.ipv4.ip_forward", "1");
        f.file("/proc/sys/net/ipv4/conf/vxlan.calico/rp_filter", "2\n");
        let mut inputs = f.inputs();
        assert_eq!(
            inputs.sysctl(&Sysctl::global("net.ipv4.ip_forward")),
            Ok("1".into())
        );
        let rp = Sysctl::iface("ipv4", "conf", "vxlan.calico", "rp_filter");
        assert_eq!(rp.key, "net.ipv4.conf.vxlan/calico.rp_filter");
        assert_eq!(inputs.sysctl(&rp), Ok("2".into()));
        inputs.sysctls.insert(rp.key.clone(), "1".into());
        assert_eq!(inputs.sysctl(&rp), Ok("1".into()));
        let err = inputs.sysctl(&Sysctl::global("net.ipv4.nope")).unwrap_err();
        assert!(err.ends_with("proc/sys/net/ipv4/nope is absent"), "{err}");
    }

    #[test]
    fn uplink_is_the_default_routes_interface() {
        let routes = [
            route("10.244.1.10/32", "cali1", None),
            route("::/0", "eth1", Some("fe80::1")),
            route("0.0.0.0/0", "eth0", Some("192.168.1.1")),
        ];
        assert_eq!(uplink(&routes), Some("eth0"));
        assert_eq!(uplink(&routes[..2]), Some("eth1"));
        assert_eq!(uplink(&routes[..1]), None);
        let links = [iface("cali1", "veth", 1500), iface("eth0", "", 1500)];
        assert_eq!(cali_ifaces(&links).count(), 1);
    }
}
