//! Debian cloud kernels: resolved and downloaded with a private apt configuration (the
//! system's /etc/apt is never touched), and unpacked once into the cache with every
//! module decompressed and a busybox-made modules.dep. The guest loads its modules from
//! there (the cache is part of the host root it mounts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::host::command_output;
use crate::is_root;
use crate::run;

const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The metapackage whose dependency names the newest cloud kernel of a suite.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// Modules that the initramfs loads (with their dependencies, unless built in) to
/// mount the host's root: virtio-pci, virtiofs and overlayfs.
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtiofs", "overlay"];

/// One kernel of the matrix.
pub struct KernelSpec {
    /// What `--kernel` calls it, and the version its release must start with.
    pub label: &'static str,
    pub suite: &'static str,
}

pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        label: "5.10",
        suite: "bullseye",
    },
    KernelSpec {
        label: "6.1",
        suite: "bookworm",
    },
    KernelSpec {
        label: "6.12",
        suite: "bookworm-backports",
    },
];

/// A kernel unpacked in the cache, ready to boot.
pub struct Kernel {
    pub label: &'static str,
    /// `uname -r` in the guest.
    pub release: String,
    /// Debian package and version it came from.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// Its lib/modules/RELEASE, decompressed, with modules.dep and modules.alias.
    pub modules: PathBuf,
}

impl Kernel {
    /// The module files the initramfs must insmod, dependencies first.
    pub fn boot_modules(&self) -> Result<Vec<PathBuf>> {
        let deps = read_modules_dep(&self.modules.join("modules.dep"))?;
        let builtin = std::fs::read_to_string(self.modules.join("modules.builtin"))?;
        let mut order = Vec::new();
        for name in BOOT_MODULES {
            let file = format!("/{name}.ko");
            match deps.keys().find(|m| m.ends_with(&file)) {
                Some(m) => add_with_deps(m, &deps, &mut order),
                None if builtin.lines().any(|l| l.ends_with(&file)) => {}
                None => bail!("kernel {} has no module {name}", self.release),
            }
        }
        Ok(order.iter().map(|m| self.modules.join(m)).collect())
    }
}

/// Appends `module` after everything it needs (depth first).
fn add_with_deps(module: &str, deps: &HashMap<String, Vec<String>>, order: &mut Vec<String>) {
    if order.iter().any(|m| m == module) {
        return;
    }
    for d in deps.get(module).into_iter().flatten() {
        add_with_deps(d, deps, order);
    }
    order.push(module.to_string());
}

/// Returns the kernel from the cache, fetching and unpacking it first if needed (or if
/// `refresh` asks for the suite's newest).
pub fn prepare(spec: &KernelSpec, cache: &Path, refresh: bool) -> Result<Kernel> {
    let dir = cache.join("kernels").join(spec.label);
    let stamp = dir.join("package");
    if refresh || !stamp.exists() {
        let pkg = resolve_package(spec, cache)?;
        let current = std::fs::read_to_string(&stamp).unwrap_or_default();
        if current.trim() != pkg.stamp() {
            let deb = fetch_deb(spec, &pkg, cache)?;
            unpack(&deb, &dir, spec.label)?;
            std::fs::write(&stamp, pkg.stamp())?;
        }
    }
    load(spec, &dir)
}

fn load(spec: &KernelSpec, dir: &Path) -> Result<Kernel> {
    let release = std::fs::read_to_string(dir.join("release"))?
        .trim()
        .to_string();
    Ok(Kernel {
        label: spec.label,
        package: std::fs::read_to_string(dir.join("package"))?
            .trim()
            .to_string(),
        vmlinuz: dir.join("vmlinuz"),
        modules: dir.join("root/lib/modules").join(&release),
        release,
    })
}

struct Package {
    name: String,
    version: String,
}

impl Package {
    fn stamp(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// apt-get/apt-cache with a configuration of their own under `cache/apt/SUITE`.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(cache: &Path, suite: &str) -> Result<Apt> {
        let dir = cache.join("apt").join(suite);
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "sources.list.d",
            "preferences.d",
        ] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        std::fs::write(
            dir.join("sources.list"),
            format!("deb [signed-by={KEYRING}] {MIRROR} {suite} main\n"),
        )?;
        Ok(Apt { dir })
    }

    fn command(&self, program: &str) -> Command {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        let mut c = Command::new(program);
        for (key, value) in [
            ("Dir::Etc::sourcelist", d("sources.list")),
            ("Dir::Etc::sourceparts", d("sources.list.d")),
            ("Dir::Etc::preferences", d("preferences")),
            ("Dir::Etc::preferencesparts", d("preferences.d")),
            ("Dir::State::Lists", d("lists")),
            ("Dir::Cache", d("cache")),
            ("Acquire::Languages", "none".into()),
        ] {
            c.arg("-o").arg(format!("{key}={value}"));
        }
        if is_root() {
            // The cache is root's; apt's download user could not write to it.
            c.args(["-o", "APT::Sandbox::User=root"]);
        }
        c.arg("-q");
        c
    }
}

/// The kernel package that the suite's cloud metapackage depends on.
fn resolve_package(spec: &KernelSpec, cache: &Path) -> Result<Package> {
    let apt = Apt::new(cache, spec.suite)?;
    eprintln!("vm-test: looking up the {} cloud kernel", spec.suite);
    let out = apt.command("apt-get").arg("update").output()?;
    if !out.status.success() {
        bail!(
            "apt-get update for {} failed:\n{}",
            spec.suite,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let show = command_output(apt.command("apt-cache").args(["show", META_PACKAGE]))?;
    let depends = show
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .with_context(|| format!("{META_PACKAGE} in {} has no Depends", spec.suite))?;
    // "linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)"
    let (name, version) = depends
        .split(',')
        .next()
        .and_then(|d| d.trim().split_once(" (= "))
        .with_context(|| format!("unexpected Depends: {depends}"))?;
    Ok(Package {
        name: name.to_string(),
        version: version.trim_end_matches(')').to_string(),
    })
}

/// Downloads `pkg` from `spec`'s suite into `cache/debs` (kept: a later unpack needs no
/// network).
fn fetch_deb(spec: &KernelSpec, pkg: &Package, cache: &Path) -> Result<PathBuf> {
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    let file = debs.join(format!(
        "{}_{}_amd64.deb",
        pkg.name,
        pkg.version.replace(':', "%3a")
    ));
    if !file.exists() {
        eprintln!("vm-test: downloading {} {}", pkg.name, pkg.version);
        let apt = Apt::new(cache, spec.suite)?;
        run(apt
            .command("apt-get")
            .arg("download")
            .arg(format!("{}={}", pkg.name, pkg.version))
            .current_dir(&debs))?;
    }
    if !file.exists() {
        bail!("apt-get download did not leave {}", file.display());
    }
    Ok(file)
}

/// Unpacks the kernel package into `dir`: `vmlinuz`, `release`, and `root/lib/modules/R`
/// with every module decompressed and busybox's modules.dep/modules.alias.
fn unpack(deb: &Path, dir: &Path, label: &str) -> Result<()> {
    eprintln!("vm-test: unpacking {}", deb.display());
    let _ = std::fs::remove_dir_all(dir);
    let raw = dir.join("deb");
    std::fs::create_dir_all(&raw)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&raw))?;
    let moddir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| raw.join(d))
        .find(|d| d.is_dir())
        .context("no lib/modules in the kernel package")?;
    let release = single_entry(&moddir)?;
    if !release.starts_with(&format!("{label}.")) {
        bail!("kernel {release} is not a {label} kernel");
    }
    std::fs::rename(
        raw.join("boot").join(format!("vmlinuz-{release}")),
        dir.join("vmlinuz"),
    )?;
    let modules = dir.join("root/lib/modules");
    std::fs::create_dir_all(&modules)?;
    std::fs::rename(moddir.join(&release), modules.join(&release))?;
    std::fs::remove_dir_all(&raw)?;
    decompress_modules(&modules.join(&release))?;
    run(Command::new("busybox")
        .args(["depmod", "-b"])
        .arg(dir.join("root"))
        .arg(&release))?;
    std::fs::write(dir.join("release"), &release)?;
    Ok(())
}

fn single_entry(dir: &Path) -> Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one kernel in {}, found {names:?}", dir.display()),
    }
}

/// Debian compresses modules since 6.x; busybox modprobe wants them plain.
fn decompress_modules(dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    // Both tools replace FILE.ko.xz (.zst) with FILE.ko.
    let tools: [(&str, &[&str]); 2] = [("xz", &["xz", "-d"]), ("zst", &["zstd", "-dq", "--rm"])];
    for (ext, tool) in tools {
        let suffix = format!(".ko.{ext}");
        let wanted: Vec<&PathBuf> = files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(&suffix))
            .collect();
        for chunk in wanted.chunks(500) {
            let status = Command::new(tool[0])
                .args(&tool[1..])
                .arg("--")
                .args(chunk)
                .status()
                .with_context(|| format!("running {}", tool[0]))?;
            if !status.success() {
                bail!(
                    "{} could not decompress the modules in {}",
                    tool[0],
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// modules.dep as module -> its dependencies (paths relative to lib/modules/RELEASE).
fn read_modules_dep(path: &Path) -> Result<HashMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.trim().to_string(),
                d.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect())
}
