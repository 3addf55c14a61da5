//! Which counter moved for a drop: readings of a per-CPU counter compared
//! with the last, the increases kept until a drop claims them (a burst of
//! drops is read once and claimed one by one), on the drop's CPU first.

use std::collections::HashMap;
use std::hash::Hash;

/// Per key: the last reading (`[cpu][counter]`) and what moved since and
/// is not yet claimed.
#[derive(Default)]
pub struct Pending<K> {
    keys: HashMap<K, State>,
}

#[derive(Default)]
struct State {
    last: Vec<Vec<u64>>,
    unclaimed: Vec<Vec<u64>>,
}

impl<K: Hash + Eq> Pending<K> {
    /// The reading at start: what has already been counted is no drop of
    /// this session.
    pub fn baseline(&mut self, key: K, reading: Vec<Vec<u64>>) {
        let unclaimed = zeroed(&reading);
        self.keys.insert(
            key,
            State {
                last: reading,
                unclaimed,
            },
        );
    }

    /// A new reading; a key first seen counts from zero (its entry was made
    /// after the start).
    pub fn observe(&mut self, key: K, reading: Vec<Vec<u64>>) {
        let s = self.keys.entry(key).or_default();
        if s.unclaimed.len() != reading.len() {
            s.unclaimed = zeroed(&reading);
        }
        for (cpu, values) in reading.iter().enumerate() {
            for (i, v) in values.iter().enumerate() {
                let before = s.last.get(cpu).and_then(|l| l.get(i)).copied().unwrap_or(0);
                // A counter that went back was flushed (`counters flush`).
                let moved = if *v >= before { v - before } else { *v };
                if let Some(u) = s.unclaimed[cpu].get_mut(i) {
                    *u += moved;
                }
            }
        }
        s.last = reading;
    }

    /// Takes one unclaimed count of the first of `counters` that has one,
    /// on `cpu` first, then on any CPU.
    pub fn claim(&mut self, key: &K, cpu: usize, counters: &[usize]) -> Option<usize> {
        let s = self.keys.get_mut(key)?;
        let cpus = std::iter::once(cpu).chain((0..s.unclaimed.len()).filter(|c| *c != cpu));
        for c in cpus {
            let Some(row) = s.unclaimed.get_mut(c) else {
                continue;
            };
            if let Some(&i) = counters
                .iter()
                .find(|&&i| row.get(i).is_some_and(|u| *u > 0))
            {
                row[i] -= 1;
                return Some(i);
            }
        }
        None
    }
}

fn zeroed(reading: &[Vec<u64>]) -> Vec<Vec<u64>> {
    reading.iter().map(|r| vec![0; r.len()]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_claims_what_moved_on_its_cpu() {
        let mut p = Pending::default();
        p.baseline(1, vec![vec![10, 0, 5], vec![3, 0, 0]]);
        p.observe(1, vec![vec![12, 0, 5], vec![3, 0, 2]]);
        assert_eq!(p.claim(&1, 1, &[1, 2]), Some(2), "cpu 1's counter 2 moved");
        assert_eq!(p.claim(&1, 1, &[1, 2]), Some(2));
        assert_eq!(p.claim(&1, 1, &[1, 2]), None, "claimed once each");
    }

    #[test]
    fn another_cpus_count_serves_when_the_own_has_none() {
        let mut p = Pending::default();
        p.baseline("eth0", vec![vec![0, 0], vec![0, 0]]);
        p.observe("eth0", vec![vec![0, 1], vec![0, 0]]);
        assert_eq!(p.claim(&"eth0", 1, &[1]), Some(1));
    }

    #[test]
    fn counts_from_before_the_start_are_not_claimed() {
        let mut p = Pending::default();
        p.baseline(7, vec![vec![0, 40]]);
        p.observe(7, vec![vec![0, 40]]);
        assert_eq!(p.claim(&7, 0, &[1]), None);
        // A key made after the start counts from zero.
        p.observe(8, vec![vec![0, 2]]);
        assert_eq!(p.claim(&8, 0, &[1]), Some(1));
    }
}
