//! One timeline for several nodes: how far each node's monotonic clock is
//! from the first node's, first from the recordings' wall-clock anchors, then
//! from packets seen leaving one node and arriving at the other.

/// Offsets of each node's clock from node 0's, in nanoseconds
/// (`node's clock - node 0's clock` at the same moment).
#[derive(Debug, Clone, Default)]
pub struct Clocks {
    anchored: Vec<Option<i64>>,
    /// Smallest (arrival - departure) in raw clocks, per (from, to) node pair.
    min_transit: super::FastMap<(usize, usize), i64>,
    /// Each node's offset as last worked out: every record asks for it.
    offsets: Vec<i64>,
}

impl Clocks {
    pub fn new(nodes: usize) -> Self {
        Clocks {
            anchored: vec![None; nodes],
            min_transit: Default::default(),
            offsets: vec![0; nodes],
        }
    }

    /// A node's recording started at `monotonic` on its clock, which was
    /// `realtime` on its wall clock. Wall clocks are taken as synchronised
    /// (NTP): good to milliseconds, until packets say better.
    pub fn anchor(&mut self, node: usize, monotonic: u64, realtime: u64) {
        self.anchored[node] = Some(monotonic as i64 - realtime as i64);
        // Node 0's anchor moves every node's offset.
        for n in 0..self.offsets.len() {
            self.offsets[n] = self.work_out(n);
        }
    }

    /// A packet left `from` at `sent` and reached `to` at `arrived`, each on
    /// its own node's clock.
    pub fn transit(&mut self, from: usize, to: usize, sent: u64, arrived: u64) {
        let d = arrived as i64 - sent as i64;
        let m = self.min_transit.entry((from, to)).or_insert(d);
        if d > *m {
            return;
        }
        *m = d;
        for n in [from, to] {
            if n < self.offsets.len() {
                self.offsets[n] = self.work_out(n);
            }
        }
    }

    /// Node `n`'s clock minus node 0's.
    pub fn offset(&self, n: usize) -> i64 {
        self.offsets.get(n).copied().unwrap_or(0)
    }

    fn work_out(&self, n: usize) -> i64 {
        if n == 0 {
            return 0;
        }
        // Both ways between node 0 and n: the path's delay cancels out.
        if let (Some(there), Some(back)) =
            (self.min_transit.get(&(0, n)), self.min_transit.get(&(n, 0)))
        {
            return (there - back) / 2;
        }
        match (self.anchored.first().copied().flatten(), self.anchored[n]) {
            (Some(a0), Some(an)) => an - a0,
            _ => 0,
        }
    }

    /// Node `n`'s time `ts` on node 0's clock.
    pub fn to_common(&self, n: usize, ts: u64) -> u64 {
        (ts as i64 - self.offset(n)).max(0) as u64
    }

    /// A time on node 0's clock as node `n`'s.
    pub fn to_node(&self, n: usize, ts: u64) -> u64 {
        (ts as i64 + self.offset(n)).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn anchors_give_the_first_estimate() {
        let mut c = Clocks::new(2);
        // Node 1 booted 5 s later: its monotonic clock reads 5 s less.
        c.anchor(0, 100_000 * MS, 1_000_000 * MS);
        c.anchor(1, 95_000 * MS, 1_000_000 * MS + 2 * MS);
        assert_eq!(c.offset(1), -(5_002 * MS as i64));
        assert_eq!(c.to_common(1, 95_000 * MS), 100_002 * MS);
        assert_eq!(c.to_node(1, c.to_common(1, 7 * MS)), 7 * MS);
    }

    #[test]
    fn packets_both_ways_cancel_the_delay() {
        let mut c = Clocks::new(2);
        c.anchor(0, 0, 1_000 * MS);
        c.anchor(1, 0, 1_000 * MS);
        // True offset +3 ms, one-way delay 1 ms.
        c.transit(0, 1, 10 * MS, 14 * MS);
        c.transit(0, 1, 20 * MS, 26 * MS); // queued longer: not the minimum
        assert_eq!(c.offset(1), 0, "one way alone does not tell");
        c.transit(1, 0, 30 * MS, 28 * MS);
        assert_eq!(c.offset(1), 3 * MS as i64);
    }
}
