//! What makes two drops the same problem, and what a diagnosis function finds.

use std::net::IpAddr;

use crate::model::{
    Addr, Backend, CalicoPlacement, Code, Diagnosis, DropRecord, Encap, Hook, Stage,
};

/// Source and destination of a flow, as the drop names them.
pub type Pair = (Option<IpAddr>, Option<IpAddr>);

/// One distinct problem: the diagnoser counts drops per problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Problem {
    /// NETFILTER_DROP or POLICY_DROP: one place in the rules drops one flow.
    TableDrop {
        code: Code,
        backend: Option<Backend>,
        table: Option<String>,
        chain: Option<String>,
        hook: Option<Hook>,
        rule: Option<String>,
        flow: Pair,
    },
    /// Drops by one table and chain while Calico's chains live elsewhere.
    BackendMismatch {
        backend: Option<Backend>,
        table: Option<String>,
        chain: Option<String>,
        calico: CalicoPlacement,
    },
    RpFilter {
        ifname: String,
        flow: Pair,
    },
    RoutingLoop {
        flow: Pair,
    },
    NoRoute {
        target: Option<IpAddr>,
    },
    NeighborUnreachable {
        ifname: Option<String>,
        target: Option<IpAddr>,
    },
    /// A pod's gateway does not answer ARP (PROXY_ARP_DISABLED or NO_ROUTE).
    Gateway {
        code: Code,
        ifname: String,
        target: IpAddr,
    },
    MtuExceeded {
        flow: Pair,
    },
    Other {
        reason: String,
        location: Option<String>,
        flow: Pair,
    },
    /// POLICY_DROP or CALICO_EBPF_DROP: Calico's eBPF program on one
    /// interface dropped one flow for one reason (and rule).
    CalicoEbpf {
        reason: String,
        ifname: Option<String>,
        rule_id: Option<String>,
        flow: Pair,
    },
    /// WIREGUARD_REFUSED on one device.
    WireguardRefused {
        ifname: String,
    },
    /// UNDERLAY_DROP or UNDERLAY_MTU of one pod flow between two nodes.
    Underlay {
        code: Code,
        src: Option<IpAddr>,
        dst: Option<IpAddr>,
        src_node: String,
        dst_node: String,
        encap: Encap,
    },
}

/// A problem and the diagnosis that reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub problem: Problem,
    pub diagnosis: Diagnosis,
}

pub fn pair(d: &DropRecord) -> Pair {
    (d.flow.src, d.flow.dst)
}

/// `10.0.0.1 > 10.0.0.2`: the flow of a drop in words.
pub fn pair_text(d: &DropRecord) -> String {
    format!("{} > {}", Addr(d.flow.src), Addr(d.flow.dst))
}

/// A diagnosis about a drop's flow.
pub fn of_flow(
    d: &DropRecord,
    code: Code,
    stage: Stage,
    summary: String,
    hint: String,
) -> Diagnosis {
    Diagnosis {
        code,
        stage: Some(stage),
        summary,
        hint,
        src: d.flow.src,
        dst: d.flow.dst,
        src_pod: d.flow.src_pod.clone(),
        dst_pod: d.flow.dst_pod.clone(),
        ..Default::default()
    }
}
