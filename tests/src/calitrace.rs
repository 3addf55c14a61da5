//! Running the real `calitrace` binary inside a lab netns and reading its JSON lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::Lab;

/// The binary under test: `$CALITRACE_BIN`, else `calitrace` next to this executable
/// or one directory up (test executables live in `target/<profile>/deps`).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CALITRACE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("target/<profile>[/deps]");
    let candidates = [Some(dir), dir.parent()].map(|d| d.map(|d| d.join("calitrace")));
    candidates
        .iter()
        .flatten()
        .find(|bin| bin.exists())
        .unwrap_or_else(|| {
            panic!(
                "{} not built: run the tests with `cargo xtask test`",
                dir.join("calitrace").display()
            )
        })
        .clone()
}

/// How much of calitrace's stdout a [`Trace`] keeps.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// Everything.
    All,
    /// About the last this many bytes (for long runs with millions of lines: the
    /// `stats` line is at the end).
    Tail(usize),
}

/// A running `calitrace`, started with `ip netns exec NETNS calitrace ...`.
pub struct Trace {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    /// Disconnects when the stdout reader has seen the end.
    stdout_done: mpsc::Receiver<()>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    /// Lines of `stderr_seen` that [`Trace::wait_for_stderr`] returned.
    stderr_taken: Vec<usize>,
    /// From spawning to "tracing on" (zero for [`run`]).
    pub ready_after: Duration,
}

/// What a finished run printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub lines: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
    /// How long the exit took: from the signal for [`Trace::stop`], from the start
    /// for [`run`].
    pub waited: Duration,
}

fn pump_lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
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

/// Reads `r` into `into`, keeping what `keep` says; the receiver disconnects at the end.
fn pump_bytes(
    mut r: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
    keep: Keep,
) -> mpsc::Receiver<()> {
    let (done, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _done = done;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = r.read(&mut buf) {
            let mut kept = into.lock().unwrap_or_else(|e| e.into_inner());
            kept.extend_from_slice(&buf[..n]);
            if let Keep::Tail(tail) = keep
                && kept.len() > 2 * tail
            {
                let cut = kept.len() - tail;
                kept.drain(..cut);
            }
        }
    });
    done_rx
}

/// Runs calitrace to completion (for error cases) with a time limit (scaled
/// in the kernel matrix's guests, as [`startup_limit`] says).
pub fn run(
    netns: Option<&str>,
    prefix: &[&str],
    args: &[&str],
    limit: Duration,
) -> Result<Finished> {
    let mut t = Trace::spawn(&binary(), netns, prefix, args, Keep::All)?;
    t.wait(startup_limit(limit))
}

impl Trace {
    fn spawn(
        bin: &Path,
        netns: Option<&str>,
        prefix: &[&str],
        args: &[&str],
        keep: Keep,
    ) -> Result<Trace> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c.args(prefix);
                c.arg(bin);
                c
            }
            None if !prefix.is_empty() => {
                let mut c = Command::new(prefix[0]);
                c.args(&prefix[1..]);
                c.arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stdout_done = pump_bytes(child.stdout.take().unwrap(), stdout.clone(), keep);
        let stderr = pump_lines(child.stderr.take().unwrap());
        Ok(Trace {
            child: Some(child),
            stdout,
            stdout_done,
            stderr,
            stderr_seen: Vec::new(),
            stderr_taken: Vec::new(),
            ready_after: Duration::ZERO,
        })
    }

    /// Starts `calitrace --output json ARGS` in `netns` and waits until it traces.
    pub fn start(netns: &str, args: &[&str]) -> Result<Trace> {
        Trace::start_with(&binary(), netns, args, Keep::All)
    }

    /// Like [`Trace::start`], with another calitrace binary, keeping `keep` of its stdout.
    pub fn start_with(bin: &Path, netns: &str, args: &[&str], keep: Keep) -> Result<Trace> {
        let started = Instant::now();
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let mut t = Trace::spawn(bin, Some(netns), &[], &full, keep)?;
        let limit = startup_limit(Duration::from_secs(60));
        let deadline = started + limit;
        loop {
            match t.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let ready = line.contains("tracing on");
                    t.stderr_seen.push(line);
                    if ready {
                        t.ready_after = started.elapsed();
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
                    "calitrace did not start tracing within {limit:?}: {}",
                    t.stderr_seen.join("\n")
                );
            }
        }
    }

    /// Starts `calitrace --output json cluster` with an agent per `(name,
    /// netns)` (`ip netns exec NETNS calitrace agent ...`) and `args`, and
    /// waits until every agent traces.
    pub fn start_cluster(nodes: &[(&str, &str)], args: &[&str]) -> Result<Trace> {
        let bin = binary();
        let specs: Vec<String> = nodes
            .iter()
            .map(|(name, ns)| format!("{name}=ip netns exec {ns} {}", bin.display()))
            .collect();
        let mut full = vec!["cluster", "--output", "json"];
        for s in &specs {
            full.extend(["--node", s.as_str()]);
        }
        full.extend_from_slice(args);
        Trace::start_agents(&[], &full, nodes.len())
    }

    /// Starts `prefix calitrace ARGS` and returns at once.
    pub fn start_plain(prefix: &[&str], args: &[&str]) -> Result<Trace> {
        Trace::spawn(&binary(), None, prefix, args, Keep::All)
    }

    /// Runs `prefix calitrace ARGS` (a cluster view) and waits until
    /// `agents` agents trace.
    pub fn start_agents(prefix: &[&str], full: &[&str], agents: usize) -> Result<Trace> {
        let bin = binary();
        let started = Instant::now();
        let mut t = Trace::spawn(&bin, None, prefix, full, Keep::All)?;
        let mut ready = 0;
        let limit = startup_limit(Duration::from_secs(90));
        while ready < agents {
            match t.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    ready += usize::from(line.contains("recording stream on stdout"));
                    t.stderr_seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let f = t.wait(Duration::from_secs(5))?;
                    bail!(
                        "calitrace cluster exited before its agents traced ({}): {}",
                        f.status,
                        f.stderr
                    );
                }
            }
            if started.elapsed() > limit {
                bail!(
                    "the agents did not start tracing within {limit:?}: {}",
                    t.stderr_seen.join("\n")
                );
            }
        }
        t.ready_after = started.elapsed();
        Ok(t)
    }

    /// Waits for a stderr line containing `needle` (also one seen already,
    /// before or after lines earlier calls returned, that no earlier call
    /// returned: agents of several nodes say things in any order) and
    /// returns it.
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let found = (0..self.stderr_seen.len())
                .find(|i| !self.stderr_taken.contains(i) && self.stderr_seen[*i].contains(needle));
            if let Some(i) = found {
                self.stderr_taken.push(i);
                return Ok(self.stderr_seen[i].clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no stderr line with {needle:?} within {limit:?}:\n{}",
                    self.stderr_seen.join("\n")
                );
            }
            match self
                .stderr
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => self.stderr_seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "calitrace ended before a stderr line with {needle:?}:\n{}",
                        self.stderr_seen.join("\n")
                    )
                }
            }
        }
    }

    /// The TCX links calitrace holds: (ifindex, `ingress`/`egress`) of each,
    /// from its file descriptors (an interface that went leaves ifindex 0 on
    /// a link still held).
    pub fn tcx_links(&self) -> Vec<(u32, String)> {
        let Some(pid) = self.pid() else {
            return Vec::new();
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            return Vec::new();
        };
        let field = |info: &str, key: &str| -> Option<String> {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        fds.flatten()
            .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
            .filter(|info| field(info, "link_type:").as_deref() == Some("tcx"))
            .filter_map(|info| {
                let ifindex = field(&info, "ifindex:")?.parse().ok()?;
                let dir = field(&info, "attach_type:")?;
                let dir = if dir.contains("ingress") {
                    "ingress"
                } else {
                    "egress"
                };
                Some((ifindex, dir.to_string()))
            })
            .collect()
    }

    /// Process id of the running calitrace (`ip netns exec` execs it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU seconds calitrace has used so far (user + system; 0 once it is gone).
    pub fn cpu_s(&self) -> f64 {
        let Some(pid) = self.pid() else { return 0.0 };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0.0;
        };
        // After the command name (which may hold spaces), utime and stime are the
        // 12th and 13th fields.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (tick(11) + tick(12)) / hz
    }

    /// Sends `signal` and collects the output.
    pub fn stop_with(mut self, signal: i32) -> Result<Finished> {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid, which is calitrace
            // (`ip netns exec` execs it).
            unsafe { libc::kill(c.id() as i32, signal) };
        }
        self.wait(startup_limit(Duration::from_secs(30)))
    }

    /// Ctrl-C and collect.
    pub fn stop(self) -> Result<Finished> {
        self.stop_with(libc::SIGINT)
    }

    fn wait(&mut self, limit: Duration) -> Result<Finished> {
        let mut child = self.child.take().context("already waited")?;
        let began = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if began.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("calitrace did not exit within {limit:?}");
            }
            // Short: the bench times detaching by this.
            std::thread::sleep(Duration::from_millis(2));
        };
        let waited = began.elapsed();
        let _ = self.stdout_done.recv_timeout(Duration::from_secs(2));
        let mut err = std::mem::take(&mut self.stderr_seen);
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            err.push(l);
        }
        let text = std::mem::take(&mut *self.stdout.lock().unwrap_or_else(|e| e.into_inner()));
        let text = String::from_utf8_lossy(&text);
        let out: Vec<&str> = text.lines().collect();
        let lines = out
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok(Finished {
            status,
            lines,
            stdout: out.join("\n"),
            stderr: err.join("\n"),
            waited,
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

    /// The last diagnosis with `code` (its latest count); panics with the
    /// run's output when there is none.
    pub fn diagnosis(&self, code: &str) -> &Value {
        self.diagnoses()
            .into_iter()
            .rev()
            .find(|d| d["code"] == code)
            .unwrap_or_else(|| panic!("no {code}\n{}", self.dump()))
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

/// Asserts that no tc program (TCX or netlink clsact) is left on `iface` of lab node
/// `node`: calitrace detached what it attached.
pub fn assert_nothing_attached(lab: &Lab, node: usize, iface: &str) {
    let out = lab
        .sh(
            &lab.node(node).netns,
            &format!("bpftool -j net show dev {iface}"),
        )
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let tc = v[0]["tc"].as_array().map(Vec::len).unwrap_or(0);
    let tcx = v[0]["tcx"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(tc + tcx, 0, "programs still attached to {iface}: {out}");
}

/// Asserts that no tc program (TCX or netlink clsact) is left on any interface
/// of lab node `node`.
pub fn assert_nothing_attached_in(lab: &Lab, node: usize) {
    let out = lab
        .sh(&lab.node(node).netns, "bpftool -j net show")
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    for kind in ["tc", "tcx"] {
        let left = v[0][kind].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(
            left, 0,
            "{kind} programs still attached in node {node}: {out}"
        );
    }
}

/// How `calitrace probes` says this kernel attributes netfilter drops: its last
/// line, `netfilter attribution: exact ...` or `netfilter attribution: inferred ...`.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// The whole line after `netfilter attribution: `.
    pub line: String,
    /// It starts with `exact`.
    pub exact: bool,
    /// `(backend, "exact"|"inferred")` from the lines under it
    /// (`  legacy: exact (...)`, `  nft: inferred (...)`).
    pub per_backend: Vec<(String, &'static str)>,
}

impl Attribution {
    pub fn parse(probes_output: &str) -> Option<Attribution> {
        let mut lines = probes_output.lines();
        let line = lines
            .by_ref()
            .find_map(|l| l.trim().strip_prefix("netfilter attribution: "))?
            .trim()
            .to_string();
        let exact = line.starts_with("exact");
        if !exact && !line.starts_with("inferred") {
            return None;
        }
        let per_backend = lines
            .map_while(|l| {
                let (backend, how) = l.strip_prefix("  ")?.split_once(": ")?;
                let how = if how.starts_with("exact") {
                    "exact"
                } else if how.starts_with("inferred") {
                    "inferred"
                } else {
                    return None;
                };
                Some((backend.to_string(), how))
            })
            .collect();
        Some(Attribution {
            line,
            exact,
            per_backend,
        })
    }

    /// What a drop by `backend` ("nft" or "legacy") must be attributed as,
    /// as `calitrace probes` says for that backend.
    pub fn expected_for(&self, backend: &str) -> &'static str {
        self.per_backend
            .iter()
            .find(|(b, _)| b == backend)
            .map(|(_, how)| *how)
            .unwrap_or_else(|| panic!("`calitrace probes` says nothing about {backend}: {self:?}"))
    }
}

/// The output of `calitrace probes` on this kernel, found out once per test
/// process: from the file `$CALITRACE_TEST_PROBES` (the VM lane runs
/// `calitrace probes` once per kernel and saves its output there), else by
/// running it.
pub fn probes() -> &'static str {
    static ONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| match std::env::var_os("CALITRACE_TEST_PROBES") {
        Some(path) => std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", PathBuf::from(path).display())),
        None => {
            let f = run(None, &[], &["probes"], Duration::from_secs(120))
                .expect("running calitrace probes");
            assert!(f.status.success(), "calitrace probes failed\n{}", f.dump());
            f.stdout
        }
    })
}

/// What `calitrace probes` says about netfilter attribution on this kernel.
pub fn attribution() -> &'static Attribution {
    static ONCE: std::sync::OnceLock<Attribution> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let output = probes();
        Attribution::parse(output).unwrap_or_else(|| {
            panic!(
                "`calitrace probes` has no `netfilter attribution: exact|inferred` line:\n{output}"
            )
        })
    })
}

/// How long calitrace may take to start tracing: `normal`, or three times
/// that in the kernel matrix's guests (`CALITRACE_TEST_EMULATED`), where
/// qemu emulates the CPU and the guests share the host's cores: there two
/// agents loading their programs at once took over 90 s on 6.1.
pub fn startup_limit(normal: Duration) -> Duration {
    if std::env::var_os("CALITRACE_TEST_EMULATED").is_some() {
        normal * 3
    } else {
        normal
    }
}

#[cfg(test)]
mod tests {
    use super::Attribution;

    #[test]
    fn the_attribution_lines_say_what_to_expect_per_backend() {
        let inferred = Attribution::parse("probes:\n  ok   x\nnetfilter attribution: inferred (backend from the drop location, hook from addresses, table/chain/rule from rule counters)\n  legacy: inferred (backend from ...)\n  nft: inferred (backend from ...)\n").unwrap();
        assert_eq!(inferred.expected_for("nft"), "inferred");
        assert!(!inferred.exact);
        let mixed = Attribution::parse(
            "netfilter attribution: exact via kprobe nft_do_chain, kprobe ipt_do_table (rule from counters)\n  legacy: exact (kprobe ipt_do_table: table and hook from the walk, rule from counters)\n  nft: inferred (kprobe nft_do_chain: backend and hook exact; ...)\n",
        )
        .unwrap();
        assert!(mixed.exact);
        assert_eq!(
            (mixed.expected_for("nft"), mixed.expected_for("legacy")),
            ("inferred", "exact")
        );
        assert!(Attribution::parse("kernel 6.1\nprobes:\n").is_none());
    }
}
