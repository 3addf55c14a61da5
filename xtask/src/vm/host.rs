//! What the lane needs from the host: its programs (installed with apt when missing),
//! finding commands, and the shared libraries a binary needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::is_root;

/// Where the guest looks for commands (and where the host's are looked up).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host commands the lane runs, and the Debian package that has each.
const HOST_NEEDS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("busybox", "busybox-static"),
    ("dpkg-deb", "dpkg"),
    ("apt-get", "apt"),
    ("xz", "xz-utils"),
    ("ldd", "libc-bin"),
];

/// Installs what is missing (as root), or says what to install.
pub fn ensure_tools() -> Result<()> {
    let missing: BTreeSet<&str> = HOST_NEEDS
        .iter()
        .filter(|(cmd, _)| which(cmd).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("vm-test needs these packages: apt-get install {missing:?} (or run it as root)");
    }
    eprintln!("vm-test: installing {missing:?}");
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// First `name` in the host's PATH (plus the sbin directories).
pub fn which(name: &str) -> Option<PathBuf> {
    let env_path = std::env::var("PATH").unwrap_or_default();
    env_path
        .split(':')
        .chain(PATH.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

pub fn command_output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The shared libraries (and the dynamic loader) that `files` load, by `ldd`. Static
/// binaries and plain data files contribute nothing.
pub fn shared_libs(files: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    if files.is_empty() {
        return Ok(BTreeSet::new());
    }
    // ldd exits non-zero when one of several files is not dynamic; its stdout still
    // lists the libraries of the others.
    let out = Command::new("ldd")
        .args(files)
        .output()
        .context("running ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('\t'))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect())
}
