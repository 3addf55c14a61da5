//! The netfilter rule inventory of a network namespace, read directly from the
//! kernel for both iptables backends: x_tables through the `IPT_SO_GET_*`
//! socket options ([`xtables`], what `iptables-legacy` uses) and nf_tables
//! through nfnetlink dumps ([`nftables`], which also holds the rules of
//! `iptables-nft`). No iptables or nft command is run.

pub mod calico;
#[cfg(test)]
mod fuzz;
pub mod inventory;
pub mod nftables;
pub mod owner;
mod text;
pub mod trace;
pub mod xt_ext;
pub mod xtables;

pub use inventory::{
    Backend, CalicoPlacement, Chain, CounterKey, Counters, Family, Hook, Inventory, Rule, Table,
    Verdict, iptables_binary_backend,
};
