//! The diagnosis panel: each diagnosis with its summary and hint, wrapped
//! to share the panel's lines.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{HighlightSpacing, List, ListItem, ListState};

use super::{HIGHLIGHT, Theme, empty_panel, panel};
use crate::model::Diagnosis;
/// What the diagnosis panel shows.
pub(super) struct Diagnoses<'a> {
    pub rows: Vec<&'a Diagnosis>,
    /// The row shown first or selected.
    pub selected: Option<usize>,
    pub focused: bool,
}

pub(super) fn draw(frame: &mut Frame, area: Rect, d: &Diagnoses, t: &Theme) {
    let rows = &d.rows;
    let focused = d.focused;
    let block = panel(format!("Diagnosis ({})", rows.len()), focused, t);
    if rows.is_empty() {
        empty_panel(frame, area, block, "no problem found so far".into(), t);
        return;
    }
    // Summary and hint share the panel's lines between the diagnoses.
    let per_item = area.height.saturating_sub(1) as usize / rows.len().max(1);
    let max = (per_item / 2).clamp(1, 8);
    let width = area.width.saturating_sub(1) as usize;
    let items: Vec<ListItem> = rows
        .iter()
        .map(|d| ListItem::new(Text::from(diag_lines(d, t, width, max))))
        .collect();
    let list = List::new(items)
        .block(block)
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(HighlightSpacing::Always)
        .highlight_style(if focused { t.selected() } else { Style::new() });
    let mut state = ListState::default().with_selected(d.selected);
    frame.render_stateful_widget(list, area, &mut state);
}

/// A diagnosis: code, count and summary, then the hint; wrapped to `width`
/// with at most `max` lines for each.
pub(super) fn diag_lines(d: &Diagnosis, t: &Theme, width: usize, max: usize) -> Vec<Line<'static>> {
    let head = vec![
        Span::styled(format!("✗ {}", d.code), t.bad()),
        Span::styled(format!(" ×{} ", d.count), t.bold()),
    ];
    let head_w: usize = head.iter().map(Span::width).sum();
    let summary = wrap_words(
        &d.summary,
        width.saturating_sub(head_w),
        width.saturating_sub(2),
        max,
    );
    let mut lines = Vec::new();
    for (i, part) in summary.into_iter().enumerate() {
        if i == 0 {
            let mut spans = head.clone();
            spans.push(Span::raw(part));
            lines.push(Line::from(spans));
        } else {
            lines.push(Line::raw(format!("  {part}")));
        }
    }
    let hint_w = width.saturating_sub(8);
    for (i, part) in wrap_words(&d.hint, hint_w, hint_w, max)
        .into_iter()
        .enumerate()
    {
        let label = if i == 0 { "  hint: " } else { "        " };
        lines.push(Line::from(vec![
            Span::styled(label, t.key()),
            Span::styled(part, t.dim()),
        ]));
    }
    lines
}

/// Words of `text` in lines of `first` then `rest` columns, at most `max`
/// lines (the last one then ends with `…`).
fn wrap_words(text: &str, first: usize, rest: usize, max: usize) -> Vec<String> {
    if max <= 1 {
        let first = first.max(1);
        if text.chars().count() <= first {
            return vec![text.to_string()];
        }
        return vec![text.chars().take(first - 1).collect::<String>() + "…"];
    }
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let limit = |lines: &Vec<String>| if lines.is_empty() { first } else { rest }.max(1);
    for word in text.split(' ') {
        let (cl, wl) = (cur.chars().count(), word.chars().count());
        if cl > 0 && cl + 1 + wl > limit(&lines) {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
        while cur.chars().count() > limit(&lines) {
            let head: String = cur.chars().take(limit(&lines)).collect();
            cur = cur.chars().skip(head.chars().count()).collect();
            lines.push(head);
        }
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    if lines.len() > max {
        lines.truncate(max);
        if let Some(l) = lines.last_mut() {
            let keep = limit(&vec![String::new(); max]).saturating_sub(1);
            *l = l.chars().take(keep).collect::<String>() + "…";
        }
    }
    lines
}
