//! Which interfaces get tc programs.

use crate::kernel::netlink::{Link, LinkChange};

/// Calico's interfaces; the uplink of the default route is added at run time.
pub const DEFAULT_PATTERNS: &[&str] = &[
    "cali*",
    "tunl0",
    "vxlan.calico",
    "vxlan-v6.calico",
    "wireguard.cali",
];

/// Shell-style glob with `*` and `?`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], n) || (!n.is_empty() && rec(p, &n[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &n[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

/// The links matching any pattern, in ifindex order; loopback never.
pub fn select<'a>(links: &'a [Link], patterns: &[String]) -> Vec<&'a Link> {
    let mut out: Vec<&Link> = links.iter().filter(|l| selected(l, patterns)).collect();
    out.sort_by_key(|l| l.index);
    out
}

/// Whether `link` is a selected interface: one that matches a pattern, and
/// is not loopback.
pub fn selected(link: &Link, patterns: &[String]) -> bool {
    link.name != "lo" && patterns.iter().any(|p| glob_match(p, &link.name))
}

/// A pod's end on the node: a `cali*` veth, whose peer is in the pod's namespace.
pub fn is_pod_veth(link: &Link) -> bool {
    link.kind == "veth" && link.name.starts_with("cali")
}

/// The selected interfaces in the order tracing starts on them: the uplinks
/// and tunnels first, then the veths (pods), which may be many.
pub fn start_order<'a>(chosen: &[&'a Link], uplinks: &[String]) -> Vec<&'a Link> {
    let mut ordered = chosen.to_vec();
    ordered.sort_by_key(|l| (may_wait(l, uplinks), l.index));
    ordered
}

/// Whether tracing may start before this interface has its programs: a veth
/// that is not an uplink (a pod's, on a Calico node).
pub fn may_wait(link: &Link, uplinks: &[String]) -> bool {
    link.kind == "veth" && !uplinks.contains(&link.name)
}

/// What an interface change asks of the tracer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A new name for an index of this namespace (every interface: drops name them).
    Name { index: u32, name: String },
    /// A selected interface appeared: attach the tc programs to it.
    Attach(Link),
    /// A selected interface went, or was renamed (`renamed`: its new name;
    /// it is then a new interface too): detach its programs, forget it.
    Forget {
        index: u32,
        name: String,
        renamed: Option<String>,
    },
}

/// The interfaces of the traced namespace, kept up to date from the link
/// announcements, and which of them the patterns select.
#[derive(Debug, Clone)]
pub struct Tracked {
    patterns: Vec<String>,
    /// Index to (name, selected).
    known: std::collections::BTreeMap<u32, (String, bool)>,
}

impl Tracked {
    /// The interfaces there when tracing starts.
    pub fn new(patterns: Vec<String>, links: &[Link]) -> Tracked {
        let known = links
            .iter()
            .map(|l| (l.index, (l.name.clone(), selected(l, &patterns))))
            .collect();
        Tracked { patterns, known }
    }

    /// What to do about one announced change.
    pub fn change(&mut self, change: &LinkChange) -> Vec<Step> {
        match change {
            LinkChange::Present(link) => self.present(link),
            LinkChange::Gone { index, .. } => self.gone(*index, None).into_iter().collect(),
        }
    }

    /// After announcements were lost: the steps that bring what is known in
    /// line with `links`, the namespace's interfaces now.
    pub fn resync(&mut self, links: &[Link]) -> Vec<Step> {
        let now: std::collections::BTreeSet<u32> = links.iter().map(|l| l.index).collect();
        let vanished: Vec<u32> = self
            .known
            .keys()
            .filter(|i| !now.contains(i))
            .copied()
            .collect();
        let mut steps: Vec<Step> = vanished
            .into_iter()
            .filter_map(|i| self.gone(i, None))
            .collect();
        for l in links {
            steps.extend(self.present(l));
        }
        steps
    }

    fn present(&mut self, link: &Link) -> Vec<Step> {
        let mut steps = Vec::new();
        match self.known.get(&link.index) {
            Some((name, _)) if *name == link.name => return steps,
            Some(_) => steps.extend(self.gone(link.index, Some(&link.name))),
            None => {}
        }
        let chosen = selected(link, &self.patterns);
        self.known.insert(link.index, (link.name.clone(), chosen));
        steps.push(Step::Name {
            index: link.index,
            name: link.name.clone(),
        });
        if chosen {
            steps.push(Step::Attach(link.clone()));
        }
        steps
    }

    fn gone(&mut self, index: u32, renamed: Option<&str>) -> Option<Step> {
        match self.known.remove(&index)? {
            (name, true) => Some(Step::Forget {
                index,
                name,
                renamed: renamed.map(str::to_string),
            }),
            (_, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(i: u32, name: &str) -> Link {
        Link::ethernet(i, name)
    }

    #[test]
    fn globs() {
        assert!(glob_match("cali*", "cali1234abcd"));
        assert!(glob_match("cali*", "cali"));
        assert!(!glob_match("cali*", "eth0"));
        assert!(glob_match("eth?", "eth0"));
        assert!(!glob_match("eth?", "eth10"));
        assert!(glob_match("vxlan.calico", "vxlan.calico"));
        assert!(glob_match("*", "anything"));
    }

    #[test]
    fn selection_skips_loopback_and_sorts() {
        let links = [
            link(5, "cali2"),
            link(1, "lo"),
            link(3, "eth0"),
            link(4, "cali1"),
        ];
        let pats = vec!["cali*".to_string(), "eth0".into(), "*".into()];
        let names: Vec<_> = select(&links, &pats)
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["eth0", "cali1", "cali2"]);
    }

    fn veth(i: u32, name: &str) -> Link {
        Link {
            kind: "veth".into(),
            ..link(i, name)
        }
    }

    fn defaults() -> Vec<String> {
        let mut p: Vec<String> = DEFAULT_PATTERNS.iter().map(|s| s.to_string()).collect();
        p.push("eth0".into());
        p
    }

    #[test]
    fn new_interfaces_matching_the_patterns_are_attached() {
        let mut t = Tracked::new(defaults(), &[link(1, "lo"), link(2, "eth0")]);
        let cali = veth(7, "cali0123456789a");
        assert_eq!(
            t.change(&LinkChange::Present(cali.clone())),
            [
                Step::Name {
                    index: 7,
                    name: cali.name.clone()
                },
                Step::Attach(cali.clone())
            ]
        );
        assert!(
            t.change(&LinkChange::Present(cali.clone())).is_empty(),
            "a change of state (up, down) of a known interface asks for nothing"
        );
        let other = veth(8, "docker0");
        assert_eq!(
            t.change(&LinkChange::Present(other)),
            [Step::Name {
                index: 8,
                name: "docker0".into()
            }],
            "interfaces outside the selection are only named"
        );
        assert_eq!(
            t.change(&LinkChange::Present(link(9, "vxlan.calico")))
                .len(),
            2,
            "a tunnel made while tracing is traced too"
        );
        let user = vec!["veth*".to_string()];
        let mut t = Tracked::new(user, &[]);
        assert_eq!(t.change(&LinkChange::Present(veth(3, "vethab"))).len(), 2);
        assert_eq!(t.change(&LinkChange::Present(veth(4, "cali1"))).len(), 1);
    }

    #[test]
    fn vanished_interfaces_are_forgotten_once() {
        let start = [link(2, "eth0"), veth(5, "cali1"), link(6, "docker0")];
        let mut t = Tracked::new(defaults(), &start);
        let gone = |index, name: &str| LinkChange::Gone {
            index,
            name: name.into(),
        };
        assert_eq!(
            t.change(&gone(5, "cali1")),
            [Step::Forget {
                index: 5,
                name: "cali1".into(),
                renamed: None
            }]
        );
        assert!(t.change(&gone(5, "cali1")).is_empty(), "already forgotten");
        assert!(t.change(&gone(6, "docker0")).is_empty(), "never traced");
        assert!(t.change(&gone(42, "x")).is_empty(), "never known");
    }

    #[test]
    fn a_rename_is_a_departure_and_an_arrival() {
        let mut t = Tracked::new(defaults(), &[veth(5, "tmp123")]);
        let renamed = veth(5, "cali1");
        assert_eq!(
            t.change(&LinkChange::Present(renamed.clone())),
            [
                Step::Name {
                    index: 5,
                    name: "cali1".into()
                },
                Step::Attach(renamed)
            ]
        );
        assert_eq!(
            t.change(&LinkChange::Present(veth(5, "gone1"))),
            [
                Step::Forget {
                    index: 5,
                    name: "cali1".into(),
                    renamed: Some("gone1".into())
                },
                Step::Name {
                    index: 5,
                    name: "gone1".into()
                }
            ]
        );
    }

    #[test]
    fn resync_after_lost_announcements() {
        let mut t = Tracked::new(defaults(), &[link(2, "eth0"), veth(5, "cali1")]);
        let steps = t.resync(&[link(2, "eth0"), veth(6, "cali2")]);
        assert_eq!(
            steps,
            [
                Step::Forget {
                    index: 5,
                    name: "cali1".into(),
                    renamed: None
                },
                Step::Name {
                    index: 6,
                    name: "cali2".into()
                },
                Step::Attach(veth(6, "cali2"))
            ]
        );
        assert!(t.resync(&[link(2, "eth0"), veth(6, "cali2")]).is_empty());
    }

    #[test]
    fn uplinks_and_tunnels_come_first_at_start() {
        let links = [
            veth(3, "cali2"),
            veth(4, "eth0"),
            link(9, "vxlan.calico"),
            veth(2, "cali1"),
        ];
        let chosen: Vec<&Link> = links.iter().collect();
        let names: Vec<&str> = start_order(&chosen, &["eth0".into()])
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["eth0", "vxlan.calico", "cali1", "cali2"]);
        assert!(is_pod_veth(&veth(3, "cali2")) && !is_pod_veth(&link(3, "cali2")));
        assert!(!is_pod_veth(&veth(4, "eth0")));
    }
}
