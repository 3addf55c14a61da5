//! A pod's deletion as the kubelet carries it out, in the stand-in: the
//! container's preStop hook runs in the container (as an exec does), then
//! what still runs in the container is SIGKILLed (the kubelet waits the
//! grace period first; here the hook's end is the signal).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::exec::Container;
use super::{State, Stored};

/// The pods' default `terminationGracePeriodSeconds`.
const GRACE: Duration = Duration::from_secs(30);

/// How a deleted pod ended.
#[derive(Debug, Clone)]
pub struct Termination {
    /// `ns/name`.
    pub pod: String,
    /// The preStop hook's output and exit code (None: the pod had none).
    pub pre_stop: Option<(Option<i32>, String)>,
    /// Processes exec'd into the container that were still running after
    /// the hook, SIGKILLed.
    pub killed: Vec<u32>,
}

/// The agent container's `lifecycle` in deploy/agent-daemonset.yaml.
pub fn manifest_lifecycle() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/agent-daemonset.yaml"
    );
    let yaml = std::fs::read_to_string(path).expect("deploy/agent-daemonset.yaml");
    let v: Value = serde_saphyr::from_str(&yaml).expect("the DaemonSet manifest parses");
    v["spec"]["template"]["spec"]["containers"][0]["lifecycle"].clone()
}

/// Removes the pod and ends its container in the background; the pod as
/// it was, or None if there was none.
pub fn delete(state: &Arc<Mutex<State>>, ns: &str, name: &str) -> Option<Stored> {
    let key = (ns.to_string(), name.to_string());
    let mut s = state.lock().unwrap();
    let pod = s.pods.remove(&key)?;
    s.deleted.push(format!("{ns}/{name}"));
    let hook: Option<Vec<String>> =
        pod.object["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|w| w.as_str().map(String::from))
                    .collect()
            });
    let node = pod.object["spec"]["nodeName"].as_str().unwrap_or("");
    let netns = s
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.netns.clone());
    let bin = s.calitrace.clone();
    drop(s);
    let container = Container {
        state: state.clone(),
        pod: key,
    };
    std::thread::spawn(move || {
        let pre_stop = match (hook, netns) {
            (Some(hook), Some(netns)) => Some(run_hook(&container, &netns, &bin, &hook)),
            _ => None,
        };
        let killed = container.kill_all();
        container
            .state
            .lock()
            .unwrap()
            .terminations
            .push(Termination {
                pod: format!("{}/{}", container.pod.0, container.pod.1),
                pre_stop,
                killed,
            });
    });
    Some(pod)
}

fn run_hook(
    container: &Container,
    netns: &str,
    bin: &std::path::Path,
    hook: &[String],
) -> (Option<i32>, String) {
    let child = container
        .std_command(netns, bin, hook)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (None, format!("preStop could not start: {e}")),
    };
    let until = Instant::now() + GRACE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    match child.wait_with_output() {
        Ok(o) => (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (None, e.to_string()),
    }
}
