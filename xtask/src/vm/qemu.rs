//! Booting one kernel under qemu (TCG: KVM guests hang on these machines) and watching
//! its results port until it powers off or runs out of time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::report::MARK;

pub struct BootConfig {
    pub cpus: usize,
    pub mem_mib: u32,
    /// For the whole boot; qemu is killed after it.
    pub timeout: Duration,
    /// Per test, enforced in the guest.
    pub test_timeout: u64,
    /// Substrings of test names (empty: all).
    pub filters: Vec<String>,
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

/// Boots `vmlinuz` with `initrd` and waits. `progress` gets every marker line as it
/// arrives. The logs stay in `run_dir`.
pub fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    run_dir: &Path,
    cfg: &BootConfig,
    mut progress: impl FnMut(&str),
) -> Result<Boot> {
    let console = run_dir.join("console.log");
    let results = run_dir.join("results.log");
    for f in [&console, &results] {
        let _ = std::fs::remove_file(f);
    }
    let qemu_log = File::create(run_dir.join("qemu.log"))?;
    let start = Instant::now();
    let mut child = qemu_command(vmlinuz, initrd, &console, &results, cfg)
        .stdin(Stdio::null())
        .stdout(qemu_log.try_clone()?)
        .stderr(qemu_log)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut watcher = Watcher::default();
    let timed_out = loop {
        watcher.poll(&results, &mut progress);
        if child.try_wait()?.is_some() {
            break false;
        }
        if start.elapsed() > cfg.timeout {
            kill(&mut child);
            break true;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    watcher.poll(&results, &mut progress);
    let raw = std::fs::read(&results).unwrap_or_default();
    Ok(Boot {
        results: String::from_utf8_lossy(&raw).replace('\r', ""),
        console,
        timed_out,
        wall: start.elapsed(),
    })
}

fn qemu_command(
    vmlinuz: &Path,
    initrd: &Path,
    console: &Path,
    results: &Path,
    cfg: &BootConfig,
) -> Command {
    let mut append = format!(
        "console=ttyS0 quiet panic=-1 mitigations=off random.trust_cpu=on \
         calitrace.timeout={}",
        cfg.test_timeout
    );
    if !cfg.filters.is_empty() {
        append.push_str(&format!(" calitrace.filter={}", cfg.filters.join(",")));
    }
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-cpu", "max"])
        .args(["-smp", &cfg.cpus.to_string()])
        .args(["-m", &cfg.mem_mib.to_string()])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()));
    c
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Follows the results file and hands over complete marker lines.
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
            let line = line.trim_end();
            if line.starts_with(MARK) {
                progress(line);
            }
        }
    }
}
