//! The frame every overlay is drawn in: a centred, bordered box.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::Theme;

/// `lines` in a box as tall as they need (within `area`), scrolled down by
/// `scroll` lines.
pub(super) fn show(
    frame: &mut Frame,
    area: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
    scroll: u16,
    t: &Theme,
) {
    let h = lines.len() as u16 + 2;
    let r = centred(area, 96, h);
    frame.render_widget(Clear, r);
    let block = Block::bordered()
        .title(Span::styled(format!(" {title} "), t.key()))
        .title_bottom(Line::from(Span::styled(" Esc closes ", t.dim())).right_aligned());
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        r,
    );
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
