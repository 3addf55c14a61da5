//! What a SIGKILLed calitrace leaves in the kernel, found and removed by
//! `calitrace cleanup`: the tc filters of its programs (netlink attach; TCX
//! links, netfilter links and fexit/kprobe links end with the process that
//! holds them) and its nftables trace table (before 5.12, when tables were
//! not yet owned by their socket).
//!
//! A filter is calitrace's when its program has the name of one of
//! calitrace's tc programs and uses one of calitrace's maps (another tool's
//! `tc_ingress` does not), and it was left behind when no process holds that
//! program: a running calitrace keeps a descriptor of every program it
//! loaded, so its filters stay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::kernel::netlink;
use crate::kernel::tc_filters::{self, TcFilter};

/// calitrace's tc programs (`tracer-ebpf/src/tc.rs`).
const TC_PROGRAMS: [&str; 4] = ["tc_ingress", "tc_egress", "tc_ingress_l3", "tc_egress_l3"];
/// Maps of calitrace's tc programs that no other tool names so.
const TC_MAPS: [&str; 3] = ["ENCAP_SCRATCH", "TC_NETNS", "VXLAN_PORT"];

/// One filter removed, or that could not be.
#[derive(Debug)]
pub struct Removed {
    pub iface: String,
    pub ingress: bool,
    pub program: String,
    pub error: Option<String>,
}

/// Whether a filter is one a calitrace left: its program is calitrace's
/// (`maps`: the names of the maps it uses) and nobody holds it.
fn left_behind(f: &TcFilter, maps: &[String], held: &BTreeSet<u32>) -> bool {
    let ours = TC_PROGRAMS.contains(&f.name.as_str())
        && maps.iter().any(|m| TC_MAPS.contains(&m.as_str()));
    ours && f.prog_id.is_some_and(|id| !held.contains(&id))
}

/// The names of the maps each of the loaded programs `ids` uses, read in
/// one walk over the loaded programs.
fn map_names(ids: &BTreeSet<u32>) -> BTreeMap<u32, Vec<String>> {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|p| ids.contains(&p.id()))
        .map(|p| {
            let names = p
                .map_ids()
                .ok()
                .flatten()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|id| aya::maps::MapInfo::from_id(id).ok())
                .filter_map(|m| m.name_as_str().map(str::to_string))
                .collect();
            (p.id(), names)
        })
        .collect()
}

/// The ids of the BPF programs that processes hold descriptors of, from
/// `PROC/PID/fdinfo` (`prog_id:`).
pub fn held_programs(proc: &Path) -> BTreeSet<u32> {
    let mut held = BTreeSet::new();
    let Ok(pids) = std::fs::read_dir(proc) else {
        return held;
    };
    for pid in pids.flatten() {
        if !pid
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(pid.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(text) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            held.extend(prog_id_of(&text));
        }
    }
    held
}

fn prog_id_of(fdinfo: &str) -> Option<u32> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Removes the tc filters calitraces left on this namespace's interfaces.
/// The programs' maps and their holders are read only when a filter has
/// the name of one of calitrace's programs.
pub fn remove_tc_filters(proc: &Path) -> std::io::Result<Vec<Removed>> {
    let mut named = Vec::new();
    for link in netlink::links()? {
        for ingress in [true, false] {
            for f in tc_filters::list(link.index, ingress)? {
                if TC_PROGRAMS.contains(&f.name.as_str()) {
                    named.push((link.name.clone(), f));
                }
            }
        }
    }
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let held = held_programs(proc);
    let maps = map_names(&named.iter().filter_map(|(_, f)| f.prog_id).collect());
    let none = Vec::new();
    Ok(named
        .into_iter()
        .filter(|(_, f)| {
            let uses = f.prog_id.and_then(|id| maps.get(&id)).unwrap_or(&none);
            left_behind(f, uses, &held)
        })
        .map(|(iface, f)| Removed {
            iface,
            ingress: f.ingress,
            program: f.name.clone(),
            error: tc_filters::delete(&f).err().map(|e| e.to_string()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(name: &str, id: u32) -> TcFilter {
        TcFilter {
            ifindex: 2,
            ingress: true,
            handle: 1,
            info: 0,
            name: name.into(),
            prog_id: Some(id),
        }
    }

    #[test]
    fn only_calitraces_programs_that_nobody_holds_are_left_behind() {
        let ours = vec!["EVENTS".to_string(), "ENCAP_SCRATCH".to_string()];
        let held = BTreeSet::from([7]);
        assert!(left_behind(&filter("tc_ingress", 9), &ours, &held));
        assert!(left_behind(&filter("tc_egress_l3", 9), &ours, &held));
        // A running calitrace holds it.
        assert!(!left_behind(&filter("tc_ingress", 7), &ours, &held));
        // Another tool's program of the same name, or another name.
        let theirs = vec!["cali_counters6".to_string()];
        assert!(!left_behind(&filter("tc_ingress", 9), &theirs, &held));
        assert!(!left_behind(
            &filter("cali_tc_preambl:[9]", 9),
            &ours,
            &held
        ));
    }

    #[test]
    fn fdinfo_of_a_program_names_its_id() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t3\nprog_jited:\t1\nprog_tag:\tf1b9d4a4d5e5c4d4\nmemlock:\t4096\nprog_id:\t812\nrun_time_ns:\t0\n";
        assert_eq!(prog_id_of(prog), Some(812));
        assert_eq!(prog_id_of("pos:\t0\nflags:\t02\nmap_id:\t4\n"), None);
    }
}
