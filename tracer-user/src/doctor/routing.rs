//! `default_route`, `tunnel` and `routes`: what the node's routing table
//! needs for pods to reach their gateway and the pods of other nodes.

use std::net::IpAddr;

use super::{Check, CheckId, Iface, Inputs, TUNNELS, is_tunnel};
use crate::facts::topology::RouteEntry;

/// The gateway every Calico pod routes through, answered by proxy ARP.
const POD_GATEWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 1, 1));

fn show(r: &RouteEntry) -> String {
    let dev = if r.dev == "*" {
        "blackhole".to_string()
    } else {
        format!("dev {}", r.dev)
    };
    match r.via {
        Some(via) => format!("{} via {via} {dev}", r.dst),
        None => format!("{} {dev}", r.dst),
    }
}

fn some_of(routes: &[&RouteEntry]) -> String {
    let shown: Vec<String> = routes.iter().take(3).map(|r| show(r)).collect();
    match routes.len() {
        0..=3 => shown.join("; "),
        n => format!("{}; and {} more", shown.join("; "), n - 3),
    }
}

/// The most specific route for `ip`.
fn lookup(routes: &[RouteEntry], ip: IpAddr) -> Option<&RouteEntry> {
    routes
        .iter()
        .filter(|r| r.contains(ip))
        .max_by_key(|r| r.net().map(|(_, len)| len))
}

pub(super) fn default_route(inputs: &Inputs) -> Check {
    let id = CheckId::DefaultRoute;
    let routes = match inputs.routes_or_skip(id) {
        Ok(r) => r,
        Err(skip) => return skip,
    };
    match lookup(routes, POD_GATEWAY) {
        None => Check::fail(
            id,
            "no route covers 169.254.1.1 (no default route): proxy ARP does not answer the pods' ARP for their gateway, so pods can send nothing",
        )
        .evidence("no default route in the main table")
        .hint("add the node's default route (ip route add default via GATEWAY dev UPLINK), as its network configuration does at boot"),
        Some(r) if r.dev == "*" => Check::fail(id, "169.254.1.1 is blackholed: proxy ARP does not answer for it")
            .evidence(show(r))
            .hint(format!("ip route del {}", r.dst)),
        Some(r) if r.dev.starts_with("cali") => Check::fail(
            id,
            format!("the route to 169.254.1.1 leaves by {}: proxy ARP answers only for addresses routed out of another interface", r.dev),
        )
        .evidence(show(r))
        .hint(format!("ip route del {} dev {}", r.dst, r.dev)),
        Some(r) => Check::ok(id, format!("169.254.1.1 is routed out of {}: proxy ARP can answer for the pods' gateway", r.dev))
            .evidence(show(r)),
    }
}

fn link<'a>(links: &'a [Iface], name: &str) -> Option<&'a Iface> {
    links.iter().find(|l| l.name == name)
}

pub(super) fn tunnel(inputs: &Inputs) -> Check {
    let id = CheckId::Tunnel;
    let links = match inputs.links_or_skip(id) {
        Ok(l) => l,
        Err(skip) => return skip,
    };
    let routes = inputs.routes.as_deref().unwrap_or_default();
    let mut evidence = Vec::new();
    let (mut down, mut used) = (Vec::new(), Vec::new());
    for (name, kind, _) in TUNNELS {
        let Some(l) = link(links, name) else { continue };
        let n = routes.iter().filter(|r| r.dev == name).count();
        let state = if l.up { "up" } else { "down" };
        evidence.push(format!("{name} ({kind}) {state}, {n} route(s)"));
        match (l.up, n > 0) {
            (false, true) => down.push(name),
            (true, _) => used.push(name),
            (false, false) => {}
        }
    }
    let evidence = evidence.join("; ");
    if let Some(name) = down.first() {
        return Check::fail(
            id,
            format!("{name} is down, but routes to other nodes' pods use it"),
        )
        .evidence(evidence)
        .hint(format!(
            "ip link set {name} up (Felix brings it up: check calico-node's logs)"
        ));
    }
    match used.as_slice() {
        [] if evidence.is_empty() => Check::skip(
            id,
            "no Calico tunnel device: pod traffic is routed without encapsulation",
        ),
        [] => Check::skip(id, "no Calico tunnel in use").evidence(evidence),
        up => Check::ok(
            id,
            format!(
                "{} up, where pod traffic to other nodes goes",
                up.join(", ")
            ),
        )
        .evidence(evidence),
    }
}

/// A route to a block of pods: IPv4 /16 to /31 or IPv6 /48 to /127.
fn is_block(r: &RouteEntry) -> bool {
    r.net().is_some_and(|(a, len)| match a {
        IpAddr::V4(_) => (16..32).contains(&len),
        IpAddr::V6(_) => (48..128).contains(&len),
    })
}

pub(super) fn routes(inputs: &Inputs) -> Check {
    let id = CheckId::Routes;
    let routes = match inputs.routes_or_skip(id) {
        Ok(r) => r,
        Err(skip) => return skip,
    };
    let links = inputs.links.as_deref().unwrap_or_default();
    let local_pods = routes.iter().filter(|r| r.dev.starts_with("cali")).count();
    let local_blocks: Vec<&RouteEntry> = routes
        .iter()
        .filter(|r| r.dev == "*" && is_block(r))
        .collect();
    let remote: Vec<&RouteEntry> = routes
        .iter()
        .filter(|r| is_block(r) && r.dev != "*" && (is_tunnel(&r.dev) || r.via.is_some()))
        .collect();
    let mut evidence = format!("{local_pods} local pod route(s)");
    if !local_blocks.is_empty() {
        evidence += &format!("; local blocks: {}", some_of(&local_blocks));
    }
    if !remote.is_empty() {
        evidence += &format!("; other nodes' blocks: {}", some_of(&remote));
    }
    let broken: Vec<&RouteEntry> = remote
        .iter()
        .copied()
        .filter(|r| !links.is_empty() && !link(links, &r.dev).is_some_and(|l| l.up))
        .collect();
    if let Some(r) = broken.first() {
        return Check::fail(id, format!("{} leads to {}, which is down or missing", r.dst, r.dev))
            .evidence(evidence)
            .hint(format!("ip link set {} up; Felix (VXLAN, WireGuard) or BIRD (BGP, IPIP) programs these routes: check calico-node's logs", r.dev));
    }
    if remote.is_empty() {
        if local_pods == 0 && local_blocks.is_empty() {
            return Check::skip(
                id,
                "no pod routes: no Calico pods or address blocks on this node",
            )
            .evidence(evidence);
        }
        return Check::warn(
            id,
            "no routes to other nodes' pod blocks: a single-node cluster, or the BGP sessions or tunnel routes are missing",
        )
        .evidence(evidence)
        .hint("with BGP: `calicoctl node status`; with VXLAN or WireGuard Felix adds them: check calico-node's logs");
    }
    Check::ok(
        id,
        format!("{} route(s) to other nodes' pod blocks", remote.len()),
    )
    .evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::fake::{FakeRoot, iface, route};
    use super::*;

    #[test]
    fn default_route_covers_the_pod_gateway() {
        let f = FakeRoot::new();
        let mut inputs = f.inputs();
        inputs.routes = Ok(vec![route("10.244.1.10/32", "cali1", None)]);
        let c = default_route(&inputs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("169.254.1.1"));
        inputs.routes = Ok(vec![route("0.0.0.0/0", "eth0", Some("192.168.1.1"))]);
        let c = default_route(&inputs);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert_eq!(c.evidence, "0.0.0.0/0 via 192.168.1.1 dev eth0");
        inputs.routes = Ok(vec![
            route("0.0.0.0/0", "eth0", Some("192.168.1.1")),
            route("169.254.0.0/16", "cali1", None),
        ]);
        let c = default_route(&inputs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(c.hint.unwrap(), "ip route del 169.254.0.0/16 dev cali1");
        inputs.routes = Err("absent".into());
        assert_eq!(default_route(&inputs).status, Status::Skip);
    }

    #[test]
    fn tunnels_up_with_routes_are_ok_down_ones_with_routes_fail() {
        let f = FakeRoot::new();
        let mut inputs = f.inputs();
        assert_eq!(tunnel(&inputs).status, Status::Skip);
        let mut tunl0 = iface("tunl0", "ipip", 1480);
        tunl0.up = false;
        let vxlan = iface("vxlan.calico", "vxlan", 1450);
        inputs.links = Ok(vec![tunl0.clone(), vxlan.clone()]);
        inputs.routes = Ok(vec![route(
            "10.244.2.0/26",
            "vxlan.calico",
            Some("10.244.2.1"),
        )]);
        let c = tunnel(&inputs);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.evidence.contains("tunl0 (IPIP) down, 0 route(s)"),
            "{}",
            c.evidence
        );
        let mut down = vxlan;
        down.up = false;
        inputs.links = Ok(vec![tunl0, down]);
        let c = tunnel(&inputs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(
            c.hint.unwrap(),
            "ip link set vxlan.calico up (Felix brings it up: check calico-node's logs)"
        );
    }

    #[test]
    fn routes_to_other_blocks() {
        let f = FakeRoot::new();
        let mut inputs = f.inputs();
        inputs.links = Ok(vec![iface("eth0", "", 1500), iface("cali1", "veth", 1500)]);
        inputs.routes = Ok(vec![
            route("0.0.0.0/0", "eth0", Some("192.168.1.2")),
            route("192.168.1.0/24", "eth0", None),
        ]);
        assert_eq!(routes(&inputs).status, Status::Skip);
        if let Ok(r) = inputs.routes.as_mut() {
            r.push(route("10.244.1.10/32", "cali1", None));
        }
        assert_eq!(routes(&inputs).status, Status::Warn);
        if let Ok(r) = inputs.routes.as_mut() {
            r.push(route("10.244.2.0/26", "eth0", Some("192.168.1.2")));
        }
        let c = routes(&inputs);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.evidence
                .contains("other nodes' blocks: 10.244.2.0/26 via 192.168.1.2 dev eth0"),
            "{}",
            c.evidence
        );
        if let Ok(r) = inputs.routes.as_mut() {
            r.push(route("10.244.3.0/26", "tunl0", Some("192.168.1.3")));
        }
        let c = routes(&inputs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("10.244.3.0/26 leads to tunl0"));
    }
}
