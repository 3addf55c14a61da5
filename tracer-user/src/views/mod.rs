//! Views of the record stream: JSON lines, text lines, and the TUI.

pub mod json;
pub mod sink;
pub mod text;
pub mod tui;

use crate::model::Record;

pub use sink::{Control, Discard, Interfaces, LineSink, Sink, Status};

/// A sink for records. Line views write as records arrive.
pub trait View {
    fn record(&mut self, r: &Record) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}
