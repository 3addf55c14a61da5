//! What a register holds and how nft writes a comparison with it: the
//! operator implicit for a plain equality (`tcp dport 80`), explicit where a
//! mask comes first (`meta mark & 0x00020000 == 0x00000000`), prefixes for
//! masked addresses, flag names for conntrack states and TCP flags, and
//! `meta mark | 0x00010000` for a masked value that is set.

use super::value::{Kind, flag_names, format_value, prefix_text};

/// What an earlier expression left in a register.
#[derive(Debug, Clone)]
pub(super) struct Operand {
    pub name: String,
    pub kind: Kind,
    /// A `bitwise` on it: `(value & mask) ^ xor`.
    pub mask: Option<Vec<u8>>,
    pub xor: Option<Vec<u8>>,
    /// From an `immediate` (for `meta mark set 0x10` style statements).
    pub value: Option<Vec<u8>>,
}

impl Operand {
    pub fn loaded(name: String, kind: Kind) -> Operand {
        Operand {
            name,
            kind,
            mask: None,
            xor: None,
            value: None,
        }
    }

    pub fn immediate(value: Vec<u8>) -> Operand {
        Operand {
            value: Some(value),
            ..Operand::loaded("immediate".into(), Kind::Number)
        }
    }

    /// The register as the value of a statement setting a `kind`:
    /// `0x00000010`, `meta mark`, or nft's reading of `(x & mask) ^ xor`:
    /// `x & AND ^ XOR | OR` where AND keeps, XOR flips and OR sets bits.
    pub fn value_text(&self, kind: Kind) -> String {
        if let Some(v) = &self.value {
            return format_value(kind, v);
        }
        let (Some(mask), xor) = (&self.mask, &self.xor) else {
            return self.name.clone();
        };
        let xor = xor.clone().unwrap_or_else(|| vec![0; mask.len()]);
        let bytes = |f: &dyn Fn(u8, u8) -> u8| -> Vec<u8> {
            mask.iter().zip(&xor).map(|(&m, &x)| f(m, x)).collect()
        };
        let or = bytes(&|m, x| !m & x);
        let flip = bytes(&|m, x| m & x);
        let and = bytes(&|m, x| m | (!m & x));
        let mut text = self.name.clone();
        for (op, v, skip) in [("&", &and, 0xff), ("^", &flip, 0), ("|", &or, 0)] {
            if v.iter().any(|&b| b != skip) {
                text.push_str(&format!(" {op} {}", format_value(self.kind, v)));
            }
        }
        text
    }
}

/// A `cmp` operator (NFT_CMP_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn from_kernel(op: u32) -> Cmp {
        match op {
            0 => Cmp::Eq,
            1 => Cmp::Ne,
            2 => Cmp::Lt,
            3 => Cmp::Le,
            4 => Cmp::Gt,
            _ => Cmp::Ge,
        }
    }

    /// As written after a plain value (`==` left out).
    fn implicit(self) -> &'static str {
        match self {
            Cmp::Eq => "",
            other => other.explicit(),
        }
    }

    fn explicit(self) -> &'static str {
        match self {
            Cmp::Eq => "== ",
            Cmp::Ne => "!= ",
            Cmp::Lt => "< ",
            Cmp::Le => "<= ",
            Cmp::Gt => "> ",
            Cmp::Ge => ">= ",
        }
    }
}

fn is_zero(v: &[u8]) -> bool {
    v.iter().all(|&b| b == 0)
}

/// `NAME OP VALUE` as nft writes it.
pub(super) fn comparison_text(lhs: &Operand, op: Cmp, value: &[u8]) -> String {
    let (name, kind) = (&lhs.name, lhs.kind);
    let flags = matches!(kind, Kind::CtState | Kind::TcpFlags);
    match &lhs.mask {
        // Any of the flags: `ct state established,related`, `tcp flags syn`.
        Some(mask) if flags && op == Cmp::Ne && is_zero(value) => {
            format!("{name} {}", flag_names(kind, mask, ","))
        }
        // These of those: `tcp flags syn / syn,ack`.
        Some(mask) if flags && op == Cmp::Eq && !is_zero(value) => format!(
            "{name} {} / {}",
            flag_names(kind, value, ","),
            flag_names(kind, mask, ",")
        ),
        Some(mask) if matches!(kind, Kind::Ipv4 | Kind::Ipv6) => format!(
            "{name} {}{}",
            op.implicit(),
            prefix_text(kind, value, Some(mask))
        ),
        Some(mask) => format!(
            "{name} & {} {}{}",
            format_value(kind, mask),
            op.explicit(),
            format_value(kind, value)
        ),
        None if flags => format!("{name} {}{}", op.explicit(), flag_names(kind, value, " | ")),
        None if matches!(kind, Kind::Ipv4 | Kind::Ipv6) => {
            format!("{name} {}{}", op.implicit(), prefix_text(kind, value, None))
        }
        None => format!("{name} {}{}", op.implicit(), format_value(kind, value)),
    }
}

/// `tcp dport 1-1024`, `tcp dport != 1-1024`.
pub(super) fn range_text(name: &str, kind: Kind, op: Cmp, from: &[u8], to: &[u8]) -> String {
    format!(
        "{name} {}{}-{}",
        op.implicit(),
        format_value(kind, from),
        format_value(kind, to)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> Operand {
        Operand::loaded("meta mark".into(), Kind::Mark)
    }

    fn masked(mut o: Operand, mask: u32, xor: u32) -> Operand {
        o.mask = Some(mask.to_ne_bytes().to_vec());
        o.xor = Some(xor.to_ne_bytes().to_vec());
        o
    }

    fn ne(v: u32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }

    #[test]
    fn a_masked_mark_is_compared_with_an_explicit_operator() {
        let m = masked(mark(), 0x20000, 0);
        assert_eq!(
            comparison_text(&m, Cmp::Eq, &ne(0)),
            "meta mark & 0x00020000 == 0x00000000"
        );
        assert_eq!(
            comparison_text(&m, Cmp::Ne, &ne(0)),
            "meta mark & 0x00020000 != 0x00000000"
        );
        assert_eq!(
            comparison_text(&mark(), Cmp::Eq, &ne(0x10)),
            "meta mark 0x00000010"
        );
        let ct = Operand::loaded("ct mark".into(), Kind::Mark);
        assert_eq!(
            comparison_text(&masked(ct, 0xf, 0), Cmp::Eq, &ne(1)),
            "ct mark & 0x0000000f == 0x00000001"
        );
    }

    #[test]
    fn flags_are_named() {
        let state = masked(Operand::loaded("ct state".into(), Kind::CtState), 6, 0);
        assert_eq!(
            comparison_text(&state, Cmp::Ne, &ne(0)),
            "ct state established,related"
        );
        let plain = Operand::loaded("ct state".into(), Kind::CtState);
        assert_eq!(
            comparison_text(&plain, Cmp::Ne, &ne(6)),
            "ct state != established | related"
        );
        let mut tcp = Operand::loaded("tcp flags".into(), Kind::TcpFlags);
        assert_eq!(comparison_text(&tcp, Cmp::Eq, &[0x02]), "tcp flags == syn");
        tcp.mask = Some(vec![0x12]);
        assert_eq!(comparison_text(&tcp, Cmp::Ne, &[0]), "tcp flags syn,ack");
        assert_eq!(
            comparison_text(&tcp, Cmp::Eq, &[0x02]),
            "tcp flags syn / syn,ack"
        );
    }

    #[test]
    fn a_set_value_reads_as_nft_reads_the_bitwise() {
        // meta mark set meta mark | 0x10000, & 0xfff1ffff, ^ 0x40000, and both.
        assert_eq!(
            masked(mark(), 0xfffe_ffff, 0x10000).value_text(Kind::Mark),
            "meta mark | 0x00010000"
        );
        assert_eq!(
            masked(mark(), 0xfff1_ffff, 0).value_text(Kind::Mark),
            "meta mark & 0xfff1ffff"
        );
        assert_eq!(
            masked(mark(), u32::MAX, 0x40000).value_text(Kind::Mark),
            "meta mark ^ 0x00040000"
        );
        assert_eq!(
            masked(mark(), 0xfff3_ffff, 0x40000).value_text(Kind::Mark),
            "meta mark & 0xfff7ffff | 0x00040000"
        );
        assert_eq!(
            Operand::immediate(ne(0x10)).value_text(Kind::Mark),
            "0x00000010"
        );
        assert_eq!(mark().value_text(Kind::Mark), "meta mark");
    }

    #[test]
    fn ranges() {
        let p = |v: u16| v.to_be_bytes();
        assert_eq!(
            range_text("tcp dport", Kind::Port, Cmp::Ne, &p(1), &p(1024)),
            "tcp dport != 1-1024"
        );
        assert_eq!(
            range_text("tcp dport", Kind::Port, Cmp::Eq, &p(1), &p(1024)),
            "tcp dport 1-1024"
        );
    }
}
