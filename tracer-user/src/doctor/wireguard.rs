//! `wireguard`: Calico's WireGuard devices (`wireguard.cali`, `wg-v6.cali`)
//! as the kernel reports them: up, with the tunnel address Felix gives them,
//! with peers, and peers that completed a handshake once they were sent to.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Check, CheckId, Iface, Inputs};
use crate::dataplane::wireguard::Device;

/// Calico's WireGuard devices and whether each carries IPv6.
const DEVICES: [(&str, bool); 2] = [("wireguard.cali", false), ("wg-v6.cali", true)];

/// What the kernel reports of WireGuard (read live; made up by tests).
#[derive(Debug, Clone)]
pub struct WireguardReadings {
    /// Each of Calico's devices present: what WireGuard's netlink says, or why not.
    pub devices: BTreeMap<String, Result<Device, String>>,
    /// The addresses of each interface, or why they cannot be read.
    pub addresses: Result<BTreeMap<String, Vec<IpAddr>>, String>,
    /// Seconds since the epoch, now.
    pub now_s: i64,
}

impl Default for WireguardReadings {
    fn default() -> Self {
        WireguardReadings {
            devices: BTreeMap::new(),
            addresses: Ok(BTreeMap::new()),
            now_s: 0,
        }
    }
}

impl WireguardReadings {
    pub fn live(links: &Result<Vec<Iface>, String>) -> WireguardReadings {
        let present = |name: &str| {
            links
                .as_ref()
                .is_ok_and(|l| l.iter().any(|i| i.name == name))
        };
        let devices = DEVICES
            .iter()
            .filter(|(n, _)| present(n))
            .map(|(n, _)| {
                let d = crate::dataplane::wireguard::device(n).map_err(|e| e.to_string());
                (n.to_string(), d)
            })
            .collect();
        WireguardReadings {
            devices,
            addresses: live_addresses(),
            now_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        }
    }
}

fn live_addresses() -> Result<BTreeMap<String, Vec<IpAddr>>, String> {
    use crate::kernel::netlink;
    let names: BTreeMap<u32, String> = netlink::links()
        .map_err(|e| format!("netlink: {e}"))?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (i, a) in netlink::link_addresses().map_err(|e| format!("netlink: {e}"))? {
        if let Some(n) = names.get(&i) {
            out.entry(n.clone()).or_default().push(a);
        }
    }
    Ok(out)
}

pub(super) fn wireguard(inputs: &Inputs) -> Check {
    let id = CheckId::Wireguard;
    let links = match inputs.links_or_skip(id) {
        Ok(l) => l,
        Err(skip) => return skip,
    };
    let present: Vec<(&Iface, bool)> = DEVICES
        .iter()
        .filter_map(|(n, v6)| links.iter().find(|l| l.name == *n).map(|l| (l, *v6)))
        .collect();
    if present.is_empty() {
        return Check::skip(
            id,
            "WireGuard is not in use: no wireguard.cali or wg-v6.cali",
        );
    }
    let r = &inputs.wireguard;
    let mut said = Vec::new();
    for (link, v6) in present {
        let name = link.name.as_str();
        if !link.up {
            return Check::fail(id, format!("{name} is down: no traffic between the nodes is encrypted or delivered through it"))
                .evidence(format!("{name}: down"))
                .hint("check calico-node's logs for WireGuard errors; Felix brings the device up once it has its key and address");
        }
        if let Ok(addrs) = &r.addresses {
            let has = addrs
                .get(name)
                .is_some_and(|a| a.iter().any(|a| a.is_ipv6() == v6));
            if !has {
                return Check::fail(
                    id,
                    format!(
                        "{name} has no {} address: traffic the node sends through it leaves with another source address, which the peers' allowed IPs refuse",
                        if v6 { "IPv6" } else { "IPv4" }
                    ),
                )
                .evidence(format!("{name}: {:?}", addrs.get(name).cloned().unwrap_or_default()))
                .hint("Felix gives the device the node's WireGuard tunnel address (Node status wireguardInterfaceIPv4Address, calico#8039, #10599): check that IPAM allocated one (`calicoctl ipam check`) and restart calico-node");
            }
        }
        let dev = match r.devices.get(name) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                return Check::warn(id, format!("{name}: WireGuard's peers cannot be read: {e}"))
                    .evidence(e.clone())
                    .hint("run calitrace as root (CAP_NET_ADMIN)");
            }
            None => continue,
        };
        match peer_problem(dev, r.now_s) {
            Some(c) => return c,
            None => said.push(summary(dev, r.now_s)),
        }
    }
    Check::ok(id, format!("WireGuard: {}", said.join("; "))).evidence(said.join("; "))
}

/// A device without peers, or a peer sent to that never shook hands.
fn peer_problem(dev: &Device, now_s: i64) -> Option<Check> {
    let id = CheckId::Wireguard;
    let name = &dev.name;
    if dev.peers.is_empty() {
        return Some(
            Check::warn(id, format!("{name} has no peers: no other node's traffic is encrypted to or from this one"))
                .evidence(format!("{name}: listening on {:?}, 0 peers", dev.listen_port))
                .hint("Felix adds a peer per node that publishes a WireGuard key (`calicoctl get node -o yaml`: wireguardPublicKey); check the other nodes' calico-node"),
        );
    }
    let silent: Vec<String> = dev
        .peers
        .iter()
        .filter(|p| p.last_handshake_s.is_none() && p.tx_bytes > 0)
        .map(|p| {
            let at = p
                .endpoint
                .map_or_else(|| "no endpoint".into(), |e| e.to_string());
            format!("{at} ({} bytes sent, none received)", p.tx_bytes)
        })
        .collect();
    if silent.is_empty() {
        return None;
    }
    Some(
        Check::fail(
            id,
            format!("{name}: no handshake with {} although packets were sent: nothing reaches the pods of those nodes", silent.join(", ")),
        )
        .evidence(summary(dev, now_s))
        .hint(format!(
            "WireGuard's UDP port ({}) must be open between the nodes (security groups, host firewalls), and the peer's public key current: compare `wg show {name}` with the other node's",
            dev.listen_port.unwrap_or(51820)
        )),
    )
}

fn summary(dev: &Device, now_s: i64) -> String {
    let latest = dev.peers.iter().filter_map(|p| p.last_handshake_s).max();
    let shook = dev
        .peers
        .iter()
        .filter(|p| p.last_handshake_s.is_some())
        .count();
    let ago = latest.map_or_else(String::new, |t| {
        format!(", latest {} s ago", (now_s - t).max(0))
    });
    format!(
        "{} up, {} peer(s), {shook} with a handshake{ago}",
        dev.name,
        dev.peers.len()
    )
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::fake::{FakeRoot, iface};
    use super::*;
    use crate::dataplane::wireguard::Peer;

    const NOW: i64 = 1_800_000_000;

    fn peer(endpoint: &str, handshake: Option<i64>, tx: u64) -> Peer {
        Peer {
            public_key: endpoint.into(),
            endpoint: Some(endpoint.parse().unwrap()),
            last_handshake_s: handshake,
            tx_bytes: tx,
            ..Default::default()
        }
    }

    fn node(f: &FakeRoot, peers: Vec<Peer>, addr: Option<&str>) -> Inputs {
        let mut i = f.inputs();
        i.links = Ok(vec![
            iface("eth0", "", 1500),
            iface("wireguard.cali", "wireguard", 1440),
        ]);
        let addrs = addr.map(|a| vec![a.parse().unwrap()]).unwrap_or_default();
        i.wireguard = WireguardReadings {
            devices: [(
                "wireguard.cali".to_string(),
                Ok(Device {
                    name: "wireguard.cali".into(),
                    listen_port: Some(51820),
                    peers,
                }),
            )]
            .into_iter()
            .collect(),
            addresses: Ok([("wireguard.cali".to_string(), addrs)]
                .into_iter()
                .collect()),
            now_s: NOW,
        };
        i
    }

    #[test]
    fn peers_that_shook_hands_are_ok() {
        let f = FakeRoot::new();
        let i = node(
            &f,
            vec![peer("192.168.1.2:51820", Some(NOW - 20), 500)],
            Some("10.244.1.0"),
        );
        let c = wireguard(&i);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.summary
                .contains("1 peer(s), 1 with a handshake, latest 20 s ago"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn a_peer_sent_to_without_a_handshake_fails() {
        let f = FakeRoot::new();
        let i = node(
            &f,
            vec![
                peer("192.168.1.2:51820", Some(NOW - 20), 500),
                peer("192.168.1.3:51820", None, 1480),
            ],
            Some("10.244.1.0"),
        );
        let c = wireguard(&i);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary
                .contains("no handshake with 192.168.1.3:51820 (1480 bytes sent"),
            "{}",
            c.summary
        );
        assert!(c.hint.unwrap().contains("UDP port (51820)"));
    }

    #[test]
    fn a_device_without_its_address_fails() {
        let f = FakeRoot::new();
        let c = wireguard(&node(
            &f,
            vec![peer("192.168.1.2:51820", Some(NOW), 1)],
            None,
        ));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.starts_with("wireguard.cali has no IPv4 address"),
            "{}",
            c.summary
        );
        assert!(c.hint.unwrap().contains("calico#8039"));
    }

    #[test]
    fn no_peers_warns_and_no_device_skips() {
        let f = FakeRoot::new();
        assert_eq!(
            wireguard(&node(&f, vec![], Some("10.244.1.0"))).status,
            Status::Warn
        );
        assert_eq!(wireguard(&f.inputs()).status, Status::Skip);
        let mut i = node(&f, vec![], Some("10.244.1.0"));
        i.wireguard.devices.insert(
            "wireguard.cali".into(),
            Err("the kernel has no generic netlink family \"wireguard\"".into()),
        );
        assert_eq!(wireguard(&i).status, Status::Warn);
    }
}
