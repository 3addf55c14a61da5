//! Keeps the readers of the nodes' streams together in stream time. Each
//! node's stream is read on a thread of its own; when a client cannot keep
//! up (one CPU, many agents, or recorded streams read as fast as they come),
//! the readers that get the CPU would run ahead of the others, and the merge
//! would judge a drop before the sender's points of its packet arrived. A
//! reader that is more than [`WINDOW_NS`] ahead of the slowest node waits
//! for it, unless that node has not moved for [`STALLED`] (an agent that
//! hangs holds nobody back for long).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::recording::format::Header;

/// How far ahead of the slowest node a reader may go, in stream time, at
/// most: well within the time the merge holds a drop for the other nodes
/// (1 s). Less where the merge keeps less of the packets' points: a quarter
/// of the span it keeps ([`Gate::keep_within`]).
pub const WINDOW_NS: u64 = 500_000_000;
/// The window never gets narrower than this (a batch's time at a fast node).
pub const MIN_WINDOW_NS: u64 = 5_000_000;
/// The window until the merge can tell how much it keeps.
pub const FIRST_WINDOW_NS: u64 = 20_000_000;
/// A node whose reader has not moved for this long holds nobody back (also
/// one that has not started yet).
pub const STALLED: Duration = Duration::from_secs(2);

#[derive(Clone, Copy)]
struct Reader {
    /// Where its stream is, on the wall clock (ns); `None` before its start.
    at: Option<u64>,
    ended: bool,
    moved: Instant,
}

pub struct Gate {
    readers: Mutex<Vec<Reader>>,
    moved: Condvar,
    window_ns: AtomicU64,
}

impl Gate {
    pub fn new(nodes: usize) -> Arc<Gate> {
        let r = Reader {
            at: None,
            ended: false,
            moved: Instant::now(),
        };
        Arc::new(Gate {
            readers: Mutex::new(vec![r; nodes]),
            moved: Condvar::new(),
            window_ns: AtomicU64::new(FIRST_WINDOW_NS),
        })
    }

    /// The merge keeps the packets' points of the last `span_ns` (`None`:
    /// it cannot tell yet): readers stay within a quarter of it of each
    /// other. A node that far behind reaches a packet's time once the
    /// others went up to a window further: the packets between are at
    /// most half of what the merge keeps.
    pub fn keep_within(&self, span_ns: Option<u64>) {
        if let Some(span) = span_ns {
            let w = (span / 4).clamp(MIN_WINDOW_NS, WINDOW_NS);
            self.window_ns.store(w, Ordering::Relaxed);
        }
    }

    /// Node `i`'s place at the gate.
    pub fn seat(self: &Arc<Self>, i: usize) -> Seat {
        Seat {
            gate: Arc::clone(self),
            i,
            anchor: None,
        }
    }

    /// The slowest node other than `i` that still holds others back.
    fn slowest(readers: &[Reader], i: usize) -> Option<u64> {
        readers
            .iter()
            .enumerate()
            .filter(|(j, r)| *j != i && !r.ended && r.moved.elapsed() < STALLED)
            .map(|(_, r)| r.at.unwrap_or(0))
            .min()
    }

    fn update(&self, i: usize, f: impl FnOnce(&mut Reader)) {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = readers.get_mut(i) {
            f(r);
        }
        self.moved.notify_all();
    }
}

/// One node's reader at the gate.
pub struct Seat {
    gate: Arc<Gate>,
    i: usize,
    /// The stream's monotonic and wall clocks at its start.
    anchor: Option<(u64, u64)>,
}

impl Seat {
    /// The node's stream started: its clock's anchor.
    pub fn start(&mut self, h: &Header) {
        self.anchor = Some((h.start_monotonic_ns, h.start_realtime_ns));
    }

    /// The node's stream reached `now` (its monotonic clock): waits while
    /// that is more than the window ahead of the slowest node.
    pub fn pass(&self, now: u64) {
        let Some((mono, real)) = self.anchor else {
            return;
        };
        let wall = (real + now).saturating_sub(mono);
        let mut readers = self.gate.readers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = readers.get_mut(self.i) {
            r.at = Some(wall);
            r.moved = Instant::now();
        }
        self.gate.moved.notify_all();
        while let Some(slowest) = Gate::slowest(&readers, self.i)
            && wall > slowest + self.gate.window_ns.load(Ordering::Relaxed)
        {
            // Woken when a node moves; the timeout lets a stalled one drop out.
            readers = match self
                .gate
                .moved
                .wait_timeout(readers, Duration::from_millis(50))
            {
                Ok((r, _)) => r,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl Seat {
    /// The stream ended: it holds nobody back.
    pub fn leave(&self) {
        self.gate.update(self.i, |r| r.ended = true);
    }
}

impl Drop for Seat {
    /// Its reader went, however: it holds nobody back.
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            start_monotonic_ns: 1_000,
            start_realtime_ns: 1_000,
            ..super::super::tests::header(0, false, &[])
        }
    }

    #[test]
    fn a_reader_ahead_waits_for_the_slowest_and_goes_on_when_it_ends() {
        let gate = Gate::new(2);
        gate.keep_within(Some(4 * WINDOW_NS));
        let (mut fast, mut slow) = (gate.seat(0), gate.seat(1));
        fast.start(&header());
        slow.start(&header());
        slow.pass(1_000);
        fast.pass(WINDOW_NS);
        // From before the spawn: the sleeps below begin no earlier.
        let began = Instant::now();
        let t = std::thread::spawn(move || {
            fast.pass(3 * WINDOW_NS);
            began.elapsed()
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!t.is_finished(), "more than the window ahead: it waits");
        slow.pass(3 * WINDOW_NS / 2);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!t.is_finished(), "still ahead of the slowest");
        drop(slow);
        let waited = t.join().unwrap();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(waited < STALLED, "the slowest ended: {waited:?}");
    }

    #[test]
    fn the_window_is_half_what_the_merge_keeps_within_bounds() {
        let gate = Gate::new(1);
        let w = || gate.window_ns.load(Ordering::Relaxed);
        assert_eq!(w(), FIRST_WINDOW_NS);
        gate.keep_within(None);
        assert_eq!(w(), FIRST_WINDOW_NS, "kept until the merge can tell");
        gate.keep_within(Some(100_000_000));
        assert_eq!(w(), 25_000_000);
        gate.keep_within(Some(1_000));
        assert_eq!(w(), MIN_WINDOW_NS);
        gate.keep_within(Some(60 * WINDOW_NS));
        assert_eq!(w(), WINDOW_NS);
    }

    #[test]
    fn a_stalled_node_holds_nobody_back_for_long() {
        let gate = Gate::new(2);
        let (mut fast, _never_started) = (gate.seat(0), gate.seat(1));
        fast.start(&header());
        let began = Instant::now();
        fast.pass(10 * WINDOW_NS);
        let waited = began.elapsed();
        assert!(
            waited >= STALLED - Duration::from_millis(100)
                && waited < STALLED + Duration::from_secs(1),
            "{waited:?}"
        );
        // From then on, it goes at once.
        let began = Instant::now();
        fast.pass(20 * WINDOW_NS);
        assert!(began.elapsed() < Duration::from_millis(100));
    }
}
