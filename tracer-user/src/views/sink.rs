//! What a view and a session say to each other: records and live numbers
//! go to the view ([`Sink`]), requests come back ([`Control`]).

use std::path::PathBuf;

use super::View;
use crate::filter::Filter;
use crate::model::Record;

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
    /// Cluster views: the nodes and their agents.
    pub nodes: Vec<crate::merge::NodeView>,
    /// Live: the interfaces with tc programs, and those waiting for them.
    pub interfaces: Option<Interfaces>,
}

/// How many interfaces are traced, and how many wait for their programs
/// (attached in the background, one after the other).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interfaces {
    pub traced: usize,
    pub waiting: usize,
}

/// Where records go: a line view on stdout, or the TUI.
pub trait Sink {
    /// Shows records; `Ok(false)` when the view is gone (stdout closed, TUI quit).
    fn records(&mut self, records: &[Record]) -> std::io::Result<bool>;
    /// The same, for records the caller no longer needs.
    fn take_records(&mut self, records: Vec<Record>) -> std::io::Result<bool> {
        self.records(&records)
    }
    fn status(&mut self, _status: &Status) {}
    /// The next request from an interactive view, if any.
    fn control(&mut self) -> Option<Control> {
        None
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// Whether a person is looking (the TUI), who decides when it ends.
    fn interactive(&self) -> bool {
        false
    }
}

/// A line view (text or JSON) as a sink; a closed stdout ends the session quietly.
pub struct LineSink(pub Box<dyn View>);

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

/// A sink that shows nothing: an agent's records go to its stream only.
pub struct Discard;

impl Sink for Discard {
    fn records(&mut self, _records: &[Record]) -> std::io::Result<bool> {
        Ok(true)
    }
}
