//! `--output tui`: the interactive view, the default on a terminal.
//!
//! - [`app::App`] is the whole state (flows, drop points, diagnoses, selection,
//!   sort, pause, filter input, help), fed with records and key events; it
//!   answers with [`Control`]s. No terminal needed, unit-tested.
//! - [`render::render`] draws an `App` into a ratatui frame, nothing else
//!   (snapshot-tested with ratatui's `TestBackend`).
//! - [`TuiSink`] is the session's [`Sink`]: it hands record batches and status
//!   to a terminal thread through a queue that never blocks the ring-buffer
//!   reader (when the view falls behind, the oldest packets and drops are
//!   skipped and counted), and passes key-driven controls back with `try_recv`.
//! - The terminal thread reads keys, drains the queue in batches and draws at
//!   most ~30 frames/s; [`terminal`] restores the terminal on quit, error,
//!   panic and signals.

pub mod app;
mod history;
pub mod model;
#[cfg(test)]
mod noise_tests;
pub mod render;
mod terminal;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use app::{App, Mode};

use crate::model::{Diagnosis, Record, Stats};
use crate::views::{Control, Sink, Status};

/// At most one frame per this long (~30 frames/s).
const FRAME: Duration = Duration::from_millis(33);
/// Records waiting for the view before the oldest are skipped (live).
const LIVE_QUEUE: usize = 200_000;
/// Records waiting for the view before the replay waits for it.
const REPLAY_QUEUE: usize = 20_000;
/// The session sends its status ten times a second; this much silence is news.
const STALE: Duration = Duration::from_millis(1500);
/// Records the view takes from the queue in one go.
pub const BATCH: usize = 1_000;
/// How long the view takes in records, a batch at a time, before it looks
/// at keys and draws again: under a flood (hundreds of nodes, 1 M events/s)
/// it stays responsive; what it cannot take in waits in the queue, and
/// beyond the queue is skipped and counted.
pub const INGEST_BUDGET: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Inbox {
    batches: VecDeque<Vec<Record>>,
    queued: usize,
    /// Non-packet records of skipped batches: few, and the view needs them.
    kept: Vec<Record>,
    skipped: u64,
    status: Option<Status>,
    /// The session is done with the view.
    closing: bool,
    /// The terminal thread has ended.
    gone: bool,
}

impl Inbox {
    /// Queues a batch; never blocks: beyond `capacity` the oldest batches go
    /// (their packets and drops counted as skipped, other records kept).
    fn push(&mut self, records: &[Record], capacity: usize) {
        self.queued += records.len();
        self.batches.push_back(records.to_vec());
        while self.queued > capacity && self.batches.len() > 1 {
            let old = self.batches.pop_front().unwrap_or_default();
            self.queued -= old.len();
            for r in old {
                match r {
                    Record::Packet(_) | Record::Drop(_) => self.skipped += 1,
                    other => self.kept.push(other),
                }
            }
        }
    }

    /// Takes up to about `max` records for the view.
    fn take(&mut self, max: usize) -> Vec<Vec<Record>> {
        let mut taken = Vec::new();
        let mut n = 0;
        while n < max {
            let Some(b) = self.batches.pop_front() else {
                break;
            };
            n += b.len();
            taken.push(b);
        }
        self.queued -= n;
        taken
    }
}

struct Shared {
    inbox: Mutex<Inbox>,
    cv: Condvar,
    failed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is printed once the terminal is back: the final diagnoses and stats.
#[derive(Default)]
struct Summary {
    diagnoses: Vec<Diagnosis>,
    stats: Option<Stats>,
}

impl Summary {
    fn note(&mut self, records: &[Record]) {
        for r in records {
            match r {
                Record::Diagnosis(d) => {
                    if let Some(o) = self.diagnoses.iter_mut().find(|o| o.same_problem(d)) {
                        *o = d.clone();
                    } else if self.diagnoses.len() < 256 {
                        self.diagnoses.push(d.clone());
                    }
                }
                Record::Stats(s) => self.stats = Some(s.clone()),
                _ => {}
            }
        }
    }

    fn print(&self, out: &mut impl Write) {
        for d in &self.diagnoses {
            let _ = writeln!(
                out,
                "{}",
                crate::views::text::format(&Record::Diagnosis(d.clone()), "", None)
            );
        }
        if let Some(s) = &self.stats {
            let _ = writeln!(
                out,
                "{}",
                crate::views::text::format(&Record::Stats(s.clone()), "", None)
            );
        }
        let _ = out.flush();
    }
}

/// The TUI as the session's sink.
pub struct TuiSink {
    shared: Arc<Shared>,
    controls: mpsc::Receiver<Control>,
    quit_sent: bool,
    thread: Option<JoinHandle<()>>,
    capacity: usize,
    /// Replay waits for the view instead of skipping.
    wait_for_view: bool,
    summary: Summary,
    signals: Vec<signal_hook::SigId>,
}

impl TuiSink {
    /// The view for live tracing (tokio handles SIGINT/SIGTERM there).
    pub fn live(show_benign: bool) -> io::Result<Self> {
        Self::start(Mode::Live, show_benign)
    }

    /// The view for `calitrace replay FILE`.
    pub fn replay(file: &Path, show_benign: bool) -> io::Result<Self> {
        let file = file.display().to_string();
        Self::start(Mode::Replay { file }, show_benign)
    }

    /// `show_benign`: benign drops are shown (dimmed) from the start; `b`
    /// toggles them.
    fn start(mode: Mode, show_benign: bool) -> io::Result<Self> {
        let live = mode == Mode::Live;
        let signalled = Arc::new(AtomicBool::new(false));
        // A hung-up terminal ends the session cleanly; on replay nobody else
        // listens for SIGINT/SIGTERM, so the view does.
        let wanted: &[i32] = if live {
            &[libc::SIGHUP]
        } else {
            &[libc::SIGHUP, libc::SIGINT, libc::SIGTERM]
        };
        let mut signals = Vec::new();
        for &s in wanted {
            if let Ok(id) = signal_hook::flag::register(s, signalled.clone()) {
                signals.push(id);
            }
        }
        let term = match terminal::enter() {
            Ok(t) => t,
            Err(e) => {
                for id in signals {
                    signal_hook::low_level::unregister(id);
                }
                return Err(io::Error::other(format!(
                    "cannot start the TUI ({e}); use --output text"
                )));
            }
        };
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            cv: Condvar::new(),
            failed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let mut app = App::new(mode);
        app.show_benign = show_benign;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("calitrace-tui".into())
            .spawn(move || drive(term, app, s, tx, live, signalled));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                terminal::restore();
                return Err(e);
            }
        };
        Ok(TuiSink {
            shared,
            controls: rx,
            quit_sent: false,
            thread: Some(thread),
            capacity: if live { LIVE_QUEUE } else { REPLAY_QUEUE },
            wait_for_view: !live,
            summary: Summary::default(),
            signals,
        })
    }
}

impl Sink for TuiSink {
    fn interactive(&self) -> bool {
        true
    }

    fn records(&mut self, records: &[Record]) -> io::Result<bool> {
        self.summary.note(records);
        let mut ib = self.shared.lock();
        if self.wait_for_view {
            while ib.queued >= self.capacity && !ib.gone {
                ib = self
                    .shared
                    .cv
                    .wait_timeout(ib, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        if ib.gone {
            return Ok(false);
        }
        if records.is_empty() {
            return Ok(true);
        }
        ib.push(records, self.capacity);
        Ok(true)
    }

    fn status(&mut self, status: &Status) {
        self.shared.lock().status = Some(status.clone());
    }

    fn control(&mut self) -> Option<Control> {
        match self.controls.try_recv() {
            Ok(Control::Quit) => {
                self.quit_sent = true;
                Some(Control::Quit)
            }
            Ok(c) => Some(c),
            Err(mpsc::TryRecvError::Empty) => None,
            // The view is gone (quit, or failed): the session ends too.
            Err(mpsc::TryRecvError::Disconnected) if !self.quit_sent => {
                self.quit_sent = true;
                Some(Control::Quit)
            }
            Err(mpsc::TryRecvError::Disconnected) => None,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(io::Error::other("the TUI stopped unexpectedly"));
        }
        Ok(())
    }
}

impl Drop for TuiSink {
    fn drop(&mut self) {
        {
            let mut ib = self.shared.lock();
            ib.closing = true;
            self.shared.cv.notify_all();
        }
        // Wait for the view to give the terminal back, but never forever.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut ib = self.shared.lock();
        while !ib.gone && Instant::now() < deadline {
            ib = self
                .shared
                .cv
                .wait_timeout(ib, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let gone = ib.gone;
        drop(ib);
        if let Some(t) = self.thread.take()
            && gone
        {
            let _ = t.join();
        }
        terminal::restore();
        for id in self.signals.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        let mut err = io::stderr();
        for line in terminal::take_captured() {
            let _ = writeln!(err, "{line}");
        }
        self.summary.print(&mut io::stdout());
    }
}

/// What the terminal thread takes from the sink for one frame.
struct Taken {
    kept: Vec<Record>,
    batches: Vec<Vec<Record>>,
    status: Option<Status>,
    skipped: u64,
    closing: bool,
    /// Records still wait in the queue.
    more: bool,
}

impl Taken {
    fn from(shared: &Shared) -> Taken {
        let mut ib = shared.lock();
        let batches = ib.take(BATCH);
        shared.cv.notify_all();
        Taken {
            kept: std::mem::take(&mut ib.kept),
            batches,
            status: ib.status.take(),
            skipped: ib.skipped,
            closing: ib.closing,
            more: ib.queued > 0,
        }
    }

    /// Records, status (stale when a live source stopped sending it),
    /// skipped batches and stderr's newest line into the app.
    fn apply(self, app: &mut App, live: bool, last_status: &mut Instant) {
        app.ingest(&self.kept);
        for b in &self.batches {
            app.ingest(b);
        }
        if let Some(s) = self.status {
            app.set_status(s);
            *last_status = Instant::now();
        }
        let stale = live && last_status.elapsed() > STALE;
        if stale != app.status_stale {
            app.status_stale = stale;
            app.dirty = true;
        }
        if self.skipped != app.ui_skipped {
            app.ui_skipped = self.skipped;
            app.dirty = true;
        }
        if let Some(line) = terminal::newest_unseen() {
            app.message = Some(app::Message {
                text: line,
                error: false,
            });
            app.dirty = true;
        }
    }
}

/// Takes in what the queue holds, a batch at a time, for at most about
/// `budget` (one batch at least): whether records still wait, or `None`
/// when the session is done with the view.
fn take_in(
    app: &mut App,
    shared: &Shared,
    live: bool,
    last_status: &mut Instant,
    budget: Duration,
) -> Option<bool> {
    let began = Instant::now();
    loop {
        let taken = Taken::from(shared);
        if taken.closing {
            return None;
        }
        let more = taken.more;
        taken.apply(app, live, last_status);
        if !more || began.elapsed() >= budget {
            return Some(more);
        }
    }
}

/// The terminal thread: runs the view, then restores the terminal and tells
/// the sink it is gone, however it ended.
fn drive(
    mut term: terminal::Term,
    mut app: App,
    shared: Arc<Shared>,
    controls: mpsc::Sender<Control>,
    live: bool,
    signalled: Arc<AtomicBool>,
) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&mut term, &mut app, &shared, &controls, live, &signalled)
    }));
    terminal::restore();
    let failed = match result {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            let _ = writeln!(io::stderr(), "calitrace: the TUI failed: {e}");
            true
        }
        Err(_) => true, // the panic hook has printed it
    };
    if failed {
        shared.failed.store(true, Ordering::SeqCst);
        let _ = controls.send(Control::Quit);
    }
    let mut ib = shared.lock();
    ib.gone = true;
    shared.cv.notify_all();
}

fn run(
    term: &mut terminal::Term,
    app: &mut App,
    shared: &Shared,
    controls: &mpsc::Sender<Control>,
    live: bool,
    signalled: &AtomicBool,
) -> io::Result<()> {
    let mut last_draw: Option<Instant> = None;
    let mut last_status = Instant::now();
    let mut keys = terminal::Keys::open()?;
    let mut size = terminal::size();
    // Records still waiting: keys are looked at without waiting for them.
    let mut backlog = false;
    loop {
        if signalled.load(Ordering::SeqCst) {
            let _ = controls.send(Control::Quit);
            return Ok(());
        }
        // Keys first, waiting at most until the next frame is due.
        let wait = match last_draw {
            _ if backlog => Duration::ZERO,
            Some(t) if app.dirty => FRAME.saturating_sub(t.elapsed()),
            _ => FRAME,
        };
        for k in keys.wait(wait)? {
            app.key(k);
            if app.quit {
                break;
            }
        }
        // Resizes: the size is cheap to ask (the draw adapts to it).
        let now_size = terminal::size();
        if now_size != size {
            size = now_size;
            app.dirty = true;
        }
        for c in app.take_controls() {
            if controls.send(c).is_err() {
                return Ok(());
            }
        }
        if app.quit {
            return Ok(());
        }
        // Then records, a batch at a time, for a while.
        match take_in(app, shared, live, &mut last_status, INGEST_BUDGET) {
            Some(more) => backlog = more,
            None => return Ok(()),
        }
        if live {
            app.tick(crate::time::monotonic_ns());
        }
        if app.dirty && last_draw.is_none_or(|t| t.elapsed() >= FRAME) {
            term.draw(|f| render::render(f, app))?;
            app.dirty = false;
            last_draw = Some(Instant::now());
        }
    }
}
