//! The probes overlay: attached, unavailable and why, and the interfaces.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use super::{Theme, popup};
use crate::views::tui::app::Info;

pub(super) fn draw(frame: &mut Frame, area: Rect, i: &Info, t: &Theme) {
    let mut lines = vec![Line::from(Span::styled("Attached", t.bold()))];
    if i.probes_attached.is_empty() {
        lines.push(Line::raw("  none known"));
    }
    for p in &i.probes_attached {
        let detail = p
            .detail
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        lines.push(Line::from(vec![
            Span::styled("  ✓ ", t.ok()),
            Span::raw(format!("{}{detail}", p.name)),
        ]));
    }
    lines.push(Line::from(Span::styled("Unavailable", t.bold())));
    if i.probes_unavailable.is_empty() {
        lines.push(Line::raw("  none"));
    }
    for u in &i.probes_unavailable {
        lines.push(Line::from(vec![
            Span::styled("  ✗ ", t.warn()),
            Span::raw(format!("{}: {}", u.name, u.reason)),
        ]));
    }
    lines.push(Line::from(Span::styled("Interfaces", t.bold())));
    lines.push(Line::raw(format!(
        "  {}",
        if i.interfaces.is_empty() {
            "none known".to_string()
        } else {
            i.interfaces.join(" ")
        }
    )));
    popup::show(frame, area, "probes", lines, 0, t);
}
