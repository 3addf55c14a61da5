//! Which interfaces get tc programs.

use crate::kernel::netlink::Link;

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
    let mut out: Vec<&Link> = links
        .iter()
        .filter(|l| l.name != "lo" && patterns.iter().any(|p| glob_match(p, &l.name)))
        .collect();
    out.sort_by_key(|l| l.index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(i: u32, name: &str) -> Link {
        Link {
            index: i,
            name: name.into(),
            kind: String::new(),
            link_type: 1,
            peer_index: None,
            link_netnsid: None,
            up: true,
        }
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
}
