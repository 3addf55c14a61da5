//! `ebpf`: Calico's eBPF dataplane as the kernel shows it: a BPF filesystem
//! at `/sys/fs/bpf` for Felix's maps, the layout of its counters map (which
//! Calico release), and Calico's program (`cali_tc_preamble`, shown as
//! `cali_tc_preambl`) at both tc hooks of every workload interface and of
//! the uplink.

use std::collections::BTreeMap;

use super::host::HostRoot;
use super::{Check, CheckId, Iface, Inputs, cali_ifaces, uplink};
use crate::dataplane::calico_ebpf::{MAPS_DIR, layout};
use crate::kernel::tc_programs::TcPrograms;

/// What the kernel shows of Calico's eBPF dataplane (read live; made up by
/// tests).
#[derive(Debug, Clone)]
pub struct EbpfReadings {
    /// The newest `cali_counters*` pinned and its value size; `None`: none
    /// pinned; `Err`: why it cannot be read.
    pub counters: Option<Result<(String, usize), String>>,
    /// The tc programs of each interface, or why they cannot be listed.
    pub programs: Result<BTreeMap<String, TcPrograms>, String>,
    /// Whether `/sys/fs/bpf` is a BPF filesystem, from the host's mounts.
    pub bpffs: Result<bool, String>,
}

impl Default for EbpfReadings {
    fn default() -> Self {
        EbpfReadings {
            counters: None,
            programs: Ok(BTreeMap::new()),
            bpffs: Ok(true),
        }
    }
}

impl EbpfReadings {
    pub fn live(root: &HostRoot, links: &Result<Vec<Iface>, String>) -> EbpfReadings {
        EbpfReadings {
            counters: live_counters(root),
            programs: live_programs(links),
            bpffs: bpffs_mounted(root),
        }
    }
}

fn live_counters(root: &HostRoot) -> Option<Result<(String, usize), String>> {
    let dir = root.path(MAPS_DIR);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let name = layout::newest_counters_map(names.iter().map(String::as_str))?;
    Some(
        crate::kernel::bpf_map::PinnedMap::open(&dir.join(name))
            .map(|m| (name.to_string(), m.value_size))
            .map_err(|e| format!("{}/{name}: {e}", dir.display())),
    )
}

fn live_programs(
    links: &Result<Vec<Iface>, String>,
) -> Result<BTreeMap<String, TcPrograms>, String> {
    let links = links.as_ref().map_err(Clone::clone)?;
    let ifindex: BTreeMap<String, u32> = crate::kernel::netlink::links()
        .map_err(|e| format!("netlink: {e}"))?
        .into_iter()
        .map(|l| (l.name, l.index))
        .collect();
    let mut out = BTreeMap::new();
    for l in links {
        let Some(i) = ifindex.get(&l.name) else {
            continue;
        };
        let p = crate::kernel::tc_programs::attached(&l.name, *i)
            .map_err(|e| format!("the tc programs of {}: {e}", l.name))?;
        out.insert(l.name.clone(), p);
    }
    Ok(out)
}

/// From the host's mount table (`/proc/1/mounts` under the root: init's, the
/// host's even from a container).
fn bpffs_mounted(root: &HostRoot) -> Result<bool, String> {
    let path = root.path("/proc/1/mounts");
    let mounts = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/sys/fs/bpf") && f.get(2) == Some(&"bpf")
    }))
}

/// Calico's program as the kernel names it (16 bytes with the NUL).
const PREAMBLE: &str = "cali_tc_preambl";

fn has_calico(names: &[String]) -> bool {
    names.iter().any(|n| n.starts_with(PREAMBLE))
}

/// Felix's `BPFEnabled`, from calico-node's environment where visible.
fn bpf_enabled(root: &HostRoot) -> bool {
    root.processes(&["calico-node"]).first().is_some_and(|p| {
        root.environ(p.pid).is_ok_and(|env| {
            env.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("FELIX_BPFENABLED") && v.eq_ignore_ascii_case("true")
            })
        })
    })
}

pub(super) fn ebpf(inputs: &Inputs) -> Check {
    let id = CheckId::Ebpf;
    let r = &inputs.ebpf;
    let enabled = bpf_enabled(&inputs.root);
    if r.counters.is_none() && !enabled {
        return Check::skip(
            id,
            format!(
                "Calico's eBPF dataplane is not in use: no cali_counters* in {MAPS_DIR}, FELIX_BPFENABLED not true"
            ),
        );
    }
    if r.bpffs == Ok(false) {
        return Check::fail(
            id,
            "/sys/fs/bpf is not a BPF filesystem: Felix's pinned maps (policy, conntrack, routes) do not outlive calico-node, and restarts drop connections",
        )
        .evidence("/sys/fs/bpf is not in the host's mount table as type bpf")
        .hint("mount it on the host (`mount -t bpf bpffs /sys/fs/bpf`, and in /etc/fstab or a systemd mount unit); Calico's manifests do it with calico-node's mount-bpffs init container");
    }
    let layout = match &r.counters {
        Some(Ok((name, size))) => match layout::Layout::new(name, *size) {
            Ok(l) => format!("{name}: {} counters ({})", l.counters, l.releases()),
            Err(e) => {
                return Check::warn(id, "Felix's counters map has a layout calitrace does not know")
                    .evidence(e)
                    .hint("calitrace names eBPF drops only in the layouts it knows: tell its developers the Calico version");
            }
        },
        Some(Err(e)) => {
            return Check::warn(id, "Felix's counters map cannot be read")
                .evidence(e.clone())
                .hint("run calitrace as root (CAP_BPF and CAP_SYS_ADMIN)");
        }
        None => {
            return Check::fail(
                id,
                format!("FELIX_BPFENABLED is true, but Felix pinned no counters map in {MAPS_DIR}: its eBPF dataplane is not running"),
            )
            .evidence(format!("no cali_counters* in {MAPS_DIR}"))
            .hint("check calico-node's logs for why the BPF dataplane did not start (kernel too old, /sys/fs/bpf not mounted, BPF not permitted)");
        }
    };
    programs_check(inputs, layout)
}

/// Calico's program at both hooks of every workload interface and the uplink.
fn programs_check(inputs: &Inputs, layout: String) -> Check {
    let id = CheckId::Ebpf;
    let (links, programs) = match (&inputs.links, &inputs.ebpf.programs) {
        (Ok(l), Ok(p)) => (l, p),
        (Err(e), _) | (_, Err(e)) => {
            return Check::warn(
                id,
                format!("Calico's eBPF dataplane; its programs cannot be listed: {e}"),
            )
            .evidence(layout)
            .hint("run calitrace as root");
        }
    };
    let mut expected: Vec<&str> = cali_ifaces(links)
        .filter(|l| l.up)
        .map(|l| l.name.as_str())
        .collect();
    let up = inputs.routes.as_deref().ok().and_then(uplink);
    expected.extend(up);
    let mut missing = Vec::new();
    for name in &expected {
        let p = programs.get(*name).cloned().unwrap_or_default();
        let hooks: Vec<&str> = [("ingress", &p.ingress), ("egress", &p.egress)]
            .into_iter()
            .filter(|(_, n)| !has_calico(n))
            .map(|(h, _)| h)
            .collect();
        if !hooks.is_empty() {
            missing.push(format!("{name} ({})", hooks.join(", ")));
        }
    }
    let evidence = format!(
        "{layout}; {PREAMBLE} looked for at tc ingress and egress of {}",
        expected.join(", ")
    );
    if !missing.is_empty() {
        return Check::fail(
            id,
            format!("Calico's eBPF programs are missing on {}: their traffic is not policed, NATed or routed by Calico", missing.join(", ")),
        )
        .evidence(evidence)
        .hint("check calico-node's logs for 'Failed to attach' on these interfaces, and Felix's BPFDataIfacePattern for the uplink");
    }
    Check::ok(
        id,
        format!(
            "Calico's eBPF dataplane: its programs are on {} interface(s); {layout}",
            expected.len()
        ),
    )
    .evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::super::fake::{FakeRoot, iface, route};
    use super::*;

    fn calico(names: &[&str]) -> TcPrograms {
        TcPrograms {
            ingress: names.iter().map(|n| n.to_string()).collect(),
            egress: vec!["cali_tc_preambl:[1234]".into()],
        }
    }

    /// A node in eBPF mode: two workloads and the uplink, Calico 3.32.1's
    /// counters map.
    fn node(f: &FakeRoot) -> Inputs {
        let mut i = f.inputs();
        i.links = Ok(vec![
            iface("cali1", "veth", 1500),
            iface("cali2", "veth", 1500),
            iface("eth0", "", 1500),
        ]);
        i.routes = Ok(vec![route("0.0.0.0/0", "eth0", Some("192.168.1.1"))]);
        i.ebpf.counters = Some(Ok(("cali_counters6".into(), 216)));
        i.ebpf.programs = Ok(["cali1", "cali2", "eth0"]
            .into_iter()
            .map(|n| (n.to_string(), calico(&["cali_tc_preambl"])))
            .collect());
        i
    }

    #[test]
    fn programs_everywhere_are_ok_and_name_the_release() {
        let f = FakeRoot::new();
        let c = ebpf(&node(&f));
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.summary.contains("on 3 interface(s)"), "{}", c.summary);
        assert!(
            c.summary
                .contains("cali_counters6: 27 counters (Calico 3.32.1 or later)"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn a_workload_or_uplink_without_calicos_program_fails() {
        let f = FakeRoot::new();
        let mut i = node(&f);
        if let Ok(p) = i.ebpf.programs.as_mut() {
            p.insert("cali2".into(), calico(&["some_other_prog"]));
            p.remove("eth0");
        }
        let c = ebpf(&i);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary
                .contains("missing on cali2 (ingress), eth0 (ingress, egress)"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn not_in_ebpf_mode_is_a_skip() {
        let f = FakeRoot::new();
        let c = ebpf(&f.inputs());
        assert_eq!(c.status, Status::Skip, "{c:?}");
    }

    #[test]
    fn bpf_enabled_without_maps_or_without_bpffs_fails() {
        let f = FakeRoot::new();
        f.process(400, "calico-node", &["FELIX_BPFENABLED=true"]);
        let c = ebpf(&f.inputs());
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.contains("pinned no counters map"),
            "{}",
            c.summary
        );
        let mut i = node(&f);
        i.ebpf.bpffs = Ok(false);
        let c = ebpf(&i);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.summary.starts_with("/sys/fs/bpf is not a BPF filesystem"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn an_unknown_layout_or_unreadable_map_warns() {
        let f = FakeRoot::new();
        let mut i = node(&f);
        i.ebpf.counters = Some(Ok(("cali_counters9".into(), 400)));
        assert_eq!(ebpf(&i).status, Status::Warn);
        i.ebpf.counters = Some(Err("Operation not permitted".into()));
        let c = ebpf(&i);
        assert_eq!(c.status, Status::Warn);
        assert!(c.evidence.contains("Operation not permitted"), "{c:?}");
    }

    #[test]
    fn the_host_mount_table_says_whether_bpffs_is_mounted() {
        let f = FakeRoot::new();
        f.file(
            "/proc/1/mounts",
            "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n",
        );
        assert_eq!(bpffs_mounted(&f.root()), Ok(true));
        f.file("/proc/1/mounts", "sysfs /sys sysfs rw 0 0\n");
        assert_eq!(bpffs_mounted(&f.root()), Ok(false));
    }
}
