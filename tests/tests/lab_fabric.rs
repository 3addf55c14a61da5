//! Self-test of the lab's fabric (the bridge namespace between the nodes): the underlay
//! really crosses it, and its drop rules and MTU break exactly what they should, silently.
//! Needs root.

use calitrace_tests::lab::{self, FabricDrop, Lab, Mode};
use std::time::Duration;

const TCP_TIMEOUT: Duration = Duration::from_secs(3);

/// Both labs, built at the same time.
fn direct_and_vxlan() -> (Lab, Lab) {
    let vxlan = std::thread::spawn(|| Lab::new(Mode::Vxlan).expect("VXLAN lab"));
    let direct = Lab::new(Mode::Direct).expect("direct lab");
    (direct, vxlan.join().unwrap())
}

/// Pod a0 reaches pod b0 (one ping each way and a TCP echo).
fn pods_talk(lab: &Lab) -> bool {
    let (a0, b0) = (lab.pod(0, 0), lab.pod(1, 0));
    lab.ping(a0, &b0.ip, 1)
        && lab.ping(b0, &a0.ip, 1)
        && lab
            .tcp_probe(&a0.netns, &b0.netns, &b0.ip, 0, Duration::from_millis(1500))
            .is_ok()
}

/// Node A reaches node B's underlay address.
fn nodes_talk(lab: &Lab) -> bool {
    lab.ping_from(&lab.node(0).netns, &lab.node(1).underlay_ip, 1)
}

fn link_json(lab: &Lab, netns: &str, dev: &str) -> serde_json::Value {
    let out = lab
        .sh(netns, &format!("ip -j -d link show dev {dev}"))
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[test]
fn the_underlay_crosses_the_fabric_bridge() {
    let (direct, vxlan) = direct_and_vxlan();
    for lab in [&direct, &vxlan] {
        let fabric = lab.fabric_netns();
        assert_eq!(fabric, format!("{}-fabric", lab.id()));
        assert!(lab.netns_names().iter().any(|n| n == fabric));
        // Each node's eth0 is a 1500-byte veth whose peer is a port of the fabric's bridge.
        for (node, port) in lab.nodes().iter().zip(lab::FABRIC_PORTS) {
            let eth0 = link_json(lab, &node.netns, "eth0");
            assert_eq!(eth0["mtu"], 1500, "{eth0}");
            assert_eq!(eth0["linkinfo"]["info_kind"], "veth", "{eth0}");
            let port_json = link_json(lab, fabric, port);
            assert_eq!(
                eth0["link_index"], port_json["ifindex"],
                "{eth0} {port_json}"
            );
            assert_eq!(port_json["master"], lab::FABRIC_BRIDGE, "{port_json}");
            let addrs = lab.sh(&node.netns, "ip -4 -o addr show dev eth0").unwrap();
            assert!(
                addrs.contains(&format!("{}/24", node.underlay_ip)),
                "{addrs}"
            );
        }
        let fabric_addrs = lab.sh(fabric, "ip -4 -o addr show").unwrap();
        assert_eq!(fabric_addrs.lines().count(), 1, "only lo: {fabric_addrs}");
        let nf = "cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0";
        assert_eq!(
            lab.sh(fabric, nf).unwrap().trim(),
            "0",
            "bridged packets skip iptables"
        );

        let before: Vec<_> = lab::FABRIC_PORTS
            .map(|p| lab.link_stats(fabric, p).unwrap())
            .to_vec();
        assert!(pods_talk(lab), "{:?}: pods across the fabric", lab.mode());
        assert!(nodes_talk(lab), "{:?}: nodes across the fabric", lab.mode());
        let after: Vec<_> = lab::FABRIC_PORTS
            .map(|p| lab.link_stats(fabric, p).unwrap())
            .to_vec();
        // A ping each way, a TCP echo and a node ping crossed both ports both ways.
        for i in 0..2 {
            let (b, a) = (before[i], after[i]);
            assert!(
                a.rx_packets >= b.rx_packets + 5,
                "{:?} port {i}: {b:?} -> {a:?}",
                lab.mode()
            );
            assert!(
                a.tx_packets >= b.tx_packets + 5,
                "{:?} port {i}: {b:?} -> {a:?}",
                lab.mode()
            );
        }
        assert_eq!(lab.fabric_dropped().unwrap(), 0);
    }
}

#[test]
fn a_vxlan_port_drop_stops_vxlan_but_not_direct() {
    let (direct, vxlan) = direct_and_vxlan();
    for lab in [&direct, &vxlan] {
        lab.fabric_drop(FabricDrop::UdpPort(lab::VXLAN_PORT))
            .unwrap();
        assert!(
            nodes_talk(lab),
            "{:?}: the underlay itself must work",
            lab.mode()
        );
    }
    assert!(
        pods_talk(&direct),
        "direct-mode pods were cut by a UDP drop"
    );
    assert_eq!(direct.fabric_dropped().unwrap(), 0);
    assert!(
        !pods_talk(&vxlan),
        "VXLAN pods talked through a UDP 4789 drop"
    );
    assert!(vxlan.fabric_dropped().unwrap() >= 1);

    vxlan.fabric_clear().unwrap();
    assert_eq!(vxlan.fabric_dropped().unwrap(), 0);
    assert!(pods_talk(&vxlan), "VXLAN pods after fabric_clear");
    vxlan.fabric_clear().unwrap(); // clearing a clean fabric is fine
}

#[test]
fn a_pod_network_drop_stops_direct_but_not_vxlan() {
    let (direct, vxlan) = direct_and_vxlan();
    for lab in [&direct, &vxlan] {
        lab.fabric_drop(FabricDrop::ToNet("10.244.0.0/16")).unwrap();
        assert!(
            nodes_talk(lab),
            "{:?}: the underlay itself must work",
            lab.mode()
        );
    }
    assert!(pods_talk(&vxlan), "VXLAN pods were cut by a pod-CIDR drop");
    assert!(
        !pods_talk(&direct),
        "direct pods talked through a pod-CIDR drop"
    );
    // Both directions: pod b0's packets towards node A's own address are dropped too.
    assert!(!direct.ping(direct.pod(1, 0), &direct.node(0).underlay_ip, 1));

    direct.fabric_clear().unwrap();
    assert!(pods_talk(&direct), "direct pods after fabric_clear");
    // A pod's own /32 works as a network, and bad input is refused before nft sees it.
    let b0 = direct.pod(1, 0).ip.clone();
    direct.fabric_drop(FabricDrop::ToNet(&b0)).unwrap();
    assert!(!direct.ping(direct.pod(0, 0), &b0, 1));
    for bad in [
        "10.244.0.0/33",
        "10.244.0/16",
        "10.0.0.0/8 drop; flush ruleset",
    ] {
        let err = direct.fabric_drop(FabricDrop::ToNet(bad)).unwrap_err();
        assert!(format!("{err:#}").contains("bad IPv4 network"), "{err:#}");
    }
}

#[test]
fn protocol_and_all_drops() {
    let lab = Lab::new(Mode::Direct).expect("build lab");
    let (a0, b0) = (lab.pod(0, 0), lab.pod(1, 0));
    lab.fabric_drop(FabricDrop::IpProto(1)).unwrap(); // ICMP
    assert!(!lab.ping(a0, &b0.ip, 1), "ping crossed an ICMP drop");
    assert!(
        lab.tcp_check(a0, b0, 0, TCP_TIMEOUT),
        "TCP was cut by an ICMP drop"
    );

    lab.fabric_drop(FabricDrop::All).unwrap();
    assert!(!lab.tcp_check(a0, b0, 0, Duration::from_millis(800)));
    lab.fabric_clear().unwrap();
    assert!(pods_talk(&lab) && nodes_talk(&lab), "after fabric_clear");
}

/// Whether `netns` has learnt a smaller path MTU towards `dst` (only an ICMP could do that).
fn pmtu_learnt(lab: &Lab, netns: &str, dst: &str) -> bool {
    lab.sh(netns, &format!("ip route get {dst}"))
        .unwrap()
        .contains(" mtu ")
}

/// A TCP transfer of `bytes` bytes each way from pod a0 to pod b0.
fn transfer(lab: &Lab, bytes: usize) -> anyhow::Result<()> {
    let (a0, b0) = (lab.pod(0, 0), lab.pod(1, 0));
    lab.tcp_transfer(&a0.netns, &b0.netns, &b0.ip, 0, bytes, TCP_TIMEOUT)
}

/// Under a 1200-byte fabric MTU, bigger packets vanish at the fabric: no reply, no ICMP,
/// no path MTU learnt, and the sending node's eth0 dropped nothing.
fn big_packets_vanish_silently(direct: &Lab) {
    let (a, b) = (direct.node(0), direct.node(1));
    let (a0, b0) = (direct.pod(0, 0), direct.pod(1, 0));
    // 1200-byte IP packets pass, 1201 and 1400 bytes vanish: no reply and no ICMP.
    assert!(direct.ping_df(&a.netns, &b.underlay_ip, 1172));
    assert!(!direct.ping_df(&a.netns, &b.underlay_ip, 1173));
    let out = direct
        .run(
            &a0.netns,
            &[
                "ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", "-M", "do", "-s", "1372", &b0.ip,
            ],
        )
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        !text.contains("Frag needed") && !text.contains("too long"),
        "{text}"
    );
    assert!(direct.ping_df(&a0.netns, &b0.ip, 1000));
    assert!(!pmtu_learnt(direct, &a.netns, &b.underlay_ip));
    assert!(!pmtu_learnt(direct, &a0.netns, &b0.ip));
    assert!(direct.fabric_dropped().unwrap() >= 3);
    // The fabric dropped them, not the sending node's eth0 (as a lower veth MTU would).
    assert_eq!(direct.link_stats(&a.netns, "eth0").unwrap().tx_dropped, 0);
}

/// Under a 1200-byte fabric MTU, full-size TCP stalls, and passes (as GSO packets,
/// segmented) once the pods' MTU is 1100; leaves the pods at MTU 1100.
fn tcp_stalls_until_the_segments_fit(direct: &Lab) {
    let (a0, b0) = (direct.pod(0, 0), direct.pod(1, 0));
    // TCP: the handshake and a small token pass, full-size segments stall.
    transfer(direct, 0).expect("small TCP under a 1200 fabric MTU");
    assert!(
        transfer(direct, 200_000).is_err(),
        "full-size TCP crossed a 1200 fabric MTU"
    );
    // With pods at MTU 1100 every segment fits: the GSO packets cross, segmented (a
    // counter on the bridge sees them whole, so a length rule would have dropped them).
    for p in [a0, b0] {
        direct.sh(&p.netns, "ip link set eth0 mtu 1100").unwrap();
    }
    let fabric = direct.fabric_netns();
    direct
        .sh(
            fabric,
            "nft add table bridge gso; \
             nft add chain bridge gso seen '{ type filter hook forward priority 0; }'; \
             nft add rule bridge gso seen meta length '>' 1200 counter",
        )
        .unwrap();
    transfer(direct, 200_000).expect("TCP with 1100-byte segments under a 1200 fabric MTU");
    let seen = direct.sh(fabric, "nft list table bridge gso").unwrap();
    assert!(
        !seen.contains("counter packets 0 "),
        "no GSO packet crossed: {seen}"
    );
    direct.sh(fabric, "nft delete table bridge gso").unwrap();
}

/// Pods and fabric back at 1500: everything passes and no qdisc is left on the ports.
fn restoring_the_mtu_lets_everything_pass(direct: &Lab) {
    let (a0, b0) = (direct.pod(0, 0), direct.pod(1, 0));
    for p in [a0, b0] {
        direct.sh(&p.netns, "ip link set eth0 mtu 1500").unwrap();
    }
    direct.fabric_mtu(lab::UNDERLAY_MTU).unwrap();
    direct.fabric_mtu(lab::UNDERLAY_MTU).unwrap(); // twice is fine
    assert!(direct.ping_df(&a0.netns, &b0.ip, 1472));
    transfer(direct, 200_000).expect("full-size TCP after restoring the fabric MTU");
    let qdiscs = direct
        .sh(
            direct.fabric_netns(),
            "tc qdisc show dev port-a; tc qdisc show dev port-b",
        )
        .unwrap();
    assert!(!qdiscs.contains("tbf"), "{qdiscs}");
}

#[test]
fn a_lower_fabric_mtu_drops_big_packets_silently() {
    let (direct, vxlan) = direct_and_vxlan();
    assert!(direct.fabric_mtu(67).is_err());
    direct.fabric_mtu(1200).unwrap();
    big_packets_vanish_silently(&direct);
    tcp_stalls_until_the_segments_fit(&direct);

    // VXLAN adds 50 bytes outside: 1000 + 28 inside fits, 1300 + 28 does not.
    vxlan.fabric_mtu(1200).unwrap();
    let (v0, v1) = (vxlan.pod(0, 0), vxlan.pod(1, 0));
    assert!(vxlan.ping_df(&v0.netns, &v1.ip, 1000));
    assert!(!vxlan.ping_df(&v0.netns, &v1.ip, 1300));

    // Back to 1500: everything passes and no qdisc is left on the ports.
    restoring_the_mtu_lets_everything_pass(&direct);
}
