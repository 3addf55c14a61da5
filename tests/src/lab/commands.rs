//! The commands and system calls a lab is made with: `ip`, `ip netns exec`, `setns`,
//! and the clean-up of namespaces that dead test processes left behind.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;

use anyhow::{Context, Result, anyhow, bail};

use super::{NETNS_DIR, PREFIX};

/// Deletes lab namespaces (`ctlab-<pid>-...`) whose creating process is dead; names whose
/// pid is still alive, and all other names, are left alone. Returns the deleted names.
pub fn cleanup_stale() -> Vec<String> {
    let mut deleted = Vec::new();
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return deleted;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid <= 1 || pid_alive(pid) {
            continue;
        }
        let ok = Command::new("ip")
            .args(["netns", "del", &name])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            deleted.push(name);
        }
    }
    deleted
}

/// Spawns `f` on a new thread inside the named netns; the handle yields an error if the
/// thread could not enter it.
pub fn spawn_in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<thread::JoinHandle<Result<T>>> {
    check_netns_name(netns)?;
    let path = Path::new(NETNS_DIR).join(netns);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let name = netns.to_string();
    thread::Builder::new()
        .name("lab-netns".into())
        .spawn(move || {
            // SAFETY: setns on a valid fd; CLONE_NEWNET only changes this thread's netns.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setns into {name}"));
            }
            drop(file);
            Ok(f())
        })
        .context("spawning netns thread")
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub(super) fn check_netns_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        bail!("invalid netns name {name:?}");
    }
    Ok(())
}

/// `ip netns exec NETNS args...` without ownership check.
pub(super) fn netns_exec(netns: &str, args: &[&str]) -> Result<Output> {
    check_netns_name(netns)?;
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `ip netns exec {netns} {}`", args.join(" ")))
}

/// `ip netns exec NETNS nft -f -` fed with `script`, error with stderr on failure.
pub(super) fn nft_script(netns: &str, script: &str) -> Result<()> {
    check_netns_name(netns)?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning nft")?;
    {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin for nft"))?;
        stdin
            .write_all(script.as_bytes())
            .context("writing nft script")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    check_output(&format!("in {netns}: nft -f - <<{script:?}"), &out)
}

/// `ip -n NETNS <cmd split on whitespace>`, error with stderr on failure.
pub(super) fn ip(netns: &str, cmd: &str) -> Result<()> {
    let out = Command::new("ip")
        .args(["-n", netns])
        .args(cmd.split_whitespace())
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    check_output(&format!("ip -n {netns} {cmd}"), &out)
}

/// A veth pair created inside `netns` with its peer moved straight into `peer_netns`.
pub(super) fn veth(netns: &str, name: &str, peer_netns: &str, peer_name: &str) -> Result<()> {
    ip(
        netns,
        &format!("link add {name} type veth peer name {peer_name} netns {peer_netns}"),
    )
}

/// `ip -n NETNS -j args...` parsed as JSON.
pub(super) fn ip_json(netns: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("ip")
        .args(["-n", netns, "-j"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    let what = format!("ip -n {netns} -j {}", args.join(" "));
    check_output(&what, &out)?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("parsing JSON of `{what}`"))
}

pub(super) fn check_output(what: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "`{what}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        if out.stdout.is_empty() {
            String::new()
        } else {
            format!(" [stdout: {}]", String::from_utf8_lossy(&out.stdout).trim())
        }
    )
}
