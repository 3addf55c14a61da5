//! NEIGHBOR_UNREACHABLE, and a pod's gateway that does not answer ARP
//! (PROXY_ARP_DISABLED, or NO_ROUTE where proxy ARP has nothing to answer for).

use super::problem::{Finding, Problem, of_flow, pair_text};
use crate::facts::{Environment, RouteFact};
use std::net::{IpAddr, Ipv4Addr};

use crate::model::{Addr, Code, Diagnosis, DropRecord, Stage};

/// Calico's link-local gateway address every pod routes through.
pub const CALICO_GATEWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1));

/// The next hop did not answer ARP/ND. Inside a pod the only neighbour is
/// Calico's gateway, answered by proxy ARP on the pod's cali interface.
pub fn neighbor_unreachable(d: &DropRecord, env: &mut Environment) -> Finding {
    let cali = d
        .pod
        .as_ref()
        .and_then(|_| env.facts.pods.get(&d.netns))
        .map(|p| p.host_iface.clone());
    if let Some(cali) = cali {
        return gateway_unanswered(&cali, CALICO_GATEWAY, env);
    }
    let target = Addr(d.flow.dst);
    let dev = d.ifname.as_deref().unwrap_or("?");
    Finding {
        problem: Problem::NeighborUnreachable {
            ifname: d.ifname.clone(),
            target: d.flow.dst,
        },
        diagnosis: Diagnosis {
            ifname: d.ifname.clone(),
            ..of_flow(
                d,
                Code::NeighborUnreachable,
                Stage::Neighbor,
                format!(
                    "{}: the next hop on {dev} did not answer ARP/ND",
                    pair_text(d)
                ),
                format!(
                    "check `ip neigh show dev {dev}` and `ip route get {target}`: is the next-hop node up and on this link?"
                ),
            )
        },
    }
}

/// A pod's ARP for its gateway `target` went unanswered on `ifname`.
pub fn gateway_unanswered(ifname: &str, target: IpAddr, env: &mut Environment) -> Finding {
    let proxy_arp = env.iface_sysctl("ipv4", "conf", ifname, "proxy_arp");
    let route = env.route(target);
    let (code, stage, summary, hint) = if proxy_arp.as_deref() == Some("0") {
        (
            Code::ProxyArpDisabled,
            Stage::Neighbor,
            format!("pod's ARP for {target} unanswered: proxy_arp is 0 on {ifname}"),
            format!(
                "`sysctl -w net.ipv4.conf.{ifname}.proxy_arp=1` (Felix sets it on every cali* interface: is calico-node running?)"
            ),
        )
    } else if route == RouteFact::None {
        (
            Code::NoRoute,
            Stage::Routing,
            format!(
                "pod's ARP for {target} on {ifname} unanswered: this node has no route to {target}, and proxy ARP only answers for addresses the node can route"
            ),
            format!(
                "`ip route get {target}` fails: give the node a default route (or any route covering {target}) out of another interface"
            ),
        )
    } else {
        (
            Code::ProxyArpDisabled,
            Stage::Neighbor,
            format!(
                "pod's ARP for {target} unanswered on {ifname} although proxy_arp is {}",
                proxy_arp.as_deref().unwrap_or("unknown")
            ),
            format!(
                "check `sysctl net.ipv4.conf.{ifname}.proxy_arp net.ipv4.neigh.{ifname}.proxy_delay net.ipv4.conf.{ifname}.arp_ignore` and tc/ebtables rules on {ifname}"
            ),
        )
    };
    Finding {
        problem: Problem::Gateway {
            code,
            ifname: ifname.to_string(),
            target,
        },
        diagnosis: Diagnosis {
            code,
            stage: Some(stage),
            summary,
            hint,
            ifname: Some(ifname.to_string()),
            target: Some(target.to_string()),
            ..Default::default()
        },
    }
}
