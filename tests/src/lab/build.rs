//! Building a lab's nodes, underlay and pods (the topology in [`super`]'s docs).

use std::collections::HashSet;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow};

use super::commands::{check_output, ip, veth};
use super::{
    CALI_MAC, FABRIC_PORTS, GATEWAY_IP, IPIP_DEV, IPIP_MTU, Lab, Mode, NO_IPV6, Node, POD_IF, Pod,
    UNDERLAY_IF, UNDERLAY_MTU, VXLAN_DEV, VXLAN_MTU, VXLAN_PORT, VXLAN_VNI,
};

/// Fixed MAC addresses of `vxlan.calico` on node A and node B (locally administered).
const VXLAN_MACS: [&str; 2] = ["66:63:74:6c:00:0a", "66:63:74:6c:00:0b"];
const NODE_LETTERS: [char; 2] = ['a', 'b'];

impl Lab {
    /// Builds both nodes, the underlay between them and `pods_per_node` pods on each;
    /// `k` picks the underlay subnet (`192.168.K.0/24`).
    pub(super) fn build(&mut self, k: u64, pods_per_node: usize) -> Result<()> {
        self.build_nodes(k)?;
        self.build_fabric()?;
        self.build_underlay()?;
        for node in 0..NODE_LETTERS.len() {
            let mut cali_names = HashSet::new();
            let mut pods = Vec::new();
            for i in 0..pods_per_node {
                pods.push(self.build_pod(node, i, &mut cali_names)?);
            }
            self.pods.push(pods);
        }
        Ok(())
    }

    /// The node namespaces. The sysctls come first so that every interface inherits
    /// the defaults.
    fn build_nodes(&mut self, k: u64) -> Result<()> {
        let vxlan = self.mode == Mode::Vxlan;
        let tunnel = self.mode != Mode::Direct;
        for (i, letter) in NODE_LETTERS.iter().enumerate() {
            let netns = format!("{}-node-{letter}", self.id);
            self.create_netns(&netns)?;
            let mut kv = vec![
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ];
            if !self.ipv6 {
                kv.extend(NO_IPV6);
            }
            self.sysctls(&netns, &kv)?;
            ip(&netns, "link set lo up")?;
            self.nodes.push(Node {
                netns,
                underlay_if: UNDERLAY_IF.to_string(),
                underlay_ip: format!("192.168.{k}.{}", i + 1),
                pod_cidr: format!("10.244.{}.0/26", i + 1),
                tunnel_ip: tunnel.then(|| format!("10.244.{}.1", i + 1)),
                vxlan_mac: vxlan.then(|| VXLAN_MACS[i].to_string()),
            });
        }
        Ok(())
    }

    /// Each node's underlay veth, created inside the node with its peer plugged into the
    /// fabric's bridge, and each node's routes to the other's pods.
    fn build_underlay(&mut self) -> Result<()> {
        let (a, b) = (self.nodes[0].clone(), self.nodes[1].clone());
        let u = UNDERLAY_IF;
        for (node, port) in [&a, &b].into_iter().zip(FABRIC_PORTS) {
            veth(&node.netns, u, self.fabric_netns(), port)?;
            self.join_fabric(port)?;
        }
        for (node, peer) in [(&a, &b), (&b, &a)] {
            let ns = &node.netns;
            ip(ns, &format!("link set {u} mtu {UNDERLAY_MTU}"))?;
            ip(ns, &format!("addr add {}/24 dev {u}", node.underlay_ip))?;
            ip(ns, &format!("link set {u} up"))?;
            self.sysctls(ns, &[(&format!("net.ipv4.conf.{u}.rp_filter"), "0")])?;
            // Proxy ARP answers for 169.254.1.1 only with a route out of another interface.
            ip(
                ns,
                &format!("route add default via {} dev {u}", peer.underlay_ip),
            )?;
            match self.mode {
                Mode::Direct => {
                    let (cidr, via) = (&peer.pod_cidr, &peer.underlay_ip);
                    ip(ns, &format!("route add {cidr} via {via} dev {u}"))?;
                }
                Mode::Vxlan => setup_vxlan(node, peer)?,
                Mode::Ipip => setup_ipip(node, peer)?,
            }
        }
        Ok(())
    }

    /// Pod `i` of node `node_idx`: its namespace, its veth to the node (`cali...` on
    /// the node's side, a name not yet in `cali_names`) and the routes on both sides.
    pub(super) fn build_pod(
        &mut self,
        node_idx: usize,
        i: usize,
        cali_names: &mut HashSet<String>,
    ) -> Result<Pod> {
        let mtu = match self.mode {
            Mode::Vxlan => VXLAN_MTU,
            Mode::Ipip => IPIP_MTU,
            Mode::Direct => UNDERLAY_MTU,
        };
        let node_ns = self.nodes[node_idx].netns.clone();
        let netns = format!("{}-pod-{}{i}", self.id, NODE_LETTERS[node_idx]);
        self.create_netns(&netns)?;
        if !self.ipv6 {
            self.sysctls(&netns, &NO_IPV6)?;
        }
        let cali = cali_name(&netns, cali_names);
        let pod_ip = format!("10.244.{}.{}", node_idx + 1, 10 + i);

        // Host side, created inside the node with its peer directly inside the pod.
        veth(&node_ns, &cali, &netns, POD_IF)?;
        ip(
            &node_ns,
            &format!("link set {cali} address {CALI_MAC} mtu {mtu}"),
        )?;
        self.sysctls(
            &node_ns,
            &[
                (&format!("net.ipv4.conf.{cali}.proxy_arp"), "1"),
                (&format!("net.ipv4.neigh.{cali}.proxy_delay"), "0"),
                (&format!("net.ipv4.conf.{cali}.rp_filter"), "0"),
            ],
        )?;
        ip(&node_ns, &format!("link set {cali} up"))?;
        ip(
            &node_ns,
            &format!("route add {pod_ip}/32 dev {cali} scope link"),
        )?;

        // Pod side.
        ip(&netns, "link set lo up")?;
        ip(&netns, &format!("link set {POD_IF} mtu {mtu}"))?;
        ip(&netns, &format!("addr add {pod_ip}/32 dev {POD_IF}"))?;
        ip(&netns, &format!("link set {POD_IF} up"))?;
        ip(
            &netns,
            &format!("route add {GATEWAY_IP} dev {POD_IF} scope link"),
        )?;
        ip(
            &netns,
            &format!("route add default via {GATEWAY_IP} dev {POD_IF}"),
        )?;
        Ok(Pod {
            netns,
            ip: pod_ip,
            cali,
            node: node_idx,
            index: i,
        })
    }
}

fn setup_vxlan(node: &Node, peer: &Node) -> Result<()> {
    let missing = || anyhow!("vxlan parameters missing");
    let ns = &node.netns;
    let (dev, u, local) = (VXLAN_DEV, &node.underlay_if, &node.underlay_ip);
    let mac = node.vxlan_mac.as_deref().ok_or_else(missing)?;
    let tunnel_ip = node.tunnel_ip.as_deref().ok_or_else(missing)?;
    let peer_mac = peer.vxlan_mac.as_deref().ok_or_else(missing)?;
    let peer_tunnel = peer.tunnel_ip.as_deref().ok_or_else(missing)?;
    let (cidr, peer_underlay) = (&peer.pod_cidr, &peer.underlay_ip);
    ip(
        ns,
        &format!(
            "link add {dev} type vxlan id {VXLAN_VNI} dstport {VXLAN_PORT} local {local} dev {u} nolearning"
        ),
    )?;
    ip(ns, &format!("link set {dev} address {mac} mtu {VXLAN_MTU}"))?;
    ip(ns, &format!("addr add {tunnel_ip}/32 dev {dev}"))?;
    ip(ns, &format!("link set {dev} up"))?;
    ip(
        ns,
        &format!("route add {cidr} via {peer_tunnel} dev {dev} onlink"),
    )?;
    ip(
        ns,
        &format!("neigh add {peer_tunnel} lladdr {peer_mac} dev {dev} nud permanent"),
    )?;
    let fdb = format!("-n {ns} fdb append {peer_mac} dev {dev} dst {peer_underlay}");
    let out = Command::new("bridge")
        .args(fdb.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .context("running bridge")?;
    check_output(&format!("bridge {fdb}"), &out)
}

/// `tunl0` (there in every namespace once the `ipip` module is loaded) with the
/// tunnel address, and the other node's pods routed through it to its underlay
/// address, which becomes the outer destination.
fn setup_ipip(node: &Node, peer: &Node) -> Result<()> {
    let ns = &node.netns;
    let tunnel_ip = node
        .tunnel_ip
        .as_deref()
        .ok_or_else(|| anyhow!("tunnel address missing"))?;
    let dev = IPIP_DEV;
    ip(ns, &format!("link set {dev} mtu {IPIP_MTU} up")).context("tunl0 needs the ipip module")?;
    ip(ns, &format!("addr add {tunnel_ip}/32 dev {dev}"))?;
    ip(
        ns,
        &format!(
            "route add {} via {} dev {dev} onlink",
            peer.pod_cidr, peer.underlay_ip
        ),
    )
}

/// Calico-style host veth name: `cali` + 11 hex chars of a hash, unique on the node.
fn cali_name(seed: &str, used: &mut HashSet<String>) -> String {
    let mut salt = 0u64;
    loop {
        // FNV-1a, 64 bit.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes().chain(salt.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let name = format!("cali{:011x}", h & 0x0fff_ffff_ffff);
        if used.insert(name.clone()) {
            return name;
        }
        salt += 1;
    }
}
