//! The guest's userspace: one cpio (the same for every kernel) with the host's own
//! networking tools and their libraries at their host paths, busybox for everything
//! else, calitrace, the test executables and the scripts in tests/vm/.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::cpio::Archive;
use super::host::{self, PATH};
use crate::root;

/// Commands the tests, the lab and calitrace run, copied from the host (with their
/// symlinks, so `iptables` points at the same backend as on the host). The first four
/// must exist; the rest are copied when the host has them.
const HOST_TOOLS: &[&str] = &[
    "ip",
    "iptables-legacy",
    "iptables-nft",
    "nft",
    "sh",
    "bridge",
    "tc",
    "ss",
    "sysctl",
    "ping",
    "bpftool",
    "setpriv",
    "timeout",
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "ip6tables-legacy",
    "ip6tables-legacy-save",
    "ip6tables-legacy-restore",
    "iptables-nft-save",
    "iptables-nft-restore",
    "ip6tables-nft",
    "ip6tables-nft-save",
    "ip6tables-nft-restore",
];
const REQUIRED_TOOLS: usize = 4;

/// Configuration and plugin directories those tools read (copied when present).
const HOST_FILES: &[&str] = &[
    "/etc/protocols",
    "/etc/services",
    "/etc/ethertypes",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/iproute2",
    "/etc/xtables",
    "/usr/lib/x86_64-linux-gnu/xtables",
    "/var/run",
];

/// Top-level links of a merged-/usr system, copied as the host has them.
const ROOT_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib64"];

/// What the guest runs.
pub struct Payload {
    pub calitrace: PathBuf,
    pub test_exes: Vec<PathBuf>,
}

/// Returns the userspace cpio, building it unless the cache has one with the same
/// inputs (paths, sizes and mtimes).
pub fn userspace(payload: &Payload, cache: &Path) -> Result<PathBuf> {
    let archive = collect(payload)?;
    let dir = cache.join("images");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("userspace-{:016x}.cpio", archive.fingerprint()?));
    if !out.exists() {
        eprintln!("vm-test: writing {}", out.display());
        archive.write(&out)?;
        prune(&dir, &out)?;
    }
    Ok(out)
}

fn collect(payload: &Payload) -> Result<Archive> {
    let mut a = Archive::default();
    base_layout(&mut a)?;
    let mut binaries = Vec::new();
    for (i, tool) in HOST_TOOLS.iter().enumerate() {
        match host::which(tool) {
            Some(p) => binaries.push(a.add_host_path(&p)?),
            None if i < REQUIRED_TOOLS => bail!("{tool} is not installed on this host"),
            None => eprintln!("vm-test: note: no {tool} on this host, the guest has none"),
        }
    }
    for f in HOST_FILES.iter().map(Path::new).filter(|p| p.exists()) {
        a.add_host_tree(f)?;
    }
    binaries.extend(plugins()?);
    for exe in std::iter::once(&payload.calitrace).chain(&payload.test_exes) {
        binaries.push(a.add_host_path(exe)?);
    }
    let busybox = host::which("busybox").context("no busybox")?;
    let busybox = a.add_host_path(&busybox)?;
    binaries.push(busybox.clone());
    for lib in host::shared_libs(&binaries)? {
        a.add_host_path(&lib)?;
    }
    busybox_links(&mut a, &busybox)?;
    scripts(&mut a, payload)?;
    Ok(a)
}

/// Directories and device nodes the kernel and the init script need before anything
/// is mounted.
fn base_layout(a: &mut Archive) -> Result<()> {
    for link in ROOT_LINKS.iter().map(Path::new).filter(|p| p.exists()) {
        a.add_host_path(link)?;
    }
    for dir in ["/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/var/tmp"] {
        a.add_dir(Path::new(dir))?;
    }
    a.add_char_dev(Path::new("/dev/console"), 5, 1)?;
    a.add_char_dev(Path::new("/dev/null"), 1, 3)
}

/// iptables' match and target plugins (dlopened, so ldd cannot see them).
fn plugins() -> Result<Vec<PathBuf>> {
    let dir = Path::new("/usr/lib/x86_64-linux-gnu/xtables");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "so"))
        .collect())
}

/// A link to busybox for each of its applets that no copied host tool already provides
/// anywhere in the guest's PATH (so `ip` stays iproute2's, `sh` the host's dash).
fn busybox_links(a: &mut Archive, busybox: &Path) -> Result<()> {
    let list = host::command_output(std::process::Command::new(busybox).arg("--list-full"))?;
    let mut names = BTreeSet::new();
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let applet = Path::new("/").join(applet);
        let name = applet.file_name().context("empty applet")?.to_owned();
        let provided = PATH.split(':').any(|d| a.exists(&Path::new(d).join(&name)));
        if provided || !names.insert(name.clone()) {
            continue;
        }
        let dir = a.resolve(applet.parent().unwrap());
        a.add_symlink(&dir.join(&name), busybox)?;
    }
    Ok(())
}

/// /init, /vm/suite.sh (from tests/vm/) and /vm/plan, which says what to run.
fn scripts(a: &mut Archive, payload: &Payload) -> Result<()> {
    let dir = root().join("tests/vm");
    a.add_file_as(Path::new("/init"), &dir.join("init.sh"))?;
    a.add_file_as(Path::new("/vm/suite.sh"), &dir.join("suite.sh"))?;
    let mut plan = String::from("# written by cargo xtask vm-test\n");
    writeln!(plan, "CALITRACE_BIN='{}'", payload.calitrace.display())?;
    let exes: Vec<String> = payload
        .test_exes
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    writeln!(plan, "TEST_EXES='{}'", exes.join(" "))?;
    a.add_data(Path::new("/vm/plan"), plan.into_bytes(), 0o644)
}

/// Keeps only the newest userspace image (each is as large as the test binaries).
fn prune(dir: &Path, keep: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let is_image = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("userspace-"));
        if is_image && p != keep {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}
