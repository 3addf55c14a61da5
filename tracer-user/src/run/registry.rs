//! The agents running here: each `calitrace agent` registers its pid under
//! `RUN_DIR/agents` while it runs (RUN_DIR: `$CALITRACE_RUN_DIR`, else
//! `/run/calitrace`), so that the DaemonSet's preStop hook (`calitrace
//! cleanup --stop-agents`) and standby's SIGTERM end the agents `kubectl
//! exec` started in the container cleanly (SIGTERM: they detach and end
//! their streams) before the container's processes are SIGKILLed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the agents get to detach and exit when stopped: within a pod's
/// default 30 s of grace, with room for standby after them.
pub const STOP_WITHIN: Duration = Duration::from_secs(20);

/// How often the stop looks whether the agents have gone.
const POLL: Duration = Duration::from_millis(100);

fn dir() -> PathBuf {
    std::env::var_os("CALITRACE_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/calitrace"))
        .join("agents")
}

/// An agent's entry, removed when it ends.
pub struct Registration(PathBuf);

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Registers this process as an agent. Best effort: a read-only /run is no
/// reason not to trace (the agent then ends only with its client).
pub fn register() -> Option<Registration> {
    let dir = dir();
    let path = dir.join(std::process::id().to_string());
    let written = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, b""));
    match written {
        Ok(()) => Some(Registration(path)),
        Err(e) => {
            eprintln!(
                "calitrace: agent: cannot register in {} ({e}): a preStop hook will not find this agent",
                dir.display()
            );
            None
        }
    }
}

/// What [`stop_all`] did.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Agents that ended after SIGTERM.
    pub ended: Vec<u32>,
    /// Agents still running when the time was up.
    pub running: Vec<u32>,
}

/// Sends SIGTERM to every registered agent that still runs and waits up to
/// `within` for them to end. Entries of agents that are gone (SIGKILLed)
/// are removed.
pub fn stop_all(within: Duration) -> Stopped {
    let dir = dir();
    let mut pending = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !is_agent(pid) {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        // SAFETY: kill(2) with a pid and a signal number; no memory is shared.
        if unsafe { libc::kill(pid as i32, libc::SIGTERM) } == 0 {
            pending.push(pid);
        }
    }
    let until = Instant::now() + within;
    let mut stopped = Stopped::default();
    while !pending.is_empty() && Instant::now() < until {
        std::thread::sleep(POLL);
        pending.retain(|&pid| {
            let alive = is_agent(pid);
            if !alive {
                stopped.ended.push(pid);
            }
            alive
        });
    }
    stopped.running = pending;
    stopped
}

/// Whether `pid` is a running `calitrace agent` (not a zombie, not a pid
/// reused by another program).
fn is_agent(pid: u32) -> bool {
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    runs(pid) && is_agent_argv(&argv)
}

/// Whether process `pid` runs: it exists and is no zombie.
pub fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| stat_state(&s).is_some_and(|state| state != 'Z'))
}

/// The state letter of /proc/PID/stat (after the parenthesised comm).
fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn is_agent_argv(argv: &[u8]) -> bool {
    let mut words = argv.split(|&b| b == 0).map(String::from_utf8_lossy);
    let program = words.next().unwrap_or_default();
    program.rsplit('/').next() == Some("calitrace") && words.next().as_deref() == Some("agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_calitrace_agent_is_an_agent() {
        assert!(is_agent_argv(
            b"/usr/bin/calitrace\0agent\0--host-root\0/host\0"
        ));
        assert!(is_agent_argv(b"calitrace\0agent\0"));
        assert!(!is_agent_argv(b"/usr/bin/calitrace\0standby\0"));
        assert!(!is_agent_argv(b"/bin/sleep\0agent\0"));
        assert!(!is_agent_argv(b""));
    }

    #[test]
    fn the_state_follows_the_command_name_whatever_it_holds() {
        assert_eq!(stat_state("123 (calitrace) S 1 123"), Some('S'));
        assert_eq!(stat_state("123 (a) b) Z 1 123"), Some('Z'));
        assert_eq!(stat_state("garbage"), None);
    }
}
