//! The AST compiled into the postfix program that the kernel evaluates.

use tracer_common::filter::{FilterInsn, FilterProg, MAX_DEPTH, MAX_INSNS, op};
use tracer_common::{l3, proto};

use super::FilterError;
use super::ast::{Dir, Expr, Net, Prim};

pub(super) const COST_HINT: &str = "host/net/port cost 3 instructions (1 with src/dst), icmp 7, \
                                    other protocols 1, each and/or/not 1";

/// Instructions, each with the character offset of the primitive it came from.
type Code = Vec<(FilterInsn, usize)>;

/// The program of `expr`; `None` matches everything. Fails when the program is
/// too long or too deep for the kernel.
pub(super) fn compile(expr: Option<&Expr>) -> Result<FilterProg, FilterError> {
    let mut code = Code::new();
    if let Some(e) = expr {
        e.emit(&mut code);
    }
    check_length(&code)?;
    check_depth(&code)?;
    let mut prog = FilterProg::MATCH_ALL;
    prog.len = code.len() as u32;
    for (slot, (insn, _)) in prog.insns.iter_mut().zip(code) {
        *slot = insn;
    }
    prog.quick = super::quick::quick_nets(expr);
    Ok(prog)
}

fn check_length(code: &Code) -> Result<(), FilterError> {
    if code.len() <= MAX_INSNS {
        return Ok(());
    }
    Err(FilterError::new(
        code[MAX_INSNS].1,
        format!(
            "filter too long: it needs {} instructions and the kernel runs at most {MAX_INSNS} ({COST_HINT})",
            code.len()
        ),
    ))
}

/// Checks that the evaluator's stack never holds more than [`MAX_DEPTH`] values.
fn check_depth(code: &Code) -> Result<(), FilterError> {
    let mut depth = 0u32;
    for (insn, pos) in code {
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
    Ok(())
}

fn insn(op: u32, arg: u32) -> FilterInsn {
    FilterInsn {
        op,
        arg,
        ..Default::default()
    }
}

/// Appends the and/or/not `op`, placed where the instruction before it came from.
fn push_logic(code: &mut Code, op: u32) {
    let pos = code.last().map_or(0, |l| l.1);
    code.push((insn(op, 0), pos));
}

impl Expr {
    fn emit(&self, code: &mut Code) {
        match self {
            Expr::Prim(p, pos) => code.extend(p.insns().into_iter().map(|i| (i, *pos))),
            Expr::Not(e) => {
                // `not not x` is `x`.
                let (mut inner, mut negate) = (&**e, true);
                while let Expr::Not(e) = inner {
                    inner = e;
                    negate = !negate;
                }
                inner.emit(code);
                if negate {
                    push_logic(code, op::NOT);
                }
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.emit(code);
                b.emit(code);
                let op = if matches!(self, Expr::And(..)) {
                    op::AND
                } else {
                    op::OR
                };
                push_logic(code, op);
            }
        }
    }
}

/// Tests of the source and/or the destination side, as `dir` says.
fn sides(dir: Dir, src: FilterInsn, dst: FilterInsn) -> Vec<FilterInsn> {
    match dir {
        Dir::Src => vec![src],
        Dir::Dst => vec![dst],
        Dir::Any => vec![src, dst, insn(op::OR, 0)],
    }
}

impl Prim {
    /// The instructions of this primitive, in postfix order.
    fn insns(&self) -> Vec<FilterInsn> {
        match *self {
            Prim::Host(d, n) | Prim::Net(d, n) => {
                sides(d, n.insn(op::SRC_NET), n.insn(op::DST_NET))
            }
            Prim::Port(d, p) => sides(d, insn(op::SPORT, p.into()), insn(op::DPORT, p.into())),
            Prim::Tcp => vec![insn(op::PROTO, proto::TCP.into())],
            Prim::Udp => vec![insn(op::PROTO, proto::UDP.into())],
            Prim::Icmp6 => vec![insn(op::PROTO, proto::ICMPV6.into())],
            // ICMP of IPv4, as in tcpdump (`icmp6` for IPv6).
            Prim::Icmp => vec![
                insn(op::L3, l3::IPV4.into()),
                insn(op::PROTO, proto::ICMP.into()),
                insn(op::AND, 0),
            ],
            Prim::Ip => vec![insn(op::L3, l3::IPV4.into())],
            Prim::Ip6 => vec![insn(op::L3, l3::IPV6.into())],
            Prim::Arp => vec![insn(op::L3, l3::ARP.into())],
        }
    }
}

impl Net {
    /// The `SRC_NET`/`DST_NET` instruction `op` testing this prefix.
    pub(super) fn insn(&self, op: u32) -> FilterInsn {
        let (addr, mask) = self.words();
        FilterInsn {
            op,
            arg: if self.v6 { 6 } else { 4 },
            addr,
            mask,
        }
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
}
