//! `calitrace-bench SECTION`: the measurements behind `cargo xtask bench`.
//!
//! Each section prints its figures as JSON lines on stdout (progress on
//! stderr); `cargo xtask bench` runs the sections one process at a time and
//! renders the table. Nothing here runs in `cargo test`: this is a binary.

mod anchors;
mod cluster;
mod datapath;
mod dataplane;
mod k8s_scale;
mod live;
mod live_cpu;
mod profile;
mod replay_tools;
mod userspace;
mod util;

use std::path::PathBuf;

use anyhow::{Result, bail};

const USAGE: &str = "usage: calitrace-bench pipeline|replay|cluster|memory-flows|memory-churn|datapath|datapath-profile|lost|memory-live|attach|live-cpu|dataplane|k8s-scale [--quick] [--dir DIR]";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let dir = arg("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir)?;
    let Some(section) = args.first() else {
        bail!("{USAGE}");
    };
    let reps = if quick { 3 } else { 5 };
    match section.as_str() {
        "pipeline" => userspace::pipeline_bench(reps, if quick { 200_000 } else { 1_000_000 }),
        "replay" => userspace::replay_bench(reps, if quick { 500_000 } else { 2_000_000 }, &dir),
        "cluster" => cluster::cluster_bench(quick, &dir),
        "dataplane" => dataplane::dataplane_cost(if quick { 500 } else { 5_000 }),
        // One merge of `cluster`, in a process of its own: N DIR [--drops-only].
        "cluster-merge" => cluster::merge_child(
            args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2),
            args.get(2).map(PathBuf::from).unwrap_or_default(),
            args.iter().any(|a| a == "--drops-only"),
        ),
        "k8s-scale" => k8s_scale::k8s_scale(quick),
        "memory-flows" => userspace::memory_flows(100_000),
        "memory-churn" => userspace::memory_churn(if quick { 600 } else { 3600 }, 1_000),
        "datapath" => datapath::datapath(
            // More repetitions where the machine is noisy (each is ~36 s).
            std::env::var("CALITRACE_BENCH_DATAPATH_REPS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(if quick { 2 } else { 5 }),
            if quick { 2 } else { 3 },
            arg("--compare").map(PathBuf::from),
        ),
        "datapath-profile" => profile::datapath_profile(if quick { 2 } else { 5 }),
        "lost" => live::lost(100_000, if quick { 4 } else { 10 }, &dir),
        "memory-live" => live::memory_live(100_000),
        "attach" => live::attach(200, reps.min(3)),
        // BIN... measured alternately; CALITRACE_BENCH_LIVE_CPU="REPS PPS SECS".
        "live-cpu" => {
            // Positional arguments: not an option, nor the value of `--dir`.
            let bins: Vec<PathBuf> = args[1..]
                .iter()
                .enumerate()
                .filter(|(i, a)| !a.starts_with("--") && args[*i] != "--dir")
                .map(|(_, a)| PathBuf::from(a))
                .collect();
            let knobs = std::env::var("CALITRACE_BENCH_LIVE_CPU").unwrap_or_default();
            let knobs: Vec<f64> = knobs
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let knob = |i: usize, default: f64| knobs.get(i).copied().unwrap_or(default);
            live_cpu::live_cpu(
                &bins,
                knob(0, 3.0) as usize,
                knob(1, 50_000.0),
                knob(2, 5.0),
            )
        }
        other => bail!("unknown section {other:?}; {USAGE}"),
    }
}
