//! `cluster --k8s --all-nodes` against more synthetic nodes of the stand-in
//! API server than the client makes API calls at once, every request
//! answered after a while: every node traces and is shown, and the client
//! keeps to its bound on calls in flight.

use std::collections::BTreeSet;
use std::time::Duration;

use calitrace_tests::apiserver::ApiServer;
use calitrace_tests::fleet;
use calitrace_tests::k8s_lab::k8s_run;
use tracer_user::run::k8s::client::CONCURRENT_CALLS;

const NODES: usize = 48;
// More nodes than calls at once.
const _: () = assert!(NODES > CONCURRENT_CALLS);

#[test]
fn every_synthetic_node_traces_and_the_api_server_is_asked_within_bounds() {
    let api = ApiServer::synthetic(NODES, 200).unwrap();
    api.with(|s| s.latency = Duration::from_millis(50));
    let f = k8s_run(
        &api,
        &[
            "--all-nodes",
            "-o",
            "json",
            "--drops-only",
            "--duration",
            "3",
        ],
    );
    assert!(f.status.success(), "{}", f.dump());
    for i in 0..NODES {
        let n = fleet::name(i);
        let line = format!("calitrace: {n}: tracing on {n} ");
        assert!(f.stderr.contains(&line), "{line:?} in\n{}", f.stderr);
    }
    assert!(!f.stderr.contains("the agent is calitrace"), "{}", f.stderr);
    let stats = f.of_type("stats");
    let shown: BTreeSet<&str> = stats.iter().filter_map(|s| s["node"].as_str()).collect();
    assert_eq!(shown.len(), NODES, "every node's state\n{}", f.dump());
    for s in stats.iter().filter(|s| s["node"].is_string()) {
        assert!(s["exit"].is_null(), "a clean end: {s}");
        assert!(s["events"]["tc"].as_u64() > Some(0), "events came: {s}");
    }
    let (most, execs) = api.with(|s| {
        let execs = s.log.iter().filter(|l| l.contains("/exec?")).count();
        (s.max_in_flight, execs)
    });
    assert_eq!(execs, NODES, "one agent per node");
    assert!(
        most <= CONCURRENT_CALLS,
        "{most} requests in flight at once, over the client's bound of {CONCURRENT_CALLS}"
    );
}

#[test]
fn synthetic_nodes_answer_status_as_ready_agents() {
    let api = ApiServer::synthetic(4, 10).unwrap();
    let f = k8s_run(&api, &["--status"]);
    assert!(f.status.success(), "{}", f.dump());
    for i in 0..4 {
        let line = format!("  {}: ready", fleet::name(i));
        assert!(f.stdout.contains(&line), "{line:?} in\n{}", f.stdout);
    }
}
