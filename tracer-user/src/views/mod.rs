//! Views of the record stream: JSON lines, text lines, and the TUI.

pub mod background;
pub mod json;
pub mod json_packet;
pub mod sink;
pub mod stdout;
pub mod text;
pub mod tui;

use crate::model::Record;

pub use sink::{Control, Discard, Interfaces, LineSink, Sink, Status};

/// A sink for records. Line views write as records arrive.
pub trait View {
    fn record(&mut self, r: &Record) -> std::io::Result<()>;
    fn flush(&mut self) -> std::io::Result<()>;
}

/// A line view without the benign drops (those `--all-drops` shows).
pub struct HideBenign(pub Box<dyn View>);

impl View for HideBenign {
    fn record(&mut self, r: &Record) -> std::io::Result<()> {
        match r {
            Record::Drop(d) if d.benign.is_some() => Ok(()),
            _ => self.0.record(r),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
