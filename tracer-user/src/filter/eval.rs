//! Matching a packet against the AST directly, without compiling: the tests'
//! reference for what the compiled program must do.

use tracer_common::{PacketMeta, l3, pkt_flags, proto};

use super::Filter;
use super::ast::{Dir, Expr, Net, Prim};

impl Filter {
    /// Evaluates the filter on `pkt` directly from the AST; always agrees with
    /// `tracer_common::filter::matches(&self.compile()?, pkt)`.
    pub fn matches(&self, pkt: &PacketMeta) -> bool {
        self.expr.as_ref().is_none_or(|e| e.eval(pkt))
    }
}

impl Expr {
    fn eval(&self, pkt: &PacketMeta) -> bool {
        match self {
            Expr::Prim(p, _) => p.test(pkt),
            Expr::Not(e) => !e.eval(pkt),
            Expr::And(a, b) => a.eval(pkt) && b.eval(pkt),
            Expr::Or(a, b) => a.eval(pkt) || b.eval(pkt),
        }
    }
}

impl Dir {
    /// Applies `test` to the source (`true`) and/or destination side.
    fn test(self, test: impl Fn(bool) -> bool) -> bool {
        match self {
            Dir::Any => test(true) || test(false),
            Dir::Src => test(true),
            Dir::Dst => test(false),
        }
    }
}

impl Net {
    /// Whether `a` (one address of `pkt`) is in this prefix, bit by bit.
    fn contains(&self, pkt: &PacketMeta, a: &[u8; 16]) -> bool {
        pkt.l3 != l3::NONE
            && (pkt.l3 == l3::IPV6) == self.v6
            && (0..self.prefix as usize)
                .all(|bit| (a[bit / 8] ^ self.addr[bit / 8]) & (0x80 >> (bit % 8)) == 0)
    }
}

fn has_ports(pkt: &PacketMeta) -> bool {
    pkt.flags & pkt_flags::L4 != 0 && (pkt.proto == proto::TCP || pkt.proto == proto::UDP)
}

fn is_ip_proto(pkt: &PacketMeta, p: u8) -> bool {
    (pkt.l3 == l3::IPV4 || pkt.l3 == l3::IPV6) && pkt.proto == p
}

impl Prim {
    fn test(&self, pkt: &PacketMeta) -> bool {
        match *self {
            Prim::Host(d, n) | Prim::Net(d, n) => {
                d.test(|src| n.contains(pkt, if src { &pkt.src } else { &pkt.dst }))
            }
            Prim::Port(d, p) => {
                has_ports(pkt) && d.test(|src| p == if src { pkt.sport } else { pkt.dport })
            }
            Prim::Tcp => is_ip_proto(pkt, proto::TCP),
            Prim::Udp => is_ip_proto(pkt, proto::UDP),
            Prim::Icmp => pkt.l3 == l3::IPV4 && pkt.proto == proto::ICMP,
            Prim::Icmp6 => is_ip_proto(pkt, proto::ICMPV6),
            Prim::Ip => pkt.l3 == l3::IPV4,
            Prim::Ip6 => pkt.l3 == l3::IPV6,
            Prim::Arp => pkt.l3 == l3::ARP,
        }
    }
}
