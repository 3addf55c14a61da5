//! What calitrace reports: the records behind every view (JSON lines, text,
//! TUI). Field names follow the JSON contract in the README.

use serde::Serialize;
use serde_json::Value;
use tracer_common::{PacketMeta, l3, pkt_flags, proto};

use super::{dst_ip, src_ip};

/// Where in the datapath a packet died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Netfilter,
    Routing,
    Neighbor,
    RpFilter,
    Ttl,
    Mtu,
    Tc,
    Socket,
    Other,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Netfilter => "netfilter",
            Stage::Routing => "routing",
            Stage::Neighbor => "neighbor",
            Stage::RpFilter => "rp_filter",
            Stage::Ttl => "ttl",
            Stage::Mtu => "mtu",
            Stage::Tc => "tc",
            Stage::Socket => "socket",
            Stage::Other => "other",
        }
    }
}

/// The packet fields every packet-bearing record has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flow {
    pub src: Option<String>,
    pub dst: Option<String>,
    pub proto: Value,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

pub fn proto_name(p: &PacketMeta) -> Value {
    match (p.l3, p.proto) {
        (l3::ARP, _) => "arp".into(),
        (l3::NONE, _) => Value::Null,
        (_, proto::TCP) => "tcp".into(),
        (_, proto::UDP) => "udp".into(),
        (_, proto::ICMP) => "icmp".into(),
        (_, proto::ICMPV6) => "icmpv6".into(),
        (_, n) => n.into(),
    }
}

/// `IpAddr::to_string` without the formatting machinery for IPv4, the
/// common case: this runs twice for every packet record.
fn ip_string(a: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = a else {
        return a.to_string();
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if o >= 100 {
            buf[n] = b'0' + o / 100;
            n += 1;
        }
        if o >= 10 {
            buf[n] = b'0' + o / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + o % 10;
        n += 1;
    }
    std::str::from_utf8(&buf[..n])
        .expect("digits and dots")
        .to_string()
}

impl Flow {
    pub fn of(p: &PacketMeta) -> Self {
        let ports = p.flags & pkt_flags::L4 != 0
            && matches!(p.proto, proto::TCP | proto::UDP)
            && p.l3 != l3::ARP;
        Flow {
            src: src_ip(p).map(ip_string),
            dst: dst_ip(p).map(ip_string),
            proto: proto_name(p),
            sport: ports.then_some(p.sport),
            dport: ports.then_some(p.dport),
        }
    }

    /// `10.0.0.1:80 > 10.0.0.2:5000 tcp`
    pub fn describe(&self) -> String {
        let end = |a: &Option<String>, port: Option<u16>| {
            let a = a.as_deref().unwrap_or("?");
            match port {
                Some(p) if a.contains(':') => format!("[{a}]:{p}"),
                Some(p) => format!("{a}:{p}"),
                None => a.to_string(),
            }
        };
        let proto = match &self.proto {
            Value::String(s) => s.clone(),
            Value::Null => "?".into(),
            v => format!("proto {v}"),
        };
        format!(
            "{} > {} {proto}",
            end(&self.src, self.sport),
            end(&self.dst, self.dport)
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
    pub icmp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arp: Option<&'static str>,
}

impl Detail {
    pub fn of(p: &PacketMeta) -> Self {
        let ip = matches!(p.l3, l3::IPV4 | l3::IPV6);
        let icmp =
            (ip && matches!(p.proto, proto::ICMP | proto::ICMPV6) && p.flags & pkt_flags::L4 != 0)
                .then(|| match (p.proto, p.icmp_type) {
                    (proto::ICMP, 8) | (proto::ICMPV6, 128) => {
                        format!("echo request id {} seq {}", p.sport, p.dport)
                    }
                    (proto::ICMP, 0) | (proto::ICMPV6, 129) => {
                        format!("echo reply id {} seq {}", p.sport, p.dport)
                    }
                    (proto::ICMP, 11) => "time exceeded".into(),
                    (proto::ICMP, 3) => format!("unreachable code {}", p.icmp_code),
                    (_, t) => format!("type {t} code {}", p.icmp_code),
                });
        Detail {
            ttl: ip.then_some(p.ttl),
            ip_id: (p.l3 == l3::IPV4).then_some(p.ip_id),
            len: p.len,
            icmp,
            arp: (p.l3 == l3::ARP).then_some(match p.arp_op {
                1 => "request",
                2 => "reply",
                _ => "other",
            }),
        }
    }
}

/// One place a packet was seen on its way: an interface (tc), a netfilter
/// table's verdict, or a netfilter link observation point (`dir` is then
/// "netfilter", and `point` says which).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hop {
    pub ts_ns: u64,
    pub netns: u32,
    pub ifname: Option<String>,
    pub dir: &'static str,
    pub ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<NetfilterInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// Netfilter link point: "entry" (the hook's first priority), "after"
    /// (just after the table at `priority`) or "exit" (its last priority).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point: Option<&'static str>,
    /// With `point` "after": the priority of the table the packet got past.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

impl Hop {
    /// `FORWARD entry`, `FORWARD after priority -5`, for a link point.
    pub fn point_label(&self) -> Option<String> {
        let point = self.point?;
        let hook = self
            .netfilter
            .as_ref()
            .and_then(|n| n.hook.as_deref())
            .unwrap_or("netfilter");
        Some(match self.priority {
            Some(p) => format!("{hook} {point} priority {p}"),
            None => format!("{hook} {point}"),
        })
    }
}

/// A netfilter table's verdict on a packet (`--verdicts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictRecord {
    pub ts_ns: u64,
    pub netns: u32,
    #[serde(flatten)]
    pub flow: Flow,
    pub verdict: String,
    pub netfilter: NetfilterInfo,
    #[serde(flatten)]
    pub detail: Detail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PacketRecord {
    pub ts_ns: u64,
    pub netns: u32,
    pub ifname: Option<String>,
    pub dir: &'static str,
    #[serde(flatten)]
    pub flow: Flow,
    #[serde(flatten)]
    pub detail: Detail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NetfilterInfo {
    pub backend: Option<String>,
    pub table: Option<String>,
    pub chain: Option<String>,
    pub hook: Option<String>,
    pub rule: Option<String>,
    pub attribution: &'static str,
    /// nft family of the table (`ip`, `ip6`, `inet`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// The dropping rule's comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// How many rules' counters moved: 1 means the counters were unambiguous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DropRecord {
    pub ts_ns: u64,
    pub netns: u32,
    pub ifname: Option<String>,
    #[serde(flatten)]
    pub flow: Flow,
    pub reason: String,
    /// The kernel gives no drop reasons (before 5.17): `reason` is what a newer
    /// kernel reports at `location`, or NOT_SPECIFIED where the location does
    /// not tell.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reason_from_location: bool,
    pub location: Option<String>,
    pub stage: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<NetfilterInfo>,
    #[serde(flatten)]
    pub detail: Detail,
    /// Pod whose namespace the drop happened in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Where this packet was seen before it died, oldest first.
    pub journey: Vec<Hop>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Diagnosis {
    pub code: &'static str,
    pub stage: Option<Stage>,
    pub summary: String,
    pub hint: String,
    pub count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calico_backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Unavailable {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Stats {
    /// Events seen (before filtering) and emitted, per probe.
    pub events: std::collections::BTreeMap<String, u64>,
    pub lost: u64,
    pub probes_attached: Vec<ProbeStatus>,
    pub probes_unavailable: Vec<Unavailable>,
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Start {
    pub node: String,
    pub kernel: String,
    pub netns: u32,
    pub filter: String,
    pub interfaces: Vec<String>,
    pub probes_attached: Vec<ProbeStatus>,
    pub probes_unavailable: Vec<Unavailable>,
    /// Backend of the node's `iptables` command (`legacy`/`nft`).
    pub iptables: Option<String>,
    /// Where Calico's cali-* chains are: `legacy`, `nft`, `both` or null.
    pub calico_chains: Option<String>,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Start(Start),
    Packet(PacketRecord),
    Drop(DropRecord),
    Verdict(VerdictRecord),
    Diagnosis(Diagnosis),
    Stats(Stats),
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_read_as_std_writes_them() {
        for a in [
            "0.0.0.0",
            "10.244.1.10",
            "169.254.1.1",
            "255.255.255.255",
            "1.20.100.9",
            "fe80::1",
        ] {
            let ip: std::net::IpAddr = a.parse().unwrap();
            assert_eq!(super::ip_string(ip), ip.to_string());
        }
    }
}
