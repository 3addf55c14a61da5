//! `calitrace replay FILE`: the same pipeline and views, fed from a recording.
//! Needs no privileges.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::session::Session;
use super::{choose_output, is_terminal, line_view, usage};
use crate::cli::{Output, ReplayArgs};
use crate::events::Input;
use crate::facts::Environment;
use crate::filter::Filter;
use crate::model::{Record, Stats};
use crate::pipeline::{Options, Pipeline};
use crate::recording::format::{End, Header};
use crate::recording::pcap::{self, PcapWriter};
use crate::recording::reader::{self, Item, Problem};
use crate::views::{Control, LineSink, Sink, Status};

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
    let interactive = output == Output::Tui;
    let mut sink: Box<dyn Sink> = match output {
        Output::Tui => Box::new(crate::views::tui::TuiSink::replay(&args.file)?),
        _ => Box::new(LineSink(line_view(output))),
    };
    let mut view = Interactive::new(interactive, filter.to_string());
    if matches!(output, Output::Json | Output::Tui) {
        sink.records(&[Record::Start(crate::model::Start {
            node: header.node.clone(),
            kernel: header.kernel.clone(),
            netns: header.facts.netns,
            filter: header.filter.clone(),
            interfaces: header.interfaces.clone(),
            probes_attached: header.probes_attached.clone(),
            probes_unavailable: header.probes_unavailable.clone(),
            iptables: header.facts.iptables_binary,
            calico_chains: header
                .facts
                .netfilter
                .as_ref()
                .and_then(crate::netfilter::Inventory::calico_chains),
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
                // Between two inputs the TUI may pause, step, filter or quit.
                if !matches!(input, Input::Tick(_))
                    && !view.obey(sink.as_mut(), &mut session, &mut pace)
                {
                    return Ok(());
                }
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
            view.finished(sink.as_mut(), end.lost);
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

/// What the TUI asks of a replay: pause, step, a new filter, quit.
struct Interactive {
    on: bool,
    paused: bool,
    step: bool,
    announced: bool,
    status: Status,
}

impl Interactive {
    fn new(on: bool, filter: String) -> Self {
        Self {
            on,
            paused: false,
            step: false,
            announced: false,
            status: Status {
                filter,
                ..Status::default()
            },
        }
    }

    fn handle(&mut self, c: Control, session: Option<&mut Session>) -> bool {
        match c {
            Control::Quit => return false,
            Control::Pause(p) => self.paused = p,
            Control::Step => self.step = true,
            Control::SetFilter(f) => {
                match (f.compile(), session) {
                    (Ok(prog), Some(s)) => {
                        s.pipeline.set_filter((!f.is_match_all()).then_some(prog));
                        self.status.filter = f.to_string();
                        self.status.error = None;
                    }
                    (Ok(_), None) => self.status.error = Some(
                        "the replay has ended: give the FILTER to `calitrace replay FILE FILTER`"
                            .into(),
                    ),
                    (Err(e), _) => self.status.error = Some(e.to_string()),
                }
            }
            Control::StartRecording(_) | Control::StopRecording => {
                self.status.error = Some("recording is only available when tracing live".into())
            }
        }
        true
    }

    /// Handles the view's requests and waits while it is paused; false: quit.
    fn obey(&mut self, sink: &mut dyn Sink, session: &mut Session, pace: &mut Pace) -> bool {
        if !self.on {
            return true;
        }
        if !std::mem::replace(&mut self.announced, true) {
            sink.status(&self.status);
        }
        let mut waited: Option<Instant> = None;
        loop {
            while let Some(c) = sink.control() {
                if !self.handle(c, Some(session)) {
                    return false;
                }
                sink.status(&self.status);
            }
            if !self.paused || std::mem::take(&mut self.step) {
                break;
            }
            waited.get_or_insert_with(Instant::now);
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(t) = waited {
            pace.started += t.elapsed(); // paused time does not count for --speed
        }
        true
    }

    /// The recording is read: the view stays until the user quits.
    fn finished(&mut self, sink: &mut dyn Sink, lost: u64) {
        if !self.on {
            return;
        }
        self.status.finished = true;
        self.status.lost = lost;
        sink.status(&self.status);
        loop {
            match sink.control() {
                Some(c) => {
                    if !self.handle(c, None) {
                        return;
                    }
                    sink.status(&self.status);
                }
                None => std::thread::sleep(Duration::from_millis(30)),
            }
        }
    }
}
