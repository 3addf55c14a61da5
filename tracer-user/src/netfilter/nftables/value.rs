//! How `nft list` writes the values a rule compares: addresses and prefixes,
//! interface names, protocols, ports, conntrack states and TCP flags, marks,
//! numbers.

use crate::kernel::bytes::cstr;
use crate::netfilter::inventory::Verdict;
use crate::netfilter::text::{ip_text, proto_name};

/// How to print the values a register holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    /// An address, possibly only its first bytes were loaded (a prefix).
    Ipv4,
    Ipv6,
    Iface,
    Proto,
    Port,
    NfProto,
    CtState,
    TcpFlags,
    /// A packet or conntrack mark: host-endian, written with all 8 digits.
    Mark,
    /// A host-endian number.
    Number,
    /// An ARP operation (big-endian): `request`, `reply`, ...
    ArpOp,
    /// A MAC address.
    Ether,
    Bytes,
}

/// `ll`, `nh`, `th`, `ih`: the header a raw payload expression reads.
pub(super) fn base_name(base: u32) -> &'static str {
    match base {
        0 => "ll",
        1 => "nh",
        2 => "th",
        3 => "ih",
        _ => "?",
    }
}

pub(super) fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        other => other.to_string().to_lowercase(),
    }
}

/// `10.0.0.0/8`: a partial load or a mask makes a prefix.
pub(super) fn prefix_text(kind: Kind, value: &[u8], mask: Option<&[u8]>) -> String {
    let full = if kind == Kind::Ipv4 { 4 } else { 16 };
    let mut addr = value.to_vec();
    addr.resize(full, 0);
    let addr = ip_text(&addr);
    let bits = match mask {
        Some(m) => m.iter().map(|b| b.count_ones()).sum::<u32>() as usize,
        None => value.len().min(full) * 8,
    };
    if bits == full * 8 {
        addr
    } else {
        format!("{addr}/{bits}")
    }
}

pub(super) fn format_value(kind: Kind, v: &[u8]) -> String {
    match kind {
        Kind::Ipv4 | Kind::Ipv6 => prefix_text(kind, v, None),
        Kind::Iface => {
            // Without a terminating NUL only a prefix is compared.
            let s = cstr(v);
            if v.contains(&0) {
                format!("{s:?}")
            } else {
                format!("\"{s}*\"")
            }
        }
        Kind::Proto if v.len() == 1 => proto_name(v[0]),
        Kind::Port if v.len() == 2 => u16::from_be_bytes([v[0], v[1]]).to_string(),
        Kind::NfProto if v.len() == 1 => match v[0] {
            2 => "ipv4".into(),
            10 => "ipv6".into(),
            n => n.to_string(),
        },
        Kind::CtState | Kind::TcpFlags => flag_names(kind, v, ","),
        Kind::Mark if v.len() == 4 => {
            format!("{:#010x}", u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
        }
        Kind::Number if v.len() == 4 => {
            format!("{:#x}", u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
        }
        Kind::ArpOp if v.len() == 2 => arp_op_name(u16::from_be_bytes([v[0], v[1]])),
        Kind::Ether if v.len() == 6 => {
            let parts: Vec<String> = v.iter().map(|b| format!("{b:02x}")).collect();
            parts.join(":")
        }
        _ => {
            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// An ARP operation as nft names it.
fn arp_op_name(op: u16) -> String {
    match op {
        1 => "request".into(),
        2 => "reply".into(),
        3 => "rrequest".into(),
        4 => "rreply".into(),
        8 => "inrequest".into(),
        9 => "inreply".into(),
        10 => "nak".into(),
        n => n.to_string(),
    }
}

const CT_STATES: [(u32, &str); 5] = [
    (1, "invalid"),
    (2, "established"),
    (4, "related"),
    (8, "new"),
    (64, "untracked"),
];
const TCP_FLAGS: [(u32, &str); 8] = [
    (0x01, "fin"),
    (0x02, "syn"),
    (0x04, "rst"),
    (0x08, "psh"),
    (0x10, "ack"),
    (0x20, "urg"),
    (0x40, "ecn"),
    (0x80, "cwr"),
];

/// The names of the flags set in `v` (a conntrack state, host-endian, or
/// TCP flags, one byte), joined by `sep`; bits without a name in hex.
pub(super) fn flag_names(kind: Kind, v: &[u8], sep: &str) -> String {
    let (bits, table): (u32, &[(u32, &str)]) = match (kind, v) {
        (Kind::CtState, [a, b, c, d]) => (u32::from_ne_bytes([*a, *b, *c, *d]), &CT_STATES),
        (Kind::TcpFlags, [f]) => (u32::from(*f), &TCP_FLAGS),
        _ => return format_value(Kind::Bytes, v),
    };
    let mut names: Vec<String> = table
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let named: u32 = table.iter().map(|(b, _)| b).sum();
    if bits & !named != 0 || bits == 0 {
        names.push(format!("{:#x}", bits & !named));
    }
    names.join(sep)
}
