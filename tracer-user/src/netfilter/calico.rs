//! Calico's chains as Felix names them, in both dataplanes: which are policy
//! and dispatch chains, and the policy a chain or rule comment names.
//!
//! - iptables: `cali-pi-<suffix>` / `cali-po-` (policy ingress/egress),
//!   `cali-pri-` / `cali-pro-` (profiles), `cali-tw-<iface>` / `cali-fw-`
//!   (to/from a workload); a suffix too long for 28 characters is hashed
//!   (`cali-pi-_<19 chars>`), and only the first rule's comment names it.
//! - nftables (3.30+): the same names behind the table layer (`filter-`),
//!   never hashed.
//! - Suffix, 3.30/3.31: `<tier>/<v1 name>` (`default/ns1/knp.default.foo`,
//!   `default/gnp`, `tier1/ns1/tier1.foo`); 3.32+: `<kind>/[<ns>/]<name>`
//!   (`knp/ns1/foo`, `gnp/foo`), the tier only in the endpoint chain's
//!   "End of tier T. Drop if no policies passed packet".
//! - First rule's comment: `Policy <v1 name> ingress` (3.30/3.31),
//!   `<Kind> [<ns>/]<name> ingress` (3.32+), `Profile <name> ingress`.

use crate::model::PolicyRef;

/// The iptables name of a Calico chain: an nft dataplane chain without its
/// table layer (`filter-cali-tw-x` is `cali-tw-x`).
pub fn iptables_name(chain: &str) -> &str {
    ["filter-", "raw-", "mangle-", "nat-"]
        .iter()
        .find_map(|layer| chain.strip_prefix(layer).filter(|c| c.starts_with("cali-")))
        .unwrap_or(chain)
}

/// Calico's policy and dispatch chains (a drop there is a policy decision),
/// in either dataplane.
pub fn is_policy_chain(chain: &str) -> bool {
    let c = iptables_name(chain);
    [
        "cali-pi-",
        "cali-po-",
        "cali-pri-",
        "cali-pro-",
        "cali-fw-",
        "cali-tw-",
        "cali-gi-",
        "cali-go-",
    ]
    .iter()
    .any(|p| c.starts_with(p))
        || c == "cali-from-wl-dispatch"
        || c == "cali-to-wl-dispatch"
}

/// Short kinds of 3.32+ chain names.
const KINDS: [(&str, &str); 8] = [
    ("np", "NetworkPolicy"),
    ("gnp", "GlobalNetworkPolicy"),
    ("snp", "StagedNetworkPolicy"),
    ("sgnp", "StagedGlobalNetworkPolicy"),
    ("sknp", "StagedKubernetesNetworkPolicy"),
    ("knp", "KubernetesNetworkPolicy"),
    ("kcnp", "KubernetesClusterNetworkPolicy"),
    ("pro", "Profile"),
];

/// The policy a drop in `chain` belongs to: from the chain's name, else from
/// the `comments` of its rules (a hashed iptables name), else, for a drop at
/// the end of a tier in a workload chain, the tier from `drop_comment`.
pub fn policy(chain: &str, comments: &[&str], drop_comment: Option<&str>) -> Option<PolicyRef> {
    let c = iptables_name(chain);
    let (direction, suffix, profile) = if let Some(s) = c.strip_prefix("cali-pi-") {
        ("ingress", s, false)
    } else if let Some(s) = c.strip_prefix("cali-po-") {
        ("egress", s, false)
    } else if let Some(s) = c.strip_prefix("cali-pri-") {
        ("ingress", s, true)
    } else if let Some(s) = c.strip_prefix("cali-pro-") {
        ("egress", s, true)
    } else if let Some(tier) = drop_comment.and_then(end_of_tier) {
        // To the workload is the pod's ingress.
        let direction = if c.starts_with("cali-tw-") {
            "ingress"
        } else {
            "egress"
        };
        return Some(PolicyRef {
            tier: Some(tier.to_string()),
            direction: Some(direction.into()),
            ..Default::default()
        });
    } else {
        return None;
    };
    let named = if suffix.starts_with('_') {
        comments.iter().find_map(|c| of_comment(c))
    } else if profile {
        Some(profile_ref(suffix))
    } else {
        Some(of_suffix(suffix))
    };
    let mut p = named.unwrap_or_default();
    p.direction = Some(direction.into());
    Some(p)
}

/// "End of tier default. Drop if no policies passed packet" -> `default`.
fn end_of_tier(comment: &str) -> Option<&str> {
    let rest = comment.strip_prefix("End of tier ")?;
    rest.split_once(". ").map(|(t, _)| t)
}

fn profile_ref(name: &str) -> PolicyRef {
    PolicyRef {
        kind: Some("Profile".into()),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// A chain name's suffix, in either release's form.
fn of_suffix(suffix: &str) -> PolicyRef {
    let parts: Vec<&str> = suffix.split('/').collect();
    if let Some((_, kind)) = KINDS.iter().find(|(k, _)| *k == parts[0]) {
        // 3.32+: <kind>/[<ns>/]<name>
        let (namespace, name) = match parts.as_slice() {
            [_, ns, name] => (Some(ns.to_string()), name.to_string()),
            [_, rest @ ..] => (None, rest.join("/")),
            [] => (None, String::new()),
        };
        return PolicyRef {
            kind: Some(kind.to_string()),
            namespace,
            name: Some(name),
            ..Default::default()
        };
    }
    // 3.30/3.31: <tier>/<v1 name>
    let (tier, v1) = suffix
        .split_once('/')
        .map_or((None, suffix), |(t, n)| (Some(t), n));
    PolicyRef {
        tier: tier.map(str::to_string),
        ..of_v1_name(v1)
    }
}

/// A 3.30/3.31 policy name: `ns/knp.default.foo`, `ns/foo`, `gnp`,
/// `kanp.adminnetworkpolicy.x`, `ns/staged:foo`.
fn of_v1_name(v1: &str) -> PolicyRef {
    let (namespace, name) = v1
        .split_once('/')
        .map_or((None, v1), |(ns, n)| (Some(ns), n));
    let (kind, name) = if let Some(n) = name.strip_prefix("knp.default.") {
        ("KubernetesNetworkPolicy", n)
    } else if let Some(n) = name.strip_prefix("kanp.adminnetworkpolicy.") {
        ("AdminNetworkPolicy", n)
    } else if let Some(n) = name.strip_prefix("kbanp.baselineadminnetworkpolicy.") {
        ("BaselineAdminNetworkPolicy", n)
    } else if let Some(n) = name.strip_prefix("staged:") {
        if namespace.is_some() {
            ("StagedNetworkPolicy", n)
        } else {
            ("StagedGlobalNetworkPolicy", n)
        }
    } else if namespace.is_some() {
        ("NetworkPolicy", name)
    } else {
        ("GlobalNetworkPolicy", name)
    };
    PolicyRef {
        kind: Some(kind.into()),
        namespace: namespace.map(str::to_string),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// A policy chain's first comment: `Policy ns1/knp.default.foo ingress`,
/// `KubernetesNetworkPolicy ns1/foo ingress`, `Profile kns.ns1 egress`.
fn of_comment(comment: &str) -> Option<PolicyRef> {
    let words: Vec<&str> = comment.split_whitespace().collect();
    let [kind, name, direction] = words.as_slice() else {
        return None;
    };
    if !matches!(*direction, "ingress" | "egress") {
        return None;
    }
    match *kind {
        "Policy" => Some(of_v1_name(name)),
        "Profile" => Some(profile_ref(name)),
        k if KINDS.iter().any(|(_, long)| *long == k) => {
            let (namespace, name) = name
                .split_once('/')
                .map_or((None, *name), |(ns, n)| (Some(ns), n));
            Some(PolicyRef {
                kind: Some(k.to_string()),
                namespace: namespace.map(str::to_string),
                name: Some(name.to_string()),
                ..Default::default()
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: &str, ns: Option<&str>, name: &str, tier: Option<&str>, dir: &str) -> PolicyRef {
        PolicyRef {
            kind: Some(kind.into()),
            namespace: ns.map(str::to_string),
            name: Some(name.into()),
            tier: tier.map(str::to_string),
            direction: Some(dir.into()),
        }
    }

    #[test]
    fn policy_and_dispatch_chains_in_both_dataplanes() {
        for c in [
            "cali-tw-cali1a2b3c4d5e6",
            "filter-cali-tw-cali1a2b3c4d5e6",
            "cali-pi-_AbCdEfGhIjKlMnOpQrS",
            "filter-cali-pi-knp/ns1/allow-dns",
            "filter-cali-to-wl-dispatch",
            "cali-from-wl-dispatch",
            "filter-cali-pri-kns.default",
        ] {
            assert!(is_policy_chain(c), "{c}");
        }
        for c in [
            "filter-FORWARD",
            "cali-FORWARD",
            "filter-cali-FORWARD",
            "filter-cali-INPUT",
            "FORWARD",
        ] {
            assert!(!is_policy_chain(c), "{c}");
        }
    }

    #[test]
    fn chain_names_of_3_32_and_later() {
        assert_eq!(
            policy("filter-cali-pi-knp/ns1/allow-dns", &[], None),
            Some(p(
                "KubernetesNetworkPolicy",
                Some("ns1"),
                "allow-dns",
                None,
                "ingress"
            ))
        );
        assert_eq!(
            policy("filter-cali-po-np/ns1/deny-foo", &[], None),
            Some(p("NetworkPolicy", Some("ns1"), "deny-foo", None, "egress"))
        );
        assert_eq!(
            policy("cali-pi-gnp/policy-1", &[], None),
            Some(p("GlobalNetworkPolicy", None, "policy-1", None, "ingress"))
        );
        assert_eq!(
            policy("cali-pi-gnp/default.foo", &[], None),
            Some(p(
                "GlobalNetworkPolicy",
                None,
                "default.foo",
                None,
                "ingress"
            ))
        );
    }

    #[test]
    fn chain_names_of_3_30_and_3_31() {
        assert_eq!(
            policy(
                "filter-cali-pi-default/ns1/knp.default.allow-dns",
                &[],
                None
            ),
            Some(p(
                "KubernetesNetworkPolicy",
                Some("ns1"),
                "allow-dns",
                Some("default"),
                "ingress"
            ))
        );
        assert_eq!(
            policy("filter-cali-pi-tier1/ns1/tier1.foo", &[], None),
            Some(p(
                "NetworkPolicy",
                Some("ns1"),
                "tier1.foo",
                Some("tier1"),
                "ingress"
            ))
        );
        assert_eq!(
            policy("filter-cali-po-default/gnp-name", &[], None),
            Some(p(
                "GlobalNetworkPolicy",
                None,
                "gnp-name",
                Some("default"),
                "egress"
            ))
        );
        assert_eq!(
            policy(
                "filter-cali-pi-adminnetworkpolicy/kanp.adminnetworkpolicy.x",
                &[],
                None
            ),
            Some(p(
                "AdminNetworkPolicy",
                None,
                "x",
                Some("adminnetworkpolicy"),
                "ingress"
            ))
        );
    }

    #[test]
    fn hashed_iptables_names_are_named_by_the_first_comment() {
        let chain = "cali-pi-_AbCdEfGhIjKlMnOpQrS";
        assert_eq!(
            policy(
                chain,
                &["cali:x", "Policy ns1/knp.default.deny-foo ingress"],
                None
            ),
            Some(p(
                "KubernetesNetworkPolicy",
                Some("ns1"),
                "deny-foo",
                None,
                "ingress"
            ))
        );
        assert_eq!(
            policy(
                chain,
                &["KubernetesNetworkPolicy ns1/deny-foo ingress"],
                None
            ),
            Some(p(
                "KubernetesNetworkPolicy",
                Some("ns1"),
                "deny-foo",
                None,
                "ingress"
            ))
        );
        let unnamed = policy(chain, &["cali:abc"], None).unwrap();
        assert_eq!(
            (unnamed.name, unnamed.direction.as_deref()),
            (None, Some("ingress"))
        );
        assert_eq!(
            policy(
                "cali-pri-_hashedhashedhashed1",
                &["Profile ksa.ns1.default ingress"],
                None
            ),
            Some(PolicyRef {
                kind: Some("Profile".into()),
                name: Some("ksa.ns1.default".into()),
                direction: Some("ingress".into()),
                ..Default::default()
            })
        );
    }

    #[test]
    fn a_tiers_end_in_a_workload_chain_names_the_tier() {
        let t = policy(
            "filter-cali-tw-cali1a2b3c4d5e6",
            &[],
            Some("End of tier default. Drop if no policies passed packet"),
        )
        .unwrap();
        assert_eq!(
            (t.tier.as_deref(), t.direction.as_deref(), t.name),
            (Some("default"), Some("ingress"), None)
        );
        let fw = policy(
            "cali-fw-cali1",
            &[],
            Some("End of tier security. Drop if no policies passed packet"),
        )
        .unwrap();
        assert_eq!(fw.direction.as_deref(), Some("egress"));
        assert_eq!(
            policy("cali-tw-cali1", &[], Some("Drop if no profiles matched")),
            None
        );
        assert_eq!(policy("filter-FORWARD", &[], None), None);
    }
}
