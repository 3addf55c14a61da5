//! `calitrace [trace]`: load, attach, read the ring buffer, run the pipeline,
//! show the records; detach everything on the way out.

use anyhow::Result;
use tracer_common::filter::FilterProg;

use super::event_loop::{Stops, event_loop};
use super::interfaces::{self, InterfaceWatch};
use super::output::{self, Source};
use super::session::Session;
use super::setup::{self, Setup};
use super::usage;
use crate::cli::{Output, TraceArgs};
use crate::dataplane::calico_ebpf::CalicoEbpf;
use crate::facts::{Environment, NodeFacts};
use crate::filter::Filter;
use crate::kernel::netlink::{self, LinkMonitor};
use crate::kernel::netns;
use crate::model::{ProbeStatus, Record, Start, Stats, Unavailable};
use crate::netfilter::Inventory;
use crate::netfilter::trace::NfTracer;
use crate::pipeline::{Options, Pipeline};
use crate::probes::loader::{LoadOptions, TcAttach, Tracer};
use crate::probes::tc::ifaces;
use crate::recording::format::{End, Header};
use crate::views::Sink;

/// Programs loaded and attached, and a session ready to read them.
pub struct Tracing {
    pub rt: tokio::runtime::Runtime,
    pub stops: Stops,
    pub tracer: Tracer,
    pub start: Start,
    pub session: Session,
    /// The interfaces as they come and go, and those still waiting.
    pub watch: InterfaceWatch,
}

pub fn run(args: TraceArgs) -> Result<()> {
    let output = output::choose(args.view.output, Source::Live)?;
    let Tracing {
        rt,
        stops,
        mut tracer,
        start,
        mut session,
        mut watch,
    } = begin(&args)?;
    if let Some(path) = &args.write {
        session.start_recording(path, recording_header(&start))?;
    }
    let mut sink = open_view(output, &start, args.view.all_drops)?;
    let started = std::time::Instant::now();
    let result = rt.block_on(event_loop(
        &mut tracer,
        &mut session,
        &mut watch,
        sink.as_mut(),
        &start,
        args.duration,
        stops,
    ));
    let ended = end_session(&mut session, sink.as_mut(), &tracer, started);
    drop(tracer); // detach before reporting success
    result?;
    ended
}

/// Checks the options, loads and attaches the programs, and readies the
/// session; what stops tracing is listened for from the start.
pub fn begin(args: &TraceArgs) -> Result<Tracing> {
    let filter = check_args(args)?;
    let compiled = filter.compile().map_err(|e| usage(e.to_string()))?;
    // Signal handlers first: a Ctrl-C or SIGTERM that arrives while programs
    // are being attached must still end in a clean detach.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stops = rt.block_on(async { Stops::listen() })?;
    // Subscribed before the interfaces are listed: none that appears in
    // between is missed.
    let monitor = LinkMonitor::open();
    let mut setup = Setup::read()?;
    setup.require_privileges()?;
    if args.probes.tc_attach == TcAttach::Tcx && !setup.caps.tcx() {
        return Err(usage(format!(
            "--tc-attach tcx needs kernel 6.6 or later (this is {}): use --tc-attach netlink or auto",
            setup.caps.kernel
        )));
    }
    let chosen = setup::interfaces(&setup.links, &args.probes.iface)?;
    let pods = setup::pods(&setup, &chosen);
    let facts = setup::node_facts(&setup, &pods, &args.host_root);
    let (tracer, waiting) = load(args, &setup, compiled, &chosen, &pods, &facts)?;
    // The parsed kernel BTF (tens of MiB) has served its purpose: offsets and
    // drop reason names are taken. Freed now, not when tracing ends.
    drop(setup.btf.take());
    let watch = {
        let _in_runtime = rt.enter();
        let patterns = setup::patterns(&args.probes.iface);
        InterfaceWatch::new(
            setup.own_netns,
            patterns,
            &setup.links,
            &pods,
            monitor,
            waiting,
        )
    };

    let mut start = start_record(&facts, &filter, &tracer);
    let nftrace = open_nftrace(&mut start);
    let calico_ebpf = open_calico_ebpf(&args.probes, &mut start);
    report_start(&start, pods.len(), &tracer, &watch);
    report_native_calico(facts.netfilter.as_ref());
    if args.view.verdicts && tracer.report.exact.is_empty() {
        eprintln!(
            "calitrace: --verdicts needs the exact netfilter probes (fexit or kprobes), unavailable here: no verdict lines"
        );
    }
    let mut env = Environment::live(facts, setup.kallsyms);
    if let Some(t) = nftrace {
        env = env.with_nftrace(t);
    }
    if let Some(reader) = calico_ebpf {
        env = env.with_calico_ebpf(reader);
    }
    let pipeline = Pipeline::new(
        env,
        Options {
            packets: !args.view.drops_only,
            verdicts: args.view.verdicts,
            ..Options::default()
        },
    );
    Ok(Tracing {
        rt,
        stops,
        tracer,
        start,
        session: Session::new(pipeline),
        watch,
    })
}

/// The view asked for, shown the start record (text prints its own);
/// benign drops shown from the start with `all_drops`.
fn open_view(output: Output, start: &Start, all_drops: bool) -> Result<Box<dyn Sink>> {
    let mut sink = output::open_sink(output, Source::Live, all_drops)?;
    if output::shows_start(output) {
        sink.records(&[Record::Start(start.clone())])?;
    }
    Ok(sink)
}

/// Reports what is pending and the statistics, and closes the recording.
pub fn end_session(
    session: &mut Session,
    sink: &mut dyn Sink,
    tracer: &Tracer,
    started: std::time::Instant,
) -> Result<()> {
    session.finish();
    let mut tail = session.take_records();
    tail.push(Record::Stats(Stats {
        benign: session.pipeline.benign.clone(),
        ..stats(tracer, started.elapsed().as_secs_f64())
    }));
    let recorded = session.stop_recording(&end_counters(tracer));
    let shown = sink.records(&tail).and_then(|_| sink.flush());
    recorded?;
    shown?;
    Ok(())
}

/// The filter, after checking the options that need no kernel.
fn check_args(args: &TraceArgs) -> Result<Filter> {
    let filter = Filter::parse_words(&args.view.filter).map_err(|e| usage(e.to_string()))?;
    if !args.probes.ring_mib.is_power_of_two() || args.probes.ring_mib > 1024 {
        return Err(usage(format!(
            "--ring-mib {} must be a power of two up to 1024",
            args.probes.ring_mib
        )));
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(usage(format!(
            "--duration {d} must be a positive number of seconds"
        )));
    }
    Ok(filter)
}

/// Loads and attaches the programs: the tc programs to the uplinks and
/// tunnels, then to the veths for as long as the start's budget allows; an
/// error when nothing could be attached. The veths still waiting.
fn load(
    args: &TraceArgs,
    setup: &Setup,
    filter: FilterProg,
    chosen: &[&netlink::Link],
    pods: &[netns::PeerNetns],
    facts: &NodeFacts,
) -> Result<(Tracer, Vec<netlink::Link>)> {
    let netns_filter = (!args.probes.all_netns).then(|| {
        let mut v = vec![setup.own_netns];
        v.extend(pods.iter().map(|p| p.inode));
        v
    });
    let uplinks = &facts.topology.uplinks;
    let (first, veths): (Vec<netlink::Link>, Vec<netlink::Link>) =
        ifaces::start_order(chosen, uplinks)
            .into_iter()
            .cloned()
            .partition(|l| !ifaces::may_wait(l, uplinks));
    let mut tracer = Tracer::load(
        &setup.caps,
        setup.btf.as_ref(),
        LoadOptions {
            filter,
            netns: netns_filter,
            own_netns: setup.own_netns,
            ring_bytes: args.probes.ring_mib * 1024 * 1024,
            interfaces: &first,
            attach: true,
            all_verdicts: args.view.verdicts,
            inventory: facts.netfilter.as_ref(),
            exact: args.probes.nf_probes,
            tc_attach: args.probes.tc_attach,
        },
    )?;
    let waiting = interfaces::attach_within(&mut tracer, veths, interfaces::START_BUDGET);
    if tracer.report.attached.is_empty() {
        let why: Vec<String> = tracer
            .report
            .unavailable
            .iter()
            .map(|u| format!("{}: {}", u.name, u.reason))
            .collect();
        anyhow::bail!("no probe could be attached: {}", why.join("; "));
    }
    Ok((tracer, waiting))
}

/// The start record: where, what is traced, and how.
fn start_record(facts: &NodeFacts, filter: &Filter, tracer: &Tracer) -> Start {
    Start {
        node: facts.node.clone(),
        kernel: facts.kernel.clone(),
        netns: facts.netns,
        filter: filter.to_string(),
        interfaces: tracer.interfaces(),
        probes_attached: tracer.report.attached.clone(),
        probes_unavailable: tracer.report.unavailable.clone(),
        iptables: facts.iptables_binary,
        calico_chains: facts.netfilter.as_ref().and_then(Inventory::calico_chains),
        checks: facts.checks.clone(),
    }
}

/// nftables' own trace, which names the rule of a drop in any nf_tables
/// table (firewalld's, kube-proxy's, Calico's nftables dataplane), said in
/// the start record either way.
fn open_nftrace(start: &mut Start) -> Option<NfTracer> {
    match NfTracer::open() {
        Ok(t) => {
            start.probes_attached.push(ProbeStatus {
                name: NFTRACE.into(),
                detail: Some(format!(
                    "table inet {} with `meta nftrace set 1` for the flows of netfilter drops, from the first such drop until {} s without one; removed on exit (and by the kernel 5.12+ if calitrace is killed)",
                    t.table(),
                    crate::netfilter::trace::IDLE.as_secs()
                )),
            });
            Some(t)
        }
        Err(e) => {
            start.probes_unavailable.push(Unavailable {
                name: NFTRACE.into(),
                reason: format!("NFNLGRP_NFTRACE: {e}"),
            });
            None
        }
    }
}

const NFTRACE: &str = "nftables trace";

/// Felix's counters, where Calico's eBPF dataplane pinned them; said in the
/// start lines either way when found.
fn open_calico_ebpf(p: &crate::cli::ProbeOptions, start: &mut Start) -> Option<CalicoEbpf> {
    match CalicoEbpf::open(&p.calico_bpf_maps, &p.calico_bpf_policy) {
        Ok(Some(reader)) => {
            start.probes_attached.push(ProbeStatus {
                name: CALICO_EBPF.into(),
                detail: Some(format!(
                    "{}: the drops of Calico's tc programs named by the counter that moved",
                    reader.describe()
                )),
            });
            Some(reader)
        }
        Ok(None) => None,
        Err(e) => {
            start.probes_unavailable.push(Unavailable {
                name: CALICO_EBPF.into(),
                reason: e,
            });
            None
        }
    }
}

const CALICO_EBPF: &str = "Calico eBPF counters";

/// Calico's nftables dataplane, which the `cali-*` line does not cover.
fn report_native_calico(inv: Option<&Inventory>) {
    let tables: Vec<String> = inv
        .into_iter()
        .flat_map(|i| &i.tables)
        .filter(|t| {
            crate::netfilter::owner::of_table(t.family, &t.name)
                .is_some_and(|o| o == crate::model::Owner::Calico)
        })
        .map(|t| format!("table {} {}", t.family, t.name))
        .collect();
    if !tables.is_empty() {
        eprintln!(
            "calitrace: Calico's nftables dataplane: {}",
            tables.join(", ")
        );
    }
}

/// The header of a recording started now.
pub fn recording_header(start: &Start) -> Header {
    let (realtime, monotonic) = (crate::time::realtime_ns(), crate::time::monotonic_ns());
    Header {
        calitrace_version: env!("CARGO_PKG_VERSION").into(),
        kernel: start.kernel.clone(),
        node: start.node.clone(),
        start_realtime_ns: realtime,
        start_monotonic_ns: monotonic,
        event_size: tracer_common::EVENT_SIZE as u32,
        filter: start.filter.clone(),
        interfaces: start.interfaces.clone(),
        probes_attached: start.probes_attached.clone(),
        probes_unavailable: start.probes_unavailable.clone(),
        facts: Default::default(), // filled in by the session
    }
}

fn report_start(start: &Start, pods: usize, tracer: &Tracer, watch: &InterfaceWatch) {
    let nftrace = start.probes_attached.iter().any(|p| p.name == NFTRACE);
    let attribution = super::probes::with_nftrace(tracer.attribution_method(), nftrace);
    for p in &start.probes_attached {
        eprintln!(
            "calitrace: attached {}{}",
            p.name,
            p.detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
    for u in &start.probes_unavailable {
        eprintln!("calitrace: unavailable {}: {}", u.name, u.reason);
    }
    eprintln!("calitrace: netfilter attribution: {attribution}");
    eprintln!(
        "calitrace: iptables command uses {}; Calico's cali-* chains: {}",
        start.iptables.map_or("unknown backend", |b| b.as_str()),
        start.calico_chains.map_or("none found", |c| c.as_str())
    );
    let count = watch.count(tracer);
    let waiting = match count.waiting {
        0 => String::new(),
        n => format!(", {n} more attaching in the background"),
    };
    eprintln!(
        "calitrace: tracing on {} (netns {}, {} pod namespace(s), {} interface(s){waiting}); Ctrl-C to stop",
        start.node, start.netns, pods, count.traced
    );
}

fn kernel_counts(tracer: &Tracer) -> (std::collections::BTreeMap<String, u64>, u64) {
    crate::events::names::event_counts(&tracer.counters())
}

pub fn end_counters(tracer: &Tracer) -> End {
    let (events, lost) = kernel_counts(tracer);
    End {
        events,
        lost,
        interfaces: Some(tracer.interface_count()),
    }
}

fn stats(tracer: &Tracer, duration_s: f64) -> Stats {
    let (events, lost) = kernel_counts(tracer);
    Stats {
        node: None,
        exit: None,
        events,
        lost,
        probes_attached: tracer.report.attached.clone(),
        probes_unavailable: tracer.report.unavailable.clone(),
        duration_s,
        interfaces: Some(tracer.interface_count()),
        benign: Default::default(),
    }
}
