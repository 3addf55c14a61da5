//! Facts about this machine: privileges, lockdown, kernel release, namespaces,
//! sysctls, addresses and routes of the current network namespace.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Capability bits (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from /proc/self/status.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// What is missing to load and attach the programs, or `None` when nothing is.
pub fn missing_privileges(caps: u64) -> Option<String> {
    let has = |c: u32| caps & (1 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        })
}

/// (major, minor) of a release string such as `6.18.44-fc`.
pub fn parse_release(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// Lockdown mode (`none`, `integrity`, `confidentiality`), when securityfs is
/// mounted; `None` when it cannot be read.
pub fn lockdown() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    let start = s.find('[')?;
    let end = s[start..].find(']')? + start;
    Some(s[start + 1..end].to_string())
}

/// Inode of the network namespace this process is in.
pub fn own_netns() -> std::io::Result<u32> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino() as u32)
}

pub fn sysctl(key: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The sysctl key of an interface setting; interface names may contain dots.
pub fn iface_sysctl_key(family: &str, section: &str, ifname: &str, setting: &str) -> String {
    format!(
        "net.{family}.{section}.{}.{setting}",
        ifname.replace('.', "/")
    )
}

pub fn read_iface_sysctl(
    family: &str,
    section: &str,
    ifname: &str,
    setting: &str,
) -> Option<String> {
    let path = format!("/proc/sys/net/{family}/{section}/{ifname}/{setting}");
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Addresses configured on this namespace's interfaces.
/// `start` and every path its symlinks lead to, in order (at most 32
/// links), reading each link with `read_link` (which may look under
/// another root).
pub fn symlink_chain(
    start: &Path,
    read_link: impl Fn(&Path) -> std::io::Result<PathBuf>,
) -> Vec<PathBuf> {
    let mut chain = vec![start.to_path_buf()];
    let mut cur = start.to_path_buf();
    for _ in 0..32 {
        let Ok(target) = read_link(&cur) else {
            break;
        };
        cur = match cur.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
        chain.push(cur.clone());
    }
    chain
}

pub fn local_addresses() -> HashSet<IpAddr> {
    super::netlink::addresses()
        .map(|a| a.into_iter().collect())
        .unwrap_or_default()
}

/// Interfaces that carry a default route (IPv4 and IPv6).
pub fn default_route_ifaces() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(s) = std::fs::read_to_string("/proc/net/route") {
        out.extend(parse_default_v4(&s));
    }
    if let Ok(s) = std::fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_default_v6(&s));
    }
    out.sort();
    out.dedup();
    out
}

fn parse_default_v4(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
        })
        .collect()
}

fn parse_default_v6(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 10 && f[0] == "0".repeat(32) && f[1] == "00" && f[9] != "lo")
                .then(|| f[9].to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_check_names_what_is_missing() {
        assert_eq!(missing_privileges(u64::MAX), None);
        assert_eq!(
            missing_privileges(0).unwrap(),
            "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"
        );
        let sys_admin_and_net = (1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN);
        assert_eq!(missing_privileges(sys_admin_and_net), None);
        assert_eq!(
            missing_privileges(1 << CAP_BPF | 1 << CAP_PERFMON).unwrap(),
            "CAP_NET_ADMIN"
        );
    }

    #[test]
    fn release_parsing() {
        assert_eq!(parse_release("6.18.44-fc-v657"), (6, 18));
        assert_eq!(parse_release("5.10.0-30-cloud-amd64"), (5, 10));
        assert_eq!(parse_release("garbage"), (0, 0));
    }

    #[test]
    fn default_routes_from_proc_tables() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                  eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n\
                  eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(parse_default_v4(v4), vec!["eth0"]);
        let z = "0".repeat(32);
        let v6 = format!(
            "{z} 00 {z} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     ens3\n"
        );
        assert_eq!(parse_default_v6(&v6), vec!["ens3"]);
    }

    #[test]
    fn sysctl_keys_escape_dots_in_interface_names() {
        assert_eq!(
            iface_sysctl_key("ipv4", "conf", "vxlan.calico", "rp_filter"),
            "net.ipv4.conf.vxlan/calico.rp_filter"
        );
    }
}
