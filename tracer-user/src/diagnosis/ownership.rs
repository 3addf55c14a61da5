//! What a netfilter drop's place says once table, chain and rule are known:
//! whose rule it was, drop or reject (and what the sender was told), the
//! Calico policy behind it, and whether Calico had accepted the packet before
//! another table dropped it. Also turns an nftables trace of the drop into
//! its place.

use crate::model::{Attribution, Backend, Family, NetfilterInfo, Owner, RuleVerdict};
use crate::netfilter::trace::TracedDrop;
use crate::netfilter::xt_ext::reject_told;
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
    let (rule, comment) = match t.rule {
        None => (Some("policy DROP".to_string()), None),
        Some(handle) => {
            let r = chain.and_then(|c| c.rules.iter().find(|r| r.id == handle.to_string()));
            let text = r.map_or_else(
                || format!("handle {handle}"),
                |r| format!("handle {handle}: {}", r.text),
            );
            (Some(text), r.and_then(|r| r.comment.clone()))
        }
    };
    let mut nf = NetfilterInfo {
        backend: Some(Backend::Nft),
        table: Some(t.table.clone()),
        chain: Some(t.chain.clone()),
        hook,
        rule,
        attribution: Attribution::Exact,
        family: Some(t.family),
        comment,
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

/// Fills owner, verdict, what a reject told the sender, and the Calico
/// policy, from the place as known (`inv`: the rules read after the drop).
pub fn complete(nf: &mut NetfilterInfo, inv: Option<&Inventory>, packet_family: Family) {
    let (Some(table), Some(chain)) = (nf.table.clone(), nf.chain.clone()) else {
        return;
    };
    let family = nf.family.unwrap_or(packet_family);
    let rule_text = nf.rule.clone();
    nf.refusal.owner = owner::of_rule(
        family,
        &table,
        &chain,
        rule_text.as_deref(),
        nf.comment.as_deref(),
    );
    if nf.refusal.allowed_by == nf.refusal.owner {
        nf.refusal.allowed_by = None;
    }
    let told = rule_text
        .as_deref()
        .filter(|r| *r != "policy DROP")
        .and_then(|r| reject_told(r, family));
    let rejects_by_inventory = nf.backend.zip(inv).is_some_and(|(b, inv)| {
        rule_of(inv, b, family, &table, &chain, rule_text.as_deref())
            .is_some_and(|v| v == Verdict::Reject)
    });
    nf.refusal.verdict = rule_text.as_ref().map(|_| {
        if told.is_some() || rejects_by_inventory {
            RuleVerdict::Reject
        } else {
            RuleVerdict::Drop
        }
    });
    nf.refusal.reject_with = told.filter(|_| nf.refusal.verdict == Some(RuleVerdict::Reject));
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

/// The verdict of the rule `rule` (`#3: ...` or `handle 7: ...`) names.
fn rule_of(
    inv: &Inventory,
    backend: Backend,
    family: Family,
    table: &str,
    chain: &str,
    rule: Option<&str>,
) -> Option<Verdict> {
    let id = rule?
        .split(':')
        .next()?
        .trim_start_matches('#')
        .trim_start_matches("handle ")
        .to_string();
    let c = inv.find_chain(backend, family, table, chain)?;
    c.rules.iter().find(|r| r.id == id)?.verdict.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::trace::{TracedPacket, TracedPlace};
    use crate::netfilter::{Chain, Rule, Table};

    fn firewalld() -> Inventory {
        let rule = |id: &str, text: &str, verdict| Rule {
            id: id.into(),
            text: text.into(),
            verdict,
            comment: None,
            counters: None,
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
                        rules: vec![rule(
                            "31",
                            "reject with icmpx type admin-prohibited",
                            Some(Verdict::Reject),
                        )],
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
        let mut nf = NetfilterInfo {
            backend: Some(Backend::Nft),
            family: Some(Family::Ipv4),
            table: Some("calico".into()),
            chain: Some("filter-cali-pi-knp/ns1/deny-foo".into()),
            rule: Some("handle 12: meta mark & 0x00040000 == 0x00040000 counter drop".into()),
            ..Default::default()
        };
        complete(&mut nf, None, Family::Ipv4);
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

    #[test]
    fn the_distros_reject_and_a_policy_drop_without_rule() {
        let mut nf = NetfilterInfo {
            backend: Some(Backend::Legacy),
            table: Some("filter".into()),
            chain: Some("FORWARD".into()),
            rule: Some("#1: -j REJECT --reject-with icmp-host-prohibited".into()),
            ..Default::default()
        };
        complete(&mut nf, None, Family::Ipv4);
        assert_eq!(nf.refusal.owner, Some(Owner::Distro));
        assert_eq!(
            nf.refusal.reject_with.as_deref(),
            Some("icmp host-prohibited")
        );
        let mut policy = NetfilterInfo {
            backend: Some(Backend::Legacy),
            table: Some("filter".into()),
            chain: Some("FORWARD".into()),
            rule: Some("policy DROP".into()),
            ..Default::default()
        };
        complete(&mut policy, None, Family::Ipv4);
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
