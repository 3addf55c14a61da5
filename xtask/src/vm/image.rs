//! The initramfs of one kernel: static busybox, the modules that mounting the host's
//! root needs, and tests/vm/init.sh as /init. Everything else (tools, libraries,
//! calitrace, the test executables, the kernel's other modules) the guest reads from
//! the host's root over virtiofs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::cpio::Archive;
use super::host;
use super::kernel::Kernel;
use crate::root;

/// Returns the kernel's initramfs, building it unless the cache has one made from the
/// same files.
pub fn initramfs(kernel: &Kernel, cache_dir: &Path) -> Result<PathBuf> {
    let archive = collect(kernel)?;
    let out = cache_dir.join(format!("initramfs-{:016x}.cpio", archive.fingerprint()?));
    if !out.exists() {
        archive.write(&out)?;
        prune(cache_dir, &out)?;
    }
    Ok(out)
}

fn collect(kernel: &Kernel) -> Result<Archive> {
    let mut a = Archive::default();
    for dir in ["/proc", "/sys", "/dev", "/mnt/host", "/mnt/rw", "/newroot"] {
        a.add_dir(Path::new(dir));
    }
    // The kernel opens /dev/console for /init before anything is mounted.
    a.add_char_dev(Path::new("/dev/console"), 5, 1);
    a.add_char_dev(Path::new("/dev/null"), 1, 3);
    a.add_file_as(Path::new("/bin/busybox"), &static_busybox()?)?;
    a.add_file_as(Path::new("/init"), &root().join("tests/vm/init.sh"))?;
    let mut order = String::new();
    for module in kernel.boot_modules()? {
        let name = module.file_name().context("module path")?;
        a.add_file_as(&Path::new("/modules").join(name), &module)?;
        order.push_str(&format!("{}\n", name.to_string_lossy()));
    }
    a.add_data(Path::new("/modules/order"), order.into_bytes(), 0o644);
    Ok(a)
}

/// The host's busybox, which must be the static one (the initramfs has no libc).
fn static_busybox() -> Result<PathBuf> {
    let busybox = host::which("busybox").context("busybox is not installed")?;
    let out = std::process::Command::new("ldd").arg(&busybox).output()?;
    if out.status.success() {
        bail!(
            "{} is linked dynamically: install busybox-static",
            busybox.display()
        );
    }
    Ok(busybox)
}

/// Removes the kernel's older initramfs images.
fn prune(dir: &Path, keep: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let old = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("initramfs-"));
        if old && p != keep {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}
