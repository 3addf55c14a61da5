//! Recording the event stream (with the facts needed to name it) to a file,
//! and reading it back for replay.

pub mod cluster;
pub mod format;
pub mod pcap;
pub mod read_ahead;
pub mod reader;
pub mod stream;
pub mod writer;

#[cfg(test)]
mod tests;
