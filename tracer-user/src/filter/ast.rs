//! The parsed form of a FILTER, and its canonical text.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dir {
    Any,
    Src,
    Dst,
}

impl Dir {
    pub(super) fn prefix(self) -> &'static str {
        match self {
            Dir::Any => "",
            Dir::Src => "src ",
            Dir::Dst => "dst ",
        }
    }
}

/// An address prefix; `addr` is in network order with the host bits clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Net {
    pub(super) v6: bool,
    pub(super) addr: [u8; 16],
    pub(super) prefix: u8,
}

impl Net {
    pub(super) fn max_prefix(v6: bool) -> u8 {
        if v6 { 128 } else { 32 }
    }

    pub(super) fn mask(&self) -> [u8; 16] {
        let mut m = [0u8; 16];
        for (i, b) in m.iter_mut().enumerate() {
            let bits = (self.prefix as usize).saturating_sub(i * 8).min(8);
            *b = (0xff00u16 >> bits) as u8;
        }
        m
    }

    pub(super) fn masked(&self) -> Net {
        let mut n = *self;
        for (a, m) in n.addr.iter_mut().zip(self.mask()) {
            *a &= m;
        }
        n
    }

    fn fmt_addr(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v6 {
            write!(f, "{}", Ipv6Addr::from(self.addr))
        } else {
            write!(
                f,
                "{}",
                Ipv4Addr::new(self.addr[0], self.addr[1], self.addr[2], self.addr[3])
            )
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prim {
    Host(Dir, Net),
    Net(Dir, Net),
    Port(Dir, u16),
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    Ip,
    Ip6,
    Arp,
}

impl Prim {
    pub(super) fn protocol(kw: &str) -> Option<Prim> {
        Some(match kw {
            "tcp" => Prim::Tcp,
            "udp" => Prim::Udp,
            "icmp" => Prim::Icmp,
            "icmp6" => Prim::Icmp6,
            "ip" => Prim::Ip,
            "ip6" => Prim::Ip6,
            "arp" => Prim::Arp,
            _ => return None,
        })
    }
}

impl fmt::Display for Prim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prim::Host(d, n) => {
                write!(f, "{}host ", d.prefix())?;
                n.fmt_addr(f)
            }
            Prim::Net(d, n) => {
                write!(f, "{}net ", d.prefix())?;
                n.fmt_addr(f)?;
                write!(f, "/{}", n.prefix)
            }
            Prim::Port(d, p) => write!(f, "{}port {p}", d.prefix()),
            Prim::Tcp => f.write_str("tcp"),
            Prim::Udp => f.write_str("udp"),
            Prim::Icmp => f.write_str("icmp"),
            Prim::Icmp6 => f.write_str("icmp6"),
            Prim::Ip => f.write_str("ip"),
            Prim::Ip6 => f.write_str("ip6"),
            Prim::Arp => f.write_str("arp"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Expr {
    /// A primitive and the character offset it came from.
    Prim(Prim, usize),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Writes `self` with the fewest parentheses that keep its shape when parsed
    /// again; `ctx` is the precedence the context needs (1 or, 2 and, 3 unary).
    pub(super) fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, ctx: u8) -> fmt::Result {
        let prec = match self {
            Expr::Or(..) => 1,
            Expr::And(..) => 2,
            _ => 3,
        };
        if prec < ctx {
            f.write_str("(")?;
        }
        match self {
            Expr::Prim(p, _) => write!(f, "{p}")?,
            Expr::Not(e) => {
                f.write_str("not ")?;
                e.fmt_prec(f, 3)?;
            }
            Expr::And(a, b) => {
                a.fmt_prec(f, 2)?;
                f.write_str(" and ")?;
                b.fmt_prec(f, 3)?;
            }
            Expr::Or(a, b) => {
                a.fmt_prec(f, 1)?;
                f.write_str(" or ")?;
                b.fmt_prec(f, 2)?;
            }
        }
        if prec < ctx {
            f.write_str(")")?;
        }
        Ok(())
    }
}
