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

use super::app::{App, Focus, Overlay};
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
    let foot_panel = footer::Footer {
        edit: app.edit.as_ref(),
        message: app.message.as_ref(),
        replay: app.is_replay(),
    };
    let footer_h = footer::height(&foot_panel, area.width);
    let head_lines = header::lines(&header::Header::of(app), &t, area.width);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(head_lines.len() as u16),
        Constraint::Min(0),
        Constraint::Length(footer_h),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(head_lines), head);
    let panels = Panels::of(app);
    if body.width >= 140 && body.height >= 24 {
        wide_body(frame, body, &panels, &t);
    } else {
        narrow_body(frame, body, &panels, &t);
    }
    footer::draw(frame, foot, &foot_panel, &t);
    match app.overlay {
        Overlay::None => {}
        Overlay::Help => help::draw(frame, area, app.is_replay(), &t),
        Overlay::Probes => probes::draw(frame, area, &app.info, &t),
        Overlay::Details { scroll } => {
            let now = app.shown().now_ns;
            details::draw(frame, area, &selected(app), now, &t, scroll)
        }
    }
}

/// The four panels, each with only what it draws.
struct Panels<'a> {
    flows: flows::Flows<'a>,
    drop_points: drop_points::DropPoints<'a>,
    journey: journey::JourneyPanel<'a>,
    diagnoses: diagnoses::Diagnoses<'a>,
}

impl<'a> Panels<'a> {
    fn of(app: &'a App) -> Self {
        let flow_rows = app.flow_rows();
        let selected_flow = app.flow_index(&flow_rows);
        let flow = app.selected_flow();
        let shown = app.shown();
        Panels {
            flows: flows::Flows {
                selected: selected_flow,
                rows: flow_rows,
                focused: app.focus == Focus::Flows,
                sort: app.sort.label(),
                hidden: app.hidden_control_flows(),
                filter: &app.status.filter,
                show_benign: app.show_benign,
                node_netns: app.info.netns,
            },
            drop_points: drop_points::DropPoints {
                rows: app.drop_rows(),
                selected: app.drop_index().filter(|_| app.focus == Focus::DropPoints),
                focused: app.focus == Focus::DropPoints,
                benign_seen: shown.benign_seen,
                show_benign: app.show_benign,
                now: shown.now_ns,
            },
            journey: journey::JourneyPanel {
                flow,
                steps: flow
                    .map(|f| f.steps(app.info.netns, &shown.egress_to))
                    .unwrap_or_default(),
            },
            diagnoses: diagnoses::Diagnoses {
                rows: app.diag_rows(),
                selected: match app.focus {
                    Focus::Diagnoses => app.diag_index(),
                    _ => Some(0),
                },
                focused: app.focus == Focus::Diagnoses,
            },
        }
    }
}

/// The selection of the focused panel, for the details overlay.
fn selected(app: &App) -> details::Selected<'_> {
    use details::Selected;
    match app.focus {
        Focus::Flows => Selected::Flow(app.selected_flow().map(|f| {
            flow_details::FlowDetails {
                flow: f,
                steps: f.steps(app.info.netns, &app.shown().egress_to),
                diagnoses: app
                    .diag_rows()
                    .into_iter()
                    .filter(|d| d.src == f.key.src && d.dst == f.key.dst)
                    .collect(),
            }
        })),
        Focus::DropPoints => Selected::DropPoint(app.drop_index().map(|i| app.drop_rows()[i])),
        Focus::Diagnoses => Selected::Diagnosis(app.diag_index().map(|i| app.diag_rows()[i])),
    }
}

/// Flows over the journey on the left, drop points over diagnoses on the right.
fn wide_body(frame: &mut Frame, body: Rect, p: &Panels, t: &Theme) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(56), Constraint::Percentage(44)]).areas(body);
    let [flows_a, journey_a] =
        Layout::vertical([Constraint::Min(6), Constraint::Length(8)]).areas(left);
    let [drops_a, diags_a] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(right);
    flows::draw(frame, flows_a, &p.flows, t);
    journey::draw(frame, journey_a, &p.journey, t);
    drop_points::draw(frame, drops_a, &p.drop_points, t);
    diagnoses::draw(frame, diags_a, &p.diagnoses, t);
}

/// The four panels stacked: flows, drop points, journey, diagnoses.
fn narrow_body(frame: &mut Frame, body: Rect, p: &Panels, t: &Theme) {
    // As tall as the journey needs (title + lines), within reason.
    let need = journey::content(&p.journey, t, body.width).len() as u16 + 1;
    let journey_h = need.clamp(3, if body.height >= 26 { 6 } else { 4 });
    let [flows_a, drops_a, journey_a, diags_a] = Layout::vertical([
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Length(journey_h),
        Constraint::Fill(2),
    ])
    .areas(body);
    flows::draw(frame, flows_a, &p.flows, t);
    drop_points::draw(frame, drops_a, &p.drop_points, t);
    journey::draw(frame, journey_a, &p.journey, t);
    diagnoses::draw(frame, diags_a, &p.diagnoses, t);
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
