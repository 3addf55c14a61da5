//! The sysctl checks: `ip_forward`, `rp_filter`, `proxy_arp`, `conntrack`.

use super::{Check, CheckId, Inputs, Sysctl, TUNNELS, cali_ifaces, is_tunnel, uplink};
use crate::facts::topology::RouteEntry;

/// `key = value` for the evidence.
fn reading(s: &Sysctl, v: &str) -> String {
    format!("{} = {v}", s.key)
}

/// The names of `items`, at most three, then how many more.
fn some_of(items: &[String]) -> String {
    match items.len() {
        0..=3 => items.join(", "),
        n => format!("{} and {} more", items[..3].join(", "), n - 3),
    }
}

pub(super) fn ip_forward(inputs: &Inputs) -> Check {
    let id = CheckId::IpForward;
    let v4 = Sysctl::global("net.ipv4.ip_forward");
    let value = match inputs.sysctl(&v4) {
        Ok(v) => v,
        Err(e) => return Check::skip(id, e),
    };
    if value != "1" {
        return Check::fail(
            id,
            "IPv4 forwarding is off: the node forwards no pod traffic",
        )
        .evidence(reading(&v4, &value))
        .hint(format!(
            "sysctl -w {}=1 (and in /etc/sysctl.d/ so that it survives a reboot)",
            v4.key
        ));
    }
    let mut evidence = reading(&v4, &value);
    let v6_pods = inputs
        .routes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| {
            r.dev.starts_with("cali") && r.net().is_some_and(|(a, len)| a.is_ipv6() && len == 128)
        });
    if v6_pods {
        let v6 = Sysctl::global("net.ipv6.conf.all.forwarding");
        let value = inputs.sysctl(&v6).unwrap_or_else(|e| e);
        evidence = format!("{evidence}; {}", reading(&v6, &value));
        if value != "1" {
            return Check::fail(id, "IPv6 forwarding is off, and pods have IPv6 addresses")
                .evidence(evidence)
                .hint(format!("sysctl -w {}=1", v6.key));
        }
    }
    Check::ok(id, "the node forwards IP packets").evidence(evidence)
}

fn effective(all: u32, value: &str) -> Option<u32> {
    value.parse::<u32>().ok().map(|v| v.max(all))
}

/// A route to other pods via `dev` that a more specific route sends
/// elsewhere: packets from those pods arrive on `dev` and fail a strict
/// reverse path check.
fn asymmetric<'a>(routes: &'a [RouteEntry], dev: &str) -> Option<(&'a RouteEntry, &'a RouteEntry)> {
    let tunnel = TUNNELS.iter().any(|(t, ..)| *t == dev);
    let blocks = routes.iter().filter(|r| {
        r.dev == dev && (r.via.is_some() || tunnel) && r.net().is_some_and(|(_, len)| len > 0)
    });
    blocks.into_iter().find_map(|block| {
        let (_, len) = block.net()?;
        routes
            .iter()
            .filter(|r| r.dev != dev && r.dev != "*")
            .find(|r| r.net().is_some_and(|(a, l)| l > len && block.contains(a)))
            .map(|r| (block, r))
    })
}

/// The sysctl command that makes an interface's filter loose; `all` too
/// when it is strict (the larger of the two applies).
fn loosen(all: u32, s: &Sysctl) -> String {
    match all {
        1 => format!(
            "sysctl -w net.ipv4.conf.all.rp_filter=2 {}=2 (loose; the larger of `all` and the interface's value applies)",
            s.key
        ),
        _ => format!("sysctl -w {}=2 (loose)", s.key),
    }
}

/// The interfaces of `devs` whose effective filter is strict, each with its
/// sysctl; their readings go to `evidence`.
fn strict_among<'a>(
    inputs: &Inputs,
    all: u32,
    devs: &[&'a str],
    evidence: &mut Vec<String>,
) -> Vec<(&'a str, Sysctl)> {
    let mut strict = Vec::new();
    for dev in devs {
        let s = Sysctl::iface("ipv4", "conf", dev, "rp_filter");
        let Ok(v) = inputs.sysctl(&s) else { continue };
        evidence.push(reading(&s, &v));
        if effective(all, &v) == Some(1) {
            strict.push((*dev, s));
        }
    }
    strict
}

pub(super) fn rp_filter(inputs: &Inputs) -> Check {
    let id = CheckId::RpFilter;
    let all_key = Sysctl::global("net.ipv4.conf.all.rp_filter");
    let all = match inputs.sysctl(&all_key).map(|v| v.parse::<u32>()) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Check::skip(id, format!("{}: {e}", all_key.key)),
        Err(e) => return Check::skip(id, e),
    };
    let links = match inputs.links_or_skip(id) {
        Ok(l) => l,
        Err(skip) => return skip,
    };
    let routes = inputs.routes.as_deref().unwrap_or_default();
    let mut watched: Vec<&str> = links
        .iter()
        .filter(|l| is_tunnel(&l.name))
        .map(|l| l.name.as_str())
        .collect();
    watched.extend(uplink(routes));
    let mut evidence = vec![format!("{} = {all}", all_key.key)];
    let strict = strict_among(inputs, all, &watched, &mut evidence);
    let cali: Vec<&str> = cali_ifaces(links).map(|l| l.name.as_str()).collect();
    let cali_strict = strict_among(inputs, all, &cali, &mut Vec::new());
    if !cali_strict.is_empty() {
        evidence.push(format!(
            "strict on {} cali* (Felix sets that)",
            cali_strict.len()
        ));
    }
    let evidence = evidence.join("; ");
    for (dev, s) in &strict {
        if let Some((block, specific)) = asymmetric(routes, dev) {
            return Check::fail(
                id,
                format!(
                    "strict reverse path filtering on {dev}, where packets from {} arrive, but the way back to {} leaves by {}: they are dropped",
                    block.dst, specific.dst, specific.dev
                ),
            )
            .evidence(evidence)
            .hint(format!("{}, or fix the route to {}", loosen(all, s), specific.dst));
        }
    }
    let no_route: Vec<String> = cali_strict
        .into_iter()
        .map(|(dev, _)| dev.to_string())
        .filter(|c| !routes.is_empty() && !routes.iter().any(|r| r.dev == *c))
        .collect();
    if let Some((_, s)) = strict.first() {
        let devs: Vec<String> = strict.iter().map(|(d, _)| d.to_string()).collect();
        return Check::warn(
            id,
            format!("strict reverse path filtering on {}: packets that arrive where the route back does not leave are dropped", some_of(&devs)),
        )
        .evidence(evidence)
        .hint(loosen(all, s));
    }
    if !no_route.is_empty() {
        return Check::warn(
            id,
            format!("strict reverse path filtering on {}, which no route leads to: their pods' packets are dropped", some_of(&no_route)),
        )
        .evidence(evidence)
        .hint("Felix adds a route to each pod through its cali* interface: check calico-node's logs");
    }
    Check::ok(
        id,
        "no strict reverse path filtering where pod traffic arrives from other nodes",
    )
    .evidence(evidence)
}

pub(super) fn proxy_arp(inputs: &Inputs) -> Check {
    let id = CheckId::ProxyArp;
    let links = match inputs.links_or_skip(id) {
        Ok(l) => l,
        Err(skip) => return skip,
    };
    let cali: Vec<&str> = cali_ifaces(links).map(|l| l.name.as_str()).collect();
    if cali.is_empty() {
        return Check::skip(id, "no cali* interfaces: no pods on this node");
    }
    let all = inputs
        .sysctl(&Sysctl::global("net.ipv4.conf.all.proxy_arp"))
        .is_ok_and(|v| v == "1");
    // (interface, sysctl, value) of each finding.
    let (mut off, mut slow, mut unread) = (Vec::new(), Vec::new(), Vec::new());
    for dev in &cali {
        let pa = Sysctl::iface("ipv4", "conf", dev, "proxy_arp");
        match inputs.sysctl(&pa) {
            Ok(v) if v == "1" || all => {}
            Ok(v) => off.push((dev.to_string(), pa, v)),
            Err(e) => unread.push(e),
        }
        let delay = Sysctl::iface("ipv4", "neigh", dev, "proxy_delay");
        if let Some(v) = inputs.sysctl(&delay).ok().filter(|v| v != "0") {
            slow.push((dev.to_string(), delay, v));
        }
    }
    let devs = |found: &[(String, Sysctl, String)]| {
        some_of(&found.iter().map(|f| f.0.clone()).collect::<Vec<_>>())
    };
    let readings = |found: &[(String, Sysctl, String)]| {
        found
            .iter()
            .map(|(_, s, v)| reading(s, v))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Some((_, first, _)) = off.first() {
        return Check::fail(
            id,
            format!("proxy ARP is off on {}: their pods get no answer for their gateway 169.254.1.1", devs(&off)),
        )
        .evidence(readings(&off))
        .hint(format!(
            "sysctl -w {}=1 (Felix sets it when it sets up the interface: check calico-node's logs)",
            first.key
        ));
    }
    if unread.len() == cali.len() {
        return Check::skip(id, unread[0].clone());
    }
    if let Some((_, first, _)) = slow.first() {
        return Check::warn(
            id,
            format!(
                "proxy ARP answers late on {} (proxy_delay, in 10 ms)",
                devs(&slow)
            ),
        )
        .evidence(readings(&slow))
        .hint(format!("sysctl -w {}=0", first.key));
    }
    let names: Vec<String> = cali.iter().map(|s| s.to_string()).collect();
    Check::ok(
        id,
        format!(
            "proxy ARP is on, without delay, on all {} cali* interfaces",
            cali.len()
        ),
    )
    .evidence(format!(
        "proxy_arp = 1 and proxy_delay = 0 on {}",
        some_of(&names)
    ))
}

pub(super) fn conntrack(inputs: &Inputs) -> Check {
    let id = CheckId::Conntrack;
    let count_key = Sysctl::global("net.netfilter.nf_conntrack_count");
    let max_key = Sysctl::global("net.netfilter.nf_conntrack_max");
    let (count, max) = match (inputs.sysctl(&count_key), inputs.sysctl(&max_key)) {
        (Ok(c), Ok(m)) => (c, m),
        (Err(e), _) | (_, Err(e)) => {
            return Check::skip(id, format!("conntrack is not loaded: {e}"));
        }
    };
    let evidence = format!(
        "{}; {}",
        reading(&count_key, &count),
        reading(&max_key, &max)
    );
    let (Ok(n), Ok(m)) = (count.parse::<u64>(), max.parse::<u64>()) else {
        return Check::skip(id, "the conntrack counters are not numbers").evidence(evidence);
    };
    if m == 0 {
        return Check::skip(id, "nf_conntrack_max is 0").evidence(evidence);
    }
    let pct = n as f64 * 100.0 / m as f64;
    let summary = format!("{n} of {m} conntrack entries in use ({pct:.0}%)");
    let hint = format!(
        "when the table is full new connections are dropped: raise it (sysctl -w {}={}) or find what opens so many connections (`conntrack -S`, `conntrack -L`)",
        max_key.key,
        m * 2
    );
    let check = if pct > 95.0 {
        Check::fail(id, summary).hint(hint)
    } else if pct > 80.0 {
        Check::warn(id, summary).hint(hint)
    } else {
        Check::ok(id, summary)
    };
    check.evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::fake::{FakeRoot, iface, route};
    use super::*;

    #[test]
    fn forwarding_off_fails_with_the_sysctl() {
        let f = FakeRoot::new();
        f.sysctl("net.ipv4.ip_forward", "0");
        let c = ip_forward(&f.inputs());
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.evidence, "net.ipv4.ip_forward = 0");
        assert!(
            c.hint
                .unwrap()
                .starts_with("sysctl -w net.ipv4.ip_forward=1")
        );
        f.sysctl("net.ipv4.ip_forward", "1");
        assert_eq!(ip_forward(&f.inputs()).status, Status::Ok);
    }

    #[test]
    fn ipv6_pods_need_ipv6_forwarding() {
        let f = FakeRoot::new();
        f.sysctl("net.ipv4.ip_forward", "1");
        f.sysctl("net.ipv6.conf.all.forwarding", "0");
        let mut inputs = f.inputs();
        inputs.routes = Ok(vec![route("fd00::10/128", "cali1", None)]);
        assert_eq!(ip_forward(&inputs).status, Status::Fail);
        inputs
            .sysctls
            .insert("net.ipv6.conf.all.forwarding".into(), "1".into());
        assert_eq!(ip_forward(&inputs).status, Status::Ok);
    }

    fn rp_inputs(f: &FakeRoot) -> Inputs {
        f.sysctl("net.ipv4.conf.all.rp_filter", "0");
        f.sysctl("net.ipv4.conf.eth0.rp_filter", "0");
        f.sysctl("net.ipv4.conf.cali1.rp_filter", "1");
        let mut inputs = f.inputs();
        inputs.links = Ok(vec![iface("eth0", "", 1500), iface("cali1", "veth", 1500)]);
        inputs.routes = Ok(vec![
            route("0.0.0.0/0", "eth0", Some("192.168.1.2")),
            route("10.244.2.0/26", "eth0", Some("192.168.1.2")),
            route("10.244.1.10/32", "cali1", None),
        ]);
        inputs
    }

    #[test]
    fn strict_on_cali_is_felix_and_fine_strict_on_the_uplink_warns() {
        let f = FakeRoot::new();
        let mut inputs = rp_inputs(&f);
        let c = rp_filter(&inputs);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.evidence.contains("strict on 1 cali*"), "{}", c.evidence);
        inputs
            .sysctls
            .insert("net.ipv4.conf.all.rp_filter".into(), "1".into());
        let c = rp_filter(&inputs);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.contains("eth0"));
        assert!(c.hint.unwrap().contains("net.ipv4.conf.eth0.rp_filter=2"));
        inputs
            .sysctls
            .insert("net.ipv4.conf.all.rp_filter".into(), "2".into());
        assert_eq!(rp_filter(&inputs).status, Status::Ok);
    }

    #[test]
    fn strict_with_an_asymmetric_route_fails() {
        let f = FakeRoot::new();
        let mut inputs = rp_inputs(&f);
        f.sysctl("net.ipv4.conf.eth0.rp_filter", "1");
        if let Ok(r) = inputs.routes.as_mut() {
            r.push(route("10.244.2.10/32", "cali1", None));
        }
        let c = rp_filter(&inputs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.contains("10.244.2.10/32 leaves by cali1"),
            "{c:?}"
        );
    }

    #[test]
    fn strict_cali_without_a_route_warns() {
        let f = FakeRoot::new();
        let mut inputs = rp_inputs(&f);
        if let Ok(r) = inputs.routes.as_mut() {
            r.pop();
        }
        let c = rp_filter(&inputs);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.contains("cali1"));
    }

    #[test]
    fn proxy_arp_off_fails_and_delay_warns() {
        let f = FakeRoot::new();
        f.sysctl("net.ipv4.conf.all.proxy_arp", "0");
        f.sysctl("net.ipv4.conf.calia.proxy_arp", "1");
        f.sysctl("net.ipv4.neigh.calia.proxy_delay", "0");
        f.sysctl("net.ipv4.conf.calib.proxy_arp", "0");
        f.sysctl("net.ipv4.neigh.calib.proxy_delay", "0");
        let mut inputs = f.inputs();
        inputs.links = Ok(vec![
            iface("calia", "veth", 1500),
            iface("calib", "veth", 1500),
        ]);
        let c = proxy_arp(&inputs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.contains("calib") && !c.summary.contains("calia"),
            "{c:?}"
        );
        assert_eq!(
            c.hint.unwrap(),
            "sysctl -w net.ipv4.conf.calib.proxy_arp=1 (Felix sets it when it sets up the interface: check calico-node's logs)"
        );
        f.sysctl("net.ipv4.conf.calib.proxy_arp", "1");
        f.sysctl("net.ipv4.neigh.calib.proxy_delay", "80");
        let c = proxy_arp(&inputs);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert_eq!(
            c.hint.unwrap(),
            "sysctl -w net.ipv4.neigh.calib.proxy_delay=0"
        );
        f.sysctl("net.ipv4.neigh.calib.proxy_delay", "0");
        assert_eq!(proxy_arp(&inputs).status, Status::Ok);
        inputs.links = Ok(vec![]);
        assert_eq!(proxy_arp(&inputs).status, Status::Skip);
    }

    #[test]
    fn conntrack_thresholds() {
        let f = FakeRoot::new();
        let c = conntrack(&f.inputs());
        assert_eq!(c.status, Status::Skip);
        assert!(c.summary.starts_with("conntrack is not loaded"));
        f.sysctl("net.netfilter.nf_conntrack_max", "1000");
        for (count, want) in [
            ("100", Status::Ok),
            ("850", Status::Warn),
            ("960", Status::Fail),
        ] {
            f.sysctl("net.netfilter.nf_conntrack_count", count);
            let c = conntrack(&f.inputs());
            assert_eq!(c.status, want, "{c:?}");
        }
    }
}
