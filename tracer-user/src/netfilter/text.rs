//! Pieces of rule text both backends write alike.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An IPv4 address from 4 bytes, else an IPv6 one (`::` unless 16 bytes).
pub(crate) fn ip_text(b: &[u8]) -> String {
    match b.len() {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap_or_default()).to_string(),
        _ => Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default()).to_string(),
    }
}

/// An IP protocol number as iptables and nft name it.
pub(crate) fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        2 => "igmp".into(),
        4 => "ipencap".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        41 => "ipv6".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}
