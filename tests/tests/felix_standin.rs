//! The stand-in for Felix's eBPF programs (`calitrace_tests::felix`) does to
//! Calico's maps what Calico's tc programs do when policy drops a packet:
//! counts it in `cali_counters6` under `{ifindex, hook}` (total and "dropped
//! by policy") and in `cali_rule_ctrs2` under the rule's MatchID, pinned
//! where the test asked; and it drops the packet.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use calitrace_tests::felix::{
    COUNTERS_MAP, FelixStandin, Hook, MAX_COUNTERS, RULE_CTRS_MAP, StandinCfg,
};
use calitrace_tests::{Lab, Mode};
use serde_json::Value;

/// Calico's `CALI_REASON_DROPPED_BY_POLICY`.
const DROPPED_BY_POLICY: usize = 4;
const MATCH_ID: u64 = 12817593485201384321;
const PINGS: u32 = 3;

/// A pin directory of this test alone: `/sys/fs/bpf/calitrace-test-<pid>-<n>`
/// (the root to check for removal) and its `tc/globals`, as Felix's.
fn pin_dirs() -> (PathBuf, PathBuf) {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let root = PathBuf::from(format!(
        "/sys/fs/bpf/calitrace-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let globals = root.join("tc/globals");
    (root, globals)
}

/// `bpftool -j map dump pinned PATH`.
fn dump(path: &Path) -> Vec<Value> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(path)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool map dump pinned {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("bpftool's JSON")
        .as_array()
        .cloned()
        .expect("an array of entries")
}

/// bpftool's raw bytes (`["0x05", "0x00", ...]`).
fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a byte array: {v}"))
        .iter()
        .map(|b| {
            let s = b.as_str().unwrap_or_else(|| panic!("not a byte: {b}"));
            u8::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex byte")
        })
        .collect()
}

fn u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A per-CPU entry's value summed over the CPUs, as u64s.
fn per_cpu_sum(entry: &Value) -> Vec<u64> {
    let values = entry["values"]
        .as_array()
        .unwrap_or_else(|| panic!("no per-CPU values in {entry}"));
    let mut sum: Vec<u64> = Vec::new();
    for v in values {
        let cpu = u64s(&bytes(&v["value"]));
        sum.resize(cpu.len().max(sum.len()), 0);
        for (s, c) in sum.iter_mut().zip(cpu) {
            *s += c;
        }
    }
    sum
}

/// The counters of `{ifindex, hook}`, summed over the CPUs.
fn counters(pinned: &Path, ifindex: u32, hook: u32) -> Vec<u64> {
    let mut key = ifindex.to_le_bytes().to_vec();
    key.extend_from_slice(&hook.to_le_bytes());
    let entries = dump(pinned);
    let entry = entries
        .iter()
        .find(|e| bytes(&e["key"]) == key)
        .unwrap_or_else(|| panic!("no counters for ifindex {ifindex} hook {hook}: {entries:?}"));
    let sum = per_cpu_sum(entry);
    assert_eq!(sum.len(), MAX_COUNTERS, "v3.32.1's 27 counters: {entry}");
    sum
}

/// The hits of rule `match_id`, summed over the CPUs.
fn rule_hits(pinned: &Path, match_id: u64) -> u64 {
    let entries = dump(pinned);
    let entry = entries
        .iter()
        .find(|e| bytes(&e["key"]) == match_id.to_le_bytes())
        .unwrap_or_else(|| panic!("no rule counter for {match_id}: {entries:?}"));
    per_cpu_sum(entry)[0]
}

#[test]
fn felix_standin_counts_and_drops_like_calicos_policy_programs() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let node_b = lab.node(1).netns.clone();
    let ifindex = lab.ifindex(&node_b, &b.cali).unwrap();
    let (root, globals) = pin_dirs();
    let drop_pings = StandinCfg {
        reason: DROPPED_BY_POLICY as u32,
        match_id: MATCH_ID,
        hook: 1,
        proto: 1,
        ..Default::default()
    };
    // Egress of pod B's cali interface: towards the pod.
    let mut standin = FelixStandin::attach(&node_b, &b.cali, Hook::Egress, &globals, drop_pings)
        .expect("the stand-in attaches");

    assert!(
        !lab.ping(&a, &b.ip, PINGS),
        "the stand-in drops the pings towards pod B"
    );
    let ctrs = counters(&globals.join(COUNTERS_MAP), ifindex, 1);
    let dropped = ctrs[DROPPED_BY_POLICY];
    assert!(
        dropped >= u64::from(PINGS),
        "dropped by policy {dropped} >= {PINGS} echo requests: {ctrs:?}"
    );
    assert!(ctrs[0] >= dropped, "total >= dropped: {ctrs:?}");
    assert!(
        ctrs.iter()
            .enumerate()
            .all(|(i, c)| i == 0 || i == DROPPED_BY_POLICY || *c == 0),
        "no other counter moved: {ctrs:?}"
    );
    assert_eq!(
        rule_hits(&globals.join(RULE_CTRS_MAP), MATCH_ID),
        dropped,
        "one rule hit per policy drop"
    );

    standin
        .set(StandinCfg {
            reason: 0,
            ..drop_pings
        })
        .unwrap();
    assert!(
        lab.ping(&a, &b.ip, PINGS),
        "with no drop reason the pings pass"
    );
    let after = counters(&globals.join(COUNTERS_MAP), ifindex, 1);
    assert!(after[0] > ctrs[0], "still counts packets: {after:?}");
    assert_eq!(
        after[DROPPED_BY_POLICY], dropped,
        "and drops none: {after:?}"
    );

    // Dropping again, then detached: the pings pass because it is gone.
    standin.set(drop_pings).unwrap();
    assert!(!lab.ping(&a, &b.ip, 1), "drops again after set");
    drop(standin);
    assert!(
        lab.ping(&a, &b.ip, PINGS),
        "the pings pass once the stand-in is gone"
    );
    assert!(
        !root.exists(),
        "{} removed with the stand-in",
        root.display()
    );
}
