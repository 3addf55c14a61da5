//! `calitrace-bench datapath-profile`: where the datapath time goes, from
//! the kernel's own accounting of BPF programs (`kernel.bpf_stats_enabled`:
//! run count and run time of every program, as `bpftool prog show` prints
//! them). 64-byte UDP pod to pod, node A running the empty tc program or
//! calitrace in a few ways; per program: runs per packet and ns per run.
//! Not part of `cargo xtask bench` (it sets a sysctl of the whole machine
//! for its duration); prints a table on stdout.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result};
use calitrace_tests::calitrace;
use calitrace_tests::{Backend, Lab, Mode};
use serde_json::Value;

use crate::anchors::EmptyProgram;
use crate::live::{Iperf3Server, iperf3, start_bin, stop};

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The ids of the BPF programs process `pid` holds (its fdinfo; this
/// bpftool may not say which process holds a program).
fn prog_ids(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// (runs, ns) of each program name held by process `pid`.
fn program_stats(pid: u32) -> Result<BTreeMap<String, (u64, u64)>> {
    let ids = prog_ids(pid);
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("bpftool (apt-get install bpftool)")?;
    let progs: Value = serde_json::from_slice(&out.stdout)?;
    let mut by_name = BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        if !p["id"].as_u64().is_some_and(|id| ids.contains(&id)) {
            continue;
        }
        let e = by_name
            .entry(p["name"].as_str().unwrap_or("?").to_string())
            .or_insert((0, 0));
        e.0 += p["run_cnt"].as_u64().unwrap_or(0);
        e.1 += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    Ok(by_name)
}

/// 64-byte UDP from pod A to pod B for `secs`: packets that arrived. With
/// `CALITRACE_PROFILE_TCP` set, a TCP stream instead: then the figures are
/// per second of traffic, not per packet (GSO makes "a packet" vary).
fn udp(lab: &Lab, from: &str, to: &str, secs: u32) -> Result<f64> {
    let secs_arg = secs.to_string();
    let mut args = vec!["-c", to, "-p", "5202", "-t", &secs_arg];
    if !tcp() {
        args.extend(["-u", "-b", "0", "-l", "64"]);
    }
    let r = iperf3(lab, from, &args)?;
    if tcp() {
        let gbit = r["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e9;
        eprintln!("TCP: {gbit:.2} Gbit/s");
        return Ok(secs as f64);
    }
    let s = &r["end"]["sum"];
    Ok(s["packets"].as_f64().unwrap_or(0.0) - s["lost_packets"].as_f64().unwrap_or(0.0))
}

fn tcp() -> bool {
    std::env::var_os("CALITRACE_PROFILE_TCP").is_some()
}

fn print(label: &str, packets: f64, stats: &BTreeMap<String, (u64, u64)>) {
    let unit = if tcp() {
        println!("{label}: TCP for {packets:.0} s (per second of traffic below)");
        "second"
    } else {
        println!("{label}: {packets:.0} UDP packets arrived");
        "packet"
    };
    for (name, (runs, ns)) in stats {
        if *runs == 0 {
            continue;
        }
        println!(
            "  {name:<16} {:>9.2} runs/{unit} {:>7.1} ns/run {:>10.1} ns/{unit}",
            *runs as f64 / packets,
            *ns as f64 / *runs as f64,
            *ns as f64 / packets
        );
    }
}

pub fn datapath_profile(secs: u32) -> Result<()> {
    let was = std::fs::read_to_string(STATS)?;
    std::fs::write(STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
    let result = run(secs);
    std::fs::write(STATS, was.trim())?;
    result
}

fn run(secs: u32) -> Result<()> {
    let lab = Lab::new(Mode::Direct)?;
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let node = lab.node(0).clone();
    let ifaces = vec![a.cali.clone(), node.underlay_if.clone()];
    let _srv = Iperf3Server::start(&b.netns, 5202)?;
    let me = std::process::id();

    let empty = EmptyProgram::attach(&lab, &node.netns, &ifaces)?;
    let packets = udp(&lab, &a.netns, &b.ip, secs)?;
    print("empty tc program", packets, &program_stats(me)?);
    drop(empty);

    // A drop in node A's OUTPUT chain (matching the filter, to the address
    // it names) links the netfilter points for 10 s.
    lab.iptables(
        0,
        Backend::Legacy,
        &["-A", "OUTPUT", "-d", "10.99.99.99", "-j", "DROP"],
    )?;
    for (label, filter, drop_first) in [
        (
            "calitrace, filter matching nothing",
            Some("host 10.99.99.99"),
            false,
        ),
        ("calitrace, everything (-o json)", None, false),
        (
            "calitrace, filter matching nothing, netfilter points linked",
            Some("host 10.99.99.99"),
            true,
        ),
    ] {
        let t = start_bin(
            &calitrace::binary(),
            &node.netns,
            &filter.into_iter().collect::<Vec<_>>(),
        )?;
        let pid = t.pid().context("calitrace's pid")?;
        if drop_first {
            lab.sh(
                &node.netns,
                "ping -c 1 -W 0.2 10.99.99.99 >/dev/null 2>&1; sleep 0.5",
            )?;
        }
        let before = program_stats(pid)?;
        let packets = udp(&lab, &a.netns, &b.ip, secs)?;
        let mut stats = program_stats(pid)?;
        for (name, (runs, ns)) in &mut stats {
            let (r0, n0) = before.get(name).copied().unwrap_or((0, 0));
            *runs -= r0;
            *ns -= n0;
        }
        stop(t)?;
        print(label, packets, &stats);
    }
    Ok(())
}
