//! `cluster --k8s --all-nodes` at scale: the release `calitrace` against the
//! stand-in API server with synthetic nodes (their agents stream a
//! synthetic fleet's traffic, paced, with realistic headers; every request
//! answered after a realistic latency): how long until every node traces,
//! how many API requests the client has in flight at once, its peak RSS,
//! whether every node's state is shown, and the events it takes in. Then
//! the TUI's frame time at that many nodes and 1 M events/s, in process.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use calitrace_tests::apiserver::ApiServer;
use calitrace_tests::calitrace::binary;
use calitrace_tests::fleet::{self, Traffic};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::Value;
use tracer_user::events::Input;
use tracer_user::merge::Cluster;
use tracer_user::model::Record;
use tracer_user::pipeline::Options;
use tracer_user::recording::reader::Item;
use tracer_user::views::Status;
use tracer_user::views::tui::{App, BATCH, INGEST_BUDGET, Mode, render};

use crate::util::{Row, median};

const SECTION: &str = "cluster";
/// Each synthetic node's agent: events per second.
const RATE: u64 = 1_000;
/// What each request to the stand-in takes before its answer.
const LATENCY: Duration = Duration::from_millis(20);
/// The most requests the client should have in flight at once: its bound.
const BOUND: usize = tracer_user::run::k8s::client::CONCURRENT_CALLS;

/// `CALITRACE_BENCH_K8S="NODES RATE SECS"` overrides the nodes, each
/// one's events/s and the seconds traced; `CALITRACE_BENCH_K8S_TUI=0` skips
/// the TUI's frames, `CALITRACE_BENCH_K8S_CLIENT=0` the client's run.
pub fn k8s_scale(quick: bool) -> Result<()> {
    let knobs = std::env::var("CALITRACE_BENCH_K8S").unwrap_or_default();
    let knobs: Vec<f64> = knobs
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let knob = |i: usize, default: f64| knobs.get(i).copied().unwrap_or(default);
    let nodes = knob(0, if quick { 32.0 } else { 256.0 }) as usize;
    let rate = knob(1, RATE as f64) as u64;
    if !std::env::var("CALITRACE_BENCH_K8S_CLIENT").is_ok_and(|v| v == "0") {
        let run = client_run(nodes, rate, knob(2, if quick { 4.0 } else { 8.0 }))?;
        client_rows(nodes, rate, &run);
    }
    if std::env::var("CALITRACE_BENCH_K8S_TUI").is_ok_and(|v| v == "0") {
        return Ok(());
    }
    let frames = tui_frames(nodes, if quick { 1.0 } else { 4.0 });
    tui_rows(nodes, &frames);
    Ok(())
}

/// What one `cluster --k8s --all-nodes` run showed.
#[derive(Default)]
struct ClientRun {
    /// From the start to each node's "tracing on" line.
    tracing_on: BTreeMap<String, f64>,
    max_in_flight: usize,
    peak_kib: u64,
    /// Each node's stats record.
    stats: BTreeMap<String, Value>,
    exit: String,
    offered: u64,
}

/// Runs the release client against `nodes` synthetic nodes for
/// `duration_s` of tracing.
fn client_run(nodes: usize, rate: u64, duration_s: f64) -> Result<ClientRun> {
    let api = ApiServer::synthetic(nodes, rate)?;
    api.with(|s| s.latency = LATENCY);
    let mut c = Command::new(binary());
    c.args(["cluster", "--k8s", "--kubeconfig"])
        .arg(api.kubeconfig())
        .args(["--all-nodes", "-o", "json", "--drops-only", "--duration"])
        .arg(duration_s.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("k8s-scale: {nodes} synthetic nodes at {rate} events/s each, {duration_s} s");
    let started = Instant::now();
    let mut child = c.spawn().context("running calitrace")?;
    let on = Arc::new(Mutex::new(BTreeMap::new()));
    let stderr = child.stderr.take().context("stderr")?;
    let seen = on.clone();
    let errs = std::thread::spawn(move || tracing_on_lines(stderr, started, &seen));
    let stdout = child.stdout.take().context("stdout")?;
    let outs = std::thread::spawn(move || stats_records(stdout));
    let limit = started + Duration::from_secs_f64(duration_s + 60.0);
    let (status, peak_kib) = loop {
        if let Some(ended) = reap(child.id())? {
            break ended;
        }
        if Instant::now() > limit {
            child.kill().ok();
            bail!("calitrace cluster --k8s did not end in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let last = errs.join().unwrap_or_default();
    let stats = outs.join().unwrap_or_default();
    let tracing_on = on.lock().unwrap().clone();
    let (max_in_flight, offered) = api.with(|s| {
        let f = s
            .synthetic
            .as_ref()
            .map(|f| f.sent.load(std::sync::atomic::Ordering::Relaxed));
        (s.max_in_flight, f.unwrap_or(0))
    });
    Ok(ClientRun {
        tracing_on,
        max_in_flight,
        peak_kib,
        stats,
        exit: format!("exit status {status}; {last}"),
        offered,
    })
}

/// The child's exit status and peak RSS (KiB, its whole life: the kernel
/// keeps it), once it ended.
fn reap(pid: u32) -> Result<Option<(i32, u64)>> {
    let mut status = 0;
    // SAFETY: plain out-parameters for wait4(2); a zeroed rusage is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
    match r {
        0 => Ok(None),
        r if r < 0 => bail!("wait4: {}", std::io::Error::last_os_error()),
        _ => Ok(Some((libc::WEXITSTATUS(status), usage.ru_maxrss as u64))),
    }
}

/// Notes when each node's agent says "tracing on"; the last line.
fn tracing_on_lines(
    r: impl std::io::Read,
    started: Instant,
    on: &Mutex<BTreeMap<String, f64>>,
) -> String {
    let mut last = String::new();
    for line in BufReader::new(r).lines().map_while(Result::ok) {
        // `calitrace: NODE: tracing on NODE (...)`, as the client passes it on.
        if let Some((node, rest)) = line
            .strip_prefix("calitrace: ")
            .and_then(|l| l.split_once(": "))
            && rest.starts_with("tracing on ")
        {
            let t = started.elapsed().as_secs_f64();
            on.lock().unwrap().entry(node.to_string()).or_insert(t);
        } else if !line.contains(": agent on ") && !line.contains(": attached ") {
            last = line;
        }
    }
    last
}

/// Each node's stats record from the client's JSON lines.
fn stats_records(r: impl std::io::Read) -> BTreeMap<String, Value> {
    let mut stats = BTreeMap::new();
    for line in BufReader::new(r).lines().map_while(Result::ok) {
        if !line.contains("\"stats\"") {
            continue;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["type"] == "stats"
            && let Some(node) = v["node"].as_str()
        {
            stats.insert(node.to_string(), v);
        }
    }
    stats
}

fn client_rows(nodes: usize, rate: u64, r: &ClientRun) {
    let what = format!("`cluster --k8s --all-nodes`, {nodes} synthetic nodes");
    let all_on = if r.tracing_on.len() == nodes {
        r.tracing_on.values().copied().fold(0.0, f64::max)
    } else {
        f64::NAN
    };
    Row::new(SECTION, format!("{what}: start to tracing on (every node)"), all_on, "s")
        .target("< 10 s", all_on < 10.0)
        .note(format!(
            "{} of {nodes} nodes said \"tracing on\"; every API request answered after {} ms; first node at {:.2} s; client: {}",
            r.tracing_on.len(),
            LATENCY.as_millis(),
            r.tracing_on.values().copied().fold(f64::INFINITY, f64::min),
            r.exit
        ))
        .emit();
    let m = r.max_in_flight as f64;
    Row::new(
        SECTION,
        format!("{what}: API requests in flight at once (most)"),
        m,
        "requests",
    )
    .target(format!("<= {BOUND}"), r.max_in_flight <= BOUND)
    .note("the client's bound (CONCURRENT_CALLS); the stand-in's count: every request until answered, an exec until its WebSocket is up")
    .emit();
    let peak = r.peak_kib as f64 / 1024.0;
    Row::new(SECTION, format!("{what}: client peak RSS"), peak, "MiB")
        .target("<= 512 MiB", peak <= 512.0)
        .note("the calitrace process's maxrss over its whole run (wait4), `-o json --drops-only`")
        .emit();
    let clean = r.stats.values().filter(|s| s["exit"].is_null()).count();
    Row::new(
        SECTION,
        format!("{what}: nodes shown"),
        r.stats.len() as f64,
        "nodes",
    )
    .target(format!("= {nodes}"), r.stats.len() == nodes)
    .note(format!(
        "nodes with a stats record in the output; {clean} of them traced to a clean end"
    ))
    .emit();
    let (events, got) = received(&r.stats);
    Row::new(SECTION, format!("{what}: events received"), got, "ev/s")
        .baseline((nodes as u64 * rate) as f64)
        .note(format!(
            "{events} events in the nodes' stats (their streams' ends); {} handed to the agents; baseline: the rate the nodes offer",
            r.offered
        ))
        .emit();
}

/// Events in the nodes' stats, and the sum of each node's rate.
fn received(stats: &BTreeMap<String, Value>) -> (u64, f64) {
    let (mut events, mut rate) = (0, 0.0);
    for s in stats.values() {
        let n = ["tc", "kfree_skb"]
            .iter()
            .map(|k| s["events"][k].as_u64().unwrap_or(0))
            .sum::<u64>();
        events += n;
        if let Some(d) = s["duration_s"].as_f64().filter(|d| *d > 0.0) {
            rate += n as f64 / d;
        }
    }
    (events, rate)
}

/// What the TUI's frames took, and how much of the flood it took in.
#[derive(Default)]
struct Frames {
    /// Each frame: the longest the view went without looking at keys (a
    /// slice of records taken in), then the status of every node and the
    /// draw (ms).
    frames: Vec<f64>,
    draws: Vec<f64>,
    records: usize,
    taken: usize,
    /// CPU time taking in every record would have needed (ms).
    ingest_ms: f64,
    seconds: f64,
}

/// The TUI fed the merge of `nodes` synthetic nodes at 1 M events per
/// simulated second for `seconds`, a frame every 100 ms of it, as its
/// terminal thread runs: the records that came wait in its queue (the
/// oldest skipped beyond 200,000), it takes them in a batch at a time, in
/// slices of at most its budget with keys looked at between them, until
/// the queue is empty or the next frame is due, then draws.
fn tui_frames(nodes: usize, seconds: f64) -> Frames {
    const FRAME: Duration = Duration::from_millis(100);
    const TOTAL: u64 = 1_000_000;
    const STEP: u64 = 100_000_000;
    const QUEUE: usize = 200_000;
    let names: Vec<String> = (0..nodes).map(fleet::name).collect();
    let mut cluster = Cluster::new(&names, Options::default());
    let mut out = Vec::new();
    for i in 0..nodes {
        cluster.start(i, fleet::header(i), &mut out);
    }
    let mut app = App::new(Mode::Live);
    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("a test terminal");
    let mut traffic = Traffic::new(nodes, TOTAL / nodes as u64, 0x7e57);
    let mut f = Frames {
        seconds,
        ..Frames::default()
    };
    let mut queue: VecDeque<Record> = VecDeque::new();
    let mut end = traffic.t;
    for _ in 0..(seconds * 1e9 / STEP as f64) as usize {
        end += STEP;
        for (i, evs) in traffic.until(end).into_iter().enumerate() {
            for e in evs {
                cluster.item(i, Item::Input(Input::Event(e)), &mut out);
            }
            cluster.item(i, Item::Input(Input::Tick(end)), &mut out);
        }
        f.records += out.len();
        queue.extend(out.drain(..));
        let over = queue.len().saturating_sub(QUEUE);
        queue.drain(..over);
        let t = Instant::now();
        // As the view does: slices of at most its budget, keys looked at
        // between them, while records wait, until the next frame is due.
        let mut longest = Duration::ZERO;
        while !queue.is_empty() && t.elapsed() < FRAME {
            let slice = Instant::now();
            while !queue.is_empty() && slice.elapsed() < INGEST_BUDGET {
                let batch: Vec<Record> = queue.drain(..BATCH.min(queue.len())).collect();
                f.taken += batch.len();
                app.ingest(&batch);
            }
            longest = longest.max(slice.elapsed());
        }
        f.ingest_ms += t.elapsed().as_secs_f64() * 1e3;
        app.set_status(Status {
            nodes: cluster.nodes(),
            ..Status::default()
        });
        app.tick(end);
        let d = Instant::now();
        term.draw(|fr| render::render(fr, &app)).expect("a frame");
        f.draws.push(d.elapsed().as_secs_f64() * 1e3);
        f.frames.push((longest + d.elapsed()).as_secs_f64() * 1e3);
    }
    eprintln!(
        "  TUI: {} records of {nodes} nodes, {} taken in, {} frames",
        f.records,
        f.taken,
        f.frames.len()
    );
    f
}

fn tui_rows(nodes: usize, f: &Frames) {
    let worst = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let what = format!("TUI frame, {nodes} nodes at 1 M ev/s (200x50)");
    let (m, w) = (median(&f.frames), worst(&f.frames));
    let per_record_ms = f.ingest_ms / f.taken.max(1) as f64;
    Row::new(SECTION, format!("{what}: median"), m, "ms")
        .target("< 50 ms", m < 50.0)
        .note(format!(
            "a frame per 100 ms of simulated time: the records that came, taken in by slices of at most {} ms (keys looked at between them) until the next frame is due; the frame time is the longest slice, then the status of every node and the draw (alone: median {:.2} ms, worst {:.2} ms); it took in {:.0}% of {} records ({:.0} per simulated second); taking in every one would need {:.0} ms per 100 ms",
            INGEST_BUDGET.as_millis(),
            median(&f.draws),
            worst(&f.draws),
            100.0 * f.taken as f64 / f.records.max(1) as f64,
            f.records,
            f.records as f64 / f.seconds,
            per_record_ms * f.records as f64 / (f.seconds * 10.0),
        ))
        .emit();
    Row::new(SECTION, format!("{what}: worst"), w, "ms")
        .target("< 50 ms", w < 50.0)
        .emit();
}
