//! Whose rules a table, chain or rule is: Calico's (iptables chains `cali-*`,
//! its nftables dataplane's `ip calico`/`ip6 calico`/`arp calico-arp`),
//! kube-proxy's (`KUBE-*` chains, `ip kube-proxy`), firewalld's (`inet
//! firewalld`, or its iptables backend's zone chains), Docker's, or the
//! distribution's default firewall (iptables-services' `REJECT
//! --reject-with icmp-host-prohibited` in INPUT/FORWARD). Names as the
//! software itself writes them; anything else is the operator's own.

use crate::model::{Family, Owner};

/// The owner of `table` (of `family`), from its name alone.
pub fn of_table(family: Family, table: &str) -> Option<Owner> {
    match (family, table) {
        (Family::Ipv4 | Family::Ipv6, "calico") | (Family::Arp, "calico-arp") => {
            Some(Owner::Calico)
        }
        (Family::Ipv4 | Family::Ipv6, "kube-proxy") => Some(Owner::KubeProxy),
        (Family::Inet, "firewalld") => Some(Owner::Firewalld),
        _ => None,
    }
}

/// The owner of a rule in `chain` of `table`, the rule's text and comment as
/// read; the table's owner where its name says.
pub fn of_rule(
    family: Family,
    table: &str,
    chain: &str,
    text: Option<&str>,
    comment: Option<&str>,
) -> Option<Owner> {
    if let Some(o) = of_table(family, table) {
        return Some(o);
    }
    if chain.starts_with("cali-") || comment.is_some_and(|c| c.starts_with("cali:")) {
        return Some(Owner::Calico);
    }
    if chain.starts_with("KUBE-") {
        return Some(Owner::KubeProxy);
    }
    if chain.starts_with("DOCKER") {
        return Some(Owner::Docker);
    }
    if is_firewalld_chain(chain) {
        return Some(Owner::Firewalld);
    }
    // The rule as calitrace writes it may lead with its id (`#3: `, `handle 7: `).
    let text = text.unwrap_or("");
    let text = match text.split_once(": ") {
        Some((id, rest)) if id.starts_with('#') || id.starts_with("handle ") => rest,
        _ => text,
    };
    if matches!(chain, "INPUT" | "FORWARD") && is_distro_reject(text) {
        return Some(Owner::Distro);
    }
    None
}

/// firewalld's own chains in its iptables backend (and nft table names).
fn is_firewalld_chain(chain: &str) -> bool {
    const ZONES: [&str; 6] = [
        "_ZONES",
        "_ZONES_SOURCE",
        "_direct",
        "_POLICIES_pre",
        "_POLICIES_post",
        "_public",
    ];
    const PREFIXES: [&str; 6] = ["FWDI_", "FWDO_", "IN_", "FWD_", "filter_", "nat_"];
    ZONES.iter().any(|z| chain.ends_with(z))
        || PREFIXES.iter().any(|p| chain.starts_with(p))
            && chain.contains('_')
            && chain.chars().any(|c| c.is_ascii_lowercase())
}

/// RHEL's iptables-services default: `-j REJECT --reject-with
/// icmp-host-prohibited` (IPv6: `icmp6-adm-prohibited`), as iptables or nft
/// lists it.
fn is_distro_reject(text: &str) -> bool {
    let words: Vec<&str> = text
        .split_whitespace()
        .filter(|w| *w != "counter")
        .collect();
    matches!(
        words.as_slice(),
        [
            "-j",
            "REJECT",
            "--reject-with",
            "icmp-host-prohibited" | "icmp6-adm-prohibited"
        ] | ["reject", "with", "icmp", "type", "host-prohibited"]
            | ["reject", "with", "icmpv6", "type", "admin-prohibited"]
    )
}

/// What fixes a drop in `owner`'s rules, in one sentence.
pub fn fix(owner: Owner) -> &'static str {
    match owner {
        Owner::Calico => "Calico's own rules: see the policy named",
        Owner::KubeProxy => {
            "kube-proxy's rules: a Service without ready endpoints, or a ClusterIP port that does not exist (`kubectl get endpointslices`)"
        }
        Owner::Firewalld => {
            "firewalld rejects what Calico accepted: put the pod and service CIDRs in a trusted zone, or a policy that accepts forwarding between them (`firewall-cmd --permanent --zone=trusted --add-source=<pod CIDR>`), or stop firewalld on Kubernetes nodes"
        }
        Owner::Docker => {
            "Docker's rules (DOCKER-* chains): Docker sets the FORWARD policy to DROP; run nodes without Docker's networking or accept the pod CIDRs in DOCKER-USER"
        }
        Owner::Distro => {
            "the distribution's default REJECT (iptables-services) comes before Calico's final ACCEPT: remove it from /etc/sysconfig/iptables (and ip6tables) or set Felix's ChainInsertMode to Insert"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_as_the_software_names_its_tables_and_chains() {
        assert_eq!(of_table(Family::Ipv4, "calico"), Some(Owner::Calico));
        assert_eq!(of_table(Family::Arp, "calico-arp"), Some(Owner::Calico));
        assert_eq!(
            of_table(Family::Inet, "calico"),
            None,
            "Calico makes ip and ip6 tables only"
        );
        assert_eq!(of_table(Family::Ipv6, "kube-proxy"), Some(Owner::KubeProxy));
        assert_eq!(of_table(Family::Inet, "firewalld"), Some(Owner::Firewalld));
        let rule = |table, chain, text| of_rule(Family::Ipv4, table, chain, Some(text), None);
        assert_eq!(
            rule("filter", "cali-tw-cali1", "-j DROP"),
            Some(Owner::Calico)
        );
        assert_eq!(
            rule("filter", "KUBE-FORWARD", "-j DROP"),
            Some(Owner::KubeProxy)
        );
        assert_eq!(
            rule("filter", "DOCKER-ISOLATION-STAGE-2", "-j DROP"),
            Some(Owner::Docker)
        );
        assert_eq!(
            rule("filter", "FWDI_public", "-j REJECT"),
            Some(Owner::Firewalld)
        );
        assert_eq!(
            rule(
                "filter",
                "FORWARD",
                "-j REJECT --reject-with icmp-host-prohibited"
            ),
            Some(Owner::Distro)
        );
        assert_eq!(
            rule(
                "filter",
                "FORWARD",
                "counter reject with icmp type host-prohibited"
            ),
            Some(Owner::Distro)
        );
        assert_eq!(
            rule("filter", "FORWARD", "-j DROP"),
            None,
            "the operator's own"
        );
        assert_eq!(
            rule(
                "filter",
                "INPUT",
                "-s 10.0.0.0/8 -j REJECT --reject-with icmp-host-prohibited"
            ),
            None
        );
        assert_eq!(
            of_rule(
                Family::Ipv4,
                "filter",
                "FORWARD",
                Some("-j ACCEPT"),
                Some("cali:S93hcgKJrXEqnTfs")
            ),
            Some(Owner::Calico)
        );
        assert_eq!(
            rule("filter", "FORWARD_direct", "-j DROP"),
            Some(Owner::Firewalld)
        );
        assert_eq!(rule("filter", "MY_CHAIN", "-j DROP"), None);
    }
}
