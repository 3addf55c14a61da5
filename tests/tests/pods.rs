//! Pods named as people name them, from the kubelet's pod log directories
//! under `--host-root`, matched to Calico's veth names.

use std::time::Duration;

use calitrace_tests::calitrace::{Finished, Trace};
use calitrace_tests::{Lab, Mode, Pod};
use tracer_user::facts::pods::calico_veth_name;

/// Renames a lab pod's host veth the way Calico names it for `ns/name`.
fn name_like_calico(lab: &Lab, pod: &Pod, ns: &str, name: &str) -> String {
    let veth = calico_veth_name("cali", ns, name);
    let node = &lab.node(pod.node).netns;
    lab.sh(
        node,
        &format!(
            "ip link set {old} down && ip link set {old} name {veth} && ip link set {veth} up && \
             ip route replace {ip}/32 dev {veth} && \
             sysctl -qw net.ipv4.conf.{veth}.proxy_arp=1 net.ipv4.neigh.{veth}.proxy_delay=0",
            old = pod.cali,
            ip = pod.ip
        ),
    )
    .unwrap();
    veth
}

#[test]
fn records_name_the_pods_from_the_kubelets_log_directories() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    name_like_calico(&lab, &a, "shop", "frontend-7d9f");
    let root = std::env::temp_dir().join(format!("calitrace-hostroot-{}", lab.id()));
    std::fs::create_dir_all(root.join("var/log/pods/shop_frontend-7d9f_6b1c-uid")).unwrap();
    std::fs::create_dir_all(root.join("var/log/pods/shop_cart-0_91aa-uid")).unwrap();
    let t = Trace::start(&lab.node(0).netns, &["--host-root", root.to_str().unwrap()]).unwrap();
    assert!(lab.ping(&a, &b.ip, 2), "ping works after the rename");
    std::thread::sleep(Duration::from_millis(500));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let packets = f.of_type("packet");
    let both = Finished::between(&packets, &a.ip, &b.ip);
    let out: Vec<_> = both.iter().filter(|p| p["src"] == a.ip.as_str()).collect();
    let back: Vec<_> = both.iter().filter(|p| p["dst"] == a.ip.as_str()).collect();
    assert!(!out.is_empty() && !back.is_empty(), "{}", f.dump());
    for p in &back {
        assert_eq!(p["dst_pod"]["name"], "frontend-7d9f", "{p}");
    }
    for p in &out {
        assert_eq!(
            (&p["src_pod"]["namespace"], &p["src_pod"]["name"]),
            (&"shop".into(), &"frontend-7d9f".into()),
            "{p}"
        );
        assert!(p["dst_pod"].is_null(), "pod B runs on the other node: {p}");
    }
    std::fs::remove_dir_all(&root).ok();
}
