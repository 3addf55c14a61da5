//! An agent's recording stream as a cluster client reads it: the one entry
//! point for an agent's bytes, whatever carries them (a child's stdout, an
//! exec stream), plain (version 4 and before) or compressed (version 5).

use std::io::{BufReader, Read};

use super::format::Header;
use super::reader::{self, Item};
use crate::events::Input;

/// Items handed on together at most: one hand-over per item would cost more
/// than the merge's work on many of them; a batch stays under 64 KiB (a
/// larger free makes glibc's malloc consolidate its free lists).
pub const BATCH: usize = 256;
/// Batches a client lets wait for its merge, all agents together: enough to
/// ride out a moment's delay, few enough that waiting streams stay small.
pub const QUEUE: usize = 64;

/// What an agent's stream says, in order: its header, its items (in
/// batches), its end.
#[derive(Debug)]
pub enum Streamed {
    Start(Box<Header>),
    /// The next items, in order. A batch goes out when full, and at every
    /// tick, fact and END, so that a quiet agent's last events (the agent
    /// records a tick every 100 ms) do not wait for more.
    Items(Vec<Item>),
    /// The stream ended: why, where it was not a clean end.
    Ended(Option<String>),
}

/// Reads one agent's stream to its end (or until `on` returns false),
/// decompressing it where it is compressed. `Ended` always comes last,
/// unless `on` stopped the reading.
pub fn read_stream(r: impl Read, mut on: impl FnMut(Streamed) -> bool) {
    let (header, mut items) = match reader::from_reader(BufReader::with_capacity(16 * 1024, r)) {
        Ok(h) => h,
        Err(e) => {
            on(Streamed::Ended(Some(format!(
                "no recording stream: {}",
                e.0
            ))));
            return;
        }
    };
    if !on(Streamed::Start(Box::new(header))) {
        return;
    }
    let mut batch = Vec::with_capacity(BATCH);
    let why = loop {
        match items.next_item() {
            Ok(Some(item)) => {
                let now = !matches!(
                    item,
                    Item::Input(Input::Event(_) | Input::Verdict(_) | Input::Encap(_))
                );
                batch.push(item);
                if (now || batch.len() == BATCH)
                    && !on(Streamed::Items(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(BATCH),
                    )))
                {
                    return;
                }
            }
            Ok(None) => break None,
            Err(p) => break Some(p.to_string()),
        }
    };
    if !batch.is_empty() && !on(Streamed::Items(batch)) {
        return;
    }
    on(Streamed::Ended(why));
}
