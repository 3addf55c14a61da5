//! Decoding nf_tables dump messages: a table, a chain, or a rule (whose
//! expressions [`Decoder`] turns into text). Integers in nf_tables attributes
//! are big-endian.

use super::expr::Decoder;
use crate::kernel::bytes::cstr;
use crate::kernel::netlink::attrs;
use crate::netfilter::inventory::{Backend, Chain, Counters, Family, Hook, Rule, Table, Verdict};

pub(super) const NFGENMSG_LEN: usize = 4;

pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
pub(super) const NFTA_CHAIN_HOOK: u16 = 4;
pub(super) const NFTA_CHAIN_POLICY: u16 = 5;
pub(super) const NFTA_CHAIN_COUNTERS: u16 = 8;
pub(super) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(super) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_COUNTER_BYTES: u16 = 1;
pub(super) const NFTA_COUNTER_PACKETS: u16 = 2;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
pub(super) const NFTA_RULE_HANDLE: u16 = 3;
pub(super) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(super) const NFTA_RULE_USERDATA: u16 = 7;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
pub(super) const NFTA_EXPR_NAME: u16 = 1;
pub(super) const NFTA_EXPR_DATA: u16 = 2;
pub(super) const NFTA_GEN_ID: u16 = 1;
pub(super) const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

pub(super) const NFTA_DATA_VALUE: u16 = 1;
pub(super) const NFTA_DATA_VERDICT: u16 = 2;
pub(super) const NFTA_VERDICT_CODE: u16 = 1;
pub(super) const NFTA_VERDICT_CHAIN: u16 = 2;

// --- attributes --------------------------------------------------------------

pub(super) fn attr<'a>(mut it: impl Iterator<Item = (u16, &'a [u8])>, ty: u16) -> Option<&'a [u8]> {
    it.find(|(t, _)| *t == ty).map(|(_, d)| d)
}

pub(super) fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// The big-endian `u32` of attribute `ty`.
pub(super) fn u32_attr(data: &[u8], ty: u16) -> Option<u32> {
    be32(attr(attrs(data), ty)?)
}

/// The string of attribute `ty`.
pub(super) fn string_attr(data: &[u8], ty: u16) -> Option<String> {
    attr(attrs(data), ty).map(cstr)
}

/// The `NFTA_DATA_VALUE` nested in attribute `ty`.
pub(super) fn value_attr(data: &[u8], ty: u16) -> Option<Vec<u8>> {
    attr(attrs(attr(attrs(data), ty)?), NFTA_DATA_VALUE).map(<[u8]>::to_vec)
}

/// The family of a reply and its attributes.
fn split(msg: &[u8]) -> Option<(Family, &[u8])> {
    let family = Family::from_nfproto(*msg.first()?)?;
    Some((family, msg.get(NFGENMSG_LEN..)?))
}

pub(super) fn counters(b: &[u8]) -> Option<Counters> {
    Some(Counters {
        packets: be64(attr(attrs(b), NFTA_COUNTER_PACKETS)?)?,
        bytes: be64(attr(attrs(b), NFTA_COUNTER_BYTES)?)?,
    })
}

/// The ruleset generation of an `NFT_MSG_NEWGEN` reply.
pub(super) fn generation_id(msg: &[u8]) -> Option<u32> {
    u32_attr(msg.get(NFGENMSG_LEN..)?, NFTA_GEN_ID)
}

// --- tables, chains, rules ---------------------------------------------------

pub(super) fn parse_table(msg: &[u8]) -> Option<Table> {
    let (family, a) = split(msg)?;
    Some(Table {
        backend: Backend::Nft,
        family,
        name: string_attr(a, NFTA_TABLE_NAME)?,
        chains: vec![],
    })
}

pub(super) fn hook_of(family: Family, n: u32) -> Option<Hook> {
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

/// A chain (without rules) and the name of its table.
pub(super) fn parse_chain(msg: &[u8]) -> Option<(Family, String, Chain)> {
    let (family, a) = split(msg)?;
    let mut table = None;
    let mut chain = Chain::default();
    for (ty, d) in attrs(a) {
        match ty {
            NFTA_CHAIN_TABLE => table = Some(cstr(d)),
            NFTA_CHAIN_NAME => chain.name = cstr(d),
            NFTA_CHAIN_HOOK => {
                chain.hook = u32_attr(d, NFTA_HOOK_HOOKNUM).and_then(|n| hook_of(family, n));
                chain.priority = u32_attr(d, NFTA_HOOK_PRIORITY).map(|p| p as i32);
            }
            NFTA_CHAIN_POLICY => chain.policy = be32(d).map(|v| verdict_of_code(v as i32, None)),
            NFTA_CHAIN_COUNTERS => chain.policy_counters = counters(d),
            _ => {}
        }
    }
    Some((family, table?, chain))
}

/// A rule and the names of its table and chain.
pub(super) fn parse_rule(msg: &[u8]) -> Option<(Family, String, String, Rule)> {
    let (family, a) = split(msg)?;
    let table = string_attr(a, NFTA_RULE_TABLE)?;
    let chain = string_attr(a, NFTA_RULE_CHAIN)?;
    let handle = attr(attrs(a), NFTA_RULE_HANDLE).and_then(be64);
    let mut d = Decoder::new(family);
    for elem in attr(attrs(a), NFTA_RULE_EXPRESSIONS)
        .map(attrs)
        .into_iter()
        .flatten()
        .filter(|(t, _)| *t == NFTA_LIST_ELEM)
    {
        let name = string_attr(elem.1, NFTA_EXPR_NAME).unwrap_or_default();
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
pub(super) fn udata_comment(mut b: &[u8]) -> Option<String> {
    while b.len() >= 2 {
        let (ty, len) = (b[0], b[1] as usize);
        let value = b.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            return Some(cstr(value));
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
pub(super) fn data_verdict(data: &[u8]) -> Option<Verdict> {
    let v = attr(attrs(data), NFTA_DATA_VERDICT)?;
    let code = u32_attr(v, NFTA_VERDICT_CODE)? as i32;
    let chain = string_attr(v, NFTA_VERDICT_CHAIN);
    Some(verdict_of_code(code, chain))
}
