//! Names of what the kernel reports as numbers: where a packet was seen, the
//! netfilter hook, family, backend and verdict, the protocol, ICMP and ARP
//! kinds, and the stage a drop belongs to. `events` turns the numbers into
//! these once; everything above matches on them, and each writes itself as
//! the JSON contract and the views spell it.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// Writes a value as its `Display` text (JSON fields whose names differ from
/// the recorded serde form of the same enum).
pub(crate) fn as_display<T: fmt::Display, S: Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

macro_rules! named {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// Where a packet was seen: by tc on an interface, or in netfilter.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
    #[serde(rename_all = "lowercase")]
    Dir { Ingress => "ingress", Egress => "egress", Netfilter => "netfilter" }
}

named! {
    /// A netfilter link observation point: a hook's first priority, just
    /// after a table, or its last priority.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
    #[serde(rename_all = "lowercase")]
    LinkPoint { Entry => "entry", After => "after", Exit => "exit" }
}

named! {
    /// How a netfilter drop was located: by the table walk itself, or from
    /// the drop's location, the links and the rule counters.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
    #[serde(rename_all = "lowercase")]
    Attribution { Exact => "exact", Inferred => "inferred" }
}

/// Nothing is exact until a probe says so.
impl Default for Attribution {
    fn default() -> Self {
        Attribution::Inferred
    }
}

named! {
    /// What an ARP packet asks or answers.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
    #[serde(rename_all = "lowercase")]
    ArpOp { Request => "request", Reply => "reply", Other => "other" }
}

named! {
    /// Where in the datapath a packet died.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
    #[serde(rename_all = "snake_case")]
    Stage {
        Netfilter => "netfilter",
        Routing => "routing",
        Neighbor => "neighbor",
        RpFilter => "rp_filter",
        Ttl => "ttl",
        Mtu => "mtu",
        Tc => "tc",
        Socket => "socket",
        Other => "other",
        Underlay => "underlay",
    }
}

named! {
    /// Why a packet the kernel freed as a drop is no fault of pod traffic
    /// (`diagnosis::classify::benign` and `benign_refusal` decide): such frees are counted in
    /// `stats`, give no diagnosis, and are shown only on request.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
    #[serde(rename_all = "snake_case")]
    Benign {
        LinkLocal => "link_local",
        SocketClosed => "socket_closed",
        TcpAfterClose => "tcp_after_close",
        EchoReply => "echo_reply",
        NotIp => "not_ip",
        Loopback => "loopback",
        CalicoArp => "calico_arp",
    }
}

impl Benign {
    /// What such a free is, in a few words.
    pub fn what(self) -> &'static str {
        match self {
            Benign::LinkLocal => "link-local or multicast housekeeping",
            Benign::SocketClosed => "queued data of a closing socket",
            Benign::TcpAfterClose => "TCP segment after its socket closed",
            Benign::EchoReply => "echo reply for no ping socket",
            Benign::NotIp => "not IP or ARP (vsock, netlink, ...)",
            Benign::Loopback => "refused on loopback, no pod involved",
            Benign::CalicoArp => {
                "Calico kept the host from answering a pod's ARP for its own address"
            }
        }
    }
}

named! {
    /// Which kernel subsystem holds a table: x_tables (`iptables-legacy`) or
    /// nf_tables (`nft`, and also `iptables-nft`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    Backend { Legacy => "legacy", Nft => "nft" }
}

impl Backend {
    /// The command that lists this backend's rules with their counters.
    pub fn list_command(self) -> &'static str {
        match self {
            Backend::Nft => "nft -a list ruleset",
            Backend::Legacy => "iptables-legacy-save -c",
        }
    }
}

named! {
    /// Whose rules a netfilter table or rule is, where recognisable.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    Owner {
        Calico => "calico",
        KubeProxy => "kube-proxy",
        Firewalld => "firewalld",
        Docker => "docker",
        Distro => "distro",
    }
}

impl Owner {
    /// How a sentence names it.
    pub fn label(self) -> &'static str {
        match self {
            Owner::Calico => "Calico",
            Owner::KubeProxy => "kube-proxy",
            Owner::Firewalld => "firewalld",
            Owner::Docker => "Docker",
            Owner::Distro => "the distribution's default firewall",
        }
    }
}

named! {
    /// How a netfilter rule or policy refused a packet: silently, or with
    /// an ICMP error or TCP reset sent back.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    RuleVerdict { Drop => "drop", Reject => "reject" }
}

named! {
    /// Which backend holds Calico's `cali-*` chains.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    CalicoPlacement { Legacy => "legacy", Nft => "nft", Both => "both" }
}

impl CalicoPlacement {
    /// Whether Calico's chains are in `backend` and nowhere else.
    pub fn only_in(self, backend: Backend) -> bool {
        matches!(
            (self, backend),
            (CalicoPlacement::Legacy, Backend::Legacy) | (CalicoPlacement::Nft, Backend::Nft)
        )
    }
}

named! {
    /// How a packet crossed the underlay between nodes: in a VXLAN or IPIP
    /// tunnel (decoded by the tc programs), WireGuard (encrypted: matched by
    /// timing only), or as it is.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
    #[serde(rename_all = "lowercase")]
    Encap { Vxlan => "vxlan", Ipip => "ipip", Wireguard => "wireguard", None => "none" }
}

impl Encap {
    /// How a journey point names it: `VXLAN`, `IPIP`, `WireGuard`; none for
    /// a packet without a tunnel.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Encap::Vxlan => Some("VXLAN"),
            Encap::Ipip => Some("IPIP"),
            Encap::Wireguard => Some("WireGuard"),
            Encap::None => None,
        }
    }
}

named! {
    /// A netfilter family, written as nft names it (`ip`, `ip6`, ...); recorded
    /// inventories keep serde's own names (`ipv4`, ...).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    Family {
        Ipv4 => "ip",
        Ipv6 => "ip6",
        Inet => "inet",
        Arp => "arp",
        Bridge => "bridge",
        Netdev => "netdev",
    }
}

impl Family {
    /// From an `NFPROTO_*` number.
    pub fn from_nfproto(n: u8) -> Option<Family> {
        Some(match n {
            1 => Family::Inet,
            2 => Family::Ipv4,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ipv6,
            _ => return None,
        })
    }
}

named! {
    /// A netfilter hook, written as iptables names its built-in chains;
    /// recorded inventories keep serde's own names (`forward`, ...).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    Hook {
        Prerouting => "PREROUTING",
        Input => "INPUT",
        Forward => "FORWARD",
        Output => "OUTPUT",
        Postrouting => "POSTROUTING",
        Ingress => "INGRESS",
        Egress => "EGRESS",
    }
}

impl Hook {
    /// From an `NF_INET_*` hook number (x_tables and nf_tables ip/ip6/inet/bridge).
    pub fn from_inet(n: u32) -> Option<Hook> {
        Some(match n {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            5 => Hook::Ingress,
            _ => return None,
        })
    }

    /// From a hook number of a family (`NFPROTO_*`): ARP and netdev number
    /// their hooks their own way.
    pub fn of_family(pf: u8, hook: u8) -> Option<Hook> {
        match pf {
            1 | 2 | 7 | 10 => Hook::from_inet(u32::from(hook)),
            3 => [Hook::Input, Hook::Output, Hook::Forward]
                .get(usize::from(hook))
                .copied(),
            5 => [Hook::Ingress, Hook::Egress]
                .get(usize::from(hook))
                .copied(),
            _ => None,
        }
    }
}

/// The `NF_*` verdict a table walk returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NfVerdict {
    Drop,
    Accept,
    Stolen,
    Queue,
    Repeat,
    Stop,
    Other(u8),
}

impl NfVerdict {
    /// From the walk's return value (the low byte is the verdict).
    pub fn from_kernel(v: u32) -> NfVerdict {
        match v & 0xff {
            0 => NfVerdict::Drop,
            1 => NfVerdict::Accept,
            2 => NfVerdict::Stolen,
            3 => NfVerdict::Queue,
            4 => NfVerdict::Repeat,
            5 => NfVerdict::Stop,
            n => NfVerdict::Other(n as u8),
        }
    }
}

impl fmt::Display for NfVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NfVerdict::Drop => "DROP",
            NfVerdict::Accept => "ACCEPT",
            NfVerdict::Stolen => "STOLEN",
            NfVerdict::Queue => "QUEUE",
            NfVerdict::Repeat => "REPEAT",
            NfVerdict::Stop => "STOP",
            NfVerdict::Other(n) => return write!(f, "VERDICT_{n}"),
        })
    }
}

impl Serialize for NfVerdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A packet's protocol as the contract names it: a name, or the IP protocol
/// number where it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Arp,
    Other(u8),
}

impl Proto {
    pub fn from_ip(n: u8) -> Proto {
        match n {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            1 => Proto::Icmp,
            58 => Proto::Icmpv6,
            n => Proto::Other(n),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Icmpv6 => "icmpv6",
            Proto::Arp => "arp",
            Proto::Other(n) => return write!(f, "proto {n}"),
        })
    }
}

impl Serialize for Proto {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Proto::Other(n) => s.serialize_u8(*n),
            named => s.collect_str(named),
        }
    }
}

/// What an ICMP (or ICMPv6) header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmp {
    EchoRequest { id: u16, seq: u16 },
    EchoReply { id: u16, seq: u16 },
    TimeExceeded,
    Unreachable { code: u8 },
    Other { kind: u8, code: u8 },
}

impl Icmp {
    /// From the header's type and code (`v6`: ICMPv6 numbering); echo id and
    /// sequence as the eBPF programs store them.
    pub fn from_header(v6: bool, kind: u8, code: u8, id: u16, seq: u16) -> Icmp {
        match (v6, kind) {
            (false, 8) | (true, 128) => Icmp::EchoRequest { id, seq },
            (false, 0) | (true, 129) => Icmp::EchoReply { id, seq },
            (false, 11) => Icmp::TimeExceeded,
            (false, 3) => Icmp::Unreachable { code },
            _ => Icmp::Other { kind, code },
        }
    }
}

impl fmt::Display for Icmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Icmp::EchoRequest { id, seq } => write!(f, "echo request id {id} seq {seq}"),
            Icmp::EchoReply { id, seq } => write!(f, "echo reply id {id} seq {seq}"),
            Icmp::TimeExceeded => f.write_str("time exceeded"),
            Icmp::Unreachable { code } => write!(f, "unreachable code {code}"),
            Icmp::Other { kind, code } => write!(f, "type {kind} code {code}"),
        }
    }
}

impl Serialize for Icmp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_serialize_as_the_contract_spells_them() {
        fn json(v: impl Serialize) -> String {
            serde_json::to_string(&v).unwrap()
        }
        fn to<T: Serialize>(v: &T) -> &T {
            v
        }
        assert_eq!(json(to(&Dir::Netfilter)), r#""netfilter""#);
        assert_eq!(json(to(&Stage::RpFilter)), r#""rp_filter""#);
        assert_eq!(json(to(&Proto::Other(47))), "47");
        assert_eq!(json(to(&Proto::Icmpv6)), r#""icmpv6""#);
        assert_eq!(json(to(&NfVerdict::from_kernel(0x1_0000))), r#""DROP""#);
        assert_eq!(json(to(&NfVerdict::from_kernel(9))), r#""VERDICT_9""#);
        assert_eq!(
            json(to(&Icmp::from_header(true, 128, 0, 3, 4))),
            r#""echo request id 3 seq 4""#
        );
        // Recorded inventories keep serde's names; the views write nft's and iptables'.
        assert_eq!(json(to(&Hook::Forward)), r#""forward""#);
        assert_eq!(Hook::Forward.to_string(), "FORWARD");
        assert_eq!(json(to(&Family::Ipv6)), r#""ipv6""#);
        assert_eq!(Family::Ipv6.to_string(), "ip6");
    }

    #[test]
    fn encapsulations_are_named_lowercase_and_labelled() {
        let all = [Encap::Vxlan, Encap::Ipip, Encap::Wireguard, Encap::None];
        let json: Vec<String> = all
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(
            json,
            [r#""vxlan""#, r#""ipip""#, r#""wireguard""#, r#""none""#]
        );
        for e in all {
            assert_eq!(serde_json::to_string(&e).unwrap(), format!("\"{e}\""));
        }
        let labels: Vec<_> = all.iter().map(|e| e.label()).collect();
        assert_eq!(
            labels,
            [Some("VXLAN"), Some("IPIP"), Some("WireGuard"), None]
        );
    }

    #[test]
    fn hooks_are_numbered_per_family() {
        assert_eq!(Hook::of_family(2, 2), Some(Hook::Forward));
        assert_eq!(Hook::of_family(10, 5), Some(Hook::Ingress));
        assert_eq!(
            Hook::of_family(3, 2),
            Some(Hook::Forward),
            "ARP: IN, OUT, FORWARD"
        );
        assert_eq!(Hook::of_family(5, 1), Some(Hook::Egress));
        assert_eq!(Hook::of_family(2, 6), None);
        assert_eq!(Hook::of_family(12, 0), None);
    }
}
