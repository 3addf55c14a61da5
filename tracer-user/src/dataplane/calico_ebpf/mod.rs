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
    /// The layout's drop counters (indexes).
    drops: Vec<usize>,
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
            drops: layout.drops().map(|r| r.index).collect(),
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
            if let (Some(k), Some(r)) = (counter_key(&key), read(&self.counters, &key)) {
                self.moved.baseline(k, r);
            }
        }
        if let Some(rules) = &self.rules {
            for key in rules.keys().unwrap_or_default() {
                if let (Ok(id), Some(r)) = (<[u8; 8]>::try_from(key.as_slice()), read(rules, &key))
                {
                    self.rules_moved.baseline(u64::from_le_bytes(id), r);
                }
            }
        }
    }

    /// Why Calico's program at tc `hook` (0 ingress, 1 egress; `None`: either)
    /// of `ifindex` dropped a packet on `cpu`: the drop counter that moved.
    /// `None` where none did (not Calico's drop). What an earlier reading
    /// left unclaimed serves first: a burst of drops costs one reading.
    pub fn explain(
        &mut self,
        ifindex: u32,
        hook: Option<u32>,
        cpu: u16,
        iface: Option<&str>,
        ipv6: bool,
    ) -> Option<CalicoEbpfDrop> {
        let hooks = hook.map_or([Some(0), Some(1)], |h| [Some(h), None]);
        let (h, i) = self.claim(ifindex, &hooks, cpu).or_else(|| {
            for h in hooks.iter().flatten() {
                let key = [ifindex.to_le_bytes(), h.to_le_bytes()].concat();
                if let Some(r) = read(&self.counters, &key) {
                    self.moved.observe((ifindex, *h), r);
                }
            }
            self.claim(ifindex, &hooks, cpu)
        })?;
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
        Some(drop)
    }

    /// The first of `hooks` with an unclaimed drop on `cpu` (or another
    /// CPU), and that drop's counter.
    fn claim(&mut self, ifindex: u32, hooks: &[Option<u32>], cpu: u16) -> Option<(u32, usize)> {
        hooks.iter().flatten().find_map(|&h| {
            self.moved
                .claim(&(ifindex, h), cpu as usize, &self.drops)
                .map(|i| (h, i))
        })
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
        match self.claim_rule(&path, cpu) {
            Ok(Some(r)) => {
                drop.policy = Some(r.policy.clone());
                drop.rule = Some(r.rule.clone());
                drop.rule_id = Some(r.match_id.to_string());
            }
            Ok(None) => {
                drop.note = Some(format!(
                    "no rule counter of {} moved: the packet met the end of a tier (its default deny) or no profile, which Felix does not count per rule",
                    path.display()
                ))
            }
            Err(e) => drop.note = Some(e),
        }
    }

    /// The rule of the policy debug file at `path` whose counter moved:
    /// among the rules as last parsed, and where none did, among those of
    /// the file again if Felix rewrote it since (no file system call per
    /// drop otherwise).
    fn claim_rule(&mut self, path: &Path, cpu: u16) -> Result<Option<&DebugRule>, String> {
        let fresh = !self.debug_files.contains_key(path) && self.load_debug_file(path)?;
        let mut found = self.claim_among(path, cpu);
        if found.is_none() && !fresh && self.load_debug_file(path)? {
            found = self.claim_among(path, cpu);
        }
        Ok(found.and_then(|i| self.debug_files.get(path)?.1.get(i)))
    }

    /// The index of the rule of `path`'s parsed file that claims a count on
    /// `cpu`: deny rules first (an allow rule's counter moves with new
    /// flows), from what earlier readings left unclaimed, then reading.
    fn claim_among(&mut self, path: &Path, cpu: u16) -> Option<usize> {
        let (_, list) = self.debug_files.get(path)?;
        let rules = self.rules.as_ref()?;
        let deny_first = || {
            let denies = list.iter().enumerate().filter(|(_, r)| r.is_deny());
            denies.chain(list.iter().enumerate().filter(|(_, r)| !r.is_deny()))
        };
        let moved = &mut self.rules_moved;
        if let Some((i, _)) =
            deny_first().find(|(_, r)| moved.claim(&r.match_id, cpu as usize, &[0]).is_some())
        {
            return Some(i);
        }
        deny_first()
            .find(|(_, r)| {
                if let Some(reading) = read(rules, &r.match_id.to_le_bytes()) {
                    moved.observe(r.match_id, reading);
                }
                moved.claim(&r.match_id, cpu as usize, &[0]).is_some()
            })
            .map(|(i, _)| i)
    }

    /// Parses `path` where it is new or changed since it was parsed; whether
    /// it was.
    fn load_debug_file(&mut self, path: &Path) -> Result<bool, String> {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| {
                format!(
                    "no policy debug file {}: {e} (BPFPolicyDebugEnabled off?)",
                    path.display()
                )
            })?;
        if self
            .debug_files
            .get(path)
            .is_some_and(|(at, _)| *at == modified)
        {
            return Ok(false);
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
            .insert(path.to_path_buf(), (modified, rules));
        Ok(true)
    }
}

/// A per-CPU reading of `key`: `[cpu][counter]`.
fn read(map: &PinnedMap, key: &[u8]) -> Option<Vec<Vec<u64>>> {
    map.lookup_u64s(key).ok()?
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
