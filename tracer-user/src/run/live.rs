//! `calitrace [trace]`: load, attach, read the ring buffer, run the pipeline,
//! show the records; detach everything on the way out.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};

use super::session::Session;
use super::{choose_output, line_view, usage};
use crate::cli::{Output, TraceArgs};
use crate::events::{Input, decode_input};
use crate::facts::{Environment, NodeFacts, PodInfo, ifkey};
use crate::filter::Filter;
use crate::kernel::{btf::KernelBtf, kallsyms::Kallsyms, netlink, netns, system};
use crate::model::{Record, Start, Stats};
use crate::netfilter::{Inventory, iptables_binary_backend};
use crate::pipeline::{Options, Pipeline};
use crate::probes::capabilities::Capabilities;
use crate::probes::ifaces;
use crate::probes::loader::{LoadOptions, TcAttach, Tracer};
use crate::recording::format::{End, Header};
use crate::views::{Control, LineSink, Sink, Status};

/// Events handled per wake-up before the loop looks at signals and timers again.
const BATCH: usize = 4096;
/// How long the loop lets events gather after draining the ring (a 8 MiB ring
/// holds 87,000 events: a millisecond is far from filling it).
const DRAIN_PAUSE: Duration = Duration::from_millis(1);
/// How often the clock moves on without events, and interactive views are heard.
const TICK: Duration = Duration::from_millis(100);

/// Everything read from the machine before loading programs.
pub struct Setup {
    pub caps: Capabilities,
    pub kallsyms: Kallsyms,
    pub btf: Option<KernelBtf>,
    pub own_netns: u32,
    pub links: Vec<netlink::Link>,
}

impl Setup {
    pub fn read() -> Result<Setup> {
        let kallsyms = Kallsyms::load().unwrap_or_default();
        let caps = Capabilities::detect(&kallsyms);
        let btf = if caps.btf {
            KernelBtf::load().ok()
        } else {
            None
        };
        Ok(Setup {
            caps,
            kallsyms,
            btf,
            own_netns: system::own_netns().context("reading /proc/self/ns/net")?,
            links: netlink::links().context("listing interfaces")?,
        })
    }

    pub fn require_privileges(&self) -> Result<()> {
        if let Some(missing) = &self.caps.missing_privileges {
            return Err(usage(format!(
                "calitrace needs root to load eBPF programs (missing {missing}): run it with sudo, or use `calitrace replay FILE` without root"
            )));
        }
        Ok(())
    }
}

/// The interfaces to attach to: the user's globs, or Calico's defaults plus uplinks.
fn interfaces<'a>(links: &'a [netlink::Link], asked: &[String]) -> Result<Vec<&'a netlink::Link>> {
    if asked.is_empty() {
        let mut pats: Vec<String> = ifaces::DEFAULT_PATTERNS
            .iter()
            .map(|s| s.to_string())
            .collect();
        pats.extend(system::default_route_ifaces());
        return Ok(ifaces::select(links, &pats));
    }
    let chosen = ifaces::select(links, asked);
    if chosen.is_empty() {
        let here: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        return Err(usage(format!(
            "no interface matches --iface {} (interfaces here: {})",
            asked.join(" --iface "),
            here.join(", ")
        )));
    }
    Ok(chosen)
}

pub fn run(args: TraceArgs) -> Result<()> {
    let filter = Filter::parse_words(&args.view.filter).map_err(|e| usage(e.to_string()))?;
    let compiled = filter.compile().map_err(|e| usage(e.to_string()))?;
    if !args.ring_mib.is_power_of_two() || args.ring_mib > 1024 {
        return Err(usage(format!(
            "--ring-mib {} must be a power of two up to 1024",
            args.ring_mib
        )));
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(usage(format!(
            "--duration {d} must be a positive number of seconds"
        )));
    }
    // Signal handlers first: a Ctrl-C or SIGTERM that arrives while programs
    // are being attached must still end in a clean detach.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    let mut setup = Setup::read()?;
    setup.require_privileges()?;
    if args.tc_attach == TcAttach::Tcx && !setup.caps.tcx() {
        return Err(usage(format!(
            "--tc-attach tcx needs kernel 6.6 or later (this is {}): use --tc-attach netlink or auto",
            setup.caps.kernel
        )));
    }
    let chosen = interfaces(&setup.links, &args.iface)?;

    // Pods behind our cali* veths, so that drops inside them are reported too.
    let veths: Vec<netlink::Link> = chosen
        .iter()
        .filter(|l| l.kind == "veth" && l.name.starts_with("cali"))
        .map(|l| (*l).clone())
        .collect();
    let pods = netns::discover(setup.own_netns, &veths);

    let mut facts = NodeFacts {
        node: system::node_name(),
        kernel: setup.caps.kernel.clone(),
        netns: setup.own_netns,
        reasons: setup
            .btf
            .as_ref()
            .map(KernelBtf::drop_reasons)
            .unwrap_or_default(),
        local_addrs: system::local_addresses().into_iter().collect(),
        netfilter: Some(Inventory::read()),
        iptables_binary: iptables_binary_backend(),
        ..Default::default()
    };
    for l in &setup.links {
        facts
            .ifnames
            .insert(ifkey(setup.own_netns, l.index), l.name.clone());
    }
    for p in &pods {
        facts.pods.insert(
            p.inode,
            PodInfo {
                name: p.name.clone(),
                host_iface: p.host_iface.clone(),
            },
        );
        for (idx, name) in &p.links {
            facts.ifnames.insert(ifkey(p.inode, *idx), name.clone());
        }
    }

    let netns_filter = (!args.all_netns).then(|| {
        let mut v = vec![setup.own_netns];
        v.extend(pods.iter().map(|p| p.inode));
        v
    });
    let owned: Vec<netlink::Link> = chosen.iter().map(|l| (*l).clone()).collect();
    let mut tracer = Tracer::load(
        &setup.caps,
        setup.btf.as_ref(),
        LoadOptions {
            filter: compiled,
            netns: netns_filter,
            own_netns: setup.own_netns,
            ring_bytes: args.ring_mib * 1024 * 1024,
            interfaces: &owned,
            attach: true,
            all_verdicts: args.view.verdicts,
            inventory: facts.netfilter.as_ref(),
            exact: args.nf_probes,
            tc_attach: args.tc_attach,
        },
    )?;
    // The parsed kernel BTF (tens of MiB) has served its purpose: offsets and
    // drop reason names are taken. Freed now, not when tracing ends.
    drop(setup.btf.take());
    if tracer.report.attached.is_empty() {
        let why: Vec<String> = tracer
            .report
            .unavailable
            .iter()
            .map(|u| format!("{}: {}", u.name, u.reason))
            .collect();
        anyhow::bail!("no probe could be attached: {}", why.join("; "));
    }

    let output = match choose_output(args.view.output) {
        Output::Pcap => return Err(usage("--output pcap is for `calitrace replay FILE`")),
        o => o,
    };
    let start = Start {
        node: facts.node.clone(),
        kernel: facts.kernel.clone(),
        netns: facts.netns,
        filter: filter.to_string(),
        interfaces: tracer.interfaces.clone(),
        probes_attached: tracer.report.attached.clone(),
        probes_unavailable: tracer.report.unavailable.clone(),
        iptables: facts.iptables_binary.map(|b| b.to_string()),
        calico_chains: facts
            .netfilter
            .as_ref()
            .and_then(Inventory::calico_chains)
            .map(|c| format!("{c:?}").to_lowercase()),
    };
    report_start(&start, pods.len(), &tracer.attribution_method());
    if args.view.verdicts
        && !start
            .probes_attached
            .iter()
            .any(|p| crate::probes::exact::is_exact(&p.name))
    {
        eprintln!(
            "calitrace: --verdicts needs the exact netfilter probes (fexit or kprobes), unavailable here: no verdict lines"
        );
    }

    let env = Environment::live(facts, setup.kallsyms);
    let pipeline = Pipeline::new(
        env,
        Options {
            packets: !args.view.drops_only,
            verdicts: args.view.verdicts,
            ..Options::default()
        },
    );
    let mut session = Session::new(pipeline);
    if let Some(path) = &args.write {
        session.start_recording(path, recording_header(&start))?;
    }
    let mut sink: Box<dyn Sink> = match output {
        Output::Tui => Box::new(crate::views::tui::TuiSink::live()?),
        _ => Box::new(LineSink(line_view(output))),
    };
    if output != Output::Text {
        sink.records(&[Record::Start(start.clone())])?;
    }

    let started = std::time::Instant::now();
    let result = rt.block_on(event_loop(
        &mut tracer,
        &mut session,
        sink.as_mut(),
        &start,
        args.duration,
        signals,
    ));
    session.finish();
    let mut tail = session.take_records();
    tail.push(Record::Stats(stats(
        &tracer,
        started.elapsed().as_secs_f64(),
    )));
    let end = end_counters(&tracer);
    let recorded = session.stop_recording(&end);
    let shown = sink.records(&tail).and_then(|_| sink.flush());
    drop(tracer); // detach before reporting success
    result?;
    recorded?;
    shown?;
    Ok(())
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

fn report_start(start: &Start, pods: usize, attribution: &str) {
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
        start.iptables.as_deref().unwrap_or("unknown backend"),
        start.calico_chains.as_deref().unwrap_or("none found")
    );
    eprintln!(
        "calitrace: tracing on {} (netns {}, {} pod namespace(s)); Ctrl-C to stop",
        start.node, start.netns, pods
    );
}

fn kernel_counts(tracer: &Tracer) -> (std::collections::BTreeMap<String, u64>, u64) {
    use tracer_common::counter;
    let c = tracer.counters();
    let mut events = std::collections::BTreeMap::new();
    events.insert("tc_seen".into(), c[counter::TC_SEEN as usize]);
    events.insert("tc".into(), c[counter::TC_EMITTED as usize]);
    events.insert("kfree_skb_seen".into(), c[counter::DROP_SEEN as usize]);
    events.insert("kfree_skb".into(), c[counter::DROP_EMITTED as usize]);
    events.insert(
        "netfilter_verdicts_seen".into(),
        c[counter::VERDICT_SEEN as usize],
    );
    events.insert(
        "netfilter_verdicts".into(),
        c[counter::VERDICT_EMITTED as usize],
    );
    events.insert(
        "netfilter_links_seen".into(),
        c[counter::HOOK_SEEN as usize],
    );
    events.insert("netfilter_links".into(), c[counter::HOOK_EMITTED as usize]);
    (events, c[counter::LOST as usize])
}

fn end_counters(tracer: &Tracer) -> End {
    let (events, lost) = kernel_counts(tracer);
    End { events, lost }
}

fn stats(tracer: &Tracer, duration_s: f64) -> Stats {
    let (events, lost) = kernel_counts(tracer);
    Stats {
        events,
        lost,
        probes_attached: tracer.report.attached.clone(),
        probes_unavailable: tracer.report.unavailable.clone(),
        duration_s,
    }
}

async fn event_loop(
    tracer: &mut Tracer,
    session: &mut Session,
    sink: &mut dyn Sink,
    start: &Start,
    duration: Option<f64>,
    (mut sigint, mut sigterm): (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
) -> Result<()> {
    let ring = tracer.take_ring().context("ring buffer")?;
    // SAFETY: the RingBuf owns its map fd, which stays open until the
    // AsyncFd (and with it the RingBuf) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let deadline = duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut tick = tokio::time::interval(TICK);
    let mut status = Status {
        filter: start.filter.clone(),
        ..Status::default()
    };
    let mut rate = Rate::default();
    let mut lost_reported = 0;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let rb = guard.get_inner_mut();
                let mut n = 0;
                while n < BATCH {
                    let Some(item) = rb.next() else { break };
                    if let Ok(input) = decode_input(&item) {
                        session.feed(&input)?;
                    }
                    n += 1;
                }
                rate.add(n as u64);
                if n < BATCH {
                    guard.clear_ready();
                    // Batched reading: the kernel wakes this loop for the first
                    // event after the ring was drained; waiting a moment before
                    // draining again makes that one wake-up per pause under a
                    // steady stream, not one per event.
                    if n > 0 {
                        tokio::time::sleep(DRAIN_PAUSE).await;
                    }
                } else {
                    drop(guard);
                    // A full batch: let the runtime drive timers and signals,
                    // so a flood cannot starve the lost counter or Ctrl-C.
                    tokio::task::yield_now().await;
                }
            }
            _ = tick.tick() => {
                session.feed(&Input::Tick(crate::time::monotonic_ns()))?;
                let lost = tracer.counters()[tracer_common::counter::LOST as usize];
                if lost > lost_reported {
                    eprintln!("calitrace: {} events lost (ring buffer full); narrow the FILTER or raise --ring-mib", lost - lost_reported);
                    lost_reported = lost;
                }
                status.lost = lost;
                status.events_per_sec = rate.per_second();
                status.recording = session.recording().map(|p| p.to_path_buf());
                sink.status(&status);
                while let Some(c) = sink.control() {
                    match c {
                        Control::Quit => return Ok(()),
                        Control::SetFilter(f) => match f.compile() {
                            Ok(prog) => {
                                tracer.set_filter(prog)?;
                                status.filter = f.to_string();
                                status.error = None;
                            }
                            Err(e) => status.error = Some(e.to_string()),
                        },
                        Control::StartRecording(path) => {
                            if let Err(e) = session.start_recording(&path, recording_header(start)) {
                                status.error = Some(format!("{e:#}"));
                            }
                        }
                        Control::StopRecording => session.stop_recording(&end_counters(tracer))?,
                        Control::Pause(_) | Control::Step => {}
                    }
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
        if session.has_records() {
            let records = session.take_records();
            if !sink.records(&records)? {
                break;
            }
            sink.flush()?;
        }
    }
    Ok(())
}

/// Events per second over the last few seconds.
#[derive(Default)]
struct Rate {
    window: std::collections::VecDeque<(std::time::Instant, u64)>,
}

impl Rate {
    fn add(&mut self, n: u64) {
        let now = std::time::Instant::now();
        self.window.push_back((now, n));
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(3))
        {
            self.window.pop_front();
        }
    }

    fn per_second(&self) -> f64 {
        match (self.window.front(), self.window.back()) {
            (Some((first, _)), Some((last, _))) if last > first => {
                let total: u64 = self.window.iter().map(|(_, n)| n).sum();
                total as f64 / last.duration_since(*first).as_secs_f64().max(1.0)
            }
            _ => 0.0,
        }
    }
}
