//! `calitrace doctor` in a lab node: the real binary, started with
//! `ip netns exec <node> calitrace doctor -o json`, on a healthy node and on
//! one fault per check that the lab can break.
//!
//! The host root is a stand-in (`--host-root`) whose `/proc` is the real one
//! (so sysctls, routes and processes are the node's) and whose `iptables`
//! command is iptables-nft, with no container runtime or CNI files: the
//! outcome does not depend on what this machine has installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use calitrace_tests::calitrace::{self, Finished};
use calitrace_tests::felix::{self, FelixStandin, Hook, StandinCfg};
use calitrace_tests::{Backend, Lab, Mode};
use serde_json::Value;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A host root for doctor: `/proc` linked to the real one, an `iptables`
/// that leads to `xtables-nft-multi`; removed on drop.
struct HostRoot(PathBuf);

impl HostRoot {
    fn new() -> HostRoot {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("calitrace-doctor-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sbin = dir.join("usr/sbin");
        std::fs::create_dir_all(&sbin).unwrap();
        std::os::unix::fs::symlink("/proc", dir.join("proc")).unwrap();
        std::fs::write(sbin.join("xtables-nft-multi"), "").unwrap();
        std::os::unix::fs::symlink("xtables-nft-multi", sbin.join("iptables")).unwrap();
        HostRoot(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one doctor run said.
struct Doctor {
    finished: Finished,
    checks: BTreeMap<String, Value>,
}

impl Doctor {
    fn check(&self, id: &str) -> &Value {
        self.checks
            .get(id)
            .unwrap_or_else(|| panic!("no {id} check\n{}", self.finished.dump()))
    }

    fn status(&self, id: &str) -> &str {
        self.check(id)["status"].as_str().unwrap()
    }

    fn exit(&self) -> Option<i32> {
        self.finished.status.code()
    }

    fn assert_status(&self, id: &str, want: &[&str]) {
        assert!(
            want.contains(&self.status(id)),
            "{id} should be {want:?}: {}\n{}",
            self.check(id),
            self.finished.dump()
        );
    }
}

fn doctor_with(netns: &str, args: &[&str]) -> Doctor {
    let mut full = vec!["doctor", "-o", "json"];
    full.extend_from_slice(args);
    let finished = calitrace::run(Some(netns), &[], &full, Duration::from_secs(30)).unwrap();
    assert!(
        finished.waited < Duration::from_secs(5),
        "doctor took {:?}\n{}",
        finished.waited,
        finished.dump()
    );
    assert!(!finished.stderr.contains("panicked"), "{}", finished.dump());
    let checks: BTreeMap<String, Value> = finished
        .of_type("check")
        .into_iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    assert_eq!(checks.len(), 15, "one line per check\n{}", finished.dump());
    for c in checks.values() {
        for field in ["summary", "evidence"] {
            assert!(c[field].is_string(), "{field} in {c}");
        }
        assert!(c["hint"].is_string() || c["hint"].is_null(), "{c}");
    }
    Doctor { finished, checks }
}

fn doctor(lab: &Lab, node: usize, root: &HostRoot) -> Doctor {
    let root = root.path().to_str().unwrap().to_string();
    doctor_with(&lab.node(node).netns, &["--host-root", &root])
}

fn assert_healthy(mode: Mode) {
    let lab = Lab::new(mode).unwrap();
    let root = HostRoot::new();
    let d = doctor(&lab, 1, &root);
    for id in [
        "ip_forward",
        "proxy_arp",
        "default_route",
        "rp_filter",
        "mtu",
        "routes",
    ] {
        d.assert_status(id, &["ok"]);
    }
    for (id, c) in &d.checks {
        assert_ne!(c["status"], "fail", "{id}: {c}\n{}", d.finished.dump());
    }
    assert_eq!(d.exit(), Some(0), "{}", d.finished.dump());
    if mode == Mode::Vxlan {
        d.assert_status("tunnel", &["ok"]);
        let mtu = d.check("mtu")["summary"].as_str().unwrap();
        assert!(mtu.contains("1450"), "{mtu}");
    }
}

#[test]
fn healthy_direct_node_passes() {
    assert_healthy(Mode::Direct);
}

#[test]
fn healthy_vxlan_node_passes() {
    assert_healthy(Mode::Vxlan);
}

#[test]
fn proxy_arp_off_on_a_cali_interface_fails() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let root = HostRoot::new();
    let (nb, cali) = (lab.node(1).netns.clone(), lab.pod(1, 0).cali.clone());
    lab.sysctl(&nb, &format!("net.ipv4.conf.{cali}.proxy_arp"), "0")
        .unwrap();
    let d = doctor(&lab, 1, &root);
    d.assert_status("proxy_arp", &["fail"]);
    let c = d.check("proxy_arp");
    assert!(c["summary"].as_str().unwrap().contains(&cali), "{c}");
    assert_eq!(
        c["evidence"],
        format!("net.ipv4.conf.{cali}.proxy_arp = 0").as_str()
    );
    assert!(
        c["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("sysctl -w net.ipv4.conf.{cali}.proxy_arp=1")),
        "{c}"
    );
    assert_eq!(d.exit(), Some(1), "{}", d.finished.dump());
    assert!(
        d.finished.stderr.contains("proxy_arp"),
        "{}",
        d.finished.dump()
    );

    // The text table says the same with its symbols.
    let r = root.path().to_str().unwrap();
    let text = calitrace::run(
        Some(&nb),
        &[],
        &["doctor", "--host-root", r],
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(text.status.code(), Some(1));
    assert!(text.stdout.contains("✗ fail proxy_arp"), "{}", text.stdout);
    assert!(text.stdout.contains("✓ ok   ip_forward"), "{}", text.stdout);
}

#[test]
fn strict_rp_filter_on_the_uplink_warns_and_fails_with_an_asymmetric_route() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let root = HostRoot::new();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let nb = lab.node(1).netns.clone();
    lab.sysctl(&nb, "net.ipv4.conf.eth0.rp_filter", "1")
        .unwrap();
    let d = doctor(&lab, 1, &root);
    d.assert_status("rp_filter", &["warn", "fail"]);
    let c = d.check("rp_filter");
    assert!(c["summary"].as_str().unwrap().contains("eth0"), "{c}");
    assert!(
        c["hint"]
            .as_str()
            .unwrap()
            .contains("net.ipv4.conf.eth0.rp_filter=2"),
        "{c}"
    );
    assert!(
        c["evidence"]
            .as_str()
            .unwrap()
            .contains("net.ipv4.conf.eth0.rp_filter = 1"),
        "{c}"
    );

    // The way back to pod A now leaves by B's cali interface: A's packets,
    // which arrive on eth0, fail the check.
    lab.sh(&nb, &format!("ip route add {}/32 dev {}", a.ip, b.cali))
        .unwrap();
    let d = doctor(&lab, 1, &root);
    d.assert_status("rp_filter", &["fail"]);
    let summary = d.check("rp_filter")["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        summary.contains(&b.cali) && summary.contains(&a.ip),
        "{summary}"
    );
    assert_eq!(d.exit(), Some(1));
}

#[test]
fn ip_forward_off_fails() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let root = HostRoot::new();
    lab.sysctl(&lab.node(1).netns, "net.ipv4.ip_forward", "0")
        .unwrap();
    let d = doctor(&lab, 1, &root);
    d.assert_status("ip_forward", &["fail"]);
    assert_eq!(d.check("ip_forward")["evidence"], "net.ipv4.ip_forward = 0");
    assert_eq!(d.exit(), Some(1));
}

#[test]
fn no_default_route_fails() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let root = HostRoot::new();
    lab.sh(&lab.node(1).netns, "ip route del default").unwrap();
    let d = doctor(&lab, 1, &root);
    d.assert_status("default_route", &["fail"]);
    let c = d.check("default_route");
    assert!(
        c["summary"].as_str().unwrap().contains("169.254.1.1"),
        "{c}"
    );
    assert_eq!(d.exit(), Some(1));
}

#[test]
fn cali_mtu_too_big_for_vxlan_fails() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let root = HostRoot::new();
    let cali = lab.pod(1, 0).cali.clone();
    lab.sh(&lab.node(1).netns, &format!("ip link set {cali} mtu 1500"))
        .unwrap();
    let d = doctor(&lab, 1, &root);
    d.assert_status("mtu", &["fail"]);
    let c = d.check("mtu");
    let summary = c["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("{cali}'s MTU 1500")), "{c}");
    assert!(summary.contains("VXLAN's 50 = 1450"), "{c}");
    assert!(c["hint"].as_str().unwrap().contains("1450"), "{c}");
    assert_eq!(d.exit(), Some(1));
}

#[test]
fn legacy_calico_chains_on_an_nft_node_fail() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let root = HostRoot::new();
    lab.iptables(1, Backend::Legacy, &["-N", "cali-FORWARD"])
        .unwrap();
    lab.iptables(1, Backend::Legacy, &["-A", "FORWARD", "-j", "cali-FORWARD"])
        .unwrap();
    let d = doctor(&lab, 1, &root);
    d.assert_status("iptables_backend", &["fail"]);
    let c = d.check("iptables_backend");
    assert!(
        c["summary"].as_str().unwrap().contains("iptables-legacy"),
        "{c}"
    );
    assert!(
        c["hint"]
            .as_str()
            .unwrap()
            .contains("FELIX_IPTABLESBACKEND=NFT"),
        "{c}"
    );
    assert!(
        c["evidence"]
            .as_str()
            .unwrap()
            .contains("cali-* chains: legacy; KUBE-* chains: none; iptables command: nft"),
        "{c}"
    );
    assert_eq!(d.exit(), Some(1));
}

#[test]
fn a_missing_host_root_gives_skips() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let d = doctor_with(&lab.node(1).netns, &["--host-root", "/nonexistent"]);
    for id in [
        "ip_forward",
        "rp_filter",
        "proxy_arp",
        "default_route",
        "mtu",
        "cni_config",
    ] {
        d.assert_status(id, &["skip"]);
    }
    assert_eq!(d.exit(), Some(0), "{}", d.finished.dump());
    assert!(
        d.finished.stderr.contains("/nonexistent"),
        "{}",
        d.finished.dump()
    );
}

#[test]
fn several_faults_at_once_are_each_named() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let root = HostRoot::new();
    let (nb, cali) = (lab.node(1).netns.clone(), lab.pod(1, 0).cali.clone());
    lab.sysctl(&nb, &format!("net.ipv4.conf.{cali}.proxy_arp"), "0")
        .unwrap();
    lab.sysctl(&nb, "net.ipv4.conf.eth0.rp_filter", "1")
        .unwrap();
    lab.sh(&nb, &format!("ip link set {cali} mtu 1500"))
        .unwrap();
    lab.iptables(1, Backend::Legacy, &["-N", "cali-FORWARD"])
        .unwrap();
    let d = doctor(&lab, 1, &root);
    for (id, want) in [
        ("iptables_backend", "fail"),
        ("proxy_arp", "fail"),
        ("mtu", "fail"),
        ("rp_filter", "warn"),
        ("ip_forward", "ok"),
        ("default_route", "ok"),
        ("tunnel", "ok"),
    ] {
        d.assert_status(id, &[want]);
    }
    assert_eq!(d.exit(), Some(1));
    let r = root.path().to_str().unwrap();
    let text = calitrace::run(
        Some(&nb),
        &[],
        &["doctor", "--host-root", r],
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(text.stdout.contains("✗ fail mtu"), "{}", text.stdout);
    assert!(text.stdout.contains("⚠ warn rp_filter"), "{}", text.stdout);
    assert!(text.stdout.contains("– skip cni_config"), "{}", text.stdout);
    if std::env::var_os("CALITRACE_TEST_DUMP").is_some() {
        eprintln!("{}\n{}", text.stdout, text.stderr);
    }
}

/// A bpffs mounted at the host root's /sys/fs/bpf, where doctor looks for
/// Felix's maps; unmounted on drop.
struct RootBpffs(PathBuf);

impl RootBpffs {
    fn mount(root: &HostRoot) -> RootBpffs {
        let dir = root.path().join("sys/fs/bpf");
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a bpffs at {}", dir.display());
        RootBpffs(dir)
    }
}

impl Drop for RootBpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn ebpf_mode_names_felixs_layout_and_the_interfaces_without_its_program() {
    let lab = Lab::new(Mode::Direct).unwrap();
    // The host's own /sys/fs/bpf must be a bpffs, as on any node in eBPF mode.
    felix::ensure_bpffs().unwrap();
    let root = HostRoot::new();
    let bpffs = RootBpffs::mount(&root);
    let b = lab.pod(1, 0).clone();
    // Calico's program (the stand-in, named as the kernel shows Felix's) at
    // tc egress of pod B's interface only.
    let standin = FelixStandin::attach(
        &lab.node(1).netns,
        &b.cali,
        Hook::Egress,
        &bpffs.0.join("tc/globals"),
        StandinCfg::default(),
    )
    .unwrap();
    let d = doctor(&lab, 1, &root);
    d.assert_status("ebpf", &["fail"]);
    let c = d.check("ebpf");
    let summary = c["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!("{} (ingress)", b.cali))
            && !summary.contains(&format!("{} (ingress, egress)", b.cali))
            && summary.contains("eth0 (ingress, egress)"),
        "{c}"
    );
    assert!(
        c["evidence"]
            .as_str()
            .unwrap()
            .contains("cali_counters6: 27 counters (Calico 3.32.1 or later)"),
        "{c}"
    );
    assert_eq!(d.exit(), Some(1), "a failed check");
    drop(standin);
    drop(bpffs);
    // Without Felix's maps the check has nothing to say.
    let d = doctor(&lab, 1, &root);
    d.assert_status("ebpf", &["skip"]);
}
