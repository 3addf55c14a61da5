//! Which table, chain and rule dropped a packet, from the rule counters of
//! both backends: the DROP (or REJECT) rule whose packet counter moved between
//! two readings is the one that dropped. Chain policies count in x_tables; an
//! nf_tables policy has no counter, so a base chain with a DROP policy at the
//! right hook stands in when no counted nf_tables rule moved.

use crate::model::{NetfilterInfo, RuleVerdict};
use crate::netfilter::{Backend, Chain, Counters, Family, Hook, Inventory, Table, Verdict};

/// Where a netfilter drop happened, as far as the counters tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub backend: Backend,
    pub family: Family,
    pub table: String,
    pub chain: String,
    /// Base chain hook (None for a user chain reached by a jump).
    pub hook: Option<Hook>,
    /// `None` when the chain policy dropped.
    pub rule: Option<FoundRule>,
    /// How many packets the counter moved by (0 for an uncounted nft policy).
    pub delta: u64,
    /// How many entries could have been it; 1 means the counters are unambiguous.
    pub candidates: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRule {
    pub id: String,
    pub text: String,
    pub comment: Option<String>,
    /// The rule rejects (else it drops), and what it sends back.
    pub rejects: bool,
    pub reject_with: Option<String>,
}

impl Found {
    /// The `rule` field of the contract: `#3: -m comment --comment "x" -j
    /// DROP`, `handle 7: ... drop comment "x"` or `policy DROP`. A comment
    /// the rule's text lacks is added as `/* x */`; one it has is not repeated.
    pub fn rule_text(&self) -> String {
        match &self.rule {
            Some(r) => {
                let id = if self.backend == Backend::Nft {
                    format!("handle {}", r.id)
                } else {
                    format!("#{}", r.id)
                };
                match &r.comment {
                    Some(c) if !r.text.contains(c.as_str()) => {
                        format!("{id}: {} /* {c} */", r.text)
                    }
                    _ => format!("{id}: {}", r.text),
                }
            }
            None => "policy DROP".into(),
        }
    }
}

/// What is known about the packet before looking at the counters.
#[derive(Debug, Clone, Copy)]
pub struct Clue {
    pub backend: Option<Backend>,
    pub hook: Option<Hook>,
    /// IPv4, IPv6 or ARP.
    pub family: Family,
}

/// An `inet` table sees IPv4 and IPv6, never ARP.
fn family_fits(table: Family, packet: Family) -> bool {
    table == packet || (table == Family::Inet && packet != Family::Arp)
}

fn drops(v: &Option<Verdict>) -> bool {
    matches!(v, Some(Verdict::Drop | Verdict::Reject))
}

fn chain_fits(c: &Chain, clue: &Clue) -> bool {
    match (c.hook, clue.hook) {
        (Some(h), Some(want)) => h == want,
        _ => true,
    }
}

fn table_fits(t: &Table, clue: &Clue) -> bool {
    clue.backend.is_none_or(|b| b == t.backend) && family_fits(t.family, clue.family)
}

/// Attributes a drop by comparing `before` and `after`.
pub fn attribute(before: &Inventory, after: &Inventory, clue: &Clue) -> Option<Found> {
    let mut found = counted_drops(before, after, clue);
    if found.is_empty() && clue.backend != Some(Backend::Legacy) {
        found = uncounted_policies(after, clue);
    }
    let n = found.len();
    // The biggest mover is the likeliest; base chains before user chains on ties.
    found.sort_by_key(|f| (std::cmp::Reverse(f.delta), f.hook.is_none()));
    // A user chain of a table with one base chain is reached from its hook.
    found.into_iter().next().map(|f| Found {
        candidates: n,
        hook: f.hook.or_else(|| {
            after
                .find_table(f.backend, f.family, &f.table)
                .and_then(only_hook)
        }),
        ..f
    })
}

/// A find in chain `c` of table `t`, before it is ranked.
fn found_in(t: &Table, c: &Chain, rule: Option<FoundRule>, delta: u64) -> Found {
    Found {
        backend: t.backend,
        family: t.family,
        table: t.name.clone(),
        chain: c.name.clone(),
        hook: c.hook,
        rule,
        delta,
        candidates: 0,
    }
}

/// The DROP policies and dropping rules whose counters moved.
fn counted_drops(before: &Inventory, after: &Inventory, clue: &Clue) -> Vec<Found> {
    let moved = |now: Option<Counters>, then: Option<Counters>| {
        now.map(|n| n.packets.saturating_sub(then.map_or(0, |t| t.packets)))
            .unwrap_or(0)
    };
    let mut found = Vec::new();
    for t in after.tables.iter().filter(|t| table_fits(t, clue)) {
        for c in t.chains.iter().filter(|c| chain_fits(c, clue)) {
            let old = before.find_chain(t.backend, t.family, &t.name, &c.name);
            if c.policy == Some(Verdict::Drop) {
                let delta = moved(c.policy_counters, old.and_then(|o| o.policy_counters));
                if delta > 0 {
                    found.push(found_in(t, c, None, delta));
                }
            }
            for r in c.rules.iter().filter(|r| drops(&r.verdict)) {
                let then = old
                    .and_then(|o| o.rules.iter().find(|x| x.id == r.id))
                    .and_then(|x| x.counters);
                let delta = moved(r.counters, then);
                if delta > 0 {
                    let rule = FoundRule {
                        id: r.id.clone(),
                        text: r.text.clone(),
                        comment: r.comment.clone(),
                        rejects: r.verdict == Some(Verdict::Reject),
                        reject_with: r.reject_with.clone(),
                    };
                    found.push(found_in(t, c, Some(rule), delta));
                }
            }
        }
    }
    found
}

/// nf_tables policies have no counters: the DROP-policy base chains at the
/// hook.
fn uncounted_policies(after: &Inventory, clue: &Clue) -> Vec<Found> {
    let mut found = Vec::new();
    for t in after
        .tables
        .iter()
        .filter(|t| t.backend == Backend::Nft && table_fits(t, clue))
    {
        for c in t
            .chains
            .iter()
            .filter(|c| c.hook.is_some() && chain_fits(c, clue))
        {
            if c.policy == Some(Verdict::Drop) && c.policy_counters.is_none() {
                found.push(found_in(t, c, None, 0));
            }
        }
    }
    found
}

/// The hook of a table's only base chain.
fn only_hook(t: &Table) -> Option<Hook> {
    let mut hooks = t.chains.iter().filter_map(|c| c.hook);
    match (hooks.next(), hooks.next()) {
        (Some(h), None) => Some(h),
        _ => None,
    }
}

/// Fills in what the counters tell about a drop's netfilter details.
/// Attribution stays what it was: "exact" parts come from the probes, and the
/// rule from counters is never more than inferred.
/// Returns whether the counters named the place.
pub fn complete(
    nf: &mut NetfilterInfo,
    before: &Inventory,
    after: &Inventory,
    family: Family,
) -> bool {
    let Some(found) = attribute(
        before,
        after,
        &Clue {
            backend: nf.backend,
            hook: nf.hook,
            family,
        },
    ) else {
        return false;
    };
    // An exact table/chain from the probes must agree with the counters.
    if nf.table.as_ref().is_some_and(|t| *t != found.table)
        || nf.chain.as_ref().is_some_and(|c| *c != found.chain)
    {
        return false;
    }
    nf.backend = Some(found.backend);
    nf.table = Some(found.table.clone());
    nf.chain = Some(found.chain.clone());
    if nf.hook.is_none() {
        nf.hook = found.hook;
    }
    nf.rule = Some(found.rule_text());
    nf.family = Some(found.family);
    nf.comment = found.rule.as_ref().and_then(|r| r.comment.clone());
    nf.refusal.verdict = Some(match &found.rule {
        Some(r) if r.rejects => RuleVerdict::Reject,
        _ => RuleVerdict::Drop,
    });
    nf.refusal.reject_with = found.rule.as_ref().and_then(|r| r.reject_with.clone());
    nf.candidates = Some(found.candidates);
    true
}

/// Calico's policy and dispatch chains (a drop there is a policy decision).
pub fn is_calico_policy_chain(chain: &str) -> bool {
    crate::netfilter::calico::is_policy_chain(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::{Counters, Rule};

    fn rule(id: &str, verdict: Verdict, packets: u64, comment: Option<&str>) -> Rule {
        Rule {
            id: id.into(),
            text: format!("-j {verdict}"),
            verdict: Some(verdict),
            comment: comment.map(str::to_string),
            counters: Some(Counters {
                packets,
                bytes: packets * 84,
            }),
            reject_with: None,
        }
    }

    fn chain(
        name: &str,
        hook: Option<Hook>,
        policy: Option<(Verdict, Option<u64>)>,
        rules: Vec<Rule>,
    ) -> Chain {
        Chain {
            name: name.into(),
            hook,
            priority: hook.map(|_| 0),
            policy: policy.as_ref().map(|p| p.0.clone()),
            policy_counters: policy.and_then(|p| p.1).map(|n| Counters {
                packets: n,
                bytes: 0,
            }),
            rules,
        }
    }

    fn inv(tables: Vec<Table>) -> Inventory {
        Inventory {
            tables,
            errors: vec![],
            traces: vec![],
        }
    }

    fn table(backend: Backend, family: Family, name: &str, chains: Vec<Chain>) -> Table {
        Table {
            backend,
            family,
            name: name.into(),
            chains,
        }
    }

    fn clue(backend: Option<Backend>) -> Clue {
        Clue {
            backend,
            hook: Some(Hook::Forward),
            family: Family::Ipv4,
        }
    }

    /// Legacy filter: FORWARD policy (counted) jumping to a dispatch chain.
    fn legacy(policy_pkts: u64, dispatch_drop: u64) -> Table {
        table(
            Backend::Legacy,
            Family::Ipv4,
            "filter",
            vec![
                chain(
                    "FORWARD",
                    Some(Hook::Forward),
                    Some((Verdict::Drop, Some(policy_pkts))),
                    vec![rule(
                        "1",
                        Verdict::Jump("cali-from-wl-dispatch".into()),
                        9,
                        None,
                    )],
                ),
                chain(
                    "cali-from-wl-dispatch",
                    None,
                    None,
                    vec![rule(
                        "1",
                        Verdict::Drop,
                        dispatch_drop,
                        Some("Unknown interface"),
                    )],
                ),
            ],
        )
    }

    #[test]
    fn the_rule_whose_counter_moved_dropped() {
        let found = attribute(
            &inv(vec![legacy(0, 3)]),
            &inv(vec![legacy(0, 5)]),
            &clue(Some(Backend::Legacy)),
        )
        .unwrap();
        assert_eq!(
            (
                found.table.as_str(),
                found.chain.as_str(),
                found.delta,
                found.candidates
            ),
            ("filter", "cali-from-wl-dispatch", 2, 1)
        );
        assert_eq!(found.rule_text(), "#1: -j DROP /* Unknown interface */");
        // The text as iptables writes it has the comment already: once is enough.
        let mut listed = found.clone();
        if let Some(r) = listed.rule.as_mut() {
            r.text = "-m comment --comment \"Unknown interface\" -j DROP".into();
        }
        assert_eq!(
            listed.rule_text(),
            "#1: -m comment --comment \"Unknown interface\" -j DROP"
        );
        assert!(is_calico_policy_chain(&found.chain));
    }

    /// Felix's `table arp calico-arp` (one base chain, OUTPUT) beside an
    /// `inet` table whose drop rule also moved.
    fn arp_and_inet(arp_drops: u64, inet_drops: u64) -> Inventory {
        inv(vec![
            table(
                Backend::Nft,
                Family::Arp,
                "calico-arp",
                vec![
                    chain(
                        "filter-OUTPUT",
                        Some(Hook::Output),
                        Some((Verdict::Accept, None)),
                        vec![],
                    ),
                    chain(
                        "filter-cali-arp-cali1",
                        None,
                        None,
                        vec![rule("7", Verdict::Drop, arp_drops, None)],
                    ),
                ],
            ),
            table(
                Backend::Nft,
                Family::Inet,
                "firewalld",
                vec![chain(
                    "filter_OUTPUT",
                    Some(Hook::Output),
                    Some((Verdict::Accept, None)),
                    vec![rule("3", Verdict::Drop, inet_drops, None)],
                )],
            ),
        ])
    }

    #[test]
    fn an_arp_drop_is_an_arp_tables_and_an_inet_table_sees_no_arp() {
        let (before, after) = (arp_and_inet(0, 0), arp_and_inet(1, 5));
        let arp = Clue {
            backend: Some(Backend::Nft),
            hook: None,
            family: Family::Arp,
        };
        let found = attribute(&before, &after, &arp).unwrap();
        assert_eq!(
            (found.table.as_str(), found.chain.as_str(), found.candidates),
            ("calico-arp", "filter-cali-arp-cali1", 1)
        );
        assert_eq!(found.hook, Some(Hook::Output), "the table's only hook");
        let ip = Clue {
            family: Family::Ipv4,
            ..arp
        };
        let found = attribute(&before, &after, &ip).unwrap();
        assert_eq!(
            (found.table.as_str(), found.hook),
            ("firewalld", Some(Hook::Output))
        );
    }

    #[test]
    fn a_counted_policy_drop_is_named_as_policy() {
        let found = attribute(
            &inv(vec![legacy(10, 0)]),
            &inv(vec![legacy(12, 0)]),
            &clue(None),
        )
        .unwrap();
        assert_eq!(
            (found.chain.as_str(), found.rule.is_none()),
            ("FORWARD", true)
        );
        assert_eq!(found.rule_text(), "policy DROP");
    }

    #[test]
    fn nft_policy_without_counter_at_the_right_hook() {
        let t = |hook| {
            table(
                Backend::Nft,
                Family::Inet,
                "cttest",
                vec![chain(
                    "fwdchain",
                    Some(hook),
                    Some((Verdict::Drop, None)),
                    vec![],
                )],
            )
        };
        let before = inv(vec![legacy(0, 0), t(Hook::Forward)]);
        let found = attribute(&before, &before.clone(), &clue(Some(Backend::Nft))).unwrap();
        assert_eq!(
            (
                found.backend,
                found.table.as_str(),
                found.chain.as_str(),
                found.delta
            ),
            (Backend::Nft, "cttest", "fwdchain", 0)
        );
        let elsewhere = inv(vec![t(Hook::Input)]);
        assert_eq!(
            attribute(&elsewhere, &elsewhere, &clue(Some(Backend::Nft))),
            None,
            "wrong hook"
        );
    }

    #[test]
    fn nothing_moved_in_the_dropping_backend_means_unknown() {
        let nft = table(
            Backend::Nft,
            Family::Ipv4,
            "filter",
            vec![chain(
                "FORWARD",
                Some(Hook::Forward),
                Some((Verdict::Accept, None)),
                vec![rule("4", Verdict::Drop, 1, None)],
            )],
        );
        let before = inv(vec![legacy(0, 0), nft.clone()]);
        let after = inv(vec![legacy(0, 7), nft]);
        assert_eq!(
            attribute(&before, &after, &clue(Some(Backend::Nft))),
            None,
            "the legacy counter is not nft's"
        );
        assert_eq!(
            attribute(&before, &after, &clue(Some(Backend::Legacy)))
                .unwrap()
                .delta,
            7
        );
    }

    #[test]
    fn the_biggest_mover_wins_and_ambiguity_is_counted() {
        let t = |a, b| {
            table(
                Backend::Legacy,
                Family::Ipv4,
                "filter",
                vec![chain(
                    "FORWARD",
                    Some(Hook::Forward),
                    Some((Verdict::Accept, Some(0))),
                    vec![
                        rule("1", Verdict::Drop, a, None),
                        rule("2", Verdict::Reject, b, None),
                    ],
                )],
            )
        };
        let found = attribute(&inv(vec![t(0, 0)]), &inv(vec![t(1, 4)]), &clue(None)).unwrap();
        assert_eq!(
            (found.rule.unwrap().id.as_str(), found.candidates),
            ("2", 2)
        );
    }
}
