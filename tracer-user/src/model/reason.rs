//! A drop reason: the running kernel's name for it (`enum skb_drop_reason`,
//! whose numbers differ between kernels, named from BTF), its number, and
//! what kind of refusal it is, told once from the name.

use std::fmt;

use serde::{Serialize, Serializer};

/// The kinds of drop reasons calitrace tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// `NETFILTER_DROP`
    Netfilter,
    /// `IP_RPFILTER`
    RpFilter,
    /// `IP_NOROUTE`, `IP_INADDRERRORS`, `IP_OUTNOROUTES`, `IPV6_NOROUTE`
    NoRoute,
    /// `IP_INHDR`, `IPV6_INHDR`: a bad header, or TTL out while forwarding.
    BadHeader,
    /// `PKT_TOO_BIG`, `FRAG_REASM_TIMEOUT`, `FRAG_TOO_FAR`
    Size,
    /// `NEIGH_*`
    Neighbor,
    /// `TC_INGRESS`
    TcIngress,
    /// `TC_EGRESS`
    TcEgress,
    /// `NO_SOCKET`
    NoSocket,
    /// `QUEUE_PURGE`: what a closing socket still had queued.
    QueuePurge,
    /// `TCP_*`, `UDP_*`, `SOCKET_*`, `PROTO_*`
    Socket,
    /// `NOT_SPECIFIED`, or none at all (kernels before 5.17).
    NotSpecified,
    Other,
}

impl ReasonKind {
    pub fn of(name: &str) -> ReasonKind {
        match name {
            "NETFILTER_DROP" => ReasonKind::Netfilter,
            "IP_RPFILTER" => ReasonKind::RpFilter,
            "IP_NOROUTE" | "IP_INADDRERRORS" | "IP_OUTNOROUTES" | "IPV6_NOROUTE" => {
                ReasonKind::NoRoute
            }
            "IP_INHDR" | "IPV6_INHDR" => ReasonKind::BadHeader,
            "PKT_TOO_BIG" | "FRAG_REASM_TIMEOUT" | "FRAG_TOO_FAR" => ReasonKind::Size,
            "TC_INGRESS" => ReasonKind::TcIngress,
            "TC_EGRESS" => ReasonKind::TcEgress,
            "NO_SOCKET" => ReasonKind::NoSocket,
            "QUEUE_PURGE" => ReasonKind::QueuePurge,
            "NOT_SPECIFIED" => ReasonKind::NotSpecified,
            n if n.starts_with("NEIGH_") => ReasonKind::Neighbor,
            n if n.starts_with("TC_") => ReasonKind::TcIngress,
            n if ["TCP_", "UDP_", "SOCKET_", "PROTO_"]
                .iter()
                .any(|p| n.starts_with(p)) =>
            {
                ReasonKind::Socket
            }
            _ => ReasonKind::Other,
        }
    }
}

/// A drop's reason as the kernel names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropReason {
    name: String,
    /// The kernel's number; `None` where the name stands for what a newer
    /// kernel says at the drop's location.
    pub raw: Option<u32>,
    pub kind: ReasonKind,
}

impl DropReason {
    /// The running kernel's reason `raw`, named `name`.
    pub fn kernel(raw: u32, name: String) -> DropReason {
        DropReason {
            kind: ReasonKind::of(&name),
            name,
            raw: Some(raw),
        }
    }

    /// A reason by name alone (told from a location; recordings, tests).
    pub fn named(name: &str) -> DropReason {
        DropReason {
            kind: ReasonKind::of(name),
            name: name.to_string(),
            raw: None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Its name, as the JSON contract has it.
impl Serialize for DropReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl PartialEq<&str> for DropReason {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_once_from_the_name() {
        assert_eq!(
            DropReason::kernel(3, "TC_EGRESS".into()).kind,
            ReasonKind::TcEgress
        );
        assert_eq!(ReasonKind::of("NEIGH_FAILED"), ReasonKind::Neighbor);
        assert_eq!(ReasonKind::of("TCP_CSUM"), ReasonKind::Socket);
        assert_eq!(ReasonKind::of("IPV6_NOROUTE"), ReasonKind::NoRoute);
        assert_eq!(ReasonKind::of("REASON_77"), ReasonKind::Other);
        let r = DropReason::named("NETFILTER_DROP");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"NETFILTER_DROP\"");
        assert_eq!(r.raw, None);
        assert!(r == "NETFILTER_DROP");
    }
}
