//! The values of primitives: addresses, networks and ports, read from one word.

use std::net::IpAddr;

use super::FilterError;
use super::ast::{Dir, Net, Prim};

/// The keyword that says what kind of value follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Host,
    Net,
    Port,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Host => "host",
            Kind::Net => "net",
            Kind::Port => "port",
        }
    }

    pub(super) fn wants(self) -> &'static str {
        match self {
            Kind::Host => "an IPv4 or IPv6 address",
            Kind::Net => "a network such as 10.0.0.0/8 or fd00::/8",
            Kind::Port => "a port number (0-65535)",
        }
    }

    /// The primitive testing the `dir` side(s) for value `v`, found at `pos`.
    pub(super) fn prim(self, dir: Dir, v: &str, pos: usize) -> Result<Prim, FilterError> {
        Ok(match self {
            Kind::Host => Prim::Host(dir, parse_host(v, pos)?),
            Kind::Net => Prim::Net(dir, parse_net(v, pos)?),
            Kind::Port => Prim::Port(dir, parse_port(v, pos)?),
        })
    }
}

/// Whether a word is a value (address, network, number) rather than a keyword.
pub(super) fn looks_like_value(w: &str) -> bool {
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
    net.prefix = parse_prefix_len(len, net.v6, pos + a.chars().count() + 1)?;
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

/// The `len` of a network `ADDR/len`, found at `pos`.
fn parse_prefix_len(len: &str, v6: bool, pos: usize) -> Result<u8, FilterError> {
    let max = Net::max_prefix(v6);
    let prefix = if !len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit()) {
        len.parse::<u8>().ok().filter(|&p| p <= max)
    } else {
        None
    };
    prefix.ok_or_else(|| {
        let fam = if v6 { 6 } else { 4 };
        FilterError::new(
            pos,
            format!("bad prefix length \"/{len}\": an IPv{fam} prefix is /0 to /{max}"),
        )
    })
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
