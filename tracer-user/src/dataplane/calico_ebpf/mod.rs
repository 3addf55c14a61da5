//! Calico's eBPF dataplane (`BPFEnabled`), read from what Felix leaves on the
//! node: when its tc programs drop a packet, the kernel says only
//! `TC_INGRESS`/`TC_EGRESS`; the counter of Felix's that moved with the
//! drop, on the same interface, hook and CPU, says why, and for a policy
//! drop the rule counter that moved says which rule.
//!
//! Read from `/sys/fs/bpf/tc/globals` (`cali_counters<N>`,
//! `cali_rule_ctrs2`) and `/var/run/calico/bpf/policy` (policy debug files);
//! names and layouts from Felix's source, 3.26 to 3.32.

pub mod layout;
pub mod pending;
pub mod policy_debug;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use layout::{Layout, REASONS};
use pending::Pending;
use policy_debug::DebugRule;

use crate::kernel::bpf_map::PinnedMap;
use crate::model::CalicoEbpfDrop;

/// Where Felix pins its maps and writes its policy debug files.
pub const MAPS_DIR: &str = "/sys/fs/bpf/tc/globals";
pub const POLICY_DIR: &str = "/var/run/calico/bpf/policy";

const RULE_COUNTERS: &str = "cali_rule_ctrs2";

pub struct CalicoEbpf {
    counters: PinnedMap,
    layout: Layout,
    rules: Option<PinnedMap>,
    policy_dir: PathBuf,
    moved: Pending<(u32, u32)>,
    rules_moved: Pending<u64>,
    debug_files: HashMap<PathBuf, (SystemTime, Vec<DebugRule>)>,
}

impl CalicoEbpf {
    /// `Ok(None)`: Felix pinned no counters map in `maps_dir` (not the eBPF
    /// dataplane). An error says what was found and could not be read.
    pub fn open(maps_dir: &Path, policy_dir: &Path) -> Result<Option<CalicoEbpf>, String> {
        let Ok(entries) = std::fs::read_dir(maps_dir) else {
            return Ok(None);
        };
        let names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let Some(name) = layout::newest_counters_map(names.iter().map(String::as_str)) else {
            return Ok(None);
        };
        let path = maps_dir.join(name);
        let counters = PinnedMap::open(&path).map_err(|e| {
            format!("cannot read Felix's counters map {}: {e} (calitrace needs CAP_BPF and CAP_SYS_ADMIN)", path.display())
        })?;
        if counters.key_size != 8 || !counters.per_cpu {
            return Err(format!(
                "{} is not Felix's counters map as calitrace knows it (per-CPU hash, 8-byte key {{ifindex, hook}}; this one has {}-byte keys)",
                path.display(),
                counters.key_size
            ));
        }
        let layout = Layout::new(name, counters.value_size)?;
        let rules = names
            .iter()
            .any(|n| n == RULE_COUNTERS)
            .then(|| PinnedMap::open(&maps_dir.join(RULE_COUNTERS)).ok())
            .flatten();
        let mut reader = CalicoEbpf {
            counters,
            layout,
            rules,
            policy_dir: policy_dir.to_path_buf(),
            moved: Pending::default(),
            rules_moved: Pending::default(),
            debug_files: HashMap::new(),
        };
        reader.baseline();
        Ok(Some(reader))
    }

    /// What is read, for the start lines.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} counters: {}){}; policy debug files in {}",
            self.layout.map,
            self.layout.counters,
            self.layout.releases(),
            if self.rules.is_some() {
                format!(", {RULE_COUNTERS}")
            } else {
                format!(", no {RULE_COUNTERS} (policy drops named without their rule)")
            },
            self.policy_dir.display()
        )
    }

    /// What has been counted before the start is no drop of this session.
    fn baseline(&mut self) {
        for key in self.counters.keys().unwrap_or_default() {
            if let (Some(k), Some(r)) = (counter_key(&key), self.read(&self.counters, &key)) {
                self.moved.baseline(k, r);
            }
        }
        if let Some(rules) = &self.rules {
            for key in rules.keys().unwrap_or_default() {
                if let (Ok(id), Some(r)) =
                    (<[u8; 8]>::try_from(key.as_slice()), self.read(rules, &key))
                {
                    self.rules_moved.baseline(u64::from_le_bytes(id), r);
                }
            }
        }
    }

    fn read(&self, map: &PinnedMap, key: &[u8]) -> Option<Vec<Vec<u64>>> {
        let per_cpu = map.lookup(key).ok()??;
        Some(
            per_cpu
                .iter()
                .map(|v| {
                    v.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                        .collect()
                })
                .collect(),
        )
    }

    /// Why Calico's program at tc `hook` (0 ingress, 1 egress; `None`: either)
    /// of `ifindex` dropped a packet on `cpu`: the drop counter that moved.
    /// `None` where none did (not Calico's drop).
    pub fn explain(
        &mut self,
        ifindex: u32,
        hook: Option<u32>,
        cpu: u16,
        iface: Option<&str>,
        ipv6: bool,
    ) -> Option<CalicoEbpfDrop> {
        let drops: Vec<usize> = self.layout.drops().map(|r| r.index).collect();
        for h in hook.map_or(vec![0, 1], |h| vec![h]) {
            let key = [ifindex.to_le_bytes(), h.to_le_bytes()].concat();
            if let Some(r) = self.read(&self.counters, &key) {
                self.moved.observe((ifindex, h), r);
            }
            if let Some(i) = self.moved.claim(&(ifindex, h), cpu as usize, &drops) {
                let reason = REASONS[i];
                let mut drop = CalicoEbpfDrop {
                    reason: reason.name.into(),
                    description: reason.description.into(),
                    map: self.layout.map.clone(),
                    layout: self.layout.releases().into(),
                    policy: None,
                    rule: None,
                    rule_id: None,
                    note: None,
                };
                if i == layout::POLICY {
                    self.name_rule(&mut drop, iface, h, cpu, ipv6);
                }
                return Some(drop);
            }
        }
        None
    }

    /// The rule whose counter moved, among the rules of the interface's
    /// policy program in the direction the hook enforces.
    fn name_rule(
        &mut self,
        drop: &mut CalicoEbpfDrop,
        iface: Option<&str>,
        hook: u32,
        cpu: u16,
        ipv6: bool,
    ) {
        let Some(iface) = iface else {
            drop.note = Some("the interface's name is not known".into());
            return;
        };
        if self.rules.is_none() {
            drop.note = Some(format!(
                "{RULE_COUNTERS} is not pinned: Felix counts rules only with BPFPolicyDebugEnabled or flow logs"
            ));
            return;
        }
        let direction = policy_direction(iface, hook);
        let path = self
            .policy_dir
            .join(policy_debug::file_name(iface, direction, ipv6));
        let rules = match self.debug_rules(&path) {
            Ok(r) => r,
            Err(e) => {
                drop.note = Some(e);
                return;
            }
        };
        // Deny rules first: an allow rule's counter moves with new flows.
        let mut order: Vec<&DebugRule> = rules
            .iter()
            .filter(|r| r.action.as_deref() == Some("deny"))
            .collect();
        order.extend(rules.iter().filter(|r| r.action.as_deref() != Some("deny")));
        for r in order {
            let key = r.match_id.to_le_bytes();
            if let Some(reading) = self.rules.as_ref().and_then(|m| self.read(m, &key)) {
                self.rules_moved.observe(r.match_id, reading);
            }
            if self
                .rules_moved
                .claim(&r.match_id, cpu as usize, &[0])
                .is_some()
            {
                drop.policy = Some(r.policy.clone());
                drop.rule = Some(r.rule.clone());
                drop.rule_id = Some(r.match_id.to_string());
                return;
            }
        }
        drop.note = Some(format!(
            "no rule counter of {} moved: the packet met the end of a tier (its default deny) or no profile, which Felix does not count per rule",
            path.display()
        ));
    }

    fn debug_rules(&mut self, path: &Path) -> Result<Vec<DebugRule>, String> {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| {
                format!(
                    "no policy debug file {}: {e} (BPFPolicyDebugEnabled off?)",
                    path.display()
                )
            })?;
        if let Some((at, rules)) = self.debug_files.get(path)
            && *at == modified
        {
            return Ok(rules.clone());
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let direction = if path.to_string_lossy().contains("_egress_") {
            "egress"
        } else {
            "ingress"
        };
        let rules = policy_debug::parse(&text, direction)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.debug_files
            .insert(path.to_path_buf(), (modified, rules.clone()));
        Ok(rules)
    }
}

fn counter_key(key: &[u8]) -> Option<(u32, u32)> {
    let ifindex = u32::from_le_bytes(key.get(0..4)?.try_into().ok()?);
    let hook = u32::from_le_bytes(key.get(4..8)?.try_into().ok()?);
    Some((ifindex, hook))
}

/// The policy direction a tc hook enforces: on a workload's `cali*`
/// interface tc egress carries traffic towards the pod (its ingress
/// policy); on a host interface the two agree.
pub fn policy_direction(iface: &str, hook: u32) -> &'static str {
    let workload = iface.starts_with("cali");
    match (workload, hook) {
        (true, 1) | (false, 0) => "ingress",
        _ => "egress",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workloads_tc_egress_is_its_ingress_policy() {
        assert_eq!(policy_direction("cali1a2b3c4d5e6", 1), "ingress");
        assert_eq!(policy_direction("cali1a2b3c4d5e6", 0), "egress");
        assert_eq!(policy_direction("eth0", 0), "ingress");
        assert_eq!(policy_direction("vxlan.calico", 1), "egress");
    }

    #[test]
    fn no_felix_maps_is_not_the_ebpf_dataplane() {
        let dir = std::env::temp_dir().join(format!("calitrace-no-felix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(CalicoEbpf::open(&dir, &dir).unwrap().is_none());
        assert!(
            CalicoEbpf::open(&dir.join("absent"), &dir)
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
