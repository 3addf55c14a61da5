//! The userspace figures: the event pipeline on one core, replay, and memory
//! under load and churn. All in this process, on synthetic events.

use std::hint::black_box;
use std::path::Path;

use anyhow::Result;
use tracer_user::events::Input;
use tracer_user::facts::Environment;
use tracer_user::model::Record;
use tracer_user::pipeline::{Options, Pipeline};
use tracer_user::probes::decode_input;
use tracer_user::recording::format::{End, Header};
use tracer_user::recording::read_ahead::ReadAhead;
use tracer_user::recording::reader::{self, Item};
use tracer_user::recording::writer::Recorder;
use tracer_user::views::View;
use tracer_user::views::json::JsonView;

use crate::util::{CpuClock, MIB, Row, median, pin_to_one_cpu, rss_kib, unpin_all};
use calitrace_tests::synth::{self, Gen, Shape};

const EVENT_SIZE: usize = tracer_common::EVENT_SIZE;

fn pipeline(packets: bool) -> Pipeline {
    Pipeline::new(
        Environment::replay(synth::facts()),
        Options {
            packets,
            ..Options::default()
        },
    )
}

/// Decodes and processes every event of `ring`; records are shown to `view`
/// when there is one, else dropped. Events per second.
/// The first fifth of the events only warms up (the journey table fills up
/// to its bound): the figure is the sustained rate.
fn run_ring(ring: &[u8], packets: bool, mut view: Option<&mut dyn View>) -> f64 {
    let mut p = pipeline(packets);
    let mut out: Vec<Record> = Vec::with_capacity(64);
    let events = ring.len() / EVENT_SIZE;
    let warm = events / 5 * EVENT_SIZE;
    for chunk in ring[..warm].chunks_exact(EVENT_SIZE) {
        if let Ok(input) = decode_input(chunk) {
            p.process(&input, &mut out);
        }
        out.clear();
    }
    let t = CpuClock::start();
    for chunk in ring[warm..].chunks_exact(EVENT_SIZE) {
        if let Ok(input) = decode_input(chunk) {
            p.process(&input, &mut out);
        }
        if let Some(v) = view.as_deref_mut() {
            for r in &out {
                let _ = v.record(r);
            }
        }
        out.clear();
    }
    let rate = (events - events / 5) as f64 / t.elapsed_s();
    p.finish(&mut out);
    black_box(&out);
    rate
}

pub fn pipeline_bench(reps: usize, events: usize) -> Result<()> {
    let cpu = pin_to_one_cpu();
    eprintln!("pipeline: {events} synthetic events, {reps} repetitions, pinned to CPU {cpu}");
    let ring = synth::ring_bytes(Shape::busy_node(), events);
    let (mut decode, mut full, mut json, mut drops) = (vec![], vec![], vec![], vec![]);
    // Interleaved, so that noise hits every variant alike.
    for _ in 0..reps {
        let t = CpuClock::start();
        for chunk in ring.chunks_exact(EVENT_SIZE) {
            black_box(decode_input(chunk).ok());
        }
        decode.push(events as f64 / t.elapsed_s());
        full.push(run_ring(&ring, true, None));
        let mut view = JsonView::new(std::io::sink());
        json.push(run_ring(&ring, true, Some(&mut view)));
        drops.push(run_ring(&ring, false, None));
    }
    let target = 2e6;
    let mix = "synthetic: 10k TCP flows, 1% drops, ARP";
    Row::new("pipeline", "decode only", median(&decode), "ev/s")
        .samples(&decode)
        .note("ring record -> Input")
        .emit();
    Row::new(
        "pipeline",
        "decode + correlate + diagnose (records built, not shown)",
        median(&full),
        "ev/s",
    )
    .samples(&full)
    .target(">= 2M ev/s per core", median(&full) >= target)
    .note(mix)
    .emit();
    Row::new(
        "pipeline",
        "same + `--output json` to a sink",
        median(&json),
        "ev/s",
    )
    .samples(&json)
    .target(">= 2M ev/s per core", median(&json) >= target)
    .note("serialising every packet record")
    .emit();
    Row::new(
        "pipeline",
        "decode + process, `--drops-only`",
        median(&drops),
        "ev/s",
    )
    .samples(&drops)
    .note("no packet records")
    .emit();
    Ok(())
}

/// A recording of `events` synthetic events at `path`.
pub fn write_recording(path: &Path, events: usize) -> Result<u64> {
    let header = Header {
        calitrace_version: "bench".into(),
        kernel: "synthetic".into(),
        node: "bench-node".into(),
        start_realtime_ns: 0,
        start_monotonic_ns: 0,
        event_size: EVENT_SIZE as u32,
        filter: String::new(),
        interfaces: vec![],
        probes_attached: vec![],
        probes_unavailable: vec![],
        facts: synth::facts(),
    };
    let mut rec = Recorder::create(path, &header)?;
    let mut g = Gen::new(Shape::busy_node());
    for i in 0..events {
        rec.record(&[], &g.next_input())?;
        if i % 10_000 == 9_999 {
            rec.record(&[], &Input::Tick(g.now()))?;
        }
    }
    rec.finish(&End::default())?;
    Ok(std::fs::metadata(path)?.len())
}

/// Reads a recording and (unless `process` is false) runs it through the
/// pipeline; (events, seconds). `ahead`: as `calitrace replay` does, the
/// reading on a thread of its own, and the seconds are wall time; else all
/// on this thread, and its CPU time.
pub fn replay_file(path: &Path, process: bool, packets: bool, ahead: bool) -> Result<(u64, f64)> {
    let t = CpuClock::start();
    let wall = std::time::Instant::now();
    let (header, r) = reader::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut r = Items::new(r, ahead);
    let mut p = Pipeline::new(
        Environment::replay(header.facts),
        Options {
            packets,
            ..Options::default()
        },
    );
    let mut out = Vec::with_capacity(64);
    let mut events = 0u64;
    while let Some(item) = r.next_item().map_err(|e| anyhow::anyhow!("{e}"))? {
        match item {
            Item::Input(i) => {
                if !matches!(i, Input::Tick(_)) {
                    events += 1;
                }
                if process {
                    p.process(&i, &mut out);
                    out.clear();
                } else {
                    black_box(&i);
                }
            }
            Item::Fact(f) => p.env.apply(&f),
            Item::End(_) => {}
        }
    }
    p.finish(&mut out);
    black_box(&out);
    let secs = if ahead {
        wall.elapsed().as_secs_f64()
    } else {
        t.elapsed_s()
    };
    Ok((events, secs))
}

/// A recording's items, read here or on a thread of its own.
enum Items {
    Here(reader::Reader<std::io::BufReader<std::fs::File>>),
    Ahead(ReadAhead),
}

impl Items {
    fn new(r: reader::Reader<std::io::BufReader<std::fs::File>>, ahead: bool) -> Items {
        if ahead {
            // The reading thread may run on another CPU; this one stays.
            unpin_all();
            let r = ReadAhead::spawn(r);
            pin_to_one_cpu();
            Items::Ahead(r)
        } else {
            Items::Here(r)
        }
    }

    fn next_item(&mut self) -> Result<Option<Item>, reader::Problem> {
        match self {
            Items::Here(r) => r.next_item(),
            Items::Ahead(r) => r.next_item(),
        }
    }
}

pub fn replay_bench(reps: usize, events: usize, dir: &Path) -> Result<()> {
    let cpu = pin_to_one_cpu();
    let path = dir.join("synthetic.calitrace");
    let bytes = write_recording(&path, events)?;
    eprintln!(
        "replay: {events} events, {:.0} MiB recording, {reps} repetitions, CPU {cpu}",
        bytes as f64 / MIB
    );
    let (mut read, mut full, mut drops) = (vec![], vec![], vec![]);
    let (mut full_ahead, mut drops_ahead) = (vec![], vec![]);
    for _ in 0..reps {
        for (v, process, packets, ahead) in [
            (&mut read, false, true, false),
            (&mut full, true, true, false),
            (&mut drops, true, false, false),
            (&mut full_ahead, true, true, true),
            (&mut drops_ahead, true, false, true),
        ] {
            let (n, s) = replay_file(&path, process, packets, ahead)?;
            v.push(n as f64 / s);
        }
    }
    std::fs::remove_file(&path).ok();
    Row::new(
        "replay",
        "read recording (frames, CRC, decode)",
        median(&read),
        "ev/s",
    )
    .samples(&read)
    .emit();
    Row::new(
        "replay",
        "read + process (packet records built)",
        median(&full),
        "ev/s",
    )
    .samples(&full)
    .note("one thread, view excluded")
    .emit();
    Row::new(
        "replay",
        "read + process, `--drops-only`",
        median(&drops),
        "ev/s",
    )
    .samples(&drops)
    .note("one thread")
    .emit();
    for (name, v) in [
        (
            "read + process, reading on its own thread (wall time)",
            &full_ahead,
        ),
        (
            "read + process, `--drops-only`, reading on its own thread (wall time)",
            &drops_ahead,
        ),
    ] {
        Row::new("replay", name, median(v), "ev/s")
            .samples(v)
            .note("as `calitrace replay`, view excluded")
            .emit();
    }
    crate::replay_tools::binary_rows(reps.min(3), events.min(300_000), dir)
}

/// Memory of the pipeline (and the TUI's model) with `flows` flows live
/// within the journey window. Run in a fresh process: VmHWM is the peak.
pub fn memory_flows(flows: u32) -> Result<()> {
    let (rss0, _) = rss_kib("self").unwrap_or_default();
    let shape = Shape {
        flows,
        // 100k flows x ~4 events within 2 s: every flow is live together.
        step_ns: 2_000,
        drop_every: 100,
        arp_every: 500,
        churn_per_s: 0,
    };
    let mut g = Gen::new(shape);
    let mut p = pipeline(true);
    let mut model = tracer_user::views::tui::model::Model::default();
    let mut out = Vec::new();
    let mut json = JsonView::new(std::io::sink());
    for _ in 0..(u64::from(flows) * 4) {
        p.process(&g.next_input(), &mut out);
        for r in out.drain(..) {
            feed_model(&mut model, &r);
            let _ = json.record(&r);
        }
    }
    let (rss, hwm) = rss_kib("self").unwrap_or_default();
    eprintln!(
        "memory: {flows} flows: rss {rss} KiB (start {rss0}), peak {hwm} KiB; {} diagnoses, {} TUI flows",
        p.diagnoser.current().len(),
        model.flows.len()
    );
    Row::new(
        "memory",
        format!("pipeline + TUI model, {flows} live flows: peak RSS"),
        hwm as f64 / 1024.0,
        "MiB",
    )
    .note(format!(
        "in-process, synthetic; {:.1} MiB before the first event",
        rss0 as f64 / 1024.0
    ))
    .emit();
    Ok(())
}

fn feed_model(m: &mut tracer_user::views::tui::model::Model, r: &Record) {
    match r {
        Record::Packet(p) => m.on_packet(p, Some(synth::NODE_NETNS)),
        Record::Drop(d) => m.on_drop(d),
        Record::Verdict(v) => m.on_verdict(v),
        Record::Diagnosis(d) => m.on_diagnosis(d),
        _ => {}
    }
}

/// Runs the pipeline and the TUI model on `g`'s events for `sim_secs`
/// simulated seconds; the RSS (KiB) each simulated minute.
fn churn(p: &mut Pipeline, mut g: Gen, sim_secs: u64) -> Vec<(u64, u64)> {
    let start_ts = g.now();
    let mut model = tracer_user::views::tui::model::Model::default();
    let mut out = Vec::new();
    let mut samples = Vec::new();
    let mut next_sample = 0;
    loop {
        let sim = (g.now() - start_ts) / 1_000_000_000;
        if sim >= next_sample {
            let (rss, _) = rss_kib("self").unwrap_or_default();
            samples.push((sim, rss));
            next_sample += 60;
            if sim >= sim_secs {
                return samples;
            }
        }
        p.process(&g.next_input(), &mut out);
        for r in out.drain(..) {
            feed_model(&mut model, &r);
        }
    }
}

/// An hour of simulated churn: 100k flows live, 1,000 new ones a second, 2%
/// of packets dropped (each new pair of addresses a new problem to
/// diagnose): 3.6 million flows, tens of thousands of problems, far beyond
/// every table's bound. RSS sampled every simulated minute; "flat" compares
/// the second half hour, when every bound has long been reached.
pub fn memory_churn(sim_secs: u64, events_per_sim_sec: u64) -> Result<()> {
    let shape = Shape {
        flows: 100_000,
        step_ns: 1_000_000_000 / events_per_sim_sec,
        drop_every: 50,
        arp_every: 500,
        churn_per_s: 1_000,
    };
    let mut p = pipeline(true);
    let t = CpuClock::start();
    let samples = churn(&mut p, Gen::new(shape), sim_secs);
    let (_, hwm) = rss_kib("self").unwrap_or_default();
    let at = |min: u64| {
        samples
            .iter()
            .find(|(s, _)| *s >= min * 60)
            .map_or(0.0, |(_, r)| *r as f64 / 1024.0)
    };
    let half = sim_secs / 120;
    let (mid, end) = (
        at(half),
        samples.last().map_or(0.0, |(_, r)| *r as f64 / 1024.0),
    );
    eprintln!(
        "churn: {sim_secs} s simulated in {:.1} s; RSS at {half} min {mid:.1} MiB, at the end {end:.1} MiB, peak {:.1} MiB; {} diagnoses held",
        t.elapsed_s(),
        hwm as f64 / 1024.0,
        p.diagnoser.current().len()
    );
    let growth = end - mid;
    let flat = growth <= 0.05 * mid.max(1.0) + 1.0;
    Row::new(
        "memory",
        format!("churn, {} simulated min: peak RSS", sim_secs / 60),
        hwm as f64 / 1024.0,
        "MiB",
    )
    .target("<= 64 MiB", hwm as f64 / 1024.0 <= 64.0)
    .note(format!(
        "100k flows live, 1k new/s, 2% dropped; pipeline + TUI model; {} problems held at the end",
        p.diagnoser.current().len()
    ))
    .emit();
    Row::new(
        "memory",
        format!("churn: RSS growth from minute {half} to the end"),
        growth,
        "MiB",
    )
    .baseline(mid)
    .target("flat", flat)
    .note(format!(
        "RSS {mid:.1} MiB at {half} min, {end:.1} MiB at {} min",
        sim_secs / 60
    ))
    .samples(
        &samples
            .iter()
            .map(|(_, r)| *r as f64 / 1024.0)
            .collect::<Vec<_>>(),
    )
    .emit();
    Ok(())
}
