//! `cargo xtask`: set-up, build, run and test calitrace.
//!
//! Set-up is idempotent and cached: the nightly's rust-src, and bpf-linker
//! built against the nightly's own libLLVM (no prebuilt one can be fetched).

mod bench;
mod checkov;
mod image;
mod manifests;
mod prereqs;
mod setup;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building the eBPF programs needs (nightly rust-src, bpf-linker).
    Setup,
    /// Install the Debian packages the tasks need where missing (as root, with
    /// apt-get), or say which to install; `test` and `bench` do this first.
    Prereqs {
        /// The tasks whose packages to check.
        #[arg(value_enum, default_value = "test")]
        tasks: Vec<prereqs::Task>,
    },
    /// Build the eBPF object and calitrace.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run calitrace (as root) with ARGS.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests and the root-only integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// cargo clippy on everything, warnings as errors, and the manifests.
    Lint,
    /// Validate deploy/'s manifests (and their kustomize build) offline against
    /// the schemas of Kubernetes 1.37, 1.36 and 1.35, strictly.
    Manifests,
    /// A static (musl) calitrace in an OCI image archive holding nothing else:
    /// target/image/calitrace-oci.tar, tagged calitrace:<version>.
    Image,
    /// Fuzz the recording reader and replay pipeline (cargo fuzz, libFuzzer)
    /// for a bounded time, starting from the seed corpus in fuzz/corpus.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Measure performance (datapath overhead, event pipeline, replay, memory,
    /// attach/detach) and write the table to target/bench/latest.md (as root).
    Bench(bench::BenchArgs),
    /// Run the integration tests under qemu on Debian's 5.10, 6.1 and 6.12 kernels.
    VmTest(vm::VmTestArgs),
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root())
        .env("PATH", setup::path_with_cargo_bin());
    c
}

fn build(release: bool) -> Result<PathBuf> {
    setup::ensure()?;
    let mut c = cargo();
    c.args(["build", "--package", "tracer-user", "--bin", "calitrace"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("calitrace"))
}

/// The eBPF object the last host build produced.
fn built_ebpf_object() -> Result<PathBuf> {
    let build = root().join("target/debug/build");
    std::fs::read_dir(&build)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tracer-user-"))
        .map(|e| e.path().join("out/tracer.bpf.o"))
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("no eBPF object under target/debug/build: build first")
}

fn fuzz(seconds: u64) -> Result<()> {
    build(false)?;
    setup::ensure_cargo_fuzz()?;
    // The fuzzed code never loads programs: reuse the object of the host build
    // instead of building it again under the sanitizer's flags.
    let object = built_ebpf_object()?;
    // Work on a copy of the seeds: libFuzzer adds what it finds to its corpus.
    let corpus = root().join("target/fuzz-corpus/replay_reader");
    std::fs::create_dir_all(&corpus)?;
    for e in std::fs::read_dir(root().join("fuzz/corpus/replay_reader"))? {
        let e = e?;
        std::fs::copy(e.path(), corpus.join(e.file_name()))?;
    }
    let mut c = Command::new("cargo");
    c.current_dir(root().join("fuzz"))
        .env("PATH", setup::path_with_cargo_bin())
        .env("CALITRACE_EBPF_OBJECT", &object)
        .args([
            "+nightly",
            "fuzz",
            "run",
            "--fuzz-dir",
            ".",
            // Unoptimised and without AddressSanitizer: the decoder is safe
            // Rust, so what a short run can find is a panic (overflow checks
            // on), and the build of every dependency this way takes half the
            // time of an optimised, sanitised one (CI's longest step after
            // the tests and the kernel matrix).
            "--dev",
            "--sanitizer",
            "none",
            "replay_reader",
        ])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-rss_limit_mb=4096");
    run(&mut c)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::ensure(),
        Cmd::Prereqs { tasks } => prereqs::ensure_for(&tasks),
        Cmd::Build { release } => build(release).map(|p| println!("built {}", p.display())),
        Cmd::Run { release, args } => {
            let bin = build(release)?;
            let mut c = if is_root() {
                Command::new(&bin)
            } else {
                let mut c = Command::new("sudo");
                c.arg(&bin);
                c
            };
            let status = c.args(&args).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { args } => {
            if !is_root() {
                bail!(
                    "the integration tests load eBPF programs and create network namespaces: run `cargo xtask test` as root"
                );
            }
            prereqs::ensure_and_say(prereqs::Task::Test.sets())?;
            let bin = build(false)?;
            // tests/tests/image.rs runs the image's binary: the same build as
            // `cargo xtask image`'s.
            let image = image::image()?;
            let mut c = cargo();
            c.args(["test", "--workspace"])
                .env("CALITRACE_BIN", &bin)
                .env("CALITRACE_IMAGE", &image)
                .args(&args);
            run(&mut c)
        }
        Cmd::VmTest(args) => vm::vm_test(args),
        Cmd::Bench(args) => bench::bench(args),
        Cmd::Fuzz { seconds } => fuzz(seconds),
        Cmd::Lint => {
            prereqs::ensure_for(&[prereqs::Task::Lint])?;
            setup::ensure()?;
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            manifests::check()
        }
        Cmd::Manifests => {
            prereqs::ensure_for(&[prereqs::Task::Lint])?;
            manifests::check()
        }
        Cmd::Image => image::image().map(|_| ()),
    }
}
