//! A table blob as chains: built-in chains start at the table's hook entries
//! and end with their policy (the "underflow" entry); user chains start with
//! an `ERROR` target naming the chain and end with an implicit `RETURN`.

use std::collections::HashMap;

use super::entry::{Entry, Layout, parse_entries};
use super::rule::rule_of;
use super::socket::{NUM_HOOKS, TableInfo};
use super::verdict::{XT_RETURN, standard_verdict_of};
use crate::netfilter::inventory::{Backend, Chain, Hook, Table, Verdict};

/// The priority x_tables registers a table's hooks with (`NF_IP_PRI_*`, the
/// same for IPv6).
pub(super) fn table_priority(table: &str, hook: Hook) -> Option<i32> {
    Some(match table {
        "raw" => -300,
        "mangle" => -150,
        "nat" if matches!(hook, Hook::Prerouting | Hook::Output) => -100,
        "nat" => 100,
        "filter" => 0,
        "security" => 50,
        _ => return None,
    })
}

/// Decodes a table blob as returned by `IPT_SO_GET_ENTRIES`.
pub(super) fn parse_table(
    layout: &Layout,
    name: &str,
    info: &TableInfo,
    blob: &[u8],
) -> Result<Table, String> {
    let entries = parse_entries(layout, blob)?;
    // Jumps point at the first entry after a user chain's ERROR head.
    let chain_at: HashMap<usize, String> = entries
        .windows(2)
        .filter_map(|w| Some((w[1].offset, w[0].error_name()?)))
        .collect();
    let mut chains: Vec<Chain> = Vec::new();
    let mut underflow: Option<usize> = None;
    for (i, e) in entries.iter().enumerate() {
        if let Some(h) = hook_at(info, e.offset) {
            let hook = Hook::from_inet(h as u32);
            chains.push(Chain {
                name: hook.map(|h| h.to_string()).unwrap_or_default(),
                hook,
                priority: hook.and_then(|h| table_priority(name, h)),
                ..Chain::default()
            });
            underflow = Some(info.underflow[h] as usize);
        }
        if let Some(chain_name) = e.error_name() {
            if chain_name == "ERROR" {
                break; // the end of the table
            }
            chains.push(Chain {
                name: chain_name,
                ..Chain::default()
            });
            underflow = None;
            continue;
        }
        let Some(chain) = chains.last_mut() else {
            continue; // not in any chain: a malformed table
        };
        if underflow == Some(e.offset) {
            let policy = standard_verdict_of(e, layout, &chain_at);
            chain.policy = Some(policy.unwrap_or(Verdict::Other(e.target.clone())));
            chain.policy_counters = Some(e.counters);
        } else if !is_implicit_return(chain, e, entries.get(i + 1)) {
            let id = (chain.rules.len() + 1).to_string();
            chain.rules.push(rule_of(layout, e, id, &chain_at));
        }
    }
    Ok(Table {
        backend: Backend::Legacy,
        family: layout.family,
        name: name.to_string(),
        chains,
    })
}

/// The hook whose built-in chain starts at `offset`.
fn hook_at(info: &TableInfo, offset: usize) -> Option<usize> {
    (0..NUM_HOOKS)
        .find(|&h| info.valid_hooks & (1 << h) != 0 && info.hook_entry[h] as usize == offset)
}

/// The `RETURN` iptables appends to every user chain: the last entry before
/// the next chain's head (or the end).
fn is_implicit_return(chain: &Chain, e: &Entry, next: Option<&Entry>) -> bool {
    let user_chain_end = chain.hook.is_none() && next.is_none_or(|n| n.error_name().is_some());
    user_chain_end && e.standard_verdict() == Some(XT_RETURN)
}
