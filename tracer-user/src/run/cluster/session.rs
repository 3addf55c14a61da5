//! The live cluster session, whatever starts the agents: each agent's
//! stdout (a recording stream) is read on a thread of its own, which runs
//! the node's own share of the merge ([`read_staged`]); the streams meet in
//! one [`Cluster`]. An agent that fails
//! or dies is shown with its last stderr line, and the others go on.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender as Sender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::merge::Cluster;
use crate::merge::gate::{Gate, Seat};
use crate::merge::stage::{self, Batches, FromNode, StageOptions, Staged};
use crate::model::Record;
use crate::recording::cluster::{ClusterHeader, ClusterWriter};
use crate::recording::format::Header;
use crate::views::{Control, Sink, Status};

/// How often the view hears from the session without input.
const TICK: Duration = Duration::from_millis(100);
/// How long agents get to end their streams once asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the stream of an agent killed after that gets to end.
const KILLED_GRACE: Duration = Duration::from_secs(2);

/// One running agent as its source started it: its output, and a handle to
/// stop it.
pub struct Started {
    /// The recording stream.
    pub stdout: Box<dyn Read + Send>,
    /// Its messages, one per line.
    pub stderr: Box<dyn Read + Send>,
    pub link: Box<dyn AgentLink>,
}

/// What the session asks of an agent, wherever it runs.
pub trait AgentLink: Send {
    /// Closes the agent's stdin: it stops, detaches and ends its stream.
    fn close_stdin(&mut self);
    /// Once its stream ended: how the agent failed, if it did (waits a
    /// moment for the exit status).
    fn failure(&mut self) -> Option<String>;
    /// Ends an agent that did not stop in time.
    fn kill(&mut self);
}

/// What the threads reading agents tell the session.
enum Msg {
    /// Bytes of a node's stream, as read (for `-w`).
    Raw(usize, Vec<u8>),
    Start(usize, Box<Header>),
    Staged(usize, Vec<Staged>),
    /// The stream ended: why, where it was not a clean end.
    Gone(usize, Option<String>),
    Stderr(usize, String),
}

struct Agent {
    name: String,
    link: Option<Box<dyn AgentLink>>,
    /// Its last stderr line, kept by the thread that reads them.
    last_stderr: Arc<Mutex<Option<String>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    gone: bool,
}

impl Agent {
    /// Its last words: the stderr reader ends once the agent is gone.
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

/// How the session runs and shows.
pub struct SessionSetup {
    pub names: Vec<String>,
    pub cluster: Cluster,
    pub sink: Box<dyn Sink>,
    pub write: Option<std::path::PathBuf>,
    /// The TUI shows agents' messages; line views pass them to stderr.
    pub quiet: bool,
    pub filter: String,
    pub deadline: Option<Instant>,
}

/// Runs the session until it is stopped, its deadline passes or every agent
/// is gone; then stops the agents and shows what is left. `agents` holds
/// one started agent (or why it could not start) per name.
pub fn run_session(
    setup: SessionSetup,
    agents: Vec<Result<Started, String>>,
    stop: &AtomicBool,
) -> Result<()> {
    let SessionSetup {
        names,
        mut cluster,
        mut sink,
        write,
        quiet,
        filter,
        deadline,
    } = setup;
    let mut writer = match &write {
        Some(p) => Some(ClusterWriter::create(
            p,
            &ClusterHeader {
                nodes: names.clone(),
            },
        )?),
        None => None,
    };
    // Bounded: a merge that falls behind makes the agents wait (their rings
    // then count what is lost) instead of holding their streams in memory.
    let (tx, rx) = sync_channel(stage::QUEUE);
    let batches = Batches::default();
    let gate = Gate::new(names.len());
    let reader = |i| Reader {
        i,
        tx: tx.clone(),
        tee: writer.is_some(),
        opts: cluster.stage_options(),
        batches: batches.clone(),
        seat: gate.seat(i),
    };
    let mut agents: Vec<Agent> = agents
        .into_iter()
        .enumerate()
        .map(|(i, started)| attach(reader(i), &names[i], started))
        .collect();
    drop(tx);
    let mut session = Running {
        cluster: &mut cluster,
        agents: &mut agents,
        sink: sink.as_mut(),
        writer: &mut writer,
        batches,
        gate,
        quiet,
        rates: vec![(Instant::now(), 0); names.len()],
        status: Status {
            filter,
            ..Status::default()
        },
        failed: Vec::new(),
        stopping: false,
    };
    let result = session.until_stopped(&rx, stop, deadline);
    let ended = session.stop_agents(&rx);
    let failed = std::mem::take(&mut session.failed);
    let shown = show_the_rest(&mut cluster, sink.as_mut());
    if let Some(w) = writer {
        w.finish()?;
    }
    result?;
    ended?;
    shown?;
    match failed.len() {
        0 => Ok(()),
        n => Err(anyhow!(
            "{n} of {} node(s) failed: {} (the others traced; each node's stats say why)",
            names.len(),
            failed.join(", ")
        )),
    }
}

/// What the merge still held, and what it could not judge.
fn show_the_rest(cluster: &mut Cluster, sink: &mut dyn Sink) -> std::io::Result<()> {
    let mut out = Vec::new();
    cluster.finish(&mut out);
    for (why, n) in cluster.undecided() {
        eprintln!("calitrace: {n} packet(s) between nodes not judged: the receiving node {why}");
    }
    sink.records(&out).and_then(|_| sink.flush())
}

/// What a thread reading an agent needs: its place, where to send, whether
/// its bytes are recorded, how its stage runs.
struct Reader {
    i: usize,
    tx: Sender<Msg>,
    tee: bool,
    opts: StageOptions,
    batches: Batches,
    /// Its node's place at the gate that keeps the readers together.
    seat: Seat,
}

/// Starts the threads that read one agent; one that could not start is
/// reported as its stream ending.
fn attach(reader: Reader, name: &str, started: Result<Started, String>) -> Agent {
    let Reader {
        i,
        tx,
        tee,
        opts,
        batches,
        seat,
    } = reader;
    let tx = &tx;
    let mut agent = Agent {
        name: name.to_string(),
        link: None,
        last_stderr: Arc::default(),
        stderr_reader: None,
        gone: false,
    };
    let started = match started {
        Ok(s) => s,
        Err(why) => {
            tx.send(Msg::Gone(i, Some(why))).ok();
            return agent;
        }
    };
    let t = tx.clone();
    let stdout = started.stdout;
    std::thread::spawn(move || {
        let r = Tee {
            r: stdout,
            tx: tee.then(|| t.clone()),
            node: i,
        };
        read_staged(i, r, &opts, &batches, seat, &t)
    });
    let t = tx.clone();
    let last = agent.last_stderr.clone();
    let stderr = started.stderr;
    agent.stderr_reader = Some(std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut l) = last.lock() {
                *l = Some(line.clone());
            }
            t.send(Msg::Stderr(i, line)).ok();
        }
    }));
    agent.link = Some(started.link);
    agent
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

/// Reads one agent's stream to its end: the one place where an agent's
/// bytes become recording items, whoever carried them, and its stage runs.
fn read_staged(
    i: usize,
    r: impl Read,
    opts: &StageOptions,
    batches: &Batches,
    seat: Seat,
    tx: &Sender<Msg>,
) {
    stage::read_staged(r, opts, batches, seat, |s| {
        let m = match s {
            FromNode::Start(h) => Msg::Start(i, h),
            FromNode::Staged(items) => Msg::Staged(i, items),
            FromNode::Ended(why) => Msg::Gone(i, why),
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
    /// Where emptied batches go back to the readers.
    batches: Batches,
    /// Keeps the readers together, as far as the merge keeps points.
    gate: Arc<Gate>,
    quiet: bool,
    status: Status,
    /// Per node: when its event count was last taken, and the count.
    rates: Vec<(Instant, u64)>,
    /// The nodes whose agent could not start or ended with a failure
    /// before the session stopped them.
    failed: Vec<String>,
    stopping: bool,
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
            Msg::Start(n, h) => {
                let client = env!("CARGO_PKG_VERSION");
                if let Some(w) = version_skew(&self.agents[n].name, &h.calitrace_version, client) {
                    eprintln!("calitrace: {w}");
                }
                self.cluster.start_staged(n, *h, out)
            }
            Msg::Staged(n, mut items) => {
                self.cluster.staged(n, items.drain(..), out);
                self.batches.put(items);
                self.gate.keep_within(self.cluster.journey_span_ns());
            }
            Msg::Gone(n, why) => self.gone(n, why, out)?,
            Msg::Stderr(n, line) => {
                if !self.quiet {
                    // The agent's own lines start with its name too.
                    let line = line.strip_prefix("calitrace: ").unwrap_or(&line);
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
        let failure = a.link.as_mut().and_then(|l| l.failure());
        let why = if failure.is_some() || why.is_some() {
            let mut parts: Vec<String> = Vec::new();
            parts.extend(why);
            parts.extend(failure);
            parts.extend(a.last_words());
            Some(parts.join("; "))
        } else {
            None
        };
        if let Some(w) = &why {
            eprintln!("calitrace: {}: agent ended: {w}", a.name);
            if !self.stopping {
                self.failed.push(a.name.clone());
            }
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
        self.stopping = true;
        for a in self.agents.iter_mut() {
            if let Some(l) = &mut a.link {
                l.close_stdin();
            }
        }
        self.take_until_gone(rx, Instant::now() + STOP_GRACE)?;
        for a in self.agents.iter_mut().filter(|a| !a.gone) {
            if let Some(l) = &mut a.link {
                l.kill();
            }
            eprintln!("calitrace: {}: agent did not stop in time: killed", a.name);
        }
        // A killed agent's stream ends too: what its stage still held.
        self.take_until_gone(rx, Instant::now() + KILLED_GRACE)
    }

    /// Takes messages until every agent's stream ended, or `until`.
    fn take_until_gone(&mut self, rx: &Receiver<Msg>, until: Instant) -> Result<()> {
        while !self.agents.iter().all(|a| a.gone) && Instant::now() < until {
            let mut out = Vec::new();
            match rx.recv_timeout(TICK) {
                Ok(m) => self.take(m, &mut out)?,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.sink.records(&out)?;
        }
        Ok(())
    }
}

/// A warning when a node's agent is another calitrace version than the
/// client: the stream is read as the client's version writes it, and what
/// either side names may differ (an old DaemonSet image, a newer client).
fn version_skew(node: &str, agent: &str, client: &str) -> Option<String> {
    (agent != client).then(|| {
        format!(
            "{node}: the agent is calitrace {agent}, this client {client}: \
             upgrade the older one (the DaemonSet's image, or --image) if anything looks amiss"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::version_skew;

    #[test]
    fn a_version_skew_names_both_versions() {
        assert_eq!(version_skew("node-a", "0.1.0", "0.1.0"), None);
        let w = version_skew("node-b", "0.0.9", "0.1.0").unwrap();
        assert!(
            w.starts_with("node-b: the agent is calitrace 0.0.9, this client 0.1.0"),
            "{w}"
        );
    }
}
