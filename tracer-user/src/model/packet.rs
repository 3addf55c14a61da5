//! A packet as the records show it: its flow (addresses, protocol, ports)
//! and the details that tell one packet of a flow from the next.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use super::names::{ArpOp, Dir, Encap, Icmp, Proto};

/// A pod as people name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// `namespace/name`
impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The packet fields every packet-bearing record has; also the key of a flow
/// (one direction of traffic) in the views.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Flow {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<Proto>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// The pods the addresses belong to, where the node knows them.
    pub src_pod: Option<PodRef>,
    pub dst_pod: Option<PodRef>,
}

impl Flow {
    /// Link-local control traffic of the nodes themselves: IPv6 multicast of
    /// link or interface scope (`ff02::/16`, `ff01::/16`: MLD, neighbour and
    /// router discovery), between `fe80::/10` (or `::`) addresses, and IPv4
    /// link-local multicast (`224.0.0.0/24`). Never a pod flow between nodes.
    pub fn is_link_local_control(&self) -> bool {
        let local = |a: Option<IpAddr>| match a {
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments()[0];
                (s & 0xffc0) == 0xfe80
                    || (s & 0xff0f) == 0xff02
                    || (s & 0xff0f) == 0xff01
                    || v6.is_unspecified()
            }
            Some(IpAddr::V4(v4)) => {
                let o = v4.octets();
                o[0] == 224 && o[1] == 0 && o[2] == 0
            }
            None => false,
        };
        let multicast = self.dst.is_some_and(|d| d.is_multicast());
        (multicast && local(self.dst)) || (local(self.src) && local(self.dst))
    }
}

/// An address as the views write it: `?` where the packet had none.
#[derive(Debug, Clone, Copy)]
pub struct Addr(pub Option<IpAddr>);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("?"),
        }
    }
}

/// One end of a flow: `10.0.0.1:80`, `[fd00::1]:80`, `10.0.0.1`, `?`, and
/// the pod's name where known: `10.244.1.10 (default/frontend)`.
pub struct Endpoint<'a> {
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub pod: Option<&'a PodRef>,
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (Some(IpAddr::V6(a)), Some(p)) => write!(f, "[{a}]:{p}")?,
            (Some(a), Some(p)) => write!(f, "{a}:{p}")?,
            (None, Some(p)) => write!(f, "?:{p}")?,
            (Some(a), None) => write!(f, "{a}")?,
            (None, None) => f.write_str("?")?,
        }
        match self.pod {
            Some(pod) => write!(f, " ({pod})"),
            None => Ok(()),
        }
    }
}

impl Flow {
    pub fn source(&self) -> Endpoint<'_> {
        Endpoint {
            addr: self.src,
            port: self.sport,
            pod: self.src_pod.as_ref(),
        }
    }

    pub fn destination(&self) -> Endpoint<'_> {
        Endpoint {
            addr: self.dst,
            port: self.dport,
            pod: self.dst_pod.as_ref(),
        }
    }

    /// `10.0.0.1:4000 → 10.0.0.2:80`
    pub fn arrow(&self) -> String {
        format!("{} → {}", self.source(), self.destination())
    }

    /// The protocol's name, `?` where the packet had no layer 3 calitrace reads.
    pub fn proto_name(&self) -> String {
        self.proto.map_or_else(|| "?".into(), |p| p.to_string())
    }
}

/// `10.0.0.1:80 > 10.0.0.2:5000 tcp`
impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} > {} {}",
            self.source(),
            self.destination(),
            self.proto_name()
        )
    }
}

/// Extra detail of a packet: ICMP type, ARP operation, TTL.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    pub ttl: Option<u8>,
    pub ip_id: Option<u16>,
    pub len: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arp: Option<ArpOp>,
}

/// A packet's headers, decoded once from the kernel's record: what a drop's
/// classification reads of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Headers {
    pub flow: Flow,
    pub detail: Detail,
    /// A TCP segment's flags, where the packet is one.
    pub tcp: Option<TcpSegment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// The header's flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10, ...).
    pub flags: u8,
    /// Whether it carries data.
    pub data: bool,
}

impl TcpSegment {
    /// No data and no flag but FIN, RST and ACK: what a socket gets after
    /// its peer closed.
    pub fn is_bare(&self) -> bool {
        const FIN: u8 = 0x01;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        !self.data && self.flags & !(FIN | RST | ACK) == 0
    }
}

/// What tells two packets of one flow apart (TTL changes on the way, so it
/// is not part of it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PacketId {
    pub ip_id: Option<u16>,
    pub icmp: Option<Icmp>,
    pub len: u32,
}

impl Detail {
    pub fn packet_id(&self) -> PacketId {
        PacketId {
            ip_id: self.ip_id,
            icmp: self.icmp,
            len: self.len,
        }
    }
}

/// `arp request`, `echo request id 1 seq 2 ttl 64 len 84`
impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(a) = self.arp {
            write!(f, "arp {a} ")?;
        }
        if let Some(i) = &self.icmp {
            write!(f, "{i} ")?;
        }
        if let Some(t) = self.ttl {
            write!(f, "ttl {t} ")?;
        }
        write!(f, "len {}", self.len)
    }
}

/// The headers an encapsulated packet travelled in between the nodes (the
/// packet itself is the inner one). `vni`: VXLAN only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outer {
    pub encap: Encap,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub proto: Option<Proto>,
    pub dport: Option<u16>,
    /// Outer IP total length.
    pub len: u32,
    pub vni: Option<u32>,
}

/// `VXLAN 192.168.1.1 > 192.168.1.2:4789 vni 4096 len 134`
impl fmt::Display for Outer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flow = Flow {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: None,
            dport: self.dport,
            src_pod: None,
            dst_pod: None,
        };
        write!(
            f,
            "{} {} > {}",
            self.encap.label().unwrap_or("outer"),
            flow.source(),
            flow.destination()
        )?;
        if let Some(vni) = self.vni {
            write!(f, " vni {vni}")?;
        }
        write!(f, " len {}", self.len)
    }
}

/// A packet seen by a tc program on an interface. An encapsulated packet
/// (VXLAN, IPIP on the uplink) is its inner packet, with `outer` set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PacketRecord {
    /// The node the record comes from (cluster views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub ts_ns: u64,
    pub netns: u32,
    pub ifname: Option<String>,
    pub dir: Dir,
    #[serde(flatten)]
    pub flow: Flow,
    #[serde(flatten)]
    pub detail: Detail,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer: Option<Outer>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{POD_A, POD_B, icmp_flow, vxlan_outer};

    fn record(outer: Option<Outer>) -> PacketRecord {
        PacketRecord {
            node: None,
            ts_ns: 5,
            netns: 1,
            ifname: Some("eth0".into()),
            dir: Dir::Egress,
            flow: icmp_flow(POD_A, POD_B),
            detail: Detail {
                ttl: Some(63),
                ip_id: Some(7),
                len: 84,
                icmp: Some(Icmp::EchoRequest { id: 77, seq: 3 }),
                arp: None,
            },
            outer,
        }
    }

    #[test]
    fn an_encapsulated_packet_is_its_inner_packet_with_the_outer_headers() {
        let v = serde_json::to_value(record(Some(vxlan_outer()))).unwrap();
        assert_eq!(v["src"], POD_A);
        assert_eq!(v["dst"], POD_B);
        assert_eq!(v["icmp"], "echo request id 77 seq 3");
        assert_eq!(
            v["outer"],
            serde_json::json!({
                "encap": "vxlan", "src": "192.168.7.1", "dst": "192.168.7.2",
                "proto": "udp", "dport": 4789, "len": 134, "vni": 4096
            })
        );
        let ipip = Outer {
            encap: Encap::Ipip,
            proto: Some(Proto::Other(4)),
            dport: None,
            vni: None,
            ..vxlan_outer()
        };
        let v = serde_json::to_value(record(Some(ipip))).unwrap();
        assert_eq!(v["outer"]["encap"], "ipip");
        assert_eq!(v["outer"]["proto"], 4);
        assert!(v["outer"]["vni"].is_null() && v["outer"]["dport"].is_null());
    }

    #[test]
    fn a_plain_packet_serializes_as_before_with_its_pods() {
        let json = serde_json::to_string(&record(None)).unwrap();
        assert_eq!(
            json,
            r#"{"ts_ns":5,"netns":1,"ifname":"eth0","dir":"egress","src":"10.244.1.10","dst":"10.244.2.10","proto":"icmp","sport":null,"dport":null,"src_pod":null,"dst_pod":null,"ttl":63,"ip_id":7,"len":84,"icmp":"echo request id 77 seq 3"}"#
        );
    }

    #[test]
    fn outer_headers_read_in_one_line() {
        assert_eq!(
            vxlan_outer().to_string(),
            "VXLAN 192.168.7.1 > 192.168.7.2:4789 vni 4096 len 134"
        );
    }
}

#[cfg(test)]
mod link_local_tests {
    use super::Flow;

    fn flow(src: &str, dst: &str) -> Flow {
        Flow {
            src: Some(src.parse().unwrap()),
            dst: Some(dst.parse().unwrap()),
            proto: None,
            sport: None,
            dport: None,
            src_pod: None,
            dst_pod: None,
        }
    }

    #[test]
    fn the_nodes_own_link_local_control_traffic() {
        assert!(
            flow("fe80::1", "ff02::16").is_link_local_control(),
            "MLD report"
        );
        assert!(flow("::", "ff02::1:ff00:1").is_link_local_control(), "DAD");
        assert!(
            flow("fe80::1", "fe80::2").is_link_local_control(),
            "neighbour discovery"
        );
        assert!(
            flow("192.168.1.1", "224.0.0.251").is_link_local_control(),
            "mDNS"
        );
        assert!(!flow("10.244.1.10", "10.244.2.10").is_link_local_control());
        assert!(!flow("fd00::1", "fd00::2").is_link_local_control());
        assert!(
            !flow("fd00::1", "ff05::2").is_link_local_control(),
            "site scope"
        );
        assert!(!flow("10.0.0.1", "239.1.1.1").is_link_local_control());
        assert!(
            !flow("fe80::1", "fd00::2").is_link_local_control(),
            "one end global"
        );
    }
}
