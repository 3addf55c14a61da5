//! The styles every panel draws with.

use ratatui::style::{Color, Modifier, Style};

/// Styles; without colour only modifiers (bold, reverse, dim) remain.
pub struct Theme {
    color: bool,
}

impl Theme {
    pub fn new(color: bool) -> Self {
        Theme { color }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    /// Bold `fg` on `bg`; reversed without colour.
    fn banner(&self, fg: Color, bg: Color) -> Style {
        if self.color {
            Style::new().fg(fg).bg(bg).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    pub(super) fn bad(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub(super) fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    pub(super) fn warn(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    pub(super) fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub(super) fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub(super) fn bold(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    pub(super) fn alarm(&self) -> Style {
        self.banner(Color::White, Color::Red)
    }

    pub(super) fn notice(&self) -> Style {
        self.banner(Color::Black, Color::Yellow)
    }

    pub(super) fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub(super) fn header_row(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}
