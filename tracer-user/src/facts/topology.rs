//! Where a node sits in the cluster: its routes (pod /32s behind `cali*`,
//! other nodes' blocks behind tunnels or gateways), its tunnel devices and
//! its uplinks. Recorded at the start so that a cluster view can tell which
//! node a pod address lives on and which interface carries the underlay.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One route of the main table, as `ip route` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// `10.244.1.10/32`, `0.0.0.0/0`.
    pub dst: String,
    pub dev: String,
    /// The gateway, for routes through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddr>,
}

impl RouteEntry {
    /// The destination network and its prefix length.
    pub fn net(&self) -> Option<(IpAddr, u8)> {
        let (a, len) = self.dst.split_once('/')?;
        Some((a.parse().ok()?, len.parse().ok()?))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net().is_some_and(|(net, len)| in_net(ip, net, len))
    }
}

/// Whether `ip` lies in `net`/`len` (same family).
pub fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A tunnel device of the node (`vxlan.calico`, `tunl0`, `wireguard.cali`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    pub name: String,
    /// `vxlan`, `ipip`, `wireguard`.
    pub kind: String,
    /// The other nodes' ends: a VXLAN device's forwarding entries, the
    /// gateways of routes through an IPIP device.
    #[serde(default)]
    pub remotes: Vec<IpAddr>,
}

/// The node's place in the cluster, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    #[serde(default)]
    pub routes: Vec<RouteEntry>,
    #[serde(default)]
    pub tunnels: Vec<Tunnel>,
    /// Interfaces that carry the default route: where the underlay leaves.
    #[serde(default)]
    pub uplinks: Vec<String>,
}

impl Topology {
    /// Addresses of this node's pods: host routes through `cali*` interfaces.
    pub fn pod_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.routes
            .iter()
            .filter(|r| r.dev.starts_with("cali"))
            .filter_map(RouteEntry::net)
            .filter(|(a, len)| u32::from(*len) == if a.is_ipv4() { 32 } else { 128 })
            .map(|(a, _)| a)
    }

    pub fn has_pod(&self, ip: IpAddr) -> bool {
        self.pod_addresses().any(|a| a == ip)
    }
}

/// Routes of the main table from `/proc/net/route` (IPv4) and
/// `/proc/net/ipv6_route` (IPv6) of the calling thread's namespace.
pub fn read_routes() -> Vec<RouteEntry> {
    read_routes_in(Path::new("/proc/net")).unwrap_or_default()
}

/// Routes from the `route` and `ipv6_route` tables of a `/proc/net`
/// directory (another root's, for `doctor --host-root`); `None` when
/// neither can be read.
pub fn read_routes_in(proc_net: &Path) -> Option<Vec<RouteEntry>> {
    let v4 = std::fs::read_to_string(proc_net.join("route")).ok();
    let v6 = std::fs::read_to_string(proc_net.join("ipv6_route")).ok();
    if v4.is_none() && v6.is_none() {
        return None;
    }
    let mut out = v4.map(|s| parse_v4(&s)).unwrap_or_default();
    out.extend(v6.map(|s| parse_v6(&s)).unwrap_or_default());
    Some(out)
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, addresses
/// as little-endian hex.
fn parse_v4(table: &str) -> Vec<RouteEntry> {
    let addr = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| IpAddr::from(v.to_le_bytes()))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dst, gw, mask) = (addr(f.get(1)?)?, addr(f.get(2)?)?, addr(f.get(7)?)?);
            let IpAddr::V4(m) = mask else { return None };
            Some(RouteEntry {
                dst: format!("{dst}/{}", u32::from(m).count_ones()),
                dev: f[0].to_string(),
                via: (!gw.is_unspecified()).then_some(gw),
            })
        })
        .collect()
}

/// `dst dst_len src src_len gateway metric refcnt use flags dev`, hex.
fn parse_v6(table: &str) -> Vec<RouteEntry> {
    let addr = |h: &str| {
        u128::from_str_radix(h, 16)
            .ok()
            .map(|v| IpAddr::from(v.to_be_bytes()))
    };
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 10 || f[9] == "lo" {
                return None;
            }
            let (dst, len, gw) = (addr(f[0])?, u8::from_str_radix(f[1], 16).ok()?, addr(f[4])?);
            Some(RouteEntry {
                dst: format!("{dst}/{len}"),
                dev: f[9].to_string(),
                via: (!gw.is_unspecified()).then_some(gw),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0276A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0076A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
cali1234\t0A01F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
vxlan.calico\t0002F40A\t0002F40A\t0007\t0\t0\t0\tC0FFFFFF\t0\t0\t0
";
    const V6: &str = "fd000000000000000000000000000010 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001 cali1234
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
";

    #[test]
    fn routes_read_as_ip_route_shows_them() {
        let r = parse_v4(V4);
        let shown: Vec<(String, &str, Option<String>)> = r
            .iter()
            .map(|r| (r.dst.clone(), r.dev.as_str(), r.via.map(|v| v.to_string())))
            .collect();
        assert_eq!(
            shown,
            [
                ("0.0.0.0/0".into(), "eth0", Some("192.168.118.2".into())),
                ("192.168.118.0/24".into(), "eth0", None),
                ("10.244.1.10/32".into(), "cali1234", None),
                (
                    "10.244.2.0/26".into(),
                    "vxlan.calico",
                    Some("10.244.2.0".into())
                ),
            ]
        );
        let v6 = parse_v6(V6);
        assert_eq!(v6.len(), 1, "loopback routes are left out");
        assert_eq!(
            (v6[0].dst.as_str(), v6[0].dev.as_str()),
            ("fd00::10/128", "cali1234")
        );
        let t = Topology {
            routes: [r, v6].concat(),
            ..Default::default()
        };
        let pods: Vec<String> = t.pod_addresses().map(|a| a.to_string()).collect();
        assert_eq!(pods, ["10.244.1.10", "fd00::10"]);
        assert!(t.routes[3].contains("10.244.2.10".parse().unwrap()));
        assert!(!t.routes[3].contains("10.244.2.64".parse().unwrap()));
        assert!(
            t.routes[0].contains("8.8.8.8".parse().unwrap()),
            "a default route holds all"
        );
    }
}
