//! `calitrace replay FILE`: the same pipeline and views, fed from a recording.
//! Needs no privileges.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::output::{self, Source};
use super::session::Session;
use super::usage;
use crate::cli::{Output, ReplayArgs};
use crate::events::Input;
use crate::facts::Environment;
use crate::filter::Filter;
use crate::model::{Record, Stats};
use crate::pipeline::{Options, Pipeline};
use crate::recording::format::{End, Header};
use crate::recording::pcap::{self, PcapWriter};
use crate::recording::read_ahead::ReadAhead;
use crate::recording::reader::{self, Item, Problem};
use crate::views::{Control, Sink, Status};

pub fn run(args: ReplayArgs) -> Result<()> {
    // `replay A B FILTER`: the leading words that name files are recordings.
    let mut files = vec![args.file.clone()];
    let mut words = args.view.filter.clone();
    while words
        .first()
        .is_some_and(|w| std::path::Path::new(w).is_file())
    {
        files.push(words.remove(0).into());
    }
    let filter = Filter::parse_words(&words).map_err(|e| usage(e.to_string()))?;
    if files.len() > 1 || crate::recording::cluster::is_cluster_recording(&files[0]) {
        return super::merged_replay::run(&files, &args, &filter);
    }
    let compiled = filter.compile().map_err(|e| usage(e.to_string()))?;
    if let Some(s) = args.speed
        && !(s.is_finite() && s > 0.0)
    {
        return Err(usage(format!("--speed {s} must be a positive number")));
    }
    let (header, frames) = reader::open(&args.file).map_err(|e| usage(e.to_string()))?;
    // Reading (frames, checksums, decoding), processing and writing the
    // lines each have a thread: replay is as fast as the slowest of them.
    let mut frames = ReadAhead::spawn(frames);
    let from = Source::Replay {
        file: &args.file,
        paced: args.speed.is_some(),
    };
    let output = output::choose(args.view.output, from)?;
    let opts = Options {
        packets: !args.view.drops_only,
        verdicts: args.view.verdicts,
        filter: (!filter.is_match_all()).then_some(compiled),
        ..Options::default()
    };
    let mut r = Replayer {
        session: Session::new(Pipeline::new(
            Environment::replay(header.facts.clone()),
            opts,
        )),
        pcap: match output {
            Output::Pcap => Some(PcapWriter::new(std::io::BufWriter::new(std::io::stdout()))?),
            _ => None,
        },
        sink: output::open_sink(output, from, args.view.all_drops)?,
        view: Interactive::new(output == Output::Tui, filter.to_string()),
        pace: Pace::new(args.speed),
        end: End::default(),
        last_ts: 0,
        header,
    };
    if output::shows_start(output) {
        r.sink.records(&[Record::Start(r.header.start())])?;
    }
    let problem = loop {
        match frames.next_item() {
            Ok(Some(item)) => {
                if !r.take(item)? {
                    return Ok(());
                }
            }
            Ok(None) => break None,
            Err(p) => break Some(p),
        }
    };
    r.finish()?;
    match problem {
        None => Ok(()),
        Some(p @ Problem::Truncated { .. }) => {
            eprintln!("calitrace: warning: {p}");
            Ok(())
        }
        Some(p) => Err(anyhow::anyhow!("{p}")),
    }
}

/// A replay under way: where its records go, and what it has seen.
struct Replayer {
    session: Session,
    pcap: Option<PcapWriter<std::io::BufWriter<std::io::Stdout>>>,
    sink: Box<dyn Sink>,
    view: Interactive,
    pace: Pace,
    header: Header,
    end: End,
    last_ts: u64,
}

impl Replayer {
    /// Takes one item of the recording; false when the view is gone.
    fn take(&mut self, item: Item) -> Result<bool> {
        let input = match item {
            Item::Fact(f) => {
                self.session.pipeline.env.apply(&f);
                return Ok(true);
            }
            Item::End(e) => {
                self.end = e;
                return Ok(true);
            }
            Item::Input(input) => input,
        };
        // Between two inputs the TUI may pause, step, filter or quit.
        if !matches!(input, Input::Tick(_))
            && !self
                .view
                .obey(self.sink.as_mut(), &mut self.session, &mut self.pace)
        {
            return Ok(false);
        }
        let ts = match &input {
            Input::Event(e) => e.ts_ns,
            Input::Verdict(v) => v.ev.ts_ns,
            Input::Encap(e) => e.ev.ts_ns,
            Input::Tick(t) => *t,
        };
        self.pace.wait(ts);
        self.last_ts = self.last_ts.max(ts);
        self.session.feed(&input)?;
        let records = self.session.take_records();
        match (&mut self.pcap, &input) {
            (Some(w), Input::Event(ev)) => write_pcap(w, &self.header, ev, &records)?,
            // An encapsulated packet is exported as its inner packet; its
            // outer headers are in the record in the packet's comment.
            (Some(w), Input::Encap(enc)) => write_pcap(w, &self.header, &enc.ev, &records)?,
            (Some(_), _) => {}
            (None, _) => return Ok(self.sink.take_records(records)?),
        }
        Ok(true)
    }

    /// The recording is read: what is still pending, and the statistics.
    fn finish(&mut self) -> Result<()> {
        self.session.finish();
        let mut tail = self.session.take_records();
        let first = self.pace.first.unwrap_or(self.last_ts);
        tail.push(Record::Stats(Stats {
            node: None,
            exit: None,
            events: self.end.events.clone(),
            lost: self.end.lost,
            probes_attached: self.header.probes_attached.clone(),
            probes_unavailable: self.header.probes_unavailable.clone(),
            duration_s: self.last_ts.saturating_sub(first) as f64 / 1e9,
            interfaces: self.end.interfaces,
            benign: self.session.pipeline.benign.clone(),
        }));
        match &mut self.pcap {
            Some(w) => w.flush()?,
            None => {
                self.sink.records(&tail)?;
                self.sink.flush()?;
                self.view.finished(self.sink.as_mut(), self.end.lost);
            }
        }
        Ok(())
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
