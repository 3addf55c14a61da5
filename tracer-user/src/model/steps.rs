//! A packet's journey as every view tells it: the points it was seen at, the
//! points it must have passed in between (a drop at FORWARD implies
//! PREROUTING and the route lookup), and where it died.

use super::drop_place::DropPlace;
use super::journey::Hop;
use super::names::{Dir, Hook, Stage};
use super::packet::PacketId;
use super::records::DropRecord;

/// Where one packet went, and where it died if it did.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Journey {
    pub id: PacketId,
    pub hops: Vec<Hop>,
    pub drop: Option<DropPlace>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// Seen there.
    Seen,
    /// Must have passed there to get where it was seen next.
    Implied,
    /// Died there.
    Failed,
    /// The next point it would have reached.
    Missed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub label: String,
    pub ts_ns: Option<u64>,
    pub ttl: Option<u8>,
}

impl Step {
    fn at(kind: StepKind, label: String) -> Step {
        Step {
            kind,
            label,
            ts_ns: None,
            ttl: None,
        }
    }
}

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

impl DropPlace {
    /// Points a packet must have passed to get where it died, after its last
    /// tc sighting (`came_in`: it was seen arriving on an interface).
    fn implied(&self, came_in: bool) -> Vec<Passage> {
        use Passage::{Hook as H, RouteLookup as Route};
        if let Some(hook) = self.hook() {
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

    /// Whether the packet was being forwarded when it died.
    pub fn forwarding(&self) -> bool {
        self.hook() == Some(Hook::Forward)
            || matches!(self.stage, Stage::Ttl | Stage::Neighbor | Stage::Mtu)
    }
}

impl Journey {
    /// A drop's journey: the hops it carries and its place.
    pub fn of_drop(d: &DropRecord) -> Journey {
        Journey {
            id: d.detail.packet_id(),
            hops: d.journey.clone(),
            drop: Some(d.place()),
        }
    }

    pub fn last_ts(&self) -> u64 {
        let h = self.hops.last().map(|h| h.ts_ns).unwrap_or(0);
        h.max(self.drop.as_ref().map(|d| d.ts_ns).unwrap_or(0))
    }

    pub fn has_point(&self, h: &Hop) -> bool {
        self.hops.iter().any(|x| x.same_place(h))
    }

    /// The last interface it was seen on.
    pub fn last_iface(&self) -> Option<&Hop> {
        self.hops.iter().rev().find(|h| h.is_iface())
    }

    /// The steps of the journey in order: seen, implied, and the failing
    /// point last (or in place of the verdict that dropped it).
    pub fn steps(&self, node_netns: Option<u32>) -> Vec<Step> {
        let mut steps: Vec<(Step, Option<Hook>)> = self
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
        let Some(d) = &self.drop else {
            return steps.into_iter().map(|(s, _)| s).collect();
        };
        let came_in = self.last_iface().is_some_and(|h| h.dir == Dir::Ingress);
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
            steps.insert(at, (Step::at(StepKind::Implied, p.label()), None));
        }
        let mut steps: Vec<Step> = steps.into_iter().map(|(s, _)| s).collect();
        self.mark_failed(&mut steps, d, node_netns);
        steps
    }

    /// Marks where the packet died: a DROP verdict of the same table is the
    /// failing point itself; otherwise it died after the last point seen.
    fn mark_failed(&self, steps: &mut Vec<Step>, d: &DropPlace, node_netns: Option<u32>) {
        let dropped_at = d.netfilter.as_ref().and_then(|nf| {
            self.hops.iter().rposition(|h| {
                h.is_drop_verdict()
                    && h.netfilter
                        .as_ref()
                        .is_some_and(|x| x.hook == nf.hook && x.backend == nf.backend)
            })
        });
        match dropped_at.and_then(|i| {
            let label = self.hops[i].label(node_netns).to_string();
            steps
                .iter()
                .position(|s| s.kind == StepKind::Seen && s.label == label)
        }) {
            Some(i) => {
                steps[i].kind = StepKind::Failed;
                steps[i].label = d.label();
            }
            None => steps.push(Step {
                ts_ns: Some(d.ts_ns),
                ..Step::at(StepKind::Failed, d.label())
            }),
        }
    }
}

/// The steps as one line: `cali1 ingress -> [PREROUTING] -> ...`, implied
/// steps in brackets, the failing point last.
pub fn path_line(steps: &[Step]) -> String {
    let words: Vec<String> = steps
        .iter()
        .map(|s| match s.kind {
            StepKind::Seen => s.label.clone(),
            StepKind::Implied => format!("[{}]", s.label),
            StepKind::Failed => format!("✗ {}", s.label),
            StepKind::Missed => format!("never reached {}", s.label),
        })
        .collect();
    words.join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{iface_hop as iface, ping_drop};
    use crate::model::{Backend, NetfilterInfo};

    #[test]
    fn a_forward_drop_implies_prerouting_and_the_route_lookup() {
        let nf = NetfilterInfo {
            backend: Some(Backend::Legacy),
            hook: Some(Hook::Forward),
            ..Default::default()
        };
        let mut d = ping_drop(Stage::Netfilter, "NETFILTER_DROP", Some(nf));
        d.journey = vec![iface("cali1", Dir::Ingress)];
        let steps = Journey::of_drop(&d).steps(Some(100));
        let got: Vec<(StepKind, &str)> = steps.iter().map(|s| (s.kind, s.label.as_str())).collect();
        assert_eq!(
            got,
            [
                (StepKind::Seen, "cali1 ingress"),
                (StepKind::Implied, "PREROUTING"),
                (StepKind::Implied, "route lookup"),
                (StepKind::Failed, "FORWARD (legacy: DROP)"),
            ]
        );
        assert_eq!(
            path_line(&steps),
            "cali1 ingress -> [PREROUTING] -> [route lookup] -> ✗ FORWARD (legacy: DROP)"
        );
    }

    #[test]
    fn a_locally_sent_packet_implies_nothing_before_a_route_drop() {
        let mut d = ping_drop(Stage::Routing, "IP_OUTNOROUTES", None);
        d.ifname = None;
        d.journey = vec![iface("eth0", Dir::Egress)];
        let steps = Journey::of_drop(&d).steps(Some(100));
        assert_eq!(steps.len(), 2, "{steps:?}");
        assert_eq!(steps[1].label, "route lookup (IP_OUTNOROUTES)");
    }
}
