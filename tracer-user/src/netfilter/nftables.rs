//! nf_tables (`nft`, and `iptables-nft`, whose rules live here too): tables,
//! chains and rules from nfnetlink dumps, decoded into [`Table`]s.
//!
//! Integers in nf_tables attributes are big-endian. Rules are lists of
//! expressions; a small register tracker turns the common ones back into
//! `nft list` style text (`ip saddr 10.0.0.0/8 counter drop`). `iptables-nft`
//! keeps what it cannot translate as xtables `match` / `target` expressions,
//! `-m comment` among them.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::inventory::{Backend, Chain, Counters, Family, Hook, Inventory, Rule, Table, Verdict};
use super::xtables::{proto_name, target_verdict};
use crate::kernel::netlink::{Socket, attrs};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_COUNTERS: u16 = 8;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;

// --- the netlink socket ------------------------------------------------------

impl Socket {
    /// Sends a request and collects the payloads of its replies of type `want`
    /// until DONE (dumps) or the ACK. An interrupted dump (the ruleset changed
    /// meanwhile) is `ErrorKind::Interrupted`.
    fn nft_request(&self, msg_type: u16, flags: u16, want: u16) -> io::Result<Vec<Vec<u8>>> {
        let seq = 1;
        self.send(&request_message(msg_type, flags, seq))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.recv(&mut buf)?;
            for msg in messages(&buf[..n]) {
                let msg = msg?;
                if msg.seq != seq {
                    continue;
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.ty {
                    NLMSG_DONE => return finish(out, interrupted),
                    NLMSG_ERROR => {
                        let code = msg
                            .payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
                            .unwrap_or(-libc::EBADMSG);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return finish(out, interrupted);
                    }
                    ty if ty == nft_type(want) => out.push(msg.payload.to_vec()),
                    _ => {}
                }
            }
        }
    }
}

fn finish(out: Vec<Vec<u8>>, interrupted: bool) -> io::Result<Vec<Vec<u8>>> {
    if interrupted {
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "dump interrupted",
        ))
    } else {
        Ok(out)
    }
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// nlmsghdr + nfgenmsg (all families, NFNETLINK_V0).
fn request_message(msg_type: u16, flags: u16, seq: u32) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + NFGENMSG_LEN) as u32;
    let mut m = Vec::with_capacity(len as usize);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&nft_type(msg_type).to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m
}

struct Message<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The netlink messages of one datagram.
fn messages(mut b: &[u8]) -> impl Iterator<Item = io::Result<Message<'_>>> {
    std::iter::from_fn(move || {
        if b.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            b = &[];
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink reply",
            )));
        }
        let msg = Message {
            ty: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            payload: &b[NLMSG_HDRLEN..len],
        };
        b = &b[((len + 3) & !3).min(b.len())..];
        Some(Ok(msg))
    })
}

// --- reading -----------------------------------------------------------------

/// Adds every nf_tables table of this thread's network namespace.
pub(crate) fn read_into(inv: &mut Inventory) {
    match read_ruleset() {
        Ok(tables) => inv.tables.extend(tables),
        Err(e) => inv.errors.push(format!("nf_tables: {e}")),
    }
}

fn generation(sock: &Socket) -> io::Result<u32> {
    let replies = sock.nft_request(NFT_MSG_GETGEN, NLM_F_ACK, NFT_MSG_NEWGEN)?;
    replies
        .iter()
        .find_map(|p| be32(attr(attrs(p.get(NFGENMSG_LEN..)?), NFTA_GEN_ID)?))
        .ok_or_else(|| io::Error::other("no generation id"))
}

/// Tables, chains and rules from three dumps of one ruleset generation.
fn read_ruleset() -> io::Result<Vec<Table>> {
    let sock = Socket::open_protocol(libc::NETLINK_NETFILTER)?;
    for _ in 0..5 {
        let before = generation(&sock)?;
        let dumps = (|| {
            Ok::<_, io::Error>((
                sock.nft_request(NFT_MSG_GETTABLE, NLM_F_DUMP, NFT_MSG_NEWTABLE)?,
                sock.nft_request(NFT_MSG_GETCHAIN, NLM_F_DUMP, NFT_MSG_NEWCHAIN)?,
                sock.nft_request(NFT_MSG_GETRULE, NLM_F_DUMP, NFT_MSG_NEWRULE)?,
            ))
        })();
        let (tables, chains, rules) = match dumps {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        if generation(&sock)? == before {
            return Ok(assemble(&tables, &chains, &rules));
        }
    }
    Err(io::Error::other(
        "the ruleset kept changing while being read",
    ))
}

/// Puts chains into their tables and rules into their chains, in dump order.
fn assemble(tables: &[Vec<u8>], chains: &[Vec<u8>], rules: &[Vec<u8>]) -> Vec<Table> {
    let mut out: Vec<Table> = tables.iter().filter_map(|m| parse_table(m)).collect();
    let find = |out: &mut Vec<Table>, family, name: &str| -> Option<usize> {
        out.iter()
            .position(|t| t.family == family && t.name == name)
    };
    for (family, table, chain) in chains.iter().filter_map(|m| parse_chain(m)) {
        if let Some(t) = find(&mut out, family, &table) {
            out[t].chains.push(chain);
        }
    }
    for (family, table, chain, rule) in rules.iter().filter_map(|m| parse_rule(m)) {
        let Some(t) = find(&mut out, family, &table) else {
            continue;
        };
        if let Some(c) = out[t].chains.iter_mut().find(|c| c.name == chain) {
            c.rules.push(rule);
        }
    }
    out
}

// --- attributes --------------------------------------------------------------

fn attr<'a>(mut it: impl Iterator<Item = (u16, &'a [u8])>, ty: u16) -> Option<&'a [u8]> {
    it.find(|(t, _)| *t == ty).map(|(_, d)| d)
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

fn string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The family of a reply and its attributes.
fn split(msg: &[u8]) -> Option<(Family, &[u8])> {
    let family = Family::from_nfproto(*msg.first()?)?;
    Some((family, msg.get(NFGENMSG_LEN..)?))
}

fn counters(b: &[u8]) -> Option<Counters> {
    Some(Counters {
        packets: be64(attr(attrs(b), NFTA_COUNTER_PACKETS)?)?,
        bytes: be64(attr(attrs(b), NFTA_COUNTER_BYTES)?)?,
    })
}

// --- tables, chains, rules ---------------------------------------------------

fn parse_table(msg: &[u8]) -> Option<Table> {
    let (family, a) = split(msg)?;
    Some(Table {
        backend: Backend::Nft,
        family,
        name: string(attr(attrs(a), NFTA_TABLE_NAME)?),
        chains: vec![],
    })
}

fn hook_of(family: Family, n: u32) -> Option<Hook> {
    match family {
        Family::Netdev => match n {
            0 => Some(Hook::Ingress),
            1 => Some(Hook::Egress),
            _ => None,
        },
        // NF_ARP_IN, NF_ARP_OUT, NF_ARP_FORWARD
        Family::Arp => [Hook::Input, Hook::Output, Hook::Forward]
            .get(n as usize)
            .copied(),
        _ => Hook::from_inet(n),
    }
}

fn parse_chain(msg: &[u8]) -> Option<(Family, String, Chain)> {
    let (family, a) = split(msg)?;
    let mut table = None;
    let mut chain = Chain {
        name: String::new(),
        hook: None,
        priority: None,
        policy: None,
        policy_counters: None,
        rules: vec![],
    };
    for (ty, d) in attrs(a) {
        match ty {
            NFTA_CHAIN_TABLE => table = Some(string(d)),
            NFTA_CHAIN_NAME => chain.name = string(d),
            NFTA_CHAIN_HOOK => {
                chain.hook = attr(attrs(d), NFTA_HOOK_HOOKNUM)
                    .and_then(be32)
                    .and_then(|n| hook_of(family, n));
                chain.priority = attr(attrs(d), NFTA_HOOK_PRIORITY)
                    .and_then(be32)
                    .map(|p| p as i32);
            }
            NFTA_CHAIN_POLICY => chain.policy = be32(d).map(|v| verdict_of_code(v as i32, None)),
            NFTA_CHAIN_COUNTERS => chain.policy_counters = counters(d),
            _ => {}
        }
    }
    Some((family, table?, chain))
}

fn parse_rule(msg: &[u8]) -> Option<(Family, String, String, Rule)> {
    let (family, a) = split(msg)?;
    let table = string(attr(attrs(a), NFTA_RULE_TABLE)?);
    let chain = string(attr(attrs(a), NFTA_RULE_CHAIN)?);
    let handle = attr(attrs(a), NFTA_RULE_HANDLE).and_then(be64);
    let mut d = Decoder::new(family);
    for elem in attr(attrs(a), NFTA_RULE_EXPRESSIONS)
        .map(attrs)
        .into_iter()
        .flatten()
        .filter(|(t, _)| *t == NFTA_LIST_ELEM)
    {
        let name = attr(attrs(elem.1), NFTA_EXPR_NAME)
            .map(string)
            .unwrap_or_default();
        let data = attr(attrs(elem.1), NFTA_EXPR_DATA).unwrap_or(&[]);
        d.expression(&name, data);
    }
    if let Some(c) = attr(attrs(a), NFTA_RULE_USERDATA).and_then(udata_comment) {
        d.comment = Some(c);
    }
    let rule = d.finish(handle.map(|h| h.to_string()).unwrap_or_default());
    Some((family, table, chain, rule))
}

/// The comment TLV of rule user data (libnftnl's `NFTNL_UDATA_RULE_COMMENT`).
fn udata_comment(mut b: &[u8]) -> Option<String> {
    while b.len() >= 2 {
        let (ty, len) = (b[0], b[1] as usize);
        let value = b.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            return Some(string(value));
        }
        b = &b[2 + len..];
    }
    None
}

fn verdict_of_code(code: i32, chain: Option<String>) -> Verdict {
    // Positive verdicts may carry a queue number in their upper 16 bits.
    let code = if code >= 0 { code & 0xff } else { code };
    match code {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        3 => Verdict::Queue,
        -1 => Verdict::Continue,
        -2 => Verdict::Other("break".into()),
        -3 => Verdict::Jump(chain.unwrap_or_default()),
        -4 => Verdict::Goto(chain.unwrap_or_default()),
        -5 => Verdict::Return,
        n => Verdict::Other(format!("verdict {n}")),
    }
}

/// An immediate's verdict (`NFTA_DATA_VERDICT`).
fn data_verdict(data: &[u8]) -> Option<Verdict> {
    let v = attr(attrs(data), NFTA_DATA_VERDICT)?;
    let code = be32(attr(attrs(v), NFTA_VERDICT_CODE)?)? as i32;
    let chain = attr(attrs(v), NFTA_VERDICT_CHAIN).map(string);
    Some(verdict_of_code(code, chain))
}

// --- expressions -------------------------------------------------------------

/// How to print the values a register holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// An address, possibly only its first bytes were loaded (a prefix).
    Ipv4,
    Ipv6,
    Iface,
    Proto,
    Port,
    NfProto,
    CtState,
    /// A host-endian number (marks).
    Number,
    Bytes,
}

/// What an earlier expression left in a register.
#[derive(Debug, Clone)]
struct Operand {
    name: String,
    kind: Kind,
    mask: Option<Vec<u8>>,
    /// From an `immediate` (for `meta mark set 0x10` style statements).
    value: Option<Vec<u8>>,
}

/// Turns a rule's expressions into text, verdict, counters and comment.
struct Decoder {
    family: Family,
    regs: HashMap<u32, Operand>,
    parts: Vec<String>,
    verdict: Option<Verdict>,
    counters: Option<Counters>,
    comment: Option<String>,
    /// Transport protocol the rule compared earlier, to name ports `tcp dport`.
    l4: Option<String>,
    /// For inet tables: the layer 3 protocol the rule compared earlier.
    l3: Option<Family>,
}

fn u32_attr(data: &[u8], ty: u16) -> Option<u32> {
    be32(attr(attrs(data), ty)?)
}

fn value_attr(data: &[u8], ty: u16) -> Option<Vec<u8>> {
    attr(attrs(attr(attrs(data), ty)?), NFTA_DATA_VALUE).map(<[u8]>::to_vec)
}

impl Decoder {
    fn new(family: Family) -> Self {
        Decoder {
            family,
            regs: HashMap::new(),
            parts: vec![],
            verdict: None,
            counters: None,
            comment: None,
            l4: None,
            l3: None,
        }
    }

    fn load(&mut self, dreg: Option<u32>, name: String, kind: Kind) {
        if let Some(r) = dreg {
            let op = Operand {
                name,
                kind,
                mask: None,
                value: None,
            };
            self.regs.insert(r, op);
        }
    }

    fn terminal(&mut self, text: &str, verdict: Verdict) {
        self.parts.push(text.to_string());
        self.verdict = Some(verdict);
    }

    fn expression(&mut self, name: &str, d: &[u8]) {
        match name {
            "payload" => self.payload(d),
            "meta" => self.meta(d),
            "ct" => self.ct(d),
            "cmp" => self.cmp(d),
            "bitwise" => self.bitwise(d),
            "lookup" => self.lookup(d),
            "immediate" => self.immediate(d),
            "counter" => {
                self.counters = counters(d);
                self.parts.push("counter".into());
            }
            "match" => self.xt_match(d),
            "target" => {
                let name = attr(attrs(d), 1).map(string).unwrap_or_default();
                self.parts.push(format!("xt target {name:?}"));
                if let Some(v) = target_verdict(&name) {
                    self.verdict = Some(v);
                }
            }
            "reject" => self.terminal("reject", Verdict::Reject),
            "queue" => self.terminal("queue", Verdict::Queue),
            "nat" => {
                // NFTA_NAT_TYPE: NFT_NAT_SNAT 0, NFT_NAT_DNAT 1
                let kind = if u32_attr(d, 1) == Some(1) {
                    "dnat"
                } else {
                    "snat"
                };
                self.terminal(kind, Verdict::Other(kind.into()));
            }
            "masq" => self.terminal("masquerade", Verdict::Other("masquerade".into())),
            "redir" => self.terminal("redirect", Verdict::Other("redirect".into())),
            "tproxy" => self.terminal("tproxy", Verdict::Other("tproxy".into())),
            other => self.parts.push(other.to_string()),
        }
    }

    fn network(&self) -> Option<Family> {
        match self.family {
            Family::Ipv4 | Family::Ipv6 => Some(self.family),
            _ => self.l3,
        }
    }

    fn payload(&mut self, d: &[u8]) {
        // NFTA_PAYLOAD_DREG 1, BASE 2, OFFSET 3, LEN 4, SREG 5
        let (base, off, len) = (
            u32_attr(d, 2).unwrap_or(u32::MAX),
            u32_attr(d, 3).unwrap_or(0),
            u32_attr(d, 4).unwrap_or(0),
        );
        if u32_attr(d, 5).is_some() {
            self.parts.push(format!("@{base},{off},{len} set"));
            return;
        }
        let v4 = self.network() == Some(Family::Ipv4) || (self.network().is_none() && len <= 4);
        let (name, kind) = match (base, off, len) {
            (1, 12, 1..=4) if v4 => ("ip saddr".into(), Kind::Ipv4),
            (1, 16, 1..=4) if v4 => ("ip daddr".into(), Kind::Ipv4),
            (1, 9, 1) if v4 => ("ip protocol".into(), Kind::Proto),
            (1, 8, 1..=16) if !v4 => ("ip6 saddr".into(), Kind::Ipv6),
            (1, 24, 1..=16) if !v4 => ("ip6 daddr".into(), Kind::Ipv6),
            (1, 6, 1) if !v4 => ("ip6 nexthdr".into(), Kind::Proto),
            (2, 0, 2) => (
                format!("{} sport", self.l4.as_deref().unwrap_or("th")),
                Kind::Port,
            ),
            (2, 2, 2) => (
                format!("{} dport", self.l4.as_deref().unwrap_or("th")),
                Kind::Port,
            ),
            (0, 12, 2) => ("ether type".into(), Kind::Bytes),
            _ => {
                let bits = |n: u32| u64::from(n) * 8;
                (
                    format!("@{},{},{}", base_name(base), bits(off), bits(len)),
                    Kind::Bytes,
                )
            }
        };
        self.load(u32_attr(d, 1), name, kind);
    }

    fn meta(&mut self, d: &[u8]) {
        // NFTA_META_DREG 1, KEY 2, SREG 3
        let key = u32_attr(d, 2).unwrap_or(u32::MAX);
        let (name, kind) = match key {
            1 => ("protocol", Kind::Bytes),
            3 => ("mark", Kind::Number),
            4 => ("iif", Kind::Number),
            5 => ("oif", Kind::Number),
            6 => ("iifname", Kind::Iface),
            7 => ("oifname", Kind::Iface),
            15 => ("nfproto", Kind::NfProto),
            16 => ("l4proto", Kind::Proto),
            19 => ("pkttype", Kind::Bytes),
            _ => ("", Kind::Bytes),
        };
        // nft leaves out "meta" for interfaces.
        let name = match key {
            4..=7 => name.to_string(),
            _ if name.is_empty() => format!("meta {key}"),
            _ => format!("meta {name}"),
        };
        if let Some(sreg) = u32_attr(d, 3) {
            let value = self
                .regs
                .get(&sreg)
                .map(|o| self.set_value(o))
                .unwrap_or_default();
            self.parts.push(format!("{name} set{value}"));
            return;
        }
        self.load(u32_attr(d, 1), name, kind);
    }

    fn ct(&mut self, d: &[u8]) {
        // NFTA_CT_DREG 1, KEY 2, DIRECTION 3, SREG 4
        let key = u32_attr(d, 2).unwrap_or(u32::MAX);
        let (name, kind) = match key {
            0 => ("state", Kind::CtState),
            1 => ("direction", Kind::Bytes),
            2 => ("status", Kind::Number),
            3 => ("mark", Kind::Number),
            _ => ("", Kind::Bytes),
        };
        let name = if name.is_empty() {
            format!("ct {key}")
        } else {
            format!("ct {name}")
        };
        if let Some(sreg) = u32_attr(d, 4) {
            let value = self
                .regs
                .get(&sreg)
                .map(|o| self.set_value(o))
                .unwrap_or_default();
            self.parts.push(format!("{name} set{value}"));
            return;
        }
        self.load(u32_attr(d, 1), name, kind);
    }

    /// ` 0x10` for a register holding an immediate value, else ` NAME`.
    fn set_value(&self, o: &Operand) -> String {
        match &o.value {
            Some(v) => format!(" {}", format_value(Kind::Number, v)),
            None => format!(" {}", o.name),
        }
    }

    fn cmp(&mut self, d: &[u8]) {
        // NFTA_CMP_SREG 1, OP 2, DATA 3
        let Some(lhs) = u32_attr(d, 1).and_then(|r| self.regs.get(&r)).cloned() else {
            self.parts.push("cmp".into());
            return;
        };
        let value = value_attr(d, 3).unwrap_or_default();
        let op = match u32_attr(d, 2).unwrap_or(0) {
            0 => "",
            1 => "!= ",
            2 => "< ",
            3 => "<= ",
            4 => "> ",
            _ => ">= ",
        };
        if op.is_empty() {
            self.remember_protocols(&lhs, &value);
        }
        let text = match (&lhs.mask, lhs.kind) {
            (Some(mask), Kind::CtState) if value.iter().all(|&b| b == 0) && op == "!= " => {
                format!("{} {}", lhs.name, format_value(Kind::CtState, mask))
            }
            (Some(mask), Kind::Ipv4 | Kind::Ipv6) => {
                format!(
                    "{} {op}{}",
                    lhs.name,
                    prefix_text(lhs.kind, &value, Some(mask))
                )
            }
            (Some(mask), kind) => format!(
                "{} & {} {op}{}",
                lhs.name,
                format_value(Kind::Number, mask),
                format_value(kind, &value)
            ),
            (None, Kind::Ipv4 | Kind::Ipv6) => {
                format!("{} {op}{}", lhs.name, prefix_text(lhs.kind, &value, None))
            }
            (None, kind) => format!("{} {op}{}", lhs.name, format_value(kind, &value)),
        };
        self.parts.push(text);
    }

    fn remember_protocols(&mut self, lhs: &Operand, value: &[u8]) {
        match lhs.kind {
            Kind::Proto if value.len() == 1 => self.l4 = Some(proto_name(value[0])),
            Kind::NfProto if value.len() == 1 => self.l3 = Family::from_nfproto(value[0]),
            _ => {}
        }
    }

    fn bitwise(&mut self, d: &[u8]) {
        // NFTA_BITWISE_SREG 1, DREG 2, LEN 3, MASK 4, XOR 5
        let (Some(sreg), Some(dreg)) = (u32_attr(d, 1), u32_attr(d, 2)) else {
            return;
        };
        match self.regs.get(&sreg).cloned() {
            Some(mut op) => {
                op.mask = value_attr(d, 4);
                self.regs.insert(dreg, op);
            }
            None => self.parts.push("bitwise".into()),
        }
    }

    fn lookup(&mut self, d: &[u8]) {
        // NFTA_LOOKUP_SET 1, SREG 2, DREG 3, FLAGS 5 (NFT_LOOKUP_F_INV 1)
        let set = attr(attrs(d), 1).map(string).unwrap_or_default();
        let lhs = u32_attr(d, 2)
            .and_then(|r| self.regs.get(&r))
            .map(|o| o.name.clone())
            .unwrap_or_else(|| "?".into());
        match u32_attr(d, 3) {
            Some(NFT_REG_VERDICT) => {
                self.parts.push(format!("{lhs} vmap @{set}"));
                self.verdict = Some(Verdict::Other(format!("vmap @{set}")));
            }
            Some(dreg) => {
                self.parts.push(format!("{lhs} map @{set}"));
                self.regs.remove(&dreg);
            }
            None => {
                let not = if u32_attr(d, 5).unwrap_or(0) & 1 != 0 {
                    "!= "
                } else {
                    ""
                };
                self.parts.push(format!("{lhs} {not}@{set}"));
            }
        }
    }

    fn immediate(&mut self, d: &[u8]) {
        // NFTA_IMMEDIATE_DREG 1, DATA 2
        let dreg = u32_attr(d, 1);
        let data = attr(attrs(d), 2).unwrap_or(&[]);
        if dreg == Some(NFT_REG_VERDICT) {
            if let Some(v) = data_verdict(data) {
                self.parts.push(verdict_text(&v));
                self.verdict = Some(v);
            }
        } else if let Some(r) = dreg {
            let value = attr(attrs(data), NFTA_DATA_VALUE).map(<[u8]>::to_vec);
            let op = Operand {
                name: "immediate".into(),
                kind: Kind::Number,
                mask: None,
                value,
            };
            self.regs.insert(r, op);
        }
    }

    /// `iptables-nft`'s untranslated matches; `comment` carries `-m comment`.
    fn xt_match(&mut self, d: &[u8]) {
        // NFTA_MATCH_NAME 1, REV 2, INFO 3
        let name = attr(attrs(d), 1).map(string).unwrap_or_default();
        if name == "comment" {
            // struct xt_comment_info { char comment[256]; }
            self.comment = attr(attrs(d), 3).map(string);
        } else {
            self.parts.push(format!("xt match {name:?}"));
        }
    }

    fn finish(mut self, id: String) -> Rule {
        if let Some(c) = &self.comment {
            self.parts.push(format!("comment {c:?}"));
        }
        Rule {
            id,
            text: self.parts.join(" "),
            verdict: self.verdict,
            comment: self.comment,
            counters: self.counters,
        }
    }
}

fn base_name(base: u32) -> &'static str {
    match base {
        0 => "ll",
        1 => "nh",
        2 => "th",
        3 => "ih",
        _ => "?",
    }
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        other => other.to_string().to_lowercase(),
    }
}

/// `10.0.0.0/8`: a partial load or a mask makes a prefix.
fn prefix_text(kind: Kind, value: &[u8], mask: Option<&[u8]>) -> String {
    let full = if kind == Kind::Ipv4 { 4 } else { 16 };
    let mut addr = value.to_vec();
    addr.resize(full, 0);
    let addr = if kind == Kind::Ipv4 {
        Ipv4Addr::from(<[u8; 4]>::try_from(&addr[..]).unwrap_or_default()).to_string()
    } else {
        Ipv6Addr::from(<[u8; 16]>::try_from(&addr[..]).unwrap_or_default()).to_string()
    };
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

fn format_value(kind: Kind, v: &[u8]) -> String {
    match kind {
        Kind::Ipv4 | Kind::Ipv6 => prefix_text(kind, v, None),
        Kind::Iface => {
            // Without a terminating NUL only a prefix is compared.
            let s = string(v);
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
        Kind::CtState if v.len() == 4 => {
            ct_state_names(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
        }
        Kind::Number if v.len() == 4 => {
            format!("{:#x}", u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
        }
        _ => {
            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

fn ct_state_names(bits: u32) -> String {
    const NAMES: [(u32, &str); 5] = [
        (1, "invalid"),
        (2, "established"),
        (4, "related"),
        (8, "new"),
        (64, "untracked"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        format!("{bits:#x}")
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
        buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(data);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
    }

    fn nested(ty: u16, f: impl FnOnce(&mut Vec<u8>)) -> (u16, Vec<u8>) {
        let mut b = Vec::new();
        f(&mut b);
        (ty | 0x8000, b)
    }

    fn msg(family: u8, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = vec![family, 0, 0, 0];
        for (ty, d) in attrs {
            push_attr(&mut m, *ty, d);
        }
        m
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    fn u32be(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    fn expr(name: &str, data: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut e = Vec::new();
        push_attr(&mut e, NFTA_EXPR_NAME, &s(name));
        let mut d = Vec::new();
        for (ty, v) in data {
            push_attr(&mut d, *ty, v);
        }
        push_attr(&mut e, NFTA_EXPR_DATA | 0x8000, &d);
        e
    }

    fn data_value(v: &[u8]) -> Vec<u8> {
        nested(0, |b| push_attr(b, NFTA_DATA_VALUE, v)).1
    }

    fn verdict(code: i32, chain: Option<&str>) -> Vec<u8> {
        let mut v = Vec::new();
        push_attr(&mut v, NFTA_VERDICT_CODE, &code.to_be_bytes());
        if let Some(c) = chain {
            push_attr(&mut v, NFTA_VERDICT_CHAIN, &s(c));
        }
        let mut d = Vec::new();
        push_attr(&mut d, NFTA_DATA_VERDICT | 0x8000, &v);
        d
    }

    fn rule(
        family: u8,
        table: &str,
        chain: &str,
        handle: u64,
        exprs: &[Vec<u8>],
        udata: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut list = Vec::new();
        for e in exprs {
            push_attr(&mut list, NFTA_LIST_ELEM | 0x8000, e);
        }
        let mut a = vec![
            (NFTA_RULE_TABLE, s(table)),
            (NFTA_RULE_CHAIN, s(chain)),
            (NFTA_RULE_HANDLE, handle.to_be_bytes().to_vec()),
            (NFTA_RULE_EXPRESSIONS | 0x8000, list),
        ];
        if let Some(u) = udata {
            a.push((NFTA_RULE_USERDATA, u.to_vec()));
        }
        msg(family, &a)
    }

    fn counter_expr(p: u64, b: u64) -> Vec<u8> {
        expr(
            "counter",
            &[(1, b.to_be_bytes().to_vec()), (2, p.to_be_bytes().to_vec())],
        )
    }

    /// `ip saddr 10.0.0.0/8 counter drop comment "x"` as nft 1.0 emits it.
    fn native_rule() -> Vec<u8> {
        let exprs = [
            expr(
                "payload",
                &[(1, u32be(1)), (2, u32be(1)), (3, u32be(12)), (4, u32be(4))],
            ),
            expr(
                "bitwise",
                &[
                    (1, u32be(1)),
                    (2, u32be(1)),
                    (3, u32be(4)),
                    (4, data_value(&[255, 0, 0, 0])),
                    (5, data_value(&[0; 4])),
                ],
            ),
            expr(
                "cmp",
                &[
                    (1, u32be(1)),
                    (2, u32be(0)),
                    (3, data_value(&[10, 0, 0, 0])),
                ],
            ),
            counter_expr(3, 180),
            expr("immediate", &[(1, u32be(0)), (2, verdict(0, None))]),
        ];
        let udata = [NFTNL_UDATA_RULE_COMMENT, 2, b'x', 0];
        rule(1, "cttest", "fwdchain", 12, &exprs, Some(&udata))
    }

    #[test]
    fn decodes_a_native_rule() {
        let (family, table, chain, r) = parse_rule(&native_rule()).unwrap();
        assert_eq!(
            (family, table.as_str(), chain.as_str()),
            (Family::Inet, "cttest", "fwdchain")
        );
        assert_eq!(r.id, "12");
        assert_eq!(r.verdict, Some(Verdict::Drop));
        assert_eq!(r.comment.as_deref(), Some("x"));
        assert_eq!(
            r.counters,
            Some(Counters {
                packets: 3,
                bytes: 180
            })
        );
        assert_eq!(r.text, "ip saddr 10.0.0.0/8 counter drop comment \"x\"");
    }

    /// `iptables-nft -A FORWARD -i cali+ -s 10.0.0.0/8 -p tcp --dport 80
    /// -m comment --comment "Unknown interface" -j cali-x` as 1.8.9 stores it.
    #[test]
    fn decodes_an_iptables_nft_rule() {
        let mut comment = vec![0u8; 256];
        comment[..17].copy_from_slice(b"Unknown interface");
        let exprs = [
            expr("meta", &[(2, u32be(6)), (1, u32be(1))]),
            expr(
                "cmp",
                &[(1, u32be(1)), (2, u32be(0)), (3, data_value(b"cali"))],
            ),
            expr("meta", &[(2, u32be(16)), (1, u32be(1))]),
            expr(
                "cmp",
                &[(1, u32be(1)), (2, u32be(0)), (3, data_value(&[6]))],
            ),
            expr(
                "payload",
                &[(1, u32be(1)), (2, u32be(1)), (3, u32be(12)), (4, u32be(1))],
            ),
            expr(
                "cmp",
                &[(1, u32be(1)), (2, u32be(0)), (3, data_value(&[10]))],
            ),
            expr(
                "payload",
                &[(1, u32be(1)), (2, u32be(2)), (3, u32be(2)), (4, u32be(2))],
            ),
            expr(
                "cmp",
                &[
                    (1, u32be(1)),
                    (2, u32be(0)),
                    (3, data_value(&80u16.to_be_bytes())),
                ],
            ),
            expr("match", &[(1, s("comment")), (2, u32be(0)), (3, comment)]),
            counter_expr(0, 0),
            expr(
                "immediate",
                &[(1, u32be(0)), (2, verdict(-3, Some("cali-x")))],
            ),
        ];
        let (family, _, _, r) = parse_rule(&rule(2, "filter", "FORWARD", 4, &exprs, None)).unwrap();
        assert_eq!(family, Family::Ipv4);
        assert_eq!(r.comment.as_deref(), Some("Unknown interface"));
        assert_eq!(r.verdict, Some(Verdict::Jump("cali-x".into())));
        assert_eq!(
            r.text,
            "iifname \"cali*\" meta l4proto tcp ip saddr 10.0.0.0/8 tcp dport 80 counter jump cali-x comment \"Unknown interface\""
        );
    }

    #[test]
    fn xt_targets_and_vmaps() {
        let exprs = [
            counter_expr(1, 2),
            expr(
                "target",
                &[(1, s("REJECT")), (2, u32be(0)), (3, vec![0; 8])],
            ),
        ];
        let (_, _, _, r) = parse_rule(&rule(10, "filter", "INPUT", 5, &exprs, None)).unwrap();
        assert_eq!(r.verdict, Some(Verdict::Reject));
        assert_eq!(r.text, "counter xt target \"REJECT\"");
        let exprs = [
            expr("ct", &[(2, u32be(0)), (1, u32be(1))]),
            expr(
                "bitwise",
                &[
                    (1, u32be(1)),
                    (2, u32be(1)),
                    (3, u32be(4)),
                    (4, data_value(&6u32.to_ne_bytes())),
                    (5, data_value(&[0; 4])),
                ],
            ),
            expr(
                "cmp",
                &[(1, u32be(1)), (2, u32be(1)), (3, data_value(&[0; 4]))],
            ),
            expr("meta", &[(2, u32be(6)), (1, u32be(1))]),
            expr("lookup", &[(1, s("__map0")), (2, u32be(1)), (3, u32be(0))]),
        ];
        let (_, _, _, r) = parse_rule(&rule(1, "calico", "x", 6, &exprs, None)).unwrap();
        assert_eq!(r.text, "ct state established,related iifname vmap @__map0");
        assert_eq!(r.verdict, Some(Verdict::Other("vmap @__map0".into())));
        assert_eq!(r.counters, None);
    }

    fn chain_msg(
        family: u8,
        table: &str,
        name: &str,
        hook: Option<(u32, i32)>,
        policy: Option<u32>,
        counters: bool,
    ) -> Vec<u8> {
        let mut a = vec![
            (NFTA_CHAIN_TABLE, s(table)),
            (2, 7u64.to_be_bytes().to_vec()),
            (NFTA_CHAIN_NAME, s(name)),
        ];
        if let Some((num, prio)) = hook {
            a.push(nested(NFTA_CHAIN_HOOK, |b| {
                push_attr(b, NFTA_HOOK_HOOKNUM, &num.to_be_bytes());
                push_attr(b, NFTA_HOOK_PRIORITY, &prio.to_be_bytes());
            }));
        }
        if let Some(p) = policy {
            a.push((NFTA_CHAIN_POLICY, u32be(p)));
        }
        a.push((7, s("filter")));
        if counters {
            a.push(nested(NFTA_CHAIN_COUNTERS, |b| {
                push_attr(b, NFTA_COUNTER_BYTES, &100u64.to_be_bytes());
                push_attr(b, NFTA_COUNTER_PACKETS, &2u64.to_be_bytes());
            }));
        }
        msg(family, &a)
    }

    #[test]
    fn assembles_tables_chains_and_rules() {
        let tables = [
            msg(1, &[(NFTA_TABLE_NAME, s("cttest"))]),
            msg(2, &[(NFTA_TABLE_NAME, s("filter"))]),
        ];
        let chains = [
            chain_msg(1, "cttest", "fwdchain", Some((2, -5)), Some(0), false),
            chain_msg(2, "filter", "FORWARD", Some((2, 0)), Some(1), true),
            chain_msg(2, "filter", "cali-x", None, None, false),
            chain_msg(5, "nosuchtable", "y", None, None, false),
        ];
        let rules = [native_rule(), rule(2, "filter", "nochain", 1, &[], None)];
        let t = assemble(&tables, &chains, &rules);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].backend, t[0].family, t[0].name.as_str()),
            (Backend::Nft, Family::Inet, "cttest")
        );
        let c = &t[0].chains[0];
        assert_eq!(
            (c.hook, c.priority, c.policy.clone()),
            (Some(Hook::Forward), Some(-5), Some(Verdict::Drop))
        );
        assert_eq!(c.policy_counters, None);
        assert_eq!(c.rules.len(), 1);
        let fwd = &t[1].chains[0];
        assert_eq!(fwd.policy, Some(Verdict::Accept));
        assert_eq!(
            fwd.policy_counters,
            Some(Counters {
                packets: 2,
                bytes: 100
            })
        );
        assert_eq!(t[1].chains[1].hook, None);
        assert!(t[1].chains.iter().all(|c| c.rules.is_empty()));
    }

    #[test]
    fn netdev_hooks() {
        assert_eq!(hook_of(Family::Netdev, 0), Some(Hook::Ingress));
        assert_eq!(hook_of(Family::Netdev, 1), Some(Hook::Egress));
        assert_eq!(hook_of(Family::Inet, 5), Some(Hook::Ingress));
        assert_eq!(hook_of(Family::Arp, 1), Some(Hook::Output));
    }

    #[test]
    fn splits_datagrams_into_messages() {
        let mut d = request_message(NFT_MSG_GETRULE, NLM_F_DUMP, 1);
        d.extend(request_message(NFT_MSG_GETGEN, NLM_F_DUMP_INTR, 7));
        let m: Vec<_> = messages(&d).collect::<io::Result<_>>().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].ty, (10 << 8) | 7);
        assert_eq!(m[0].flags, NLM_F_DUMP | NLM_F_REQUEST);
        assert_eq!(
            (m[1].seq, m[1].flags & NLM_F_DUMP_INTR),
            (7, NLM_F_DUMP_INTR)
        );
        d[20] = 200;
        assert!(messages(&d).any(|m| m.is_err()));
    }

    #[test]
    fn truncated_and_garbage_messages_do_not_panic() {
        let good = [
            native_rule(),
            chain_msg(2, "filter", "FORWARD", Some((2, 0)), Some(1), true),
        ];
        for m in &good {
            for len in 0..m.len() {
                let _ = parse_rule(&m[..len]);
                let _ = parse_chain(&m[..len]);
                let _ = parse_table(&m[..len]);
            }
        }
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..3000 {
            let mut m = good[0].clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let i = seed as usize % m.len();
                m[i] = (seed >> 24) as u8;
            }
            let _ = parse_rule(&m);
            let _ = parse_chain(&m);
        }
        assert_eq!(udata_comment(&[0, 200, b'x']), None);
        assert_eq!(
            udata_comment(&[5, 1, b'x', 0, 2, b'h', 0]),
            Some("h".into())
        );
        let _ = messages(&[0xff; 40]).count();
    }

    #[test]
    fn value_formatting() {
        assert_eq!(format_value(Kind::Iface, b"eth0\0\0\0\0"), "\"eth0\"");
        assert_eq!(prefix_text(Kind::Ipv6, &[0xfd, 0], None), "fd00::/16");
        assert_eq!(prefix_text(Kind::Ipv4, &[1, 2, 3, 4], None), "1.2.3.4");
        assert_eq!(format_value(Kind::Number, &0x10u32.to_ne_bytes()), "0x10");
        assert_eq!(format_value(Kind::Bytes, &[8, 0]), "0x0800");
    }
}
