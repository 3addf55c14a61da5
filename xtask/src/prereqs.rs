//! The Debian packages the tasks need, in one place, and installing the
//! missing ones (as root, with apt-get) before anything is built; without
//! root or apt-get, one line says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

/// A Debian package and what shows it is there.
#[derive(Debug, PartialEq, Eq)]
pub struct Package {
    pub name: &'static str,
    /// Commands it provides, or absolute paths of files it installs.
    pub provides: &'static [&'static str],
    /// Also ask dpkg: another package has the same command (busybox).
    pub by_dpkg: bool,
}

const fn pkg(name: &'static str, provides: &'static [&'static str]) -> Package {
    Package {
        name,
        provides,
        by_dpkg: false,
    }
}

/// The netns lab: links and routes, both iptables backends, nftables,
/// traffic, and checks that nothing stays attached.
pub const LAB: &[Package] = &[
    pkg("iproute2", &["ip", "bridge", "tc"]),
    pkg("iptables", &["iptables-legacy", "iptables-nft"]),
    pkg("nftables", &["nft"]),
    pkg("iputils-ping", &["ping"]),
    pkg("bpftool", &["bpftool"]),
    // `wg`: the WireGuard tests' devices (in the kernel matrix's guests,
    // which share this root).
    pkg("wireguard-tools", &["wg"]),
];
/// The rest of `cargo xtask test`: the pcapng export, the real-terminal TUI.
pub const TESTS: &[Package] = &[
    pkg("tshark", &["tshark"]),
    pkg("tmux", &["tmux"]),
    // The image's arm64 binary, run by tests/tests/image.rs.
    pkg("qemu-user-static", &["qemu-aarch64-static"]),
    // A real container runtime running a pod sandbox (tests/tests/
    // containerd.rs): its pause image is a static busybox.
    pkg("containerd", &["containerd", "ctr"]),
    pkg("runc", &["runc"]),
    pkg("containernetworking-plugins", &["/usr/lib/cni/ptp"]),
    BUSYBOX_STATIC,
];
/// `cargo xtask image`: C compilers for musl and aarch64 (crates compile C;
/// the arm64 binary's link), buildah.
pub const IMAGE: &[Package] = &[
    MUSL_TOOLS,
    pkg("gcc-aarch64-linux-gnu", &["aarch64-linux-gnu-gcc"]),
    pkg("buildah", &["buildah"]),
];
/// The image's static binary alone (vm-test runs it in the guests).
pub const MUSL: &[Package] = &[MUSL_TOOLS];
const MUSL_TOOLS: Package = pkg("musl-tools", &["musl-gcc"]);
const BUSYBOX_STATIC: Package = Package {
    name: "busybox-static",
    provides: &["busybox"],
    by_dpkg: true,
};
/// The benchmark's traffic and its tcpdump anchor (besides the lab, and
/// tshark for the replay comparison).
pub const BENCH: &[Package] = &[
    pkg("iperf3", &["iperf3"]),
    pkg("tcpdump", &["tcpdump"]),
    pkg("tshark", &["tshark"]),
];
/// `cargo xtask vm-test`: qemu and virtiofsd, a static busybox for the
/// initramfs, and unpacking the kernels' packages.
pub const VM: &[Package] = &[
    pkg("qemu-system-x86", &["qemu-system-x86_64"]),
    pkg("qemu-system-common", &["/usr/lib/qemu/virtiofsd"]),
    BUSYBOX_STATIC,
    pkg("dpkg", &["dpkg-deb"]),
    pkg("apt", &["apt-get"]),
    pkg("xz-utils", &["xz"]),
    pkg("libc-bin", &["ldd"]),
];

/// `cargo xtask lint` and `manifests`: a Python virtual environment for
/// kubernetes-validate (no command of its own: asked of dpkg).
pub const LINT: &[Package] = &[Package {
    name: "python3-venv",
    provides: &["python3"],
    by_dpkg: true,
}];

/// A task whose packages `cargo xtask prereqs` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// `cargo xtask test`: the lab, tshark, tmux, and the image's.
    Test,
    /// `cargo xtask bench` as root: the lab, iperf3, tcpdump, tshark.
    Bench,
    Image,
    /// `cargo xtask vm-test`: qemu and the initramfs tools, and the lab's
    /// packages (the guests share this root).
    VmTest,
    /// `cargo xtask lint` / `manifests`: python3-venv.
    Lint,
}

impl Task {
    pub fn sets(self) -> &'static [&'static [Package]] {
        match self {
            Task::Test => &[LAB, TESTS, IMAGE],
            Task::Bench => &[LAB, BENCH],
            Task::Image => &[IMAGE],
            // The guests share this root: the lab's commands (`wg` included) too.
            Task::VmTest => &[VM, LAB, MUSL],
            Task::Lint => &[LINT],
        }
    }
}

/// `cargo xtask prereqs TASK...`.
pub fn ensure_for(tasks: &[Task]) -> Result<()> {
    let sets: Vec<&'static [Package]> = tasks
        .iter()
        .flat_map(|t| t.sets().iter().copied())
        .collect();
    ensure_and_say(&sets)
}

/// [`ensure`], saying so also when nothing is missing: a task's log shows
/// that the check ran first.
pub fn ensure_and_say(sets: &[&'static [Package]]) -> Result<()> {
    if missing(sets, &probe).is_empty() {
        let all: Vec<&str> = missing(sets, &|_| false).iter().map(|p| p.name).collect();
        eprintln!("xtask: packages present: {}", all.join(", "));
        return Ok(());
    }
    ensure(sets)
}

/// What the machine has, as the plan sees it.
pub enum Probe<'a> {
    Command(&'a str),
    File(&'a str),
    Installed(&'a str),
}

/// What to do about the missing packages.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Nothing,
    /// Install these; the line to print first.
    Install(Vec<&'static str>, String),
    /// Stop before building, with this line.
    Stop(String),
}

/// The packages of `sets` that `has` does not find, each once, in order.
pub fn missing(sets: &[&'static [Package]], has: &dyn Fn(Probe) -> bool) -> Vec<&'static Package> {
    let mut out: Vec<&'static Package> = Vec::new();
    for p in sets.iter().flat_map(|s| s.iter()) {
        let there = p.provides.iter().all(|w| {
            has(if w.starts_with('/') {
                Probe::File(w)
            } else {
                Probe::Command(w)
            })
        }) && (!p.by_dpkg || has(Probe::Installed(p.name)));
        if !there && !out.iter().any(|o| o.name == p.name) {
            out.push(p);
        }
    }
    out
}

/// What to do, given what is missing, whether this runs as root and
/// whether apt-get is there.
pub fn plan(missing: &[&'static Package], root: bool, apt: bool) -> Plan {
    if missing.is_empty() {
        return Plan::Nothing;
    }
    let shown: Vec<String> = missing
        .iter()
        .map(|p| {
            let what: Vec<&str> = p.provides.iter().map(|w| base_name(w)).collect();
            format!("{} ({})", p.name, what.join(", "))
        })
        .collect();
    let shown = shown.join(", ");
    let names: Vec<&'static str> = missing.iter().map(|p| p.name).collect();
    let command = format!(
        "apt-get install -y --no-install-recommends {}",
        names.join(" ")
    );
    if !apt {
        Plan::Stop(format!(
            "xtask: missing {shown}, and there is no apt-get here: install them (on Debian: {command})"
        ))
    } else if !root {
        Plan::Stop(format!(
            "xtask: missing {shown}: run as root, or first: sudo {command}"
        ))
    } else {
        Plan::Install(names, format!("xtask: installing {shown} with apt-get"))
    }
}

fn base_name(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

/// Installs what `sets` need and this machine lacks, or fails with one line.
pub fn ensure(sets: &[&'static [Package]]) -> Result<()> {
    let missing = missing(sets, &probe);
    match plan(&missing, crate::is_root(), which("apt-get").is_some()) {
        Plan::Nothing => Ok(()),
        Plan::Stop(line) => {
            // One line, not an error with its chain (or a backtrace).
            eprintln!("{line}");
            std::process::exit(1);
        }
        Plan::Install(names, line) => {
            eprintln!("{line}");
            install(&names)?;
            let left = self::missing(sets, &probe);
            if !left.is_empty() {
                let names: Vec<&str> = left.iter().map(|p| p.name).collect();
                bail!("xtask: still missing after apt-get: {}", names.join(", "));
            }
            Ok(())
        }
    }
}

/// The package lists are refreshed once per run: a fresh machine has none.
static UPDATED: AtomicBool = AtomicBool::new(false);

fn install(names: &[&str]) -> Result<()> {
    if !UPDATED.swap(true, Ordering::SeqCst) {
        crate::run(apt().args(["update", "-qq"]))?;
    }
    crate::run(
        apt()
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(names),
    )
}

fn apt() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn probe(p: Probe) -> bool {
    match p {
        Probe::Command(c) => which(c).is_some(),
        Probe::File(f) => Path::new(f).exists(),
        Probe::Installed(name) => Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", name])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b" installed")),
    }
}

/// Where commands are looked up besides $PATH (a user's PATH often lacks sbin).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// First `name` in the PATH, then in the system's bin and sbin directories.
pub fn which(name: &str) -> Option<PathBuf> {
    let env_path = std::env::var("PATH").unwrap_or_default();
    env_path
        .split(':')
        .chain(SYSTEM_PATH.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has_all_but<'a>(absent: &'a [&'a str]) -> impl Fn(Probe) -> bool + 'a {
        move |p| match p {
            Probe::Command(w) | Probe::File(w) | Probe::Installed(w) => !absent.contains(&w),
        }
    }

    #[test]
    fn a_missing_command_names_its_package_and_the_line_says_so() {
        let missing = missing(&[LAB, TESTS], &has_all_but(&["ping"]));
        assert_eq!(missing, [&LAB[3]]);
        assert_eq!(
            plan(&missing, true, true),
            Plan::Install(
                vec!["iputils-ping"],
                "xtask: installing iputils-ping (ping) with apt-get".into()
            )
        );
    }

    #[test]
    fn each_package_once_in_the_order_of_the_sets() {
        let has = has_all_but(&["tshark", "iptables-nft", "musl-gcc"]);
        let names: Vec<&str> = missing(&[LAB, TESTS, BENCH, IMAGE], &has)
            .iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["iptables", "tshark", "musl-tools"]);
        assert!(missing(&[LAB, TESTS, IMAGE], &has_all_but(&[])).is_empty());
        assert_eq!(plan(&[], false, false), Plan::Nothing);
    }

    #[test]
    fn a_file_or_dpkg_can_be_what_is_missing() {
        let vm = |absent: &'static [&'static str]| {
            missing(&[VM], &has_all_but(absent))
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(vm(&["/usr/lib/qemu/virtiofsd"]), ["qemu-system-common"]);
        // The dynamic busybox has the command too.
        assert_eq!(vm(&["busybox-static"]), ["busybox-static"]);
    }

    #[test]
    fn without_root_or_apt_get_the_line_says_what_to_install() {
        let missing = missing(&[LAB, TESTS], &has_all_but(&["ping", "tmux"]));
        assert_eq!(
            plan(&missing, false, true),
            Plan::Stop(
                "xtask: missing iputils-ping (ping), tmux (tmux): run as root, or first: \
                 sudo apt-get install -y --no-install-recommends iputils-ping tmux"
                    .into()
            )
        );
        let Plan::Stop(line) = plan(&missing, true, false) else {
            panic!("no apt-get: stop")
        };
        assert!(line.contains("there is no apt-get here"), "{line}");
        assert!(!line.contains('\n'));
    }

    /// Commands of every machine of this kind, not installed by a task:
    /// Debian's required and important packages (coreutils, tar,
    /// util-linux, mount, procps), and the machine image's kubectl.
    const BASE: &[&str] = &[
        "sh",
        "true",
        "tar",
        "chmod",
        "chown",
        "chroot",
        "sha256sum",
        "mount",
        "umount",
        "unshare",
        "nsenter",
        "setpriv",
        "pkill",
        "kubectl",
    ];

    /// The `Command::new("...")` names in the Rust files under `dir`.
    fn commands_run(dir: &Path, found: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                commands_run(&p, found);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let src = std::fs::read_to_string(&p).unwrap();
                for (i, _) in src.match_indices("Command::new(\"") {
                    let rest = &src[i + "Command::new(\"".len()..];
                    if let Some(end) = rest.find('"') {
                        found.push(rest[..end].to_string());
                    }
                }
            }
        }
    }

    #[test]
    fn every_command_the_tests_and_the_bench_run_is_installed_by_their_task() {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
        let mut run = Vec::new();
        commands_run(&tests, &mut run);
        assert!(run.iter().any(|c| c == "ip") && run.len() > 20, "{run:?}");
        // The optional profiler of the bench (CALITRACE_BENCH_PERF=DIR).
        let optional = ["perf"];
        let sets: Vec<&[Package]> = [Task::Test, Task::Bench]
            .iter()
            .flat_map(|t| t.sets().iter().copied())
            .collect();
        let provided = |c: &str| {
            sets.iter()
                .flat_map(|s| s.iter())
                .any(|p| p.provides.contains(&c))
        };
        let unprovided: Vec<&String> = run
            .iter()
            .filter(|c| {
                !provided(c) && !BASE.contains(&c.as_str()) && !optional.contains(&c.as_str())
            })
            .collect();
        assert!(
            unprovided.is_empty(),
            "commands the tests run that no package of `cargo xtask test` or `bench` installs: {unprovided:?}"
        );
    }
}
