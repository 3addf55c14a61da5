//! Agents started by a command per node: `--node NAME=COMMAND` runs
//! `sh -c "COMMAND agent ARGS"` (ssh, `ip netns exec`, ...).

use std::io::Write;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::session::{AgentLink, Started};
use crate::run::agent::KEEPALIVE_EVERY;
use crate::run::usage;

/// `NAME=COMMAND` pairs, names unique.
pub fn parse_nodes(specs: &[String]) -> Result<Vec<(String, String)>> {
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
pub fn sh_quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

/// Starts `sh -c "COMMAND agent WORDS"`, each word quoted.
pub fn start(cmd: &str, words: &[String]) -> Result<Started, String> {
    let tail: String = words.iter().map(|w| format!(" {}", sh_quote(w))).collect();
    let line = format!("{cmd} agent{tail}");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sh -c {line:?}: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    Ok(Started {
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        link: Box::new(Process {
            stdin: child.stdin.take().map(keep_alive),
            child,
        }),
    })
}

/// An agent process on this machine (or a command that reaches one).
struct Process {
    child: Child,
    /// Closes the agent's stdin when dropped.
    stdin: Option<mpsc::Sender<()>>,
}

/// Writes a keep-alive byte to the agent's stdin now and every
/// [`KEEPALIVE_EVERY`] until the returned sender is dropped, then closes it.
fn keep_alive(mut stdin: ChildStdin) -> mpsc::Sender<()> {
    let (close, closing) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        while stdin.write_all(b"\n").is_ok()
            && matches!(
                closing.recv_timeout(KEEPALIVE_EVERY),
                Err(mpsc::RecvTimeoutError::Timeout)
            )
        {}
    });
    close
}

impl AgentLink for Process {
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn failure(&mut self) -> Option<String> {
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() => return None,
                Ok(Some(s)) => return Some(s.to_string()),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
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
