//! Which stage of the datapath a drop reason (a name from the running kernel)
//! and its location belong to.

use crate::model::{Backend, Stage};

pub fn stage(reason: &str, location: Option<&str>) -> Stage {
    let loc = location.map(base_symbol).unwrap_or("");
    match reason {
        "NETFILTER_DROP" => Stage::Netfilter,
        "IP_RPFILTER" => Stage::RpFilter,
        "IP_NOROUTE" | "IP_INADDRERRORS" | "IP_OUTNOROUTES" | "IPV6_NOROUTE" => Stage::Routing,
        // TTL ran out while forwarding (IPv4 reports IP_INHDR from ip_forward).
        "IP_INHDR" if loc == "ip_forward" => Stage::Ttl,
        "IPV6_INHDR" if loc == "ip6_forward" => Stage::Ttl,
        "PKT_TOO_BIG" | "FRAG_REASM_TIMEOUT" | "FRAG_TOO_FAR" => Stage::Mtu,
        r if r.starts_with("NEIGH_") => Stage::Neighbor,
        r if r.starts_with("TC_") => Stage::Tc,
        r if r.starts_with("TCP_")
            || r.starts_with("UDP_")
            || r.starts_with("SOCKET_")
            || r.starts_with("PROTO_")
            || r == "NO_SOCKET"
            || r == "SOCKET_FILTER" =>
        {
            Stage::Socket
        }
        // A reason that does not tell (NOT_SPECIFIED, or none at all before
        // 5.17): where the packet was freed may.
        _ => reason_from_location(Some(loc), None, None).map_or(Stage::Other, |(_, s)| s),
    }
}

/// The function name of a kernel symbol without the compiler's suffixes
/// (`ip_rcv_finish_core.constprop.0` is `ip_rcv_finish_core`).
pub fn base_symbol(symbol: &str) -> &str {
    symbol.split('.').next().unwrap_or(symbol)
}

/// What the kernel's own reason would have been, for kernels that give none
/// (before 5.17 `kfree_skb` has no reason): the reason name a newer kernel
/// reports at the same place, and its stage, where the place (and what is
/// known about the packet there) tells. `None`: the place does not tell.
///
/// - `ttl`: the packet's TTL as the drop saw it (`ip_forward` frees both
///   expired and oversized packets).
/// - `rp_filter`: whether reverse path filtering is on for the interface the
///   packet came in by (`ip_rcv_finish_core` frees what the route lookup
///   refused, which for a packet that has a route is the reverse path check);
///   `None` when not known.
pub fn reason_from_location(
    location: Option<&str>,
    ttl: Option<u8>,
    rp_filter: Option<bool>,
) -> Option<(&'static str, Stage)> {
    Some(match base_symbol(location?) {
        "nf_hook_slow" | "nft_do_chain" | "ipt_do_table" | "ip6t_do_table" | "nf_hook" => {
            ("NETFILTER_DROP", Stage::Netfilter)
        }
        "ip_forward" | "ip6_forward" if ttl.is_some_and(|t| t <= 1) => ("IP_INHDR", Stage::Ttl),
        "ip_rcv_finish_core" if rp_filter == Some(true) => ("IP_RPFILTER", Stage::RpFilter),
        "ip_error" | "ip6_pkt_drop" => ("IP_NOROUTE", Stage::Routing),
        "neigh_invalidate" | "__neigh_event_send" => ("NEIGH_FAILED", Stage::Neighbor),
        l if l.starts_with("tcf_") || l.starts_with("tcx_") => ("TC_INGRESS", Stage::Tc),
        _ => return None,
    })
}

/// The reason shown for a drop on a kernel without drop reasons when the
/// location does not tell either.
pub const UNKNOWN_REASON: &str = "NOT_SPECIFIED";

/// Frees that are not packet drops: `ip route get` (and calitrace's own
/// route lookups) build a dummy skb and free it with `kfree_skb`; IPv6
/// multicast for groups this host did not join (router solicitations, MLD
/// reports) is freed in `ip6_mc_input` all the time on every node.
pub fn is_not_a_drop(location: Option<&str>) -> bool {
    matches!(
        location,
        Some("inet_rtm_getroute" | "inet6_rtm_getroute" | "ip6_mc_input")
    )
}

/// Backend told by where a netfilter drop happened, on `kernel` (its release).
/// x_tables returns NF_DROP from `ipt_do_table` and `nf_hook_slow` frees the
/// packet. nf_tables did the same until 6.8, which made `nft_do_chain` free
/// its drops itself: only from then on does `nf_hook_slow` mean x_tables.
/// Before, it tells nothing (and the rule counters have to).
pub fn netfilter_backend(location: Option<&str>, kernel: &str) -> Option<Backend> {
    match base_symbol(location?) {
        "nft_do_chain" => Some(Backend::Nft),
        "ipt_do_table" | "ip6t_do_table" => Some(Backend::Legacy),
        "nf_hook_slow" if nft_frees_its_drops(kernel) => Some(Backend::Legacy),
        _ => None,
    }
}

/// Whether nf_tables frees the packets it drops itself (kernel 6.8 and later).
pub fn nft_frees_its_drops(kernel: &str) -> bool {
    let mut v = kernel
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    (major, minor) >= (6, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_of_the_lab_faults() {
        assert_eq!(
            stage("NETFILTER_DROP", Some("nf_hook_slow")),
            Stage::Netfilter
        );
        assert_eq!(
            stage("IP_RPFILTER", Some("ip_rcv_finish_core")),
            Stage::RpFilter
        );
        assert_eq!(stage("IP_INHDR", Some("ip_forward")), Stage::Ttl);
        assert_eq!(stage("IP_INHDR", Some("ip_rcv_core")), Stage::Other);
        assert_eq!(
            stage("NEIGH_FAILED", Some("neigh_invalidate")),
            Stage::Neighbor
        );
        assert_eq!(stage("IP_NOROUTE", None), Stage::Routing);
        assert_eq!(stage("PKT_TOO_BIG", Some("ip_forward")), Stage::Mtu);
        assert_eq!(stage("TCP_INVALID_SEQUENCE", None), Stage::Socket);
    }

    #[test]
    fn old_kernels_fall_back_to_the_location() {
        let r = |loc, ttl, rp| reason_from_location(Some(loc), ttl, rp);
        assert_eq!(
            r("nf_hook_slow", Some(62), None),
            Some(("NETFILTER_DROP", Stage::Netfilter))
        );
        assert_eq!(
            r("nft_do_chain", None, None),
            Some(("NETFILTER_DROP", Stage::Netfilter))
        );
        assert_eq!(
            r("neigh_invalidate", None, None),
            Some(("NEIGH_FAILED", Stage::Neighbor))
        );
        assert_eq!(
            r("ip_rcv_finish_core.constprop.0", Some(63), Some(true)),
            Some(("IP_RPFILTER", Stage::RpFilter))
        );
        assert_eq!(
            r("ip_rcv_finish_core.constprop.0", Some(63), Some(false)),
            None,
            "not rp_filter when it is off"
        );
        assert_eq!(r("ip_rcv_finish_core", Some(63), None), None);
        assert_eq!(
            r("ip_forward", Some(1), None),
            Some(("IP_INHDR", Stage::Ttl))
        );
        assert_eq!(
            r("ip_forward", Some(60), None),
            None,
            "oversized, not expired"
        );
        assert_eq!(reason_from_location(None, None, None), None);
    }

    #[test]
    fn compiler_suffixes_are_not_part_of_the_name() {
        assert_eq!(
            base_symbol("ip_rcv_finish_core.constprop.0"),
            "ip_rcv_finish_core"
        );
        assert_eq!(base_symbol("nf_hook_slow"), "nf_hook_slow");
        assert_eq!(stage("IP_INHDR", Some("ip_forward.cold")), Stage::Ttl);
    }

    #[test]
    fn route_lookups_are_not_drops() {
        assert!(is_not_a_drop(Some("inet_rtm_getroute")));
        assert!(is_not_a_drop(Some("ip6_mc_input")));
        assert!(!is_not_a_drop(Some("nf_hook_slow")));
        assert!(!is_not_a_drop(None));
    }

    #[test]
    fn backend_from_location() {
        let k612 = "6.12.95+deb12-cloud-amd64";
        assert_eq!(
            netfilter_backend(Some("nft_do_chain"), k612),
            Some(Backend::Nft)
        );
        assert_eq!(
            netfilter_backend(Some("nf_hook_slow"), k612),
            Some(Backend::Legacy)
        );
        assert_eq!(
            netfilter_backend(Some("nf_hook_slow"), "6.18.0"),
            Some(Backend::Legacy)
        );
        assert_eq!(netfilter_backend(Some("ip_forward"), k612), None);
        // Before 6.8 nf_tables drops end in nf_hook_slow too.
        for old in ["6.1.0-50-cloud-amd64", "5.10.0-32-cloud-amd64", "6.7.1"] {
            assert_eq!(netfilter_backend(Some("nf_hook_slow"), old), None, "{old}");
            assert_eq!(
                netfilter_backend(Some("ipt_do_table"), old),
                Some(Backend::Legacy)
            );
        }
        assert!(!nft_frees_its_drops(""));
    }
}
