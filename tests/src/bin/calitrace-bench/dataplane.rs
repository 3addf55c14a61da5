//! `calitrace-bench dataplane`: what the readers of Calico's eBPF dataplane
//! cost per drop they explain. The Felix stand-in (`calitrace_tests::felix`)
//! drops UDP on a veth of a namespace of this bench's, counting each drop in
//! Calico's counters map (and, for policy drops, the rule's counter), pinned
//! as Felix pins them; after each drop this thread asks
//! `CalicoEbpf::explain` why, as the live pipeline does for a tc drop, and
//! its CPU time (user and system: the map reads are system calls) is
//! measured around that call alone.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};
use calitrace_tests::felix::{self, FelixStandin, Hook, StandinCfg};
use calitrace_tests::lab::spawn_in_netns;
use tracer_user::dataplane::calico_ebpf::CalicoEbpf;

use crate::util::{CpuClock, Row, median, pin_to_one_cpu};

const IFACE: &str = "calidp0";
const PEER: &str = "calidp1";
/// Where the datagrams go: an address of the veth's net that only a
/// permanent neighbour entry answers for.
const DST: &str = "10.251.0.6";
const MATCH_ID: u64 = 4_242_424_242;
/// Calico's "dropped by policy" and "dropped: packets with unknown route".
const POLICY: u32 = 4;
const RT_UNKNOWN: u32 = 12;
/// Calico's counters key: tc egress.
const HOOK_EGRESS: u32 = 1;

/// A namespace with a veth pair whose far end has a permanent neighbour
/// entry (no ARP: every datagram leaves from the sending thread's CPU).
struct Netns(String);

impl Netns {
    fn new() -> Result<Netns> {
        let ns = Netns(format!("ctlab-{}-dp", std::process::id()));
        ns.ip(&["netns", "add", &ns.0])?;
        let n = &ns.0;
        for args in [
            vec![
                "-n", n, "link", "add", IFACE, "type", "veth", "peer", "name", PEER,
            ],
            vec!["-n", n, "addr", "add", "10.251.0.1/29", "dev", IFACE],
            vec!["-n", n, "addr", "add", "10.251.0.2/29", "dev", PEER],
            vec!["-n", n, "link", "set", IFACE, "up"],
            vec!["-n", n, "link", "set", PEER, "up"],
            vec![
                "-n",
                n,
                "neigh",
                "replace",
                DST,
                "lladdr",
                "02:00:00:00:00:06",
                "dev",
                IFACE,
                "nud",
                "permanent",
            ],
        ] {
            ns.ip(&args)?;
        }
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("ip").args(args).output().context("ip")?;
        if !out.status.success() {
            bail!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.ip(&["netns", "del", &self.0]);
    }
}

pub fn dataplane_cost(drops: usize) -> Result<()> {
    let ns = Netns::new()?;
    let root = PathBuf::from(format!(
        "/sys/fs/bpf/calitrace-bench-{}",
        std::process::id()
    ));
    let (maps, policy) = (
        root.join("globals"),
        std::env::temp_dir().join(format!("calitrace-bench-policy-{}", std::process::id())),
    );
    felix::policy_debug(&policy, IFACE, MATCH_ID)?;
    let result = measure_all(&ns, &maps, &policy, drops);
    let _ = std::fs::remove_dir_all(&policy);
    let _ = std::fs::remove_dir(&root);
    result
}

fn measure_all(ns: &Netns, maps: &Path, policy: &Path, drops: usize) -> Result<()> {
    let cfg = |reason| StandinCfg {
        reason,
        match_id: MATCH_ID,
        hook: HOOK_EGRESS,
        proto: 17,
        ..Default::default()
    };
    let mut standin = FelixStandin::attach(&ns.0, IFACE, Hook::Egress, maps, cfg(POLICY))?;
    for (label, reason, hook, named, burst) in [
        (
            "a policy drop, its rule named",
            POLICY,
            Some(HOOK_EGRESS),
            true,
            1,
        ),
        ("a policy drop, tc hook unknown", POLICY, None, true, 1),
        (
            "another drop (unknown route)",
            RT_UNKNOWN,
            Some(HOOK_EGRESS),
            false,
            1,
        ),
        (
            "policy drops in bursts of 32",
            POLICY,
            Some(HOOK_EGRESS),
            true,
            32,
        ),
    ] {
        standin.set(cfg(reason))?;
        let reader = CalicoEbpf::open(maps, policy)
            .map_err(|e| anyhow!(e))?
            .ok_or_else(|| anyhow!("no counters map pinned in {}", maps.display()))?;
        let each = Each {
            hook,
            named,
            burst,
            drops,
        };
        let (per_drop, user) = spawn_in_netns(&ns.0, move || explain_each(reader, each))?
            .join()
            .map_err(|_| anyhow!("the measuring thread panicked"))???;
        let us: Vec<f64> = per_drop.iter().map(|s| s * 1e6).collect();
        let m = median(&us);
        Row::new(
            "dataplane",
            format!("Calico eBPF reader: CPU per drop explained, {label}"),
            m,
            "µs",
        )
        .target("<= 1 µs", m <= 1.0)
        .note(format!(
            "{drops} drops by the Felix stand-in (v3.32.1 maps), {}; user + system CPU of `explain` alone (its reads of Felix's maps are bpf system calls); mean {:.2} µs, of it user CPU about {:.2} µs",
            if burst == 1 { "each explained as it happens".to_string() } else { format!("{burst} at a time, then explained (as a ring read of a burst)") },
            us.iter().sum::<f64>() / us.len() as f64,
            user * 1e6
        ))
        .emit();
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Each {
    hook: Option<u32>,
    named: bool,
    /// Datagrams sent before they are explained.
    burst: usize,
    drops: usize,
}

/// On one CPU: `drops` datagrams the stand-in drops, `burst` at a time,
/// then each explained; the CPU seconds per drop of each burst's `explain`s,
/// and of user CPU alone, per drop over all.
fn explain_each(mut reader: CalicoEbpf, each: Each) -> Result<(Vec<f64>, f64)> {
    let cpu = pin_to_one_cpu();
    let name = std::ffi::CString::new(IFACE)?;
    // SAFETY: a NUL-terminated name; the index is looked up in this
    // thread's network namespace (sysfs shows the bench's own).
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no {IFACE} in the bench's namespace");
    }
    let sock = UdpSocket::bind("10.251.0.1:0")?;
    let mut took = Vec::with_capacity(each.drops / each.burst);
    let mut user = 0.0;
    for _ in 0..each.drops / each.burst {
        for _ in 0..each.burst {
            sock.send_to(b"calitrace bench", (DST, 9))?;
        }
        let (t, u) = (CpuClock::start(), user_cpu_s());
        let explained: Vec<_> = (0..each.burst)
            .map(|_| reader.explain(ifindex, each.hook, cpu as u16, Some(IFACE), false))
            .collect();
        took.push(t.elapsed_s() / each.burst as f64);
        user += user_cpu_s() - u;
        for d in explained {
            let Some(d) = d else {
                bail!("a drop of the stand-in's was not explained");
            };
            if each.named && d.rule_id.as_deref() != Some(&MATCH_ID.to_string()) {
                bail!("the policy drop's rule was not named: {d:?}");
            }
        }
    }
    Ok((took, user / each.drops as f64))
}

/// User CPU time of this thread (the kernel's split of its run time
/// between user and system, tick-sampled: meaningful summed over many
/// calls).
fn user_cpu_s() -> f64 {
    // SAFETY: a zeroed rusage is valid to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage to fill in.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_utime.tv_sec as f64 + ru.ru_utime.tv_usec as f64 / 1e6
}
