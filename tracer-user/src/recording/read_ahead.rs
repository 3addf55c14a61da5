//! Reading a recording on a thread of its own (frames, checksums, decoding),
//! handing items on in batches, so that replay processes one batch while
//! the next is read.

use std::io::Read;
use std::sync::mpsc::{Receiver, sync_channel};

use super::reader::{Item, Problem, Reader};

/// Items per batch: enough that handing a batch over costs little per item.
const BATCH: usize = 1024;
/// Batches read ahead at most.
const AHEAD: usize = 8;

enum Batch {
    Items(Vec<Item>),
    /// The reading ended: cleanly, or with this problem.
    End(Option<Problem>),
}

/// A recording's items, read on another thread; the same answers, in the
/// same order, as [`Reader::next_item`].
pub struct ReadAhead {
    rx: Receiver<Batch>,
    items: std::vec::IntoIter<Item>,
    end: Option<Option<Problem>>,
}

impl ReadAhead {
    pub fn spawn<R: Read + Send + 'static>(mut reader: Reader<R>) -> ReadAhead {
        let (tx, rx) = sync_channel(AHEAD);
        std::thread::spawn(move || {
            loop {
                let mut batch = Vec::with_capacity(BATCH);
                let end = loop {
                    match reader.next_item() {
                        Ok(Some(item)) => {
                            batch.push(item);
                            if batch.len() == BATCH {
                                break None;
                            }
                        }
                        Ok(None) => break Some(None),
                        Err(p) => break Some(Some(p)),
                    }
                };
                // A replay that stopped (quit) has dropped the receiver.
                if !batch.is_empty() && tx.send(Batch::Items(batch)).is_err() {
                    return;
                }
                if let Some(end) = end {
                    tx.send(Batch::End(end)).ok();
                    return;
                }
            }
        });
        ReadAhead {
            rx,
            items: Vec::new().into_iter(),
            end: None,
        }
    }

    /// The next item; `Ok(None)` at the end; `Err` when the rest cannot be read.
    pub fn next_item(&mut self) -> Result<Option<Item>, Problem> {
        loop {
            if let Some(item) = self.items.next() {
                return Ok(Some(item));
            }
            if let Some(end) = &mut self.end {
                return end.take().map_or(Ok(None), Err);
            }
            match self.rx.recv() {
                Ok(Batch::Items(v)) => self.items = v.into_iter(),
                Ok(Batch::End(e)) => self.end = Some(e),
                Err(_) => {
                    self.end = Some(Some(Problem::Io("the reading thread ended".into())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::reader::from_reader;

    #[test]
    fn the_same_items_and_the_same_problem_as_reading_in_place() {
        let bytes = crate::recording::tests::sample_bytes(3000);
        for cut in [bytes.len(), bytes.len() - 50] {
            let mut direct = from_reader(std::io::Cursor::new(bytes[..cut].to_vec()))
                .unwrap()
                .1;
            let ahead = from_reader(std::io::Cursor::new(bytes[..cut].to_vec())).unwrap();
            let mut ahead = ReadAhead::spawn(ahead.1);
            loop {
                let (a, b) = (direct.next_item(), ahead.next_item());
                assert_eq!(a, b);
                if !matches!(a, Ok(Some(_))) {
                    break;
                }
            }
            assert_eq!(ahead.next_item(), Ok(None), "the problem is told once");
        }
    }
}
