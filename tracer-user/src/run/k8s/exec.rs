//! `calitrace agent` in an agent pod over the API server's exec WebSocket
//! (`v5.channel.k8s.io`, else v4): its stdout is the recording stream, its
//! stderr its messages; a keep-alive byte goes to its stdin every few
//! seconds, and closing its stdin stops it.

use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::{AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::error::{Call, explain};
use super::podspec::CONTAINER;
use crate::run::agent::KEEPALIVE_EVERY;
use crate::run::cluster::session::{AgentLink, Started};

/// Bytes of stdout the client holds before the agent's writes wait.
const STDOUT_BUFFER: usize = 1 << 20;

/// Starts `command` in the agent container of `pod`.
pub async fn start(
    api: &Api<Pod>,
    namespace: &str,
    pod: &str,
    command: &[String],
) -> anyhow::Result<Started> {
    let params = AttachParams::default()
        .container(CONTAINER)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .max_stdout_buf_size(STDOUT_BUFFER);
    let mut process = api
        .exec(pod, command, &params)
        .await
        .map_err(|e| explain(e, Call::new("create", "pods/exec", Some(namespace))))?;
    let stdin = process.stdin().map(keep_alive);
    let stdout = chunks(process.stdout());
    let stderr = chunks(process.stderr());
    let (tx, status) = mpsc::channel();
    if let Some(s) = process.take_status() {
        tokio::spawn(async move {
            tx.send(s.await).ok();
        });
    }
    Ok(Started {
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        link: Box::new(Exec {
            stdin,
            process,
            status,
            stopping: false,
        }),
    })
}

/// Runs `command` in the agent container of `pod` to its end (no stdin):
/// its stdout, its stderr, and how it failed if it did.
pub async fn output(
    api: &Api<Pod>,
    namespace: &str,
    pod: &str,
    command: &[String],
) -> anyhow::Result<(String, String, Option<String>)> {
    let params = AttachParams::default()
        .container(CONTAINER)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let mut process = api
        .exec(pod, command, &params)
        .await
        .map_err(|e| explain(e, Call::new("create", "pods/exec", Some(namespace))))?;
    let status = process.take_status();
    let (mut out, mut err) = (String::new(), String::new());
    let (stdout, stderr) = (process.stdout(), process.stderr());
    let read_out = async {
        if let Some(mut r) = stdout {
            r.read_to_string(&mut out).await.ok();
        }
    };
    let read_err = async {
        if let Some(mut r) = stderr {
            r.read_to_string(&mut err).await.ok();
        }
    };
    tokio::join!(read_out, read_err);
    let failure = match status {
        Some(s) => s.await.and_then(failed),
        None => None,
    };
    Ok((out, err, failure))
}

/// How a command failed, from the exit Status of exec's error channel
/// (None: it succeeded).
fn failed(s: Status) -> Option<String> {
    (s.status.as_deref() == Some("Failure")).then(|| match (s.message, s.reason) {
        (Some(m), _) if !m.is_empty() => m,
        (_, r) => format!("exec failed: {}", r.unwrap_or_default()),
    })
}

/// Writes a keep-alive byte to the agent's stdin now and every
/// [`KEEPALIVE_EVERY`] (an agent whose client is cut off without the
/// stream closing then stops on its own) until told to close it.
fn keep_alive(mut stdin: impl AsyncWrite + Unpin + Send + 'static) -> oneshot::Sender<()> {
    let (close, mut closing) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(KEEPALIVE_EVERY);
        loop {
            tokio::select! {
                _ = &mut closing => break,
                _ = beat.tick() => {
                    if stdin.write_all(b"\n").await.is_err() {
                        return;
                    }
                }
            }
        }
        // The end of stdin reaches the agent as v5's close of channel 0
        // (v4 has none: the WebSocket itself closes).
        stdin.shutdown().await.ok();
    });
    close
}

/// An async reader, read on a thread of the session: chunks go through a
/// channel.
fn chunks(r: Option<impl AsyncRead + Unpin + Send + 'static>) -> ChunkReader {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    if let Some(mut r) = r {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || tx.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        });
    }
    ChunkReader {
        rx,
        chunk: Vec::new(),
        at: 0,
    }
}

struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(c) => (self.chunk, self.at) = (c, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

struct Exec {
    /// Closes the agent's stdin (dropped: likewise).
    stdin: Option<oneshot::Sender<()>>,
    process: AttachedProcess,
    /// The Status the API server sends on the error channel when the
    /// command ends (None: the stream closed without one).
    status: mpsc::Receiver<Option<Status>>,
    stopping: bool,
}

impl AgentLink for Exec {
    fn close_stdin(&mut self) {
        self.stopping = true;
        if let Some(close) = self.stdin.take() {
            close.send(()).ok();
        }
    }

    fn failure(&mut self) -> Option<String> {
        match self.status.recv_timeout(Duration::from_secs(2)) {
            Ok(Some(s)) => failed(s),
            _ if self.stopping => None,
            _ => Some("the exec stream closed without the agent's exit status".into()),
        }
    }

    fn kill(&mut self) {
        self.process.abort();
    }
}
