//! Finding the network namespaces of the pods behind this node's veths.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::netlink::{self, Link};
use super::syscall;

/// A namespace at the other end of one of our veths.
#[derive(Debug, Clone)]
pub struct PeerNetns {
    pub inode: u32,
    /// `/run/netns` name, or `pid N (comm)` for a namespace only a process holds.
    pub name: String,
    /// Our side of the veth, e.g. `cali1234abcd`, and its index.
    pub host_iface: String,
    pub host_index: u32,
    /// Interfaces of that namespace (ifindex, name).
    pub links: Vec<(u32, String)>,
}

/// Candidate namespaces: named ones, then those held by processes.
fn candidates(own: u32) -> Vec<(u32, PathBuf, String)> {
    let mut seen: HashMap<u32, ()> = HashMap::from([(own, ())]);
    let mut out = Vec::new();
    for dir in ["/run/netns", "/var/run/netns"] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = std::fs::metadata(e.path()) else {
                continue;
            };
            let ino = md.ino() as u32;
            if seen.insert(ino, ()).is_none() {
                out.push((ino, e.path(), e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = e.path().join("ns/net");
            let Ok(md) = std::fs::metadata(&path) else {
                continue;
            };
            let ino = md.ino() as u32;
            if seen.insert(ino, ()).is_none() {
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                out.push((ino, path, format!("pid {name} ({})", comm.trim())));
            }
        }
    }
    out
}

/// Lists the links of the namespace at `path` from a short-lived thread that
/// enters it, so that this process never changes namespace.
pub fn links_in(path: &std::path::Path) -> std::io::Result<Vec<Link>> {
    let file = std::fs::File::open(path)?;
    std::thread::spawn(move || {
        syscall::enter_netns(file.as_fd())?;
        netlink::links()
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
}

/// Namespaces at the other end of one of `host_veths`: the veth's link-netnsid
/// must be the id our namespace gives that namespace, and both ends must point
/// at each other by ifindex.
pub fn discover(own: u32, host_veths: &[Link]) -> Vec<PeerNetns> {
    if host_veths.is_empty() {
        return Vec::new();
    }
    let peer_nsids: Vec<i32> = host_veths.iter().filter_map(|h| h.link_netnsid).collect();
    let mut out = Vec::new();
    for (inode, path, name) in candidates(own) {
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let Ok(Some(nsid)) = netlink::nsid_of(file.as_fd()) else {
            continue;
        };
        // Only a namespace at the other end of one of the veths is entered.
        if !peer_nsids.contains(&nsid) {
            continue;
        }
        let Ok(links) = links_in(&path) else { continue };
        let peer = links.iter().find_map(|l| {
            host_veths.iter().find(|h| {
                h.link_netnsid == Some(nsid)
                    && l.peer_index == Some(h.index)
                    && h.peer_index == Some(l.index)
            })
        });
        if let Some(host) = peer {
            out.push(PeerNetns {
                inode,
                name,
                host_iface: host.name.clone(),
                host_index: host.index,
                links: links.iter().map(|l| (l.index, l.name.clone())).collect(),
            });
        }
    }
    out
}
