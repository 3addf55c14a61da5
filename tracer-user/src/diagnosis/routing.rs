//! RP_FILTER, ROUTING_LOOP and NO_ROUTE from drops.

use super::problem::{Finding, Problem, of_flow, pair, pair_text};
use crate::correlation::MAX_HOPS;
use crate::facts::{Environment, RouteFact};
use std::net::IpAddr;

use crate::model::{Addr, Code, Diagnosis, DropRecord, Stage};

/// This node's route to an address of a flow, where it is one.
fn route_to(addr: Option<IpAddr>, env: &mut Environment) -> Option<RouteFact> {
    addr.map(|ip| env.route(ip))
}

/// The reverse path filter dropped a packet arriving on an interface.
pub fn rp_filter(d: &DropRecord, env: &mut Environment) -> Finding {
    let ifname = d.ifname.clone().unwrap_or_else(|| "?".into());
    let src = Addr(d.flow.src);
    let back = route_to(d.flow.src, env);
    let setting = env
        .iface_sysctl("ipv4", "conf", &ifname, "rp_filter")
        .unwrap_or_else(|| "?".into());
    let all = env
        .iface_sysctl("ipv4", "conf", "all", "rp_filter")
        .unwrap_or_else(|| "?".into());
    let why = match back {
        Some(RouteFact::Via(out_if)) if out_if != ifname => {
            format!(": the route back to {src} leaves by {out_if}")
        }
        Some(RouteFact::None) => format!(": there is no route back to {src}"),
        _ => String::new(),
    };
    let pair_text = pair_text(d);
    Finding {
        problem: Problem::RpFilter {
            ifname: ifname.clone(),
            flow: pair(d),
        },
        diagnosis: Diagnosis {
            ifname: Some(ifname.clone()),
            ..of_flow(
                d,
                Code::RpFilter,
                Stage::RpFilter,
                format!("reverse path filter dropped {pair_text} arriving on {ifname}{why}"),
                format!(
                    "rp_filter is {setting} on {ifname} and {all} for all (the higher applies): fix the route back to the source, or set loose mode with `sysctl -w net.ipv4.conf.{ifname}.rp_filter=2`"
                ),
            )
        },
    }
}

/// The packet ran out of TTL while being forwarded: it went round in circles.
pub fn routing_loop(d: &DropRecord, env: &mut Environment) -> Finding {
    let route = route_to(d.flow.dst, env);
    // Interfaces only: netfilter points share the journey.
    let ifaces = d.journey.iter().filter(|h| h.is_iface()).count();
    let seen = if d.journey.len() >= MAX_HOPS {
        format!("at least {ifaces}")
    } else {
        ifaces.to_string()
    };
    let via = match &route {
        Some(RouteFact::Via(i)) => format!("; this node routes it out of {i}"),
        _ => String::new(),
    };
    let target = Addr(d.flow.dst);
    Finding {
        problem: Problem::RoutingLoop { flow: pair(d) },
        diagnosis: of_flow(
            d,
            Code::RoutingLoop,
            Stage::Ttl,
            format!(
                "{} ran out of TTL while being forwarded (seen {seen} times here){via}: a routing loop",
                pair_text(d)
            ),
            format!(
                "check `ip route get {target}` on this node and on the next hop: a node that lacks the pod's /32 route (or its block route) sends the packet back along its default route"
            ),
        ),
    }
}

/// The node has no route for the packet's destination.
pub fn no_route(d: &DropRecord) -> Finding {
    let target = Addr(d.flow.dst);
    Finding {
        problem: Problem::NoRoute { target: d.flow.dst },
        diagnosis: of_flow(
            d,
            Code::NoRoute,
            Stage::Routing,
            format!("no route to {target} on this node ({})", d.reason),
            format!(
                "check `ip route get {target}`; for pod traffic the route to the remote node's IPAM block comes from BGP (BIRD) or the VXLAN/IPIP routes Felix programs"
            ),
        ),
    }
}
