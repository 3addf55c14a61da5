//! `cargo xtask vm-test`: the kernel matrix. Boots Debian's cloud kernels (5.10, 6.1,
//! 6.12) under qemu and runs the integration tests and `calitrace probes` inside each.
//!
//! - Kernels come from Debian through a private apt configuration (`kernel.rs`) and
//!   stay unpacked in the cache (`~/.cache/calitrace/vm`, or `$CALITRACE_VM_CACHE`).
//! - The guest is an initramfs and nothing else (`image.rs`, `cpio.rs`): the host's own
//!   ip, iptables (both backends), nft, ping, bpftool, ... with their libraries,
//!   busybox for the rest, calitrace and the test executables at their host paths, and
//!   a second cpio per kernel with its network modules.
//! - `tests/vm/init.sh` prepares the guest and `tests/vm/suite.sh` runs every test in a
//!   process of its own, framing its output with markers on the second serial port;
//!   `report.rs` turns that into the matrix and prints the output of failures.

mod cpio;
mod host;
mod image;
mod kernel;
mod qemu;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use kernel::{KERNELS, Kernel, KernelSpec};
use qemu::BootConfig;
use report::KernelRun;

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// Kernels to test: 5.10, 6.1, 6.12 or all (comma-separated or repeated).
    #[arg(long, default_value = "all", value_delimiter = ',')]
    kernel: Vec<String>,
    /// Look up the suites' newest kernel packages instead of using the cached ones.
    #[arg(long)]
    refresh: bool,
    /// Kernels booted at the same time (they share the host's CPUs).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Seconds one kernel's boot and suite may take in all.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
    /// Seconds one test may take.
    #[arg(long, default_value_t = 300)]
    test_timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    mem: u32,
    /// Run only the tests whose `suite::name` contains one of these.
    filters: Vec<String>,
}

pub fn vm_test(args: VmTestArgs) -> Result<()> {
    let specs = select_kernels(&args.kernel)?;
    let started = Instant::now();
    host::ensure_tools()?;
    let cache = cache_dir();
    let payload = build_payload()?;
    let userspace = image::userspace(&payload, &cache)?;
    let kernels = specs
        .iter()
        .map(|s| kernel::prepare(s, &cache, args.refresh))
        .collect::<Result<Vec<_>>>()?;
    let jobs = args.jobs.clamp(1, kernels.len());
    let cfg = BootConfig {
        cpus: (host_cpus() / jobs).max(1),
        mem_mib: args.mem,
        timeout: Duration::from_secs(args.timeout),
        test_timeout: args.test_timeout,
        filters: args.filters,
    };
    eprintln!(
        "vm-test: ready after {:.0} s; booting {} kernel(s), {jobs} at a time, {} CPU(s) each",
        started.elapsed().as_secs_f64(),
        kernels.len(),
        cfg.cpus
    );
    let runs = run_all(&kernels, &userspace, &cache, &cfg, jobs);
    report::print(&runs);
    println!("vm-test: {:.0} s in all", started.elapsed().as_secs_f64());
    if !runs.iter().all(KernelRun::ok) {
        bail!("vm-test: not everything passed (output above)");
    }
    Ok(())
}

fn select_kernels(wanted: &[String]) -> Result<Vec<&'static KernelSpec>> {
    if wanted.iter().any(|w| w == "all") {
        return Ok(KERNELS.iter().collect());
    }
    wanted
        .iter()
        .map(|w| {
            KERNELS.iter().find(|k| k.label == w).with_context(|| {
                let known: Vec<&str> = KERNELS.iter().map(|k| k.label).collect();
                format!("unknown kernel {w:?}: use one of {known:?} or all")
            })
        })
        .collect()
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CALITRACE_VM_CACHE") {
        return PathBuf::from(d);
    }
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache"))
        .join("calitrace/vm")
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Builds calitrace and the test executables of `calitrace-tests` (without running them).
fn build_payload() -> Result<image::Payload> {
    let calitrace = crate::build(false)?;
    let out = crate::cargo()
        .args(["test", "--package", "calitrace-tests", "--no-run"])
        .args(["--message-format", "json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test executables failed");
    }
    let test_exes = test_executables(&String::from_utf8_lossy(&out.stdout));
    if test_exes.is_empty() {
        bail!("cargo built no test executables for calitrace-tests");
    }
    Ok(image::Payload {
        calitrace,
        test_exes,
    })
}

/// The test executables in cargo's JSON messages.
fn test_executables(messages: &str) -> Vec<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .collect()
}

/// Boots every kernel, `jobs` at a time; a kernel that cannot even be started still
/// gets a (failed) run.
fn run_all(
    kernels: &[Kernel],
    userspace: &Path,
    cache: &Path,
    cfg: &BootConfig,
    jobs: usize,
) -> Vec<KernelRun> {
    let queue = Mutex::new(kernels.iter().collect::<Vec<_>>());
    let runs = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(k) = queue.lock().unwrap().pop() {
                    let run = run_one(k, userspace, cache, cfg).unwrap_or_else(|e| {
                        eprintln!("[{}] {e:#}", k.label);
                        failed_run(k, cache)
                    });
                    runs.lock().unwrap().push(run);
                }
            });
        }
    });
    let mut runs = runs.into_inner().unwrap();
    runs.sort_by_key(|r| KERNELS.iter().position(|k| k.label == r.label));
    runs
}

fn run_one(k: &Kernel, userspace: &Path, cache: &Path, cfg: &BootConfig) -> Result<KernelRun> {
    let dir = run_dir(k, cache);
    std::fs::create_dir_all(&dir)?;
    let initrd = dir.join("initrd.cpio");
    concat(&[userspace, &k.modules_cpio], &initrd)?;
    eprintln!("[{}] booting {} ({})", k.label, k.release, k.package);
    let boot = qemu::boot(&k.vmlinuz, &initrd, &dir, cfg, |marker| {
        if let Some(line) = report::progress_line(k.label, marker) {
            eprintln!("{line}");
        }
    });
    let _ = std::fs::remove_file(&initrd);
    let boot = boot?;
    let (release, mut pieces, done) = report::parse(&boot.results);
    let probes = pieces
        .iter()
        .position(|p| p.kind == "probes")
        .map(|i| pieces.remove(i));
    Ok(KernelRun {
        label: k.label.to_string(),
        package: k.package.clone(),
        release,
        probes,
        tests: pieces,
        done,
        timed_out: boot.timed_out,
        wall: boot.wall,
        results_log: dir.join("results.log"),
        console_log: boot.console,
    })
}

fn failed_run(k: &Kernel, cache: &Path) -> KernelRun {
    let dir = run_dir(k, cache);
    KernelRun {
        label: k.label.to_string(),
        package: k.package.clone(),
        release: None,
        probes: None,
        tests: Vec::new(),
        done: false,
        timed_out: false,
        wall: Duration::ZERO,
        results_log: dir.join("results.log"),
        console_log: dir.join("console.log"),
    }
}

fn run_dir(k: &Kernel, cache: &Path) -> PathBuf {
    cache.join("runs").join(k.label)
}

/// The kernel unpacks concatenated cpio archives one after the other.
fn concat(parts: &[&Path], out: &Path) -> Result<()> {
    let mut w = std::fs::File::create(out)?;
    for p in parts {
        std::io::copy(&mut std::fs::File::open(p)?, &mut w)?;
    }
    Ok(())
}
