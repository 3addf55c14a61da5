//! The frame every overlay is drawn in: a centred, bordered box.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::Theme;

/// Widest box drawn.
const MAX_WIDTH: u16 = 96;

/// `lines` in a box as tall as they need once wrapped (within `area`),
/// scrolled down by `scroll` lines. Counting wrapped rows matters: a long
/// line's end (the newest seconds of a drop point's "per second") must not
/// fall below the box.
pub(super) fn show(
    frame: &mut Frame,
    area: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
    scroll: u16,
    t: &Theme,
) {
    let block = Block::bordered()
        .title(Span::styled(format!(" {title} "), t.key()))
        .title_bottom(Line::from(Span::styled(" Esc closes ", t.dim())).right_aligned());
    let paragraph = Paragraph::new(lines)
        .block(block)
        .wrap(Wrap { trim: false })
        .scroll((scroll, 0));
    let w = box_width(area);
    let h = paragraph.line_count(w.saturating_sub(2));
    let r = centred(area, w, u16::try_from(h).unwrap_or(u16::MAX));
    frame.render_widget(Clear, r);
    frame.render_widget(paragraph, r);
}

fn box_width(area: Rect) -> u16 {
    MAX_WIDTH.min(area.width.saturating_sub(2)).max(1)
}

/// A centred box of at most `w` x `h` inside `area`.
fn centred(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width.saturating_sub(2)).max(1);
    let h = h.min(area.height.saturating_sub(2)).max(1);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}
