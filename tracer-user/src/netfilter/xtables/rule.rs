//! One entry as a rule, its text written the way `iptables -S` does.

use std::collections::HashMap;

use super::entry::{Entry, Layout};
use super::verdict::{standard_verdict_of, target_verdict};
use crate::kernel::bytes::{cstr, u16_at, u32_at};
use crate::netfilter::inventory::{Family, Rule, Verdict};
use crate::netfilter::text::{ip_text, proto_name};
use crate::netfilter::xt_ext::{CtState, RejectWith, SetMark};

// ipt_ip.invflags (the same bits in ip6t_ip6).
const INV_VIA_IN: u8 = 0x01;
const INV_VIA_OUT: u8 = 0x02;
const INV_SRCIP: u8 = 0x08;
const INV_DSTIP: u8 = 0x10;
const INV_PROTO: u8 = 0x40;

/// The rule of entry `e`; `chain_at` names user chains by their first entry.
pub(super) fn rule_of(
    layout: &Layout,
    e: &Entry,
    id: String,
    chain_at: &HashMap<usize, String>,
) -> Rule {
    let mut text = ip_part_text(layout, e.header);
    let mut comment = None;
    for (name, rev, data) in &e.matches {
        text.push(format!("-m {name}"));
        if name == "comment" {
            let c = cstr(&data[..data.len().min(256)]);
            text.push(format!("--comment {c:?}"));
            comment = Some(c);
        } else {
            text.extend(match_args(name, *rev, data));
        }
    }
    let mut reject = None;
    let verdict = if e.target.is_empty() {
        let v = standard_verdict_of(e, layout, chain_at);
        match &v {
            Some(Verdict::Jump(c)) => text.push(format!("-j {c}")),
            Some(Verdict::Goto(c)) => text.push(format!("-g {c}")),
            Some(v) => text.push(format!("-j {v}")),
            None => {}
        }
        v
    } else {
        text.push(format!("-j {}", e.target));
        if e.target == "MARK"
            && let Some(m) = SetMark::decode(e.target_rev, e.target_data)
        {
            text.push(m.iptables_args());
        }
        reject = (e.target == "REJECT")
            .then(|| RejectWith::from_target(layout.family == Family::Ipv6, e.target_data))
            .flatten();
        if let Some(r) = reject {
            text.push(r.iptables_args());
        }
        target_verdict(&e.target)
    };
    Rule {
        id,
        text: text.join(" "),
        verdict,
        comment,
        counters: Some(e.counters),
        reject_with: reject.map(RejectWith::told),
    }
}

/// `-s`, `-d`, `-i`, `-o`, `-p` of the entry header, as `iptables -S` writes them.
fn ip_part_text(layout: &Layout, h: &[u8]) -> Vec<String> {
    let inv = h[layout.invflags];
    let not = |bit: u8| if inv & bit != 0 { "! " } else { "" };
    let mut out = Vec::new();
    let n = layout.addr_len;
    for (i, (opt, bit)) in [("-s", INV_SRCIP), ("-d", INV_DSTIP)]
        .into_iter()
        .enumerate()
    {
        let addr = &h[i * n..(i + 1) * n];
        let mask = &h[(2 + i) * n..(3 + i) * n];
        if mask.iter().any(|&b| b != 0) {
            out.push(format!("{}{opt} {}", not(bit), addr_text(addr, mask)));
        }
    }
    for (i, (opt, bit)) in [("-i", INV_VIA_IN), ("-o", INV_VIA_OUT)]
        .into_iter()
        .enumerate()
    {
        let name = &h[layout.iniface + 16 * i..layout.iniface + 16 * (i + 1)];
        let mask = &h[layout.iniface + 32 + 16 * i..layout.iniface + 32 + 16 * (i + 1)];
        if let Some(t) = iface_text(name, mask) {
            out.push(format!("{}{opt} {t}", not(bit)));
        }
    }
    let proto = u16_at(h, layout.proto).unwrap_or(0);
    if proto != 0 {
        out.push(format!("{}-p {}", not(INV_PROTO), proto_name(proto as u8)));
    }
    out
}

/// `10.0.0.0/8`, or `10.0.0.1/255.0.255.0` for a mask that is no prefix.
pub(super) fn addr_text(addr: &[u8], mask: &[u8]) -> String {
    let ip = ip_text(addr);
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
        .skip(ones as usize)
        .all(|bit| bit == 0);
    if contiguous {
        format!("{ip}/{ones}")
    } else {
        format!("{ip}/{}", ip_text(mask))
    }
}

/// `eth0`, or `cali+` when only a prefix is compared. iptables keeps the `+`
/// in the name; the mask is what the kernel goes by.
fn iface_text(name: &[u8], mask: &[u8]) -> Option<String> {
    let s = cstr(name);
    if s.is_empty() {
        return None;
    }
    let wildcard = mask.get(s.len()).is_some_and(|&m| m == 0);
    Some(if wildcard && !s.ends_with('+') {
        format!("{s}+")
    } else {
        s
    })
}

/// The arguments of a few common matches; others show only as `-m NAME`.
pub(super) fn match_args(name: &str, rev: u8, d: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    match name {
        "conntrack" => out.extend(CtState::decode(rev, d).map(CtState::iptables_args)),
        "tcp" => port_args(&mut out, d, d.get(11).copied().unwrap_or(0)),
        "udp" => port_args(&mut out, d, d.get(8).copied().unwrap_or(0)),
        "mark" if rev == 1 => {
            if let (Some(mark), Some(mask), Some(&inv)) = (u32_at(d, 0), u32_at(d, 4), d.get(8)) {
                let not = if inv != 0 { "! " } else { "" };
                out.push(format!("{not}--mark {mark:#x}/{mask:#x}"));
            }
        }
        _ => {}
    }
    out
}

/// `--sport` / `--dport` of `xt_tcp` / `xt_udp`: two port ranges, then the
/// inversion flags `inv` (`XT_TCP_INV_SRCPT` 1, `XT_TCP_INV_DSTPT` 2, the
/// same for udp).
fn port_args(out: &mut Vec<String>, d: &[u8], inv: u8) {
    for (i, (opt, bit)) in [("--sport", 0x01), ("--dport", 0x02)]
        .into_iter()
        .enumerate()
    {
        let (Some(lo), Some(hi)) = (u16_at(d, 4 * i), u16_at(d, 4 * i + 2)) else {
            return;
        };
        let not = if inv & bit != 0 { "! " } else { "" };
        match (lo, hi) {
            (0, 0xffff) => {}
            (lo, hi) if lo == hi => out.push(format!("{not}{opt} {lo}")),
            (lo, hi) => out.push(format!("{not}{opt} {lo}:{hi}")),
        }
    }
}
