//! Streaming a capture: to a file (buffered, flushed at least once a second
//! so a crash loses at most about a second, created with mode 0600), or to a
//! stream such as an agent's stdout (flushed at least every 200 ms).

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
    /// The file written, or `None` for a stream.
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
    buf: Vec<u8>,
    last_flush: Instant,
    flush_every: Duration,
    /// The file again, to sync it at the end.
    file: Option<File>,
    pub frames: u64,
}

/// A new recording file only its owner can read: recordings hold addresses.
pub fn create_private(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write the recording {}", path.display()))?;
    // An existing file keeps its mode on open.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

impl Recorder {
    pub fn create(path: &Path, header: &Header) -> Result<Recorder> {
        let file = create_private(path)?;
        let sync = file.try_clone().ok();
        let mut r = Recorder::start(Box::new(file), header, Duration::from_secs(1))?;
        r.path = Some(path.to_path_buf());
        r.file = sync;
        Ok(r)
    }

    /// A recording written to `out` as it happens, flushed at least every
    /// `flush_every` while frames come.
    pub fn stream(
        out: Box<dyn Write + Send>,
        header: &Header,
        flush_every: Duration,
    ) -> Result<Recorder> {
        Recorder::start(out, header, flush_every)
    }

    fn start(
        out: Box<dyn Write + Send>,
        header: &Header,
        flush_every: Duration,
    ) -> Result<Recorder> {
        let mut out = BufWriter::with_capacity(256 * 1024, out);
        let json = serde_json::to_vec(header)?;
        out.write_all(format::MAGIC)?;
        out.write_all(&format::VERSION.to_le_bytes())?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.flush()?;
        Ok(Recorder {
            path: None,
            out,
            buf: Vec::with_capacity(4096),
            last_flush: Instant::now(),
            flush_every,
            file: None,
            frames: 0,
        })
    }

    /// The file written; `None` for a stream.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
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
        if self.last_flush.elapsed() >= self.flush_every {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| match &self.path {
            Some(p) => format!("writing {}", p.display()),
            None => "writing the recording stream".into(),
        })?;
        self.last_flush = Instant::now();
        Ok(())
    }

    pub fn finish(mut self, end: &End) -> Result<()> {
        self.frame(frame::END, &serde_json::to_vec(end)?)?;
        self.flush()?;
        if let Some(f) = &self.file {
            f.sync_data().ok();
        }
        Ok(())
    }
}
