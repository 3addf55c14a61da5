//! `calitrace agent`: trace like `trace`, and write the recording stream to
//! stdout for a `cluster` client; human messages go to stderr only. It stops
//! cleanly, detaching everything, on SIGTERM, SIGINT, SIGHUP, when its stdin
//! (a pipe or socket) closes or a client's keep-alives stop, when stdout
//! breaks, and after `--duration` or `--max-lifetime`. It registers itself
//! (`registry`) so that the DaemonSet's preStop hook can stop it.

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::event_loop::event_loop;
use super::live::{Tracing, begin, end_counters, recording_header};
use super::registry;
use super::usage;
use crate::cli::AgentArgs;
use crate::views::Discard;

/// Frames reach the client at least this often while events flow.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// How often a cluster client sends a keep-alive byte on the agent's stdin.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(5);

pub fn run(agent: AgentArgs) -> Result<()> {
    let args = agent.trace;
    if agent.max_lifetime <= 0.0 || agent.keepalive_timeout <= 0.0 {
        return Err(usage(
            "--max-lifetime and --keepalive-timeout take a number of seconds above 0",
        ));
    }
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
    let _registered = registry::register();
    let stops = if stdin_can_close() {
        t.stops
            .and_stdin_closing(Duration::from_secs_f64(agent.keepalive_timeout))
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
    // --duration is the bound where given, longer or not.
    let lifetime = args.duration.unwrap_or(agent.max_lifetime);
    let began = Instant::now();
    let result = t.rt.block_on(event_loop(
        &mut t.tracer,
        &mut t.session,
        &mut t.watch,
        &mut Discard,
        &t.start,
        Some(lifetime),
        stops,
    ));
    if args.duration.is_none() && began.elapsed().as_secs_f64() >= lifetime {
        eprintln!(
            "calitrace: agent: stopped after its maximum lifetime ({lifetime:.0} s, --max-lifetime)"
        );
    }
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
