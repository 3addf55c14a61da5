//! Nothing privileged left behind when a client or a pod goes: an agent ends
//! when its client's keep-alives stop or after its maximum lifetime; deleting
//! the DaemonSet's pod stops its exec'd agents through the preStop hook (they
//! detach, netlink tc filters included); `cluster --k8s --cleanup` removes
//! what a SIGKILLed agent left on its node and nothing of a running one.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use calitrace_tests::apiserver::FakeNode;
use calitrace_tests::calitrace::{self, assert_nothing_attached_in};
use calitrace_tests::k8s_lab::{cluster_of, k8s_run, start};
use calitrace_tests::{Lab, Mode};
use serde_json::Value;

/// The tc programs (netlink filters and TCX links) in lab node `node`.
fn tc_programs(lab: &Lab, node: usize) -> usize {
    let out = lab
        .sh(&lab.node(node).netns, "bpftool -j net show")
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    ["tc", "tcx"]
        .iter()
        .map(|k| v[0][*k].as_array().map_or(0, Vec::len))
        .sum()
}

/// `calitrace agent ARGS` in a netns with its stdin a pipe the test holds.
struct Agent {
    child: std::process::Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Agent {
    fn start(netns: &str, args: &[&str]) -> Agent {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(calitrace::binary())
            .arg("agent")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let (tx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                tx.send(line).ok();
            }
        });
        let mut a = Agent {
            child,
            stderr,
            seen: Vec::new(),
        };
        a.wait_for("recording stream on stdout", Duration::from_secs(60));
        a
    }

    fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let until = Instant::now() + calitrace::startup_limit(limit);
        while Instant::now() < until {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                let found = line.contains(needle);
                self.seen.push(line);
                if found {
                    return true;
                }
            }
        }
        false
    }

    fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + calitrace::startup_limit(limit);
        while Instant::now() < until {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Agent {
    /// The agent says `says`, then exits 0 with nothing left attached in
    /// lab node `node`.
    fn ends_cleanly(&mut self, says: &str, lab: &Lab, node: usize) {
        assert!(
            self.wait_for(says, Duration::from_secs(30)),
            "{:?}",
            self.seen
        );
        let status = self
            .exited_within(Duration::from_secs(30))
            .expect("the agent ends");
        assert!(status.success(), "{status}: {:?}", self.seen);
        assert_nothing_attached_in(lab, node);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_agent_ends_when_its_clients_keepalives_stop_and_not_before_the_first() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let mut a = Agent::start(
        &lab.node(0).netns,
        &["--keepalive-timeout", "2", "--tc-attach", "netlink"],
    );
    // A client that sends none (an older one) is not taken for gone.
    assert_eq!(
        a.exited_within(Duration::from_secs(4)),
        None,
        "{:?}",
        a.seen
    );
    let mut stdin = a.child.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    // Then silence, the pipe still open: a client cut off.
    let began = Instant::now();
    a.ends_cleanly("no keep-alive from the client for 2 s", &lab, 0);
    assert!(
        began.elapsed() >= Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    drop(stdin);
}

#[test]
fn an_agent_ends_after_its_maximum_lifetime() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let mut a = Agent::start(
        &lab.node(0).netns,
        &["--max-lifetime", "3", "--tc-attach", "netlink"],
    );
    a.ends_cleanly("stopped after its maximum lifetime (3 s", &lab, 0);
}

#[test]
fn deleting_the_daemonset_pod_stops_its_agent_through_the_prestop_hook() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, true);
    let t = start(
        &api,
        &["--nodes", "node-a,node-b", "--tc-attach", "netlink"],
    );
    assert!(tc_programs(&lab, 0) > 0, "node-a's agent attached");
    // The client's keep-alives reach the agents through exec's stdin.
    let until = Instant::now() + Duration::from_secs(15);
    while api.with(|s| s.stdin_bytes) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        api.with(|s| s.stdin_bytes) > 0,
        "no keep-alive reached an agent"
    );

    assert!(api.delete_pod("calitrace", "calitrace-agent-node-a"));
    let end = api
        .wait_terminated(
            "calitrace",
            "calitrace-agent-node-a",
            Duration::from_secs(90),
        )
        .expect("the kubelet ended the pod");
    let (code, out) = end
        .pre_stop
        .clone()
        .expect("the DaemonSet's preStop hook ran");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("stopped agent "), "{out}");
    assert!(out.contains("it detached and exited"), "{out}");
    assert!(
        end.killed.is_empty(),
        "nothing was left to SIGKILL: {end:?}"
    );
    assert_nothing_attached_in(&lab, 0);
    assert!(tc_programs(&lab, 1) > 0, "node-b's agent traces on");
    let f = t.stop().unwrap();
    assert_nothing_attached_in(&lab, 1);
    drop(f);
}

#[test]
fn cluster_cleanup_removes_what_a_killed_agent_left_and_nothing_of_a_running_one() {
    let lab = Lab::new(Mode::Direct).unwrap();
    let api = cluster_of(&lab, true);
    let t = start(
        &api,
        &["--nodes", "node-a,node-b", "--tc-attach", "netlink"],
    );
    let pid = api.with(|s| {
        s.execs[&(
            "calitrace".to_string(),
            "calitrace-agent-node-a".to_string(),
        )][0]
    });
    // As the OOM killer would: no chance to detach.
    // SAFETY: kill(2) on the agent this test's stand-in server started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(1));
    let left = tc_programs(&lab, 0);
    assert!(left > 0, "a SIGKILLed agent leaves its netlink filters");
    let running = tc_programs(&lab, 1);

    // A third node whose cleanup cannot run (no lab netns behind it): it
    // is named, and the other two are cleaned all the same.
    let node_c = FakeNode {
        name: "node-c".into(),
        netns: "no-such-netns".into(),
        ready: true,
        address: "192.0.2.3".into(),
    };
    api.with(|s| s.nodes.push(node_c.clone()));
    api.add_daemonset_pod(&node_c);
    let c = k8s_run(&api, &["--cleanup"]);
    assert_eq!(c.status.code(), Some(1), "{}", c.dump());
    assert!(c.stdout.contains("node-c: cleanup failed"), "{}", c.stdout);
    assert!(
        c.stderr.contains("cleanup did not finish on node-c"),
        "{}",
        c.stderr
    );
    assert!(
        c.stdout
            .contains("node-a: removed tc filter tc_ingress at cali"),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout
            .contains("node-a: removed tc filter tc_egress at cali"),
        "{}",
        c.stdout
    );
    assert!(
        c.stdout.contains("node-b: nothing left behind"),
        "{}",
        c.stdout
    );
    assert_nothing_attached_in(&lab, 0);
    assert_eq!(
        tc_programs(&lab, 1),
        running,
        "node-b's running agent keeps its filters"
    );

    let again = k8s_run(&api, &["--cleanup"]);
    assert!(
        again.stdout.contains("node-a: nothing left behind"),
        "{}",
        again.stdout
    );
    let f = t.stop().unwrap();
    assert_nothing_attached_in(&lab, 1);
    drop(f);
}
