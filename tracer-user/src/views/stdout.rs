//! Stdout for the line views: a large buffer over the file descriptor
//! itself. `std::io::stdout()` is line buffered: behind a `BufWriter` it
//! still splits every chunk at its last newline and writes the partial line
//! apart, two `write(2)`s per chunk, each waking whoever reads the pipe.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

/// Bytes gathered before a write: a pipe's default capacity, so that one
/// write fills what the reader can take at once.
pub const STDOUT_BUFFER: usize = 64 * 1024;

/// File descriptor 1, unbuffered and never closed by this program.
pub struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: fd 1 is open for the life of the process; ManuallyDrop
        // keeps the File from closing it.
        let mut fd = ManuallyDrop::new(unsafe { File::from_raw_fd(1) });
        fd.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Stdout with [`STDOUT_BUFFER`] bytes of buffer: written when full and
/// when flushed.
pub fn buffered_stdout() -> BufWriter<RawStdout> {
    BufWriter::with_capacity(STDOUT_BUFFER, RawStdout)
}
