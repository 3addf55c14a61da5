//! The filter prompt in the footer: input, caret and what the keys do, or
//! where the filter is wrong and why.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::{Theme, key_hints};
use crate::views::tui::app::FilterEdit;

const PROMPT: &str = "filter> ";

/// Input, caret, and the message (wrapped, up to three lines).
pub(super) fn height(e: &FilterEdit, width: u16) -> u16 {
    match &e.error {
        Some((_, msg)) => 2 + (msg.len() as u16 + 30).div_ceil(width.max(1)).clamp(1, 3),
        None => 3,
    }
}

pub(super) fn draw(frame: &mut Frame, area: Rect, e: &FilterEdit, t: &Theme) {
    let mut lines = vec![Line::from(vec![
        Span::styled(PROMPT, t.key()),
        Span::raw(e.text.clone()),
    ])];
    match &e.error {
        Some((pos, msg)) => {
            let col = 1 + *pos;
            lines.push(Line::from(Span::styled(
                format!("{}^", " ".repeat(PROMPT.len() + pos)),
                t.bad(),
            )));
            lines.push(Line::from(Span::styled(
                format!("✗ bad filter at column {col}: {msg}"),
                t.bad(),
            )));
        }
        None => lines.extend(usage(t)),
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
    let x = area.x + (PROMPT.len() + e.cursor) as u16;
    frame.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
}

/// The keys, then the filter syntax in one line.
fn usage(t: &Theme) -> [Line<'static>; 2] {
    let mut keys = key_hints(
        &[("Enter", "apply"), ("Esc", "cancel"), ("Ctrl-U", "clear")],
        t,
    );
    keys.push(Span::raw("(empty = everything)"));
    [
        Line::from(keys),
        Line::from(Span::styled(
            "host A · src|dst host A · net CIDR · [src|dst] port N · tcp udp icmp icmp6 arp ip ip6 · and or not ( )",
            t.dim(),
        )),
    ]
}
