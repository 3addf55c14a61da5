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
//! UDP packets only; `icmp` is ICMP of IPv4 (as in tcpdump), `icmp6` is IP
//! protocol 58 (ICMPv6); `ip`, `ip6`, `arp` test the layer 3 kind; `tcp port 80` means
//! `tcp and port 80`.
//!
//! The kernel runs at most [`MAX_INSNS`](tracer_common::filter::MAX_INSNS)
//! instructions: `host`/`net`/`port` cost 3 (1 with `src`/`dst`), `icmp` 3, the
//! other protocols 1, and each `and`/`or`/`not` 1. Longer filters are rejected
//! when parsed.
//!
//! The parts: `lexer` splits the text into tokens, `parser` builds the `ast`
//! (reading addresses and ports with `values`), `compile` turns it into a
//! [`FilterProg`], with the nets `quick` finds that a packet needs an address
//! in; `eval` (tests only) matches the AST itself.

mod ast;
mod compile;
#[cfg(test)]
mod eval;
mod lexer;
mod parser;
mod quick;
#[cfg(test)]
mod tests;
mod values;

use std::fmt;
use std::str::FromStr;

use tracer_common::filter::FilterProg;

use ast::Expr;

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

    /// The same error, shown against `input`.
    fn in_input(mut self, input: &str) -> Self {
        self.input = input.to_string();
        self
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
        Self::parse_inner(src).map_err(|e| e.in_input(src))
    }

    /// Parses the words of a FILTER given as several command line arguments.
    pub fn parse_words(words: &[String]) -> Result<Filter, FilterError> {
        Self::parse(&words.join(" "))
    }

    fn parse_inner(src: &str) -> Result<Filter, FilterError> {
        let expr = parser::parse(src)?;
        compile::compile(expr.as_ref())?;
        let source = src.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(Filter { expr, source })
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
        compile::compile(self.expr.as_ref()).map_err(|e| e.in_input(&self.source))
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
