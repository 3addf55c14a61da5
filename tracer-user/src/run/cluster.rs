//! `calitrace cluster --node NAME=COMMAND ...`: one live view of several
//! nodes. Each node's agent is started with `sh -c "COMMAND agent ARGS"`; its
//! stdout is a recording stream, read on a thread of its own; the streams
//! meet in one [`Cluster`]. An agent that fails or dies is shown with its
//! last stderr line, and the others go on.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender as Sender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{choose_output, line_view, usage};
use crate::cli::{ClusterArgs, Output};
use crate::filter::Filter;
use crate::merge::Cluster;
use crate::model::Record;
use crate::pipeline::Options;
use crate::recording::cluster::{ClusterHeader, ClusterWriter};
use crate::recording::format::Header;
use crate::recording::reader::Item;
use crate::recording::stream::{self, Streamed};
use crate::views::{Control, LineSink, Sink, Status};

/// How often the view hears from the session without input.
const TICK: Duration = Duration::from_millis(100);
/// How long agents get to end their streams once asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the threads reading agents tell the session.
enum Msg {
    /// Bytes of a node's stream, as read (for `-w`).
    Raw(usize, Vec<u8>),
    Start(usize, Box<Header>),
    Items(usize, Vec<Item>),
    /// The stream ended: why, where it was not a clean end.
    Gone(usize, Option<String>),
    Stderr(usize, String),
}

struct Agent {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Its last stderr line, kept by the thread that reads them.
    last_stderr: Arc<Mutex<Option<String>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    gone: bool,
}

impl Agent {
    /// Its last words: the stderr reader ends once the process is gone.
    fn last_words(&mut self) -> Option<String> {
        if let Some(h) = self.stderr_reader.take() {
            let until = Instant::now() + Duration::from_secs(2);
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.last_stderr.lock().ok().and_then(|l| l.clone())
    }
}

pub fn run(args: ClusterArgs) -> Result<()> {
    let nodes = parse_nodes(&args.nodes)?;
    let filter = Filter::parse_words(&args.view.filter).map_err(|e| usage(e.to_string()))?;
    filter.compile().map_err(|e| usage(e.to_string()))?;
    let output = match choose_output(args.view.output) {
        Output::Pcap => return Err(usage("--output pcap is for `calitrace replay FILE`")),
        o => o,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register(sig, stop.clone()).context("signal handler")?;
    }
    let mut writer = match &args.write {
        Some(p) => Some(ClusterWriter::create(
            p,
            &ClusterHeader {
                nodes: nodes.iter().map(|(n, _)| n.clone()).collect(),
            },
        )?),
        None => None,
    };
    // Bounded: a merge that falls behind makes the agents wait (their rings
    // then count what is lost) instead of holding their streams in memory.
    let (tx, rx) = sync_channel(stream::QUEUE);
    let line = agent_command_tail(&args);
    let mut agents: Vec<Agent> = nodes
        .iter()
        .enumerate()
        .map(|(i, (name, cmd))| {
            start_agent(
                i,
                name,
                &format!("{cmd} agent{line}"),
                &tx,
                writer.is_some(),
            )
        })
        .collect();
    drop(tx);
    let names: Vec<String> = nodes.into_iter().map(|(n, _)| n).collect();
    let mut cluster = Cluster::new(
        &names,
        Options {
            packets: !args.view.drops_only,
            verdicts: args.view.verdicts,
            ..Options::default()
        },
    );
    let mut sink: Box<dyn Sink> = match output {
        Output::Tui => Box::new(crate::views::tui::TuiSink::live(args.view.all_drops)?),
        _ => Box::new(LineSink(line_view(output, args.view.all_drops))),
    };
    let mut session = Running {
        cluster: &mut cluster,
        agents: &mut agents,
        sink: sink.as_mut(),
        writer: &mut writer,
        quiet: output == Output::Tui,
        rates: vec![(Instant::now(), 0); names.len()],
        status: Status {
            filter: filter.to_string(),
            ..Status::default()
        },
    };
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let result = session.until_stopped(&rx, &stop, deadline);
    let ended = session.stop_agents(&rx);
    let mut out = Vec::new();
    cluster.finish(&mut out);
    for (why, n) in cluster.undecided() {
        eprintln!("calitrace: {n} packet(s) between nodes not judged: the receiving node {why}");
    }
    let shown = sink.records(&out).and_then(|_| sink.flush());
    if let Some(w) = writer {
        w.finish()?;
    }
    result?;
    ended?;
    shown?;
    Ok(())
}

/// `NAME=COMMAND` pairs, names unique.
fn parse_nodes(specs: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for s in specs {
        let Some((name, cmd)) = s.split_once('=') else {
            return Err(usage(format!(
                "--node {s}: give NAME=COMMAND, e.g. --node node-a='ssh root@node-a calitrace'"
            )));
        };
        let (name, cmd) = (name.trim(), cmd.trim());
        if name.is_empty() || cmd.is_empty() {
            return Err(usage(format!(
                "--node {s}: both NAME and COMMAND are needed"
            )));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(usage(format!("--node {name} is given twice")));
        }
        out.push((name.to_string(), cmd.to_string()));
    }
    Ok(out)
}

/// Quotes a word for `sh`.
fn sh_quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// The tracing options and the FILTER, each quoted, for `COMMAND agent`.
fn agent_command_tail(args: &ClusterArgs) -> String {
    let a = &args.agents;
    let mut words: Vec<String> = Vec::new();
    for i in &a.iface {
        words.extend(["--iface".into(), i.clone()]);
    }
    if a.all_netns {
        words.push("--all-netns".into());
    }
    if args.view.verdicts {
        words.push("--verdicts".into());
    }
    words.extend([
        "--tc-attach".into(),
        clap::ValueEnum::to_possible_value(&a.tc_attach)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        "--nf-probes".into(),
        clap::ValueEnum::to_possible_value(&a.nf_probes)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        "--ring-mib".into(),
        a.ring_mib.to_string(),
    ]);
    if !args.view.filter.is_empty() {
        words.push("--".into());
        words.extend(args.view.filter.iter().cloned());
    }
    words.iter().map(|w| format!(" {}", sh_quote(w))).collect()
}

/// Starts one agent and the threads that read it; a failure to start is
/// reported as its stream ending.
fn start_agent(i: usize, name: &str, line: &str, tx: &Sender<Msg>, tee: bool) -> Agent {
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            tx.send(Msg::Gone(
                i,
                Some(format!("cannot run sh -c {line:?}: {e}")),
            ))
            .ok();
            return Agent {
                name: name.to_string(),
                child: None,
                stdin: None,
                last_stderr: Arc::default(),
                stderr_reader: None,
                gone: false,
            };
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let t = tx.clone();
    std::thread::spawn(move || {
        read_stream(
            i,
            Tee {
                r: stdout,
                tx: tee.then(|| t.clone()),
                node: i,
            },
            &t,
        )
    });
    let t = tx.clone();
    let last_stderr: Arc<Mutex<Option<String>>> = Arc::default();
    let last = last_stderr.clone();
    let stderr_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut l) = last.lock() {
                *l = Some(line.clone());
            }
            t.send(Msg::Stderr(i, line)).ok();
        }
    });
    Agent {
        name: name.to_string(),
        stdin: child.stdin.take(),
        child: Some(child),
        last_stderr,
        stderr_reader: Some(stderr_reader),
        gone: false,
    }
}

/// Copies what is read to the recording of the cluster session.
struct Tee<R> {
    r: R,
    tx: Option<Sender<Msg>>,
    node: usize,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.r.read(buf)?;
        if let Some(tx) = &self.tx
            && n > 0
        {
            tx.send(Msg::Raw(self.node, buf[..n].to_vec())).ok();
        }
        Ok(n)
    }
}

/// Reads one agent's stream to its end, as messages to the session.
fn read_stream(i: usize, r: impl Read, tx: &Sender<Msg>) {
    stream::read_stream(r, |s| {
        let m = match s {
            Streamed::Start(h) => Msg::Start(i, h),
            Streamed::Items(items) => Msg::Items(i, items),
            Streamed::Ended(why) => Msg::Gone(i, why),
        };
        tx.send(m).is_ok()
    });
}

/// The live session: messages in, records out.
struct Running<'a> {
    cluster: &'a mut Cluster,
    agents: &'a mut Vec<Agent>,
    sink: &'a mut dyn Sink,
    writer: &'a mut Option<ClusterWriter>,
    /// The TUI shows agents' messages; line views pass them to stderr.
    quiet: bool,
    status: Status,
    /// Per node: when its event count was last taken, and the count.
    rates: Vec<(Instant, u64)>,
}

impl Running<'_> {
    fn until_stopped(
        &mut self,
        rx: &Receiver<Msg>,
        stop: &AtomicBool,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut last_status = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed)
                || deadline.is_some_and(|d| Instant::now() >= d)
                || self.agents.iter().all(|a| a.gone)
            {
                return Ok(());
            }
            let mut out = Vec::new();
            match rx.recv_timeout(TICK) {
                Ok(m) => self.take(m, &mut out)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if !out.is_empty() && !self.sink.records(&out)? {
                return Ok(());
            }
            if last_status.elapsed() >= TICK {
                last_status = Instant::now();
                self.sink.flush()?;
                if !self.hear_view() {
                    return Ok(());
                }
            }
        }
    }

    fn take(&mut self, m: Msg, out: &mut Vec<Record>) -> Result<()> {
        match m {
            Msg::Raw(n, bytes) => {
                if let Some(w) = self.writer {
                    w.stream(n, &bytes)?;
                }
            }
            Msg::Start(n, h) => self.cluster.start(n, *h, out),
            Msg::Items(n, items) => {
                for item in items {
                    self.cluster.item(n, item, out);
                }
            }
            Msg::Gone(n, why) => self.gone(n, why, out)?,
            Msg::Stderr(n, line) => {
                if !self.quiet {
                    eprintln!("calitrace: {}: {line}", self.agents[n].name);
                }
            }
        }
        Ok(())
    }

    /// An agent's stream ended: how its process ended, and its last words.
    fn gone(&mut self, n: usize, why: Option<String>, out: &mut Vec<Record>) -> Result<()> {
        let a = &mut self.agents[n];
        a.gone = true;
        let status = a.child.as_mut().and_then(wait_briefly);
        let failed = status.is_some_and(|s| !s.success());
        let why = if failed || why.is_some() {
            let mut parts: Vec<String> = Vec::new();
            parts.extend(why);
            parts.extend(status.filter(|s| !s.success()).map(|s| s.to_string()));
            parts.extend(a.last_words());
            Some(parts.join("; "))
        } else {
            None
        };
        if let Some(w) = &why {
            eprintln!("calitrace: {}: agent ended: {w}", a.name);
        }
        if let Some(wr) = self.writer {
            wr.gone(n, why.as_deref())?;
        }
        self.cluster.ended(n, why, out);
        Ok(())
    }

    /// Status to the view, and its requests; false when it quits.
    fn hear_view(&mut self) -> bool {
        let now = Instant::now();
        let mut nodes = self.cluster.nodes();
        for (v, (then, count)) in nodes.iter_mut().zip(self.rates.iter_mut()) {
            let secs = now.duration_since(*then).as_secs_f64();
            if secs >= 1.0 {
                let rate = v.events.saturating_sub(*count) as f64 / secs;
                (*then, *count) = (now, v.events);
                v.events_per_sec = rate;
            } else {
                v.events_per_sec = self
                    .status
                    .nodes
                    .iter()
                    .find(|o| o.name == v.name)
                    .map_or(0.0, |o| o.events_per_sec);
            }
        }
        self.status.nodes = nodes;
        self.status.lost = self.status.nodes.iter().map(|n| n.lost).sum();
        self.sink.status(&self.status);
        while let Some(c) = self.sink.control() {
            match c {
                Control::Quit => return false,
                Control::SetFilter(_) => {
                    self.status.error = Some("the cluster's FILTER is given when it starts".into())
                }
                Control::StartRecording(_) | Control::StopRecording => {
                    self.status.error =
                        Some("record a cluster with `calitrace cluster -w FILE`".into())
                }
                Control::Pause(_) | Control::Step => {}
            }
        }
        true
    }

    /// Closes the agents' stdin (each stops and detaches), takes what their
    /// streams still carry, and ends those that do not stop.
    fn stop_agents(&mut self, rx: &Receiver<Msg>) -> Result<()> {
        for a in self.agents.iter_mut() {
            a.stdin = None;
        }
        let until = Instant::now() + STOP_GRACE;
        while !self.agents.iter().all(|a| a.gone) && Instant::now() < until {
            let mut out = Vec::new();
            match rx.recv_timeout(TICK) {
                Ok(m) => self.take(m, &mut out)?,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.sink.records(&out)?;
        }
        for a in self.agents.iter_mut().filter(|a| !a.gone) {
            if let Some(c) = &mut a.child {
                c.kill().ok();
                c.wait().ok();
            }
            eprintln!("calitrace: {}: agent did not stop in time: killed", a.name);
        }
        Ok(())
    }
}

/// The agent's exit status, if it ends within a moment of its stream.
fn wait_briefly(c: &mut Child) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        match c.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs_and_quoting() {
        let n = parse_nodes(&[
            "a=ip netns exec x calitrace".into(),
            "b = ssh b calitrace".into(),
        ])
        .unwrap();
        assert_eq!(n[1], ("b".into(), "ssh b calitrace".into()));
        for bad in [vec!["a"], vec!["=x"], vec!["a=x", "a=y"]] {
            let specs: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(parse_nodes(&specs).is_err(), "{bad:?}");
        }
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
