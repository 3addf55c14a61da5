//! `cargo xtask image`: calitrace as a static musl binary, in an OCI image
//! archive that holds nothing else (`target/image/calitrace-oci.tar`, tagged
//! `calitrace:<version>`), built offline with buildah from scratch.
//!
//! buildah keeps its storage under `target/image/` and this removes it once
//! the archive is written: no container or image is left behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run, setup};

pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// The Cargo profile of the image's binary (release, less debug info).
const PROFILE: &str = "container";
/// Where the binary is in the image.
pub const BINARY_IN_IMAGE: &str = "/usr/bin/calitrace";
/// The crate version: xtask shares the workspace's with calitrace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn tag() -> String {
    format!("calitrace:{VERSION}")
}

pub fn archive_path() -> PathBuf {
    root().join("target/image/calitrace-oci.tar")
}

/// Builds the binary and the archive.
pub fn image() -> Result<PathBuf> {
    let started = Instant::now();
    ensure_tools()?;
    let binary = build_static()?;
    let archive = archive_path();
    let work = root().join("target/image");
    std::fs::create_dir_all(&work)?;
    let storage = Storage::new(work.join("buildah"));
    let built = storage.write_archive(&binary, &archive);
    storage.remove();
    built?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let shown = |p: &Path| p.strip_prefix(root()).unwrap_or(p).display().to_string();
    println!(
        "xtask: image {} in {} ({}), {} binary {} ({}), built in {:.0} s",
        tag(),
        shown(&archive),
        mib(size(&archive)),
        BINARY_IN_IMAGE,
        shown(&binary),
        mib(size(&binary)),
        started.elapsed().as_secs_f64()
    );
    Ok(archive)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The musl target, a C compiler for it (crates such as ring compile C), buildah.
fn ensure_tools() -> Result<()> {
    crate::prereqs::ensure(&[crate::prereqs::IMAGE])?;
    setup::ensure_rust_target(TARGET)
}

/// The image's binary alone (vm-test runs it in the guests; its packages are
/// vm-test's): the musl target, then the build, a no-op where `cargo xtask image` or `test` already built it.
pub fn static_binary() -> Result<PathBuf> {
    setup::ensure_rust_target(TARGET)?;
    build_static()
}

fn build_static() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--package", "tracer-user", "--bin", "calitrace"])
        .args(["--profile", PROFILE, "--target", TARGET])
        // C code of dependencies, compiled for musl and linked statically.
        .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
        .env("AR_x86_64_unknown_linux_musl", "ar");
    // build.rs builds the eBPF programs (as for `cargo xtask build`) unless
    // CALITRACE_EBPF_OBJECT names a prebuilt object.
    if std::env::var_os("CALITRACE_EBPF_OBJECT").is_none() {
        setup::ensure()?;
    }
    run(&mut c)?;
    Ok(root()
        .join("target")
        .join(TARGET)
        .join(PROFILE)
        .join("calitrace"))
}

/// buildah with storage of its own (vfs: no mounts, works without overlay).
struct Storage {
    dir: PathBuf,
}

impl Storage {
    fn new(dir: PathBuf) -> Storage {
        let s = Storage { dir };
        s.remove(); // what a killed run left
        s
    }

    fn buildah(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    fn output(&self, args: &[&str]) -> Result<String> {
        let mut c = self.buildah();
        c.args(args);
        let out = c.output().with_context(|| format!("running {c:?}"))?;
        if !out.status.success() {
            bail!(
                "{c:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn write_archive(&self, binary: &Path, archive: &Path) -> Result<()> {
        let binary = binary.to_str().context("binary path is not UTF-8")?;
        let ctr = self.output(&["from", "--quiet", "scratch"])?;
        self.output(&["copy", "--chmod", "0755", &ctr, binary, BINARY_IN_IMAGE])?;
        let entrypoint = format!("[\"{BINARY_IN_IMAGE}\"]");
        let mut config = vec![
            "config",
            "--os",
            "linux",
            "--arch",
            "amd64",
            "--entrypoint",
            &entrypoint,
            "--env",
            "PATH=/usr/bin",
            "--created-by",
            "cargo xtask image",
        ];
        let labels = labels();
        for l in &labels {
            config.extend(["--label", l.as_str()]);
        }
        config.push(&ctr);
        self.output(&config)?;
        let timestamp = source_date().to_string();
        self.output(&[
            "commit",
            "--quiet",
            "--rm",
            "--timestamp",
            &timestamp,
            &ctr,
            &tag(),
        ])?;
        let _ = std::fs::remove_file(archive);
        let dest = format!("oci-archive:{}:{}", archive.display(), tag());
        self.output(&["push", "--quiet", &tag(), &dest])?;
        self.output(&["rmi", &tag()])?;
        Ok(())
    }

    /// Removes every container and image of this storage, then the storage.
    fn remove(&self) {
        if !self.dir.exists() {
            return;
        }
        let _ = self.output(&["rm", "--all"]);
        let _ = self.output(&["rmi", "--all", "--force"]);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("xtask: removing {}: {e}", self.dir.display());
        }
    }
}

fn labels() -> Vec<String> {
    let mut l = vec![
        "org.opencontainers.image.title=calitrace".to_string(),
        format!("org.opencontainers.image.version={VERSION}"),
        "org.opencontainers.image.description=Where exactly does cross-node Pod traffic die on this Calico node, and why?".to_string(),
        "org.opencontainers.image.licenses=MIT OR Apache-2.0".to_string(),
    ];
    if let Some(rev) = git(&["rev-parse", "HEAD"]) {
        l.push(format!("org.opencontainers.image.revision={rev}"));
    }
    l
}

/// The time of the last commit, so that a commit's image is the same bytes
/// whenever it is built (0 outside a git checkout).
fn source_date() -> u64 {
    git(&["log", "-1", "--format=%ct"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(root())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
