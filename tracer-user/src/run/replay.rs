//! `calitrace replay FILE`: the same pipeline and views, fed from a recording.
//! Needs no privileges.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::session::{LineSink, Session, Sink};
use super::{choose_output, is_terminal, line_view, usage};
use crate::cli::{Output, ReplayArgs};
use crate::events::Input;
use crate::events::facts::Environment;
use crate::events::records::{Record, Stats};
use crate::filter::Filter;
use crate::pipeline::{Options, Pipeline};
use crate::recording::format::{End, Header};
use crate::recording::pcap::{self, PcapWriter};
use crate::recording::reader::{self, Item, Problem};

pub fn run(args: ReplayArgs) -> Result<()> {
    let filter = Filter::parse_words(&args.view.filter).map_err(|e| usage(e.to_string()))?;
    let compiled = filter.compile().map_err(|e| usage(e.to_string()))?;
    if let Some(s) = args.speed
        && !(s.is_finite() && s > 0.0)
    {
        return Err(usage(format!("--speed {s} must be a positive number")));
    }
    let (header, mut frames) = reader::open(&args.file).map_err(|e| usage(e.to_string()))?;
    let output = match choose_output(args.view.output) {
        Output::Tui => {
            eprintln!("calitrace: the TUI is not available yet; showing text");
            Output::Text
        }
        Output::Pcap if is_terminal() => {
            return Err(usage(
                "pcapng is binary: redirect stdout to a file (calitrace replay FILE -o pcap > out.pcapng)",
            ));
        }
        o => o,
    };
    let env = Environment::replay(header.facts.clone());
    let opts = Options {
        packets: !args.view.drops_only,
        verdicts: args.view.verdicts,
        filter: (!filter.is_match_all()).then_some(compiled),
        ..Options::default()
    };
    let mut session = Session::new(Pipeline::new(env, opts));
    let mut pcap_out = match output {
        Output::Pcap => Some(PcapWriter::new(std::io::BufWriter::new(std::io::stdout()))?),
        _ => None,
    };
    let mut sink = LineSink(line_view(output));
    if output == Output::Json {
        sink.records(&[Record::Start(crate::events::records::Start {
            node: header.node.clone(),
            kernel: header.kernel.clone(),
            netns: header.facts.netns,
            filter: header.filter.clone(),
            interfaces: header.interfaces.clone(),
            probes_attached: header.probes_attached.clone(),
            probes_unavailable: header.probes_unavailable.clone(),
            iptables: header.facts.iptables_binary.map(|b| b.to_string()),
            calico_chains: header
                .facts
                .netfilter
                .as_ref()
                .and_then(crate::netfilter::Inventory::calico_chains)
                .map(|c| format!("{c:?}").to_lowercase()),
        })])?;
    }

    let mut pace = Pace::new(args.speed);
    let mut end = End::default();
    let mut problem = None;
    let mut last_ts = 0;
    loop {
        let item = match frames.next_item() {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(p) => {
                problem = Some(p);
                break;
            }
        };
        match item {
            Item::Fact(f) => session.pipeline.env.apply(&f),
            Item::End(e) => end = e,
            Item::Input(input) => {
                let ts = match &input {
                    Input::Event(e) => e.ts_ns,
                    Input::Verdict(v) => v.ev.ts_ns,
                    Input::Tick(t) => *t,
                };
                pace.wait(ts);
                last_ts = last_ts.max(ts);
                session.feed(&input)?;
                let records = session.take_records();
                match (&mut pcap_out, &input) {
                    (Some(w), Input::Event(ev)) => write_pcap(w, &header, ev, &records)?,
                    (Some(_), _) => {}
                    (None, _) => {
                        if !sink.records(&records)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
    session.finish();
    let mut tail = session.take_records();
    let first = pace.first.unwrap_or(last_ts);
    tail.push(Record::Stats(Stats {
        events: end.events.clone(),
        lost: end.lost,
        probes_attached: header.probes_attached.clone(),
        probes_unavailable: header.probes_unavailable.clone(),
        duration_s: last_ts.saturating_sub(first) as f64 / 1e9,
    }));
    match &mut pcap_out {
        Some(w) => w.flush()?,
        None => {
            sink.records(&tail)?;
            sink.flush()?;
        }
    }
    match problem {
        None => Ok(()),
        Some(p @ Problem::Truncated { .. }) => {
            eprintln!("calitrace: warning: {p}");
            Ok(())
        }
        Some(p) => Err(anyhow::anyhow!("{p}")),
    }
}

fn write_pcap<W: std::io::Write>(
    w: &mut PcapWriter<W>,
    header: &Header,
    ev: &tracer_common::Event,
    records: &[Record],
) -> Result<()> {
    let Some(frame) = pcap::frame(&ev.pkt) else {
        return Ok(());
    };
    let comment: Vec<String> = records
        .iter()
        .filter(|r| matches!(r, Record::Packet(_) | Record::Drop(_)))
        .filter_map(|r| serde_json::to_string(r).ok())
        .collect();
    if comment.is_empty() {
        return Ok(()); // filtered out on replay
    }
    let wall = header
        .start_realtime_ns
        .saturating_add(ev.ts_ns.saturating_sub(header.start_monotonic_ns));
    w.packet(wall, &frame, ev.pkt.len + 14, &comment.join("\n"))?;
    Ok(())
}

/// Sleeps so that inputs come out at `speed` times their recorded pace.
struct Pace {
    speed: Option<f64>,
    first: Option<u64>,
    started: Instant,
}

impl Pace {
    fn new(speed: Option<f64>) -> Self {
        Self {
            speed,
            first: None,
            started: Instant::now(),
        }
    }

    fn wait(&mut self, ts: u64) {
        let first = *self.first.get_or_insert(ts);
        if let Some(speed) = self.speed {
            let due = Duration::from_secs_f64(ts.saturating_sub(first) as f64 / 1e9 / speed);
            if let Some(d) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(d);
            }
        }
    }
}
