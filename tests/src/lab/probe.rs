//! Whether traffic flows: ping and a TCP echo between namespaces of a lab.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::commands::spawn_in_netns;
use super::{Lab, Pod};

static PROBE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Lab {
    /// Pings `dst_ip` from `from` (`ping -c count -i 0.2 -W 1`); true if at least one reply
    /// came back.
    pub fn ping(&self, from: &Pod, dst_ip: &str, count: u32) -> bool {
        self.ping_from(&from.netns, dst_ip, count)
    }

    /// Like [`Lab::ping`], from any namespace of this lab (e.g. a node).
    pub fn ping_from(&self, netns: &str, dst_ip: &str, count: u32) -> bool {
        let count = count.max(1).to_string();
        match self.run(
            netns,
            &[
                "ping", "-n", "-q", "-c", &count, "-i", "0.2", "-W", "1", dst_ip,
            ],
        ) {
            Ok(out) => out.status.success(),
            Err(_) => false,
        }
    }

    /// Pings `dst_ip` from `netns` once with `payload` bytes (IP packet: `payload` + 28)
    /// and Don't Fragment set; true if the reply came back.
    pub fn ping_df(&self, netns: &str, dst_ip: &str, payload: usize) -> bool {
        let size = payload.to_string();
        let args = [
            "ping", "-n", "-q", "-c", "1", "-W", "1", "-M", "do", "-s", &size, dst_ip,
        ];
        self.run(netns, &args).is_ok_and(|out| out.status.success())
    }

    /// Real TCP echo check from pod `from` to `to`'s address on `port`; true on success.
    /// Never takes much longer than `timeout`.
    pub fn tcp_check(&self, from: &Pod, to: &Pod, port: u16, timeout: Duration) -> bool {
        self.tcp_probe(&from.netns, &to.netns, &to.ip, port, timeout)
            .is_ok()
    }

    /// TCP echo check with the reason for a failure: a listener on `0.0.0.0:port` (port 0
    /// picks a free one) in `server_netns`, a client in `client_netns` that connects to
    /// `dst_ip`, sends a unique token, half-closes and expects the token echoed back.
    pub fn tcp_probe(
        &self,
        client_netns: &str,
        server_netns: &str,
        dst_ip: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<()> {
        self.tcp_transfer(client_netns, server_netns, dst_ip, port, 0, timeout)
    }

    /// Like [`Lab::tcp_probe`] with the token padded to `bytes` bytes each way (full-size
    /// segments, e.g. to find an MTU black hole that a small token slips through).
    pub fn tcp_transfer(
        &self,
        client_netns: &str,
        server_netns: &str,
        dst_ip: &str,
        port: u16,
        bytes: usize,
        timeout: Duration,
    ) -> Result<()> {
        self.check_owned(client_netns)?;
        self.check_owned(server_netns)?;
        let dst: IpAddr = dst_ip
            .parse()
            .with_context(|| format!("bad IP address {dst_ip:?}"))?;
        let deadline = Instant::now() + timeout;
        let mut token = format!(
            "calitrace-lab {} probe {} from {client_netns}",
            self.id,
            PROBE_COUNTER.fetch_add(1, Ordering::Relaxed)
        )
        .into_bytes();
        let pad = bytes.saturating_sub(token.len());
        token.extend((0..pad).map(|i| b'a' + (i % 26) as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<u16>();

        let server_stop = stop.clone();
        let server = spawn_in_netns(server_netns, move || {
            echo_server(port, ready_tx, &server_stop, deadline)
        })?;
        let client = spawn_in_netns(client_netns, move || {
            let port = ready_rx
                .recv_timeout(remaining(deadline))
                .map_err(|_| anyhow!("listener did not come up"))?;
            echo_client(SocketAddr::new(dst, port), &token, deadline)
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                let _ = server.join();
                return Err(e);
            }
        };

        let client_res = join_flat(client);
        stop.store(true, Ordering::Relaxed);
        let server_res = join_flat(server);
        match (client_res, server_res) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(c), Ok(())) => Err(c.context("TCP client")),
            (Ok(()), Err(s)) => Err(s.context("TCP server")),
            (Err(c), Err(s)) => Err(c.context(format!("TCP client (server: {s:#})"))),
        }
    }
}

/// Accepts one connection on `0.0.0.0:port` (telling `ready` the port) and echoes
/// what it reads until the client half-closes; gives up at `deadline` or on `stop`.
fn echo_server(
    port: u16,
    ready: mpsc::Sender<u16>,
    stop: &AtomicBool,
    deadline: Instant,
) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).context("bind")?;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let _ = ready.send(port);
    loop {
        match listener.accept() {
            Ok((mut s, _peer)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(remaining(deadline)))?;
                s.set_write_timeout(Some(remaining(deadline)))?;
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).context("server read")?;
                s.write_all(&buf).context("server write")?;
                let _ = s.shutdown(Shutdown::Both);
                return Ok(());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                if stop.load(Ordering::Relaxed) {
                    bail!("client gave up");
                }
                if Instant::now() >= deadline {
                    bail!("no connection accepted before the deadline");
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("accept"),
        }
    }
}

/// Connects to `addr`, sends `token`, half-closes and expects `token` back.
fn echo_client(addr: SocketAddr, token: &[u8], deadline: Instant) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, remaining(deadline))
        .with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(remaining(deadline)))?;
    s.set_write_timeout(Some(remaining(deadline)))?;
    s.write_all(token).context("client write")?;
    s.shutdown(Shutdown::Write).context("client shutdown")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).context("client read")?;
    if buf != token {
        bail!("echo mismatch: got {} bytes", buf.len());
    }
    Ok(())
}

fn join_flat<T>(h: thread::JoinHandle<Result<Result<T>>>) -> Result<T> {
    match h.join() {
        Ok(r) => r?,
        Err(_) => bail!("thread panicked"),
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}
