//! A diagnosis: one distinct problem, what to check, and how often it was seen.

use std::net::IpAddr;

use serde::Serialize;

use super::journey::Refusal;
use super::names::{
    Attribution, Backend, CalicoPlacement, Encap, Family, Hook, Proto, Stage, as_display,
};
use super::packet::PodRef;

/// The diagnosis codes of the JSON contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    NetfilterDrop,
    IptablesBackendMismatch,
    PolicyDrop,
    NoRoute,
    RoutingLoop,
    RpFilter,
    ProxyArpDisabled,
    NeighborUnreachable,
    MtuExceeded,
    UnderlayDrop,
    UnderlayMtu,
    CalicoEbpfDrop,
    WireguardRefused,
    #[default]
    Other,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NetfilterDrop => "NETFILTER_DROP",
            Code::IptablesBackendMismatch => "IPTABLES_BACKEND_MISMATCH",
            Code::PolicyDrop => "POLICY_DROP",
            Code::NoRoute => "NO_ROUTE",
            Code::RoutingLoop => "ROUTING_LOOP",
            Code::RpFilter => "RP_FILTER",
            Code::ProxyArpDisabled => "PROXY_ARP_DISABLED",
            Code::NeighborUnreachable => "NEIGHBOR_UNREACHABLE",
            Code::MtuExceeded => "MTU_EXCEEDED",
            Code::UnderlayDrop => "UNDERLAY_DROP",
            Code::UnderlayMtu => "UNDERLAY_MTU",
            Code::CalicoEbpfDrop => "CALICO_EBPF_DROP",
            Code::WireguardRefused => "WIREGUARD_REFUSED",
            Code::Other => "OTHER",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Diagnosis {
    /// The node the record comes from (cluster views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub code: Code,
    pub stage: Option<Stage>,
    pub summary: String,
    pub hint: String,
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    /// Flow diagnoses: the pods of `src` and `dst`, where known.
    pub src_pod: Option<PodRef>,
    pub dst_pod: Option<PodRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_display")]
    pub hook: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// nft family of `table` (`ip`, `ip6`, `inet`, ...).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_display")]
    pub family: Option<Family>,
    /// Whose rule it was and how it refused the packet.
    #[serde(flatten)]
    pub refusal: Refusal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calico_backend: Option<CalicoPlacement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Attribution>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The `calitrace doctor` check that explains the problem, where one failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<super::CheckId>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<Underlay>,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
}

/// Where a pod flow crosses between two nodes, for the underlay codes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Underlay {
    pub src_node: String,
    pub dst_node: String,
    pub encap: Encap,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer_src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer_dst: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer_proto: Option<Proto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer_dport: Option<u16>,
    /// UNDERLAY_MTU: the largest packet that arrived and the smallest lost,
    /// in bytes on the wire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub largest_delivered: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smallest_lost: Option<u32>,
}

impl Diagnosis {
    /// Whether `other` is about the same problem (a later one updates the count).
    pub fn same_problem(&self, o: &Diagnosis) -> bool {
        self.code == o.code
            && self.src == o.src
            && self.dst == o.dst
            && self.backend == o.backend
            && self.table == o.table
            && self.chain == o.chain
            && self.hook == o.hook
            && self.rule == o.rule
            && self.ifname == o.ifname
            && self.target == o.target
            && self.node == o.node
            && self.underlay.as_ref().map(|u| (&u.src_node, &u.dst_node))
                == o.underlay.as_ref().map(|u| (&u.src_node, &u.dst_node))
    }
}

/// Refusals counted on one WireGuard device since the last reading.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireguardRefusal {
    pub ifname: String,
    pub count: u64,
    /// The device's peers and their allowed IPs, as WireGuard reports them
    /// (`endpoint: allowed, ...`), where they could be read.
    pub peers: Option<String>,
}
