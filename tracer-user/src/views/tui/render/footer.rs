//! The footer: the filter prompt while editing, else the last message, else
//! the key hints.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Theme, filter_prompt, key_hints};
use crate::views::tui::app::{FilterEdit, Message};

/// What the footer shows: the filter being edited, else the last message,
/// else the keys (a replay's or live tracing's).
pub(super) struct Footer<'a> {
    pub edit: Option<&'a FilterEdit>,
    pub message: Option<&'a Message>,
    pub replay: bool,
}

pub(super) fn height(f: &Footer, width: u16) -> u16 {
    match f.edit {
        None => 1,
        Some(e) => filter_prompt::height(e, width),
    }
}

pub(super) fn draw(frame: &mut Frame, area: Rect, f: &Footer, t: &Theme) {
    if let Some(e) = f.edit {
        filter_prompt::draw(frame, area, e, t);
        return;
    }
    if let Some(m) = f.message {
        let line = if m.error {
            Line::from(Span::styled(format!("✗ {}", m.text), t.bad()))
        } else {
            Line::from(Span::styled(format!("• {}", m.text), t.bold()))
        };
        frame.render_widget(Paragraph::new(line), area);
        return;
    }
    let keys = keys_that_fit(f.replay, area.width as usize);
    frame.render_widget(Paragraph::new(Line::from(key_hints(&keys, t))), area);
}

/// The keys and what they do; narrow terminals lose the least needed hints
/// first (never `?`).
fn keys_that_fit(replay: bool, width: usize) -> Vec<(&'static str, &'static str)> {
    let mut keys: Vec<(&str, &str)> = vec![
        ("q", "quit"),
        ("↑↓", "move"),
        ("⏎", "details"),
        ("/", "filter"),
        ("␣", "pause"),
    ];
    if replay {
        keys.push(("n", "step"));
    } else {
        keys.push(("r", "record"));
    }
    keys.extend([("c", "clear"), ("s", "sort"), ("⇥", "panel"), ("?", "help")]);
    let used = |keys: &[(&str, &str)]| -> usize {
        keys.iter()
            .map(|(k, w)| Span::raw(*k).width() + w.len() + 3)
            .sum()
    };
    for less in ["panel", "clear", "sort", "details"] {
        if used(&keys) <= width + 2 {
            break;
        }
        keys.retain(|(_, w)| *w != less);
    }
    keys
}
