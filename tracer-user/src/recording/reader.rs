//! Reading a capture back. Never panics on any input: foreign, corrupt,
//! truncated and empty files each get one clear error or warning.

use std::fmt;
use std::io::Read;
use std::path::Path;

use super::format::{self, End, Header, frame};
use crate::events::{Input, decode, decode_encap, decode_verdict};
use crate::facts::Fact;

/// One thing read from a recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Fact(Fact),
    Input(Input),
    End(End),
}

/// Why reading stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The file ends inside a frame (a capture cut short, e.g. by SIGKILL).
    Truncated {
        offset: u64,
        frames: u64,
    },
    /// A frame fails its checksum or makes no sense.
    Corrupt {
        offset: u64,
        frames: u64,
        why: String,
    },
    Io(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Truncated { offset, frames } => {
                write!(
                    f,
                    "the recording ends inside a frame at byte {offset}: it was cut short; read {frames} frames"
                )
            }
            Problem::Corrupt {
                offset,
                frames,
                why,
            } => {
                write!(
                    f,
                    "the recording is corrupt at byte {offset} ({why}); read {frames} frames before it"
                )
            }
            Problem::Io(e) => write!(f, "reading the recording failed: {e}"),
        }
    }
}

/// Errors that make a file unreadable from the start.
#[derive(Debug)]
pub struct OpenError(pub String);

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpenError {}

/// The bytes after the header: as they are, or decompressed (version 5).
enum Source<R: Read> {
    Plain(R),
    Zstd(Box<zstd::Decoder<'static, std::io::BufReader<R>>>),
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Plain(r) => r.read(buf),
            Source::Zstd(z) => z.read(buf),
        }
    }
}

pub struct Reader<R: Read> {
    r: Source<R>,
    /// Frames carry their crc32 (not inside a compressed stream).
    checked: bool,
    /// The current frame's payload; reused, so reading allocates nothing per event.
    payload: Vec<u8>,
    offset: u64,
    pub frames: u64,
    done: bool,
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end of file before
/// the first byte, `Err(true)` when it ends part way.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, Result<bool, std::io::Error>> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(Ok(true)),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A compressed stream cut short.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Ok(true)),
            Err(e) => return Err(Err(e)),
        }
    }
    Ok(true)
}

pub fn open(path: &Path) -> Result<(Header, Reader<std::io::BufReader<std::fs::File>>), OpenError> {
    let file = std::fs::File::open(path)
        .map_err(|e| OpenError(format!("cannot open {}: {e}", path.display())))?;
    from_reader(std::io::BufReader::with_capacity(256 * 1024, file))
        .map_err(|e| OpenError(format!("{}: {}", path.display(), e.0)))
}

pub fn from_reader<R: Read>(mut r: R) -> Result<(Header, Reader<R>), OpenError> {
    let mut fixed = [0u8; 14];
    match read_full(&mut r, &mut fixed) {
        Ok(true) => {}
        Ok(false) => {
            return Err(OpenError(
                "the file is empty, not a calitrace recording".into(),
            ));
        }
        Err(Ok(_)) => return Err(OpenError("too short to be a calitrace recording".into())),
        Err(Err(e)) => return Err(OpenError(e.to_string())),
    }
    if &fixed[..8] != format::MAGIC {
        return Err(OpenError(
            "not a calitrace recording (wrong magic bytes)".into(),
        ));
    }
    let version = u16::from_le_bytes([fixed[8], fixed[9]]);
    if !(format::MIN_VERSION..=format::VERSION_ZSTD).contains(&version) {
        return Err(OpenError(format!(
            "recording format version {version}, this calitrace reads versions {} to {}",
            format::MIN_VERSION,
            format::VERSION_ZSTD
        )));
    }
    let len = u32::from_le_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]);
    if len > format::MAX_HEADER {
        return Err(OpenError(format!("corrupt header length {len}")));
    }
    let mut json = vec![0u8; len as usize];
    match read_full(&mut r, &mut json) {
        Ok(true) => {}
        _ if len == 0 => {}
        _ => return Err(OpenError("the recording ends inside its header".into())),
    }
    let header: Header =
        serde_json::from_slice(&json).map_err(|e| OpenError(format!("corrupt header: {e}")))?;
    if header.event_size as usize != tracer_common::EVENT_SIZE {
        return Err(OpenError(format!(
            "events of {} bytes, this calitrace reads {}: recorded by an incompatible version ({})",
            header.event_size,
            tracer_common::EVENT_SIZE,
            header.calitrace_version
        )));
    }
    let compressed = version == format::VERSION_ZSTD;
    let r = if compressed {
        let zstd_error = |e: std::io::Error| OpenError(format!("zstd: {e}"));
        // A small input buffer: a cluster client holds one per agent.
        let input = std::io::BufReader::with_capacity(16 * 1024, r);
        let mut z = zstd::Decoder::with_buffer(input).map_err(zstd_error)?;
        z.window_log_max(format::ZSTD_WINDOW_LOG_MAX)
            .map_err(zstd_error)?;
        Source::Zstd(Box::new(z))
    } else {
        Source::Plain(r)
    };
    Ok((
        header,
        Reader {
            r,
            checked: !compressed,
            payload: Vec::new(),
            offset: 14 + len as u64,
            frames: 0,
            done: false,
        },
    ))
}

impl<R: Read> Reader<R> {
    /// Whether the frames come out of a compressed stream (offsets then
    /// count its decompressed bytes).
    pub fn compressed(&self) -> bool {
        !self.checked
    }

    /// The next item; `Ok(None)` at the end; `Err` when the rest cannot be read.
    pub fn next_item(&mut self) -> Result<Option<Item>, Problem> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        let mut head = [0u8; format::FRAME_OVERHEAD];
        let truncated = Problem::Truncated {
            offset: at,
            frames: self.frames,
        };
        match read_full(&mut self.r, &mut head) {
            Ok(true) => {}
            Ok(false) => {
                self.done = true;
                return Ok(None);
            }
            Err(Ok(_)) => return self.fail(truncated),
            Err(Err(e)) => return self.fail(self.io_problem(e, at)),
        }
        let kind = head[0];
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let crc = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
        let corrupt = |why: String| Problem::Corrupt {
            offset: at,
            frames: self.frames,
            why,
        };
        if len > format::MAX_FRAME {
            return self.fail(corrupt(format!("frame length {len}")));
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        payload.resize(len as usize, 0);
        let read = read_full(&mut self.r, &mut payload);
        let item = self.item(kind, len, crc, &payload, read, at);
        // Kept for the next frame, unless a big fact frame made it big.
        if payload.capacity() <= 1 << 20 {
            self.payload = payload;
        }
        item
    }

    fn item(
        &mut self,
        kind: u8,
        len: u32,
        crc: u32,
        payload: &[u8],
        read: Result<bool, Result<bool, std::io::Error>>,
        at: u64,
    ) -> Result<Option<Item>, Problem> {
        let truncated = Problem::Truncated {
            offset: at,
            frames: self.frames,
        };
        let corrupt = |why: String| Problem::Corrupt {
            offset: at,
            frames: self.frames,
            why,
        };
        match read {
            Ok(true) => {}
            Ok(false) if len == 0 => {}
            Ok(false) | Err(Ok(_)) => return self.fail(truncated),
            Err(Err(e)) => return self.fail(self.io_problem(e, at)),
        }
        if self.checked && format::crc(kind, payload) != crc {
            return self.fail(corrupt("checksum mismatch".into()));
        }
        let item = match kind {
            frame::EVENT => match decode(payload) {
                Ok(ev) if payload.len() == tracer_common::EVENT_SIZE => {
                    Item::Input(Input::Event(ev))
                }
                _ => return self.fail(corrupt(format!("event frame of {len} bytes"))),
            },
            frame::VERDICT => match decode_verdict(payload) {
                Ok(v) if payload.len() == tracer_common::NF_EVENT_SIZE => {
                    Item::Input(Input::Verdict(v))
                }
                _ => return self.fail(corrupt(format!("verdict frame of {len} bytes"))),
            },
            frame::ENCAP => match decode_encap(payload) {
                Ok(e) if payload.len() == tracer_common::ENCAP_EVENT_SIZE => {
                    Item::Input(Input::Encap(e))
                }
                _ => return self.fail(corrupt(format!("encap frame of {len} bytes"))),
            },
            frame::TICK => match <[u8; 8]>::try_from(payload) {
                Ok(b) => Item::Input(Input::Tick(u64::from_le_bytes(b))),
                Err(_) => return self.fail(corrupt(format!("tick frame of {len} bytes"))),
            },
            frame::FACT => match serde_json::from_slice(payload) {
                Ok(f) => Item::Fact(f),
                Err(e) => return self.fail(corrupt(format!("fact frame: {e}"))),
            },
            frame::END => match serde_json::from_slice(payload) {
                Ok(e) => Item::End(e),
                Err(e) => return self.fail(corrupt(format!("end frame: {e}"))),
            },
            other => return self.fail(corrupt(format!("unknown frame kind {other}"))),
        };
        self.offset += (format::FRAME_OVERHEAD + payload.len()) as u64;
        self.frames += 1;
        Ok(Some(item))
    }

    /// A read error; inside a compressed stream, bytes that do not decompress.
    fn io_problem(&self, e: std::io::Error, at: u64) -> Problem {
        if self.checked {
            return Problem::Io(e.to_string());
        }
        Problem::Corrupt {
            offset: at,
            frames: self.frames,
            why: format!("compressed stream: {e}"),
        }
    }

    fn fail(&mut self, p: Problem) -> Result<Option<Item>, Problem> {
        self.done = true;
        Err(p)
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }
}
