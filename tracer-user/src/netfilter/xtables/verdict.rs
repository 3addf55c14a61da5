//! What an entry's target decides: the standard target's verdicts and jumps,
//! and the named targets (`REJECT`, `LOG`, ...).

use std::collections::HashMap;

use super::entry::{Entry, Layout};
use crate::netfilter::inventory::Verdict;

/// The standard verdict of `RETURN`.
pub(super) const XT_RETURN: i32 = -5;

/// The verdict of a standard target; `None` for a fall-through (no `-j`).
/// `chain_at` names the user chains by the offset of their first entry.
pub(super) fn standard_verdict_of(
    e: &Entry,
    layout: &Layout,
    chain_at: &HashMap<usize, String>,
) -> Option<Verdict> {
    let v = e.standard_verdict()?;
    if v < 0 {
        return Some(builtin_verdict(v));
    }
    let v = v as usize;
    if v == e.offset + e.next {
        return None;
    }
    let goto = e.header[layout.flags] & layout.goto_flag != 0;
    Some(match chain_at.get(&v) {
        Some(c) if goto => Verdict::Goto(c.clone()),
        Some(c) => Verdict::Jump(c.clone()),
        None => Verdict::Other(format!("jump to offset {v}")),
    })
}

/// A negative standard verdict: `-NF_x - 1`.
pub(super) fn builtin_verdict(v: i32) -> Verdict {
    match -(v as i64) - 1 {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        3 => Verdict::Queue,
        4 => Verdict::Return, // NF_REPEAT stands for RETURN here
        n => Verdict::Other(format!("verdict {n}")),
    }
}

/// The verdict of a named xtables target (also used for `iptables-nft`'s
/// `target` expressions); `None` for targets that let the packet go on.
pub(crate) fn target_verdict(name: &str) -> Option<Verdict> {
    const NON_TERMINAL: &[&str] = &[
        "LOG",
        "NFLOG",
        "ULOG",
        "MARK",
        "CONNMARK",
        "CONNSECMARK",
        "SECMARK",
        "CT",
        "NOTRACK",
        "TRACE",
        "CHECKSUM",
        "CLASSIFY",
        "DSCP",
        "TOS",
        "TTL",
        "HL",
        "TCPMSS",
        "TCPOPTSTRIP",
        "TEE",
        "AUDIT",
        "SET",
        "IDLETIMER",
        "LED",
        "HMARK",
        "RATEEST",
        "ECN",
        "IPV4OPTSSTRIP",
    ];
    match name {
        "REJECT" => Some(Verdict::Reject),
        "NFQUEUE" | "QUEUE" => Some(Verdict::Queue),
        "DROP" => Some(Verdict::Drop),
        "ACCEPT" => Some(Verdict::Accept),
        "RETURN" => Some(Verdict::Return),
        n if NON_TERMINAL.contains(&n) => None,
        n => Some(Verdict::Other(n.to_string())),
    }
}
