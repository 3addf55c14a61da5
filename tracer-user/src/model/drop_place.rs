//! Where and why a packet died, written one way for every view: the one-line
//! place (text lines, the TUI's journey), its short form (the drop points
//! table) and its facts (details panes, text's brackets).

use super::journey::NetfilterInfo;
use super::names::{Hook, RuleVerdict, Stage};
use super::reason::DropReason;
use super::records::DropRecord;

/// The place of a drop, as a [`DropRecord`] carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct DropPlace {
    pub ts_ns: u64,
    pub netns: u32,
    pub reason: DropReason,
    /// The kernel function that freed the packet.
    pub location: Option<String>,
    pub stage: Stage,
    pub netfilter: Option<NetfilterInfo>,
    pub ifname: Option<String>,
    pub pod: Option<String>,
}

impl DropRecord {
    pub fn place(&self) -> DropPlace {
        DropPlace {
            ts_ns: self.ts_ns,
            netns: self.netns,
            reason: self.reason.clone(),
            location: self.location.clone(),
            stage: self.stage,
            netfilter: self.netfilter.clone(),
            ifname: self.ifname.clone(),
            pod: self.pod.clone(),
        }
    }
}

impl DropPlace {
    /// Short: `FORWARD legacy/filter`, `routing ip_route_input_slow`.
    pub fn short(&self) -> String {
        match &self.netfilter {
            Some(nf) => nf.short(),
            None => format!("{} {}", self.stage, self.reason),
        }
    }

    /// `REJECT` where a rule rejected the packet (the sender was told), else
    /// `DROP`.
    pub fn verb(&self) -> &'static str {
        match self.netfilter.as_ref().and_then(|nf| nf.refusal.verdict) {
            Some(RuleVerdict::Reject) => "REJECT",
            _ => "DROP",
        }
    }

    /// The failing point, e.g. `FORWARD (legacy filter: DROP) by Calico:
    /// <policy>` or `route lookup on eth0 (NO_ROUTE)`.
    pub fn label(&self) -> String {
        if let Some(nf) = &self.netfilter {
            return nf.refusal_label(self.verb());
        }
        let place = match self.stage {
            Stage::Routing | Stage::RpFilter => "route lookup".to_string(),
            Stage::Ttl => "forward".to_string(),
            Stage::Neighbor => "neighbour lookup".to_string(),
            Stage::Mtu => "output (MTU)".to_string(),
            _ => self
                .location
                .clone()
                .unwrap_or_else(|| self.stage.to_string()),
        };
        match &self.ifname {
            Some(i) => format!("{place} on {i} ({})", self.reason),
            None => format!("{place} ({})", self.reason),
        }
    }

    /// What the kernel said: `NO_ROUTE in ip_route_input_slow (stage
    /// routing), dev eth0, in pod shop/web-0`.
    pub fn kernel(&self) -> String {
        let mut s = format!(
            "{} in {} (stage {})",
            self.reason,
            self.location.as_deref().unwrap_or("?"),
            self.stage
        );
        if let Some(i) = &self.ifname {
            s.push_str(&format!(", dev {i}"));
        }
        if let Some(p) = &self.pod {
            s.push_str(&format!(", in pod {p}"));
        }
        s
    }

    /// The netfilter hook the packet died at, if it did at one.
    pub fn hook(&self) -> Option<Hook> {
        self.netfilter.as_ref().and_then(|n| n.hook)
    }
}

impl NetfilterInfo {
    /// A table's refusal: its verdict label, whose rule, which policy, what
    /// the sender was told and who had allowed the packet before.
    pub fn refusal_label(&self, verb: &str) -> String {
        let mut s = self.verdict_label(verb);
        let r = &self.refusal;
        if let Some(o) = r.owner {
            s.push_str(&format!(" by {}", o.label()));
        }
        if let Some(p) = r
            .policy
            .as_ref()
            .map(|p| p.label())
            .filter(|l| !l.is_empty())
        {
            s.push_str(&format!(": {p}"));
        }
        if let Some(w) = &r.reject_with {
            s.push_str(&format!("; sender told {w}"));
        }
        if let Some(a) = r.allowed_by {
            s.push_str(&format!("; {} had allowed it", a.label()));
        }
        s
    }

    /// Every fact known of the table and rule, named: `backend nft, table
    /// ip filter, chain FORWARD, ...`.
    pub fn facts(&self) -> String {
        let known: Vec<String> = [
            ("backend", self.backend.map(|b| b.to_string())),
            (
                "table",
                self.table.as_ref().map(|t| match self.family {
                    Some(f) => format!("{f} {t}"),
                    None => t.clone(),
                }),
            ),
            ("chain", self.chain.clone()),
            ("hook", self.hook.map(|h| h.to_string())),
            ("rule", self.rule.clone()),
            ("owner", self.refusal.owner.map(|o| o.to_string())),
            ("policy", self.refusal.policy.as_ref().map(|p| p.label())),
            (
                "REJECT",
                self.refusal
                    .reject_with
                    .as_ref()
                    .map(|w| format!("(sender told {w})")),
            ),
            ("allowed by", self.refusal.allowed_by.map(|o| o.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
        .collect();
        known.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::ping_drop;
    use crate::model::{Backend, Owner};

    #[test]
    fn a_route_drop_is_placed_at_the_route_lookup() {
        let mut d = ping_drop(Stage::Routing, "IP_INADDRERRORS", None);
        d.ifname = Some("eth0".into());
        let p = d.place();
        assert_eq!(p.label(), "route lookup on eth0 (IP_INADDRERRORS)");
        assert_eq!(p.short(), "routing IP_INADDRERRORS");
        assert!(
            p.kernel().starts_with("IP_INADDRERRORS in "),
            "{}",
            p.kernel()
        );
        assert!(
            p.kernel().ends_with("(stage routing), dev eth0"),
            "{}",
            p.kernel()
        );
    }

    #[test]
    fn a_rejecting_rule_names_its_owner_and_what_the_sender_was_told() {
        let mut nf = NetfilterInfo {
            backend: Some(Backend::Nft),
            table: Some("firewalld".into()),
            chain: Some("filter_FORWARD".into()),
            hook: Some(Hook::Forward),
            ..Default::default()
        };
        nf.refusal.owner = Some(Owner::Firewalld);
        nf.refusal.verdict = Some(RuleVerdict::Reject);
        nf.refusal.reject_with = Some("icmpx admin-prohibited".into());
        nf.refusal.allowed_by = Some(Owner::Calico);
        let p = ping_drop(Stage::Netfilter, "NETFILTER_DROP", Some(nf)).place();
        assert_eq!(p.verb(), "REJECT");
        assert_eq!(p.short(), "FORWARD nft/firewalld");
        let label = p.label();
        assert!(
            label.starts_with("FORWARD (nft firewalld: REJECT, chain filter_FORWARD)"),
            "{label}"
        );
        assert!(
            label.ends_with("sender told icmpx admin-prohibited; Calico had allowed it"),
            "{label}"
        );
        let facts = p.netfilter.as_ref().unwrap().facts();
        assert!(
            facts.contains("REJECT (sender told icmpx admin-prohibited)"),
            "{facts}"
        );
    }
}
