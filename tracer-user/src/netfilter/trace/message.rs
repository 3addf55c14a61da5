//! nf_tables messages of the trace: the batch that adds, extends and removes
//! calitrace's own table, and the `NFT_MSG_TRACE` notifications the kernel
//! sends for every rule a traced packet meets (what `nft monitor trace` reads).
//! Integers inside nf_tables attributes are big-endian.

use std::net::IpAddr;

use crate::kernel::bytes::cstr;
use crate::kernel::netlink::{attrs, header_seq, push_attr};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_TRACE: u16 = 17;

const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

pub(super) const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
/// The table lives as long as the netlink socket that made it: the kernel
/// removes it when calitrace's socket closes, SIGKILL included (5.12+).
pub(super) const NFT_TABLE_F_OWNER: u32 = 0x2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_VERDICT_CODE: u16 = 1;
const NF_ACCEPT: u32 = 1;
/// The first 16-byte data register (`NFT_REG_1`).
const REG1: u32 = 1;
const NFT_META_NFTRACE: u32 = 12;
const NFT_META_NFPROTO: u32 = 15;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;

const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
const NFT_TRACETYPE_POLICY: u32 = 1;
const NFT_TRACETYPE_RULE: u32 = 3;

/// Where a chain of calitrace's table hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BaseChain {
    pub name: &'static str,
    /// `NF_INET_*` hook number.
    pub hook: u32,
    pub priority: i32,
}

/// One message of a batch, before sequence numbers are given.
pub(super) struct Edit {
    ty: u16,
    flags: u16,
    family: u8,
    attrs: Vec<u8>,
}

/// The datagram of one nf_tables transaction: BEGIN, `edits` each asking for
/// an ACK (sequence numbers `first_seq` on), END.
pub(super) fn batch(edits: &[Edit], first_seq: u32) -> Vec<u8> {
    let control = |ty, seq| {
        let mut body = vec![0u8, 0];
        body.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
        header_seq(ty, 0, seq, &body)
    };
    let mut out = control(NFNL_MSG_BATCH_BEGIN, first_seq.wrapping_sub(1));
    for (i, e) in edits.iter().enumerate() {
        let mut body = vec![e.family, 0, 0, 0];
        body.extend_from_slice(&e.attrs);
        out.extend(header_seq(
            nft_type(e.ty),
            e.flags | NLM_F_ACK,
            first_seq + i as u32,
            &body,
        ));
    }
    out.extend(control(NFNL_MSG_BATCH_END, first_seq + edits.len() as u32));
    out
}

pub(super) fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A dump request of every table (all families).
pub(super) fn list_tables(seq: u32) -> Vec<u8> {
    header_seq(nft_type(NFT_MSG_GETTABLE), NLM_F_DUMP, seq, &[0; 4])
}

pub(super) fn is_table_reply(ty: u16) -> bool {
    ty == nft_type(NFT_MSG_NEWTABLE)
}

/// The family and name of a table in a dump reply.
pub(super) fn table_of_reply(payload: &[u8]) -> Option<(u8, String)> {
    let family = *payload.first()?;
    let name = attrs(payload.get(4..)?)
        .find(|(t, _)| *t == NFTA_TABLE_NAME)?
        .1;
    Some((family, cstr(name)))
}

fn nested(buf: &mut Vec<u8>, ty: u16, inner: &[u8]) {
    push_attr(buf, ty | NLA_F_NESTED, inner);
}

fn string(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    push_attr(buf, ty, &b);
}

fn be32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    push_attr(buf, ty, &v.to_be_bytes());
}

pub(super) fn new_table(family: u8, name: &str, flags: u32) -> Edit {
    let mut a = Vec::new();
    string(&mut a, NFTA_TABLE_NAME, name);
    be32(&mut a, NFTA_TABLE_FLAGS, flags);
    Edit {
        ty: NFT_MSG_NEWTABLE,
        flags: NLM_F_CREATE,
        family,
        attrs: a,
    }
}

pub(super) fn delete_table(family: u8, name: &str) -> Edit {
    let mut a = Vec::new();
    string(&mut a, NFTA_TABLE_NAME, name);
    Edit {
        ty: NFT_MSG_DELTABLE,
        flags: 0,
        family,
        attrs: a,
    }
}

/// A filter base chain with an accept policy: it only marks packets.
pub(super) fn new_chain(family: u8, table: &str, chain: BaseChain) -> Edit {
    let mut hook = Vec::new();
    be32(&mut hook, NFTA_HOOK_HOOKNUM, chain.hook);
    be32(&mut hook, NFTA_HOOK_PRIORITY, chain.priority as u32);
    let mut a = Vec::new();
    string(&mut a, NFTA_CHAIN_TABLE, table);
    string(&mut a, NFTA_CHAIN_NAME, chain.name);
    nested(&mut a, NFTA_CHAIN_HOOK, &hook);
    be32(&mut a, NFTA_CHAIN_POLICY, NF_ACCEPT);
    string(&mut a, NFTA_CHAIN_TYPE, "filter");
    Edit {
        ty: NFT_MSG_NEWCHAIN,
        flags: NLM_F_CREATE,
        family,
        attrs: a,
    }
}

/// `meta nfproto F <addr> saddr S <addr> daddr D meta nftrace set 1`.
pub(super) fn trace_rule(family: u8, table: &str, chain: &str, src: IpAddr, dst: IpAddr) -> Edit {
    let (nfproto, src_off, dst_off, src, dst) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (
            NFPROTO_IPV4,
            12,
            16,
            s.octets().to_vec(),
            d.octets().to_vec(),
        ),
        (s, d) => (NFPROTO_IPV6, 8, 24, v6(s).to_vec(), v6(d).to_vec()),
    };
    let mut exprs = Vec::new();
    expr(&mut exprs, "meta", |d| {
        be32(d, 2, NFT_META_NFPROTO); // NFTA_META_KEY
        be32(d, 1, REG1); // NFTA_META_DREG
    });
    cmp_eq(&mut exprs, &[nfproto]);
    for (off, addr) in [(src_off, &src), (dst_off, &dst)] {
        expr(&mut exprs, "payload", |d| {
            be32(d, 1, REG1); // NFTA_PAYLOAD_DREG
            be32(d, 2, NFT_PAYLOAD_NETWORK_HEADER); // BASE
            be32(d, 3, off); // OFFSET
            be32(d, 4, addr.len() as u32); // LEN
        });
        cmp_eq(&mut exprs, addr);
    }
    expr(&mut exprs, "immediate", |d| {
        be32(d, 1, REG1); // NFTA_IMMEDIATE_DREG
        let mut value = Vec::new();
        push_attr(&mut value, NFTA_DATA_VALUE, &[1]);
        nested(d, 2, &value); // NFTA_IMMEDIATE_DATA
    });
    expr(&mut exprs, "meta", |d| {
        be32(d, 2, NFT_META_NFTRACE); // NFTA_META_KEY
        be32(d, 3, REG1); // NFTA_META_SREG
    });
    let mut a = Vec::new();
    string(&mut a, NFTA_RULE_TABLE, table);
    string(&mut a, NFTA_RULE_CHAIN, chain);
    nested(&mut a, NFTA_RULE_EXPRESSIONS, &exprs);
    Edit {
        ty: NFT_MSG_NEWRULE,
        flags: NLM_F_CREATE | NLM_F_APPEND,
        family,
        attrs: a,
    }
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn expr(list: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
    let mut d = Vec::new();
    data(&mut d);
    let mut elem = Vec::new();
    string(&mut elem, NFTA_EXPR_NAME, name);
    nested(&mut elem, NFTA_EXPR_DATA, &d);
    nested(list, NFTA_LIST_ELEM, &elem);
}

fn cmp_eq(list: &mut Vec<u8>, value: &[u8]) {
    expr(list, "cmp", |d| {
        be32(d, 1, REG1); // NFTA_CMP_SREG
        be32(d, 2, 0); // NFTA_CMP_OP: NFT_CMP_EQ
        let mut v = Vec::new();
        push_attr(&mut v, NFTA_DATA_VALUE, value);
        nested(d, 3, &v); // NFTA_CMP_DATA
    });
}

// --- trace notifications -----------------------------------------------------

/// What a traced packet met in one step: a rule (with its verdict) or a
/// chain's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TraceEvent {
    pub id: u32,
    /// `NFPROTO_*` of the table.
    pub family: u8,
    pub table: String,
    pub chain: String,
    /// `None` for a policy.
    pub rule: Option<u64>,
    pub step: Step,
    pub mark: u32,
    /// The packet's headers: sent with the first event of each base chain.
    pub network: Option<Vec<u8>>,
    pub transport: Option<Vec<u8>>,
    /// `NFPROTO_*` of the packet.
    pub nfproto: Option<u8>,
}

/// How a rule or policy let the packet go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Accept,
    Drop,
    /// Continue, jump, goto, return, queue: the walk goes on.
    Other,
}

impl Step {
    fn of_code(code: i32) -> Step {
        match code {
            0 => Step::Drop,
            1 => Step::Accept,
            _ => Step::Other,
        }
    }
}

/// Decodes one `NFT_MSG_TRACE` message (`ty`, payload with its nfgenmsg).
pub(super) fn trace_event(ty: u16, payload: &[u8]) -> Option<TraceEvent> {
    if ty != nft_type(NFT_MSG_TRACE) {
        return None;
    }
    let family = *payload.first()?;
    let body = payload.get(4..)?;
    let find = |want: u16| attrs(body).find(|(t, _)| *t == want).map(|(_, d)| d);
    let be32_of = |want| {
        find(want)
            .and_then(|d| d.get(..4))
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    let kind = be32_of(NFTA_TRACE_TYPE)?;
    let step = match kind {
        NFT_TRACETYPE_POLICY => Step::of_code(be32_of(NFTA_TRACE_POLICY)? as i32),
        NFT_TRACETYPE_RULE => {
            let verdict = find(NFTA_TRACE_VERDICT)?;
            let code = attrs(verdict)
                .find(|(t, _)| *t == NFTA_VERDICT_CODE)
                .and_then(|(_, d)| d.get(..4))
                .map(|b| i32::from_be_bytes(b.try_into().unwrap()))?;
            Step::of_code(code)
        }
        _ => Step::Other,
    };
    Some(TraceEvent {
        id: be32_of(NFTA_TRACE_ID)?,
        family,
        table: cstr(find(NFTA_TRACE_TABLE)?),
        chain: cstr(find(NFTA_TRACE_CHAIN)?),
        rule: (kind == NFT_TRACETYPE_RULE)
            .then(|| find(NFTA_TRACE_RULE_HANDLE))
            .flatten()
            .and_then(|d| d.get(..8))
            .map(|b| u64::from_be_bytes(b.try_into().unwrap())),
        step,
        mark: be32_of(NFTA_TRACE_MARK).unwrap_or(0),
        network: find(NFTA_TRACE_NETWORK_HEADER).map(<[u8]>::to_vec),
        transport: find(NFTA_TRACE_TRANSPORT_HEADER).map(<[u8]>::to_vec),
        nfproto: be32_of(NFTA_TRACE_NFPROTO).map(|p| p as u8),
    })
}

#[cfg(test)]
pub(super) mod build {
    //! Trace messages as the kernel writes them, for tests.
    use super::*;

    pub struct Fake<'a> {
        pub id: u32,
        pub family: u8,
        pub table: &'a str,
        pub chain: &'a str,
        pub rule: Option<u64>,
        pub code: i32,
        pub mark: u32,
        pub network: Option<&'a [u8]>,
        pub transport: Option<&'a [u8]>,
    }

    pub fn trace(f: &Fake<'_>) -> (u16, Vec<u8>) {
        let mut p = vec![f.family, 0, 0, 0];
        be32(&mut p, NFTA_TRACE_ID, f.id);
        string(&mut p, NFTA_TRACE_TABLE, f.table);
        string(&mut p, NFTA_TRACE_CHAIN, f.chain);
        if let Some(h) = f.rule {
            push_attr(&mut p, NFTA_TRACE_RULE_HANDLE, &h.to_be_bytes());
            be32(&mut p, NFTA_TRACE_TYPE, NFT_TRACETYPE_RULE);
            let mut v = Vec::new();
            be32(&mut v, NFTA_VERDICT_CODE, f.code as u32);
            nested(&mut p, NFTA_TRACE_VERDICT, &v);
        } else {
            be32(&mut p, NFTA_TRACE_TYPE, NFT_TRACETYPE_POLICY);
            be32(&mut p, NFTA_TRACE_POLICY, f.code as u32);
        }
        be32(&mut p, NFTA_TRACE_MARK, f.mark);
        if let Some(n) = f.network {
            push_attr(&mut p, NFTA_TRACE_NETWORK_HEADER, n);
        }
        if let Some(t) = f.transport {
            push_attr(&mut p, NFTA_TRACE_TRANSPORT_HEADER, t);
        }
        (nft_type(NFT_MSG_TRACE), p)
    }
}

#[cfg(test)]
mod tests {
    use super::build::{Fake, trace};
    use super::*;

    #[test]
    fn a_batch_is_framed_by_begin_and_end_with_one_sequence_each() {
        let b = batch(&[new_table(NFPROTO_INET, "calitrace_1", 0)], 7);
        let lens: Vec<u32> = {
            let mut v = Vec::new();
            let mut rest = &b[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[..4].try_into().unwrap());
                v.push(u32::from_ne_bytes(rest[8..12].try_into().unwrap()));
                rest = &rest[(len as usize + 3) & !3..];
            }
            v
        };
        assert_eq!(
            lens,
            vec![6, 7, 8],
            "sequence numbers of BEGIN, NEWTABLE, END"
        );
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), NFNL_MSG_BATCH_BEGIN);
        assert_eq!(&b[18..20], &10u16.to_be_bytes(), "res_id names nf_tables");
    }

    #[test]
    fn trace_rules_compare_the_family_and_both_addresses() {
        let e = trace_rule(
            NFPROTO_INET,
            "t",
            "pre",
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
        );
        let text = format!("{:?}", e.attrs);
        let names: Vec<String> = attrs(&e.attrs)
            .filter(|(t, _)| *t == NFTA_RULE_EXPRESSIONS)
            .flat_map(|(_, d)| attrs(d).collect::<Vec<_>>())
            .filter_map(|(_, elem)| attrs(elem).find(|(t, _)| *t == NFTA_EXPR_NAME))
            .map(|(_, n)| cstr(n))
            .collect();
        assert_eq!(
            names,
            [
                "meta",
                "cmp",
                "payload",
                "cmp",
                "payload",
                "cmp",
                "immediate",
                "meta"
            ]
        );
        assert!(!text.is_empty());
        let v6 = trace_rule(
            NFPROTO_INET,
            "t",
            "pre",
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
        );
        assert!(v6.attrs.len() > e.attrs.len(), "16-byte addresses");
    }

    #[test]
    fn rule_and_policy_events_decode_with_their_verdicts() {
        let hdr = [0x45u8; 20];
        let (ty, p) = trace(&Fake {
            id: 9,
            family: 1,
            table: "firewalld",
            chain: "filter_FORWARD",
            rule: Some(42),
            code: 0,
            mark: 0x10000,
            network: Some(&hdr),
            transport: None,
        });
        let ev = trace_event(ty, &p).unwrap();
        assert_eq!(ev.rule, Some(42));
        assert_eq!(ev.step, Step::Drop);
        assert_eq!(ev.mark, 0x10000);
        assert_eq!(ev.table, "firewalld");
        assert_eq!(ev.network.as_deref(), Some(&hdr[..]));
        let (ty, p) = trace(&Fake {
            id: 9,
            family: 2,
            table: "calico",
            chain: "filter-FORWARD",
            rule: None,
            code: 1,
            mark: 0,
            network: None,
            transport: None,
        });
        let ev = trace_event(ty, &p).unwrap();
        assert_eq!((ev.rule, ev.step), (None, Step::Accept));
        let (ty, p) = trace(&Fake {
            code: -3, // NFT_JUMP
            rule: Some(3),
            ..Fake {
                id: 1,
                family: 2,
                table: "calico",
                chain: "filter-FORWARD",
                rule: None,
                code: 0,
                mark: 0,
                network: None,
                transport: None,
            }
        });
        assert_eq!(trace_event(ty, &p).unwrap().step, Step::Other);
        assert!(trace_event(nft_type(NFT_MSG_NEWRULE), &p).is_none());
        assert!(trace_event(ty, &p[..6]).is_none(), "cut short: no event");
    }
}
