//! `calitrace cluster`: one live view of several nodes. The agents come
//! from commands (`--node NAME=COMMAND`, [`local`]) or through the
//! Kubernetes API server (`--k8s`, [`crate::run::k8s`]); either way their
//! streams meet in one [`session`].

pub mod local;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::output::{self, Source};
use super::usage;
use crate::cli::{ClusterArgs, Output};
use crate::filter::Filter;
use crate::merge::Cluster;
use crate::pipeline::Options;
use session::SessionSetup;

pub fn run(args: ClusterArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    if args.kube.k8s {
        return super::k8s::run(args, &stop);
    }
    if args.nodes.is_empty() {
        return Err(usage(
            "give the nodes: --node NAME=COMMAND (repeatable), or --k8s with --pods, --nodes or --all-nodes",
        ));
    }
    let nodes = local::parse_nodes(&args.nodes)?;
    let names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    let setup = setup(&args, names)?;
    let words = agent_words(&args);
    let agents = nodes
        .iter()
        .map(|(_, cmd)| local::start(cmd, &words))
        .collect();
    session::run_session(setup, agents, &stop)
}

/// A flag that SIGINT, SIGTERM and SIGHUP set.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register(sig, stop.clone()).context("signal handler")?;
    }
    Ok(stop)
}

/// The merge, the view and the session's limits, once the FILTER and the
/// view are known to be good.
pub fn setup(args: &ClusterArgs, names: Vec<String>) -> Result<SessionSetup> {
    let filter = Filter::parse_words(&args.view.filter).map_err(|e| usage(e.to_string()))?;
    filter.compile().map_err(|e| usage(e.to_string()))?;
    let output = output::choose(args.view.output, Source::Cluster)?;
    let cluster = Cluster::new(
        &names,
        Options {
            packets: !args.view.drops_only,
            verdicts: args.view.verdicts,
            ..Options::default()
        },
    );
    let sink = output::open_sink(output, Source::Cluster, args.view.all_drops)?;
    Ok(SessionSetup {
        names,
        cluster,
        sink,
        write: args.write.clone(),
        quiet: output == Output::Tui,
        filter: filter.to_string(),
        deadline: args
            .duration
            .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0))),
    })
}

/// The words after `calitrace agent`: the tracing options and the FILTER.
pub fn agent_words(args: &ClusterArgs) -> Vec<String> {
    let a = &args.agents;
    let mut words: Vec<String> = Vec::new();
    for i in &a.iface {
        words.extend(["--iface".into(), i.clone()]);
    }
    if a.all_netns {
        words.push("--all-netns".into());
    }
    if args.view.verdicts {
        words.push("--verdicts".into());
    }
    words.extend([
        "--tc-attach".into(),
        clap::ValueEnum::to_possible_value(&a.tc_attach)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        "--nf-probes".into(),
        clap::ValueEnum::to_possible_value(&a.nf_probes)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        "--ring-mib".into(),
        a.ring_mib.to_string(),
        "--calico-bpf-maps".into(),
        a.calico_bpf_maps.display().to_string(),
        "--calico-bpf-policy".into(),
        a.calico_bpf_policy.display().to_string(),
    ]);
    if !args.view.filter.is_empty() {
        words.push("--".into());
        words.extend(args.view.filter.iter().cloned());
    }
    words
}
