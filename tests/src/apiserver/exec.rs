//! Exec over WebSocket as the API server does it: the subprotocol chosen
//! from the client's list, binary frames whose first byte is the channel
//! (0 stdin, 1 stdout, 2 stderr, 3 the error channel's Status; v5 adds 255:
//! close a channel). The command runs for real: `calitrace agent` in the
//! netns of the pod's lab node.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use tracer_user::run::registry;

use super::objects::{self, status};
use super::routes::{Body, json, refuse};
use super::{Protocols, State};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";

pub fn upgrade(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    ns: &str,
    name: &str,
    q: &[(String, String)],
) -> Response<Body> {
    let node = match reachable_pod(&state, ns, name) {
        Ok(n) => n,
        Err(refused) => return *refused,
    };
    let (protocol, accept) = match negotiate(&req, &state, name) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let synthetic = node.synthetic.clone();
    let (netns, bin) = (node.netns, state.lock().unwrap().calitrace.clone());
    let container = Container {
        state: state.clone(),
        pod: (ns.to_string(), name.to_string()),
    };
    let command: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    state
        .lock()
        .unwrap()
        .exec_protocols
        .push(protocol.to_string());
    let v5 = protocol == V5;
    let asked = |k: &str| q.iter().any(|(n, v)| n == k && (v == "true" || v == "1"));
    let streams = Streams {
        stdout: asked("stdout"),
        stderr: asked("stderr"),
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            match synthetic {
                Some((fleet, i)) => {
                    let first = streams.first_channel();
                    super::synthetic::run(ws, fleet, i, command, v5, first, container.state).await
                }
                None => run(ws, &netns, &bin, &command, v5, streams, container).await,
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The pod's node, where RBAC allows the exec and its kubelet can be
/// dialled; else the API server's answer.
fn reachable_pod(
    state: &Arc<Mutex<State>>,
    ns: &str,
    name: &str,
) -> Result<PodNode, Box<Response<Body>>> {
    // The WebSocket upgrade is a GET: RBAC checks `get` (and newer servers
    // `create`) on pods/exec.
    for verb in ["get", "create"] {
        if let Some(r) = refuse(state, verb, "pods/exec", Some(name), Some(ns)) {
            return Err(Box::new(r));
        }
    }
    let Some(node) = pod_node(state, ns, name) else {
        let m = format!("pods \"{name}\" not found");
        return Err(Box::new(json(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", &m, "pods", Some(name)),
        )));
    };
    if node.kubelet_unreachable {
        // What the API server answers when it cannot dial the kubelet
        // (`kubectl exec` prints "Error from server: error dialing backend").
        let m = format!(
            "error dialing backend: dial tcp {}:10250: connect: connection refused",
            node.address
        );
        return Err(Box::new(json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &status(500, "", &m, "pods", Some(name)),
        )));
    }
    Ok(node)
}

/// The exec subprotocol both sides speak and the WebSocket accept key; else
/// the API server's answer.
fn negotiate(
    req: &Request<Incoming>,
    state: &Arc<Mutex<State>>,
    name: &str,
) -> Result<(&'static str, String), Box<Response<Body>>> {
    let offered: Vec<String> = req
        .headers()
        .get(http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    let allowed: &[&'static str] = match state.lock().unwrap().protocols {
        Protocols::V5 => &[V5, V4],
        Protocols::V4Only => &[V4],
    };
    let bad = |m: &str| {
        json(
            StatusCode::BAD_REQUEST,
            &status(400, "BadRequest", m, "pods", Some(name)),
        )
    };
    let Some(protocol) = allowed.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return Err(Box::new(bad("no supported exec subprotocol offered")));
    };
    let Some(key) = req.headers().get(http::header::SEC_WEBSOCKET_KEY) else {
        return Err(Box::new(bad("exec needs a WebSocket upgrade")));
    };
    Ok((protocol, derive_accept_key(key.as_bytes())))
}

/// Where a pod's exec runs: its node's lab netns and address, and whether
/// the node's kubelet is unreachable (None: no such pod).
struct PodNode {
    netns: String,
    /// A synthetic node: its fleet and its place there.
    synthetic: Option<(Arc<super::synthetic::Fleet>, usize)>,
    address: String,
    kubelet_unreachable: bool,
}

fn pod_node(state: &Arc<Mutex<State>>, ns: &str, name: &str) -> Option<PodNode> {
    let s = state.lock().unwrap();
    let pod = s.pods.get(&(ns.to_string(), name.to_string()))?;
    let node = pod.object["spec"]["nodeName"].as_str().unwrap_or("");
    let known = s.nodes.iter().find(|n| n.name == node);
    let synthetic = s
        .synthetic
        .as_ref()
        .and_then(|f| Some((f.clone(), f.index(node)?)));
    Some(PodNode {
        synthetic,
        netns: known.map(|n| n.netns.clone()).unwrap_or_default(),
        address: known.map(|n| n.address.clone()).unwrap_or_default(),
        kubelet_unreachable: s.unreachable_kubelets.iter().any(|n| n == node),
    })
}

/// The agent command as the node would run it: `/usr/bin/calitrace` is the
/// binary under test and the lab node has no separate host root.
fn agent_argv(command: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = command.iter().skip(1).peekable();
    while let Some(w) = it.next() {
        if w == "--host-root" {
            it.next();
            continue;
        }
        out.push(w.clone());
    }
    out
}

/// The output streams an exec asked for.
struct Streams {
    stdout: bool,
    stderr: bool,
}

impl Streams {
    /// The lowest channel the command's output goes to (3: the status).
    fn first_channel(&self) -> u8 {
        match (self.stdout, self.stderr) {
            (true, _) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }
    }
}

/// The pod's container as its exec'd commands see it: its own files
/// (`CALITRACE_RUN_DIR`, where agents register), and the processes the
/// kubelet kills when the pod goes.
pub struct Container {
    pub state: Arc<Mutex<State>>,
    pub pod: (String, String),
}

impl Container {
    pub fn run_dir(&self) -> std::path::PathBuf {
        let s = self.state.lock().unwrap();
        s.containers.join(format!("{}_{}", self.pod.0, self.pod.1))
    }

    /// `ip netns exec NETNS calitrace ARGS` in this container.
    pub fn std_command(
        &self,
        netns: &str,
        bin: &std::path::Path,
        command: &[String],
    ) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", netns])
            .arg(bin)
            .args(agent_argv(command))
            .env("CALITRACE_RUN_DIR", self.run_dir());
        c
    }

    fn command(
        &self,
        netns: &str,
        bin: &std::path::Path,
        command: &[String],
    ) -> tokio::process::Command {
        tokio::process::Command::from(self.std_command(netns, bin, command))
    }

    /// SIGKILLs what was exec'd into the container and still runs.
    pub fn kill_all(&self) -> Vec<u32> {
        let pids = self
            .state
            .lock()
            .unwrap()
            .execs
            .remove(&self.pod)
            .unwrap_or_default();
        // Those that ended but are not reaped yet are not killed.
        let running: Vec<u32> = pids.into_iter().filter(|p| registry::runs(*p)).collect();
        for pid in &running {
            // SAFETY: kill(2) with a pid and a signal number; no memory is shared.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        running
    }

    fn started(&self, pid: Option<u32>) {
        if let Some(pid) = pid {
            let mut s = self.state.lock().unwrap();
            s.execs.entry(self.pod.clone()).or_default().push(pid);
        }
    }

    fn ended(&self, pid: Option<u32>) {
        let mut s = self.state.lock().unwrap();
        if let Some(pids) = s.execs.get_mut(&self.pod) {
            pids.retain(|p| Some(*p) != pid);
        }
    }
}

async fn run<S>(
    ws: WebSocketStream<S>,
    netns: &str,
    bin: &std::path::Path,
    command: &[String],
    v5: bool,
    streams: Streams,
    container: Container,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let spawned = container
        .command(netns, bin, command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let s = objects::status(500, "InternalError", &format!("exec: {e}"), "pods", None);
            sink.send(frame(3, s.to_string().as_bytes())).await.ok();
            close(&mut sink).await;
            return;
        }
    };
    let pid = child.id();
    container.started(pid);
    // As the kubelet: one empty frame on the lowest channel it writes to,
    // that the client knows the streams are up.
    sink.send(Message::binary(vec![streams.first_channel()]))
        .await
        .ok();
    let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    let out = pump(child.stdout.take().expect("stdout"), 1, tx.clone());
    let err = pump(child.stderr.take().expect("stderr"), 2, tx);
    let mut stdin = child.stdin.take();
    let mut client_open = true;
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some((ch, data)) => {
                    if sink.send(frame(ch, &data)).await.is_err() { break; }
                }
                None => break,
            },
            m = source.next(), if client_open => match m {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&0) => {
                    container.state.lock().unwrap().stdin_bytes += b.len() as u64 - 1;
                    if let Some(w) = &mut stdin { w.write_all(&b[1..]).await.ok(); }
                }
                Some(Ok(Message::Binary(b))) if v5 && b.first() == Some(&255) && b.get(1) == Some(&0) => {
                    stdin = None;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client went: the command's stdin closes with it.
                    stdin = None;
                    client_open = false;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(rx);
    out.await.ok();
    err.await.ok();
    let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(-1);
    container.ended(pid);
    let st = exit_status(code, command);
    if client_open {
        sink.send(frame(3, st.to_string().as_bytes())).await.ok();
        close(&mut sink).await;
    }
}

/// Ends the WebSocket as the API server does: a close frame with status
/// 1000 (kubectl reports a close without a status as an error).
pub(super) async fn close<S>(sink: &mut S)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    sink.send(Message::Close(Some(normal))).await.ok();
    sink.close().await.ok();
}

/// The error channel's Status for a command that exited with `code`.
pub(super) fn exit_status(code: i32, command: &[String]) -> Value {
    if code == 0 {
        return objects::success();
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
        "reason": "NonZeroExitCode",
        "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
    })
}

pub(super) fn frame(ch: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(ch);
    v.extend_from_slice(data);
    Message::binary(v)
}

fn pump(
    mut r: impl AsyncRead + Unpin + Send + 'static,
    ch: u8,
    tx: mpsc::Sender<(u8, Vec<u8>)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = r.read(&mut buf).await {
            if tx.send((ch, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    })
}
