//! Streaming a capture to a file: buffered, flushed at least once a second so
//! a crash loses at most about a second, created with mode 0600.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::format::{self, End, Header, frame};
use crate::events::{Input, encode, encode_encap, encode_verdict};
use crate::facts::Fact;

pub struct Recorder {
    path: PathBuf,
    out: BufWriter<File>,
    buf: Vec<u8>,
    last_flush: Instant,
    pub frames: u64,
}

impl Recorder {
    pub fn create(path: &Path, header: &Header) -> Result<Recorder> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot write the recording {}", path.display()))?;
        // An existing file keeps its mode on open: recordings hold addresses.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        let json = serde_json::to_vec(header)?;
        out.write_all(format::MAGIC)?;
        out.write_all(&format::VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.flush()?;
        Ok(Recorder {
            path: path.to_path_buf(),
            out,
            buf: Vec::with_capacity(4096),
            last_flush: Instant::now(),
            frames: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> Result<()> {
        self.buf.clear();
        format::encode_frame(&mut self.buf, kind, payload);
        self.out.write_all(&self.buf)?;
        self.frames += 1;
        Ok(())
    }

    /// Records facts learnt while processing `input`, then `input` itself, so
    /// that replay knows them before it processes the input.
    pub fn record(&mut self, facts: &[Fact], input: &Input) -> Result<()> {
        for f in facts {
            self.frame(frame::FACT, &serde_json::to_vec(f)?)?;
        }
        match input {
            Input::Event(ev) => self.frame(frame::EVENT, encode(ev))?,
            Input::Verdict(v) => self.frame(frame::VERDICT, encode_verdict(v))?,
            Input::Encap(e) => self.frame(frame::ENCAP, encode_encap(e))?,
            Input::Tick(t) => self.frame(frame::TICK, &t.to_le_bytes())?,
        }
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.last_flush = Instant::now();
        Ok(())
    }

    pub fn finish(mut self, end: &End) -> Result<()> {
        self.frame(frame::END, &serde_json::to_vec(end)?)?;
        self.flush()?;
        self.out.get_ref().sync_data().ok();
        Ok(())
    }
}
