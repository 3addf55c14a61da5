//! `cargo xtask image`: calitrace as a static musl binary for linux/amd64 and
//! linux/arm64 (cross-built; the eBPF object is the same), in an OCI image
//! archive that holds nothing else: one index (`calitrace:<version>`) of the
//! two images (`target/image/calitrace-oci.tar`), built offline with buildah
//! from scratch.
//!
//! buildah keeps its storage under `target/image/` and this removes it once
//! the archive is written: no container or image is left behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run, setup};

pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// An architecture of the image: its Rust target, its OCI name, and the C
/// toolchain for the C code of dependencies (ring) and the link.
struct Arch {
    target: &'static str,
    oci: &'static str,
    cc: &'static str,
    ar: &'static str,
    /// None: Rust's default linker for the target.
    linker: Option<&'static str>,
}

const ARCHES: [Arch; 2] = [
    Arch {
        target: TARGET,
        oci: "amd64",
        cc: "musl-gcc",
        ar: "ar",
        linker: None,
    },
    Arch {
        target: "aarch64-unknown-linux-musl",
        oci: "arm64",
        // ring's C needs no libc headers of musl's own; Rust links musl's
        // self-contained objects.
        cc: "aarch64-linux-gnu-gcc",
        ar: "aarch64-linux-gnu-ar",
        linker: Some("aarch64-linux-gnu-gcc"),
    },
];
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
    let binaries: Vec<(&str, PathBuf)> = ARCHES
        .iter()
        .map(|a| Ok((a.oci, build_static(a)?)))
        .collect::<Result<_>>()?;
    let archive = archive_path();
    let work = root().join("target/image");
    std::fs::create_dir_all(&work)?;
    let storage = Storage::new(work.join("buildah"));
    let built = storage.write_archive(&binaries, &archive);
    storage.remove();
    built?;
    let binary = &binaries[0].1;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let shown = |p: &Path| p.strip_prefix(root()).unwrap_or(p).display().to_string();
    println!(
        "xtask: image {} (linux/amd64, linux/arm64) in {} ({}), {} binary {} ({}), built in {:.0} s",
        tag(),
        shown(&archive),
        mib(size(&archive)),
        BINARY_IN_IMAGE,
        shown(binary),
        mib(size(binary)),
        started.elapsed().as_secs_f64()
    );
    Ok(archive)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The musl targets, C compilers for them (crates such as ring compile C), buildah.
fn ensure_tools() -> Result<()> {
    crate::prereqs::ensure(&[crate::prereqs::IMAGE])?;
    for a in &ARCHES {
        setup::ensure_rust_target(a.target)?;
    }
    Ok(())
}

/// The image's binary alone (vm-test runs it in the guests; its packages are
/// vm-test's): the musl target, then the build, a no-op where `cargo xtask image` or `test` already built it.
pub fn static_binary() -> Result<PathBuf> {
    setup::ensure_rust_target(TARGET)?;
    build_static(&ARCHES[0])
}

fn build_static(arch: &Arch) -> Result<PathBuf> {
    let var = arch.target.replace('-', "_");
    let mut c = cargo();
    c.args(["build", "--package", "tracer-user", "--bin", "calitrace"])
        .args(["--profile", PROFILE, "--target", arch.target])
        // C code of dependencies, compiled for musl and linked statically.
        .env(format!("CC_{var}"), arch.cc)
        .env(format!("AR_{var}"), arch.ar);
    if let Some(linker) = arch.linker {
        c.env(
            format!("CARGO_TARGET_{}_LINKER", var.to_uppercase()),
            linker,
        );
    }
    // build.rs builds the eBPF programs (as for `cargo xtask build`) unless
    // CALITRACE_EBPF_OBJECT names a prebuilt object.
    if std::env::var_os("CALITRACE_EBPF_OBJECT").is_none() {
        setup::ensure()?;
    }
    run(&mut c)?;
    Ok(root()
        .join("target")
        .join(arch.target)
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

    /// One image per architecture, committed locally, and the index of
    /// them pushed to `archive` as `calitrace:<version>`.
    fn write_archive(&self, binaries: &[(&str, PathBuf)], archive: &Path) -> Result<()> {
        self.output(&["manifest", "create", &tag()])?;
        for (arch, binary) in binaries {
            let image = self.commit_image(arch, binary)?;
            self.output(&["manifest", "add", &tag(), &image])?;
        }
        let _ = std::fs::remove_file(archive);
        let dest = format!("oci-archive:{}:{}", archive.display(), tag());
        self.output(&["manifest", "push", "--all", "--quiet", &tag(), &dest])?;
        Ok(())
    }

    /// The image of one architecture; its id.
    fn commit_image(&self, arch: &str, binary: &Path) -> Result<String> {
        let binary = binary.to_str().context("binary path is not UTF-8")?;
        let ctr = self.output(&["from", "--quiet", "scratch"])?;
        self.output(&["copy", "--chmod", "0755", &ctr, binary, BINARY_IN_IMAGE])?;
        let entrypoint = format!("[\"{BINARY_IN_IMAGE}\"]");
        let mut config = vec![
            "config",
            "--os",
            "linux",
            "--arch",
            arch,
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
        let name = format!("{}-{arch}", tag());
        self.output(&[
            "commit",
            "--quiet",
            "--rm",
            "--timestamp",
            &timestamp,
            &ctr,
            &name,
        ])
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
