//! A flow's journey as steps: the model's journey of its latest packet
//! (seen, implied, failed), and what only a flow knows: where its packets
//! went next when they were not dropped, or the node they never reached.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{FlowStats, Step, StepKind};
use crate::model::Dir;

impl FlowStats {
    /// The steps of the latest packet's journey, in order.
    pub fn steps(&self, node_netns: Option<u32>, egress_to: &HashMap<IpAddr, String>) -> Vec<Step> {
        let mut steps = self.latest.steps(node_netns);
        let next = match &self.latest.drop {
            None => self
                .never_reached()
                .map(|n| (StepKind::Failed, format!("never reached {n}"))),
            Some(_) => self
                .next_point(node_netns, egress_to)
                .map(|p| (StepKind::Missed, p)),
        };
        if let Some((kind, label)) = next {
            steps.push(Step {
                kind,
                label,
                ts_ns: None,
                ttl: None,
            });
        }
        steps
    }

    /// Where the packet was last seen on an interface.
    pub fn last_iface(&self, node_netns: Option<u32>) -> Option<String> {
        self.latest
            .last_iface()
            .map(|h| h.label(node_netns).to_string())
    }

    /// Where the dropped packet would have gone next: the furthest interface
    /// of the last good packet, or where packets to its destination leave.
    fn next_point(
        &self,
        node_netns: Option<u32>,
        egress_to: &HashMap<IpAddr, String>,
    ) -> Option<String> {
        let j = &self.latest;
        if let Some(ok) = &self.last_ok
            && let Some(last) = ok.iter().rev().find(|h| h.is_iface())
            && !j.has_point(last)
        {
            return Some(last.label(node_netns).to_string());
        }
        let forwarded = j.drop.as_ref().is_some_and(|d| d.forwarding());
        let Some(out) = self.key.dst.as_ref().and_then(|d| egress_to.get(d)) else {
            // Forwarded packets leave by some interface; we do not know which.
            return forwarded.then(|| "egress".to_string());
        };
        let seen = j
            .hops
            .iter()
            .any(|h| h.ifname.as_deref() == Some(out) && h.dir == Dir::Egress);
        (!seen).then(|| format!("{out} egress"))
    }
}
