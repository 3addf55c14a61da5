//! What the lane needs from the host: its programs (installed with apt when missing)
//! and finding them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::is_root;

/// Where commands are looked up besides $PATH.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// qemu's virtiofsd (Debian 12 ships it with qemu-system-common 7.2).
pub fn virtiofsd() -> Result<PathBuf> {
    let p = PathBuf::from("/usr/lib/qemu/virtiofsd");
    if !p.exists() {
        bail!(
            "{} is missing: apt-get install qemu-system-common",
            p.display()
        );
    }
    Ok(p)
}
