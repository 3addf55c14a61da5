//! Tokens parsed into the AST, by recursive descent over the grammar in the
//! module doc of `filter`.

use tracer_common::filter::MAX_INSNS;

use super::FilterError;
use super::ast::{Dir, Expr, Prim};
use super::compile::COST_HINT;
use super::lexer::{Tok, Token, tokenize};
use super::values::{Kind, looks_like_value};

/// Deepest nesting of `not` and parentheses the parser accepts.
const MAX_NESTING: usize = 64;

const PRIMITIVES: &str = "host, net, port, src, dst, tcp, udp, icmp, icmp6, arp, ip, ip6";

/// tcpdump keywords we recognise only to say that they are unsupported.
#[rustfmt::skip]
const TCPDUMP_ONLY: &[&str] = &[
    "ether", "vlan", "mpls", "portrange", "proto", "less", "greater", "gateway", "broadcast",
    "multicast", "sctp", "rarp", "inbound", "outbound", "len", "ifname", "on", "tcpflags",
];

/// Parses `src`; `None` for empty or blank text (match everything).
pub(super) fn parse(src: &str) -> Result<Option<Expr>, FilterError> {
    let (toks, end) = tokenize(src)?;
    if toks.is_empty() {
        return Ok(None);
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
    p.expect_end()?;
    Ok(Some(expr))
}

/// The qualifiers of a primitive with a value, e.g. `tcp src port`; a bare
/// value later in the filter repeats the last ones.
#[derive(Clone, Copy, Debug)]
struct Qual {
    proto: Option<Prim>,
    dir: Dir,
    kind: Kind,
}

impl Qual {
    /// Rejects an address of the wrong family for the protocol, as in
    /// `ip6 host 10.0.0.1`; `v` is the value `prim` was read from, at `pos`.
    fn check_family(&self, prim: Prim, v: &str, pos: usize) -> Result<(), FilterError> {
        let (Some(p), Prim::Host(_, n) | Prim::Net(_, n)) = (self.proto, prim) else {
            return Ok(());
        };
        let v6 = match p {
            Prim::Ip | Prim::Arp => false,
            Prim::Ip6 | Prim::Icmp6 => true,
            _ => return Ok(()),
        };
        if v6 == n.v6 {
            return Ok(());
        }
        let fam = if v6 { 6 } else { 4 };
        Err(FilterError::new(
            pos,
            format!(
                "{p} {} needs an IPv{fam} address, not \"{v}\"",
                self.kind.name()
            ),
        ))
    }
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

    /// The primitive `p` from `pos`, counted against the kernel's limit so
    /// that huge inputs fail before they are compiled.
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

    /// Fails unless every token was parsed.
    fn expect_end(&self) -> Result<(), FilterError> {
        let Some(tok) = self.peek() else {
            return Ok(());
        };
        let msg = if *tok == Tok::RParen {
            "unmatched \")\"".to_string()
        } else {
            format!(
                "expected \"and\", \"or\" or the end of the filter, found {}",
                self.found()
            )
        };
        Err(FilterError::new(self.pos(), msg))
    }

    fn parse_or(&mut self) -> Result<Expr, FilterError> {
        self.parse_chain(Tok::Or, Self::parse_and, Expr::Or)
    }

    fn parse_and(&mut self) -> Result<Expr, FilterError> {
        self.parse_chain(Tok::And, Self::parse_unary, Expr::And)
    }

    /// Parses `operand { op operand }`, joined from the left with `join`.
    fn parse_chain(
        &mut self,
        op: Tok,
        operand: fn(&mut Self) -> Result<Expr, FilterError>,
        join: fn(Box<Expr>, Box<Expr>) -> Expr,
    ) -> Result<Expr, FilterError> {
        let mut e = operand(self)?;
        while self.peek() == Some(&op) {
            self.i += 1;
            e = join(Box::new(e), Box::new(operand(self)?));
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
            Some(Tok::LParen) => self.parse_group()?,
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.parse_prim(&w)?
            }
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

    /// Parses `"(" or ")"`, starting at the `(`.
    fn parse_group(&mut self) -> Result<Expr, FilterError> {
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
        Ok(e)
    }

    /// Parses a primitive starting at the word `w`.
    fn parse_prim(&mut self, w: &str) -> Result<Expr, FilterError> {
        let pos = self.pos();
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
                Some(q) if looks_like_value(w) => self.parse_value(q),
                _ => Err(unknown_word(w, pos)),
            },
        }
    }

    /// Parses `[src|dst] [host|net|port]` (at least one of them).
    fn parse_qual(&mut self, proto: Option<(Prim, &str)>) -> Result<Qual, FilterError> {
        let dir = self.parse_dir();
        let kind_pos = self.pos();
        let kind = self.parse_kind(dir)?;
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

    /// Parses an optional `src` or `dst`.
    fn parse_dir(&mut self) -> Dir {
        let dir = match self.peek_keyword().as_deref() {
            Some("src") => Dir::Src,
            Some("dst") => Dir::Dst,
            _ => return Dir::Any,
        };
        self.i += 1;
        dir
    }

    /// Parses `host`, `net` or `port`. After `src`/`dst`, an address alone
    /// (`src 10.0.0.1`, `dst 10.0.0.0/8`) means `host` or `net`; it is left
    /// for [`Parser::parse_value`].
    fn parse_kind(&mut self, dir: Dir) -> Result<Kind, FilterError> {
        let kind = match (self.peek_keyword().as_deref(), self.peek()) {
            (Some("host"), _) => Kind::Host,
            (Some("net"), _) => Kind::Net,
            (Some("port"), _) => Kind::Port,
            (_, Some(Tok::Word(w))) if dir != Dir::Any && looks_like_value(w) => {
                return Ok(if w.contains('/') {
                    Kind::Net
                } else {
                    Kind::Host
                });
            }
            _ => {
                return Err(FilterError::new(
                    self.pos(),
                    format!(
                        "expected host, net, port or an address after \"{}\", found {}",
                        dir.prefix().trim_end(),
                        self.found()
                    ),
                ));
            }
        };
        self.i += 1;
        Ok(kind)
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
        let prim = q.kind.prim(q.dir, &v, pos)?;
        q.check_family(prim, &v, pos)?;
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
