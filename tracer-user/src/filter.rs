//! FILTER expressions: a tcpdump-like subset, parsed into a small AST and
//! compiled into the postfix program of [`tracer_common::filter`] that the eBPF
//! programs (and replay) evaluate.
//!
//! ```text
//! filter := <empty> | or                  empty or blank = match everything
//! or     := and { ("or" | "||") and }
//! and    := unary { ("and" | "&&") unary }
//! unary  := ("not" | "!") unary | "(" or ")" | prim
//! prim   := [proto] [dir] kind VALUE      host A | src net 10.0.0.0/8 | tcp dst port 80
//!         | [proto] dir ADDR              src 10.0.0.1 (= src host), dst fd00::/8 (= dst net)
//!         | proto                         tcp udp icmp icmp6 ip ip6 arp
//!         | VALUE                         repeats the previous qualifiers: port 80 or 443
//! kind   := host ADDR | net ADDR/LEN | port 0..=65535
//! dir    := src | dst
//! ```
//!
//! Keywords are case-insensitive; ADDR is IPv4 or IPv6. Precedence: `not` binds
//! tightest, then `and`, then `or`; both are left-associative. **This differs
//! from tcpdump**, where `and` and `or` have equal precedence: here
//! `a or b and c` means `a or (b and c)`. Use parentheses when in doubt.
//!
//! Meaning: `host`/`net` match the source or destination address of the same
//! family (ARP sender/target addresses count as IPv4); `port` matches TCP and
//! UDP packets only; `icmp` is ICMP in IPv4 or ICMPv6 in IPv6, `icmp6` is IP
//! protocol 58; `ip`, `ip6`, `arp` test the layer 3 kind; `tcp port 80` means
//! `tcp and port 80`.
//!
//! The kernel runs at most [`MAX_INSNS`] instructions: `host`/`net`/`port`
//! cost 3 (1 with `src`/`dst`), `icmp` 7, the other protocols 1, and each
//! `and`/`or`/`not` 1. Longer filters are rejected when parsed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use tracer_common::filter::{FilterInsn, FilterProg, MAX_DEPTH, MAX_INSNS, op};
use tracer_common::{PacketMeta, l3, pkt_flags, proto};

/// Deepest nesting of `not` and parentheses the parser accepts.
const MAX_NESTING: usize = 64;

const COST_HINT: &str = "host/net/port cost 3 instructions (1 with src/dst), icmp 7, \
                         other protocols 1, each and/or/not 1";

const PRIMITIVES: &str = "host, net, port, src, dst, tcp, udp, icmp, icmp6, arp, ip, ip6";

/// tcpdump keywords we recognise only to say that they are unsupported.
#[rustfmt::skip]
const TCPDUMP_ONLY: &[&str] = &[
    "ether", "vlan", "mpls", "portrange", "proto", "less", "greater", "gateway", "broadcast",
    "multicast", "sctp", "rarp", "inbound", "outbound", "len", "ifname", "on", "tcpflags",
];

/// A FILTER that could not be parsed (or does not fit in the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    /// 0-based character offset in `input` where the problem is.
    pub pos: usize,
    pub msg: String,
    /// The text that was parsed (for [`FilterError::with_caret`]).
    pub input: String,
}

impl FilterError {
    fn new(pos: usize, msg: impl Into<String>) -> Self {
        FilterError {
            pos,
            msg: msg.into(),
            input: String::new(),
        }
    }

    /// 1-based column, as shown by `Display`.
    pub fn column(&self) -> usize {
        self.pos + 1
    }

    /// The one-line message followed by the input and a caret under the column.
    pub fn with_caret(&self) -> String {
        let line: String = self
            .input
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("{self}\n  {line}\n  {}^", " ".repeat(self.pos))
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad filter at column {}: {}", self.column(), self.msg)
    }
}

impl std::error::Error for FilterError {}

// ---------------------------------------------------------------- AST

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Any,
    Src,
    Dst,
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

    fn prefix(self) -> &'static str {
        match self {
            Dir::Any => "",
            Dir::Src => "src ",
            Dir::Dst => "dst ",
        }
    }
}

/// An address prefix; `addr` is in network order with the host bits clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    v6: bool,
    addr: [u8; 16],
    prefix: u8,
}

impl Net {
    fn max_prefix(v6: bool) -> u8 {
        if v6 { 128 } else { 32 }
    }

    fn mask(&self) -> [u8; 16] {
        let mut m = [0u8; 16];
        for (i, b) in m.iter_mut().enumerate() {
            let bits = (self.prefix as usize).saturating_sub(i * 8).min(8);
            *b = (0xff00u16 >> bits) as u8;
        }
        m
    }

    fn masked(&self) -> Net {
        let mut n = *self;
        for (a, m) in n.addr.iter_mut().zip(self.mask()) {
            *a &= m;
        }
        n
    }

    /// The `addr` and `mask` words of a [`FilterInsn`], built exactly as the
    /// evaluator reads the packet's address.
    fn words(&self) -> ([u32; 4], [u32; 4]) {
        let (a, m) = (self.addr, self.mask());
        let w = |b: &[u8; 16], i: usize| {
            u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]])
        };
        (
            [0, 1, 2, 3].map(|i| w(&a, i) & w(&m, i)),
            [0, 1, 2, 3].map(|i| w(&m, i)),
        )
    }

    /// Whether `a` (one address of `pkt`) is in this prefix, bit by bit.
    fn contains(&self, pkt: &PacketMeta, a: &[u8; 16]) -> bool {
        pkt.l3 != l3::NONE
            && (pkt.l3 == l3::IPV6) == self.v6
            && (0..self.prefix as usize)
                .all(|bit| (a[bit / 8] ^ self.addr[bit / 8]) & (0x80 >> (bit % 8)) == 0)
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
enum Prim {
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

fn has_ports(pkt: &PacketMeta) -> bool {
    pkt.flags & pkt_flags::L4 != 0 && (pkt.proto == proto::TCP || pkt.proto == proto::UDP)
}

fn is_ip_proto(pkt: &PacketMeta, p: u8) -> bool {
    (pkt.l3 == l3::IPV4 || pkt.l3 == l3::IPV6) && pkt.proto == p
}

impl Prim {
    fn protocol(kw: &str) -> Option<Prim> {
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
            Prim::Icmp => {
                (pkt.l3 == l3::IPV4 && pkt.proto == proto::ICMP)
                    || (pkt.l3 == l3::IPV6 && pkt.proto == proto::ICMPV6)
            }
            Prim::Icmp6 => is_ip_proto(pkt, proto::ICMPV6),
            Prim::Ip => pkt.l3 == l3::IPV4,
            Prim::Ip6 => pkt.l3 == l3::IPV6,
            Prim::Arp => pkt.l3 == l3::ARP,
        }
    }

    fn emit(&self, pos: usize, out: &mut Vec<(FilterInsn, usize)>) {
        let mut push = |op: u32, arg: u32| {
            out.push((
                FilterInsn {
                    op,
                    arg,
                    ..Default::default()
                },
                pos,
            ))
        };
        match *self {
            Prim::Host(d, n) | Prim::Net(d, n) => {
                let (addr, mask) = n.words();
                let arg = if n.v6 { 6 } else { 4 };
                let mut net = |op| {
                    out.push((
                        FilterInsn {
                            op,
                            arg,
                            addr,
                            mask,
                        },
                        pos,
                    ))
                };
                match d {
                    Dir::Src => net(op::SRC_NET),
                    Dir::Dst => net(op::DST_NET),
                    Dir::Any => {
                        net(op::SRC_NET);
                        net(op::DST_NET);
                        out.push((
                            FilterInsn {
                                op: op::OR,
                                ..Default::default()
                            },
                            pos,
                        ));
                    }
                }
            }
            Prim::Port(d, p) => match d {
                Dir::Src => push(op::SPORT, p.into()),
                Dir::Dst => push(op::DPORT, p.into()),
                Dir::Any => {
                    push(op::SPORT, p.into());
                    push(op::DPORT, p.into());
                    push(op::OR, 0);
                }
            },
            Prim::Tcp => push(op::PROTO, proto::TCP.into()),
            Prim::Udp => push(op::PROTO, proto::UDP.into()),
            Prim::Icmp6 => push(op::PROTO, proto::ICMPV6.into()),
            Prim::Icmp => {
                push(op::L3, l3::IPV4.into());
                push(op::PROTO, proto::ICMP.into());
                push(op::AND, 0);
                push(op::L3, l3::IPV6.into());
                push(op::PROTO, proto::ICMPV6.into());
                push(op::AND, 0);
                push(op::OR, 0);
            }
            Prim::Ip => push(op::L3, l3::IPV4.into()),
            Prim::Ip6 => push(op::L3, l3::IPV6.into()),
            Prim::Arp => push(op::L3, l3::ARP.into()),
        }
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
enum Expr {
    /// A primitive and the character offset it came from.
    Prim(Prim, usize),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
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

    fn emit(&self, out: &mut Vec<(FilterInsn, usize)>) {
        match self {
            Expr::Prim(p, pos) => p.emit(*pos, out),
            Expr::Not(e) => {
                // `not not x` is `x`.
                let (mut inner, mut negate) = (&**e, true);
                while let Expr::Not(e) = inner {
                    inner = e;
                    negate = !negate;
                }
                inner.emit(out);
                if negate {
                    let pos = out.last().map_or(0, |l| l.1);
                    out.push((
                        FilterInsn {
                            op: op::NOT,
                            ..Default::default()
                        },
                        pos,
                    ));
                }
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.emit(out);
                b.emit(out);
                let op = if matches!(self, Expr::And(..)) {
                    op::AND
                } else {
                    op::OR
                };
                let pos = out.last().map_or(0, |l| l.1);
                out.push((
                    FilterInsn {
                        op,
                        ..Default::default()
                    },
                    pos,
                ));
            }
        }
    }

    /// Writes `self` with the fewest parentheses that keep its shape when parsed
    /// again; `ctx` is the precedence the context needs (1 or, 2 and, 3 unary).
    fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, ctx: u8) -> fmt::Result {
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

// ---------------------------------------------------------------- tokens

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    LParen,
    RParen,
    And,
    Or,
    Not,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// 0-based character offset.
    pos: usize,
}

fn is_delim(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '!' | '&' | '|')
}

/// Splits `src` into tokens; returns them and the length of `src` in characters.
fn tokenize(src: &str) -> Result<(Vec<Token>, usize), FilterError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (c, pos) = (chars[i], i);
        i += 1;
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '!' => Tok::Not,
            '&' | '|' => {
                let word = if c == '&' { "and" } else { "or" };
                if chars.get(i) != Some(&c) {
                    return Err(FilterError::new(
                        pos,
                        format!("single \"{c}\"; write \"{c}{c}\" or \"{word}\""),
                    ));
                }
                i += 1;
                if c == '&' { Tok::And } else { Tok::Or }
            }
            _ => {
                while i < chars.len() && !is_delim(chars[i]) {
                    i += 1;
                }
                let w: String = chars[pos..i].iter().collect();
                match w.to_ascii_lowercase().as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => Tok::Word(w),
                }
            }
        };
        toks.push(Token { tok, pos });
    }
    Ok((toks, chars.len()))
}

// ---------------------------------------------------------------- parser

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Host,
    Net,
    Port,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Host => "host",
            Kind::Net => "net",
            Kind::Port => "port",
        }
    }

    fn wants(self) -> &'static str {
        match self {
            Kind::Host => "an IPv4 or IPv6 address",
            Kind::Net => "a network such as 10.0.0.0/8 or fd00::/8",
            Kind::Port => "a port number (0-65535)",
        }
    }
}

/// The qualifiers of a primitive with a value, e.g. `tcp src port`; a bare
/// value later in the filter repeats the last ones.
#[derive(Clone, Copy, Debug)]
struct Qual {
    proto: Option<Prim>,
    dir: Dir,
    kind: Kind,
}

/// Whether a word is a value (address, network, number) rather than a keyword.
fn looks_like_value(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_digit()) || w.contains(':')
}

fn parse_addr(s: &str) -> Option<Net> {
    let mut addr = [0u8; 16];
    let v6 = match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            false
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            true
        }
    };
    Some(Net {
        v6,
        addr,
        prefix: Net::max_prefix(v6),
    })
}

fn parse_host(v: &str, pos: usize) -> Result<Net, FilterError> {
    if v.contains('/') {
        return Err(FilterError::new(
            pos,
            format!("\"{v}\" is a network; write \"net {v}\" to match a prefix"),
        ));
    }
    parse_addr(v).ok_or_else(|| {
        FilterError::new(
            pos,
            format!("\"{v}\" is not an IPv4 or IPv6 address (host names are not looked up)"),
        )
    })
}

fn parse_net(v: &str, pos: usize) -> Result<Net, FilterError> {
    let Some((a, len)) = v.split_once('/') else {
        let msg = match parse_addr(v) {
            Some(_) => format!(
                "\"{v}\" has no prefix length; write e.g. \"net {v}/24\", or \"host {v}\" for one address"
            ),
            None => format!(
                "expected {} after \"net\", found \"{v}\"",
                Kind::Net.wants()
            ),
        };
        return Err(FilterError::new(pos, msg));
    };
    let Some(mut net) = parse_addr(a) else {
        return Err(FilterError::new(
            pos,
            format!("\"{a}\" is not an IPv4 or IPv6 address"),
        ));
    };
    let max = Net::max_prefix(net.v6);
    let prefix = if !len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit()) {
        len.parse::<u8>().ok().filter(|&p| p <= max)
    } else {
        None
    };
    let Some(prefix) = prefix else {
        let fam = if net.v6 { 6 } else { 4 };
        let lpos = pos + a.chars().count() + 1;
        return Err(FilterError::new(
            lpos,
            format!("bad prefix length \"/{len}\": an IPv{fam} prefix is /0 to /{max}"),
        ));
    };
    net.prefix = prefix;
    let masked = net.masked();
    if masked != net {
        return Err(FilterError::new(
            pos,
            format!(
                "{v} has host bits set; did you mean {}?",
                Prim::Net(Dir::Any, masked)
                    .to_string()
                    .trim_start_matches("net ")
            ),
        ));
    }
    Ok(net)
}

fn parse_port(v: &str, pos: usize) -> Result<u16, FilterError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FilterError::new(
            pos,
            format!(
                "expected {} after \"port\", found \"{v}\" (service names are not supported)",
                Kind::Port.wants()
            ),
        ));
    }
    v.parse::<u16>()
        .map_err(|_| FilterError::new(pos, format!("port {v} is out of range 0-65535")))
}

fn unknown_word(w: &str, pos: usize) -> FilterError {
    let lw = w.to_ascii_lowercase();
    let msg = if looks_like_value(w) {
        let kw = if w.contains('/') {
            "net"
        } else if w.bytes().all(|b| b.is_ascii_digit()) {
            "port"
        } else {
            "host"
        };
        format!("\"{w}\" needs a keyword before it; did you mean \"{kw} {w}\"?")
    } else if TCPDUMP_ONLY.contains(&lw.as_str()) {
        format!("\"{w}\" is not supported by calitrace filters; use {PRIMITIVES}, and, or, not")
    } else {
        format!("unknown keyword \"{w}\"; expected {PRIMITIVES}, not or \"(\"")
    };
    FilterError::new(pos, msg)
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    /// Length of the input in characters (the position of "end of input").
    end: usize,
    depth: usize,
    prims: usize,
    last: Option<Qual>,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn peek_keyword(&self) -> Option<String> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }

    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.end, |t| t.pos)
    }

    /// Describes the next token for error messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "end of input".into(),
            Some(Tok::Word(w)) => format!("\"{w}\""),
            Some(Tok::LParen) => "\"(\"".into(),
            Some(Tok::RParen) => "\")\"".into(),
            Some(Tok::And) => "\"and\"".into(),
            Some(Tok::Or) => "\"or\"".into(),
            Some(Tok::Not) => "\"not\"".into(),
        }
    }

    fn prim(&mut self, p: Prim, pos: usize) -> Result<Expr, FilterError> {
        self.prims += 1;
        if self.prims > MAX_INSNS {
            return Err(FilterError::new(
                pos,
                format!(
                    "filter too long: the kernel runs at most {MAX_INSNS} instructions ({COST_HINT})"
                ),
            ));
        }
        Ok(Expr::Prim(p, pos))
    }

    fn parse_or(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.parse_and()?;
        while self.peek() == Some(&Tok::Or) {
            self.i += 1;
            e = Expr::Or(Box::new(e), Box::new(self.parse_and()?));
        }
        Ok(e)
    }

    fn parse_and(&mut self) -> Result<Expr, FilterError> {
        let mut e = self.parse_unary()?;
        while self.peek() == Some(&Tok::And) {
            self.i += 1;
            e = Expr::And(Box::new(e), Box::new(self.parse_unary()?));
        }
        Ok(e)
    }

    fn parse_unary(&mut self) -> Result<Expr, FilterError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(FilterError::new(
                self.pos(),
                format!(
                    "too deeply nested (more than {MAX_NESTING} levels of \"not\" and parentheses)"
                ),
            ));
        }
        let e = match self.peek() {
            Some(Tok::Not) => {
                self.i += 1;
                Expr::Not(Box::new(self.parse_unary()?))
            }
            Some(Tok::LParen) => {
                let open = self.pos();
                self.i += 1;
                if self.peek() == Some(&Tok::RParen) {
                    return Err(FilterError::new(open, "empty parentheses \"()\""));
                }
                let e = self.parse_or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return Err(FilterError::new(
                        self.pos(),
                        format!(
                            "expected \")\" to close the \"(\" at column {}, found {}",
                            open + 1,
                            self.found()
                        ),
                    ));
                }
                self.i += 1;
                e
            }
            Some(Tok::Word(_)) => self.parse_prim()?,
            _ => {
                return Err(FilterError::new(
                    self.pos(),
                    format!(
                        "expected {PRIMITIVES}, \"not\" or \"(\", found {}",
                        self.found()
                    ),
                ));
            }
        };
        self.depth -= 1;
        Ok(e)
    }

    /// Parses a primitive starting at a word.
    fn parse_prim(&mut self) -> Result<Expr, FilterError> {
        let pos = self.pos();
        let Some(Tok::Word(w)) = self.peek().cloned() else {
            return Err(FilterError::new(
                pos,
                format!("expected a primitive, found {}", self.found()),
            ));
        };
        let kw = w.to_ascii_lowercase();
        if let Some(p) = Prim::protocol(&kw) {
            self.i += 1;
            if matches!(
                self.peek_keyword().as_deref(),
                Some("src" | "dst" | "host" | "net" | "port")
            ) {
                let q = self.parse_qual(Some((p, &kw)))?;
                return self.parse_value(q);
            }
            return self.prim(p, pos);
        }
        match kw.as_str() {
            "host" | "net" | "port" | "src" | "dst" => {
                let q = self.parse_qual(None)?;
                self.parse_value(q)
            }
            _ => match self.last {
                Some(q) if looks_like_value(&w) => self.parse_value(q),
                _ => Err(unknown_word(&w, pos)),
            },
        }
    }

    /// Parses `[src|dst] [host|net|port]` (at least one of them).
    fn parse_qual(&mut self, proto: Option<(Prim, &str)>) -> Result<Qual, FilterError> {
        let mut dir = Dir::Any;
        let mut dir_kw = "";
        match self.peek_keyword().as_deref() {
            Some("src") => (dir, dir_kw) = (Dir::Src, "src"),
            Some("dst") => (dir, dir_kw) = (Dir::Dst, "dst"),
            _ => {}
        }
        if dir != Dir::Any {
            self.i += 1;
        }
        let kind_pos = self.pos();
        let kind = match self.peek_keyword().as_deref() {
            Some("host") => Kind::Host,
            Some("net") => Kind::Net,
            Some("port") => Kind::Port,
            Some(_)
                if dir != Dir::Any
                    && matches!(self.peek(), Some(Tok::Word(w)) if looks_like_value(w)) =>
            {
                // `src 10.0.0.1`, `dst 10.0.0.0/8`: the value is not consumed here.
                return Ok(Qual {
                    proto: proto.map(|p| p.0),
                    dir,
                    kind: match self.peek() {
                        Some(Tok::Word(w)) if w.contains('/') => Kind::Net,
                        _ => Kind::Host,
                    },
                });
            }
            _ => {
                return Err(FilterError::new(
                    kind_pos,
                    format!(
                        "expected host, net, port or an address after \"{dir_kw}\", found {}",
                        self.found()
                    ),
                ));
            }
        };
        self.i += 1;
        if let Some((p, name)) = proto
            && kind == Kind::Port
            && !matches!(p, Prim::Tcp | Prim::Udp)
        {
            return Err(FilterError::new(
                kind_pos,
                format!("{name} has no ports; \"port\" works with tcp and udp"),
            ));
        }
        Ok(Qual {
            proto: proto.map(|p| p.0),
            dir,
            kind,
        })
    }

    /// Parses the value after qualifiers `q` into a primitive (and'ed with the
    /// protocol qualifier, if any).
    fn parse_value(&mut self, q: Qual) -> Result<Expr, FilterError> {
        let pos = self.pos();
        let Some(Tok::Word(v)) = self.peek().cloned() else {
            return Err(FilterError::new(
                pos,
                format!(
                    "expected {} after \"{}\", found {}",
                    q.kind.wants(),
                    q.kind.name(),
                    self.found()
                ),
            ));
        };
        self.i += 1;
        let prim = match q.kind {
            Kind::Host => Prim::Host(q.dir, parse_host(&v, pos)?),
            Kind::Net => Prim::Net(q.dir, parse_net(&v, pos)?),
            Kind::Port => Prim::Port(q.dir, parse_port(&v, pos)?),
        };
        if let (Some(p), Prim::Host(_, n) | Prim::Net(_, n)) = (q.proto, prim) {
            let need_v6 = match p {
                Prim::Ip | Prim::Arp => Some(false),
                Prim::Ip6 | Prim::Icmp6 => Some(true),
                _ => None,
            };
            if let Some(v6) = need_v6
                && v6 != n.v6
            {
                let fam = if v6 { 6 } else { 4 };
                return Err(FilterError::new(
                    pos,
                    format!(
                        "{p} {} needs an IPv{fam} address, not \"{v}\"",
                        q.kind.name()
                    ),
                ));
            }
        }
        self.last = Some(q);
        match q.proto {
            Some(p) => {
                let p = self.prim(p, pos)?;
                Ok(Expr::And(Box::new(p), Box::new(self.prim(prim, pos)?)))
            }
            None => self.prim(prim, pos),
        }
    }
}

// ---------------------------------------------------------------- Filter

/// A parsed FILTER expression.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `None` matches everything.
    expr: Option<Expr>,
    source: String,
}

impl Filter {
    /// Parses a FILTER. Empty or blank text matches everything. Also rejects
    /// filters too long for the kernel, so that [`Filter::compile`] succeeds on
    /// every parsed filter.
    pub fn parse(src: &str) -> Result<Filter, FilterError> {
        Self::parse_inner(src).map_err(|mut e| {
            e.input = src.to_string();
            e
        })
    }

    /// Parses the words of a FILTER given as several command line arguments.
    pub fn parse_words(words: &[String]) -> Result<Filter, FilterError> {
        Self::parse(&words.join(" "))
    }

    fn parse_inner(src: &str) -> Result<Filter, FilterError> {
        let (toks, end) = tokenize(src)?;
        let source = src.split_whitespace().collect::<Vec<_>>().join(" ");
        if toks.is_empty() {
            return Ok(Filter { expr: None, source });
        }
        let mut p = Parser {
            toks,
            i: 0,
            end,
            depth: 0,
            prims: 0,
            last: None,
        };
        let expr = p.parse_or()?;
        if let Some(tok) = p.peek() {
            let msg = if *tok == Tok::RParen {
                "unmatched \")\"".to_string()
            } else {
                format!(
                    "expected \"and\", \"or\" or the end of the filter, found {}",
                    p.found()
                )
            };
            return Err(FilterError::new(p.pos(), msg));
        }
        let filter = Filter {
            expr: Some(expr),
            source,
        };
        filter.compile_inner()?;
        Ok(filter)
    }

    /// The filter that matches every packet.
    pub fn match_all() -> Filter {
        Filter::default()
    }

    pub fn is_match_all(&self) -> bool {
        self.expr.is_none()
    }

    /// The text as given, with runs of whitespace collapsed to one space.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The program for [`tracer_common::filter::matches`]; `len == 0` for
    /// [`Filter::match_all`].
    pub fn compile(&self) -> Result<FilterProg, FilterError> {
        self.compile_inner().map_err(|mut e| {
            e.input = self.source.clone();
            e
        })
    }

    fn compile_inner(&self) -> Result<FilterProg, FilterError> {
        let mut out = Vec::new();
        if let Some(e) = &self.expr {
            e.emit(&mut out);
        }
        if out.len() > MAX_INSNS {
            return Err(FilterError::new(
                out[MAX_INSNS].1,
                format!(
                    "filter too long: it needs {} instructions and the kernel runs at most {MAX_INSNS} ({COST_HINT})",
                    out.len()
                ),
            ));
        }
        let mut depth = 0u32;
        for (insn, pos) in &out {
            match insn.op {
                op::AND | op::OR => depth = depth.saturating_sub(1),
                op::NOT => {}
                _ => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(FilterError::new(
                            *pos,
                            "filter too deeply nested for the kernel",
                        ));
                    }
                }
            }
        }
        let mut prog = FilterProg::MATCH_ALL;
        prog.len = out.len() as u32;
        for (slot, (insn, _)) in prog.insns.iter_mut().zip(out) {
            *slot = insn;
        }
        Ok(prog)
    }

    /// Evaluates the filter on `pkt` directly from the AST; always agrees with
    /// `tracer_common::filter::matches(&self.compile()?, pkt)`.
    pub fn matches(&self, pkt: &PacketMeta) -> bool {
        self.expr.as_ref().is_none_or(|e| e.eval(pkt))
    }
}

/// The canonical form: lowercase keywords, canonical addresses, `and`/`or`
/// parentheses only where needed. Empty for [`Filter::match_all`].
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.expr {
            Some(e) => e.fmt_prec(f, 1),
            None => Ok(()),
        }
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Filter, FilterError> {
        Filter::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::filter::matches as prog_matches;

    // ------------------------------------------------------------ helpers

    fn ip(s: &str) -> (u8, [u8; 16]) {
        let mut a = [0u8; 16];
        match s.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v) => {
                a[..4].copy_from_slice(&v.octets());
                (l3::IPV4, a)
            }
            IpAddr::V6(v) => (l3::IPV6, v.octets()),
        }
    }

    /// A TCP/UDP/ICMP packet between `src` and `dst` (family from the address).
    fn pkt(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> PacketMeta {
        let (l3, src) = ip(src);
        let (_, dst) = ip(dst);
        PacketMeta {
            src,
            dst,
            l3,
            proto,
            flags: pkt_flags::L4,
            sport,
            dport,
            ..Default::default()
        }
    }

    fn arp(sender: &str, target: &str) -> PacketMeta {
        let (_, src) = ip(sender);
        let (_, dst) = ip(target);
        PacketMeta {
            src,
            dst,
            l3: l3::ARP,
            arp_op: 1,
            ..Default::default()
        }
    }

    /// Matches through the compiled program, checking that the AST agrees.
    fn m(filter: &str, p: &PacketMeta) -> bool {
        let f = Filter::parse(filter).unwrap_or_else(|e| panic!("{}", e.with_caret()));
        let prog = f.compile().unwrap();
        let r = prog_matches(&prog, p);
        assert_eq!(
            r,
            f.matches(p),
            "AST and program disagree on {filter:?} for {p:?}"
        );
        r
    }

    fn err(filter: &str) -> FilterError {
        match Filter::parse(filter) {
            Ok(f) => panic!("{filter:?} parsed as {f}"),
            Err(e) => e,
        }
    }

    fn canon(filter: &str) -> String {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{}", e.with_caret()))
            .to_string()
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
            xs[self.below(xs.len())]
        }
    }

    #[rustfmt::skip]
    const ADDRS: &[&str] = &[
        "10.0.0.1", "10.0.0.2", "10.244.1.7", "10.245.0.1", "192.168.1.1", "169.254.1.1",
        "0.0.0.0", "fd00::1", "fd00:10:244::5", "fe80::1", "2001:db8::1", "::",
    ];

    fn random_addr(r: &mut XorShift) -> [u8; 16] {
        if r.below(5) == 0 {
            let mut a = [0u8; 16];
            a.iter_mut().for_each(|b| *b = r.next() as u8);
            a
        } else {
            ip(r.pick(ADDRS)).1
        }
    }

    fn random_port(r: &mut XorShift) -> u16 {
        let any = r.next() as u16;
        r.pick(&[22, 53, 80, 443, 0, 65535, any])
    }

    fn random_packet(r: &mut XorShift) -> PacketMeta {
        let (any_l3, any_proto) = (r.next() as u8, r.next() as u8);
        PacketMeta {
            src: random_addr(r),
            dst: random_addr(r),
            l3: r.pick(&[
                l3::NONE,
                l3::IPV4,
                l3::IPV4,
                l3::IPV6,
                l3::IPV6,
                l3::ARP,
                any_l3,
            ]),
            proto: r.pick(&[
                0,
                proto::ICMP,
                proto::TCP,
                proto::UDP,
                proto::ICMPV6,
                any_proto,
            ]),
            flags: (r.next() & 3) as u8,
            sport: random_port(r),
            dport: random_port(r),
            ..Default::default()
        }
    }

    #[rustfmt::skip]
    const WORDS: &[&str] = &[
        "host", "net", "port", "src", "dst", "tcp", "udp", "icmp", "icmp6", "arp", "ip", "ip6",
        "and", "or", "not", "!", "&&", "||", "(", ")", "(", ")", "10.0.0.1", "10.0.0.0/8",
        "10.244.0.0/16", "fd00::/8", "fd00::1", "::/0", "0.0.0.0/0", "53", "80", "0", "65535",
        "70000", "10.0.0.1/24", "foo", "&", "HOST", "Tcp", "AND", "192.168.1.1",
    ];

    fn random_filter(r: &mut XorShift) -> String {
        let n = r.below(16);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(r.pick(WORDS));
            s.push_str(if r.below(8) == 0 { "" } else { " " });
        }
        s
    }

    // ------------------------------------------------------------ parsing

    #[test]
    fn empty_matches_everything() {
        for src in ["", "   ", "\t\n "] {
            let f = Filter::parse(src).unwrap();
            assert!(f.is_match_all());
            assert_eq!(f.to_string(), "");
            assert_eq!(f.source(), "");
            assert_eq!(f.compile().unwrap(), FilterProg::MATCH_ALL);
            assert!(f.matches(&PacketMeta::default()));
        }
        assert!(Filter::match_all().is_match_all());
        assert!(Filter::parse_words(&[]).unwrap().is_match_all());
        assert!(!Filter::parse("tcp").unwrap().is_match_all());
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("host 10.0.0.1", "host 10.0.0.1"),
            ("HOST 10.0.0.1 AND Port 53", "host 10.0.0.1 and port 53"),
            (
                "src host 10.0.0.1 && dst port 80",
                "src host 10.0.0.1 and dst port 80",
            ),
            ("!tcp||udp", "not tcp or udp"),
            ("not (tcp or udp)", "not (tcp or udp)"),
        ];
        for (src, want) in cases {
            assert_eq!(canon(src), want, "{src}");
        }
        assert_eq!(canon("tcp or udp and icmp"), "tcp or udp and icmp");
        assert_eq!(canon("(tcp or udp) and icmp"), "(tcp or udp) and icmp");
        assert_eq!(canon("tcp and (udp and icmp)"), "tcp and (udp and icmp)");
        assert_eq!(canon("((tcp))"), "tcp");
        assert_eq!(canon("net fd00:0:0::/8"), "net fd00::/8");
        assert_eq!(canon("host FD00::0001"), "host fd00::1");
        assert_eq!(canon("src 10.0.0.1"), "src host 10.0.0.1");
        assert_eq!(canon("dst 10.0.0.0/8"), "dst net 10.0.0.0/8");
        assert_eq!(canon("tcp port 80"), "tcp and port 80");
        assert_eq!(canon("udp dst port 53"), "udp and dst port 53");
        assert_eq!(canon("not tcp port 80"), "not (tcp and port 80)");
        assert_eq!(canon("arp host 169.254.1.1"), "arp and host 169.254.1.1");
        assert_eq!(canon("port 80 or 443"), "port 80 or port 443");
        assert_eq!(
            canon("host 10.0.0.1 or 10.0.0.2 and not 10.0.0.3"),
            "host 10.0.0.1 or host 10.0.0.2 and not host 10.0.0.3"
        );
        assert_eq!(
            canon("tcp src port 80 or 443"),
            "tcp and src port 80 or tcp and src port 443"
        );
        assert_eq!(
            canon("icmp or icmp6 or ip or ip6 or arp"),
            "icmp or icmp6 or ip or ip6 or arp"
        );
        assert_eq!(
            canon("port 0 or port 65535 or port 0080"),
            "port 0 or port 65535 or port 80"
        );
    }

    #[test]
    fn source_and_words() {
        let f = Filter::parse("  host   10.0.0.1\tand port 53 ").unwrap();
        assert_eq!(f.source(), "host 10.0.0.1 and port 53");
        let words: Vec<String> = ["host", "10.0.0.1", "and", "not", "port", "22"]
            .map(String::from)
            .to_vec();
        let f = Filter::parse_words(&words).unwrap();
        assert_eq!(f.source(), "host 10.0.0.1 and not port 22");
        assert_eq!(f.to_string(), "host 10.0.0.1 and not port 22");
        let f: Filter = "tcp".parse().unwrap();
        assert_eq!(f, Filter::parse("tcp").unwrap());
        // A quoted word with spaces inside is fine too.
        let words: Vec<String> = vec!["host 10.0.0.1".into(), "or".into(), "arp".into()];
        assert_eq!(
            Filter::parse_words(&words).unwrap().to_string(),
            "host 10.0.0.1 or arp"
        );
    }

    #[test]
    fn errors_have_positions() {
        let cases: &[(&str, usize, &str)] = &[
            ("hots 10.0.0.1", 0, "unknown keyword \"hots\""),
            ("tcp and bogus", 8, "unknown keyword \"bogus\""),
            ("portrange 1-5", 0, "not supported"),
            ("10.0.0.1", 0, "did you mean \"host 10.0.0.1\"?"),
            ("53", 0, "did you mean \"port 53\"?"),
            (
                "host",
                4,
                "expected an IPv4 or IPv6 address after \"host\", found end of input",
            ),
            ("host and tcp", 5, "found \"and\""),
            ("src host", 8, "found end of input"),
            ("host foo", 5, "\"foo\" is not an IPv4 or IPv6 address"),
            ("host 10.0.0.0/8", 5, "write \"net 10.0.0.0/8\""),
            ("host 10.0.0.256", 5, "not an IPv4 or IPv6 address"),
            ("port 70000", 5, "port 70000 is out of range 0-65535"),
            ("port 99999999999999999999", 5, "out of range"),
            (
                "port http",
                5,
                "expected a port number (0-65535) after \"port\", found \"http\"",
            ),
            ("port -1", 5, "expected a port number"),
            ("port +1", 5, "expected a port number"),
            ("port", 4, "found end of input"),
            (
                "(tcp",
                4,
                "expected \")\" to close the \"(\" at column 1, found end of input",
            ),
            ("((tcp) or (udp)", 15, "to close the \"(\" at column 1"),
            ("(tcp udp)", 5, "found \"udp\""),
            ("tcp)", 3, "unmatched \")\""),
            (")", 0, "found \")\""),
            (
                "tcp udp",
                4,
                "expected \"and\", \"or\" or the end of the filter, found \"udp\"",
            ),
            ("host 10.0.0.1 port 53", 14, "found \"port\""),
            ("()", 0, "empty parentheses"),
            ("tcp and ()", 8, "empty parentheses"),
            ("tcp and", 7, "found end of input"),
            ("and tcp", 0, "found \"and\""),
            ("tcp or or udp", 7, "found \"or\""),
            ("not", 3, "found end of input"),
            ("tcp & udp", 4, "single \"&\"; write \"&&\" or \"and\""),
            ("tcp | udp", 4, "single \"|\""),
            (
                "net 10.0.0.1/24",
                4,
                "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?",
            ),
            (
                "net fd00::1/8",
                4,
                "fd00::1/8 has host bits set; did you mean fd00::/8?",
            ),
            (
                "net 10.0.0.0/33",
                13,
                "bad prefix length \"/33\": an IPv4 prefix is /0 to /32",
            ),
            ("net fd00::/129", 11, "an IPv6 prefix is /0 to /128"),
            ("net 10.0.0.0/", 13, "bad prefix length"),
            ("net 10.0.0.0/x", 13, "bad prefix length"),
            ("net 10.0.0.0", 4, "has no prefix length"),
            ("net foo/8", 4, "\"foo\" is not an IPv4 or IPv6 address"),
            (
                "src",
                3,
                "expected host, net, port or an address after \"src\"",
            ),
            ("dst foo", 4, "after \"dst\", found \"foo\""),
            ("icmp port 1", 5, "icmp has no ports"),
            ("arp port 1", 4, "arp has no ports"),
            ("ip6 host 10.0.0.1", 9, "ip6 host needs an IPv6 address"),
            ("ip net fd00::/8", 7, "ip net needs an IPv4 address"),
            ("arp host fd00::1", 9, "needs an IPv4 address"),
        ];
        for (src, pos, msg) in cases {
            let e = err(src);
            assert_eq!(e.pos, *pos, "{src:?}: {e}");
            assert!(e.msg.contains(msg), "{src:?}: {e}");
            assert_eq!(e.input, *src);
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn error_display() {
        let e = err("port 70000");
        assert_eq!(
            e.to_string(),
            "bad filter at column 6: port 70000 is out of range 0-65535"
        );
        assert_eq!(e.column(), 6);
        assert_eq!(
            e.with_caret(),
            "bad filter at column 6: port 70000 is out of range 0-65535\n  port 70000\n       ^"
        );
        let e = err("net 10.0.0.1/24");
        assert_eq!(
            e.to_string(),
            "bad filter at column 5: 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().starts_with("bad filter"));
        // Positions count characters, not bytes.
        assert_eq!(err("host é").pos, 5);
        assert_eq!(err("é tcp").pos, 0);
        assert_eq!(err("tcp and é").pos, 8);
    }

    #[test]
    fn too_long() {
        // 11 ports: 11 * 3 + 10 = 43 instructions.
        let src = (1..=11)
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let e = err(&src);
        assert!(
            e.msg.contains("needs 43 instructions") && e.msg.contains("at most 32"),
            "{e}"
        );
        assert!(e.pos > 0 && e.pos < src.len());
        // The caret points at the primitive that no longer fits: 8 ports take 31.
        assert_eq!(&src[e.pos..e.pos + 2], "9 ", "{}", e.with_caret());
        // Exactly 32 fits: 8 ports (8 * 3 + 7 = 31) and one more `not`.
        let src = format!(
            "not ({})",
            (1..=8)
                .map(|p| format!("port {p}"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
        assert_eq!(Filter::parse(&src).unwrap().compile().unwrap().len, 32);
        let src = format!("{src} or tcp");
        assert!(err(&src).msg.contains("needs 34"));
        // 16 one-instruction primitives: 31 instructions.
        let src = vec!["tcp"; 16].join(" or ");
        assert_eq!(Filter::parse(&src).unwrap().compile().unwrap().len, 31);
        // Huge inputs fail fast and without overflowing the stack.
        let e = err(&vec!["tcp"; 100_000].join(" or "));
        assert!(e.msg.contains("too long"), "{e}");
        assert_eq!(e.pos, 32 * 7);
        let e = err(&format!(
            "{}tcp{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        ));
        assert!(e.msg.contains("too deeply nested"), "{e}");
        let e = err(&format!("{}tcp", "not ".repeat(100_000)));
        assert!(e.msg.contains("too deeply nested"), "{e}");
        let e = err(&"!".repeat(100_000));
        assert!(e.msg.contains("too deeply nested"), "{e}");
        // Double negation costs nothing.
        let f = Filter::parse(&format!("{}tcp", "not ".repeat(40))).unwrap();
        assert_eq!(f.compile().unwrap().len, 1);
        assert_eq!(
            Filter::parse("not not not tcp")
                .unwrap()
                .compile()
                .unwrap()
                .len,
            2
        );
    }

    // ------------------------------------------------------------ compiling

    #[test]
    fn compiled_shape() {
        let p = Filter::parse("src net 10.244.0.0/16")
            .unwrap()
            .compile()
            .unwrap();
        assert_eq!(p.len, 1);
        let i = p.insns[0];
        assert_eq!((i.op, i.arg), (op::SRC_NET, 4));
        assert_eq!(i.addr, [u32::from_ne_bytes([10, 244, 0, 0]), 0, 0, 0]);
        assert_eq!(i.mask, [u32::from_ne_bytes([255, 255, 0, 0]), 0, 0, 0]);

        let p = Filter::parse("dst net fd00:1:2000::/36")
            .unwrap()
            .compile()
            .unwrap();
        let i = p.insns[0];
        assert_eq!((i.op, i.arg), (op::DST_NET, 6));
        assert_eq!(
            i.addr,
            [
                u32::from_ne_bytes([0xfd, 0, 0, 1]),
                u32::from_ne_bytes([0x20, 0, 0, 0]),
                0,
                0
            ]
        );
        assert_eq!(
            i.mask,
            [u32::MAX, u32::from_ne_bytes([0xf0, 0, 0, 0]), 0, 0]
        );

        let p = Filter::parse("host 10.0.0.1 and not port 22")
            .unwrap()
            .compile()
            .unwrap();
        let ops: Vec<(u32, u32)> = p.insns[..p.len as usize]
            .iter()
            .map(|i| (i.op, i.arg))
            .collect();
        assert_eq!(
            ops,
            [
                (op::SRC_NET, 4),
                (op::DST_NET, 4),
                (op::OR, 0),
                (op::SPORT, 22),
                (op::DPORT, 22),
                (op::OR, 0),
                (op::NOT, 0),
                (op::AND, 0)
            ]
        );
        assert!(
            p.insns[p.len as usize..]
                .iter()
                .all(|i| *i == FilterInsn::default())
        );
        assert_eq!(p._pad, 0);
        assert_eq!(Filter::parse("icmp").unwrap().compile().unwrap().len, 7);
        assert_eq!(
            Filter::parse("net 0.0.0.0/0")
                .unwrap()
                .compile()
                .unwrap()
                .insns[0]
                .mask,
            [0; 4]
        );
    }

    // ------------------------------------------------------------ semantics

    #[test]
    fn hosts_v4() {
        let p = pkt("10.0.0.1", "10.0.0.2", proto::TCP, 40000, 80);
        assert!(m("host 10.0.0.1", &p));
        assert!(m("host 10.0.0.2", &p));
        assert!(!m("host 10.0.0.3", &p));
        assert!(m("src host 10.0.0.1", &p));
        assert!(!m("src host 10.0.0.2", &p));
        assert!(m("dst host 10.0.0.2", &p));
        assert!(m("dst 10.0.0.2", &p));
        assert!(!m("dst host 10.0.0.1", &p));
        // The IPv6 address whose first bytes equal the IPv4 one must not match.
        assert!(!m("host a00:1::", &p));
        assert!(!m("host ::ffff:10.0.0.1", &p));
        // A v6 packet whose first 4 bytes are 10.0.0.1 is not IPv4.
        let mut p6 = p;
        p6.l3 = l3::IPV6;
        assert!(!m("host 10.0.0.1", &p6));
        // No layer 3: no address matches, not even 0.0.0.0/0.
        let none = PacketMeta::default();
        assert!(!m("net 0.0.0.0/0", &none));
        assert!(!m("host 0.0.0.0", &none));
        assert!(m("not net 0.0.0.0/0", &none));
    }

    #[test]
    fn hosts_and_nets_v6() {
        let p = pkt("fd00:10:244::5", "2001:db8::1", proto::UDP, 5353, 53);
        assert!(m("host fd00:10:244::5", &p));
        assert!(m("host 2001:db8::1", &p));
        assert!(!m("host fd00:10:244::6", &p));
        assert!(m("net fd00::/8", &p));
        assert!(m("src net fd00::/8", &p));
        assert!(!m("dst net fd00::/8", &p));
        assert!(m("net fd00:10:244::/48", &p));
        assert!(!m("net fd00:10:245::/48", &p));
        assert!(m("net fd00:10:244::4/127", &p)); // ::4 and ::5
        assert!(!m("net fd00:10:244::6/127", &p));
        assert!(m("net ::/0", &p));
        assert!(!m("net 0.0.0.0/0", &p));
        assert!(m("dst net 2001:db8::/32 and udp and dst port 53", &p));
        assert!(m("ip6", &p) && !m("ip", &p));
    }

    #[test]
    fn nets_v4() {
        let p = pkt("10.244.3.7", "192.168.1.1", proto::TCP, 1234, 443);
        assert!(m("net 10.244.0.0/16", &p));
        assert!(m("src net 10.244.0.0/16", &p));
        assert!(!m("dst net 10.244.0.0/16", &p));
        assert!(!m("net 10.245.0.0/16", &p));
        assert!(m("net 10.0.0.0/8", &p));
        assert!(m("net 10.244.3.6/31", &p));
        assert!(!m("net 10.244.3.8/31", &p));
        assert!(m("net 10.244.3.7/32", &p));
        assert!(m("net 192.168.0.0/23", &p));
        assert!(m("net 0.0.0.0/0", &p));
        assert!(!m("net fd00::/8", &p));
        assert!(m("ip", &p) && !m("ip6", &p));
    }

    #[test]
    fn ports_and_protocols() {
        let tcp = pkt("10.0.0.1", "10.0.0.2", proto::TCP, 40000, 80);
        let udp = pkt("fd00::1", "fd00::2", proto::UDP, 53, 33000);
        let icmp4 = pkt("10.0.0.1", "10.0.0.2", proto::ICMP, 7, 80);
        let icmp6 = pkt("fd00::1", "fd00::2", proto::ICMPV6, 7, 80);
        assert!(m("port 80", &tcp) && m("dst port 80", &tcp) && !m("src port 80", &tcp));
        assert!(m("src port 40000", &tcp) && !m("port 22", &tcp));
        assert!(m("port 53", &udp) && m("src port 53", &udp) && !m("dst port 53", &udp));
        assert!(m("tcp", &tcp) && !m("udp", &tcp) && !m("icmp", &tcp));
        assert!(m("udp", &udp) && !m("tcp", &udp));
        assert!(m("tcp port 80", &tcp) && !m("udp port 80", &tcp));
        // ICMP echo id/seq live in sport/dport but are not ports.
        assert!(!m("port 80", &icmp4) && !m("port 7", &icmp6));
        assert!(m("icmp", &icmp4) && m("icmp", &icmp6));
        assert!(!m("icmp6", &icmp4) && m("icmp6", &icmp6));
        assert!(!m("tcp or udp", &icmp4));
        // Ports need the L4 flag (e.g. a non-first fragment has no ports).
        let mut frag = tcp;
        frag.flags = pkt_flags::DF;
        assert!(!m("port 80", &frag) && m("tcp", &frag) && m("not port 80", &frag));
        // ICMP numbers in the wrong family are not icmp.
        let mut odd = icmp4;
        odd.proto = proto::ICMPV6;
        assert!(!m("icmp", &odd));
        odd = icmp6;
        odd.proto = proto::ICMP;
        assert!(!m("icmp", &odd));
    }

    #[test]
    fn arp_packets() {
        let a = arp("10.0.0.5", "169.254.1.1");
        assert!(m("arp", &a));
        assert!(m("host 169.254.1.1", &a) && m("host 10.0.0.5", &a));
        assert!(m("src host 10.0.0.5", &a) && m("dst host 169.254.1.1", &a));
        assert!(m("arp and dst host 169.254.1.1", &a));
        assert!(m("arp host 169.254.1.1", &a));
        assert!(m("net 169.254.0.0/16", &a));
        for f in [
            "tcp",
            "udp",
            "icmp",
            "icmp6",
            "ip",
            "ip6",
            "port 0",
            "tcp or udp or icmp",
            "host fd00::1",
        ] {
            assert!(!m(f, &a), "{f}");
        }
        let ip = pkt("10.0.0.5", "169.254.1.1", proto::TCP, 1, 2);
        assert!(!m("arp", &ip) && !m("arp host 169.254.1.1", &ip) && m("host 169.254.1.1", &ip));
    }

    #[test]
    fn precedence_and_nesting() {
        let tcp80 = pkt("10.0.0.1", "10.0.0.2", proto::TCP, 40000, 80);
        let udp53 = pkt("10.0.0.1", "10.0.0.3", proto::UDP, 40000, 53);
        // `and` binds tighter than `or`.
        assert!(m("udp or tcp and port 22", &udp53));
        assert!(!m("(udp or tcp) and port 22", &udp53));
        assert!(m("tcp and port 80 or udp and port 53", &tcp80));
        assert!(m("tcp and port 80 or udp and port 53", &udp53));
        assert!(!m("tcp and (port 80 or udp) and port 53", &tcp80));
        // `not` binds tightest.
        assert!(!m("not tcp and port 80", &tcp80));
        assert!(m("not tcp and port 53", &udp53));
        assert!(!m("not (udp and port 53)", &udp53));
        assert!(m("not (udp and port 80)", &udp53));
        assert!(m("!!tcp", &tcp80));
        assert!(m("not not not udp", &tcp80));
        assert!(m(
            "host 10.0.0.1 and not (dst host 10.0.0.3 or port 22)",
            &tcp80
        ));
        assert!(!m(
            "host 10.0.0.1 and not (dst host 10.0.0.3 or port 22)",
            &udp53
        ));
        assert!(m("((host 10.0.0.2) and ((tcp)) and not (((udp))))", &tcp80));
        assert!(m("port 22 or 80", &tcp80) && !m("port 22 or 443", &tcp80));
        assert!(m("host 10.0.0.9 or 10.0.0.3", &udp53));
    }

    // ------------------------------------------------------------ randomized

    #[test]
    fn ast_agrees_with_program() {
        let filters = [
            "host 10.0.0.1",
            "src host 10.0.0.2 or dst host fd00::1",
            "net 10.0.0.0/8 and not port 22",
            "net fd00::/8 or net 10.244.0.0/16",
            "tcp and (port 80 or port 443) or udp and port 53",
            "icmp or arp or icmp6",
            "not (ip or ip6)",
            "src port 22 or dst port 65535 or port 0",
            "tcp src port 53 or 80 or udp dst port 0",
            "arp and host 169.254.1.1 or ip6 and net fe80::/10",
            "not not host 192.168.1.1",
            "net 0.0.0.0/0 and not net ::/0",
            "dst 10.0.0.0/31",
            "not (not tcp or not port 80)",
        ];
        let mut r = XorShift(0x9e37_79b9_7f4a_7c15);
        let packets: Vec<PacketMeta> = (0..3000).map(|_| random_packet(&mut r)).collect();
        for src in filters {
            let f = Filter::parse(src).unwrap();
            let prog = f.compile().unwrap();
            let hits = packets.iter().filter(|p| f.matches(p)).count();
            for p in &packets {
                assert_eq!(f.matches(p), prog_matches(&prog, p), "{src:?} on {p:?}");
            }
            // The packets exercise both outcomes of every filter.
            assert!(hits > 0 && hits < packets.len(), "{src:?}: {hits} hits");
        }
    }

    #[test]
    fn random_filters_roundtrip_and_agree() {
        let mut r = XorShift(0x1234_5678_9abc_def1);
        let packets: Vec<PacketMeta> = (0..200).map(|_| random_packet(&mut r)).collect();
        let mut parsed = 0;
        for _ in 0..20_000 {
            let src = random_filter(&mut r);
            let f = match Filter::parse(&src) {
                Ok(f) => f,
                Err(e) => {
                    assert!(e.pos <= src.chars().count(), "{src:?}: {e}");
                    assert!(!e.msg.is_empty());
                    continue;
                }
            };
            parsed += 1;
            let prog = f.compile().unwrap();
            assert!(prog.len as usize <= MAX_INSNS);
            let again =
                Filter::parse(&f.to_string()).unwrap_or_else(|e| panic!("{src:?} -> {f}: {e}"));
            assert_eq!(again.to_string(), f.to_string(), "{src:?}");
            assert_eq!(again.compile().unwrap(), prog, "{src:?}");
            for p in &packets {
                assert_eq!(f.matches(p), prog_matches(&prog, p), "{src:?} on {p:?}");
            }
        }
        assert!(parsed > 500, "only {parsed} random filters parsed");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut r = XorShift(42);
        for _ in 0..20_000 {
            let len = r.below(64);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match r.below(4) {
                    0 => r.pick(b"()!&| :/.0123456789abcdefhnostp"),
                    _ => r.next() as u8,
                })
                .collect();
            let s = String::from_utf8_lossy(&bytes);
            match Filter::parse(&s) {
                Ok(f) => {
                    let prog = f.compile().unwrap();
                    let p = random_packet(&mut r);
                    assert_eq!(f.matches(&p), prog_matches(&prog, &p));
                }
                Err(e) => {
                    assert!(e.pos <= s.chars().count());
                    let _ = e.with_caret();
                }
            }
            let words: Vec<String> = s.split(' ').map(String::from).collect();
            let _ = Filter::parse_words(&words);
        }
    }
}
