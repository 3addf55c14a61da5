//! What a netfilter drop's place says once table, chain and rule are known:
//! whose rule it was, drop or reject (and what the sender was told), the
//! Calico policy behind it, and whether Calico had accepted the packet before
//! another table dropped it. Also turns an nftables trace of the drop into
//! its place.

use crate::model::{Attribution, Backend, Family, NetfilterInfo, Owner, Refusal, RuleVerdict};
use crate::netfilter::trace::TracedDrop;
use crate::netfilter::{Inventory, Verdict, calico, owner};

/// Calico's accept mark with the default mark mask (`0xffff0000`): set when
/// Calico's policy accepted a packet, tested by its final FORWARD ACCEPT.
pub const CALICO_ACCEPT_MARK: u32 = 0x10000;

/// The place of a traced drop: table, chain, hook of the base chain, and the
/// rule as the inventory read after it lists it.
pub fn from_trace(t: &TracedDrop, inv: &Inventory) -> NetfilterInfo {
    let table = inv.find_table(Backend::Nft, t.family, &t.table);
    let chain = table.and_then(|tb| tb.chains.iter().find(|c| c.name == t.chain));
    let base = t.base_chain.as_deref().unwrap_or(&t.chain);
    let hook = table
        .and_then(|tb| tb.chains.iter().find(|c| c.name == base))
        .and_then(|c| c.hook);
    let found = t.rule.and_then(|handle| {
        let id = handle.to_string();
        chain.and_then(|c| c.rules.iter().find(|r| r.id == id))
    });
    let rule = match (t.rule, found) {
        (None, _) => "policy DROP".to_string(),
        (Some(handle), Some(r)) => format!("handle {handle}: {}", r.text),
        (Some(handle), None) => format!("handle {handle}"),
    };
    let rejects = found.is_some_and(|r| r.verdict == Some(Verdict::Reject));
    let mut nf = NetfilterInfo {
        backend: Some(Backend::Nft),
        table: Some(t.table.clone()),
        chain: Some(t.chain.clone()),
        hook,
        rule: Some(rule),
        attribution: Attribution::Exact,
        family: Some(t.family),
        comment: found.and_then(|r| r.comment.clone()),
        refusal: Refusal {
            verdict: Some(if rejects {
                RuleVerdict::Reject
            } else {
                RuleVerdict::Drop
            }),
            reject_with: found.and_then(|r| r.reject_with.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let calico_chains = inv.calico_chains().is_some();
    nf.refusal.allowed_by = t
        .accepted_by
        .iter()
        .find_map(|p| owner::of_rule(p.family, &p.table, &p.chain, None, None))
        .filter(|o| *o == Owner::Calico)
        .or_else(|| (calico_chains && t.mark & CALICO_ACCEPT_MARK != 0).then_some(Owner::Calico));
    nf
}

/// Fills the owner and the Calico policy from the place as known (`inv`:
/// the rules read after the drop); drop or reject, and what a reject told
/// the sender, come with the rule (from the trace or the counters).
pub fn complete(nf: &mut NetfilterInfo, inv: Option<&Inventory>, packet_family: Family) {
    let (Some(table), Some(chain)) = (nf.table.clone(), nf.chain.clone()) else {
        return;
    };
    let family = nf.family.unwrap_or(packet_family);
    nf.refusal.owner = owner::of_rule(
        family,
        &table,
        &chain,
        nf.rule.as_deref(),
        nf.comment.as_deref(),
    );
    if nf.refusal.allowed_by == nf.refusal.owner {
        nf.refusal.allowed_by = None;
    }
    if nf.refusal.owner == Some(Owner::Calico) && calico::is_policy_chain(&chain) {
        let comments: Vec<&str> = nf
            .backend
            .zip(inv)
            .and_then(|(b, inv)| inv.find_chain(b, family, &table, &chain))
            .map(|c| {
                c.rules
                    .iter()
                    .filter_map(|r| r.comment.as_deref())
                    .collect()
            })
            .unwrap_or_default();
        nf.refusal.policy = calico::policy(&chain, &comments, nf.comment.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::attribution;
    use crate::netfilter::trace::{TracedPacket, TracedPlace};
    use crate::netfilter::{Chain, Counters, Rule, Table};

    fn firewalld() -> Inventory {
        let rule = |id: &str, text: &str, verdict| Rule {
            id: id.into(),
            text: text.into(),
            verdict,
            comment: None,
            counters: None,
            reject_with: None,
        };
        Inventory {
            tables: vec![Table {
                backend: Backend::Nft,
                family: Family::Inet,
                name: "firewalld".into(),
                chains: vec![
                    Chain {
                        name: "filter_FORWARD".into(),
                        hook: Some(crate::model::Hook::Forward),
                        priority: Some(10),
                        policy: Some(Verdict::Accept),
                        policy_counters: None,
                        rules: vec![rule(
                            "8",
                            "jump filter_FORWARD_ZONES",
                            Some(Verdict::Jump("filter_FORWARD_ZONES".into())),
                        )],
                    },
                    Chain {
                        name: "filter_FWD_public".into(),
                        rules: vec![Rule {
                            reject_with: Some("icmpx admin-prohibited".into()),
                            ..rule(
                                "31",
                                "reject with icmpx type admin-prohibited",
                                Some(Verdict::Reject),
                            )
                        }],
                        ..Default::default()
                    },
                ],
            }],
            ..Default::default()
        }
    }

    fn traced(accepted: &[(&str, &str)]) -> TracedDrop {
        TracedDrop {
            packet: TracedPacket {
                src: "10.244.1.10".parse().unwrap(),
                dst: "10.244.2.10".parse().unwrap(),
                proto: 1,
                sport: 1,
                dport: 1,
                ip_id: 1,
            },
            family: Family::Inet,
            table: "firewalld".into(),
            chain: "filter_FWD_public".into(),
            base_chain: Some("filter_FORWARD".into()),
            rule: Some(31),
            mark: 0,
            accepted_by: accepted
                .iter()
                .map(|(t, c)| TracedPlace {
                    family: Family::Ipv4,
                    table: t.to_string(),
                    chain: c.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn firewallds_reject_after_calicos_accept() {
        let inv = firewalld();
        let mut nf = from_trace(&traced(&[("calico", "filter-FORWARD")]), &inv);
        complete(&mut nf, Some(&inv), Family::Ipv4);
        assert_eq!(nf.table.as_deref(), Some("firewalld"));
        assert_eq!(nf.family, Some(Family::Inet));
        assert_eq!(
            nf.hook,
            Some(crate::model::Hook::Forward),
            "from the base chain"
        );
        assert_eq!(
            nf.rule.as_deref(),
            Some("handle 31: reject with icmpx type admin-prohibited")
        );
        assert_eq!(nf.attribution, Attribution::Exact);
        assert_eq!(nf.refusal.owner, Some(Owner::Firewalld));
        assert_eq!(nf.refusal.verdict, Some(RuleVerdict::Reject));
        assert_eq!(
            nf.refusal.reject_with.as_deref(),
            Some("icmpx admin-prohibited")
        );
        assert_eq!(nf.refusal.allowed_by, Some(Owner::Calico));
        let mut alone = from_trace(&traced(&[]), &inv);
        complete(&mut alone, Some(&inv), Family::Ipv4);
        assert_eq!(alone.refusal.allowed_by, None, "nothing had accepted it");
    }

    #[test]
    fn calico_policy_drops_name_the_policy_and_drops_are_not_rejects() {
        let chain = "filter-cali-pi-knp/ns1/deny-foo";
        let inv = Inventory {
            tables: vec![Table {
                backend: Backend::Nft,
                family: Family::Ipv4,
                name: "calico".into(),
                chains: vec![Chain {
                    name: chain.into(),
                    rules: vec![Rule {
                        id: "12".into(),
                        text: "meta mark & 0x00040000 == 0x00040000 counter drop".into(),
                        verdict: Some(Verdict::Drop),
                        comment: None,
                        counters: None,
                        reject_with: None,
                    }],
                    ..Default::default()
                }],
            }],
            ..Default::default()
        };
        let t = TracedDrop {
            family: Family::Ipv4,
            table: "calico".into(),
            chain: chain.into(),
            base_chain: None,
            rule: Some(12),
            ..traced(&[])
        };
        let mut nf = from_trace(&t, &inv);
        complete(&mut nf, Some(&inv), Family::Ipv4);
        assert_eq!(nf.refusal.owner, Some(Owner::Calico));
        assert_eq!(nf.refusal.verdict, Some(RuleVerdict::Drop));
        assert_eq!(nf.refusal.reject_with, None);
        let p = nf.refusal.policy.unwrap();
        assert_eq!(p.kind.as_deref(), Some("KubernetesNetworkPolicy"));
        assert_eq!(
            (p.namespace.as_deref(), p.name.as_deref()),
            (Some("ns1"), Some("deny-foo"))
        );
    }

    /// iptables-services' FORWARD: a counted REJECT rule and a DROP policy.
    fn distro(reject_pkts: u64, policy_pkts: u64) -> Inventory {
        Inventory {
            tables: vec![Table {
                backend: Backend::Legacy,
                family: Family::Ipv4,
                name: "filter".into(),
                chains: vec![Chain {
                    name: "FORWARD".into(),
                    hook: Some(crate::model::Hook::Forward),
                    policy: Some(Verdict::Drop),
                    policy_counters: Some(Counters {
                        packets: policy_pkts,
                        bytes: 0,
                    }),
                    rules: vec![Rule {
                        id: "1".into(),
                        text: "-j REJECT --reject-with icmp-host-prohibited".into(),
                        verdict: Some(Verdict::Reject),
                        comment: None,
                        counters: Some(Counters {
                            packets: reject_pkts,
                            bytes: 0,
                        }),
                        reject_with: Some("icmp host-prohibited".into()),
                    }],
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }
    }

    /// A legacy FORWARD drop named by the counters moving from `before` to
    /// `after`, then completed.
    fn counted(before: &Inventory, after: &Inventory) -> NetfilterInfo {
        let mut nf = NetfilterInfo {
            backend: Some(Backend::Legacy),
            hook: Some(crate::model::Hook::Forward),
            ..Default::default()
        };
        assert!(attribution::complete(&mut nf, before, after, Family::Ipv4));
        complete(&mut nf, Some(after), Family::Ipv4);
        nf
    }

    #[test]
    fn the_distros_reject_and_a_policy_drop_without_rule() {
        let nf = counted(&distro(0, 0), &distro(1, 0));
        assert_eq!(nf.refusal.owner, Some(Owner::Distro));
        assert_eq!(nf.refusal.verdict, Some(RuleVerdict::Reject));
        assert_eq!(
            nf.refusal.reject_with.as_deref(),
            Some("icmp host-prohibited")
        );
        let policy = counted(&distro(1, 0), &distro(1, 1));
        assert_eq!(policy.rule.as_deref(), Some("policy DROP"));
        assert_eq!(
            (policy.refusal.owner, policy.refusal.verdict),
            (None, Some(RuleVerdict::Drop))
        );
        let mut unknown = NetfilterInfo {
            backend: Some(Backend::Nft),
            ..Default::default()
        };
        complete(&mut unknown, None, Family::Ipv4);
        assert_eq!(unknown.refusal.verdict, None, "nothing known: nothing said");
    }
}
