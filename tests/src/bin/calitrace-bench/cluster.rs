//! Cluster scale: the agent stream's size and cost, and the client's merge
//! of 2, 16 and 64 agent streams (synthetic, [`calitrace_tests::fleet`]) on one core.
//! Each merge runs in a process of its own, so that its peak RSS is its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::sync_channel;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tracer_user::events::Input;
use tracer_user::merge::Cluster;
use tracer_user::merge::gate::Gate;
use tracer_user::merge::stage::{Batches, FromNode, QUEUE, Staged, read_staged};
use tracer_user::pipeline::Options;
use tracer_user::recording::writer::Recorder;

use crate::util::{CpuClock, Row, median, pin_to_one_cpu, rss_kib, unpin_all};
use calitrace_tests::fleet::{self, RATE};

const AGENTS: [usize; 3] = [2, 16, 64];

/// Body bytes of a recording (or stream) after its header.
fn body(bytes: &[u8]) -> usize {
    let header = u32::from_le_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    bytes.len().saturating_sub(14 + header)
}

pub fn cluster_bench(quick: bool, dir: &Path) -> Result<()> {
    let cpu = pin_to_one_cpu();
    let per_node = if quick { 10_000 } else { 80_000 };
    eprintln!("cluster: {per_node} events per agent, CPU {cpu}");
    stream_rows(per_node, dir)?;
    for n in AGENTS {
        let fleet = dir.join(format!("fleet-{n}"));
        std::fs::create_dir_all(&fleet)?;
        let evs = fleet::events(n, per_node, 7 + n as u64);
        for (i, e) in evs.iter().enumerate() {
            std::fs::write(fleet.join(format!("{i}.stream")), fleet::stream(i, e)?)?;
        }
        drop(evs);
        for drops_only in [true, false] {
            let r = merge_in_child(n, drops_only, &fleet)?;
            merge_rows(n, drops_only, &r);
        }
        // CALITRACE_BENCH_KEEP=1 keeps the streams, to profile one merge
        // again: `calitrace-bench cluster-merge 64 DIR/fleet-64 --drops-only`.
        if std::env::var_os("CALITRACE_BENCH_KEEP").is_none() {
            std::fs::remove_dir_all(&fleet).ok();
        }
    }
    Ok(())
}

/// Bytes per event and the agent's CPU for its stream, compressed (as
/// agents send it) against the plain frames of a `-w` file.
fn stream_rows(per_node: usize, dir: &Path) -> Result<()> {
    let evs = fleet::events(2, per_node.max(50_000), 3).swap_remove(0);
    let events = evs.len() as f64;
    let (mut zstd_cpu, mut plain_cpu) = (vec![], vec![]);
    let (mut zstd_bytes, mut plain_bytes) = (0, 0);
    let path = dir.join("plain.calitrace");
    for _ in 0..3 {
        let t = CpuClock::start();
        zstd_bytes = body(&fleet::stream(0, &evs)?);
        zstd_cpu.push(t.elapsed_s() / events);
        let t = CpuClock::start();
        let mut rec = Recorder::create(&path, &fleet::header(0))?;
        for e in &evs {
            rec.record(&[], &Input::Event(*e))?;
        }
        rec.finish(&Default::default())?;
        plain_cpu.push(t.elapsed_s() / events);
        plain_bytes = body(&std::fs::read(&path)?);
    }
    std::fs::remove_file(&path).ok();
    let (per_event, plain_per_event) = (zstd_bytes as f64 / events, plain_bytes as f64 / events);
    Row::new(
        "cluster",
        "agent stream: bytes per event (zstd)",
        per_event,
        "B",
    )
    .baseline(plain_per_event)
    .target("<= 20 B per event", per_event <= 20.0)
    .note(format!(
        "baseline: the plain frames; {} events of pod-to-pod TCP across nodes, ticks every 100 ms, flushes every 200 ms",
        evs.len()
    ))
    .emit();
    Row::new(
        "cluster",
        "agent stream at 100k events/s",
        per_event * RATE as f64 / 1e3,
        "kB/s",
    )
    .baseline(plain_per_event * RATE as f64 / 1e3)
    .emit();
    let (z, p) = (median(&zstd_cpu), median(&plain_cpu));
    Row::new(
        "cluster",
        "agent CPU writing its stream at 100k events/s",
        100.0 * z * RATE as f64,
        "% of a core",
    )
    .baseline(100.0 * p * RATE as f64)
    .note(format!(
        "{:.0} ns per event compressed, {:.0} ns plain (baseline)",
        z * 1e9,
        p * 1e9
    ))
    .emit();
    Ok(())
}

fn merge_in_child(n: usize, drops_only: bool, fleet: &Path) -> Result<Value> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new(exe);
    c.arg("cluster-merge").arg(n.to_string()).arg(fleet);
    if drops_only {
        c.arg("--drops-only");
    }
    let out = c.output().context("running the merge")?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("merge of {n} agents failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).context("merge result")
}

fn merge_rows(n: usize, drops_only: bool, r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let (events, merge_s, read_s) = (f("events"), f("merge_cpu_s"), f("read_cpu_s"));
    let rate = events / merge_s;
    let mode = if drops_only {
        "`--drops-only`"
    } else {
        "all packets"
    };
    let client_per_agent = 100.0 * (merge_s + read_s) / events * RATE as f64;
    let mut row = Row::new(
        "cluster",
        format!("merge of {n} agent streams, {mode}"),
        rate,
        "ev/s",
    )
    .note(format!(
        "one core (CPU time of the merging thread); reading, decompressing and the node pipelines on {n} threads: {:.0} ns per event; client CPU per agent at 100k ev/s: {client_per_agent:.1}% of a core",
        read_s / events * 1e9
    ));
    if n == 64 && drops_only {
        row = row.target(">= 1M ev/s on one core", rate >= 1e6);
    }
    row.emit();
    let peak = f("peak_kib") / 1024.0;
    let mut row = Row::new(
        "cluster",
        format!("merge of {n} agent streams, {mode}: peak RSS"),
        peak,
        "MiB",
    )
    .note("the merging process: pipelines, merge, readers, queue");
    if n == 64 {
        row = row.target("<= 256 MiB", peak <= 256.0);
    }
    row.emit();
}

/// `calitrace-bench cluster-merge N DIR [--drops-only]`: merges the streams
/// in DIR as `calitrace cluster` does (a thread per agent reading its
/// stream and running its node's stage, batches over a bounded channel, one
/// merging thread), prints its figures as one JSON line.
pub fn merge_child(n: usize, dir: PathBuf, drops_only: bool) -> Result<()> {
    // Read from files as a client reads pipes: a stream is not held whole.
    let streams: Vec<std::fs::File> = (0..n)
        .map(|i| std::fs::File::open(dir.join(format!("{i}.stream"))))
        .collect::<Result<_, _>>()?;
    pin_to_one_cpu();
    let names: Vec<String> = (0..n).map(fleet::name).collect();
    let mut cluster = Cluster::new(
        &names,
        Options {
            packets: !drops_only,
            ..Options::default()
        },
    );
    let (tx, rx) = sync_channel::<(usize, FromNode)>(QUEUE);
    let opts = cluster.stage_options();
    let batches = Batches::default();
    let gate = Gate::new(n);
    let readers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, file)| {
            let (tx, opts, batches) = (tx.clone(), opts.clone(), batches.clone());
            let seat = gate.seat(i);
            std::thread::spawn(move || {
                unpin_all();
                let t = CpuClock::start();
                let mut events = 0;
                read_staged(file, &opts, &batches, seat, |s| {
                    if let FromNode::Staged(items) = &s
                        && let Some(Staged::Finished { events: e, .. }) = items.last()
                    {
                        events = *e;
                    }
                    tx.send((i, s)).is_ok()
                });
                (t.elapsed_s(), events)
            })
        })
        .collect();
    drop(tx);
    let t = CpuClock::start();
    let (mut out, mut records) = (Vec::new(), 0u64);
    for (i, s) in rx {
        match s {
            FromNode::Start(h) => cluster.start_staged(i, *h, &mut out),
            FromNode::Staged(mut items) => {
                cluster.staged(i, items.drain(..), &mut out);
                batches.put(items);
                gate.keep_within(cluster.journey_span_ns());
            }
            FromNode::Ended(why) => cluster.ended(i, why, &mut out),
        }
        records += out.len() as u64;
        out.clear();
    }
    cluster.finish(&mut out);
    let merge_cpu_s = t.elapsed_s();
    let (mut read_cpu_s, mut events) = (0.0, 0u64);
    for h in readers {
        let (cpu, e) = h.join().unwrap_or_default();
        read_cpu_s += cpu;
        events += e;
    }
    let (_, peak_kib) = rss_kib("self").unwrap_or_default();
    eprintln!(
        "  merge of {n}{}: {events} events, {records} records, undecided {:?}",
        if drops_only { " (drops only)" } else { "" },
        cluster.undecided()
    );
    println!(
        "{}",
        json!({"events": events, "merge_cpu_s": merge_cpu_s, "read_cpu_s": read_cpu_s,
               "peak_kib": peak_kib})
    );
    Ok(())
}
