//! What each primitive and operator matches.

use super::*;

#[test]
fn hosts_v4() {
    let p = pkt("10.0.0.1", "10.0.0.2", proto::TCP, 40000, 80);
    assert!(m("host 10.0.0.1", &p));
    assert!(m("host 10.0.0.2", &p));
    assert!(!m("host 10.0.0.3", &p));
    assert!(m("src host 10.0.0.1", &p));
    assert!(!m("src host 10.0.0.2", &p));
    assert!(m("dst host 10.0.0.2", &p));
    assert!(m("dst 10.0.0.2", &p));
    assert!(!m("dst host 10.0.0.1", &p));
    // The IPv6 address whose first bytes equal the IPv4 one must not match.
    assert!(!m("host a00:1::", &p));
    assert!(!m("host ::ffff:10.0.0.1", &p));
    // A v6 packet whose first 4 bytes are 10.0.0.1 is not IPv4.
    let mut p6 = p;
    p6.l3 = l3::IPV6;
    assert!(!m("host 10.0.0.1", &p6));
    // No layer 3: no address matches, not even 0.0.0.0/0.
    let none = PacketMeta::default();
    assert!(!m("net 0.0.0.0/0", &none));
    assert!(!m("host 0.0.0.0", &none));
    assert!(m("not net 0.0.0.0/0", &none));
}

#[test]
fn hosts_and_nets_v6() {
    let p = pkt("fd00:10:244::5", "2001:db8::1", proto::UDP, 5353, 53);
    assert!(m("host fd00:10:244::5", &p));
    assert!(m("host 2001:db8::1", &p));
    assert!(!m("host fd00:10:244::6", &p));
    assert!(m("net fd00::/8", &p));
    assert!(m("src net fd00::/8", &p));
    assert!(!m("dst net fd00::/8", &p));
    assert!(m("net fd00:10:244::/48", &p));
    assert!(!m("net fd00:10:245::/48", &p));
    assert!(m("net fd00:10:244::4/127", &p)); // ::4 and ::5
    assert!(!m("net fd00:10:244::6/127", &p));
    assert!(m("net ::/0", &p));
    assert!(!m("net 0.0.0.0/0", &p));
    assert!(m("dst net 2001:db8::/32 and udp and dst port 53", &p));
    assert!(m("ip6", &p) && !m("ip", &p));
}

#[test]
fn nets_v4() {
    let p = pkt("10.244.3.7", "192.168.1.1", proto::TCP, 1234, 443);
    assert!(m("net 10.244.0.0/16", &p));
    assert!(m("src net 10.244.0.0/16", &p));
    assert!(!m("dst net 10.244.0.0/16", &p));
    assert!(!m("net 10.245.0.0/16", &p));
    assert!(m("net 10.0.0.0/8", &p));
    assert!(m("net 10.244.3.6/31", &p));
    assert!(!m("net 10.244.3.8/31", &p));
    assert!(m("net 10.244.3.7/32", &p));
    assert!(m("net 192.168.0.0/23", &p));
    assert!(m("net 0.0.0.0/0", &p));
    assert!(!m("net fd00::/8", &p));
    assert!(m("ip", &p) && !m("ip6", &p));
}

#[test]
fn ports_and_protocols() {
    let tcp = pkt("10.0.0.1", "10.0.0.2", proto::TCP, 40000, 80);
    let udp = pkt("fd00::1", "fd00::2", proto::UDP, 53, 33000);
    let icmp4 = pkt("10.0.0.1", "10.0.0.2", proto::ICMP, 7, 80);
    let icmp6 = pkt("fd00::1", "fd00::2", proto::ICMPV6, 7, 80);
    assert!(m("port 80", &tcp) && m("dst port 80", &tcp) && !m("src port 80", &tcp));
    assert!(m("src port 40000", &tcp) && !m("port 22", &tcp));
    assert!(m("port 53", &udp) && m("src port 53", &udp) && !m("dst port 53", &udp));
    assert!(m("tcp", &tcp) && !m("udp", &tcp) && !m("icmp", &tcp));
    assert!(m("udp", &udp) && !m("tcp", &udp));
    assert!(m("tcp port 80", &tcp) && !m("udp port 80", &tcp));
    // ICMP echo id/seq live in sport/dport but are not ports.
    assert!(!m("port 80", &icmp4) && !m("port 7", &icmp6));
    // As in tcpdump: `icmp` is ICMPv4 only.
    assert!(m("icmp", &icmp4) && !m("icmp", &icmp6));
    assert!(!m("icmp6", &icmp4) && m("icmp6", &icmp6));
    assert!(!m("tcp or udp", &icmp4));
    // Ports need the L4 flag (e.g. a non-first fragment has no ports).
    let mut frag = tcp;
    frag.flags = pkt_flags::DF;
    assert!(!m("port 80", &frag) && m("tcp", &frag) && m("not port 80", &frag));
    // ICMP numbers in the wrong family are not icmp.
    let mut odd = icmp4;
    odd.proto = proto::ICMPV6;
    assert!(!m("icmp", &odd));
    odd = icmp6;
    odd.proto = proto::ICMP;
    assert!(!m("icmp", &odd));
}

#[test]
fn arp_packets() {
    let a = arp("10.0.0.5", "169.254.1.1");
    assert!(m("arp", &a));
    assert!(m("host 169.254.1.1", &a) && m("host 10.0.0.5", &a));
    assert!(m("src host 10.0.0.5", &a) && m("dst host 169.254.1.1", &a));
    assert!(m("arp and dst host 169.254.1.1", &a));
    assert!(m("arp host 169.254.1.1", &a));
    assert!(m("net 169.254.0.0/16", &a));
    for f in [
        "tcp",
        "udp",
        "icmp",
        "icmp6",
        "ip",
        "ip6",
        "port 0",
        "tcp or udp or icmp",
        "host fd00::1",
    ] {
        assert!(!m(f, &a), "{f}");
    }
    let ip = pkt("10.0.0.5", "169.254.1.1", proto::TCP, 1, 2);
    assert!(!m("arp", &ip) && !m("arp host 169.254.1.1", &ip) && m("host 169.254.1.1", &ip));
}

#[test]
fn precedence_and_nesting() {
    let tcp80 = pkt("10.0.0.1", "10.0.0.2", proto::TCP, 40000, 80);
    let udp53 = pkt("10.0.0.1", "10.0.0.3", proto::UDP, 40000, 53);
    // `and` binds tighter than `or`.
    assert!(m("udp or tcp and port 22", &udp53));
    assert!(!m("(udp or tcp) and port 22", &udp53));
    assert!(m("tcp and port 80 or udp and port 53", &tcp80));
    assert!(m("tcp and port 80 or udp and port 53", &udp53));
    assert!(!m("tcp and (port 80 or udp) and port 53", &tcp80));
    // `not` binds tightest.
    assert!(!m("not tcp and port 80", &tcp80));
    assert!(m("not tcp and port 53", &udp53));
    assert!(!m("not (udp and port 53)", &udp53));
    assert!(m("not (udp and port 80)", &udp53));
    assert!(m("!!tcp", &tcp80));
    assert!(m("not not not udp", &tcp80));
    assert!(m(
        "host 10.0.0.1 and not (dst host 10.0.0.3 or port 22)",
        &tcp80
    ));
    assert!(!m(
        "host 10.0.0.1 and not (dst host 10.0.0.3 or port 22)",
        &udp53
    ));
    assert!(m("((host 10.0.0.2) and ((tcp)) and not (((udp))))", &tcp80));
    assert!(m("port 22 or 80", &tcp80) && !m("port 22 or 443", &tcp80));
    assert!(m("host 10.0.0.9 or 10.0.0.3", &udp53));
}
