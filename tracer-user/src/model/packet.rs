//! A packet as the records show it: its flow (addresses, protocol, ports)
//! and the details that tell one packet of a flow from the next.

use std::fmt;

use serde::Serialize;

use super::names::{ArpOp, Dir, Icmp, Proto};

/// The packet fields every packet-bearing record has; also the key of a flow
/// (one direction of traffic) in the views.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Flow {
    pub src: Option<String>,
    pub dst: Option<String>,
    pub proto: Option<Proto>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// One end of a flow: `10.0.0.1:80`, `[fd00::1]:80`, `10.0.0.1`, `?`.
pub struct Endpoint<'a> {
    pub addr: Option<&'a str>,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.addr.unwrap_or("?");
        match self.port {
            Some(p) if a.contains(':') => write!(f, "[{a}]:{p}"),
            Some(p) => write!(f, "{a}:{p}"),
            None => f.write_str(a),
        }
    }
}

impl Flow {
    pub fn source(&self) -> Endpoint<'_> {
        Endpoint {
            addr: self.src.as_deref(),
            port: self.sport,
        }
    }

    pub fn destination(&self) -> Endpoint<'_> {
        Endpoint {
            addr: self.dst.as_deref(),
            port: self.dport,
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

/// A packet seen by a tc program on an interface.
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
}
