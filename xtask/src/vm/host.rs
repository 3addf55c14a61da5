//! What the lane needs from the host: its programs (installed with apt when missing,
//! see `prereqs`) and finding them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Installs what is missing (as root), or says what to install.
pub fn ensure_tools() -> Result<()> {
    crate::prereqs::ensure_and_say(crate::prereqs::Task::VmTest.sets())
}

pub use crate::prereqs::which;

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
