//! One tracing or replay session: inputs go through the pipeline (and, when
//! recording, to the file); records come out for whatever view is showing.

use std::path::Path;

use anyhow::Result;

use crate::events::Input;
use crate::model::Record;
use crate::pipeline::Pipeline;
use crate::recording::format::{End, Header};
use crate::recording::writer::Recorder;

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

    /// Starts streaming the recording to `out` (an agent's stdout).
    pub fn start_stream(
        &mut self,
        out: Box<dyn std::io::Write + Send>,
        mut header: Header,
        flush_every: std::time::Duration,
    ) -> Result<()> {
        header.facts = self.pipeline.env.facts.clone();
        self.recorder = Some(Recorder::stream(out, &header, flush_every)?);
        Ok(())
    }

    pub fn stop_recording(&mut self, end: &End) -> Result<()> {
        match self.recorder.take() {
            Some(r) => r.finish(end),
            None => Ok(()),
        }
    }

    pub fn recording(&self) -> Option<&Path> {
        self.recorder.as_ref().and_then(|r| r.path())
    }

    pub fn flush_recording(&mut self) -> Result<()> {
        match &mut self.recorder {
            Some(r) => r.flush(),
            None => Ok(()),
        }
    }

    /// The kernel's count of lost events: recorded when it grows.
    pub fn note_lost(&mut self, ts_ns: u64, lost: u64) {
        self.pipeline.env.note_lost(ts_ns, lost);
    }

    /// End of input: pending diagnoses are reported.
    pub fn finish(&mut self) {
        self.pipeline.finish(&mut self.out);
    }

    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.out)
    }

    /// Exchanges the records made so far with `buf` (which should be
    /// empty): both keep their room, so a stream of records allocates none.
    pub fn swap_records(&mut self, buf: &mut Vec<Record>) {
        std::mem::swap(&mut self.out, buf);
    }

    pub fn has_records(&self) -> bool {
        !self.out.is_empty()
    }
}
