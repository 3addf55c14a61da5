//! Facts about the node that events refer to (interface names, symbols, drop
//! reason names, sysctls, routes, netfilter rules), as recorded; the
//! [`Environment`] looks them up.
//!
//! Live, lookups go to the kernel and every new or changed answer is queued as
//! a [`Fact`] so a recording can replay it; on replay the same lookups are
//! answered from the recorded facts alone. That is what makes replay show what
//! live tracing showed, on any machine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::Backend;
use crate::netfilter::Inventory;

pub mod cri;
pub mod environment;
pub mod pods;
pub mod topology;

pub use environment::Environment;
pub use topology::Topology;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// netns name (`/run/netns`) or holder process.
    pub name: String,
    /// The node-side veth of this pod, e.g. `cali1234abcd`.
    pub host_iface: String,
}

/// Result of a route lookup, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteFact {
    Via(String),
    Local,
    None,
    Unknown,
}

/// Everything known about the node; the header of a recording holds the
/// initial set and frames carry [`Fact`] updates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub node: String,
    pub kernel: String,
    /// Inode of the namespace calitrace traced in.
    pub netns: u32,
    pub reasons: BTreeMap<u32, String>,
    /// `(netns << 32) | ifindex` to interface name.
    pub ifnames: BTreeMap<u64, String>,
    pub pods: BTreeMap<u32, PodInfo>,
    pub symbols: BTreeMap<u64, String>,
    pub sysctls: BTreeMap<String, String>,
    pub routes: BTreeMap<IpAddr, RouteFact>,
    pub local_addrs: BTreeSet<IpAddr>,
    /// Both backends' netfilter rules, as last read.
    #[serde(default)]
    pub netfilter: Option<Inventory>,
    /// Which backend the node's `iptables` command uses.
    #[serde(default)]
    pub iptables_binary: Option<Backend>,
    /// Routes, tunnels and uplinks (recordings before the cluster view lack them).
    #[serde(default)]
    pub topology: Topology,
    /// Events lost so far.
    #[serde(default)]
    pub lost: u64,
    /// Pods by address, as the node names them.
    #[serde(default)]
    pub pod_names: BTreeMap<IpAddr, crate::model::PodRef>,
    /// `calitrace doctor`'s checks that did not pass when tracing started.
    #[serde(default)]
    pub checks: Vec<crate::model::Check>,
    /// The last drop Calico's eBPF counters explained: `(ts_ns, ifindex, why)`;
    /// recorded just before the drop it belongs to.
    #[serde(skip)]
    pub calico_ebpf: Option<(u64, u32, Box<crate::model::CalicoEbpfDrop>)>,
    /// WireGuard refusals recorded since they were last taken.
    #[serde(skip)]
    pub wireguard_refused: Vec<crate::model::WireguardRefusal>,
}

/// One change to [`NodeFacts`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    Symbol {
        addr: u64,
        name: String,
    },
    Sysctl {
        key: String,
        value: Option<String>,
    },
    Route {
        dst: IpAddr,
        route: RouteFact,
    },
    IfName {
        netns: u32,
        ifindex: u32,
        name: String,
    },
    /// A pod's namespace found while tracing (its `cali*` veth appeared).
    Pod {
        netns: u32,
        pod: PodInfo,
    },
    /// A new reading of the netfilter rules and counters.
    Netfilter {
        inventory: Box<Inventory>,
    },
    /// Calico's eBPF counters explained the drop at `ts_ns` on `ifindex`.
    CalicoEbpf {
        ts_ns: u64,
        ifindex: u32,
        drop: Box<crate::model::CalicoEbpfDrop>,
    },
    /// WireGuard refused packets on a device (its `rx_frame_errors` grew).
    WireguardRefused {
        ts_ns: u64,
        refusal: crate::model::WireguardRefusal,
    },
    /// Events lost so far (the ring buffer was full), at monotonic `ts_ns`.
    Lost {
        ts_ns: u64,
        lost: u64,
    },
}

pub fn ifkey(netns: u32, ifindex: u32) -> u64 {
    (netns as u64) << 32 | ifindex as u64
}

impl NodeFacts {
    pub fn apply(&mut self, f: &Fact) {
        match f {
            Fact::Symbol { addr, name } => {
                self.symbols.insert(*addr, name.clone());
            }
            Fact::Sysctl {
                key,
                value: Some(v),
            } => {
                self.sysctls.insert(key.clone(), v.clone());
            }
            Fact::Sysctl { key, value: None } => {
                self.sysctls.remove(key);
            }
            Fact::Route { dst, route } => {
                self.routes.insert(*dst, route.clone());
            }
            Fact::IfName {
                netns,
                ifindex,
                name,
            } => {
                self.ifnames.insert(ifkey(*netns, *ifindex), name.clone());
            }
            Fact::Pod { netns, pod } => {
                self.pods.insert(*netns, pod.clone());
            }
            Fact::Netfilter { inventory } => self.netfilter = Some((**inventory).clone()),
            Fact::Lost { lost, .. } => self.lost = *lost,
            Fact::CalicoEbpf {
                ts_ns,
                ifindex,
                drop,
            } => self.calico_ebpf = Some((*ts_ns, *ifindex, drop.clone())),
            Fact::WireguardRefused { refusal, .. } => self.wireguard_refused.push(refusal.clone()),
        }
    }

    /// Names the pods of a flow's addresses, where the node knows them.
    pub fn name_pods(&self, flow: &mut crate::model::Flow) {
        if self.pod_names.is_empty() {
            return;
        }
        let pod = |a: Option<IpAddr>| self.pod_names.get(&a?).cloned();
        flow.src_pod = pod(flow.src);
        flow.dst_pod = pod(flow.dst);
    }

    pub fn ifname(&self, netns: u32, ifindex: u32) -> Option<&str> {
        self.ifnames.get(&ifkey(netns, ifindex)).map(String::as_str)
    }

    pub fn reason_name(&self, reason: u32) -> String {
        self.reasons
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| format!("REASON_{reason}"))
    }

    /// Name of the netns for humans: the pod's, "node" for our own, or the inode.
    pub fn netns_label(&self, netns: u32) -> String {
        if netns == self.netns {
            "node".into()
        } else if let Some(p) = self.pods.get(&netns) {
            format!("pod {}", p.name)
        } else {
            netns.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_survive_json() {
        let mut f = NodeFacts {
            netns: 7,
            ..Default::default()
        };
        f.ifnames.insert(ifkey(7, 3), "cali1".into());
        f.local_addrs.insert("10.0.0.1".parse().unwrap());
        f.routes
            .insert("1.2.3.4".parse().unwrap(), RouteFact::Via("eth0".into()));
        let back: NodeFacts = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.ifname(7, 3), Some("cali1"));
    }

    #[test]
    fn a_pod_found_while_tracing_names_its_namespace() {
        let pod = Fact::Pod {
            netns: 4026532999,
            pod: PodInfo {
                name: "cni-1234".into(),
                host_iface: "cali0123456789a".into(),
            },
        };
        let json = serde_json::to_string(&pod).unwrap();
        assert_eq!(
            json,
            r#"{"fact":"pod","netns":4026532999,"pod":{"name":"cni-1234","host_iface":"cali0123456789a"}}"#
        );
        let mut f = NodeFacts::default();
        f.apply(&serde_json::from_str(&json).unwrap());
        assert_eq!(f.netns_label(4026532999), "pod cni-1234");
    }
}
