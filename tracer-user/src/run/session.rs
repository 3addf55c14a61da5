//! One tracing or replay session: inputs go through the pipeline (and, when
//! recording, to the file); records come out for whatever view is showing.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::events::Input;
use crate::events::records::Record;
use crate::filter::Filter;
use crate::pipeline::Pipeline;
use crate::recording::format::{End, Header};
use crate::recording::writer::Recorder;

/// What an interactive view asks of the session.
#[derive(Debug, Clone)]
pub enum Control {
    Quit,
    /// Replace the filter (in the kernel when live, in userspace on replay).
    SetFilter(Filter),
    StartRecording(PathBuf),
    StopRecording,
    /// Replay only: stop feeding / feed again / feed one input.
    Pause(bool),
    Step,
}

/// Live numbers a view may show besides the records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    pub events_per_sec: f64,
    pub lost: u64,
    pub recording: Option<PathBuf>,
    pub filter: String,
    /// Set when something the view asked for failed (e.g. a bad filter).
    pub error: Option<String>,
    /// Replay: the recording has been read to its end.
    pub finished: bool,
}

/// Where records go: a line view on stdout, or the TUI.
pub trait Sink {
    /// Shows records; `Ok(false)` when the view is gone (stdout closed, TUI quit).
    fn records(&mut self, records: &[Record]) -> std::io::Result<bool>;
    fn status(&mut self, _status: &Status) {}
    /// The next request from an interactive view, if any.
    fn control(&mut self) -> Option<Control> {
        None
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A line view (text or JSON) as a sink; a closed stdout ends the session quietly.
pub struct LineSink(pub Box<dyn crate::views::View>);

impl Sink for LineSink {
    fn records(&mut self, records: &[Record]) -> std::io::Result<bool> {
        for r in records {
            match self.0.record(r) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
                other => other?,
            }
        }
        Ok(true)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

pub struct Session {
    pub pipeline: Pipeline,
    recorder: Option<Recorder>,
    out: Vec<Record>,
}

impl Session {
    pub fn new(pipeline: Pipeline) -> Self {
        Self {
            pipeline,
            recorder: None,
            out: Vec::new(),
        }
    }

    pub fn feed(&mut self, input: &Input) -> Result<()> {
        self.pipeline.process(input, &mut self.out);
        // Always drained, so that facts never pile up when not recording.
        let facts = self.pipeline.env.take_updates();
        if let Some(r) = &mut self.recorder {
            r.record(&facts, input)?;
        }
        Ok(())
    }

    /// Starts writing to `path`; the header carries everything known so far.
    pub fn start_recording(&mut self, path: &Path, mut header: Header) -> Result<()> {
        header.facts = self.pipeline.env.facts.clone();
        self.recorder = Some(Recorder::create(path, &header)?);
        Ok(())
    }

    pub fn stop_recording(&mut self, end: &End) -> Result<()> {
        match self.recorder.take() {
            Some(r) => r.finish(end),
            None => Ok(()),
        }
    }

    pub fn recording(&self) -> Option<&Path> {
        self.recorder.as_ref().map(|r| r.path())
    }

    pub fn flush_recording(&mut self) -> Result<()> {
        match &mut self.recorder {
            Some(r) => r.flush(),
            None => Ok(()),
        }
    }

    /// End of input: pending diagnoses are reported.
    pub fn finish(&mut self) {
        self.pipeline.finish(&mut self.out);
    }

    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.out)
    }

    pub fn has_records(&self) -> bool {
        !self.out.is_empty()
    }
}
