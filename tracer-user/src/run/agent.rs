//! `calitrace agent`: trace like `trace`, and write the recording stream to
//! stdout for a `cluster` client; human messages go to stderr only. It stops
//! cleanly, detaching everything, on SIGTERM, SIGINT, SIGHUP, when its stdin
//! (a pipe or socket) closes, when stdout breaks, and after `--duration`.

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, Result};

use super::event_loop::event_loop;
use super::live::{Tracing, begin, end_counters, recording_header};
use super::usage;
use crate::cli::TraceArgs;
use crate::views::Discard;

/// Frames reach the client at least this often while events flow.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

pub fn run(args: TraceArgs) -> Result<()> {
    if args.write.is_some() || args.view.output.is_some() {
        return Err(usage(
            "calitrace agent writes its recording stream to stdout: -o and -w are for `calitrace trace`",
        ));
    }
    let stdout = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("stdout")?;
    let mut t: Tracing = begin(&args)?;
    let stops = if stdin_can_close() {
        t.stops.and_stdin_closing()
    } else {
        t.stops
    };
    t.session.start_stream(
        Box::new(std::fs::File::from(stdout)),
        recording_header(&t.start),
        FLUSH_EVERY,
    )?;
    eprintln!(
        "calitrace: agent on {}: recording stream on stdout",
        t.start.node
    );
    let result = t.rt.block_on(event_loop(
        &mut t.tracer,
        &mut t.session,
        &mut t.watch,
        &mut Discard,
        &t.start,
        args.duration,
        stops,
    ));
    t.session.finish();
    let ended = t.session.stop_recording(&end_counters(&t.tracer));
    drop(t.tracer); // detach before reporting
    quiet_if_client_gone(result)?;
    quiet_if_client_gone(ended)
}

/// Whether stdin is a pipe or socket: one that a client closes. A terminal
/// hangs up with SIGHUP instead, and `/dev/null` never closes.
fn stdin_can_close() -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata("/proc/self/fd/0")
        .map(|m| m.file_type().is_fifo() || m.file_type().is_socket())
        .unwrap_or(false)
}

/// A broken stdout means the client went away: a clean end, not an error.
fn quiet_if_client_gone(r: Result<()>) -> Result<()> {
    match r {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
            }) =>
        {
            eprintln!("calitrace: agent: the client closed the stream; stopped");
            Ok(())
        }
        other => other,
    }
}
