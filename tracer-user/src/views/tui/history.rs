//! Drops per second of one drop point, from which both its sparkline and
//! the "per second" line of its details are drawn.

use std::collections::VecDeque;

use crate::time::SEC;

/// Seconds of drop-rate history kept per drop point.
pub const HISTORY_SECS: u64 = 120;

/// Drops per second over the last [`HISTORY_SECS`] seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// (second, drops in it), oldest first.
    secs: VecDeque<(u64, u64)>,
}

impl History {
    pub fn add(&mut self, ts_ns: u64) {
        let s = ts_ns / SEC;
        match self.secs.iter_mut().rev().find(|(t, _)| *t <= s) {
            Some((t, n)) if *t == s => *n += 1,
            _ => {
                let at = self.secs.partition_point(|(t, _)| *t < s);
                self.secs.insert(at, (s, 1));
            }
        }
        let newest = self.secs.back().map(|(t, _)| *t).unwrap_or(s);
        while self
            .secs
            .front()
            .is_some_and(|(t, _)| newest.saturating_sub(*t) >= HISTORY_SECS)
        {
            self.secs.pop_front();
        }
    }

    /// Counts for the `n` seconds ending with the one containing `now_ns`.
    pub fn series(&self, now_ns: u64, n: usize) -> Vec<u64> {
        let now = now_ns / SEC;
        (0..n as u64)
            .rev()
            .map(|back| {
                let s = now.saturating_sub(back);
                if back > now {
                    return 0;
                }
                self.secs
                    .iter()
                    .find(|(t, _)| *t == s)
                    .map(|(_, c)| *c)
                    .unwrap_or(0)
            })
            .collect()
    }
}
