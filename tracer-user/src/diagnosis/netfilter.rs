//! NETFILTER_DROP, POLICY_DROP and IPTABLES_BACKEND_MISMATCH.

use super::attribution::is_calico_policy_chain;
use super::problem::{Finding, Problem, of_flow, pair, pair_text};
use crate::facts::Environment;
use crate::model::{
    Backend, CalicoPlacement, Code, Diagnosis, DropRecord, NetfilterInfo, Owner, RuleVerdict, Stage,
};

/// A table dropped the packet: POLICY_DROP when the chain is one of Calico's
/// policy or dispatch chains, NETFILTER_DROP otherwise.
pub fn table_drop(d: &DropRecord, nf: &NetfilterInfo) -> Finding {
    let policy = nf.chain.as_deref().is_some_and(is_calico_policy_chain)
        && nf.refusal.owner.is_none_or(|o| o == Owner::Calico);
    let code = if policy {
        Code::PolicyDrop
    } else {
        Code::NetfilterDrop
    };
    let (summary, hint) = if policy {
        policy_words(d, nf)
    } else {
        netfilter_words(d, nf)
    };
    Finding {
        problem: Problem::TableDrop {
            code,
            backend: nf.backend,
            table: nf.table.clone(),
            chain: nf.chain.clone(),
            hook: nf.hook,
            rule: nf.rule.clone(),
            flow: pair(d),
        },
        diagnosis: located(d, nf, code, summary, hint),
    }
}

/// A diagnosis about a drop's flow at a place in the rules.
fn located(
    d: &DropRecord,
    nf: &NetfilterInfo,
    code: Code,
    summary: String,
    hint: String,
) -> Diagnosis {
    Diagnosis {
        backend: nf.backend,
        table: nf.table.clone(),
        chain: nf.chain.clone(),
        hook: nf.hook,
        rule: nf.rule.clone(),
        attribution: Some(nf.attribution),
        family: nf.family,
        refusal: nf.refusal.clone(),
        ..of_flow(d, code, Stage::Netfilter, summary, hint)
    }
}

fn policy_words(d: &DropRecord, nf: &NetfilterInfo) -> (String, String) {
    let chain = nf.chain.as_deref().unwrap_or("?");
    let place = describe(nf);
    // The rule's comment says why, unless the rule shown says it already.
    let why = nf
        .comment
        .as_deref()
        .filter(|c| !place.contains(c))
        .map(|c| format!(" (\"{c}\")"))
        .unwrap_or_default();
    let by = nf
        .refusal
        .policy
        .as_ref()
        .map(|p| p.label())
        .filter(|l| !l.is_empty())
        .map(|l| format!(" {l}"))
        .unwrap_or_default();
    let hint = policy_hint(chain, nf);
    (
        format!(
            "{} {} by Calico policy{by}: {place}{why}",
            pair_text(d),
            refused(nf)
        ),
        hint,
    )
}

/// What to look at for a drop in Calico's policy or dispatch chains: the
/// policy named, the tier that passed nothing, the profiles, or Felix.
fn policy_hint(chain: &str, nf: &NetfilterInfo) -> String {
    let comment = nf.comment.as_deref().unwrap_or("");
    let policy = nf.refusal.policy.as_ref();
    if comment.ends_with("Unknown interface") {
        return format!(
            "{chain} has no entry for this workload interface: Felix has not programmed it (is calico-node healthy on this node, and the pod's cali interface known to it?)"
        );
    }
    if comment.ends_with("Drop if no profiles matched") {
        return "no profile of the pod accepted it: the namespace's profile (kns.<namespace>) normally allows everything; is the pod's namespace known to Calico (`calicoctl get profiles`)?".into();
    }
    match policy {
        Some(p) if p.name.is_some() => {
            let ns = p
                .namespace
                .as_deref()
                .map(|n| format!(" -n {n}"))
                .unwrap_or_default();
            let name = p.name.as_deref().unwrap_or("");
            match p.kind.as_deref() {
                Some("KubernetesNetworkPolicy") => format!(
                    "the Kubernetes NetworkPolicy {name} denies this traffic: `kubectl get networkpolicy{ns} {name} -o yaml`"
                ),
                Some("Profile") => format!(
                    "Calico's profile {name} denies this traffic: `calicoctl get profile {name} -o yaml`"
                ),
                _ => format!(
                    "the Calico policy {} denies this traffic: `calicoctl get networkpolicy,globalnetworkpolicy -A -o wide | grep {name}`",
                    p.label()
                ),
            }
        }
        Some(p) if p.tier.is_some() => format!(
            "no policy in tier {} allowed or passed this traffic ({chain}): add an allow (or a pass) for it in that tier, or check the policies that select the pods involved",
            p.tier.as_deref().unwrap_or("")
        ),
        _ => format!(
            "a NetworkPolicy or GlobalNetworkPolicy denies this traffic ({chain}); check the policies that select the pods involved (`calicoctl get networkpolicy,globalnetworkpolicy -A -o wide`)"
        ),
    }
}

/// `dropped`, or `rejected (the sender was told icmp host-prohibited)`.
fn refused(nf: &NetfilterInfo) -> String {
    match (nf.refusal.verdict, &nf.refusal.reject_with) {
        (Some(RuleVerdict::Reject), Some(w)) => format!("rejected (the sender was told {w})"),
        (Some(RuleVerdict::Reject), None) => "rejected".into(),
        _ => "dropped".into(),
    }
}

fn netfilter_words(d: &DropRecord, nf: &NetfilterInfo) -> (String, String) {
    let list = match nf.backend {
        Some(b) => b.list_command(),
        None => "iptables-legacy-save -c; nft -a list ruleset",
    };
    let what = match (&nf.rule, nf.chain.as_deref(), nf.hook) {
        (Some(r), Some(c), _) if r == "policy DROP" => format!("the DROP policy of chain {c}"),
        (Some(_), Some(c), _) => format!("the rule in chain {c}"),
        (None, _, Some(h)) => format!("a DROP rule or a DROP policy in {h}"),
        _ => "a DROP rule or policy".into(),
    };
    let whose = match nf.refusal.owner {
        Some(o) => o.label().to_string(),
        None => "netfilter".into(),
    };
    let before = match nf.refusal.allowed_by {
        Some(a) if nf.refusal.owner.is_some() && nf.refusal.allowed_by != nf.refusal.owner => {
            format!("{} allowed it; {whose} {}: ", a.label(), refused(nf))
        }
        Some(a) => format!("{} allowed it, then: ", a.label()),
        None => String::new(),
    };
    let from_unknown_host = nf.comment.as_deref().is_some_and(|c| {
        c.contains("from non-allowed hosts") || c.contains("from non-Calico hosts")
    });
    let hint = match nf.refusal.owner {
        Some(Owner::Calico) if from_unknown_host => format!(
            "Calico drops tunnel packets from hosts not in its host set: is the sending node's Node resource (and its tunnel/BGP address) known to Calico, with this source address? (`calicoctl get nodes -o wide`; the rule: `{list}`)"
        ),
        Some(Owner::Calico) | None => {
            format!("look at {what} with `{list}`; Calico's own rules live in cali-* chains")
        }
        Some(o) => format!("{}; the rule: `{list}`", crate::netfilter::owner::fix(o)),
    };
    (
        format!(
            "{}{} {} by {whose}: {}",
            before,
            pair_text(d),
            refused(nf),
            describe(nf)
        ),
        hint,
    )
}

/// The drop came from one backend while Calico's chains live in the other
/// (or in both): Calico's ACCEPTs do not apply where the packet died.
pub fn backend_mismatch(d: &DropRecord, nf: &NetfilterInfo, env: &Environment) -> Option<Finding> {
    let dropper = nf.backend?;
    let calico = env.facts.netfilter.as_ref()?.calico_chains()?;
    match (calico, dropper) {
        (CalicoPlacement::Legacy, Backend::Nft)
        | (CalicoPlacement::Nft, Backend::Legacy)
        | (CalicoPlacement::Both, _) => {}
        _ => return None,
    }
    let (summary, hint) = mismatch_words(nf, calico, env.facts.iptables_binary);
    Some(Finding {
        problem: Problem::BackendMismatch {
            backend: nf.backend,
            table: nf.table.clone(),
            chain: nf.chain.clone(),
            calico,
        },
        diagnosis: Diagnosis {
            calico_backend: Some(calico),
            ..located(d, nf, Code::IptablesBackendMismatch, summary, hint)
        },
    })
}

fn mismatch_words(
    nf: &NetfilterInfo,
    calico: CalicoPlacement,
    node: Option<Backend>,
) -> (String, String) {
    let place = describe(nf);
    let summary = if calico == CalicoPlacement::Both {
        format!(
            "dropped by {place}, while Calico's cali-* chains exist in both iptables backends: one set is stale and both apply"
        )
    } else {
        format!(
            "dropped by {place}, while Calico wrote its accept rules with iptables-{calico}: both backends apply, an ACCEPT in one is not final"
        )
    };
    let setting = match node {
        Some(Backend::Nft) => "FELIX_IPTABLESBACKEND=NFT",
        Some(Backend::Legacy) => "FELIX_IPTABLESBACKEND=Legacy",
        None => "FELIX_IPTABLESBACKEND to the backend the node uses",
    };
    let hint = format!(
        "this node's iptables is {} (`iptables -V`, `ls -l /usr/sbin/iptables`): set {setting} on calico-node so Felix programs the backend the node uses{}",
        node.map_or("unknown", Backend::as_str),
        if calico == CalicoPlacement::Both {
            ", then remove the stale cali-* chains from the other backend"
        } else {
            ""
        }
    );
    (summary, hint)
}

/// "nft table ip filter, chain FORWARD, hook FORWARD, rule handle 4: ..."
pub fn describe(nf: &NetfilterInfo) -> String {
    let mut parts = Vec::new();
    match (nf.backend, nf.table.as_deref()) {
        (Some(b), Some(t)) => {
            let family = nf.family.map(|f| format!("{f} ")).unwrap_or_default();
            let tool = match b {
                Backend::Nft => "nft",
                Backend::Legacy => "iptables-legacy",
            };
            parts.push(format!("{tool} table {family}{t}"))
        }
        (Some(Backend::Nft), None) => parts.push("nf_tables (table not known)".into()),
        (Some(Backend::Legacy), None) => parts.push("iptables-legacy (table not known)".into()),
        (None, _) => parts.push("backend not known".into()),
    }
    if let Some(c) = &nf.chain {
        parts.push(format!("chain {c}"));
    }
    if let Some(h) = nf.hook {
        parts.push(format!("hook {h}"));
    }
    if let Some(r) = &nf.rule {
        parts.push(format!("rule {r}"));
    }
    parts.join(", ")
}
