//! Where a packet was seen on its way, and how each place is named in every
//! view: one label per point, for text, TUI and the JSON contract alike.

use std::fmt;

use serde::Serialize;

use super::names::{
    Attribution, Backend, Dir, Family, Hook, LinkPoint, NfVerdict, Owner, RuleVerdict, as_display,
};
use super::packet::Outer;

/// Which netfilter table, chain and rule a packet met, and how that is known.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct NetfilterInfo {
    pub backend: Option<Backend>,
    pub table: Option<String>,
    pub chain: Option<String>,
    #[serde(serialize_with = "as_display")]
    pub hook: Option<Hook>,
    pub rule: Option<String>,
    pub attribution: Attribution,
    /// nft family of the table (`ip`, `ip6`, `inet`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "as_display")]
    pub family: Option<Family>,
    /// The dropping rule's comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// How many rules' counters moved: 1 means the counters were unambiguous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
    /// Whose rule it was and how it refused the packet.
    #[serde(flatten)]
    pub refusal: Refusal,
}

/// A drop by Calico's eBPF programs, named by the counter of Felix's that
/// moved for it (`cali_counters*`) and, for a policy drop, the rule whose
/// counter moved (`cali_rule_ctrs2`, named by Felix's policy debug file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct CalicoEbpfDrop {
    /// Felix's reason, `enum calico_reason` without `CALI_REASON_`:
    /// `DROPPED_BY_POLICY`, `UNAUTH_SOURCE`, `RT_UNKNOWN`, ...
    pub reason: String,
    /// Felix's words for it (`calico-node -bpf counters dump`).
    pub description: String,
    /// The counters map, and the Calico releases that lay it out so.
    pub map: String,
    pub layout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// The rule as Felix's policy debug file prints it, and its MatchID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// Why the rule of a policy drop is not named, where it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Whose rule refused a packet and how: on a drop's netfilter place and on
/// its diagnosis alike (flattened into both).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Refusal {
    /// Whose table or rule it is, where recognisable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Dropped silently, or rejected (the sender was told `reject_with`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<RuleVerdict>,
    /// What the sender of a rejected packet was told: `icmp host-prohibited`,
    /// `icmpx admin-prohibited`, `tcp reset`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reject_with: Option<String>,
    /// The Calico policy or profile behind a policy drop, as far as Felix's
    /// chain names and rule comments say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// A table that had accepted the packet before this one dropped it
    /// (e.g. Calico's own, before firewalld's reject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_by: Option<Owner>,
}

/// A Calico policy or profile, each part `None` where the rules do not say.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
pub struct PolicyRef {
    /// `NetworkPolicy`, `GlobalNetworkPolicy`, `KubernetesNetworkPolicy`,
    /// `Profile`, ...
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub tier: Option<String>,
    /// `ingress` or `egress`, as the policy sees it.
    pub direction: Option<String>,
}

impl PolicyRef {
    /// `KubernetesNetworkPolicy ns1/deny-foo (ingress)`, `tier default`.
    pub fn label(&self) -> String {
        let mut words = Vec::new();
        if let Some(k) = &self.kind {
            words.push(k.clone());
        }
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => words.push(format!("{ns}/{n}")),
            (None, Some(n)) => words.push(n.clone()),
            _ => {}
        }
        if let Some(t) = self.tier.as_ref().filter(|_| self.name.is_none()) {
            words.push(format!("tier {t}"));
        }
        if let Some(d) = &self.direction {
            words.push(format!("({d})"));
        }
        words.join(" ")
    }
}

impl NetfilterInfo {
    /// `legacy filter`, `nft`, or nothing: the backend and table as known.
    fn backend_table(&self, sep: &str) -> Option<String> {
        let parts: Vec<&str> = [self.backend.map(Backend::as_str), self.table.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| parts.join(sep))
    }

    /// The hook's name, or `netfilter` where it is not known.
    pub fn hook_name(&self) -> &'static str {
        self.hook.map_or("netfilter", Hook::as_str)
    }

    /// The chain, where it says more than the hook (a user chain).
    fn chain_beyond_hook(&self) -> Option<&str> {
        self.chain
            .as_deref()
            .filter(|c| self.hook.is_none_or(|h| h.as_str() != *c))
    }

    /// `FORWARD legacy/filter`: where a drop point is, in short.
    pub fn short(&self) -> String {
        match self.backend_table("/") {
            Some(bt) => format!("{} {bt}", self.hook_name()),
            None => self.hook_name().to_string(),
        }
    }

    /// `FORWARD (legacy filter: DROP, chain X, rule Y)`: a table's verdict.
    pub fn verdict_label(&self, verdict: &str) -> String {
        let mut inner = vec![match self.backend_table(" ") {
            Some(bt) => format!("{bt}: {verdict}"),
            None => verdict.to_string(),
        }];
        if let Some(c) = self.chain_beyond_hook() {
            inner.push(format!("chain {c}"));
        }
        if let Some(r) = &self.rule {
            inner.push(format!("rule {r}"));
        }
        format!("{} ({})", self.hook_name(), inner.join(", "))
    }

    /// `legacy filter FORWARD chain X`: a drop point's place.
    pub fn place(&self) -> Option<String> {
        let mut parts: Vec<String> = [self.backend_table(" "), self.hook.map(|h| h.to_string())]
            .into_iter()
            .flatten()
            .collect();
        if let Some(c) = self.chain_beyond_hook() {
            parts.push(format!("chain {c}"));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// One place a packet was seen on its way: an interface (tc), a netfilter
/// table's verdict, or a netfilter link observation point (`dir` is then
/// netfilter, and `point` says which). On an interface where the packet was
/// encapsulated (the uplink), `outer` holds the headers around it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hop {
    /// The node the packet was seen on (cluster views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub ts_ns: u64,
    pub netns: u32,
    pub ifname: Option<String>,
    pub dir: Dir,
    pub ttl: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<NetfilterInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<NfVerdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point: Option<LinkPoint>,
    /// With point `after`: the priority of the table the packet got past.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer: Option<Outer>,
}

impl Hop {
    /// An interface, not a netfilter verdict or link point.
    pub fn is_iface(&self) -> bool {
        self.netfilter.is_none() && self.dir != Dir::Netfilter
    }

    pub fn hook(&self) -> Option<Hook> {
        self.netfilter.as_ref().and_then(|n| n.hook)
    }

    pub fn is_drop_verdict(&self) -> bool {
        self.verdict == Some(NfVerdict::Drop)
    }

    /// Names the hop as every view shows it; `node_netns` (the namespace
    /// calitrace traced in) marks interfaces of other namespaces as a pod's.
    pub fn label(&self, node_netns: Option<u32>) -> HopLabel<'_> {
        HopLabel {
            hop: self,
            node_netns,
        }
    }

    /// Whether two hops are the same place (not the same moment).
    pub fn same_place(&self, o: &Hop) -> bool {
        match (&self.netfilter, &o.netfilter) {
            (Some(a), Some(b)) => {
                a.hook == b.hook
                    && a.backend == b.backend
                    && a.table == b.table
                    && a.chain == b.chain
                    && self.point == o.point
                    && self.priority == o.priority
            }
            (None, None) => self.netns == o.netns && self.ifname == o.ifname && self.dir == o.dir,
            _ => false,
        }
    }
}

/// One place a packet was seen, as kept while waiting for a drop that may
/// never come (on a node, and across nodes): compact, its interface by a
/// number whoever keeps it can name (the ifindex on a node, the interface's
/// place among a node's across nodes) and no node. A drop's journey names
/// its points as [`Hop`]s ([`Point::hop`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub ts_ns: u64,
    pub netns: u32,
    pub ttl: Option<u8>,
    pub at: At,
}

/// What kind of place a [`Point`] is.
#[derive(Debug, Clone, PartialEq)]
pub enum At {
    /// An interface, seen by tc; `outer`: the headers the packet travelled
    /// in there, where it was encapsulated (boxed: most points have none).
    Iface {
        iface: u32,
        dir: Dir,
        outer: Option<Box<Outer>>,
    },
    /// A netfilter table's verdict (exact probes).
    Verdict(Box<(NetfilterInfo, NfVerdict)>),
    /// A netfilter link point the packet passed.
    Link(LinkAt),
}

/// Where a netfilter link saw a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAt {
    pub family: Family,
    pub hook: Option<Hook>,
    pub point: LinkPoint,
    /// The link's priority.
    pub priority: i32,
}

impl Point {
    /// The point as a journey's hop: on `node` (cluster views), its
    /// interface named by `ifname(netns, iface)`.
    pub fn hop(
        &self,
        node: Option<String>,
        ifname: impl FnOnce(u32, u32) -> Option<String>,
    ) -> Hop {
        let mut hop = Hop {
            node,
            ts_ns: self.ts_ns,
            netns: self.netns,
            ifname: None,
            dir: Dir::Netfilter,
            ttl: self.ttl,
            netfilter: None,
            verdict: None,
            point: None,
            priority: None,
            outer: None,
        };
        match &self.at {
            At::Iface { iface, dir, outer } => {
                hop.ifname = ifname(self.netns, *iface);
                hop.dir = *dir;
                hop.outer = outer.as_deref().cloned();
            }
            At::Verdict(v) => {
                hop.netfilter = Some(v.0.clone());
                hop.verdict = Some(v.1);
            }
            At::Link(l) => {
                hop.netfilter = Some(NetfilterInfo {
                    hook: l.hook,
                    attribution: Attribution::Exact,
                    family: Some(l.family),
                    ..Default::default()
                });
                hop.point = Some(l.point);
                // An "after" link sits one above the table it follows.
                hop.priority = (l.point == LinkPoint::After).then(|| l.priority.saturating_sub(1));
            }
        }
        hop
    }

    /// The table and verdict, for a netfilter verdict.
    pub fn verdict(&self) -> Option<&(NetfilterInfo, NfVerdict)> {
        match &self.at {
            At::Verdict(v) => Some(v),
            _ => None,
        }
    }
}

/// `cali1234 ingress`, `pod eth0 egress` (another namespace), `eth0 egress
/// (VXLAN)` (encapsulated), `FORWARD entry`, `INPUT after priority -5` (link
/// points), `FORWARD (legacy filter: ACCEPT)`.
pub struct HopLabel<'a> {
    hop: &'a Hop,
    node_netns: Option<u32>,
}

impl fmt::Display for HopLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.hop;
        if let Some(point) = h.point {
            let hook = h.netfilter.as_ref().map_or("netfilter", |n| n.hook_name());
            return match h.priority {
                Some(p) => write!(f, "{hook} {point} priority {p}"),
                None => write!(f, "{hook} {point}"),
            };
        }
        if let Some(nf) = &h.netfilter {
            let verdict = h.verdict.map_or_else(|| "seen".into(), |v| v.to_string());
            return f.write_str(&nf.verdict_label(&verdict));
        }
        if let Some(node) = &h.node {
            // Across nodes, the node says where; its namespaces are its own.
            write!(f, "{node} ")?;
        } else if self.node_netns.is_some_and(|n| n != h.netns) {
            f.write_str("pod ")?;
        }
        match &h.ifname {
            Some(name) => write!(f, "{name} {}", h.dir)?,
            None => write!(f, "netns {} {}", h.netns, h.dir)?,
        }
        match h.outer.as_ref().and_then(|o| o.encap.label()) {
            Some(encap) => write!(f, " ({encap})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Encap;

    fn iface_hop(outer: Option<Outer>) -> Hop {
        Hop {
            node: None,
            ts_ns: 1,
            netns: 7,
            ifname: Some("eth0".into()),
            dir: Dir::Egress,
            ttl: Some(63),
            netfilter: None,
            verdict: None,
            point: None,
            priority: None,
            outer,
        }
    }

    fn outer(encap: Encap) -> Outer {
        Outer {
            encap,
            ..crate::model::fixtures::vxlan_outer()
        }
    }

    #[test]
    fn an_encapsulated_hop_says_how() {
        let label = |o| iface_hop(o).label(Some(7)).to_string();
        assert_eq!(label(None), "eth0 egress");
        assert_eq!(label(Some(outer(Encap::Vxlan))), "eth0 egress (VXLAN)");
        assert_eq!(label(Some(outer(Encap::Ipip))), "eth0 egress (IPIP)");
        assert_eq!(label(Some(outer(Encap::None))), "eth0 egress");
        let pod = iface_hop(Some(outer(Encap::Vxlan)))
            .label(Some(8))
            .to_string();
        assert_eq!(pod, "pod eth0 egress (VXLAN)");
    }

    #[test]
    fn the_hop_carries_the_outer_headers_only_where_there_are_some() {
        let plain = serde_json::to_value(iface_hop(None)).unwrap();
        assert!(plain.get("outer").is_none(), "{plain}");
        let v = serde_json::to_value(iface_hop(Some(outer(Encap::Vxlan)))).unwrap();
        assert_eq!(v["outer"]["encap"], "vxlan");
        assert_eq!(v["outer"]["dst"], "192.168.7.2");
        assert_eq!(v["outer"]["vni"], 4096);
    }
}
