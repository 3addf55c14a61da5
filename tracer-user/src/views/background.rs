//! A line view on a thread of its own: serialising and writing records
//! overlaps with the processing that makes them (replay).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::Sink;
use crate::model::Record;

/// Records handed over together.
const BATCH: usize = 1024;
/// Batches waiting for the writer at most.
const AHEAD: usize = 8;

enum Msg {
    Records(Vec<Record>),
    /// Flush, and say how it went.
    Flush(SyncSender<std::io::Result<()>>),
}

pub struct Background {
    tx: Option<SyncSender<Msg>>,
    pending: Vec<Record>,
    /// Set by the writer: the view is gone (stdout closed), or failed.
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    gone: bool,
    error: Option<std::io::Error>,
}

impl Background {
    /// The sink `make` builds, run on a new thread.
    pub fn spawn(make: impl FnOnce() -> Box<dyn Sink> + Send + 'static) -> Background {
        let (tx, rx) = sync_channel(AHEAD);
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let thread = std::thread::spawn(move || write(make(), &rx, &s));
        Background {
            tx: Some(tx),
            pending: Vec::with_capacity(BATCH),
            state,
            thread: Some(thread),
        }
    }

    fn send_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        if let Some(tx) = &self.tx
            && tx.send(Msg::Records(batch)).is_err()
        {
            self.state.lock().expect("not poisoned").gone = true;
        }
    }

    /// Whether the view still takes records; its error, once.
    fn still_shown(&self) -> std::io::Result<bool> {
        let mut s = self.state.lock().expect("not poisoned");
        match s.error.take() {
            Some(e) => Err(e),
            None => Ok(!s.gone),
        }
    }
}

fn write(mut sink: Box<dyn Sink>, rx: &Receiver<Msg>, state: &Mutex<State>) {
    for m in rx {
        match m {
            Msg::Records(v) => {
                if state.lock().expect("not poisoned").gone {
                    continue;
                }
                let shown = sink.take_records(v);
                let mut s = state.lock().expect("not poisoned");
                match shown {
                    Ok(true) => {}
                    Ok(false) => s.gone = true,
                    Err(e) => {
                        s.gone = true;
                        s.error = Some(e);
                    }
                }
            }
            Msg::Flush(done) => {
                done.send(sink.flush()).ok();
            }
        }
    }
}

impl Sink for Background {
    fn records(&mut self, records: &[Record]) -> std::io::Result<bool> {
        self.take_records(records.to_vec())
    }

    fn take_records(&mut self, mut records: Vec<Record>) -> std::io::Result<bool> {
        self.pending.append(&mut records);
        if self.pending.len() >= BATCH {
            self.send_pending();
        }
        self.still_shown()
    }

    /// Everything handed over is written and flushed when this returns.
    fn flush(&mut self) -> std::io::Result<()> {
        self.send_pending();
        let (done, wait) = sync_channel(1);
        if let Some(tx) = &self.tx
            && tx.send(Msg::Flush(done)).is_ok()
        {
            wait.recv().unwrap_or(Ok(()))?;
        }
        self.still_shown().map(|_| ())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Stats, fixtures};
    use crate::views::View;
    use crate::views::json::JsonView;

    /// A writer whose bytes a test reads afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_same_lines_in_the_same_order_as_written_in_place() {
        let records: Vec<Record> = (0..2500)
            .map(|i| match i % 3 {
                0 => Record::Drop(fixtures::ping_drop(
                    crate::model::Stage::Netfilter,
                    "NETFILTER_DROP",
                    None,
                )),
                _ => Record::Stats(Stats {
                    lost: i,
                    ..Default::default()
                }),
            })
            .collect();
        let mut direct = Vec::new();
        let mut view = JsonView::new(&mut direct);
        for r in &records {
            view.record(r).unwrap();
        }
        let out = Shared::default();
        let o = out.clone();
        let mut bg =
            Background::spawn(move || Box::new(crate::views::LineSink(Box::new(JsonView::new(o)))));
        for chunk in records.chunks(7) {
            assert!(bg.take_records(chunk.to_vec()).unwrap());
        }
        bg.flush().unwrap();
        assert_eq!(*out.0.lock().unwrap(), direct);
    }
}
