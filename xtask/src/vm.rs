//! `cargo xtask vm-test`: the kernel matrix. Boots Debian's cloud kernels (5.10, 6.1,
//! 6.12) under qemu and runs `calitrace probes` and the integration tests inside each.
//!
//! - Kernels come from Debian through a private apt configuration (`kernel.rs`) and
//!   stay unpacked in the cache (`~/.cache/calitrace/vm`, or `$CALITRACE_VM_CACHE`).
//! - The guest's root is the host's own, shared read-only over virtiofs under a tmpfs
//!   overlay: the same ip, iptables, nft, tshark, ... as the host tests use, and
//!   calitrace and the test executables at their host paths. A small initramfs per
//!   kernel (`image.rs`, `cpio.rs`, `tests/vm/init.sh`) mounts it.
//! - `tests/vm/suite.sh` runs every test in a process of its own and frames its output
//!   with markers on the second serial port; `report.rs` turns that into the matrix
//!   (a test that printed `SKIP <test>: <why>` counts as skipped, not passed) and
//!   prints the output of what failed.

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

/// What the guests run: calitrace and the test executables (host paths).
struct Payload {
    calitrace: PathBuf,
    test_exes: Vec<PathBuf>,
}

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// Kernels to test: 5.10, 6.1, 6.12 or all (comma-separated or repeated).
    #[arg(long, default_value = "all", value_delimiter = ',')]
    kernel: Vec<String>,
    /// Look up the suites' newest kernel packages instead of using the cached ones.
    #[arg(long)]
    refresh: bool,
    /// Kernels booted at the same time, sharing the host's CPUs (default: all of them;
    /// each guest gets host CPUs / jobs virtual CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// Seconds one kernel's boot and suite may take in all.
    #[arg(long, default_value_t = 3000)]
    timeout: u64,
    /// Seconds one test may take. Under emulation, with the guests sharing the
    /// host's cores, a cluster test on 6.1 took 212 s (two agents starting).
    #[arg(long, default_value_t = 450)]
    test_timeout: u64,
    /// Test a debug build of calitrace instead of the image's static release
    /// binary. Under emulation a debug calitrace takes several times longer to
    /// start (BTF parsing, program loading), which is most of each test's time.
    #[arg(long)]
    debug: bool,
    /// Run every test of `calitrace-tests` instead of the kernel-sensitive subset
    /// (KERNEL_SENSITIVE in xtask/src/vm.rs); `--skip` still applies.
    #[arg(long)]
    all_tests: bool,
    /// qemu's -cpu model for the guests. Without cx16: qemu 7.2's TCG emulates
    /// CMPXCHG16B wrongly enough that 6.12's SLUB corrupts memory at boot.
    #[arg(long, default_value = "max,-cx16")]
    cpu: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    mem: u32,
    /// Leave out the tests whose `suite::name` contains one of these (comma-separated
    /// or repeated; `--skip ''` leaves out nothing). By default the TUI tests: they need
    /// no particular kernel, and their redraw deadlines do not hold under emulation.
    #[arg(long, value_delimiter = ',', default_value = "tui::")]
    skip: Vec<String>,
    /// Run only the tests whose `suite::name` contains one of these (out of all
    /// tests, not only the default subset).
    filters: Vec<String>,
}

/// Kernels a test of the default subset runs on (labels of [`KERNELS`]).
type On = &'static [&'static str];
const ALL: On = &["5.10", "6.1", "6.12"];
/// The oldest (no drop reasons, tc through clsact, xtables' older entry point,
/// the trace table not owned by its socket) and the newest (TCX, BPF netfilter
/// links) of the matrix.
const ENDS: On = &["5.10", "6.12"];
/// Drop locations before 5.17, drop reasons after.
const LOCATIONS_AND_REASONS: On = &["5.10", "6.1"];
const BOOKWORM: On = &["6.1", "6.12"];
const LINKS: On = &["6.12"];
const MIDDLE: On = &["6.1"];

/// The tests the lane runs by default (`suite::name`, kernels): those whose
/// outcome depends on the kernel (tc attach method, drop reasons, where netfilter
/// frees drops, netfilter links, nf_tables netlink, fexit/kprobes), one or two per
/// mechanism, each on the kernels where that mechanism differs. Tests of the lab
/// itself, of the command line and of the TUI need no particular kernel and stay
/// with the host run (`--all-tests` runs them too, on every kernel). Each test
/// takes 15-50 s in a guest sharing a 2-core host with two others, three times
/// that while other builds run (2026-12-07:
/// 32 tests on every kernel took 1465 s on 6.1, and CI over 70 minutes in all;
/// this list then took 465 s on 5.10, 561 s on 6.1 and 455 s on 6.12 with
/// nothing else running, before two tests moved from 6.1 to 6.12):
/// a kernel whose side of a test another kernel of the matrix or the host
/// (6.18: TCX, links, drop reasons, no fexit) already covers leaves it out.
pub const KERNEL_SENSITIVE: &[(&str, On)] = &[
    // What the kernel offers, as `calitrace probes` reports it.
    ("foundation::probes_say_what_this_kernel_offers", ALL),
    // Drop reasons (or, before 5.17, the location) per kind of fault.
    // (Two of them on 6.12, the others on 6.1: 6.1's guest is the slowest.)
    ("foundation::legacy_forward_policy_drop", ENDS),
    ("foundation::no_route_on_sender", ENDS),
    ("foundation::strict_rp_filter", LOCATIONS_AND_REASONS),
    (
        "foundation::proxy_arp_disabled_on_sender_cali",
        LOCATIONS_AND_REASONS,
    ),
    (
        "foundation::missing_pod_route_on_receiving_node_loops",
        LOCATIONS_AND_REASONS,
    ),
    // Netfilter attribution, both backends, exact (fexit on each entry
    // point's signature) or inferred; where nf_tables frees its drops.
    ("netfilter::legacy_rule_drop", ALL),
    ("netfilter::iptables_nft_rule_drop", ALL),
    ("netfilter::native_nft_chain_at_its_own_priority", ENDS),
    ("netfilter::calico_in_legacy_nft_drops", ENDS),
    (
        "netfilter::healthy_traffic_with_rules_in_both_backends",
        MIDDLE,
    ),
    // nftables' trace (every table on the node, with or without a table
    // walk), Calico's nftables dataplane, and the trace table's cleanup
    // (owned by its socket from 5.12, swept at the next start before).
    ("tables::firewalld_rejects_what_calico_allowed", ENDS),
    (
        "tables::calico_nftables_policy_drop_names_the_policy",
        BOOKWORM,
    ),
    ("tables::the_trace_table_goes_with_a_killed_calitrace", ENDS),
    // An ARP drop in Calico's calico-arp table (NF_ARP_OUT; before 5.17
    // named by its location).
    (
        "tables::calicos_arp_table_keeping_the_host_from_claiming_a_pods_address_is_benign",
        LOCATIONS_AND_REASONS,
    ),
    // The nf_tables inventory over netlink.
    ("inventory::iptables_nft_rules_live_in_nf_tables", ENDS),
    // BPF netfilter links (6.4+), or why not; with fexit beside them (6.12:
    // the host has links but no fexit).
    ("nf_links::probes_report_the_links_or_why_not", ALL),
    (
        "nf_links::input_drop_gets_its_hook_first_and_from_the_links_legacy",
        LINKS,
    ),
    (
        "nf_links::a_raw_prerouting_drop_is_not_taken_for_input_nft",
        LINKS,
    ),
    (
        "nf_links::links_only_while_netfilter_drops_need_them",
        LINKS,
    ),
    (
        "nf_links::a_forward_drop_shows_which_tables_it_got_past",
        LINKS,
    ),
    ("nf_links::links_go_away_when_calitrace_is_killed", LINKS),
    // A recording made on a kernel without drop reasons replays the same.
    (
        "recording::replay_shows_what_live_tracing_showed",
        &["5.10"],
    ),
    // Tunnels decoded by tc on the uplink (the host kernel has no ipip module).
    (
        "encap::vxlan_uplink_packets_are_the_pods_packets_with_the_outer_headers",
        ENDS,
    ),
    (
        "encap::ipip_uplink_packets_are_the_pods_packets_and_a_drop_after_the_tunnel_keeps_the_hop",
        BOOKWORM,
    ),
    // The cluster view across kernels: agents, merge, the underlay (IPIP only there).
    (
        "cluster::healthy_vxlan_traffic_is_matched_across_nodes_by_its_inner_headers",
        LOCATIONS_AND_REASONS,
    ),
    (
        "cluster::fabric_dropping_ipip_is_an_underlay_drop_named_ipip",
        BOOKWORM,
    ),
    // Benign frees named by this kernel's reasons (or, before 5.17, locations), MLD
    // behind its hop-by-hop header: a healthy node with IPv6 on reports nothing.
    (
        "noise::a_healthy_vxlan_node_with_ipv6_reports_no_drop_and_no_diagnosis",
        ALL,
    ),
    // Rule text as nft and iptables print it, from this kernel's nf_tables.
    ("nft_text::rule_text_reads_as_nft_lists_it", ENDS),
    // WireGuard (this host's kernel has none): Calico's device traced like the
    // other tunnels (an L3 device; the uplink's UDP 51820), and doctor's
    // reading of its peers over WireGuard's generic netlink. tc on veth with
    // no false drops is covered by the tests above (noise, cluster, encap).
    (
        "wireguard::wireguard_cali_is_traced_like_the_other_tunnels",
        ENDS,
    ),
    (
        "wireguard::doctor_reads_wireguard_as_the_kernel_reports_it",
        ENDS,
    ),
    // A packet WireGuard refuses (source outside the peer's allowed IPs),
    // told by the device's counters, in the cluster view: node B's, never
    // the underlay's.
    (
        "wireguard::a_source_outside_the_peers_allowed_ips_is_the_receiving_nodes_wireguard_refusal",
        MIDDLE,
    ),
];

/// The default subset's tests for one kernel.
fn kernel_sensitive_on(label: &str) -> Vec<String> {
    KERNEL_SENSITIVE
        .iter()
        .filter(|(_, on)| on.contains(&label))
        .map(|(name, _)| name.to_string())
        .collect()
}

pub fn vm_test(args: VmTestArgs) -> Result<()> {
    let specs = select_kernels(&args.kernel)?;
    if !crate::is_root() {
        bail!("vm-test shares the host's root with the guests through virtiofsd: run it as root");
    }
    let started = Instant::now();
    host::ensure_tools()?;
    let cache = cache_dir();
    let payload = build_payload(!args.debug)?;
    let kernels = specs
        .iter()
        .map(|s| kernel::prepare(s, &cache, args.refresh))
        .collect::<Result<Vec<_>>>()?;
    let jobs = args.jobs.unwrap_or(kernels.len()).clamp(1, kernels.len());
    let cfg = BootConfig {
        cpu_model: args.cpu,
        cpus: (host_cpus() / jobs).max(1),
        mem_mib: args.mem,
        timeout: Duration::from_secs(args.timeout),
    };
    let suite = Suite {
        payload,
        test_timeout: args.test_timeout,
        subset: !args.all_tests && args.filters.is_empty(),
        filters: args.filters,
        skip: args.skip.into_iter().filter(|s| !s.is_empty()).collect(),
    };
    eprintln!(
        "vm-test: ready after {:.0} s; booting {} kernel(s), {jobs} at a time, {} CPU(s) each",
        started.elapsed().as_secs_f64(),
        kernels.len(),
        cfg.cpus
    );
    let runs = run_all(&kernels, &suite, &cache, &cfg, jobs);
    report::print(&runs);
    println!("vm-test: {:.0} s in all", started.elapsed().as_secs_f64());
    if !runs.iter().all(KernelRun::ok) {
        bail!("vm-test: not everything passed (output above)");
    }
    Ok(())
}

/// What each guest runs.
struct Suite {
    payload: Payload,
    test_timeout: u64,
    filters: Vec<String>,
    /// Only [`KERNEL_SENSITIVE`]'s tests for each kernel (else all that the
    /// filters let through).
    subset: bool,
    skip: Vec<String>,
}

impl Suite {
    /// Exact `suite::name`s to run on this kernel (empty: all that the filters
    /// let through).
    fn only(&self, k: &Kernel) -> Vec<String> {
        if self.subset {
            kernel_sensitive_on(k.label)
        } else {
            Vec::new()
        }
    }

    fn skipped(&self, name: &str) -> bool {
        self.skip.iter().any(|s| name.contains(s.as_str()))
    }

    /// The plan file the guest reads (sh syntax; host paths, which the guest sees too).
    fn plan(&self, k: &Kernel) -> String {
        let exes: Vec<String> = self
            .payload
            .test_exes
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        [
            "# written by cargo xtask vm-test".to_string(),
            format!(
                "SUITE='{}'",
                crate::root().join("tests/vm/suite.sh").display()
            ),
            format!("MODULES='{}'", k.modules.display()),
            format!("CALITRACE_BIN='{}'", self.payload.calitrace.display()),
            format!("TEST_EXES='{}'", exes.join(" ")),
            format!("TEST_TIMEOUT={}", self.test_timeout),
            format!("FILTER='{}'", self.filters.join(" ")),
            format!("ONLY='{}'", self.only(k).join(" ")),
            format!("SKIP='{}'", self.skip.join(" ")),
            format!("FORWARDED_ENV='{}'", forwarded_env().join(" ")),
            String::new(),
        ]
        .join("\n")
    }
}

/// `NAME=VALUE` for the host's environment variables that the tests should see too:
/// RUST_BACKTRACE, RUST_LOG and CALITRACE_TEST_* (e.g. CALITRACE_TEST_DUMP=1).
fn forwarded_env() -> Vec<String> {
    std::env::vars()
        .filter(|(k, _)| {
            k == "RUST_BACKTRACE" || k == "RUST_LOG" || k.starts_with("CALITRACE_TEST_")
        })
        .filter(|(k, v)| !format!("{k}{v}").contains(['\'', ' ', '\n']))
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
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

/// calitrace and the test executables of `calitrace-tests` (built, not run). The
/// release calitrace is the image's static binary: what runs on the nodes, and
/// already built where `cargo xtask test` or `image` ran before (CI).
fn build_payload(release: bool) -> Result<Payload> {
    let calitrace = if release {
        crate::image::static_binary()?
    } else {
        crate::build(false)?
    };
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
    Ok(Payload {
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
    suite: &Suite,
    cache: &Path,
    cfg: &BootConfig,
    jobs: usize,
) -> Vec<KernelRun> {
    let queue = Mutex::new(kernels.iter().rev().collect::<Vec<_>>());
    let runs = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    // (Not `while let`: that would hold the lock for the whole run.)
                    let Some(k) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let run = run_one(k, suite, cache, cfg).unwrap_or_else(|e| {
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

fn run_one(k: &Kernel, suite: &Suite, cache: &Path, cfg: &BootConfig) -> Result<KernelRun> {
    let dir = run_dir(k, cache);
    std::fs::create_dir_all(&dir)?;
    let initrd = image::initramfs(k, &cache.join("kernels").join(k.label))?;
    let plan = dir.join("plan");
    std::fs::write(&plan, suite.plan(k))?;
    eprintln!("[{}] booting {} ({})", k.label, k.release, k.package);
    let mut progress = report::Reader::new(k.label);
    let boot = qemu::boot(&k.vmlinuz, &initrd, &plan, &dir, cfg, |line| {
        if let Some(line) = progress.feed(line) {
            eprintln!("{line}");
        }
    })?;
    let mut results = report::parse(&boot.results);
    if results.done {
        // A test of the default subset that the executables no longer have
        // (renamed, removed) fails rather than silently dropping out.
        for name in &suite.only(k) {
            if !results.tests.iter().any(|t| &t.name == name) && !suite.skipped(name) {
                results.tests.push(report::Piece::missing(name));
            }
        }
    }
    Ok(KernelRun {
        label: k.label.to_string(),
        package: k.package.clone(),
        results,
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
        results: report::Results::default(),
        timed_out: false,
        wall: Duration::ZERO,
        results_log: dir.join("results.log"),
        console_log: dir.join("console.log"),
    }
}

fn run_dir(k: &Kernel, cache: &Path) -> PathBuf {
    cache.join("runs").join(k.label)
}

#[cfg(test)]
mod tests {
    /// A renamed test would otherwise only show up as a failure of the lane.
    #[test]
    fn every_kernel_sensitive_test_exists() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (name, _) in super::KERNEL_SENSITIVE {
            let (suite, test) = name.split_once("::").expect("suite::test");
            let file = root.join("tests/tests").join(format!("{suite}.rs"));
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                text.contains(&format!("fn {test}()")),
                "{name}: no such test in {}",
                file.display()
            );
        }
    }

    #[test]
    fn every_kernel_sensitive_test_runs_on_a_kernel_of_the_matrix() {
        for (name, on) in super::KERNEL_SENSITIVE {
            assert!(!on.is_empty(), "{name} runs nowhere");
            for label in *on {
                assert!(
                    super::KERNELS.iter().any(|k| k.label == *label),
                    "{name}: no kernel {label} in the matrix"
                );
            }
        }
        let per_kernel: Vec<usize> = super::KERNELS
            .iter()
            .map(|k| super::kernel_sensitive_on(k.label).len())
            .collect();
        assert!(per_kernel.iter().all(|n| *n > 0), "{per_kernel:?}");
    }
}
