//! The drop points table: where packets die, how often, and lately.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, TableState};

use super::{Theme, empty_panel, panel, sparkline, table};
use crate::views::tui::model::{DropPoint, RECENT_NS};

/// What the drop points table shows.
pub(super) struct DropPoints<'a> {
    pub rows: Vec<&'a DropPoint>,
    /// The selected row, where the table has the focus.
    pub selected: Option<usize>,
    pub focused: bool,
    pub benign_seen: u64,
    pub show_benign: bool,
    pub now: u64,
}

pub(super) fn draw(frame: &mut Frame, area: Rect, d: &DropPoints, t: &Theme) {
    let rows = &d.rows;
    let focused = d.focused;
    let total: u64 = rows
        .iter()
        .filter(|p| p.key.benign.is_none())
        .map(|p| p.count)
        .sum();
    let benign = d.benign_seen;
    let title = match (benign, d.show_benign) {
        (0, _) => format!("Drop points ({total} drops)"),
        (n, false) => format!("Drop points ({total} drops · {n} benign hidden [b])"),
        (n, true) => format!("Drop points ({total} drops · {n} benign [b])"),
    };
    let block = panel(title, focused, t);
    if rows.is_empty() {
        empty_panel(frame, area, block, "no drops".into(), t);
        return;
    }
    let now = d.now;
    let spark_w = (area.width / 5).clamp(8, 30) as usize;
    let reason_w = rows
        .iter()
        .map(|p| p.key.reason.len())
        .max()
        .unwrap_or(8)
        .clamp(8, 24) as u16;
    let table_rows: Vec<Row> = rows.iter().map(|p| drop_row(p, now, spark_w, t)).collect();
    let header = Row::new(vec![
        Cell::from(""),
        Cell::from(Line::from("COUNT").right_aligned()),
        Cell::from("STAGE"),
        Cell::from("WHERE"),
        Cell::from("REASON"),
        Cell::from(format!("LAST {spark_w}s")),
    ])
    .style(t.header_row());
    let widths = [
        Constraint::Length(1),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Min(12),
        Constraint::Length(reason_w),
        Constraint::Length(spark_w as u16),
    ];
    let highlight = if focused { t.selected() } else { Style::new() };
    let table = table(table_rows, widths, header, block, highlight);
    let mut state = TableState::default().with_selected(d.selected);
    frame.render_stateful_widget(table, area, &mut state);
}

/// Active (`✗`) when it dropped in the last [`RECENT_NS`], else `-`;
/// benign (`·`, dimmed, stage `benign`) when no fault of pod traffic.
fn drop_row(p: &DropPoint, now: u64, spark_w: usize, t: &Theme) -> Row<'static> {
    if p.key.benign.is_some() {
        return Row::new(vec![
            Cell::from("·"),
            Cell::from(Line::from(p.count.to_string()).right_aligned()),
            Cell::from("benign"),
            Cell::from(p.key.place()),
            Cell::from(p.key.reason.clone()),
            Cell::from(sparkline(&p.history.series(now, spark_w))),
        ])
        .style(t.dim());
    }
    let active = now.saturating_sub(p.last_ts) < RECENT_NS;
    let sym = if active {
        Span::styled("✗", t.bad())
    } else {
        Span::styled("-", t.dim())
    };
    Row::new(vec![
        Cell::from(sym),
        Cell::from(Line::from(Span::styled(p.count.to_string(), t.bad())).right_aligned()),
        Cell::from(p.key.stage.as_str()),
        Cell::from(p.key.place()),
        Cell::from(p.key.reason.clone()),
        Cell::from(Span::styled(
            sparkline(&p.history.series(now, spark_w)),
            if active { t.bad() } else { t.dim() },
        )),
    ])
}
