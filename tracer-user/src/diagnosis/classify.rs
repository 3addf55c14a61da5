//! Which stage of the datapath a drop reason (a name from the running kernel)
//! and its location belong to.

use std::net::IpAddr;

use crate::model::{
    Backend, Benign, DropReason, Family, Headers, Icmp, NetfilterInfo, Owner, Proto, ReasonKind,
    Stage,
};

pub fn stage(reason: &DropReason, location: Option<&str>) -> Stage {
    let loc = location.map(base_symbol).unwrap_or("");
    match reason.kind {
        ReasonKind::Netfilter => Stage::Netfilter,
        ReasonKind::RpFilter => Stage::RpFilter,
        ReasonKind::NoRoute => Stage::Routing,
        // TTL ran out while forwarding (IPv4 reports IP_INHDR from ip_forward).
        ReasonKind::BadHeader if matches!(loc, "ip_forward" | "ip6_forward") => Stage::Ttl,
        ReasonKind::Size => Stage::Mtu,
        ReasonKind::Neighbor => Stage::Neighbor,
        ReasonKind::TcIngress | ReasonKind::TcEgress => Stage::Tc,
        ReasonKind::Socket | ReasonKind::NoSocket => Stage::Socket,
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

/// Whether a drop is no fault of pod traffic, and why; `None` for a drop
/// to report. `reason` and `stage` as the drop was named (from the location
/// on kernels without drop reasons), `pkt` its headers. A firewall's or a tc
/// program's drop is never benign: someone decided it. The rules:
///
/// - [`Benign::LinkLocal`]: IPv6 to a link-local (`fe80::/10`) or multicast
///   (`ff00::/8`) address or from `::`, neighbour discovery and MLD, IPv4
///   multicast and broadcast. Calico routes none of it between pods; VXLAN
///   devices free it as `NO_TX_TARGET`, IPv4-only pods as `IPV6DISABLED`.
/// - [`Benign::SocketClosed`]: `QUEUE_PURGE`, what a socket still had queued
///   when it closed (`sk_stream_kill_queues` for TCP, `inet_sock_destruct`,
///   and netlink sockets' buffers in `skb_queue_purge_reason` when `nft` or
///   `iptables-nft-save` read the rules); before the reason existed, the
///   same places with `NOT_SPECIFIED`.
/// - [`Benign::TcpAfterClose`]: `NO_SOCKET` for a TCP segment without SYN
///   or data (an ACK, FIN or RST of a connection whose socket is gone, e.g. a
///   duplicate ACK answering a retransmitted FIN at teardown).
/// - [`Benign::EchoReply`]: `NO_SOCKET` for an ICMP echo reply in
///   `ping_rcv`: no ICMP datagram ("ping") socket wanted it. Every reply to
///   a `ping` run as root ends so, its raw socket having had its copy; so
///   does one that comes after its ping ended.
///
/// Before 5.17 the kernel gives no reasons: `NOT_SPECIFIED` where such frees
/// happen (`tcp_v4_rcv`, `icmp_rcv`, ...) stands for `NO_SOCKET`.
pub fn benign(
    reason: &DropReason,
    location: Option<&str>,
    stage: Stage,
    pkt: &Headers,
    in_pod: bool,
) -> Option<Benign> {
    if matches!(stage, Stage::Netfilter | Stage::Tc) {
        return None;
    }
    let loc = location.map(base_symbol).unwrap_or("");
    if pkt.flow.src.is_none() && is_not_ip_subsystem(loc) {
        return Some(Benign::NotIp);
    }
    if !in_pod && is_loopback(pkt) {
        return Some(Benign::Loopback);
    }
    let unspecified = reason.kind == ReasonKind::NotSpecified;
    if reason.kind == ReasonKind::QueuePurge || (unspecified && QUEUE_PURGES.contains(&loc)) {
        return Some(Benign::SocketClosed);
    }
    if is_link_local_or_multicast(pkt) {
        return Some(Benign::LinkLocal);
    }
    if !no_socket(reason.kind, loc) {
        return None;
    }
    if pkt.tcp.is_some_and(|t| t.is_bare()) {
        return Some(Benign::TcpAfterClose);
    }
    matches!(pkt.detail.icmp, Some(Icmp::EchoReply { .. })).then_some(Benign::EchoReply)
}

/// Whether a firewall's drop, once its table is known, is no fault of pod
/// traffic: the one such rule set is Calico's `table arp calico-arp` (3.32+),
/// which drops the ARP replies of the host's proxy ARP that claim a pod's own
/// address (answering a pod's gratuitous ARP, e.g. when a VM moves). Every
/// other firewall drop was someone's decision about traffic: reported.
pub fn benign_refusal(nf: &NetfilterInfo) -> Option<Benign> {
    let calico_arp = nf.family == Some(Family::Arp)
        && nf.table.as_deref() == Some(CALICO_ARP_TABLE)
        && nf.refusal.owner == Some(Owner::Calico);
    calico_arp.then_some(Benign::CalicoArp)
}

/// Calico's ARP table (`felix/dataplane/linux/int_dataplane.go`).
const CALICO_ARP_TABLE: &str = "calico-arp";

/// `NO_SOCKET`, or where a kernel without drop reasons (before 5.17) frees
/// what a newer one calls so: a segment or echo reply no socket takes.
fn no_socket(reason: ReasonKind, loc: &str) -> bool {
    const RECEIVERS: [&str; 5] = [
        "tcp_v4_rcv",
        "tcp_v6_rcv",
        "icmp_rcv",
        "icmpv6_rcv",
        "ping_rcv",
    ];
    reason == ReasonKind::NoSocket
        || (reason == ReasonKind::NotSpecified && RECEIVERS.contains(&loc))
}

/// Where queued packets are freed in bulk when a socket closes.
const QUEUE_PURGES: [&str; 5] = [
    "sk_stream_kill_queues",
    "inet_sock_destruct",
    "skb_queue_purge_reason",
    "skb_queue_purge",
    "__skb_queue_purge",
];

/// ICMPv6 neighbour discovery (133-137) and multicast listener (130-132,
/// 143) messages.
fn is_nd_or_mld(pkt: &Headers) -> bool {
    pkt.flow.proto == Some(Proto::Icmpv6)
        && matches!(
            pkt.detail.icmp,
            Some(Icmp::Other {
                kind: 130..=137 | 143,
                ..
            })
        )
}

/// The addresses of an IP packet (not ARP's).
fn ip_addrs(pkt: &Headers) -> Option<(IpAddr, IpAddr)> {
    if pkt.detail.arp.is_some() {
        return None;
    }
    Some((pkt.flow.src?, pkt.flow.dst?))
}

fn is_link_local_or_multicast(pkt: &Headers) -> bool {
    match ip_addrs(pkt) {
        Some((IpAddr::V6(src), IpAddr::V6(dst))) => {
            let link_local = dst.segments()[0] & 0xffc0 == 0xfe80;
            dst.is_multicast() || link_local || src.is_unspecified() || is_nd_or_mld(pkt)
        }
        Some((_, IpAddr::V4(dst))) => dst.is_multicast() || dst.is_broadcast(),
        _ => false,
    }
}

/// Where the kernel frees buffers of families that are not IP or ARP: vsock
/// (virtio, vhost, VMCI, Hyper-V), netlink, unix sockets, CAN, Bluetooth,
/// qrtr. None of it is pod traffic.
fn is_not_ip_subsystem(loc: &str) -> bool {
    const PREFIXES: [&str; 12] = [
        "virtio_transport",
        "vhost_transport",
        "vsock",
        "vmci_transport",
        "hvs_",
        "netlink_",
        "unix_",
        "can_",
        "bt_",
        "hci_",
        "l2cap_",
        "qrtr_",
    ];
    PREFIXES.iter().any(|p| loc.starts_with(p))
}

/// A packet from or to a loopback address (127.0.0.0/8, ::1): a refused
/// local connection, never traffic between pods.
fn is_loopback(pkt: &Headers) -> bool {
    ip_addrs(pkt).is_some_and(|(s, d)| s.is_loopback() || d.is_loopback())
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
    crate::kernel::system::parse_release(kernel) >= (6, 8)
}

#[cfg(test)]
mod tests {
    use tracer_common::{PacketMeta, l3, pkt_flags, proto};

    use super::*;
    use crate::model::Refusal;

    fn stage(reason: &str, location: Option<&str>) -> Stage {
        super::stage(&DropReason::named(reason), location)
    }

    fn benign(
        reason: &str,
        location: Option<&str>,
        stage: Stage,
        pkt: &PacketMeta,
        in_pod: bool,
    ) -> Option<Benign> {
        let headers = crate::events::names::headers(pkt);
        super::benign(
            &DropReason::named(reason),
            location,
            stage,
            &headers,
            in_pod,
        )
    }

    #[test]
    fn only_calicos_arp_table_drops_are_benign_refusals() {
        let nf = |family, table: &str, owner| NetfilterInfo {
            family: Some(family),
            table: Some(table.into()),
            refusal: Refusal {
                owner,
                ..Default::default()
            },
            ..Default::default()
        };
        let calico = Some(Owner::Calico);
        assert_eq!(
            benign_refusal(&nf(Family::Arp, "calico-arp", calico)),
            Some(Benign::CalicoArp)
        );
        assert_eq!(benign_refusal(&nf(Family::Ipv4, "calico", calico)), None);
        assert_eq!(benign_refusal(&nf(Family::Arp, "filter", None)), None);
    }

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

    fn v6(src: &str, dst: &str, proto: u8) -> PacketMeta {
        let a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        PacketMeta {
            src: a(src),
            dst: a(dst),
            l3: l3::IPV6,
            proto,
            flags: pkt_flags::L4,
            len: 76,
            ..Default::default()
        }
    }

    fn v4(dst: [u8; 4], proto: u8) -> PacketMeta {
        let mut p = PacketMeta {
            l3: l3::IPV4,
            proto,
            flags: pkt_flags::L4,
            len: 84,
            ..Default::default()
        };
        p.src[..4].copy_from_slice(&[10, 244, 1, 10]);
        p.dst[..4].copy_from_slice(&dst);
        p
    }

    fn icmp6(src: &str, dst: &str, ty: u8) -> PacketMeta {
        PacketMeta {
            icmp_type: ty,
            ..v6(src, dst, proto::ICMPV6)
        }
    }

    const LL: &str = "fe80::6463:74ff:fe6c:b";
    const POD6: &str = "fd00:10:244:1::10";
    const POD6_B: &str = "fd00:10:244:2::10";

    #[test]
    fn link_local_and_multicast_frees_are_benign() {
        let vx = Some("vxlan_xmit");
        // MLD report and router solicitation on a VXLAN device (no target).
        let mld = icmp6(LL, "ff02::16", 143);
        assert_eq!(
            benign("NO_TX_TARGET", vx, Stage::Other, &mld, false),
            Some(Benign::LinkLocal)
        );
        let rs = icmp6(LL, "ff02::2", 133);
        assert_eq!(
            benign("NO_TX_TARGET", vx, Stage::Other, &rs, false),
            Some(Benign::LinkLocal)
        );
        // Duplicate address detection: from ::, to the solicited-node group.
        let dad = icmp6("::", "ff02::1:ff6c:b", 135);
        assert_eq!(
            benign("NO_TX_TARGET", vx, Stage::Other, &dad, false),
            Some(Benign::LinkLocal)
        );
        // An IPv4-only pod frees what the node sends to fe80::/10.
        let to_ll = icmp6(LL, "fe80::1", 128);
        assert_eq!(
            benign(
                "IPV6DISABLED",
                Some("ipv6_rcv"),
                Stage::Other,
                &to_ll,
                false
            ),
            Some(Benign::LinkLocal)
        );
        // Unicast neighbour discovery between global addresses too.
        let nud = icmp6(POD6, POD6_B, 135);
        assert_eq!(
            benign("NOT_SPECIFIED", None, Stage::Other, &nud, false),
            Some(Benign::LinkLocal)
        );
        // IPv4 multicast and broadcast.
        for dst in [[224, 0, 0, 22], [239, 255, 255, 250], [255; 4]] {
            let p = v4(dst, proto::UDP);
            assert_eq!(
                benign("NO_TX_TARGET", vx, Stage::Other, &p, false),
                Some(Benign::LinkLocal)
            );
        }
    }

    #[test]
    fn pod_traffic_and_decisions_are_never_benign() {
        let vx = Some("vxlan_xmit");
        // A pod's unicast packet without a VXLAN target is a missing FDB entry.
        let pod = v4([10, 244, 2, 10], proto::ICMP);
        assert_eq!(benign("NO_TX_TARGET", vx, Stage::Other, &pod, false), None);
        let pod6 = icmp6(POD6, POD6_B, 128);
        assert_eq!(benign("NO_TX_TARGET", vx, Stage::Other, &pod6, false), None);
        // A firewall rule or a tc program dropping neighbour discovery decided so.
        let ns = icmp6(LL, "ff02::1:ff00:10", 135);
        let nf = Some("nft_do_chain");
        assert_eq!(
            benign("NETFILTER_DROP", nf, Stage::Netfilter, &ns, false),
            None
        );
        assert_eq!(benign("TC_INGRESS", None, Stage::Tc, &ns, false), None);
        assert_eq!(
            benign("QUEUE_PURGE", nf, Stage::Netfilter, &ns, false),
            None
        );
        // Other reasons for pod traffic.
        assert_eq!(
            benign("IP_NOROUTE", None, Stage::Routing, &pod, false),
            None
        );
        assert_eq!(
            benign("NEIGH_FAILED", None, Stage::Neighbor, &pod, false),
            None
        );
    }

    #[test]
    fn queues_of_closing_sockets_are_benign() {
        let tcp = v4([10, 244, 2, 10], proto::TCP);
        for loc in [
            "sk_stream_kill_queues",
            "inet_sock_destruct",
            "skb_queue_purge_reason",
        ] {
            assert_eq!(
                benign("QUEUE_PURGE", Some(loc), Stage::Other, &tcp, false),
                Some(Benign::SocketClosed),
                "{loc}"
            );
        }
        // Netlink buffers: no packet header at all.
        let none = PacketMeta::default();
        let purge = Some("skb_queue_purge_reason");
        assert_eq!(
            benign("QUEUE_PURGE", purge, Stage::Other, &none, false),
            Some(Benign::SocketClosed)
        );
        // Before QUEUE_PURGE existed: the same places, reason not specified.
        let old = Some("skb_queue_purge.part.0");
        assert_eq!(
            benign(UNKNOWN_REASON, old, Stage::Other, &none, false),
            Some(Benign::SocketClosed)
        );
        assert_eq!(
            benign(
                UNKNOWN_REASON,
                Some("ip_rcv_core"),
                Stage::Other,
                &none,
                false
            ),
            None
        );
    }

    #[test]
    fn a_bare_tcp_segment_after_its_socket_closed_is_benign() {
        const ACK: u8 = 0x10;
        let seg = |flags: u8, no_data: bool| {
            let mut p = v4([10, 244, 2, 10], proto::TCP);
            p.tcp_flags = flags;
            if no_data {
                p.flags |= pkt_flags::TCP_NO_DATA;
            }
            p
        };
        let at = Some("tcp_v4_rcv");
        let closed = |p: &PacketMeta| benign("NO_SOCKET", at, Stage::Socket, p, false);
        assert_eq!(closed(&seg(ACK, true)), Some(Benign::TcpAfterClose));
        assert_eq!(
            closed(&seg(ACK | 0x01, true)),
            Some(Benign::TcpAfterClose),
            "FIN"
        );
        assert_eq!(closed(&seg(0x04, true)), Some(Benign::TcpAfterClose), "RST");
        // A SYN to a closed port, or data, is a fault worth seeing.
        assert_eq!(closed(&seg(0x02, true)), None);
        assert_eq!(closed(&seg(ACK, false)), None);
        assert_eq!(closed(&seg(ACK | 0x08, false)), None);
        assert_eq!(
            benign("TCP_CSUM", at, Stage::Socket, &seg(ACK, true), false),
            None
        );
        // 5.10: no reasons; freed in tcp_v4_rcv.
        let old = |p: &PacketMeta| benign(UNKNOWN_REASON, at, Stage::Other, p, false);
        assert_eq!(old(&seg(ACK, true)), Some(Benign::TcpAfterClose));
        assert_eq!(old(&seg(0x02, true)), None);
        let elsewhere = benign(
            UNKNOWN_REASON,
            Some("ip_rcv_core"),
            Stage::Other,
            &seg(ACK, true),
            false,
        );
        assert_eq!(elsewhere, None);
    }

    #[test]
    fn an_echo_reply_no_ping_socket_wanted_is_benign() {
        let mut reply = v4([10, 244, 1, 10], proto::ICMP);
        reply.icmp_type = 0;
        let at = Some("ping_rcv");
        assert_eq!(
            benign("NO_SOCKET", at, Stage::Socket, &reply, false),
            Some(Benign::EchoReply)
        );
        let reply6 = icmp6(POD6_B, POD6, 129);
        assert_eq!(
            benign("NO_SOCKET", at, Stage::Socket, &reply6, false),
            Some(Benign::EchoReply)
        );
        // 5.10: no reasons; icmp_rcv frees what ping_rcv did not take.
        assert_eq!(
            benign(
                UNKNOWN_REASON,
                Some("icmp_rcv"),
                Stage::Other,
                &reply,
                false
            ),
            Some(Benign::EchoReply)
        );
        let mut request = reply;
        request.icmp_type = 8;
        assert_eq!(
            benign("NO_SOCKET", at, Stage::Socket, &request, false),
            None
        );
        assert_eq!(
            benign(
                "NO_SOCKET",
                at,
                Stage::Socket,
                &v4([10, 244, 1, 10], proto::UDP),
                false
            ),
            None
        );
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

    #[test]
    fn vsock_and_loopback_frees_are_benign_unless_a_pod_is_involved() {
        let other = PacketMeta::default();
        let vsock = Some("virtio_transport_recv_pkt+0x4a");
        assert_eq!(
            benign("NOT_SPECIFIED", vsock, Stage::Other, &other, false),
            Some(Benign::NotIp)
        );
        assert_eq!(
            benign(
                "NOT_SPECIFIED",
                Some("ip_rcv_core"),
                Stage::Other,
                &other,
                false
            ),
            None,
            "an IP receive path with no parsed header is not called benign"
        );
        let mut lo = PacketMeta {
            l3: l3::IPV4,
            proto: proto::TCP,
            flags: pkt_flags::L4,
            tcp_flags: 0x02,
            ..Default::default()
        };
        lo.src[..4].copy_from_slice(&[127, 0, 0, 1]);
        lo.dst[..4].copy_from_slice(&[127, 0, 0, 1]);
        let tcp = Some("tcp_v4_rcv");
        assert_eq!(
            benign("NO_SOCKET", tcp, Stage::Socket, &lo, false),
            Some(Benign::Loopback)
        );
        assert_eq!(
            benign("NO_SOCKET", tcp, Stage::Socket, &lo, true),
            None,
            "inside a pod"
        );
        assert_eq!(
            benign("NETFILTER_DROP", None, Stage::Netfilter, &lo, false),
            None
        );
    }
}
