//! The live event loop: drain the ring buffer into the session, move the
//! clock on, hear the view, stop on a signal, the deadline or a closed view.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::interfaces::InterfaceWatch;
use super::live::{end_counters, recording_header};
use super::session::Session;
use crate::events::Input;
use crate::model::{Record, Start};
use crate::probes::decode_input;
use crate::probes::loader::Tracer;
use crate::views::{Control, Sink, Status};

/// Events handled per wake-up before the loop looks at signals and timers again.
const BATCH: usize = 4096;
/// How long the loop lets events gather after draining the ring (a 8 MiB ring
/// holds 87,000 events, almost a second at 100k events/s: 5 ms is far from
/// filling it). Each pause is a timer and a wake-up of this process: at 1 ms
/// they were a tenth of its CPU under a steady stream.
const DRAIN_PAUSE: Duration = Duration::from_millis(5);
/// Events fed to the pipeline before the records they made are shown: a
/// record is written while its strings are still in the CPU's cache (a whole
/// batch of journeys in between pushed them out: a tenth of the CPU was the
/// JSON writer waiting for memory).
const SHOW_EVERY: usize = 64;
/// How often the clock moves on without events, and interactive views are heard.
const TICK: Duration = Duration::from_millis(100);

/// Why the loop ended early, or that it goes on.
enum Flow {
    Go,
    Stop,
}

/// What ends tracing besides the deadline: SIGINT, SIGTERM, SIGHUP, and for
/// an agent its stdin closing.
pub struct Stops {
    sigint: Signal,
    sigterm: Signal,
    sighup: Signal,
    stdin_closed: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Stops {
    /// Installs the signal handlers (inside the runtime).
    pub fn listen() -> std::io::Result<Stops> {
        Ok(Stops {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            sighup: signal(SignalKind::hangup())?,
            stdin_closed: None,
        })
    }

    /// Also stops when stdin reaches its end (the client went away), or,
    /// once a byte came (a client that sends keep-alives), when nothing
    /// comes for `keepalive` (a client cut off without the stream closing).
    pub fn and_stdin_closing(mut self, keepalive: Duration) -> Stops {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (heard, beats) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            loop {
                match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        if heard.send(()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
        std::thread::spawn(move || {
            // Until the first byte, only the end of stdin counts: an older
            // client sends no keep-alives.
            if beats.recv().is_ok() {
                use std::sync::mpsc::RecvTimeoutError;
                loop {
                    match beats.recv_timeout(keepalive) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => {
                            eprintln!(
                                "calitrace: agent: no keep-alive from the client for {:.0} s: it is gone; stopping",
                                keepalive.as_secs_f64()
                            );
                            break;
                        }
                    }
                }
            }
            tx.send(()).ok();
        });
        self.stdin_closed = Some(rx);
        self
    }

    /// Waits for any of them.
    async fn any(&mut self) {
        let stdin = async {
            match &mut self.stdin_closed {
                Some(rx) => {
                    rx.await.ok();
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
            _ = self.sighup.recv() => {}
            _ = stdin => {}
        }
    }
}

pub async fn event_loop(
    tracer: &mut Tracer,
    session: &mut Session,
    watch: &mut InterfaceWatch,
    sink: &mut dyn Sink,
    start: &Start,
    duration: Option<f64>,
    mut stops: Stops,
) -> Result<()> {
    let ring = tracer.take_ring().context("ring buffer")?;
    // SAFETY: the RingBuf owns its map fd, which stays open until the
    // AsyncFd (and with it the RingBuf) is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the ring buffer: {e}"))?;
    let deadline = duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut tick = tokio::time::interval(TICK);
    let mut status = Status {
        filter: start.filter.clone(),
        ..Status::default()
    };
    let mut rate = Rate::default();
    let mut lost_reported = 0;
    let mut nf_demand = super::nf_demand::NfDemand::default();
    let mut records = Vec::new(); // see `show`
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let (n, shown) = drain(guard.get_inner_mut(), session, sink, &mut records)?;
                if !shown {
                    break;
                }
                rate.add(n as u64);
                if n < BATCH {
                    guard.clear_ready();
                    // Batched reading: the kernel wakes this loop for the first
                    // event after the ring was drained; waiting a moment before
                    // draining again makes that one wake-up per pause under a
                    // steady stream, not one per event.
                    if n > 0 {
                        tokio::time::sleep(DRAIN_PAUSE).await;
                    }
                } else {
                    drop(guard);
                    // A full batch: let the runtime drive timers and signals,
                    // so a flood cannot starve the lost counter or Ctrl-C.
                    tokio::task::yield_now().await;
                }
            }
            _ = watch.announced() => watch.on_announcements(tracer, &mut session.pipeline.env),
            // One waiting interface per turn, then the runtime drives its
            // timers, signals and the ring before the next.
            _ = std::future::ready(()), if watch.has_waiting() => {
                watch.attach_next(tracer, &mut session.pipeline.env);
                tokio::task::yield_now().await;
            }
            _ = tick.tick() => {
                watch.tick(tracer, &mut session.pipeline.env);
                session.feed(&Input::Tick(crate::time::monotonic_ns()))?;
                status.lost = check_lost(tracer, session, &mut lost_reported);
                nf_demand.tick(tracer, session.pipeline.nf_drops_inferred, std::time::Instant::now());
                status.events_per_sec = rate.per_second();
                status.recording = session.recording().map(|p| p.to_path_buf());
                status.interfaces = Some(watch.count(tracer));
                sink.status(&status);
                sink.flush()?; // lines reach stdout within a tick of their event
                if let Flow::Stop = hear_view(tracer, session, sink, start, &mut status)? {
                    return Ok(());
                }
            }
            _ = stops.any() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
        }
        if !show(session, sink, &mut records)? {
            break;
        }
    }
    Ok(())
}

/// The kernel's count of lost events, recorded, and told on stderr when it
/// grew since `reported`.
fn check_lost(tracer: &Tracer, session: &mut Session, reported: &mut u64) -> u64 {
    let lost = tracer.counters()[tracer_common::counter::LOST as usize];
    session.note_lost(crate::time::monotonic_ns(), lost);
    if lost > *reported {
        eprintln!(
            "calitrace: {} events lost (ring buffer full); narrow the FILTER or raise --ring-mib",
            lost - *reported
        );
        *reported = lost;
    }
    lost
}

/// Feeds up to a batch of ring buffer records to the session, showing the
/// records they make every [`SHOW_EVERY`] events; how many, and whether the
/// view is still there.
fn drain(
    rb: &mut aya::maps::RingBuf<aya::maps::MapData>,
    session: &mut Session,
    sink: &mut dyn Sink,
    records: &mut Vec<Record>,
) -> Result<(usize, bool)> {
    let mut n = 0;
    while n < BATCH {
        let Some(item) = rb.next() else { break };
        if let Ok(input) = decode_input(&item) {
            session.feed(&input)?;
        }
        n += 1;
        if n % SHOW_EVERY == 0 && !show(session, sink, records)? {
            return Ok((n, false));
        }
    }
    Ok((n, true))
}

/// Hands the records made so far to the view (through `records`, which
/// keeps its room); false when the view is gone.
fn show(session: &mut Session, sink: &mut dyn Sink, records: &mut Vec<Record>) -> Result<bool> {
    if !session.has_records() {
        return Ok(true);
    }
    session.swap_records(records);
    let shown = sink.records(records)?;
    records.clear();
    Ok(shown)
}

/// Carries out what an interactive view asked for since the last tick.
fn hear_view(
    tracer: &mut Tracer,
    session: &mut Session,
    sink: &mut dyn Sink,
    start: &Start,
    status: &mut Status,
) -> Result<Flow> {
    while let Some(c) = sink.control() {
        match c {
            Control::Quit => return Ok(Flow::Stop),
            Control::SetFilter(f) => match f.compile() {
                Ok(prog) => {
                    tracer.set_filter(prog)?;
                    status.filter = f.to_string();
                    status.error = None;
                }
                Err(e) => status.error = Some(e.to_string()),
            },
            Control::StartRecording(path) => {
                if let Err(e) = session.start_recording(&path, recording_header(start)) {
                    status.error = Some(format!("{e:#}"));
                }
            }
            Control::StopRecording => session.stop_recording(&end_counters(tracer))?,
            Control::Pause(_) | Control::Step => {}
        }
    }
    Ok(Flow::Go)
}

/// Events per second over the last few seconds.
#[derive(Default)]
struct Rate {
    window: std::collections::VecDeque<(std::time::Instant, u64)>,
}

impl Rate {
    fn add(&mut self, n: u64) {
        let now = std::time::Instant::now();
        self.window.push_back((now, n));
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(3))
        {
            self.window.pop_front();
        }
    }

    fn per_second(&self) -> f64 {
        match (self.window.front(), self.window.back()) {
            (Some((first, _)), Some((last, _))) if last > first => {
                let total: u64 = self.window.iter().map(|(_, n)| n).sum();
                total as f64 / last.duration_since(*first).as_secs_f64().max(1.0)
            }
            _ => 0.0,
        }
    }
}
