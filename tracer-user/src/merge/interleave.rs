//! Several recorded streams read as one: facts as they come, inputs in the
//! order of their times on the common clock.

use std::io::Read;

use crate::events::Input;
use crate::recording::reader::{Item, Problem, Reader};

pub struct Interleave<R: Read> {
    readers: Vec<Reader<R>>,
    next: Vec<Option<Item>>,
    /// Why a stream ended early, per node.
    pub problems: Vec<Option<Problem>>,
}

fn input_ts(i: &Input) -> u64 {
    match i {
        Input::Event(e) => e.ts_ns,
        Input::Verdict(v) => v.ev.ts_ns,
        Input::Encap(e) => e.ev.ts_ns,
        Input::Tick(t) => *t,
    }
}

impl<R: Read> Interleave<R> {
    pub fn new(readers: Vec<Reader<R>>) -> Self {
        let n = readers.len();
        let mut s = Interleave {
            readers,
            next: vec![None; n],
            problems: vec![None; n],
        };
        for i in 0..n {
            s.advance(i);
        }
        s
    }

    fn advance(&mut self, i: usize) {
        self.next[i] = match self.readers[i].next_item() {
            Ok(item) => item,
            Err(p) => {
                self.problems[i] = Some(p);
                None
            }
        };
    }

    /// The next item and its node: a fact or end of any stream first, else
    /// the input earliest on the common clock (`common(node, ts)`).
    pub fn next(&mut self, common: impl Fn(usize, u64) -> u64) -> Option<(usize, Item)> {
        let pick = self
            .next
            .iter()
            .position(|n| matches!(n, Some(Item::Fact(_) | Item::End(_))))
            .or_else(|| {
                self.next
                    .iter()
                    .enumerate()
                    .filter_map(|(i, n)| match n {
                        Some(Item::Input(input)) => Some((common(i, input_ts(input)), i)),
                        _ => None,
                    })
                    .min()
                    .map(|(_, i)| i)
            })?;
        let item = self.next[pick].take()?;
        self.advance(pick);
        Some((pick, item))
    }
}
