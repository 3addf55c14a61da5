//! Running the real `calitrace` binary inside a lab netns and reading its JSON lines.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The binary under test: `$CALITRACE_BIN`, else `target/<profile>/calitrace`
/// next to this test executable (which lives in `target/<profile>/deps`).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CALITRACE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("calitrace");
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// A running `calitrace`, started with `ip netns exec NETNS calitrace ...`.
pub struct Trace {
    child: Option<Child>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub lines: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

fn pump(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs calitrace to completion (for error cases) with a time limit.
pub fn run(
    netns: Option<&str>,
    prefix: &[&str],
    args: &[&str],
    limit: Duration,
) -> Result<Finished> {
    let mut t = Trace::spawn(netns, prefix, args)?;
    t.wait(limit)
}

impl Trace {
    fn spawn(netns: Option<&str>, prefix: &[&str], args: &[&str]) -> Result<Trace> {
        let bin = binary();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c.args(prefix);
                c.arg(&bin);
                c
            }
            None if !prefix.is_empty() => {
                let mut c = Command::new(prefix[0]);
                c.args(&prefix[1..]);
                c.arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = pump(child.stdout.take().unwrap());
        let stderr = pump(child.stderr.take().unwrap());
        Ok(Trace {
            child: Some(child),
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        })
    }

    /// Starts `calitrace --output json ARGS` in `netns` and waits until it traces.
    pub fn start(netns: &str, args: &[&str]) -> Result<Trace> {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let mut t = Trace::spawn(Some(netns), &[], &full)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match t.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let ready = line.contains("tracing on");
                    t.stderr_seen.push(line);
                    if ready {
                        return Ok(t);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let f = t.wait(Duration::from_secs(5))?;
                    bail!(
                        "calitrace exited before tracing ({}): {}",
                        f.status,
                        f.stderr
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "calitrace did not start tracing within 60 s: {}",
                    t.stderr_seen.join("\n")
                );
            }
        }
    }

    /// Process id of the running calitrace (`ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` and collects the output.
    pub fn stop_with(mut self, signal: i32) -> Result<Finished> {
        if let Some(c) = &self.child {
            // `ip netns exec` execs calitrace, so this pid is calitrace.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
        self.wait(Duration::from_secs(30))
    }

    /// Ctrl-C and collect.
    pub fn stop(self) -> Result<Finished> {
        self.stop_with(libc::SIGINT)
    }

    fn wait(&mut self, limit: Duration) -> Result<Finished> {
        let mut child = self.child.take().context("already waited")?;
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("calitrace did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = Vec::new();
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_secs(2)) {
            out.push(l);
        }
        let mut err = std::mem::take(&mut self.stderr_seen);
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            err.push(l);
        }
        let lines = out
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok(Finished {
            status,
            lines,
            stdout: out.join("\n"),
            stderr: err.join("\n"),
        })
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Finished {
    pub fn of_type(&self, ty: &str) -> Vec<&Value> {
        self.lines.iter().filter(|v| v["type"] == ty).collect()
    }

    pub fn drops(&self) -> Vec<&Value> {
        self.of_type("drop")
    }

    pub fn diagnoses(&self) -> Vec<&Value> {
        self.of_type("diagnosis")
    }

    /// Lines whose src and dst are these two addresses, in either direction.
    pub fn between<'a>(items: &[&'a Value], a: &str, b: &str) -> Vec<&'a Value> {
        items
            .iter()
            .copied()
            .filter(|v| (v["src"] == a && v["dst"] == b) || (v["src"] == b && v["dst"] == a))
            .collect()
    }

    /// A short dump for assertion messages.
    pub fn dump(&self) -> String {
        let interesting: Vec<String> = self
            .lines
            .iter()
            .filter(|v| v["type"] != "packet")
            .map(|v| v.to_string())
            .collect();
        format!(
            "status {}\n--- stderr\n{}\n--- non-packet lines\n{}\n--- {} lines in all",
            self.status,
            self.stderr,
            interesting.join("\n"),
            self.lines.len()
        )
    }
}
