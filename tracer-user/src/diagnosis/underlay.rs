//! UNDERLAY_DROP and UNDERLAY_MTU: packets of a pod flow left one node's
//! uplink and never reached the other node (cluster views).

use std::net::IpAddr;

use super::problem::{Finding, Problem};
use crate::model::{Addr, Code, Diagnosis, Encap, Stage, Underlay};

/// Packets lost between two nodes, as the cluster view found them.
#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    /// Pod addresses of the flow.
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub path: Underlay,
}

impl Loss {
    /// Only the larger packets are lost: the path's MTU.
    fn is_mtu(&self) -> bool {
        matches!(
            (self.path.largest_delivered, self.path.smallest_lost),
            (Some(ok), Some(lost)) if lost > ok
        )
    }
}

pub fn underlay_loss(l: &Loss) -> Finding {
    let p = &l.path;
    let code = if l.is_mtu() {
        Code::UnderlayMtu
    } else {
        Code::UnderlayDrop
    };
    let how = match p.encap {
        Encap::Vxlan | Encap::Ipip => format!(
            " encapsulated as {} to {}",
            if p.encap == Encap::Vxlan {
                "VXLAN"
            } else {
                "IPIP"
            },
            p.outer_dst
                .map_or_else(|| "the other node".into(), |a| a.to_string())
        ),
        Encap::Wireguard => " through WireGuard".into(),
        Encap::None => " unencapsulated".into(),
    };
    let (summary, hint) = if code == Code::UnderlayMtu {
        mtu_words(l, &how)
    } else {
        (
            format!(
                "{} > {} left {}{how}, never reached {}: something between the nodes drops {}",
                Addr(l.src),
                Addr(l.dst),
                p.src_node,
                p.dst_node,
                what_is_dropped(p.encap)
            ),
            open_hint(p.encap),
        )
    };
    let path = if code == Code::UnderlayMtu {
        p.clone()
    } else {
        Underlay {
            largest_delivered: None,
            smallest_lost: None,
            ..p.clone()
        }
    };
    Finding {
        problem: Problem::Underlay {
            code,
            src: l.src,
            dst: l.dst,
            src_node: p.src_node.clone(),
            dst_node: p.dst_node.clone(),
            encap: p.encap,
        },
        diagnosis: Diagnosis {
            // Where the packets were last seen.
            node: Some(p.src_node.clone()),
            code,
            stage: Some(if code == Code::UnderlayMtu {
                Stage::Mtu
            } else {
                Stage::Underlay
            }),
            summary,
            hint,
            src: l.src,
            dst: l.dst,
            underlay: Some(path),
            ..Default::default()
        },
    }
}

fn what_is_dropped(e: Encap) -> &'static str {
    match e {
        Encap::Vxlan => "UDP 4789 (VXLAN)",
        Encap::Ipip => "IP protocol 4 (IPIP)",
        Encap::Wireguard => "UDP 51820 (WireGuard)",
        Encap::None => "packets addressed to pods",
    }
}

fn open_hint(e: Encap) -> String {
    match e {
        Encap::Vxlan => "allow UDP 4789 between the nodes in every firewall, security group and network ACL on the way (Calico's VXLAN port; check the port of vxlan.calico with `ip -d link show vxlan.calico`)".into(),
        Encap::Ipip => "allow IP protocol 4 (IPIP) between the nodes in every firewall, security group and network ACL on the way (not a TCP or UDP port: many cloud firewalls need it named by number)".into(),
        Encap::Wireguard => "allow UDP 51820 between the nodes in every firewall, security group and network ACL on the way".into(),
        Encap::None => "pod addresses travel the fabric as they are: turn off source/destination checks on the nodes' interfaces (AWS), make the fabric route the pod blocks to the nodes, or switch Calico to VXLAN or IPIP encapsulation".into(),
    }
}

fn mtu_words(l: &Loss, how: &str) -> (String, String) {
    let p = &l.path;
    let (ok, lost) = (
        p.largest_delivered.unwrap_or(0),
        p.smallest_lost.unwrap_or(0),
    );
    let overhead = match p.encap {
        Encap::Vxlan => 50,
        Encap::Ipip => 20,
        Encap::Wireguard => 60,
        Encap::None => 0,
    };
    (
        format!(
            "{} > {}: packets of {lost} bytes and more left {}{how} and never reached {}, while packets of up to {ok} bytes arrived: the path between the nodes has a smaller MTU",
            Addr(l.src),
            Addr(l.dst),
            p.src_node,
            p.dst_node
        ),
        format!(
            "the underlay carries at most {ok} to {} bytes: set Calico's MTU (FELIX_VXLANMTU / FELIX_IPINIPMTU, or the installation's mtu) to at most {} so that pods' packets fit after {overhead} bytes of encapsulation, or raise the MTU between the nodes",
            lost - 1,
            ok.saturating_sub(overhead)
        ),
    )
}
