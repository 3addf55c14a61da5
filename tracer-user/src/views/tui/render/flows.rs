//! The flows table: one row per flow with its latest verdict.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, TableState};

use super::{Theme, empty_panel, panel, table};
use crate::views::tui::model::FlowStats;

/// What the flows table shows.
pub(super) struct Flows<'a> {
    pub rows: Vec<&'a FlowStats>,
    pub selected: Option<usize>,
    pub focused: bool,
    pub sort: &'static str,
    /// Link-local control flows left out.
    pub hidden: usize,
    pub filter: &'a str,
    pub show_benign: bool,
    /// The namespace traced in: interfaces of others are a pod's.
    pub node_netns: Option<u32>,
}

pub(super) fn draw(frame: &mut Frame, area: Rect, p: &Flows, t: &Theme) {
    let rows = &p.rows;
    let focused = p.focused;
    let block = panel(
        match p.hidden {
            0 => format!("Flows ({}) · sort: {} [s]", rows.len(), p.sort),
            n => format!(
                "Flows ({}) · sort: {} [s] · {n} link-local hidden [m]",
                rows.len(),
                p.sort
            ),
        },
        focused,
        t,
    );
    if rows.is_empty() {
        let msg = format!(
            "no packets yet (filter: {})",
            if p.filter.is_empty() {
                "none"
            } else {
                p.filter
            }
        );
        empty_panel(frame, area, block, msg, t);
        return;
    }
    let mut flow_w = 20;
    for f in rows {
        flow_w = flow_w.max(flow_text(f).chars().count());
        if flow_w >= 50 {
            break;
        }
    }
    // Room for the other columns and at least 16 of the verdict.
    let flow_w = (flow_w.min(50) as u16).min(area.width.saturating_sub(41).max(16));
    // Rows for what can show, not for thousands of flows each frame: the
    // table scrolls the selected row into view from its top, so a window
    // from at most a panel's height above the selection, two heights long,
    // holds every row shown (rows are one line high).
    let h = area.height as usize;
    let start = p
        .selected
        .map_or(0, |s| (s + 1).saturating_sub(h))
        .min(rows.len());
    let end = (start + 2 * h).min(rows.len());
    let table_rows: Vec<Row> = rows[start..end].iter().map(|f| flow_row(f, p, t)).collect();
    let header =
        Row::new(["", "FLOW", "PROTO", "PKTS", "DROPS", "LAST VERDICT"]).style(t.header_row());
    let widths = [
        Constraint::Length(1),
        Constraint::Length(flow_w),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let highlight = if focused { t.selected() } else { t.bold() };
    let table = table(table_rows, widths, header, block, highlight);
    let mut state =
        TableState::default().with_selected(p.selected.map(|s| s.saturating_sub(start)));
    frame.render_stateful_widget(table, area, &mut state);
}

/// The flow's ends, and in a cluster view the nodes it was seen on.
fn flow_text(f: &FlowStats) -> String {
    match f.node_path() {
        Some(nodes) => format!("{} [{nodes}]", f.key.arrow()),
        None => f.key.arrow(),
    }
}

fn flow_row(f: &FlowStats, p: &Flows, t: &Theme) -> Row<'static> {
    if p.show_benign && f.benign > 0 && f.latest.drop.is_none() && f.never_reached().is_none() {
        return benign_row(f, t);
    }
    let (sym, verdict) = match (&f.latest.drop, f.never_reached()) {
        (Some(d), _) => (
            Span::styled("✗", t.bad()),
            Span::styled(format!("{} {}", d.verb(), d.short()), t.bad()),
        ),
        (None, Some(n)) => (
            Span::styled("✗", t.bad()),
            Span::styled(format!("LOST to {n}"), t.bad()),
        ),
        (None, None) => {
            let at = f.last_iface(p.node_netns).unwrap_or_default();
            (
                Span::styled("✓", t.ok()),
                Span::raw(format!("passed → {at}")),
            )
        }
    };
    let drops = if f.drops > 0 {
        Span::styled(f.drops.to_string(), t.bad())
    } else {
        Span::raw("0")
    };
    Row::new(vec![
        Cell::from(sym),
        Cell::from(flow_text(f)),
        Cell::from(f.key.proto_name()),
        Cell::from(Line::from(f.packets.to_string()).right_aligned()),
        Cell::from(Line::from(drops).right_aligned()),
        Cell::from(verdict),
    ])
}

/// A flow whose frees were all benign, shown on request: dimmed, `·`.
fn benign_row(f: &FlowStats, t: &Theme) -> Row<'static> {
    let reason = f.last_benign.as_deref().unwrap_or("?");
    Row::new(vec![
        Cell::from("·"),
        Cell::from(flow_text(f)),
        Cell::from(f.key.proto_name()),
        Cell::from(Line::from(f.packets.to_string()).right_aligned()),
        Cell::from(Line::from("0").right_aligned()),
        Cell::from(format!("benign: {} × {reason}", f.benign)),
    ])
    .style(t.dim())
}
