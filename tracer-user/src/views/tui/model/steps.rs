//! A flow's journey as steps: the points its latest packet was seen at, the
//! points it must have passed in between, and where it died.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{DropInfo, FlowStats, Journey, Step, StepKind};
use crate::model::{Dir, Hook, Stage};

/// A point of the datapath a packet must have passed to get where it was
/// seen next: a netfilter hook, or the route lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Passage {
    Hook(Hook),
    RouteLookup,
}

impl Passage {
    /// Order in the IPv4/IPv6 datapath, for placing implied points.
    fn rank(self) -> u8 {
        match self {
            Passage::Hook(Hook::Prerouting) => 0,
            Passage::RouteLookup => 1,
            Passage::Hook(Hook::Input | Hook::Forward | Hook::Output) => 2,
            Passage::Hook(Hook::Postrouting) => 3,
            Passage::Hook(_) => 4,
        }
    }

    fn label(self) -> String {
        match self {
            Passage::Hook(h) => h.to_string(),
            Passage::RouteLookup => "route lookup".into(),
        }
    }
}

impl DropInfo {
    /// Points a packet must have passed to get where it died, after its last
    /// tc sighting (`came_in`: it was seen arriving on an interface).
    fn implied(&self, came_in: bool) -> Vec<Passage> {
        use Passage::{Hook as H, RouteLookup as Route};
        if let Some(hook) = self.netfilter.as_ref().and_then(|n| n.hook) {
            return match (hook, came_in) {
                (Hook::Input | Hook::Forward, true) => vec![H(Hook::Prerouting), Route],
                (Hook::Postrouting, true) => {
                    vec![H(Hook::Prerouting), Route, H(Hook::Forward)]
                }
                (Hook::Postrouting, false) => vec![H(Hook::Output)],
                _ => vec![],
            };
        }
        match (self.stage, came_in) {
            (Stage::Routing | Stage::RpFilter, true) => vec![H(Hook::Prerouting)],
            (Stage::Ttl, true) => vec![H(Hook::Prerouting), Route],
            (Stage::Neighbor | Stage::Mtu, true) => {
                vec![H(Hook::Prerouting), Route, H(Hook::Forward)]
            }
            _ => vec![],
        }
    }
}

impl FlowStats {
    /// The steps of the latest packet's journey, in order.
    pub fn steps(&self, node_netns: Option<u32>, egress_to: &HashMap<IpAddr, String>) -> Vec<Step> {
        let j = &self.latest;
        let mut steps: Vec<(Step, Option<Hook>)> = j
            .hops
            .iter()
            .map(|h| {
                let step = Step {
                    kind: StepKind::Seen,
                    label: h.label(node_netns).to_string(),
                    ts_ns: Some(h.ts_ns),
                    ttl: h.ttl,
                };
                (step, h.hook())
            })
            .collect();
        let Some(d) = &j.drop else {
            let mut steps: Vec<Step> = steps.into_iter().map(|(s, _)| s).collect();
            if let Some(n) = self.never_reached() {
                steps.push(Step {
                    kind: StepKind::Failed,
                    label: format!("never reached {n}"),
                    ts_ns: None,
                    ttl: None,
                });
            }
            return steps;
        };
        let came_in = j
            .hops
            .iter()
            .rev()
            .find(|h| h.is_iface())
            .is_some_and(|h| h.dir == Dir::Ingress);
        for p in d.implied(came_in) {
            if steps
                .iter()
                .any(|(_, hook)| hook.map(Passage::Hook) == Some(p))
            {
                continue;
            }
            // Before the first netfilter verdict that comes later in the datapath.
            let at = steps
                .iter()
                .position(|(_, hook)| hook.is_some_and(|h| Passage::Hook(h).rank() > p.rank()))
                .unwrap_or(steps.len());
            let step = Step {
                kind: StepKind::Implied,
                label: p.label(),
                ts_ns: None,
                ttl: None,
            };
            steps.insert(at, (step, None));
        }
        let mut steps: Vec<Step> = steps.into_iter().map(|(s, _)| s).collect();
        mark_failed(&mut steps, j, d, node_netns);
        if let Some(next) = self.next_point(node_netns, egress_to) {
            steps.push(Step {
                kind: StepKind::Missed,
                label: next,
                ts_ns: None,
                ttl: None,
            });
        }
        steps
    }

    /// Where the packet was last seen on an interface.
    pub fn last_iface(&self, node_netns: Option<u32>) -> Option<String> {
        self.latest
            .hops
            .iter()
            .rev()
            .find(|h| h.is_iface())
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
        let forwarded = j.drop.as_ref().is_some_and(|d| {
            d.netfilter.as_ref().and_then(|n| n.hook) == Some(Hook::Forward)
                || matches!(d.stage, Stage::Ttl | Stage::Neighbor | Stage::Mtu)
        });
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

/// Marks where the packet died: a DROP verdict of the same table is the
/// failing point itself; otherwise it died after the last point seen.
fn mark_failed(steps: &mut Vec<Step>, j: &Journey, d: &DropInfo, node_netns: Option<u32>) {
    let dropped_at = d.netfilter.as_ref().and_then(|nf| {
        j.hops.iter().rposition(|h| {
            h.is_drop_verdict()
                && h.netfilter
                    .as_ref()
                    .is_some_and(|x| x.hook == nf.hook && x.backend == nf.backend)
        })
    });
    match dropped_at.and_then(|i| {
        let label = j.hops[i].label(node_netns).to_string();
        steps
            .iter()
            .position(|s| s.kind == StepKind::Seen && s.label == label)
    }) {
        Some(i) => {
            steps[i].kind = StepKind::Failed;
            steps[i].label = d.point();
        }
        None => steps.push(Step {
            kind: StepKind::Failed,
            label: d.point(),
            ts_ns: Some(d.ts_ns),
            ttl: None,
        }),
    }
}
