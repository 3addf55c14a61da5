//! `calitrace-bench live-cpu [BIN...]`: calitrace's own CPU per event under
//! a fixed load, for one or more binaries measured alternately in one lab
//! (before/after comparisons on a machine others use: the ratio holds where
//! throughput figures swing). 64-byte UDP pod to pod, paced; calitrace
//! `-o json` with no filter on node A, its stdout read by this process as
//! in `datapath`. Per run: µs of CPU (user + system, all threads) per event
//! and context switches per 1,000 events. With `CALITRACE_BENCH_PERF=DIR`,
//! also `perf record -e cpu-clock -g` of each run into DIR. Not part of
//! `cargo xtask bench`; prints a table on stderr and rows on stdout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use calitrace_tests::calitrace;
use calitrace_tests::{Lab, Mode};

use crate::live::{events_emitted, paced_udp, start_bin, stop};
use crate::util::{Row, median};

/// Context switches (voluntary and not) of every thread of `pid`.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// `perf record` of `pid` into `out`, until the returned child is stopped.
fn perf_record(pid: u32, out: &Path) -> Result<Child> {
    // `CALITRACE_BENCH_PERF_GRAPH=dwarf` where frame pointers are missing.
    let graph = std::env::var("CALITRACE_BENCH_PERF_GRAPH").unwrap_or_else(|_| "fp".into());
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "--call-graph", &graph])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("perf record")
}

struct Run {
    us_per_event: f64,
    switches_per_kev: f64,
    events: f64,
    lost: f64,
}

fn one_run(lab: &Lab, bin: &Path, pps: f64, secs: f64, perf: Option<PathBuf>) -> Result<Run> {
    let (a, b) = (lab.pod(0, 0), lab.pod(1, 0));
    let node = &lab.node(0).netns;
    let t = start_bin(bin, node, &[])?;
    let pid = t.pid().context("calitrace's pid")?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut recorder = perf.map(|p| perf_record(pid, &p)).transpose()?;
    let (cpu0, sw0) = (t.cpu_s(), context_switches(pid));
    paced_udp(&a.netns, &b.netns, &b.ip, pps, secs)?;
    let (cpu1, sw1) = (t.cpu_s(), context_switches(pid));
    if let Some(r) = &mut recorder {
        // SAFETY: kill(2) on our own child's pid, not yet waited for.
        unsafe { libc::kill(r.id() as i32, libc::SIGINT) };
        r.wait()?;
    }
    let (_, stats) = stop(t)?;
    let events = events_emitted(&stats);
    Ok(Run {
        us_per_event: (cpu1 - cpu0) * 1e6 / events,
        switches_per_kev: (sw1 - sw0) as f64 * 1e3 / events,
        events,
        lost: stats["lost"].as_f64().unwrap_or(f64::NAN),
    })
}

pub fn live_cpu(bins: &[PathBuf], reps: usize, pps: f64, secs: f64) -> Result<()> {
    let bins: Vec<PathBuf> = if bins.is_empty() {
        vec![calitrace::binary()]
    } else {
        bins.to_vec()
    };
    let perf_dir = std::env::var_os("CALITRACE_BENCH_PERF").map(PathBuf::from);
    let lab = Lab::new(Mode::Direct)?;
    let mut per_bin: Vec<Vec<f64>> = vec![Vec::new(); bins.len()];
    for rep in 0..reps {
        for (i, bin) in bins.iter().enumerate() {
            let perf = perf_dir
                .as_ref()
                .map(|d| d.join(format!("perf-{i}-{rep}.data")));
            let r = one_run(&lab, bin, pps, secs, perf)?;
            eprintln!(
                "live-cpu: rep {rep} {}: {:.0} events, lost {}, {:.3} µs CPU/event, {:.1} context switches/1k events",
                bin.display(),
                r.events,
                r.lost,
                r.us_per_event,
                r.switches_per_kev
            );
            per_bin[i].push(r.us_per_event);
        }
    }
    for (bin, samples) in bins.iter().zip(&per_bin) {
        Row::new(
            "live-cpu",
            bin.display().to_string(),
            median(samples),
            "µs/event",
        )
        .note(format!(
            "{pps:.0} 64-byte UDP packets/s pod to pod for {secs} s, `-o json`"
        ))
        .samples(samples)
        .emit();
    }
    Ok(())
}
