//! Synthetic nodes: their agents are no processes. An exec of `calitrace
//! agent` into an agent pod on such a node prints the real agent's stderr
//! lines and streams, on stdout, the node's share of one fleet's pod-to-pod
//! traffic ([`crate::fleet`]: its realistic header, then its events as they
//! happen, paced at the fleet's rate: a tick and a flushed chunk every
//! 100 ms), until the client closes stdin or goes; then the stream's end,
//! as an agent that stops writes it. `calitrace status` answers as on a node
//! that can be traced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tracer_common::{Event, kind};
use tracer_user::events::Input;
use tracer_user::recording::format::End;
use tracer_user::recording::writer::Recorder;
use tracer_user::run::status::NodeStatus;

use super::State;
use super::exec::{close, exit_status, frame};
use crate::fleet::{self, Shared, Traffic};

/// How often the fleet's traffic is handed to the agents.
const SLICE: Duration = Duration::from_millis(100);
/// Slices an agent may fall behind by before its next ones are lost.
const BACKLOG: usize = 8;
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One stretch of a node's traffic: its events, and the time it ends.
struct Slice {
    events: Vec<Event>,
    end_ns: u64,
}

/// The synthetic nodes' traffic: one generator for the fleet, each agent
/// that streams takes its node's share.
pub struct Fleet {
    /// The nodes' names, in their fleet order ([`fleet::name`]).
    pub names: Vec<String>,
    /// Events per second per node.
    pub rate: u64,
    agents: Mutex<Vec<Option<mpsc::Sender<Slice>>>>,
    /// Events handed to agents, and those lost because one fell behind.
    pub sent: AtomicU64,
    pub lost: AtomicU64,
    stop: AtomicBool,
}

impl Fleet {
    /// A fleet of `nodes` synthetic nodes at `rate` events/s each; its
    /// traffic runs while it lives.
    pub fn start(nodes: usize, rate: u64) -> Arc<Fleet> {
        let f = Arc::new(Fleet {
            names: (0..nodes).map(fleet::name).collect(),
            rate,
            agents: Mutex::new((0..nodes).map(|_| None).collect()),
            sent: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&f);
        std::thread::spawn(move || generate(weak, nodes, rate));
        f
    }

    pub fn index(&self, node: &str) -> Option<usize> {
        self.names.iter().position(|n| n == node)
    }

    fn subscribe(&self, node: usize) -> mpsc::Receiver<Slice> {
        let (tx, rx) = mpsc::channel(BACKLOG);
        self.agents.lock().unwrap()[node] = Some(tx);
        rx
    }

    fn unsubscribe(&self, node: usize) {
        self.agents.lock().unwrap()[node] = None;
    }

    /// Hands each streaming agent its share of a stretch.
    fn hand_out(&self, slices: Vec<Vec<Event>>, end_ns: u64) {
        let mut agents = self.agents.lock().unwrap();
        for (agent, events) in agents.iter_mut().zip(slices) {
            let Some(tx) = agent else { continue };
            let n = events.len() as u64;
            match tx.try_send(Slice { events, end_ns }) {
                Ok(()) => self.sent.fetch_add(n, Ordering::Relaxed),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.lost.fetch_add(n, Ordering::Relaxed)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    *agent = None;
                    0
                }
            };
        }
    }

    fn streaming(&self) -> bool {
        self.agents.lock().unwrap().iter().any(Option::is_some)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The fleet's clock runs with the wall clock; its traffic is made only
/// while some agent streams.
fn generate(fleet: Weak<Fleet>, nodes: usize, rate: u64) {
    let mut traffic = Traffic::new(nodes, rate, 0x5eed);
    let (began, origin) = (Instant::now(), traffic.t);
    loop {
        std::thread::sleep(SLICE);
        let Some(f) = fleet.upgrade() else { return };
        if f.stop.load(Ordering::Relaxed) {
            return;
        }
        let end_ns = origin + began.elapsed().as_nanos() as u64;
        if f.streaming() {
            let slices = traffic.until(end_ns);
            f.hand_out(slices, end_ns);
        } else {
            traffic.skip_to(end_ns);
        }
    }
}

/// What a synthetic agent has sent, for its stream's end.
#[derive(Default)]
struct Sent {
    tc: u64,
    drops: u64,
}

impl Sent {
    fn end(&self, lost: u64) -> End {
        let events: BTreeMap<String, u64> = [
            ("tc_seen", self.tc),
            ("tc", self.tc),
            ("kfree_skb_seen", self.drops),
            ("kfree_skb", self.drops),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        End {
            events,
            lost,
            interfaces: Some(fleet::PODS as usize + 1),
        }
    }
}

/// The real agent's stderr lines up to its stream's start.
fn agent_lines(node: &str) -> Vec<String> {
    let ifaces = fleet::PODS + 1;
    vec![
        format!("calitrace: attached tc (tcx): {ifaces} interface(s)"),
        "calitrace: netfilter attribution: exact via fexit nf_hook_slow (rule from counters)"
            .into(),
        "calitrace: iptables command uses nft; Calico's cali-* chains: nft".into(),
        format!(
            "calitrace: tracing on {node} (netns {}, {} pod namespace(s), {ifaces} interface(s)); Ctrl-C to stop",
            crate::synth::NODE_NETNS,
            fleet::PODS
        ),
        format!("calitrace: agent on {node}: recording stream on stdout"),
    ]
}

/// Runs `command` as a synthetic node `node` would: the agent, or status.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    fleet: Arc<Fleet>,
    node: usize,
    command: Vec<String>,
    v5: bool,
    first_channel: u8,
    state: Arc<Mutex<State>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, source) = ws.split();
    sink.send(Message::binary(vec![first_channel])).await.ok();
    let code = match command.get(1).map(String::as_str) {
        Some("agent") => {
            let agent = Agent {
                fleet,
                node,
                v5,
                state,
            };
            match agent.stream(&mut sink, source).await {
                Some(code) => code,
                None => return, // the client went
            }
        }
        Some("status") => {
            let line = status_line();
            sink.send(frame(1, line.as_bytes())).await.ok();
            0
        }
        _ => {
            let m = format!("calitrace: synthetic node: {command:?} is not simulated\n");
            sink.send(frame(2, m.as_bytes())).await.ok();
            2
        }
    };
    let st = exit_status(code, &command);
    sink.send(frame(3, st.to_string().as_bytes())).await.ok();
    close(&mut sink).await;
}

/// `calitrace status` on a node that can be traced.
fn status_line() -> String {
    let s = NodeStatus {
        version: VERSION.into(),
        kernel: "6.8.0-synthetic".into(),
        cannot_trace: None,
        dataplane: "Calico iptables dataplane (felix)".into(),
        failed_checks: Vec::new(),
    };
    let mut v = serde_json::to_value(&s).expect("a status");
    v["type"] = "node_status".into();
    format!("{v}\n")
}

/// One synthetic agent's stream.
struct Agent {
    fleet: Arc<Fleet>,
    node: usize,
    v5: bool,
    state: Arc<Mutex<State>>,
}

impl Agent {
    /// Streams until stdin closes (the exit code: the stream ended) or the
    /// client goes (None).
    async fn stream<W, R>(self, sink: &mut W, mut source: R) -> Option<i32>
    where
        W: futures_util::Sink<Message> + Unpin,
        R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        let name = &self.fleet.names[self.node];
        for line in agent_lines(name) {
            send(sink, 2, format!("{line}\n").as_bytes()).await.ok()?;
        }
        let out = Shared::default();
        let mut header = fleet::header(self.node);
        header.calitrace_version = VERSION.into();
        let mut rec = Recorder::stream(Box::new(out.clone()), &header, Duration::from_secs(3600))
            .expect("a recorder");
        send(sink, 1, &take(&out)).await.ok()?;
        let mut slices = self.fleet.subscribe(self.node);
        let mut sent = Sent::default();
        let stdin_closed = loop {
            tokio::select! {
                s = slices.recv() => {
                    let Some(s) = s else { break true };
                    record(&mut rec, &s, &mut sent);
                    if send(sink, 1, &take(&out)).await.is_err() { break false; }
                }
                m = source.next() => match m {
                    Some(Ok(Message::Binary(b))) if b.first() == Some(&0) => {
                        self.state.lock().unwrap().stdin_bytes += b.len() as u64 - 1;
                    }
                    Some(Ok(Message::Binary(b))) if self.v5 && b.first() == Some(&255) && b.get(1) == Some(&0) => break true,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break false,
                    Some(Ok(_)) => {}
                },
            }
        };
        self.fleet.unsubscribe(self.node);
        if !stdin_closed {
            return None;
        }
        rec.finish(&sent.end(0)).expect("the stream's end");
        send(sink, 1, &take(&out)).await.ok()?;
        Some(0)
    }
}

/// A stretch of traffic into the stream: its events, a tick at its end.
fn record(rec: &mut Recorder, s: &Slice, sent: &mut Sent) {
    for e in &s.events {
        match e.kind {
            kind::DROP => sent.drops += 1,
            _ => sent.tc += 1,
        }
        rec.record(&[], &Input::Event(*e)).expect("an event");
    }
    rec.record(&[], &Input::Tick(s.end_ns)).expect("a tick");
    rec.flush().expect("a flush");
}

fn take(out: &Shared) -> Vec<u8> {
    std::mem::take(&mut *out.0.lock().unwrap())
}

/// Sends `data` on channel `ch`, in frames of at most 32 KiB.
async fn send<W>(sink: &mut W, ch: u8, data: &[u8]) -> Result<(), ()>
where
    W: futures_util::Sink<Message> + Unpin,
{
    for chunk in data.chunks(32 * 1024) {
        sink.send(frame(ch, chunk)).await.map_err(|_| ())?;
    }
    Ok(())
}
