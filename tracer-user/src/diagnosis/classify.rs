//! Which stage of the datapath a drop reason (a name from the running kernel)
//! and its location belong to.

use crate::events::records::Stage;

pub fn stage(reason: &str, location: Option<&str>) -> Stage {
    let loc = location.unwrap_or("");
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
        // Kernels without drop reasons (< 5.17): the location is all there is.
        _ => match loc {
            "nf_hook_slow" | "nft_do_chain" | "ipt_do_table" => Stage::Netfilter,
            "ip_forward" => Stage::Ttl,
            "neigh_invalidate" | "__neigh_event_send" => Stage::Neighbor,
            "ip_rcv_finish_core" if reason == "NOT_SPECIFIED" => Stage::Other,
            l if l.starts_with("tcf_") || l.starts_with("tcx_") => Stage::Tc,
            _ => Stage::Other,
        },
    }
}

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

/// Backend guessed from where a netfilter drop happened: nf_tables frees the
/// packet inside `nft_do_chain`; x_tables returns NF_DROP and `nf_hook_slow`
/// frees it.
pub fn netfilter_backend(location: Option<&str>) -> Option<&'static str> {
    match location? {
        "nft_do_chain" => Some("nft"),
        "nf_hook_slow" | "ipt_do_table" | "ip6t_do_table" => Some("legacy"),
        _ => None,
    }
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
        assert_eq!(stage("REASON_0", Some("nft_do_chain")), Stage::Netfilter);
        assert_eq!(stage("REASON_0", Some("neigh_invalidate")), Stage::Neighbor);
        assert_eq!(stage("REASON_0", None), Stage::Other);
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
        assert_eq!(netfilter_backend(Some("nft_do_chain")), Some("nft"));
        assert_eq!(netfilter_backend(Some("nf_hook_slow")), Some("legacy"));
        assert_eq!(netfilter_backend(Some("ip_forward")), None);
    }
}
