//! Fake host roots and readings for the checks' tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{HostRoot, Iface, Inputs};
use crate::facts::topology::RouteEntry;
use crate::netfilter::{Backend, Chain, Family, Inventory, Table};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A temporary directory standing for the host's root; removed on drop.
pub struct FakeRoot(PathBuf);

impl FakeRoot {
    pub fn new() -> FakeRoot {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("calitrace-doctor-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        FakeRoot(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    pub fn root(&self) -> HostRoot {
        HostRoot::new(&self.0)
    }

    fn at(&self, host_path: &str) -> PathBuf {
        let p = self.0.join(host_path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    }

    pub fn file(&self, host_path: &str, content: &str) {
        std::fs::write(self.at(host_path), content).unwrap();
    }

    pub fn mkdir(&self, host_path: &str) {
        std::fs::create_dir_all(self.at(host_path)).unwrap();
    }

    pub fn link(&self, host_path: &str, target: &str) {
        std::os::unix::fs::symlink(target, self.at(host_path)).unwrap();
    }

    /// `/proc/sys/...` of `key` (`net.ipv4.ip_forward`; no dotted interface names).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.file(&format!("/proc/sys/{}", key.replace('.', "/")), value);
    }

    /// A process with its `comm` and environment.
    pub fn process(&self, pid: u32, comm: &str, env: &[&str]) {
        self.file(&format!("/proc/{pid}/comm"), &format!("{comm}\n"));
        let mut environ = env.join("\0");
        environ.push('\0');
        self.file(&format!("/proc/{pid}/environ"), &environ);
    }

    /// Inputs with this root and no readings: no links, routes or rules.
    pub fn inputs(&self) -> Inputs {
        Inputs {
            root: self.root(),
            links: Ok(Vec::new()),
            routes: Ok(Vec::new()),
            netfilter: Ok(Inventory::default()),
            iptables_command: None,
            privileged: true,
            sysctls: BTreeMap::new(),
            ebpf: Default::default(),
            wireguard: Default::default(),
        }
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn iface(name: &str, kind: &str, mtu: u32) -> Iface {
    Iface {
        name: name.into(),
        kind: kind.into(),
        up: true,
        mtu: Some(mtu),
    }
}

pub fn route(dst: &str, dev: &str, via: Option<&str>) -> RouteEntry {
    RouteEntry {
        dst: dst.into(),
        dev: dev.into(),
        via: via.map(|v| v.parse().unwrap()),
    }
}

/// A filter table of `backend` with empty chains of these names.
pub fn table(backend: Backend, name: &str, chains: &[&str]) -> Table {
    Table {
        backend,
        family: Family::Ipv4,
        name: name.into(),
        chains: chains
            .iter()
            .map(|c| Chain {
                name: c.to_string(),
                ..Default::default()
            })
            .collect(),
    }
}
