//! The help overlay: every key, then what the symbols mean.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use super::{Theme, popup};
/// `replay`: the keys of a replay (step) rather than of live tracing (record).
pub(super) fn draw(frame: &mut Frame, area: Rect, replay: bool, t: &Theme) {
    let mut lines = keys(replay, t);
    lines.push(Line::raw(""));
    lines.extend(legend(t));
    popup::show(frame, area, "calitrace keys", lines, 0, t);
}

fn keys(replay: bool, t: &Theme) -> Vec<Line<'static>> {
    let k = |key: &str, what: &str| {
        Line::from(vec![
            Span::styled(format!("  {key:<16}"), t.key()),
            Span::raw(what.to_string()),
        ])
    };
    let mut lines = vec![
        k(
            "↑ ↓  j k",
            "move the selection (PgUp PgDn, g G: page, first, last)",
        ),
        k(
            "Tab  Shift-Tab",
            "next / previous panel: flows, drop points, diagnosis",
        ),
        k(
            "Enter",
            "details of the selected flow, drop point or diagnosis",
        ),
        k(
            "/",
            "edit the filter (command line syntax); Enter applies, Esc cancels",
        ),
        k(
            "space",
            "pause / resume the view (tracing and recording go on)",
        ),
    ];
    if replay {
        lines.push(k("n", "while paused: replay one more event"));
    } else {
        lines.push(k(
            "r",
            "start / stop recording to calitrace-<node>-<time>.calitrace",
        ));
    }
    lines.extend([
        k(
            "s",
            "sort flows: recent drops, drops, packets, last seen, address",
        ),
        k(
            "b",
            "show / hide benign drops (link-local, closing sockets), dimmed",
        ),
        k(
            "m",
            "show / hide the nodes' link-local control flows (MLD, neighbour discovery)",
        ),
        k("c", "clear counters (flows, drop points, diagnoses)"),
        k("p", "probes: attached, unavailable and why; interfaces"),
        k("?", "this help"),
        k("q  Esc  Ctrl-C", "quit and detach everything"),
    ]);
    lines
}

fn legend(t: &Theme) -> [Line<'static>; 3] {
    [
        Line::from(vec![
            Span::styled("  ✗", t.bad()),
            Span::raw(" dropped   "),
            Span::styled("✓", t.ok()),
            Span::raw(" passed   "),
            Span::raw("- drop point quiet for 10 s   "),
            Span::styled("·", t.dim()),
            Span::raw(" benign   "),
            Span::raw("·▁▂▃▅▇█ drops per second"),
        ]),
        Line::from(vec![
            Span::styled("  ⚠ LOST", t.alarm()),
            Span::raw(" events the ring buffer had no room for   "),
            Span::styled("● REC", t.alarm()),
            Span::raw(" recording   "),
            Span::styled("⏸ PAUSED", t.notice()),
        ]),
        Line::raw(
            "  Journey: points seen in order, dim = passed by implication, ✗ = where it died.",
        ),
    ]
}
