//! Calico's WireGuard between two lab nodes: devices named as Felix names
//! them (`wireguard.cali`, its node's tunnel address from its pod block, MTU
//! 1440, one peer per other node with its underlay endpoint and pod block as
//! allowed IPs, the pod block routed through it), made with `wg`. This
//! host's kernel has no WireGuard module: here the tests check that
//! calitrace says so; the kernel matrix's Debian kernels run the real thing.

use std::time::Duration;

use calitrace_tests::calitrace::{self, Trace};
use calitrace_tests::lab::FabricDrop;
use calitrace_tests::{Lab, Mode};
use serde_json::Value;

/// Whether this kernel makes WireGuard devices (tried in node A's netns).
fn kernel_has_wireguard(lab: &Lab) -> bool {
    let ns = &lab.node(0).netns;
    let ok = lab
        .sh(ns, "ip link add calitrace-wg type wireguard")
        .is_ok();
    let _ = lab.sh(ns, "ip link del calitrace-wg");
    ok
}

/// WireGuard between node A and B as Felix sets it up; the nodes' public keys.
fn wireguard_between_the_nodes(lab: &Lab) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("calitrace-wg-{}", lab.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut public = Vec::new();
    for i in 0..2 {
        let n = lab.node(i);
        let key = dir.join(format!("key{i}"));
        let tunnel = n.pod_cidr.replace("/26", "");
        lab.sh(
            &n.netns,
            &format!(
                "umask 077; wg genkey > {k}; ip link add wireguard.cali type wireguard; \
                 wg set wireguard.cali private-key {k} listen-port 51820; \
                 ip addr add {tunnel}/32 dev wireguard.cali; \
                 ip link set wireguard.cali mtu 1440 up",
                k = key.display()
            ),
        )
        .expect("a WireGuard device");
        public.push(
            lab.sh(&n.netns, &format!("wg pubkey < {}", key.display()))
                .unwrap()
                .trim()
                .to_string(),
        );
    }
    for i in 0..2 {
        let (me, other) = (lab.node(i), lab.node(1 - i));
        lab.sh(
            &me.netns,
            &format!(
                "wg set wireguard.cali peer {} endpoint {}:51820 allowed-ips {}; \
                 ip route replace {} dev wireguard.cali",
                public[1 - i],
                other.underlay_ip,
                other.pod_cidr,
                other.pod_cidr
            ),
        )
        .expect("the peer and its route");
    }
    let _ = std::fs::remove_dir_all(&dir);
    public
}

/// `calitrace doctor -o json`'s `wireguard` check on node `i`.
fn wireguard_check(lab: &Lab, i: usize) -> Value {
    let f = calitrace::run(
        Some(&lab.node(i).netns),
        &[],
        &["doctor", "-o", "json"],
        Duration::from_secs(30),
    )
    .unwrap();
    f.of_type("check")
        .into_iter()
        .find(|c| c["id"] == "wireguard")
        .cloned()
        .unwrap_or_else(|| panic!("no wireguard check\n{}", f.dump()))
}

/// The check has `status` and its summary says `text`.
fn assert_check(c: &Value, status: &str, text: &str) {
    assert_eq!(c["status"], status, "{c}");
    let summary = c["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(text), "{c}");
}

#[test]
fn doctor_reads_wireguard_as_the_kernel_reports_it() {
    let lab = Lab::new(Mode::Direct).unwrap();
    if !kernel_has_wireguard(&lab) {
        // A device of that name that is no WireGuard device: calitrace says
        // the kernel cannot tell it about WireGuard, and goes on.
        lab.sh(&lab.node(0).netns, "ip link add wireguard.cali type veth peer name wg-sink; ip link set wireguard.cali up; ip addr add 10.244.1.0/32 dev wireguard.cali")
            .unwrap();
        let c = wireguard_check(&lab, 0);
        assert_check(&c, "warn", "no WireGuard module");
        return;
    }
    let keys = wireguard_between_the_nodes(&lab);
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    // UDP 51820 blocked between the nodes: the handshake never completes.
    lab.fabric_drop(FabricDrop::UdpPort(51820)).unwrap();
    assert!(!lab.ping(&a, &b.ip, 2), "nothing gets through");
    let c = wireguard_check(&lab, 0);
    let peer = format!("no handshake with {}:51820", lab.node(1).underlay_ip);
    assert_check(&c, "fail", &peer);
    // Open again: the pods talk, each node has shaken hands (WireGuard
    // retries a handshake 5 s after the last try).
    lab.fabric_clear().unwrap();
    let through = (0..12).any(|_| lab.ping(&a, &b.ip, 5));
    assert!(through, "through WireGuard");
    let c = wireguard_check(&lab, 0);
    assert_check(&c, "ok", "1 peer(s), 1 with a handshake");
    // Node B loses its peer (a node Felix no longer knows): B says so.
    lab.sh(
        &lab.node(1).netns,
        &format!("wg set wireguard.cali peer {} remove", keys[0]),
    )
    .unwrap();
    let c = wireguard_check(&lab, 1);
    assert_check(&c, "warn", "wireguard.cali has no peers");
    // The device without its address (calico#8039).
    lab.sh(&lab.node(1).netns, "ip addr flush dev wireguard.cali")
        .unwrap();
    let c = wireguard_check(&lab, 1);
    assert_check(&c, "fail", "has no IPv4 address");
}

#[test]
fn wireguard_cali_is_traced_like_the_other_tunnels() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let wireguard = kernel_has_wireguard(&lab);
    if wireguard {
        wireguard_between_the_nodes(&lab);
    } else {
        // No WireGuard here: a device of its name that the pod block is
        // routed into (a veth whose other end drops everything) shows that calitrace picks
        // it by name, as it does Calico's other tunnels.
        lab.sh(
            &lab.node(0).netns,
            &format!(
                "ip link add wireguard.cali type veth peer name wg-sink; \
                 ip link set wireguard.cali arp off up; ip link set wg-sink up; \
                 ip route replace {} dev wireguard.cali",
                lab.node(1).pod_cidr
            ),
        )
        .unwrap();
    }
    let t = Trace::start(&lab.node(0).netns, &[]).unwrap();
    assert_eq!(lab.ping(&a, &b.ip, 2), wireguard);
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let through = f
        .of_type("packet")
        .into_iter()
        .filter(|p| p["ifname"] == "wireguard.cali" && p["dst"] == b.ip.as_str())
        .count();
    assert!(
        through >= 2,
        "the pings leave by wireguard.cali\n{}",
        f.dump()
    );
    if wireguard {
        // On the uplink they are WireGuard's UDP, to the other node.
        assert!(
            f.of_type("packet")
                .iter()
                .any(|p| p["ifname"] == "eth0" && p["dport"] == 51820),
            "{}",
            f.dump()
        );
    }
}

#[test]
fn a_source_outside_the_peers_allowed_ips_is_the_receiving_nodes_wireguard_refusal() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let wireguard = kernel_has_wireguard(&lab);
    if wireguard {
        let keys = wireguard_between_the_nodes(&lab);
        // Node B lets node A's peer send from its tunnel address only, not
        // from its pods (as when a pod's block is not the node's: calico#9751).
        lab.sh(
            &lab.node(1).netns,
            &format!(
                "wg set wireguard.cali peer {} allowed-ips {}",
                keys[0],
                lab.node(0).pod_cidr.replace("/26", "/32")
            ),
        )
        .unwrap();
    }
    // The cluster view: node B's refusal is node B's, never the underlay's
    // (the packets did reach node B's uplink).
    let t = Trace::start_cluster(
        &[
            ("node-a", lab.node(0).netns.as_str()),
            ("node-b", lab.node(1).netns.as_str()),
        ],
        &[],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    // With WireGuard node B refuses what pod A sends; without, it is routed.
    assert_eq!(lab.ping(&a, &b.ip, 3), !wireguard);
    std::thread::sleep(Duration::from_millis(2500));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    assert!(
        f.diagnoses()
            .iter()
            .all(|d| !d["code"].as_str().unwrap_or("").starts_with("UNDERLAY")),
        "{}",
        f.dump()
    );
    let refused: Vec<&Value> = f
        .diagnoses()
        .into_iter()
        .filter(|d| d["code"] == "WIREGUARD_REFUSED")
        .collect();
    if !wireguard {
        // No WireGuard here (no device at all): nothing refused.
        assert!(refused.is_empty(), "{}", f.dump());
        return;
    }
    let d = refused
        .last()
        .unwrap_or_else(|| panic!("no WIREGUARD_REFUSED\n{}", f.dump()));
    assert_eq!(d["ifname"], "wireguard.cali", "{d}");
    assert_eq!(d["node"], "node-b", "{d}");
    assert!(d["count"].as_u64().unwrap_or(0) >= 1, "{d}");
    let allowed = format!("allows {}", lab.node(0).pod_cidr.replace("/26", "/32"));
    assert!(
        d["summary"].as_str().unwrap_or("").contains(&allowed),
        "{d}"
    );
}
