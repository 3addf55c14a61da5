//! Booting one kernel under qemu (TCG: KVM guests hang on these machines) with the
//! host's root shared over virtiofs, and watching its results port until it powers off
//! or runs out of time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::host::virtiofsd;

pub struct BootConfig {
    pub cpu_model: String,
    pub cpus: usize,
    pub mem_mib: u32,
    /// For the whole boot; qemu is killed after it.
    pub timeout: Duration,
}

/// What came back from one boot.
pub struct Boot {
    /// Everything the guest wrote to its results port (ttyS1).
    pub results: String,
    /// Where the console (ttyS0: kernel and init messages) is kept.
    pub console: PathBuf,
    pub timed_out: bool,
    pub wall: Duration,
}

/// Boots `vmlinuz` with `initrd` and waits; the guest finds what to run in `plan` (a
/// host path). `progress` gets every line of the results port as it arrives. The logs stay in
/// `run_dir`.
pub fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    plan: &Path,
    run_dir: &Path,
    cfg: &BootConfig,
    mut progress: impl FnMut(&str),
) -> Result<Boot> {
    let console = run_dir.join("console.log");
    let results = run_dir.join("results.log");
    let socket = run_dir.join("virtiofs.sock");
    for f in [&console, &results, &socket] {
        let _ = std::fs::remove_file(f);
    }
    let log = File::create(run_dir.join("qemu.log"))?;
    let mut fsd = start_virtiofsd_retrying(&socket, &log)?;
    let start = Instant::now();
    let qemu = qemu_command(vmlinuz, initrd, plan, run_dir, cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting qemu-system-x86_64");
    let mut qemu = match qemu {
        Ok(q) => q,
        Err(e) => {
            kill(&mut fsd);
            return Err(e);
        }
    };
    let mut watcher = Watcher::default();
    let timed_out = loop {
        watcher.poll(&results, &mut progress);
        if qemu.try_wait()?.is_some() {
            break false;
        }
        if start.elapsed() > cfg.timeout {
            kill(&mut qemu);
            break true;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    kill(&mut fsd);
    watcher.poll(&results, &mut progress);
    let raw = std::fs::read(&results).unwrap_or_default();
    Ok(Boot {
        results: String::from_utf8_lossy(&raw).replace('\r', ""),
        console,
        timed_out,
        wall: start.elapsed(),
    })
}

/// virtiofsd, tried a few times: it can fail to start while an earlier one for the
/// same socket path (another run of the lane with the same cache) is still going.
fn start_virtiofsd_retrying(socket: &Path, log: &File) -> Result<Child> {
    let mut tries = 0;
    loop {
        match start_virtiofsd(socket, log) {
            Ok(c) => return Ok(c),
            Err(e) if tries < 3 => {
                tries += 1;
                let _ = std::fs::remove_file(socket);
                eprintln!("vm-test: {e:#}; trying again");
                std::thread::sleep(Duration::from_secs(2 * tries));
            }
            Err(e) => {
                return Err(e.context(
                    "is another `cargo xtask vm-test` using the same cache? (CALITRACE_VM_CACHE)",
                ));
            }
        }
    }
}

/// virtiofsd serving the host's root (the guest mounts it read-only, under a tmpfs
/// overlay). Returns once its socket is there.
fn start_virtiofsd(socket: &Path, log: &File) -> Result<Child> {
    let mut child = Command::new(virtiofsd()?)
        .arg(format!("--socket-path={}", socket.display()))
        .args([
            "-o",
            "source=/",
            "-o",
            "cache=always",
            "-o",
            "sandbox=chroot",
        ])
        .args(["-o", "log_level=err"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?)
        .spawn()
        .context("starting virtiofsd")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if child.try_wait()?.is_some() || Instant::now() > deadline {
            kill(&mut child);
            bail!("virtiofsd did not start (see qemu.log)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn qemu_command(
    vmlinuz: &Path,
    initrd: &Path,
    plan: &Path,
    run_dir: &Path,
    cfg: &BootConfig,
) -> Command {
    let append = format!(
        "console=ttyS0 quiet panic=-1 mitigations=off random.trust_cpu=on calitrace.plan={}",
        plan.display()
    );
    let file = |name: &str| format!("file:{}", run_dir.join(name).display());
    let mem = format!("{}M", cfg.mem_mib);
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-cpu", &cfg.cpu_model])
        .args(["-smp", &cfg.cpus.to_string(), "-m", &mem])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        // ttyS0: console; ttyS1: the suite's results.
        .args(["-serial", &file("console.log")])
        .args(["-serial", &file("results.log")])
        // vhost-user needs the guest's memory shared with virtiofsd.
        .arg("-object")
        .arg(format!("memory-backend-memfd,id=mem,size={mem},share=on"))
        .args(["-numa", "node,memdev=mem"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=vfs,path={}",
            run_dir.join("virtiofs.sock").display()
        ))
        .args(["-device", "vhost-user-fs-pci,chardev=vfs,tag=hostroot"]);
    c
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Follows the results file and hands over complete lines.
#[derive(Default)]
struct Watcher {
    offset: u64,
    partial: Vec<u8>,
}

impl Watcher {
    fn poll(&mut self, path: &Path, progress: &mut impl FnMut(&str)) {
        let Ok(mut f) = File::open(path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return;
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(nl) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            progress(line.trim_end());
        }
    }
}
