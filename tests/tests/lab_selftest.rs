//! Self-test of the network-namespace lab: it must really carry traffic the Calico way,
//! break in the expected ways, run in parallel and clean up after itself. Needs root.

use calitrace_tests::lab::{self, Backend, Lab, Mode};
use std::process::Command;
use std::time::{Duration, Instant};

const TCP_TIMEOUT: Duration = Duration::from_secs(3);

fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(out.status.success(), "ip netns list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_connected(lab: &Lab) {
    let (a0, b0) = (lab.pod(0, 0), lab.pod(1, 0));
    assert!(
        lab.ping(a0, &b0.ip, 2),
        "{:?}: ping {} -> {} failed",
        lab.mode(),
        a0.ip,
        b0.ip
    );
    assert!(
        lab.ping(b0, &a0.ip, 2),
        "{:?}: ping {} -> {} failed",
        lab.mode(),
        b0.ip,
        a0.ip
    );
    lab.tcp_probe(&a0.netns, &b0.netns, &b0.ip, 8080, TCP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{:?}: TCP a0 -> b0: {e:#}", lab.mode()));
    lab.tcp_probe(&b0.netns, &a0.netns, &a0.ip, 8080, TCP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{:?}: TCP b0 -> a0: {e:#}", lab.mode()));
    assert!(
        lab.tcp_check(a0, b0, 0, TCP_TIMEOUT),
        "tcp_check with port 0"
    );
}

#[test]
fn direct_mode_ping_and_tcp() {
    let lab = Lab::new(Mode::Direct).expect("build lab");
    let (a, b) = (lab.node(0), lab.node(1));
    assert_eq!(a.pod_cidr, "10.244.1.0/26");
    assert_eq!(b.pod_cidr, "10.244.2.0/26");
    assert_eq!(lab.pod(0, 0).ip, "10.244.1.10");
    assert_eq!(lab.pod(1, 0).ip, "10.244.2.10");
    assert_eq!(lab.pods().len(), 2);
    for p in lab.pods() {
        assert!(
            p.cali.starts_with("cali") && p.cali.len() == 15,
            "cali name {}",
            p.cali
        );
    }
    // The Calico plumbing is really there.
    let routes = lab.sh(&a.netns, "ip route show").unwrap();
    assert!(
        routes.contains(&format!("10.244.2.0/26 via {}", b.underlay_ip)),
        "{routes}"
    );
    assert!(
        routes.contains(&format!(
            "10.244.1.10 dev {} scope link",
            lab.pod(0, 0).cali
        )),
        "{routes}"
    );
    let pod_routes = lab.sh(&lab.pod(0, 0).netns, "ip route show").unwrap();
    assert!(
        pod_routes.contains("default via 169.254.1.1 dev eth0"),
        "{pod_routes}"
    );
    assert_eq!(
        lab.sh(
            &a.netns,
            &format!(
                "cat /proc/sys/net/ipv4/conf/{}/proxy_arp",
                lab.pod(0, 0).cali
            )
        )
        .unwrap()
        .trim(),
        "1"
    );
    assert!(
        !lab.run(&a.netns, &["ip", "link", "show", "vxlan.calico"])
            .unwrap()
            .status
            .success()
    );

    assert_connected(&lab);
    // Nodes reach pods too, and the node's underlay address is reachable from a pod.
    assert!(lab.ping_from(&a.netns, &lab.pod(1, 0).ip, 1));
    assert!(lab.ping(lab.pod(0, 0), &b.underlay_ip, 1));
}

#[test]
fn vxlan_mode_ping_tcp_and_tunnel_counters() {
    let lab = Lab::new(Mode::Vxlan).expect("build lab");
    let (a, b) = (lab.node(0), lab.node(1));
    assert_eq!(a.tunnel_ip.as_deref(), Some("10.244.1.1"));
    let routes = lab.sh(&a.netns, "ip route show").unwrap();
    assert!(
        routes.contains("10.244.2.0/26 via 10.244.2.1 dev vxlan.calico onlink"),
        "{routes}"
    );
    let details = lab.sh(&a.netns, "ip -d link show vxlan.calico").unwrap();
    assert!(details.contains("vxlan id 4096"), "{details}");
    assert!(details.contains("dstport 4789"), "{details}");
    assert!(details.contains("mtu 1450"), "{details}");

    let a_before = lab.link_stats(&a.netns, lab::VXLAN_DEV).unwrap();
    let b_before = lab.link_stats(&b.netns, lab::VXLAN_DEV).unwrap();
    assert_connected(&lab);
    let a_after = lab.link_stats(&a.netns, lab::VXLAN_DEV).unwrap();
    let b_after = lab.link_stats(&b.netns, lab::VXLAN_DEV).unwrap();
    // 2 pings each way + 3 TCP connections; every one of them crosses the tunnel.
    assert!(
        a_after.tx_packets >= a_before.tx_packets + 4,
        "A tx {a_before:?} -> {a_after:?}"
    );
    assert!(
        a_after.rx_packets >= a_before.rx_packets + 4,
        "A rx {a_before:?} -> {a_after:?}"
    );
    assert!(
        b_after.tx_packets >= b_before.tx_packets + 4,
        "B tx {b_before:?} -> {b_after:?}"
    );
    assert!(
        b_after.rx_packets >= b_before.rx_packets + 4,
        "B rx {b_before:?} -> {b_after:?}"
    );

    // And the underlay really carries the pod traffic as UDP/4789 from A to B.
    lab.nft(
        0,
        "table ip ctlab_count {\n  chain post {\n    type filter hook postrouting priority 0; policy accept;\n    \
         oifname \"eth0\" ip daddr 10.244.0.0/16 counter\n    oifname \"eth0\" udp dport 4789 counter\n  }\n}\n",
    )
    .unwrap();
    assert!(lab.ping(lab.pod(0, 0), &lab.pod(1, 0).ip, 2));
    let ruleset = lab.sh(&a.netns, "nft list table ip ctlab_count").unwrap();
    let packets: Vec<u64> = ruleset
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(packets.len(), 2, "{ruleset}");
    assert_eq!(
        packets[0], 0,
        "pod traffic left node A unencapsulated: {ruleset}"
    );
    assert!(
        packets[1] >= 2,
        "no VXLAN packets on the underlay: {ruleset}"
    );
}

#[test]
fn faults_break_connectivity() {
    let lab = Lab::new(Mode::Direct).expect("build lab");
    let (a0, b0) = (lab.pod(0, 0), lab.pod(1, 0));
    assert!(lab.ping(a0, &b0.ip, 2), "baseline ping");

    // FORWARD policy DROP on the receiving node (iptables-legacy).
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    assert!(
        !lab.ping(a0, &b0.ip, 2),
        "ping passed FORWARD DROP (legacy)"
    );
    assert!(!lab.tcp_check(a0, b0, 8081, Duration::from_millis(800)));
    let counters = lab
        .iptables_output(1, Backend::Legacy, &["-L", "FORWARD", "-v", "-n", "-x"])
        .unwrap();
    assert!(counters.contains("policy DROP"), "{counters}");
    lab.iptables(1, Backend::Legacy, &["-P", "FORWARD", "ACCEPT"])
        .unwrap();
    assert!(
        lab.ping(a0, &b0.ip, 2),
        "ping after restoring FORWARD ACCEPT"
    );

    // Same with iptables-nft.
    lab.iptables(1, Backend::Nft, &["-P", "FORWARD", "DROP"])
        .unwrap();
    assert!(!lab.ping(a0, &b0.ip, 2), "ping passed FORWARD DROP (nft)");
    lab.iptables(1, Backend::Nft, &["-P", "FORWARD", "ACCEPT"])
        .unwrap();
    assert!(
        lab.ping(a0, &b0.ip, 2),
        "ping after restoring iptables-nft FORWARD ACCEPT"
    );

    // Native nft ruleset.
    lab.nft(
        1,
        "table inet ctlab {\n  chain forward_drop {\n    type filter hook forward priority 0; policy drop;\n  }\n}\n",
    )
    .unwrap();
    assert!(!lab.ping(a0, &b0.ip, 2), "ping passed nft forward drop");
    lab.nft(1, "delete table inet ctlab").unwrap();
    assert!(lab.ping(a0, &b0.ip, 2), "ping after deleting the nft table");

    // proxy_arp=0 on the sender's cali: the pod can no longer resolve 169.254.1.1.
    lab.sysctl(
        &lab.node(0).netns,
        &format!("net.ipv4.conf.{}.proxy_arp", a0.cali),
        "0",
    )
    .unwrap();
    lab.sh(&a0.netns, "ip neigh flush dev eth0").unwrap();
    assert!(!lab.ping(a0, &b0.ip, 2), "ping passed with proxy_arp=0");
    lab.sysctl(
        &lab.node(0).netns,
        &format!("net.ipv4.conf.{}.proxy_arp", a0.cali),
        "1",
    )
    .unwrap();
    lab.sh(&a0.netns, "ip neigh flush dev eth0").unwrap();
    assert!(lab.ping(a0, &b0.ip, 2), "ping after restoring proxy_arp");
}

#[test]
fn two_labs_in_parallel_do_not_interfere() {
    let t1 = std::thread::spawn(|| Lab::new(Mode::Direct).expect("lab 1"));
    let t2 = std::thread::spawn(|| Lab::new(Mode::Vxlan).expect("lab 2"));
    let l1 = t1.join().unwrap();
    let l2 = t2.join().unwrap();
    assert_ne!(l1.id(), l2.id());
    for n in l1.netns_names() {
        assert!(!l2.netns_names().contains(n));
    }
    assert_ne!(
        Lab::netns_inode(&l1.node(0).netns).unwrap(),
        Lab::netns_inode(&l2.node(0).netns).unwrap()
    );
    // Lab 1 gets a fault; lab 2 must not notice, and both run traffic at the same time.
    l1.iptables(1, Backend::Legacy, &["-P", "FORWARD", "DROP"])
        .unwrap();
    std::thread::scope(|s| {
        let h1 = s.spawn(|| l1.ping(l1.pod(0, 0), &l1.pod(1, 0).ip, 2));
        let h2 = s.spawn(|| {
            l2.ping(l2.pod(0, 0), &l2.pod(1, 0).ip, 2)
                && l2.tcp_check(l2.pod(0, 0), l2.pod(1, 0), 9000, TCP_TIMEOUT)
                && l2.tcp_check(l2.pod(1, 0), l2.pod(0, 0), 9000, TCP_TIMEOUT)
        });
        assert!(!h1.join().unwrap(), "lab 1 ping passed its FORWARD DROP");
        assert!(h2.join().unwrap(), "lab 2 was disturbed by lab 1");
    });
    // Lab 2's rules are untouched.
    let rules = l2
        .iptables_output(1, Backend::Legacy, &["-S", "FORWARD"])
        .unwrap();
    assert!(rules.contains("-P FORWARD ACCEPT"), "{rules}");
    // Labs cannot be used on each other's namespaces.
    assert!(l1.run(&l2.node(0).netns, &["true"]).is_err());
}

#[test]
fn dropped_lab_leaves_no_netns() {
    let mut lab = Lab::new(Mode::Vxlan).expect("build lab");
    let extra = lab.add_netns("ext").unwrap();
    let names: Vec<String> = lab.netns_names().to_vec();
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(names.contains(&extra));
    assert!(names.iter().any(|n| n == lab.fabric_netns()));
    let listed = netns_list();
    for n in &names {
        assert!(n.starts_with(lab.id()) && n.starts_with(lab::PREFIX));
        assert!(listed.contains(n), "{n} missing from {listed:?}");
    }
    drop(lab);
    let listed = netns_list();
    for n in &names {
        assert!(!listed.contains(n), "{n} still present after drop");
    }
}

#[test]
fn lab_is_cleaned_up_after_a_panic() {
    let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let n2 = names.clone();
    let r = std::thread::spawn(move || {
        let lab = Lab::new(Mode::Direct).expect("build lab");
        *n2.lock().unwrap() = lab.netns_names().to_vec();
        panic!("deliberate panic with a live lab");
    })
    .join();
    assert!(r.is_err());
    let names = names.lock().unwrap().clone();
    assert_eq!(
        names.len(),
        5,
        "two nodes, the fabric and two pods: {names:?}"
    );
    let listed = netns_list();
    for n in &names {
        assert!(!listed.contains(n), "{n} survived a panic");
    }
}

#[test]
fn several_pods_per_node() {
    let lab = Lab::with_pods(Mode::Direct, 3).expect("build lab");
    assert_eq!(lab.pods().len(), 6);
    assert_eq!(lab.pod(0, 2).ip, "10.244.1.12");
    assert_eq!(lab.pod(1, 2).ip, "10.244.2.12");
    let mut calis: Vec<&str> = lab.pods().iter().map(|p| p.cali.as_str()).collect();
    calis.sort();
    calis.dedup();
    assert_eq!(calis.len(), 6);
    // Same node (through the node's /32 routes) and across nodes.
    assert!(lab.ping(lab.pod(0, 0), &lab.pod(0, 1).ip, 1));
    assert!(lab.ping(lab.pod(0, 2), &lab.pod(1, 1).ip, 1));
    assert!(lab.tcp_check(lab.pod(1, 2), lab.pod(0, 1), 7000, TCP_TIMEOUT));
    assert!(Lab::with_pods(Mode::Direct, lab::MAX_PODS_PER_NODE + 1).is_err());
}

#[test]
fn in_netns_and_helpers() {
    let lab = Lab::new(Mode::Direct).expect("build lab");
    let pod = lab.pod(0, 0).clone();
    // A thread in the pod netns sees the pod's eth0 address (note: /proc/thread-self/net,
    // since /proc/self/net shows the main thread's netns) and can bind to it.
    let ip = pod.ip.clone();
    let (addrs, bound) = Lab::in_netns(&pod.netns, move || {
        let trie = std::fs::read_to_string("/proc/thread-self/net/fib_trie").unwrap_or_default();
        (trie, std::net::UdpSocket::bind((ip.as_str(), 0)).is_ok())
    })
    .unwrap();
    assert!(addrs.contains(&pod.ip), "{addrs}");
    assert!(
        bound,
        "could not bind to the pod address inside the pod netns"
    );
    // The test thread itself is still in its own netns: the pod address is not local here.
    assert!(std::net::UdpSocket::bind((pod.ip.as_str(), 0)).is_err());
    assert!(lab.ifindex(&pod.netns, "eth0").unwrap() > 1);
    assert!(Lab::in_netns("ctlab-does-not-exist", || ()).is_err());
    // Failed commands report stderr.
    let err = lab.sh(&pod.netns, "echo oops >&2; exit 3").unwrap_err();
    assert!(format!("{err:#}").contains("oops"), "{err:#}");
    // TCP to a closed address fails within the timeout.
    let t = Instant::now();
    assert!(
        lab.tcp_probe(
            &pod.netns,
            &lab.pod(1, 0).netns,
            "10.244.2.50",
            7001,
            Duration::from_millis(700)
        )
        .is_err()
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn cleanup_stale_removes_only_dead_pids() {
    // A pid that certainly is dead now: a finished child.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("{}{dead}-0-node-a", lab::PREFIX);
    let alive = format!("{}{}-999999-node-a", lab::PREFIX, std::process::id());
    for n in [&stale, &alive] {
        let st = Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .unwrap();
        assert!(st.success());
    }
    lab::cleanup_stale();
    let listed = netns_list();
    let alive_present = listed.contains(&alive);
    let _ = Command::new("ip").args(["netns", "del", &alive]).status();
    if listed.contains(&stale) {
        let _ = Command::new("ip").args(["netns", "del", &stale]).status();
        panic!("stale netns {stale} survived cleanup_stale");
    }
    assert!(
        alive_present,
        "cleanup_stale removed a netns of a live process"
    );
}

#[test]
fn an_empty_lab_holds_namespaces_of_its_own_joined_by_veths() {
    let mut lab = Lab::empty();
    let a = lab.add_netns("a").unwrap();
    let b = lab.add_netns("b").unwrap();
    assert_eq!(lab.netns_names(), [a.clone(), b.clone()]);
    lab.add_veth(&a, "v0", &b, "v1").unwrap();
    lab.sh(&a, "ip addr add 192.0.2.1/24 dev v0; ip link set v0 up")
        .unwrap();
    lab.sh(&b, "ip addr add 192.0.2.2/24 dev v1; ip link set v1 up")
        .unwrap();
    assert!(lab.ping_from(&a, "192.0.2.2", 1));
    assert!(
        lab.add_veth(&a, "v2", "ctlab-not-ours", "v3").is_err(),
        "only namespaces of this lab"
    );
    let names = lab.netns_names().to_vec();
    drop(lab);
    let left = netns_list();
    assert!(names.iter().all(|n| !left.contains(n)), "{left:?}");
}
