//! Drawing: a pure function of the [`App`] into a ratatui frame. Every state
//! shown in colour also has a symbol or a word, so `NO_COLOR` loses nothing.
//!
//! One file per panel (`header`, `flows`, `drop_points`, `journey`,
//! `diagnoses`, `footer` with its `filter_prompt`) and per overlay (`help`,
//! `probes`, `details` with `flow_details`, all in a `popup`); here the layout
//! and what they share.

mod details;
mod diagnoses;
mod drop_points;
mod filter_prompt;
mod flow_details;
mod flows;
mod footer;
mod header;
mod help;
mod journey;
mod popup;
mod probes;
mod theme;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders, HighlightSpacing, Paragraph, Row, Table, Wrap};

use super::app::{App, Overlay};
use super::model::{FlowStats, StepKind};

#[cfg(test)]
pub(in crate::views::tui) use details::per_second;
pub use header::backends;
pub use theme::Theme;

pub fn render(frame: &mut Frame, app: &App) {
    let t = Theme::new(app.color);
    let area = frame.area();
    if area.width < 30 || area.height < 8 {
        frame.render_widget(
            Paragraph::new("calitrace: terminal too small (q quits)").wrap(Wrap { trim: true }),
            area,
        );
        return;
    }
    let footer_h = footer::height(app, area.width);
    let head_lines = header::lines(app, &t, area.width);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(head_lines.len() as u16),
        Constraint::Min(0),
        Constraint::Length(footer_h),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(head_lines), head);
    if body.width >= 140 && body.height >= 24 {
        wide_body(frame, body, app, &t);
    } else {
        narrow_body(frame, body, app, &t);
    }
    footer::draw(frame, foot, app, &t);
    match app.overlay {
        Overlay::None => {}
        Overlay::Help => help::draw(frame, area, app, &t),
        Overlay::Probes => probes::draw(frame, area, app, &t),
        Overlay::Details { scroll } => details::draw(frame, area, app, &t, scroll),
    }
}

/// Flows over the journey on the left, drop points over diagnoses on the right.
fn wide_body(frame: &mut Frame, body: Rect, app: &App, t: &Theme) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(56), Constraint::Percentage(44)]).areas(body);
    let [flows_a, journey_a] =
        Layout::vertical([Constraint::Min(6), Constraint::Length(8)]).areas(left);
    let [drops_a, diags_a] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(right);
    flows::draw(frame, flows_a, app, t);
    journey::draw(frame, journey_a, app, t);
    drop_points::draw(frame, drops_a, app, t);
    diagnoses::draw(frame, diags_a, app, t);
}

/// The four panels stacked: flows, drop points, journey, diagnoses.
fn narrow_body(frame: &mut Frame, body: Rect, app: &App, t: &Theme) {
    // As tall as the journey needs (title + lines), within reason.
    let need = journey::content(app, t, body.width).len() as u16 + 1;
    let journey_h = need.clamp(3, if body.height >= 26 { 6 } else { 4 });
    let [flows_a, drops_a, journey_a, diags_a] = Layout::vertical([
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Length(journey_h),
        Constraint::Fill(2),
    ])
    .areas(body);
    flows::draw(frame, flows_a, app, t);
    drop_points::draw(frame, drops_a, app, t);
    journey::draw(frame, journey_a, app, t);
    diagnoses::draw(frame, diags_a, app, t);
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per value: `·` for none, `▁`..`█` scaled to the largest.
pub fn sparkline(values: &[u64]) -> String {
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                '·'
            } else {
                let level = ((v * 8).div_ceil(max)).clamp(1, 8);
                SPARKS[level as usize - 1]
            }
        })
        .collect()
}

/// `1.2k`, `3.4M`.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `3.2s ago`, `4m ago`.
fn ago(now: u64, ts: u64) -> String {
    let s = now.saturating_sub(ts) as f64 / 1e9;
    if s < 60.0 {
        format!("{s:.1}s ago")
    } else if s < 3600.0 {
        format!("{:.0}m ago", s / 60.0)
    } else {
        format!("{:.1}h ago", s / 3600.0)
    }
}

fn flow_title(f: &FlowStats) -> String {
    format!("{} {}", f.key.arrow(), f.key.proto_name())
}

/// How a journey step looks: dim when implied or missed, red where it died.
fn step_style(kind: StepKind, t: &Theme) -> Style {
    match kind {
        StepKind::Seen => Style::new(),
        StepKind::Implied | StepKind::Missed => t.dim(),
        StepKind::Failed => t.bad(),
    }
}

/// `key what  ` for each key, the key highlighted.
fn key_hints(keys: &[(&str, &str)], t: &Theme) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    for (k, what) in keys {
        spans.push(Span::styled(k.to_string(), t.key()));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    spans
}

/// Marks the selected row of a table or list.
const HIGHLIGHT: &str = "›";

/// A panel's frame: a rule with the title, `▶` when it has the focus.
fn panel(title: String, focused: bool, t: &Theme) -> Block<'static> {
    let (mark, style) = if focused {
        ("▶ ", t.key())
    } else {
        ("  ", t.bold())
    };
    Block::new()
        .borders(Borders::TOP)
        .border_style(t.dim())
        .title(Span::styled(format!("{mark}{title} "), style))
}

/// A panel with nothing to list: `msg`, dimmed.
fn empty_panel(frame: &mut Frame, area: Rect, block: Block<'static>, msg: String, t: &Theme) {
    frame.render_widget(
        Paragraph::new(Span::styled(msg, t.dim())).block(block),
        area,
    );
}

/// A panel's table with its header and a highlighted selection.
fn table<'a>(
    rows: Vec<Row<'a>>,
    widths: [Constraint; 6],
    header: Row<'a>,
    block: Block<'a>,
    highlight: Style,
) -> Table<'a> {
    Table::new(rows, widths)
        .header(header)
        .block(block)
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(HighlightSpacing::Always)
        .row_highlight_style(highlight)
}
