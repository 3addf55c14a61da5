//! `calitrace-bench dataplane`: what the readers of Calico's eBPF dataplane
//! cost per drop they explain. The Felix stand-in (`calitrace_tests::felix`)
//! drops UDP at pod B0's `cali*` of the lab (tc egress, towards the pod),
//! counting each drop in Calico's counters map (and, for policy drops, the
//! rule's counter), pinned as Felix pins them; after each drop that pod
//! A0's thread sent, the thread asks
//! `CalicoEbpf::explain` why, as the live pipeline does for a tc drop, and
//! its CPU time (user and system: the map reads are system calls) is
//! measured around that call alone.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use calitrace_tests::felix::{self, FelixStandin, Hook, StandinCfg};
use calitrace_tests::lab::spawn_in_netns;
use calitrace_tests::{Lab, Mode};
use tracer_user::dataplane::calico_ebpf::CalicoEbpf;

use crate::util::{CpuClock, Row, median, pin_to_one_cpu};

const MATCH_ID: u64 = 4_242_424_242;
/// Calico's "dropped by policy" and "dropped: packets with unknown route".
const POLICY: u32 = 4;
const RT_UNKNOWN: u32 = 12;
/// Calico's counters key: tc egress.
const HOOK_EGRESS: u32 = 1;

pub fn dataplane_cost(drops: usize) -> Result<()> {
    let lab = Lab::new(Mode::Direct)?;
    let pid = std::process::id();
    let root = PathBuf::from(format!("/sys/fs/bpf/calitrace-bench-{pid}"));
    let (maps, policy) = (
        root.join("globals"),
        std::env::temp_dir().join(format!("calitrace-bench-policy-{pid}")),
    );
    felix::policy_debug(&policy, &lab.pod(1, 0).cali, MATCH_ID)?;
    let result = measure_all(&lab, &maps, &policy, drops);
    let _ = std::fs::remove_dir_all(&policy);
    let _ = std::fs::remove_dir(&root);
    result
}

fn measure_all(lab: &Lab, maps: &Path, policy: &Path, drops: usize) -> Result<()> {
    let (a, b) = (lab.pod(0, 0), lab.pod(1, 0));
    let cfg = |reason| StandinCfg {
        reason,
        match_id: MATCH_ID,
        hook: HOOK_EGRESS,
        proto: 17,
        ..Default::default()
    };
    let node_b = &lab.node(1).netns;
    let mut standin = FelixStandin::attach(node_b, &b.cali, Hook::Egress, maps, cfg(0))?;
    let target = Target {
        ifindex: lab.ifindex(node_b, &b.cali)?,
        iface: b.cali.clone(),
        dst: b.ip.clone(),
    };
    // Neighbours resolved before anything is measured.
    ensure!(lab.ping(a, &b.ip, 1), "pod A0 does not reach pod B0");
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
            target: target.clone(),
        };
        let (per_drop, user) = spawn_in_netns(&a.netns, move || explain_each(reader, each))?
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

/// Where the stand-in drops: pod B0's `cali*` on node B, and its address.
#[derive(Clone)]
struct Target {
    ifindex: u32,
    iface: String,
    dst: String,
}

struct Each {
    hook: Option<u32>,
    named: bool,
    /// Datagrams sent before they are explained.
    burst: usize,
    drops: usize,
    target: Target,
}

/// On one CPU: `drops` datagrams the stand-in drops, `burst` at a time,
/// then each explained; the CPU seconds per drop of each burst's `explain`s,
/// and of user CPU alone, per drop over all.
fn explain_each(mut reader: CalicoEbpf, each: Each) -> Result<(Vec<f64>, f64)> {
    let cpu = pin_to_one_cpu();
    let Target {
        ifindex,
        iface,
        dst,
    } = &each.target;
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect((dst.as_str(), 9))
        .with_context(|| format!("to pod B0 at {dst}"))?;
    let mut took = Vec::with_capacity(each.drops / each.burst);
    let mut user = 0.0;
    for _ in 0..each.drops / each.burst {
        for _ in 0..each.burst {
            sock.send(b"calitrace bench")?;
        }
        let (t, u) = (CpuClock::start(), user_cpu_s());
        let explained: Vec<_> = (0..each.burst)
            .map(|_| reader.explain(*ifindex, each.hook, cpu as u16, Some(iface), false))
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
