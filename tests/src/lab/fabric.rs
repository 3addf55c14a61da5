//! The "cloud network" between the nodes: a bridge in a third namespace that carries the
//! underlay, where a test drops what crosses it or lowers its MTU. Nothing of calitrace
//! runs there, and the nodes see no difference: their `eth0` is a veth as before.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, anyhow, bail};

use super::commands::{check_output, ip, netns_exec, nft_script};
use super::{Lab, NO_IPV6, UNDERLAY_MTU};

/// Name of the bridge in the fabric namespace.
pub const FABRIC_BRIDGE: &str = "br0";
/// Names of the fabric's bridge ports, the peers of node A's and node B's `eth0`.
pub const FABRIC_PORTS: [&str; 2] = ["port-a", "port-b"];
/// The nft table (family `bridge`) that holds the [`FabricDrop`] rules.
const DROP_TABLE: &str = "ctlab_fabric";
/// Its chain, on the bridge's forward hook (`fwd` is an nft keyword).
const DROP_CHAIN: &str = "cross";
/// Smallest MTU an IPv4 link may have.
const MIN_MTU: u32 = 68;
/// Ethernet header length: a qdisc sees frames, an MTU counts IP packets.
const ETH_HLEN: u32 = 14;

/// What [`Lab::fabric_drop`] makes the fabric drop, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FabricDrop<'a> {
    /// UDP whose source or destination port is this one (VXLAN: 4789).
    UdpPort(u16),
    /// IPv4 packets carrying this protocol number (ICMP: 1, IPIP: 4).
    IpProto(u8),
    /// IPv4 packets from or to this network, `a.b.c.d/len` or one address (e.g. the pod
    /// CIDR `10.244.0.0/16`, which only unencapsulated pod traffic shows on the underlay).
    ToNet(&'a str),
    /// Everything, ARP included.
    All,
}

impl FabricDrop<'_> {
    /// The nft matches of this rule, one per rule line (empty string: match everything).
    fn matches(&self) -> Result<Vec<String>> {
        Ok(match *self {
            FabricDrop::UdpPort(port) => {
                vec![format!("udp dport {port}"), format!("udp sport {port}")]
            }
            FabricDrop::IpProto(proto) => vec![format!("ip protocol {proto}")],
            FabricDrop::ToNet(net) => {
                let net = parse_net(net)?;
                vec![format!("ip daddr {net}"), format!("ip saddr {net}")]
            }
            FabricDrop::All => vec![String::new()],
        })
    }
}

/// `a.b.c.d/len` or `a.b.c.d` (a /32), checked and written back canonically.
fn parse_net(text: &str) -> Result<String> {
    let bad = || anyhow!("bad IPv4 network {text:?} (want a.b.c.d/len)");
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr, len.parse::<u8>().map_err(|_| bad())?),
        None => (text, 32),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok(format!("{addr}/{len}"))
}

impl Lab {
    /// The fabric namespace with its bridge (ports join in `build_underlay`): no IPv6, no
    /// STP or forward delay, no multicast snooping, and no bridged packets sent through
    /// iptables, so that nothing there but the bridge itself touches what crosses it.
    pub(super) fn build_fabric(&mut self) -> Result<()> {
        let netns = format!("{}-fabric", self.id);
        self.create_netns(&netns)?;
        self.sysctls(&netns, &NO_IPV6)?;
        ip(&netns, "link set lo up")?;
        ip(
            &netns,
            &format!(
                "link add {FABRIC_BRIDGE} type bridge stp_state 0 forward_delay 0 mcast_snooping 0"
            ),
        )?;
        ip(&netns, &format!("link set {FABRIC_BRIDGE} up"))?;
        // Present only where br_netfilter is (built in here, a module elsewhere).
        let no_nf = "for f in /proc/sys/net/bridge/bridge-nf-call-*; \
                     do [ -e \"$f\" ] && echo 0 > \"$f\"; done; true";
        let out = netns_exec(&netns, &["sh", "-c", no_nf])?;
        check_output(&format!("in {netns}: bridge-nf-call-* = 0"), &out)?;
        self.fabric = Some(netns);
        Ok(())
    }

    /// Plugs `port` (already in the fabric namespace) into the bridge and brings it up.
    pub(super) fn join_fabric(&self, port: &str) -> Result<()> {
        let netns = self.fabric_netns();
        ip(netns, &format!("link set {port} mtu {UNDERLAY_MTU}"))?;
        ip(netns, &format!("link set {port} master {FABRIC_BRIDGE}"))?;
        ip(netns, &format!("link set {port} up"))
    }

    /// Name of the fabric namespace (`<lab id>-fabric`); panics on [`Lab::empty`].
    pub fn fabric_netns(&self) -> &str {
        self.fabric
            .as_deref()
            .expect("this lab has no fabric (Lab::empty)")
    }

    /// Makes the fabric drop what `rule` matches, both ways; rules add up until
    /// [`Lab::fabric_clear`].
    pub fn fabric_drop(&self, rule: FabricDrop<'_>) -> Result<()> {
        let mut script = format!(
            "add table bridge {DROP_TABLE}\n\
             add chain bridge {DROP_TABLE} {DROP_CHAIN} {{ type filter hook forward priority 0; policy accept; }}\n"
        );
        for m in rule.matches()? {
            script.push_str(&format!(
                "add rule bridge {DROP_TABLE} {DROP_CHAIN} {m} counter drop\n"
            ));
        }
        nft_script(self.fabric_netns(), &script).with_context(|| format!("fabric drop {rule:?}"))
    }

    /// Removes every [`FabricDrop`] rule (the MTU stays as [`Lab::fabric_mtu`] set it).
    pub fn fabric_clear(&self) -> Result<()> {
        nft_script(
            self.fabric_netns(),
            &format!("add table bridge {DROP_TABLE}\ndelete table bridge {DROP_TABLE}\n"),
        )
    }

    /// Lets only IP packets of at most `mtu` bytes cross the fabric; bigger ones vanish
    /// without ICMP. `UNDERLAY_MTU` (or more) restores the fabric.
    ///
    /// Each bridge port gets a `tbf` qdisc whose burst is one frame of `mtu`: it drops a
    /// bigger packet, and a TCP GSO packet too unless its segments fit (as a real link
    /// would). The ports' own MTU stays 1500: a veth checks the MTU of the receiving end,
    /// so a lower one would drop (and tell) the sending node instead of the fabric. The
    /// kernel logs that the burst is below the port's MTU: that is the point.
    pub fn fabric_mtu(&self, mtu: u32) -> Result<()> {
        if mtu < MIN_MTU {
            bail!("fabric MTU {mtu} is below the IPv4 minimum of {MIN_MTU}");
        }
        let netns = self.fabric_netns();
        for port in FABRIC_PORTS {
            limit_port(netns, port, mtu)?;
        }
        let bridge_mtu = mtu.min(UNDERLAY_MTU);
        ip(netns, &format!("link set {FABRIC_BRIDGE} mtu {bridge_mtu}"))
    }

    /// Packets the fabric has dropped so far: by [`FabricDrop`] rules since the last
    /// [`Lab::fabric_clear`], plus by [`Lab::fabric_mtu`] since it was last set.
    pub fn fabric_dropped(&self) -> Result<u64> {
        let netns = self.fabric_netns();
        let ours = format!("table bridge {DROP_TABLE}");
        let tables = stdout_of(netns, &["nft", "list", "tables", "bridge"])?;
        let mut dropped = 0;
        if tables.lines().any(|l| l.trim() == ours) {
            dropped += stdout_of(netns, &["nft", "list", "table", "bridge", DROP_TABLE])?
                .lines()
                .filter_map(|l| l.split("counter packets ").nth(1))
                .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        for port in FABRIC_PORTS {
            dropped += port_qdiscs(netns, port)?
                .iter()
                .filter(|q| is_tbf(q))
                .filter_map(|q| q["drops"].as_u64())
                .sum::<u64>();
        }
        Ok(dropped)
    }
}

/// Gives `port` a `tbf` qdisc that passes IP packets of at most `mtu` bytes, or removes
/// it from [`UNDERLAY_MTU`] on.
fn limit_port(netns: &str, port: &str, mtu: u32) -> Result<()> {
    let burst = (mtu + ETH_HLEN).to_string();
    let args: &[&str] = if mtu < UNDERLAY_MTU {
        &[
            "tc", "qdisc", "replace", "dev", port, "root", "tbf", "rate", "100gbit", "burst",
            &burst, "limit", "1000000",
        ]
    } else if port_qdiscs(netns, port)?.iter().any(is_tbf) {
        &["tc", "qdisc", "del", "dev", port, "root"]
    } else {
        return Ok(());
    };
    stdout_of(netns, args).map(drop)
}

fn is_tbf(qdisc: &serde_json::Value) -> bool {
    qdisc["kind"] == "tbf"
}

/// The qdiscs on `port` with their counters (`tc -s -j qdisc show`); none, or `noqueue`,
/// on a bare veth.
fn port_qdiscs(netns: &str, port: &str) -> Result<Vec<serde_json::Value>> {
    let args = ["tc", "-s", "-j", "qdisc", "show", "dev", port];
    let out = stdout_of(netns, &args)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("parsing JSON of `{}`", args.join(" ")))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Stdout of `args` run in `netns`, or an error with stderr.
fn stdout_of(netns: &str, args: &[&str]) -> Result<String> {
    let out = netns_exec(netns, args)?;
    check_output(&format!("in {netns}: {}", args.join(" ")), &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_checked_and_rules_cover_both_directions() {
        assert_eq!(parse_net("10.244.0.0/16").unwrap(), "10.244.0.0/16");
        assert_eq!(parse_net("10.244.2.10").unwrap(), "10.244.2.10/32");
        for bad in [
            "10.244.0.0/33",
            "10.244.0/16",
            "x",
            "10.0.0.0/16; flush ruleset",
            "",
        ] {
            assert!(parse_net(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            FabricDrop::UdpPort(4789).matches().unwrap(),
            ["udp dport 4789", "udp sport 4789"]
        );
        assert_eq!(
            FabricDrop::ToNet("10.244.0.0/16").matches().unwrap(),
            ["ip daddr 10.244.0.0/16", "ip saddr 10.244.0.0/16"]
        );
        assert_eq!(FabricDrop::IpProto(4).matches().unwrap(), ["ip protocol 4"]);
        assert_eq!(FabricDrop::All.matches().unwrap(), [""]);
    }
}
