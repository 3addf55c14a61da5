//! Calico's eBPF dataplane: drops of its tc programs named from Felix's
//! counters. No Felix runs here: the stand-in (tests/felix-standin, see
//! `calitrace_tests::felix`) drops packets at a pod's cali interface and
//! moves `cali_counters6` (Calico 3.32.1's layout) and `cali_rule_ctrs2`
//! as Felix's programs do; the policy debug file is written in Felix 3.32's
//! wording. Maps are pinned in a directory of the test's own, never in
//! /sys/fs/bpf/tc/globals.

use std::path::{Path, PathBuf};
use std::time::Duration;

use calitrace_tests::calitrace::{self, Trace};
use calitrace_tests::felix::{self, FelixStandin, Hook, Layout, StandinCfg};
use calitrace_tests::{Lab, Mode};
use serde_json::Value;

const MATCH_ID: u64 = 12817593485201384321;

/// A policy debug file as Felix 3.32 writes it for `iface`'s ingress policy
/// (see [`felix::policy_debug`]), whose deny rule has `MATCH_ID`.
fn policy_debug(dir: &Path, iface: &str) {
    felix::policy_debug(dir, iface, MATCH_ID).unwrap();
}

/// A bpffs of the test's own (`ip netns exec` mounts a fresh /sys, without
/// the host's /sys/fs/bpf) and a policy debug directory; unmounted and
/// removed on drop.
struct Dirs {
    root: PathBuf,
    maps: PathBuf,
    policy: PathBuf,
}

impl Dirs {
    fn new(name: &str) -> Dirs {
        let root =
            std::env::temp_dir().join(format!("calitrace-test-{}-{name}", std::process::id()));
        let bpffs = root.join("bpffs");
        std::fs::create_dir_all(&bpffs).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a bpffs at {}", bpffs.display());
        Dirs {
            maps: bpffs.join("tc/globals"),
            policy: root.join("policy"),
            root,
        }
    }
}

impl Dirs {
    /// calitrace's options that point it at these directories.
    fn args(&self) -> [&str; 4] {
        [
            "--calico-bpf-maps",
            self.maps.to_str().unwrap(),
            "--calico-bpf-policy",
            self.policy.to_str().unwrap(),
        ]
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.root.join("bpffs"))
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn ebpf_drops<'a>(f: &'a calitrace::Finished, reason: &str) -> Vec<&'a Value> {
    f.drops()
        .into_iter()
        .filter(|d| d["calico_ebpf"]["reason"] == reason)
        .collect()
}

/// Traces node B, recording to `file`, while Felix's stand-in on pod b0's
/// cali drops pings from pod a0 by policy (`MATCH_ID`), then as from an
/// unknown source; returns the stand-in, still attached, and the live run.
fn trace_felixs_drops(lab: &Lab, dirs: &Dirs, file: &Path) -> (FelixStandin, calitrace::Finished) {
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let (maps, policy) = (&dirs.maps, &dirs.policy);
    policy_debug(policy, &b.cali);
    let mut felix = FelixStandin::attach(
        &lab.node(1).netns,
        &b.cali,
        Hook::Egress,
        maps,
        StandinCfg {
            reason: 4,
            match_id: MATCH_ID,
            hook: 1,
            proto: 1,
            ..Default::default()
        },
    )
    .expect("the stand-in for Felix's programs loads");
    let mut t = Trace::start(
        &lab.node(1).netns,
        &[&dirs.args()[..], &["-w", file.to_str().unwrap()]].concat(),
    )
    .unwrap();
    let line = t
        .wait_for_stderr("Calico eBPF counters", Duration::from_secs(5))
        .unwrap();
    assert!(
        line.contains("cali_counters6 (27 counters: Calico 3.32.1 or later)"),
        "{line}"
    );
    assert!(!lab.ping(&a, &b.ip, 2), "Felix's stand-in drops the ping");
    felix
        .set(StandinCfg {
            reason: 11,
            match_id: 0,
            hook: 1,
            proto: 1,
            ..Default::default()
        })
        .unwrap();
    assert!(!lab.ping(&a, &b.ip, 1));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    (felix, f)
}

/// The policy drops on `cali` are named (rule, policy, tier, direction) and
/// diagnosed as Calico's, and the one unknown-source drop is said; returns
/// the number of policy drops.
fn assert_the_drops_named(f: &calitrace::Finished, cali: &str) -> usize {
    let policy_drops = ebpf_drops(f, "DROPPED_BY_POLICY");
    assert!(policy_drops.len() >= 2, "{}", f.dump());
    let d = policy_drops[0];
    assert_eq!(d["ifname"], cali);
    assert_eq!(d["stage"], "tc");
    assert_eq!(d["calico_ebpf"]["rule_id"], MATCH_ID.to_string());
    assert_eq!(d["calico_ebpf"]["policy"]["name"], "deny-icmp");
    let diag = f.diagnosis("POLICY_DROP");
    assert_eq!(diag["policy"]["namespace"], "demo");
    assert_eq!(diag["policy"]["tier"], "default");
    assert_eq!(diag["policy"]["direction"], "ingress");
    assert_eq!(diag["owner"], "calico");
    assert!(
        diag["rule"]
            .as_str()
            .unwrap_or("")
            .contains(r#"action:"deny""#),
        "{diag}"
    );
    assert_eq!(
        ebpf_drops(f, "UNAUTH_SOURCE").len(),
        1,
        "one unknown-source drop\n{}",
        f.dump()
    );
    let other = f.diagnosis("CALICO_EBPF_DROP");
    assert!(
        other["summary"]
            .as_str()
            .unwrap_or("")
            .contains("UNAUTH_SOURCE"),
        "{other}"
    );
    policy_drops.len()
}

/// The replay of `file` names the same `policy_drops` policy drops.
fn assert_the_replay_names_them(file: &Path, policy_drops: usize) {
    let r = calitrace::run(
        None,
        &[],
        &["replay", "-o", "json", file.to_str().unwrap()],
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(r.status.success(), "{}", r.dump());
    assert_eq!(
        ebpf_drops(&r, "DROPPED_BY_POLICY").len(),
        policy_drops,
        "{}",
        r.dump()
    );
    assert_eq!(r.diagnosis("POLICY_DROP")["policy"]["name"], "deny-icmp");
}

#[test]
fn calicos_ebpf_drops_are_named_by_felixs_counters_and_replay_the_same() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let dirs = Dirs::new("policy");
    let file = std::env::temp_dir().join(format!("calitrace-ebpf-{}.rec", std::process::id()));
    let (felix, f) = trace_felixs_drops(&lab, &dirs, &file);
    let policy_drops = assert_the_drops_named(&f, &lab.pod(1, 0).cali);

    // The recording explains the same drops without Felix's maps.
    drop(felix);
    assert!(!dirs.maps.exists(), "the stand-in removed its pins");
    assert_the_replay_names_them(&file, policy_drops);
    let _ = std::fs::remove_file(&file);
}

/// Felix rewrites a policy debug file when the policy changes: calitrace
/// names drops from the rules it parsed, and reads the file again when none
/// of them moved, so a drop by the new rule gets the new rule's name.
#[test]
fn a_rewritten_policy_debug_file_names_the_new_rule() {
    const NEW_ID: u64 = 5_550_001;
    let lab = Lab::new(Mode::Direct).unwrap();
    let dirs = Dirs::new("rewritten");
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    policy_debug(&dirs.policy, &b.cali);
    let cfg = |match_id| StandinCfg {
        reason: 4,
        match_id,
        hook: 1,
        proto: 1,
        ..Default::default()
    };
    let mut felix = FelixStandin::attach(
        &lab.node(1).netns,
        &b.cali,
        Hook::Egress,
        &dirs.maps,
        cfg(MATCH_ID),
    )
    .unwrap();
    let mut t = Trace::start(&lab.node(1).netns, &dirs.args()).unwrap();
    t.wait_for_stderr("Calico eBPF counters", Duration::from_secs(5))
        .unwrap();
    assert!(!lab.ping(&a, &b.ip, 2), "Felix's stand-in drops the ping");
    felix::policy_debug(&dirs.policy, &b.cali, NEW_ID).unwrap();
    felix.set(cfg(NEW_ID)).unwrap();
    assert!(!lab.ping(&a, &b.ip, 2));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let ids: Vec<String> = ebpf_drops(&f, "DROPPED_BY_POLICY")
        .iter()
        .map(|d| {
            d["calico_ebpf"]["rule_id"]
                .as_str()
                .unwrap_or("none")
                .to_string()
        })
        .collect();
    assert_eq!(
        ids,
        [MATCH_ID, MATCH_ID, NEW_ID, NEW_ID].map(|id| id.to_string()),
        "{}",
        f.dump()
    );
}

#[test]
fn no_felix_maps_and_unreadable_ones_are_said_and_tracing_goes_on() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let dirs = Dirs::new("bad");
    let (maps, policy) = (&dirs.maps, &dirs.policy);
    // A counters map calitrace does not know: a plain file of that name.
    std::fs::create_dir_all(policy).unwrap();
    std::fs::write(policy.join("cali_counters6"), b"not a map").unwrap();
    let t = Trace::start(
        &lab.node(1).netns,
        &[
            "--calico-bpf-maps",
            policy.to_str().unwrap(),
            "--calico-bpf-policy",
            policy.to_str().unwrap(),
        ],
    )
    .unwrap();
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let start = &f.of_type("start")[0];
    let unavailable = start["probes_unavailable"].to_string();
    assert!(
        unavailable.contains("Calico eBPF counters")
            && unavailable.contains("cannot read Felix's counters map"),
        "{unavailable}"
    );
    // No Felix at all: nothing said about it.
    let t = Trace::start(
        &lab.node(1).netns,
        &["--calico-bpf-maps", maps.to_str().unwrap()],
    )
    .unwrap();
    let f = t.stop().unwrap();
    assert!(!f.stderr.contains("Calico eBPF"), "{}", f.stderr);
}

#[test]
fn in_the_cluster_view_an_ebpf_drop_on_the_receiving_node_is_that_nodes_policy_drop() {
    let lab = Lab::new(Mode::Vxlan).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let dirs = Dirs::new("cluster");
    policy_debug(&dirs.policy, &b.cali);
    let _felix = FelixStandin::attach(
        &lab.node(1).netns,
        &b.cali,
        Hook::Egress,
        &dirs.maps,
        StandinCfg {
            reason: 4,
            match_id: MATCH_ID,
            hook: 1,
            proto: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let t = Trace::start_cluster(
        &[
            ("node-a", lab.node(0).netns.as_str()),
            ("node-b", lab.node(1).netns.as_str()),
        ],
        &dirs.args(),
    )
    .unwrap();
    assert!(!lab.ping(&a, &b.ip, 3));
    // The underlay window (1 s) passes on the receiving node.
    std::thread::sleep(Duration::from_millis(2500));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let policy = f
        .diagnoses()
        .into_iter()
        .find(|d| d["code"] == "POLICY_DROP")
        .cloned()
        .unwrap_or_else(|| panic!("no POLICY_DROP\n{}", f.dump()));
    assert_eq!(policy["node"], "node-b", "{policy}");
    assert_eq!(policy["policy"]["name"], "deny-icmp", "{policy}");
    assert!(
        f.diagnoses()
            .iter()
            .all(|d| !d["code"].as_str().unwrap_or("").starts_with("UNDERLAY")),
        "the packets reached node B: no underlay verdict\n{}",
        f.dump()
    );
    let drop = ebpf_drops(&f, "DROPPED_BY_POLICY")
        .into_iter()
        .find(|d| d["node"] == "node-b")
        .unwrap_or_else(|| panic!("node B's drop\n{}", f.dump()));
    let nodes: Vec<&str> = drop["journey"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["node"].as_str())
        .collect();
    assert_eq!(nodes.first(), Some(&"node-a"), "{}", f.dump());
}

/// A policy debug file in Felix 3.29's wording (`Start of policy <name>`,
/// rules without the policy's name), for `iface`'s ingress policy.
fn policy_debug_3_29(dir: &Path, iface: &str) {
    let json = format!(
        r#"{{"ifacename":"{iface}","hook":"tc egress","policyInfo":[
 {{"inst":[0,0,0,0,0,0,0,0],"comments":["Start of tier default"]}},
 {{"inst":[0,0,0,0,0,0,0,0],"comments":["Start of policy default.deny-icmp","Start of rule action:\"deny\" protocol:{{name:\"icmp\"}}","IPSets ","Rule MatchID: {MATCH_ID}"]}},
 {{"inst":[0,0,0,0,0,0,0,0],"comments":["End of rule","End of policy default.deny-icmp","End of tier default"]}}],"error":""}}
"#
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{iface}_ingress_v4.json")), json).unwrap();
}

#[test]
fn calico_3_29s_counters_layout_and_debug_wording_are_read_too() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let dirs = Dirs::new("v329");
    policy_debug_3_29(&dirs.policy, &b.cali);
    let policy_drop = StandinCfg {
        reason: 4,
        match_id: MATCH_ID,
        hook: 1,
        proto: 1,
        layout: Layout::V3_29,
    };
    let mut felix = FelixStandin::attach(
        &lab.node(1).netns,
        &b.cali,
        Hook::Egress,
        &dirs.maps,
        policy_drop,
    )
    .unwrap();
    let t = Trace::start(&lab.node(1).netns, &dirs.args()).unwrap();
    assert!(!lab.ping(&a, &b.ip, 2));
    // RT_UNKNOWN (12): a route Calico's eBPF route map lacks.
    felix
        .set(StandinCfg {
            reason: 12,
            ..policy_drop
        })
        .unwrap();
    assert!(!lab.ping(&a, &b.ip, 1));
    let f = t.stop().unwrap();
    assert!(f.status.success(), "{}", f.dump());
    let d = ebpf_drops(&f, "DROPPED_BY_POLICY");
    let d = d.first().unwrap_or_else(|| panic!("{}", f.dump()));
    assert_eq!(d["calico_ebpf"]["map"], "cali_counters2", "{d}");
    assert_eq!(d["calico_ebpf"]["layout"], "Calico 3.26-3.29", "{d}");
    let diag = f.diagnosis("POLICY_DROP");
    assert_eq!(diag["policy"]["name"], "default.deny-icmp", "{diag}");
    assert_eq!(diag["policy"]["tier"], "default", "{diag}");
    assert_eq!(ebpf_drops(&f, "RT_UNKNOWN").len(), 1, "{}", f.dump());
    assert!(
        f.diagnosis("CALICO_EBPF_DROP")["hint"]
            .as_str()
            .unwrap_or("")
            .contains("route"),
        "{}",
        f.dump()
    );
}
