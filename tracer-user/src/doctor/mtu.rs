//! `mtu`: pods (their `cali*` veths) and the tunnels must not send packets
//! larger than what fits the uplink once encapsulated.

use super::{Check, CheckId, Iface, Inputs, TUNNELS, cali_ifaces, uplink};

/// The largest packet a pod may send: the uplink's MTU less the largest
/// overhead of the tunnels in use, and no more than any such tunnel's MTU.
struct Limit {
    mtu: u32,
    why: String,
}

fn limit(uplink: &Iface, uplink_mtu: u32, tunnels: &[(&Iface, &str, u32)]) -> Limit {
    let mut limit = Limit {
        mtu: uplink_mtu,
        why: format!("{}'s MTU {uplink_mtu}, no encapsulation", uplink.name),
    };
    for (t, kind, overhead) in tunnels {
        let fits = uplink_mtu.saturating_sub(*overhead);
        if fits < limit.mtu {
            limit = Limit {
                mtu: fits,
                why: format!(
                    "{}'s MTU {uplink_mtu} less {kind}'s {overhead}",
                    uplink.name
                ),
            };
        }
        if let Some(m) = t.mtu.filter(|m| *m < limit.mtu) {
            limit = Limit {
                mtu: m,
                why: format!("{}'s MTU {m}", t.name),
            };
        }
    }
    limit
}

/// A tunnel device whose MTU does not fit the uplink with its own header.
fn tunnel_too_big(up: &Iface, up_mtu: u32, tunnels: &[(&Iface, &str, u32)]) -> Option<Check> {
    tunnels.iter().find_map(|(t, kind, overhead)| {
        let m = t.mtu?;
        let fits = up_mtu.saturating_sub(*overhead);
        (m > fits).then(|| {
            Check::fail(
                CheckId::Mtu,
                format!("{}'s MTU {m} is more than {}'s {up_mtu} less {kind}'s {overhead} = {fits}: large packets are lost in the tunnel", t.name, up.name),
            )
            .hint(format!("ip link set {} mtu {fits}; Calico sets it from its MTU setting (the Installation's calicoNetwork.mtu, or the calico-config ConfigMap's veth_mtu)", t.name))
        })
    })
}

pub(super) fn mtu(inputs: &Inputs) -> Check {
    let id = CheckId::Mtu;
    let (links, routes) = match (inputs.links_or_skip(id), inputs.routes_or_skip(id)) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(skip), _) | (_, Err(skip)) => return skip,
    };
    let Some(up) = uplink(routes).and_then(|u| links.iter().find(|l| l.name == u)) else {
        return Check::skip(id, "no default route: the uplink is not known");
    };
    let Some(up_mtu) = up.mtu else {
        return Check::skip(id, format!("the MTU of {} is not known", up.name));
    };
    let tunnels: Vec<(&Iface, &str, u32)> = TUNNELS
        .iter()
        .filter_map(|(name, kind, overhead)| {
            let t = links.iter().find(|l| l.name == *name && l.up)?;
            Some((t, *kind, *overhead))
        })
        .collect();
    let mut evidence = vec![format!("uplink {} {up_mtu}", up.name)];
    for (t, ..) in &tunnels {
        evidence.extend(t.mtu.map(|m| format!("{} {m}", t.name)));
    }
    if let Some(fail) = tunnel_too_big(up, up_mtu, &tunnels) {
        return fail.evidence(evidence.join("; "));
    }
    let limit = limit(up, up_mtu, &tunnels);
    let cali: Vec<&Iface> = cali_ifaces(links).collect();
    let mut mtus: Vec<u32> = cali.iter().filter_map(|l| l.mtu).collect();
    mtus.sort_unstable();
    mtus.dedup();
    if !mtus.is_empty() {
        let list: Vec<String> = mtus.iter().map(u32::to_string).collect();
        evidence.push(format!("{} cali* with MTU {}", cali.len(), list.join(", ")));
    }
    let evidence = evidence.join("; ");
    if let Some(big) = cali.iter().find(|l| l.mtu.is_some_and(|m| m > limit.mtu)) {
        let m = big.mtu.unwrap_or_default();
        let n = cali
            .iter()
            .filter(|l| l.mtu.is_some_and(|m| m > limit.mtu))
            .count();
        let others = match n {
            1 => String::new(),
            n => format!(" (and {} other cali*)", n - 1),
        };
        return Check::fail(
            id,
            format!(
                "{}'s MTU {m}{others} is more than {} = {}: pods send packets too big for the path",
                big.name, limit.why, limit.mtu
            ),
        )
        .evidence(evidence)
        .hint(format!(
            "set Calico's MTU to {} (the Installation's calicoNetwork.mtu, or veth_mtu in the calico-config ConfigMap); pods keep their MTU until they are recreated",
            limit.mtu
        ));
    }
    if cali.is_empty() && tunnels.is_empty() {
        return Check::ok(
            id,
            format!(
                "no pods or tunnels; the uplink {} has MTU {up_mtu}",
                up.name
            ),
        )
        .evidence(evidence);
    }
    Check::ok(
        id,
        format!("the pods' MTU fits: at most {} ({})", limit.mtu, limit.why),
    )
    .evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::fake::{FakeRoot, iface, route};
    use super::*;

    fn inputs(f: &FakeRoot, links: Vec<Iface>) -> super::super::Inputs {
        let mut inputs = f.inputs();
        inputs.links = Ok(links);
        inputs.routes = Ok(vec![route("0.0.0.0/0", "eth0", Some("192.168.1.2"))]);
        inputs
    }

    #[test]
    fn vxlan_needs_fifty_bytes_less_than_the_uplink() {
        let f = FakeRoot::new();
        let ok = inputs(
            &f,
            vec![
                iface("eth0", "", 1500),
                iface("vxlan.calico", "vxlan", 1450),
                iface("calia", "veth", 1450),
            ],
        );
        let c = mtu(&ok);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.summary.contains("at most 1450"), "{c:?}");
        let big = inputs(
            &f,
            vec![
                iface("eth0", "", 1500),
                iface("vxlan.calico", "vxlan", 1450),
                iface("calia", "veth", 1500),
            ],
        );
        let c = mtu(&big);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("calia's MTU 1500"), "{c:?}");
        assert!(c.hint.unwrap().contains("set Calico's MTU to 1450"));
    }

    #[test]
    fn a_tunnel_too_big_for_the_uplink_fails() {
        let f = FakeRoot::new();
        let c = mtu(&inputs(
            &f,
            vec![iface("eth0", "", 1500), iface("tunl0", "ipip", 1500)],
        ));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.hint.unwrap().starts_with("ip link set tunl0 mtu 1480"));
    }

    #[test]
    fn tunnels_that_are_down_do_not_count_and_direct_mode_uses_the_uplink() {
        let f = FakeRoot::new();
        let mut tunl0 = iface("tunl0", "ipip", 1480);
        tunl0.up = false;
        let c = mtu(&inputs(
            &f,
            vec![iface("eth0", "", 1500), tunl0, iface("calia", "veth", 1500)],
        ));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        let c = mtu(&inputs(
            &f,
            vec![iface("eth0", "", 1500), iface("calia", "veth", 9000)],
        ));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        let mut no_default = inputs(&f, vec![iface("eth0", "", 1500)]);
        no_default.routes = Ok(vec![]);
        assert_eq!(mtu(&no_default).status, Status::Skip);
    }

    #[test]
    fn wireguard_and_vxlan_take_the_larger_overhead() {
        let f = FakeRoot::new();
        let c = mtu(&inputs(
            &f,
            vec![
                iface("eth0", "", 1500),
                iface("vxlan.calico", "vxlan", 1450),
                iface("wireguard.cali", "wireguard", 1440),
                iface("calia", "veth", 1450),
            ],
        ));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("1440"), "{c:?}");
    }
}
