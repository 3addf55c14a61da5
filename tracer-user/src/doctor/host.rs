//! The host's files as doctor reads them: under a root (`/`, or `/host` when
//! calitrace runs in a container with the host's root mounted there), and
//! the processes in that root's `/proc`.

use std::path::{Path, PathBuf};

/// Where the host's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> HostRoot {
        HostRoot(root.into())
    }

    /// The host's own root: files are read where they are.
    pub fn is_slash(&self) -> bool {
        self.0 == Path::new("/")
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// The path of the host's absolute path `p` under this root.
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        self.0.join(p.strip_prefix("/").unwrap_or(p))
    }

    pub fn read(&self, p: impl AsRef<Path>) -> std::io::Result<String> {
        std::fs::read_to_string(self.path(p))
    }

    pub fn exists(&self, p: impl AsRef<Path>) -> bool {
        self.path(p).exists()
    }

    /// An executable file (or a link to one) at the host's path `p`.
    pub fn is_file(&self, p: impl AsRef<Path>) -> bool {
        self.resolve(p).is_some_and(|r| r.is_file())
    }

    /// The host's path `p` with its symlinks followed inside this root (an
    /// absolute link target is the host's path, not this machine's).
    pub fn resolve(&self, p: impl AsRef<Path>) -> Option<PathBuf> {
        self.link_chain(p).last().map(|h| self.path(h))
    }

    /// The host's path `p` and every host path its symlinks lead to, in order
    /// (at most 32 links); empty when `p` does not exist.
    pub fn link_chain(&self, p: impl AsRef<Path>) -> Vec<PathBuf> {
        let cur = p.as_ref().to_path_buf();
        if self.path(&cur).symlink_metadata().is_err() {
            return Vec::new();
        }
        crate::kernel::system::symlink_chain(&cur, |c| std::fs::read_link(self.path(c)))
    }

    /// The processes in this root's `/proc` whose name (`comm`) is one of
    /// `names`, by pid; empty when `/proc` cannot be read.
    pub fn processes(&self, names: &[&str]) -> Vec<Process> {
        let Ok(entries) = std::fs::read_dir(self.path("/proc")) else {
            return Vec::new();
        };
        let mut found: Vec<Process> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let comm = self.read(format!("/proc/{pid}/comm")).ok()?;
                let comm = comm.trim_end().to_string();
                names
                    .contains(&comm.as_str())
                    .then_some(Process { pid, comm })
            })
            .collect();
        found.sort_by_key(|p| p.pid);
        found
    }

    /// A process's environment; `Err` with why it cannot be read.
    pub fn environ(&self, pid: u32) -> Result<Vec<(String, String)>, String> {
        let path = self.path(format!("/proc/{pid}/environ"));
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(bytes
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect())
    }
}

/// A process of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeRoot;
    use super::*;

    #[test]
    fn paths_and_links_stay_inside_the_root() {
        let f = FakeRoot::new();
        f.file("/usr/sbin/xtables-nft-multi", "");
        f.link("/etc/alternatives/iptables", "/usr/sbin/iptables-nft");
        f.link("/usr/sbin/iptables-nft", "xtables-nft-multi");
        f.link("/usr/sbin/iptables", "/etc/alternatives/iptables");
        let root = f.root();
        assert_eq!(root.path("/etc/x"), f.dir().join("etc/x"));
        let chain = root.link_chain("/usr/sbin/iptables");
        assert_eq!(
            chain.last().unwrap(),
            Path::new("/usr/sbin/xtables-nft-multi")
        );
        assert_eq!(chain.len(), 4);
        assert!(root.is_file("/usr/sbin/iptables"));
        assert!(root.link_chain("/usr/sbin/ip6tables").is_empty());
        assert!(HostRoot::new("/").is_slash() && !root.is_slash());
    }

    #[test]
    fn finds_processes_by_name_and_reads_their_environment() {
        let f = FakeRoot::new();
        f.process(
            40,
            "calico-node",
            &["FELIX_IPTABLESBACKEND=NFT", "PATH=/bin"],
        );
        f.process(7, "bird", &[]);
        f.process(9, "bash", &[]);
        f.file("/proc/self/comm", "calico-node\n");
        let root = f.root();
        let p = root.processes(&["calico-node", "bird"]);
        let pids: Vec<u32> = p.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [7, 40]);
        let env = root.environ(40).unwrap();
        assert!(env.contains(&("FELIX_IPTABLESBACKEND".into(), "NFT".into())));
        assert!(root.environ(41).unwrap_err().contains("41/environ"));
        assert!(HostRoot::new("/nonexistent").processes(&["x"]).is_empty());
    }
}
