//! The journey panel: the selected flow's latest packet, point by point.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::{Theme, empty_panel, flow_title, panel, step_style};
use crate::views::tui::model::{FlowStats, Step, StepKind};

/// The selected flow and its latest packet's steps.
pub(super) struct JourneyPanel<'a> {
    pub flow: Option<&'a FlowStats>,
    pub steps: Vec<Step>,
}

pub(super) fn draw(frame: &mut Frame, area: Rect, j: &JourneyPanel, t: &Theme) {
    let Some(f) = j.flow else {
        let block = panel("Journey".into(), false, t);
        empty_panel(frame, area, block, "no flow selected".into(), t);
        return;
    };
    let block = panel(
        format!("Journey · {} · latest packet", flow_title(f)),
        false,
        t,
    );
    let lines = content(j, t, area.width);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// The selected flow's journey in lines of `width` (empty without a flow).
pub(super) fn content(j: &JourneyPanel, t: &Theme, width: u16) -> Vec<Line<'static>> {
    let Some(f) = j.flow else {
        return Vec::new();
    };
    let items: Vec<Span> = j.steps.iter().map(|s| step_span(s, t)).collect();
    let mut lines = arrow_lines(items, width.saturating_sub(2) as usize, t);
    if f.latest.drop.is_none()
        && f.never_reached().is_none()
        && let Some(last) = lines.last_mut()
    {
        last.spans.push(Span::styled("  ✓ not dropped", t.ok()));
    }
    lines
}

fn step_span(s: &Step, t: &Theme) -> Span<'static> {
    let label = match s.kind {
        StepKind::Seen | StepKind::Implied => s.label.clone(),
        StepKind::Failed => format!("✗ {}", s.label),
        StepKind::Missed => format!("never reached {}", s.label),
    };
    Span::styled(label, step_style(s.kind, t))
}

/// The steps joined by arrows, wrapped between steps rather than inside one.
fn arrow_lines(items: Vec<Span<'static>>, width: usize, t: &Theme) -> Vec<Line<'static>> {
    let mut lines: Vec<Line> = Vec::new();
    let mut cur: Vec<Span> = Vec::new();
    let mut used = 0;
    for (i, item) in items.into_iter().enumerate() {
        let arrow = if i > 0 { 3 } else { 0 };
        if !cur.is_empty() && used + arrow + item.width() > width {
            cur.push(Span::styled(" →", t.dim()));
            lines.push(Line::from(std::mem::take(&mut cur)));
            used = 0;
        } else if arrow > 0 {
            cur.push(Span::styled(" → ", t.dim()));
            used += arrow;
        }
        used += item.width();
        cur.push(item);
    }
    if !cur.is_empty() {
        lines.push(Line::from(cur));
    }
    lines
}
