//! Streaming a capture: to a file (buffered, flushed at least once a second
//! so a crash loses at most about a second, created with mode 0600), or to a
//! stream such as an agent's stdout (zstd-compressed, flushed at least every
//! 200 ms).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::format::{self, End, Header, frame};
use crate::events::{Input, encode, encode_encap, encode_verdict};
use crate::facts::Fact;

type Out = Box<dyn Write + Send>;

/// Where frames go: as they are, or through zstd (agent streams).
enum Frames {
    Plain(BufWriter<Out>),
    Zstd(BufWriter<zstd::Encoder<'static, Out>>),
}

impl Frames {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Frames::Plain(w) => w,
            Frames::Zstd(w) => w,
        }
    }

    /// Writes what is buffered and, compressed, ends the zstd stream.
    fn finish(self) -> std::io::Result<()> {
        match self {
            Frames::Plain(mut w) => w.flush(),
            Frames::Zstd(w) => {
                let mut out = w.into_inner().map_err(|e| e.into_error())?.finish()?;
                out.flush()
            }
        }
    }
}

pub struct Recorder {
    /// The file written, or `None` for a stream.
    path: Option<PathBuf>,
    out: Frames,
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
        let mut r = Recorder::start(Box::new(file), header, Duration::from_secs(1), false)?;
        r.path = Some(path.to_path_buf());
        r.file = sync;
        Ok(r)
    }

    /// A recording written to `out` as it happens (compressed: version 5),
    /// flushed at least every `flush_every` while frames come.
    pub fn stream(out: Out, header: &Header, flush_every: Duration) -> Result<Recorder> {
        Recorder::start(out, header, flush_every, true)
    }

    fn start(mut out: Out, header: &Header, flush_every: Duration, zstd: bool) -> Result<Recorder> {
        let json = serde_json::to_vec(header)?;
        let version = if zstd {
            format::VERSION_ZSTD
        } else {
            format::VERSION
        };
        let mut head = Vec::with_capacity(14 + json.len());
        head.extend_from_slice(format::MAGIC);
        head.extend_from_slice(&version.to_le_bytes());
        head.extend_from_slice(&(json.len() as u32).to_le_bytes());
        head.extend_from_slice(&json);
        out.write_all(&head)?;
        out.flush()?;
        let out = if zstd {
            let mut enc = zstd::Encoder::new(out, format::ZSTD_LEVEL)?;
            enc.include_checksum(true)?;
            enc.window_log(format::ZSTD_WINDOW_LOG)?;
            Frames::Zstd(BufWriter::with_capacity(64 * 1024, enc))
        } else {
            Frames::Plain(BufWriter::with_capacity(256 * 1024, out))
        };
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
        let checked = matches!(self.out, Frames::Plain(_));
        format::encode_frame_with(&mut self.buf, kind, payload, checked);
        self.out.writer().write_all(&self.buf)?;
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
        self.out
            .writer()
            .flush()
            .with_context(|| match &self.path {
                Some(p) => format!("writing {}", p.display()),
                None => "writing the recording stream".into(),
            })?;
        self.last_flush = Instant::now();
        Ok(())
    }

    pub fn finish(mut self, end: &End) -> Result<()> {
        self.frame(frame::END, &serde_json::to_vec(end)?)?;
        let what = match &self.path {
            Some(p) => format!("writing {}", p.display()),
            None => "writing the recording stream".into(),
        };
        self.out.finish().context(what)?;
        if let Some(f) = &self.file {
            f.sync_data().ok();
        }
        Ok(())
    }
}
