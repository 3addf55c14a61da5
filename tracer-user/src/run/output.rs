//! Which view a session's records go to, chosen in one place for every
//! command: the view asked for (or the default for where stdout goes),
//! checked against the session, and the sink that shows it.

use std::path::Path;

use anyhow::Result;

use super::{is_terminal, usage};
use crate::cli::Output;
use crate::views::background::Background;
use crate::views::{HideBenign, LineSink, Sink, View, json::JsonView, text::TextView};

/// What kind of session the records come from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// Live on this node.
    Live,
    /// Live from the agents of several nodes.
    Cluster,
    /// One node's recording; `paced`: at the recorded pace (`--speed`).
    Replay { file: &'a Path, paced: bool },
    /// Several nodes' recordings (or a cluster recording) in one view.
    MergedReplay { file: &'a Path },
}

/// The view asked for, or the default for where stdout goes.
pub fn choose_output(asked: Option<Output>) -> Output {
    asked.unwrap_or(if is_terminal() {
        Output::Tui
    } else {
        Output::Text
    })
}

/// The view for a session of `from`: pcapng only from one node's recording,
/// and never to a terminal.
pub fn choose(asked: Option<Output>, from: Source<'_>) -> Result<Output> {
    match (choose_output(asked), from) {
        (Output::Pcap, Source::Live | Source::Cluster) => {
            Err(usage("--output pcap is for `calitrace replay FILE`"))
        }
        (Output::Pcap, Source::MergedReplay { .. }) => Err(usage(
            "--output pcap replays one node's recording, not a cluster view",
        )),
        (Output::Pcap, Source::Replay { .. }) if is_terminal() => Err(usage(
            "pcapng is binary: redirect stdout to a file (calitrace replay FILE -o pcap > out.pcapng)",
        )),
        (o, _) => Ok(o),
    }
}

/// Whether the view shows the session's start record (text writes its own
/// start on stderr).
pub fn shows_start(output: Output) -> bool {
    matches!(output, Output::Json | Output::Tui)
}

/// Where the records of a session go: the TUI, or lines on stdout (an
/// unpaced replay writes them in batches on a thread of its own); benign
/// drops only with `all_drops`.
pub fn open_sink(output: Output, from: Source<'_>, all_drops: bool) -> Result<Box<dyn Sink>> {
    use crate::views::tui::TuiSink;
    Ok(match (output, from) {
        (Output::Tui, Source::Live | Source::Cluster) => Box::new(TuiSink::live(all_drops)?),
        (Output::Tui, Source::Replay { file, .. } | Source::MergedReplay { file }) => {
            Box::new(TuiSink::replay(file, all_drops)?)
        }
        (_, Source::Replay { paced: false, .. }) => Box::new(Background::spawn(move || {
            Box::new(LineSink(line_view(output, all_drops)))
        })),
        _ => Box::new(LineSink(line_view(output, all_drops))),
    })
}

/// A line view writing to stdout; benign drops only with `all_drops`.
pub fn line_view(output: Output, all_drops: bool) -> Box<dyn View> {
    let stdout = crate::views::stdout::buffered_stdout();
    let view: Box<dyn View> = match output {
        Output::Json => Box::new(JsonView::new(stdout)),
        _ => Box::new(TextView::new(stdout)),
    };
    if all_drops {
        view
    } else {
        Box::new(HideBenign(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_is_for_one_nodes_replay_only() {
        let file = Path::new("a.rec");
        for from in [Source::Live, Source::Cluster, Source::MergedReplay { file }] {
            let e = choose(Some(Output::Pcap), from).unwrap_err();
            assert!(e.to_string().contains("pcap"), "{e}");
            assert_eq!(super::super::exit_code(&e), 2, "a usage error");
        }
        for o in [Output::Json, Output::Text, Output::Tui] {
            assert_eq!(choose(Some(o), Source::Live).unwrap(), o);
        }
    }

    #[test]
    fn text_writes_its_own_start() {
        assert!(shows_start(Output::Json) && shows_start(Output::Tui));
        assert!(!shows_start(Output::Text) && !shows_start(Output::Pcap));
    }
}
