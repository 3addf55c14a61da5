//! The inventory types: every netfilter table, chain and rule of one network
//! namespace, from both iptables backends, in one shape.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::model::{Backend, CalicoPlacement, Family, Hook};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    Return,
    Jump(String),
    Goto(String),
    Queue,
    Continue,
    /// A terminal target or statement without a variant of its own, e.g.
    /// `DNAT`, `MASQUERADE`, an nft `vmap`.
    Other(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("ACCEPT"),
            Verdict::Drop => f.write_str("DROP"),
            Verdict::Reject => f.write_str("REJECT"),
            Verdict::Return => f.write_str("RETURN"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Queue => f.write_str("QUEUE"),
            Verdict::Continue => f.write_str("CONTINUE"),
            Verdict::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

impl Counters {
    /// What was counted since `earlier` (zero where the counters were reset).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Legacy: 1-based position in its chain; nft: the rule handle.
    pub id: String,
    /// Short human summary, `iptables -S` style for legacy, `nft list` style for nft.
    pub text: String,
    /// The rule's terminal verdict, if it has one.
    pub verdict: Option<Verdict>,
    pub comment: Option<String>,
    pub counters: Option<Counters>,
    /// What a REJECT rule sends back (`icmp host-prohibited`, `tcp reset`),
    /// as decoded from its target or `reject` expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_with: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    /// Base chains only.
    pub hook: Option<Hook>,
    pub priority: Option<i32>,
    pub policy: Option<Verdict>,
    pub policy_counters: Option<Counters>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub backend: Backend,
    pub family: Family,
    pub name: String,
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub tables: Vec<Table>,
    /// What could not be read; never fatal.
    pub errors: Vec<String>,
    /// Drops nftables' trace reported since the reading before (live only;
    /// older recordings have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<super::trace::TracedDrop>,
}

/// One counter of the inventory: a rule's, or a chain policy's (`rule: None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CounterKey {
    pub backend: Backend,
    pub family: Family,
    pub table: String,
    pub chain: String,
    /// [`Rule::id`]; `None` for the chain's policy.
    pub rule: Option<String>,
}

impl Inventory {
    /// Both backends, IPv4 and IPv6, in the network namespace of the calling
    /// thread. Has no side effects on the kernel: x_tables tables that do not
    /// exist yet are not created by looking at them.
    pub fn read() -> Inventory {
        let mut inv = Inventory::default();
        super::xtables::read_into(&mut inv);
        super::nftables::read_into(&mut inv);
        inv
    }

    pub fn calico_chains(&self) -> Option<CalicoPlacement> {
        let has = |backend| {
            self.tables
                .iter()
                .filter(|t| t.backend == backend)
                .flat_map(|t| &t.chains)
                .any(|c| c.name.starts_with("cali-"))
        };
        match (has(Backend::Legacy), has(Backend::Nft)) {
            (true, true) => Some(CalicoPlacement::Both),
            (true, false) => Some(CalicoPlacement::Legacy),
            (false, true) => Some(CalicoPlacement::Nft),
            (false, false) => None,
        }
    }

    pub fn find_table(&self, backend: Backend, family: Family, table: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.backend == backend && t.family == family && t.name == table)
    }

    pub fn find_chain(
        &self,
        backend: Backend,
        family: Family,
        table: &str,
        chain: &str,
    ) -> Option<&Chain> {
        self.find_table(backend, family, table)?
            .chains
            .iter()
            .find(|c| c.name == chain)
    }

    /// Every (table, chain, rule) with a counter, and every chain policy with
    /// one, for diffing two inventories.
    pub fn counters(&self) -> Vec<(CounterKey, Counters)> {
        let mut out = Vec::new();
        for t in &self.tables {
            for c in &t.chains {
                let key = |rule: Option<&String>| CounterKey {
                    backend: t.backend,
                    family: t.family,
                    table: t.name.clone(),
                    chain: c.name.clone(),
                    rule: rule.cloned(),
                };
                if let Some(pc) = c.policy_counters {
                    out.push((key(None), pc));
                }
                for r in &c.rules {
                    if let Some(rc) = r.counters {
                        out.push((key(Some(&r.id)), rc));
                    }
                }
            }
        }
        out
    }
}

/// Which backend the `iptables` command uses, from its symlinks (Debian's
/// alternatives, or a direct link to `xtables-*-multi`); the binary is never run.
pub fn iptables_binary_backend() -> Option<Backend> {
    let start = iptables_path()?;
    let chain = link_chain(&start);
    // The last name that says which backend wins: `iptables-nft` may itself be
    // a link to `xtables-nft-multi`, and an alternative's name decides nothing.
    chain.iter().rev().find_map(|p| backend_of_name(p))
}

fn iptables_path() -> Option<PathBuf> {
    let sbin = Path::new("/usr/sbin/iptables");
    if sbin.symlink_metadata().is_ok() {
        return Some(sbin.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("iptables"))
        .find(|p| p.symlink_metadata().is_ok())
}

/// `p` and every path its symlinks lead to, in order.
fn link_chain(p: &Path) -> Vec<PathBuf> {
    crate::kernel::system::symlink_chain(p, |c| std::fs::read_link(c))
}

pub(crate) fn backend_of_name(p: &Path) -> Option<Backend> {
    let name = p.file_name()?.to_str()?;
    if name.contains("nft") {
        Some(Backend::Nft)
    } else if name.contains("legacy") || name == "xtables-multi" {
        // xtables-multi: iptables before 1.8, which only knew x_tables.
        Some(Backend::Legacy)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(name: &str, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            hook: None,
            priority: None,
            policy: None,
            policy_counters: None,
            rules,
        }
    }

    fn table(backend: Backend, chains: Vec<Chain>) -> Table {
        Table {
            backend,
            family: Family::Ipv4,
            name: "filter".into(),
            chains,
        }
    }

    #[test]
    fn calico_placement() {
        let mut inv = Inventory::default();
        assert_eq!(inv.calico_chains(), None);
        inv.tables
            .push(table(Backend::Nft, vec![chain("FORWARD", vec![])]));
        assert_eq!(inv.calico_chains(), None);
        inv.tables
            .push(table(Backend::Legacy, vec![chain("cali-FORWARD", vec![])]));
        assert_eq!(inv.calico_chains(), Some(CalicoPlacement::Legacy));
        inv.tables[0].chains.push(chain("cali-INPUT", vec![]));
        assert_eq!(inv.calico_chains(), Some(CalicoPlacement::Both));
        inv.tables.remove(1);
        assert_eq!(inv.calico_chains(), Some(CalicoPlacement::Nft));
    }

    #[test]
    fn counters_list_policies_and_rules() {
        let rule = Rule {
            id: "1".into(),
            text: "-j DROP".into(),
            verdict: Some(Verdict::Drop),
            comment: None,
            counters: Some(Counters {
                packets: 2,
                bytes: 3,
            }),
            reject_with: None,
        };
        let mut fwd = chain("FORWARD", vec![rule.clone()]);
        fwd.policy_counters = Some(Counters::default());
        let no_counter = Rule {
            counters: None,
            ..rule
        };
        let inv = Inventory {
            tables: vec![table(
                Backend::Legacy,
                vec![fwd, chain("x", vec![no_counter])],
            )],
            errors: vec![],
            traces: vec![],
        };
        let c = inv.counters();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0.rule, None);
        assert_eq!(c[1].0.rule.as_deref(), Some("1"));
        assert_eq!(c[1].1.packets, 2);
        assert!(
            inv.find_chain(Backend::Legacy, Family::Ipv4, "filter", "x")
                .is_some()
        );
        assert!(
            inv.find_chain(Backend::Nft, Family::Ipv4, "filter", "x")
                .is_none()
        );
    }

    #[test]
    fn serde_names() {
        let v = serde_json::to_value((Backend::Nft, Family::Ipv6, Hook::Forward)).unwrap();
        assert_eq!(v, serde_json::json!(["nft", "ipv6", "forward"]));
        let j = serde_json::to_string(&Verdict::Jump("cali-x".into())).unwrap();
        assert_eq!(j, r#"{"jump":"cali-x"}"#);
        assert_eq!(
            serde_json::from_str::<Verdict>(&j).unwrap(),
            Verdict::Jump("cali-x".into())
        );
        assert_eq!(Family::Ipv6.to_string(), "ip6");
        assert_eq!(Hook::Postrouting.to_string(), "POSTROUTING");
    }

    #[test]
    fn backend_from_link_names() {
        let b = |s: &str| backend_of_name(Path::new(s));
        assert_eq!(b("/usr/sbin/xtables-nft-multi"), Some(Backend::Nft));
        assert_eq!(b("/usr/sbin/iptables-legacy"), Some(Backend::Legacy));
        assert_eq!(b("/usr/sbin/xtables-legacy-multi"), Some(Backend::Legacy));
        assert_eq!(b("/etc/alternatives/iptables"), None);
    }

    #[test]
    fn follows_relative_links() {
        let dir = std::env::temp_dir().join(format!("ctinv-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("alt")).unwrap();
        std::fs::write(dir.join("xtables-legacy-multi"), b"").unwrap();
        std::os::unix::fs::symlink("../xtables-legacy-multi", dir.join("alt/iptables")).unwrap();
        std::os::unix::fs::symlink("alt/iptables", dir.join("iptables")).unwrap();
        let chain = link_chain(&dir.join("iptables"));
        let found = chain.iter().rev().find_map(|p| backend_of_name(p));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(chain.len(), 3);
        assert_eq!(found, Some(Backend::Legacy));
    }
}
