//! Datapath overhead: iperf3 pod to pod across the two lab nodes while node
//! A runs calitrace, or one of the anchors it is measured against (an empty
//! tc program: the floor of any tc tracer; tcpdump: what operators run),
//! all interleaved in one run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use calitrace_tests::calitrace::{self, Trace};
use calitrace_tests::{Lab, Mode};

use crate::anchors::{EmptyProgram, Tcpdump, TcpdumpCounts};
use crate::live::{Iperf3Server, event_count, iperf3, start_bin, stop, tcp_bps, udp_pps};
use crate::util::{Row, median};

/// A filter no lab packet matches.
const NO_MATCH: &str = "host 10.99.99.99";

/// What runs on node A during one measurement.
#[derive(Clone)]
enum Load {
    Untraced,
    EmptyProgram,
    Tcpdump(Option<&'static str>),
    Calitrace(PathBuf, Option<&'static str>),
}

/// What a running [`Load`] holds until the measurement is over.
enum Running {
    Nothing,
    Empty(EmptyProgram),
    Tcpdump(Tcpdump),
    Calitrace(Trace, f64),
}

struct Variant {
    label: &'static str,
    load: Load,
}

/// Per variant: samples and what the tracer said about itself.
#[derive(Default, Clone)]
struct Samples {
    tcp: Vec<f64>,
    udp: Vec<f64>,
    events_per_s: Vec<f64>,
    cpu_per_kev: Vec<f64>,
    lost: f64,
    tcpdump: TcpdumpCounts,
}

fn variants(compare: Option<PathBuf>, floor: bool, tcpdump: bool) -> Vec<Variant> {
    let bin = calitrace::binary();
    let mut v = vec![Variant {
        label: "untraced",
        load: Load::Untraced,
    }];
    if floor {
        v.push(Variant {
            label: "empty tc program",
            load: Load::EmptyProgram,
        });
    }
    if tcpdump {
        v.push(Variant {
            label: "tcpdump, everything",
            load: Load::Tcpdump(None),
        });
        v.push(Variant {
            label: "tcpdump, no match",
            load: Load::Tcpdump(Some(NO_MATCH)),
        });
    }
    v.push(Variant {
        label: "no match",
        load: Load::Calitrace(bin.clone(), Some(NO_MATCH)),
    });
    v.push(Variant {
        label: "all",
        load: Load::Calitrace(bin, None),
    });
    if let Some(other) = compare {
        v.push(Variant {
            label: "no match (compared)",
            load: Load::Calitrace(other.clone(), Some(NO_MATCH)),
        });
        v.push(Variant {
            label: "all (compared)",
            load: Load::Calitrace(other, None),
        });
    }
    v
}

fn has_tcpdump() -> bool {
    std::process::Command::new("tcpdump")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `compare`: another calitrace binary measured alongside (before/after).
pub fn datapath(reps: usize, secs: u32, compare: Option<PathBuf>) -> Result<()> {
    let lab = Lab::new(Mode::Direct)?;
    let (a, b) = (lab.pod(0, 0).clone(), lab.pod(1, 0).clone());
    let node = lab.node(0).clone();
    // calitrace's default interfaces on node A: the pod's cali* and the uplink.
    let ifaces = vec![a.cali.clone(), node.underlay_if.clone()];
    let _tcp_srv = Iperf3Server::start(&b.netns, 5201)?;
    let _udp_srv = Iperf3Server::start(&b.netns, 5202)?;
    let tcpdump = has_tcpdump();
    if !tcpdump {
        eprintln!("datapath: tcpdump is not installed (apt-get install tcpdump): no tcpdump rows");
    }
    // The floor needs TCX (6.6+), as calitrace's default attach does.
    let floor = match EmptyProgram::attach(&lab, &node.netns, &ifaces) {
        Ok(program) => {
            drop(program);
            true
        }
        Err(e) => {
            eprintln!("datapath: no empty-program floor: {e:#}");
            false
        }
    };
    let variants = variants(compare, floor, tcpdump);
    let nv = variants.len();
    eprintln!(
        "datapath: {} -> {} across two lab nodes, node A traced on {}; {reps} x {nv} variants, {secs} s each (TCP, then UDP 64-byte)",
        a.ip,
        b.ip,
        ifaces.join(", ")
    );
    let setup = Setup {
        node: node.netns.clone(),
        ifaces: ifaces.clone(),
        from: a.netns.clone(),
        to: b.ip.clone(),
        secs: secs.to_string(),
    };
    let mut s: Vec<Samples> = vec![Samples::default(); nv];
    for rep in 0..reps {
        // A different order each repetition, so that drift hits all alike.
        for k in 0..nv {
            let i = (k + rep) % nv;
            measure(&lab, &variants[i].load, &setup, &mut s[i])?;
            eprintln!(
                "  rep {rep} {}: TCP {:.2} Gbit/s, UDP {:.0} pkt/s",
                variants[i].label,
                s[i].tcp.last().unwrap() / 1e9,
                s[i].udp.last().unwrap()
            );
        }
    }
    let find = |label: &str| variants.iter().position(|v| v.label == label);
    let table = Table {
        s: &s,
        empty: find("empty tc program"),
        tcpdump_all: find("tcpdump, everything"),
        tcpdump_none: find("tcpdump, no match"),
    };
    for proto in [Proto::Tcp, Proto::Udp] {
        table.untraced_and_anchors(proto);
        for (label, suffix) in [("", ""), (" (compared)", " [compared binary]")] {
            if let Some(i) = find(&format!("no match{label}")) {
                table.no_match(proto, i, suffix);
            }
            if let Some(i) = find(&format!("all{label}")) {
                table.everything(proto, i, suffix);
            }
        }
    }
    Ok(())
}

/// How long calitrace runs before a measurement starts.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the traffic goes and what is traced.
struct Setup {
    /// Node A's namespace and the interfaces traced there.
    node: String,
    ifaces: Vec<String>,
    /// Pod A's namespace, pod B's address.
    from: String,
    to: String,
    secs: String,
}

/// One TCP and one UDP measurement with `load` running on node A.
fn measure(lab: &Lab, load: &Load, setup: &Setup, s: &mut Samples) -> Result<()> {
    let Setup {
        node,
        ifaces,
        from,
        to,
        secs,
    } = setup;
    let running = match load {
        Load::Untraced => Running::Nothing,
        Load::EmptyProgram => Running::Empty(EmptyProgram::attach(lab, node, ifaces)?),
        Load::Tcpdump(filter) => Running::Tcpdump(Tcpdump::start(node, ifaces, *filter)?),
        Load::Calitrace(bin, filter) => {
            let tr = start_bin(bin, node, &filter.iter().copied().collect::<Vec<_>>())?;
            // The steady state: what follows "tracing on" (interfaces attached
            // in the background, the rule inventory, the look-ups of the start)
            // would otherwise fall on the first measurement, TCP's. The
            // attach section measures the start itself.
            std::thread::sleep(SETTLE);
            let cpu = tr.cpu_s();
            Running::Calitrace(tr, cpu)
        }
    };
    let began = Instant::now();
    let r = iperf3(lab, from, &["-c", to, "-p", "5201", "-t", secs])?;
    s.tcp.push(tcp_bps(&r)?);
    let r = iperf3(
        lab,
        from,
        &[
            "-c", to, "-p", "5202", "-u", "-b", "0", "-l", "64", "-t", secs,
        ],
    )?;
    s.udp.push(udp_pps(&r)?);
    let traced = began.elapsed().as_secs_f64();
    match running {
        Running::Nothing => {}
        Running::Empty(program) => drop(program),
        Running::Tcpdump(td) => {
            let c = td.stop()?;
            s.tcpdump.captured += c.captured;
            s.tcpdump.dropped_by_kernel += c.dropped_by_kernel;
        }
        Running::Calitrace(tr, cpu_at_ready) => {
            let cpu = tr.cpu_s() - cpu_at_ready;
            let (_, stats) = stop(tr)?;
            let events = event_count(&stats, "tc");
            if events > 1000.0 {
                s.cpu_per_kev.push(cpu / events * 1e3);
            }
            s.events_per_s.push(events / traced);
            s.lost += stats["lost"].as_f64().unwrap_or(0.0);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn samples(self, s: &Samples) -> &[f64] {
        match self {
            Proto::Tcp => &s.tcp,
            Proto::Udp => &s.udp,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP 64-byte",
        }
    }
    /// A figure in the table's unit.
    fn value(self, x: f64) -> f64 {
        match self {
            Proto::Tcp => x / 1e9,
            Proto::Udp => x,
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Proto::Tcp => "Gbit/s",
            Proto::Udp => "pkt/s",
        }
    }
}

/// The rows, from the samples of every variant (index 0: untraced).
struct Table<'a> {
    s: &'a [Samples],
    empty: Option<usize>,
    tcpdump_all: Option<usize>,
    tcpdump_none: Option<usize>,
}

impl Table<'_> {
    /// Median over repetitions of (variant / untraced of the same
    /// repetition): each repetition's variants ran back to back, so the
    /// ratio is less exposed to drift than the medians are.
    fn ratio(&self, p: Proto, i: usize) -> f64 {
        let base = p.samples(&self.s[0]);
        median(
            &p.samples(&self.s[i])
                .iter()
                .zip(base)
                .map(|(x, b)| x / b)
                .collect::<Vec<_>>(),
        )
    }

    /// 1 - ratio: the share of untraced throughput a variant costs.
    fn cost(&self, p: Proto, i: usize) -> f64 {
        1.0 - self.ratio(p, i)
    }

    fn row(&self, p: Proto, i: usize, name: String) -> Row {
        let base = median(p.samples(&self.s[0]));
        let samples: Vec<f64> = p.samples(&self.s[i]).iter().map(|x| p.value(*x)).collect();
        Row::new("datapath", name, p.value(self.ratio(p, i) * base), p.unit())
            .baseline(p.value(base))
            .samples(&samples)
    }

    fn untraced_and_anchors(&self, p: Proto) {
        let samples: Vec<f64> = p.samples(&self.s[0]).iter().map(|x| p.value(*x)).collect();
        let mut untraced = Row::new(
            "datapath",
            format!("{} pod to pod, untraced", p.name()),
            p.value(median(p.samples(&self.s[0]))),
            p.unit(),
        )
        .samples(&samples);
        if p == Proto::Tcp {
            untraced = untraced.note(
                "others: untraced median x the median of each repetition's ratio; cost = 1 - ratio",
            );
        }
        untraced.emit();
        if let Some(e) = self.empty {
            self.row(p, e, format!("{}, empty tc program (the floor)", p.name()))
                .note(format!(
                    "cost {:.1}%; returns TCX_NEXT, reads nothing; TCX ingress+egress on the same interfaces",
                    100.0 * self.cost(p, e)
                ))
                .emit();
        }
        for (i, what) in [
            (self.tcpdump_all, "capturing everything"),
            (self.tcpdump_none, "filter matching nothing"),
        ] {
            let Some(i) = i else { continue };
            let c = self.s[i].tcpdump;
            self.row(p, i, format!("{}, tcpdump -w /dev/null, {what}", p.name()))
                .note(format!(
                    "cost {:.1}%; one tcpdump per interface; all repetitions, TCP and UDP together: {} captured, {} dropped by the kernel",
                    100.0 * self.cost(p, i),
                    c.captured,
                    c.dropped_by_kernel
                ))
                .emit();
        }
    }

    /// calitrace with a filter matching nothing: against the floor.
    fn no_match(&self, p: Proto, i: usize, suffix: &str) {
        let cost = self.cost(p, i);
        // Without a floor (no TCX here) only the ratio to untraced counts.
        let floor = self.empty.map(|e| self.cost(p, e));
        let within = floor.is_none_or(|f| cost <= 1.5 * f.max(0.0));
        let (target, met) = match p {
            Proto::Tcp => (
                "cost <= 1.5x the floor's, >= 97% of untraced",
                within && self.ratio(p, i) >= 0.97,
            ),
            Proto::Udp => ("cost <= 1.5x the floor's", within),
        };
        let mut note = match floor {
            Some(f) => format!(
                "cost {:.1}% = {} the empty program's {:.1}%",
                100.0 * cost,
                multiple(cost, f),
                100.0 * f
            ),
            None => format!("cost {:.1}% (no empty-program floor here)", 100.0 * cost),
        };
        if let Some(t) = self.tcpdump_none {
            note.push_str(&format!(
                "; tcpdump with the same filter: cost {:.1}%",
                100.0 * self.cost(p, t)
            ));
        }
        self.row(
            p,
            i,
            format!("{}, calitrace, filter matching nothing{suffix}", p.name()),
        )
        .target(target, met)
        .note(note)
        .emit();
    }

    /// calitrace `-o json` with no filter: against tcpdump capturing everything.
    fn everything(&self, p: Proto, i: usize, suffix: &str) {
        let cost = self.cost(p, i);
        let tcpdump = self.tcpdump_all.map(|t| self.cost(p, t));
        let cheaper = tcpdump.is_some_and(|t| cost < t);
        let (target, met) = match p {
            Proto::Tcp => (
                "cheaper than tcpdump, >= 85% of untraced",
                cheaper && self.ratio(p, i) >= 0.85,
            ),
            Proto::Udp => ("cheaper than tcpdump", cheaper),
        };
        let s = &self.s[i];
        let mut note = match tcpdump {
            Some(t) => format!(
                "cost {:.1}% = {} tcpdump's {:.1}%",
                100.0 * cost,
                multiple(cost, t),
                100.0 * t
            ),
            None => format!("cost {:.1}% (no tcpdump to compare)", 100.0 * cost),
        };
        if p == Proto::Tcp {
            note.push_str(&format!(
                "; calitrace: {:.0}k ev/s, {:.1} µs CPU per event, lost {:.0}",
                median(&s.events_per_s) / 1e3,
                median(&s.cpu_per_kev) * 1e3,
                s.lost
            ));
        }
        self.row(
            p,
            i,
            format!("{}, calitrace, everything (`-o json`){suffix}", p.name()),
        )
        .target(target, met)
        .note(note)
        .emit();
    }
}

/// `cost` as a multiple of `of` ("2.1x"); "n/a" where `of` is not above 0
/// (within the noise, or negative).
fn multiple(cost: f64, of: f64) -> String {
    if of > 0.0 {
        format!("{:.1}x", cost / of)
    } else {
        "n/a (floor <= 0)".to_string()
    }
}
