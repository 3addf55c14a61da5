//! nf_tables (`nft`, and `iptables-nft`, whose rules live here too): tables,
//! chains and rules from nfnetlink dumps of one ruleset generation, decoded
//! into [`Table`]s with `nft list` style rule text.

mod compare;
mod expr;
mod message;
mod request;
#[cfg(test)]
mod tests;
mod value;

use std::io;

use message::{generation_id, parse_chain, parse_rule, parse_table};
use request::{
    NFT_MSG_GETCHAIN, NFT_MSG_GETGEN, NFT_MSG_GETRULE, NFT_MSG_GETTABLE, NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWGEN, NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, NLM_F_ACK, NLM_F_DUMP, request,
};

use super::inventory::{Inventory, Table};
use crate::kernel::netlink::Socket;

/// Adds every nf_tables table of this thread's network namespace.
pub(crate) fn read_into(inv: &mut Inventory) {
    match read_ruleset() {
        Ok(tables) => inv.tables.extend(tables),
        Err(e) => inv.errors.push(format!("nf_tables: {e}")),
    }
}

fn generation(sock: &Socket) -> io::Result<u32> {
    let replies = request(sock, NFT_MSG_GETGEN, NLM_F_ACK, NFT_MSG_NEWGEN)?;
    replies
        .iter()
        .find_map(|p| generation_id(p))
        .ok_or_else(|| io::Error::other("no generation id"))
}

/// Tables, chains and rules from three dumps of one ruleset generation.
fn read_ruleset() -> io::Result<Vec<Table>> {
    let sock = Socket::open_protocol(libc::NETLINK_NETFILTER)?;
    for _ in 0..5 {
        let before = generation(&sock)?;
        let dumps = (|| {
            Ok::<_, io::Error>((
                request(&sock, NFT_MSG_GETTABLE, NLM_F_DUMP, NFT_MSG_NEWTABLE)?,
                request(&sock, NFT_MSG_GETCHAIN, NLM_F_DUMP, NFT_MSG_NEWCHAIN)?,
                request(&sock, NFT_MSG_GETRULE, NLM_F_DUMP, NFT_MSG_NEWRULE)?,
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
    // calitrace's own trace table is not the node's.
    let mut out: Vec<Table> = tables
        .iter()
        .filter_map(|m| parse_table(m))
        .filter(|t| !crate::netfilter::trace::is_own_table(&t.name))
        .collect();
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
