//! `calitrace standby` run in a lab node until a signal: what the agent
//! DaemonSet's container does.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The last line standby prints before it waits.
pub const WAITING: &str = "calitrace: standby: waiting";

/// How one standby run went.
#[derive(Debug)]
pub struct Standby {
    pub status: ExitStatus,
    /// Its stdout: the doctor's report and the waiting line.
    pub stdout: String,
    pub stderr: String,
    /// From the signal to its exit.
    pub exit_after: Duration,
}

/// Starts `ip netns exec NETNS BIN standby ARGS`, waits until it says it
/// waits, sends `signal` and waits (at most 10 s) for it to exit.
pub fn until_signal(bin: &Path, netns: &str, args: &[&str], signal: i32) -> Result<Standby> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(bin)
        .arg("standby")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {} standby", bin.display()))?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().context("stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let waiting = loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let done = line.starts_with(WAITING);
                out.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !waiting {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "standby never said it waits:\n{}\nstderr: {}",
            out.join("\n"),
            err_thread.join().unwrap_or_default()
        );
    }
    // Still there after printing: it waits, it did not exit.
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = child.try_wait()? {
        bail!("standby exited by itself ({status}) instead of waiting");
    }
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the binary).
    unsafe { libc::kill(child.id() as i32, signal) };
    let signalled = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("standby did not exit within 10 s of signal {signal}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let exit_after = signalled.elapsed();
    out.extend(lines.try_iter());
    Ok(Standby {
        status,
        stdout: out.join("\n"),
        stderr: err_thread.join().unwrap_or_default(),
        exit_after,
    })
}
