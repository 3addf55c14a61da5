//! The TUI's answer to keys: moving, overlays, the filter editor, pause,
//! recording. A child of `app` so that it reaches the state's private fields.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{App, FilterEdit, Focus, Message, Overlay};
use crate::filter::Filter;
use crate::views::Control;

impl App {
    pub fn key(&mut self, k: KeyEvent) {
        if k.kind == KeyEventKind::Release {
            return;
        }
        self.dirty = true;
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(k.code, KeyCode::Char('c') | KeyCode::Char('C')) {
            return self.request_quit();
        }
        if self.edit.is_some() {
            return self.edit_key(k);
        }
        if !matches!(self.overlay, Overlay::None) {
            return self.overlay_key(k);
        }
        self.message = None;
        match k.code {
            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => self.request_quit(),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(i64::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(i64::MAX / 2),
            KeyCode::Tab => self.focus = self.focus.next(),
            KeyCode::BackTab => self.focus = self.focus.prev(),
            KeyCode::Enter => self.overlay = Overlay::Details { scroll: 0 },
            KeyCode::Char('?') | KeyCode::F(1) => self.overlay = Overlay::Help,
            KeyCode::Char('p') => self.overlay = Overlay::Probes,
            KeyCode::Char('/') => {
                let text = self.status.filter.clone();
                self.edit = Some(FilterEdit {
                    cursor: text.chars().count(),
                    text,
                    error: None,
                });
            }
            KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Char('n') | KeyCode::Char('.') if self.is_replay() => {
                if self.paused {
                    self.outbox.push(Control::Step);
                } else {
                    self.info_message("step: pause first (space), then n steps one event");
                }
            }
            KeyCode::Char('r') => self.toggle_recording(),
            KeyCode::Char('c') => self.clear(),
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('b') => self.show_benign = !self.show_benign,
            KeyCode::Char('m') => self.show_control = !self.show_control,
            _ => {}
        }
    }

    fn request_quit(&mut self) {
        self.quit = true;
        self.outbox.push(Control::Quit);
    }

    fn info_message(&mut self, text: impl Into<String>) {
        self.message = Some(Message {
            text: text.into(),
            error: false,
        });
    }

    fn overlay_key(&mut self, k: KeyEvent) {
        match (k.code, self.overlay) {
            (KeyCode::Char('q') | KeyCode::Char('Q'), _) => self.request_quit(),
            (KeyCode::Esc | KeyCode::Enter, _) => self.overlay = Overlay::None,
            (KeyCode::Char('?'), Overlay::Help) | (KeyCode::Char('p'), Overlay::Probes) => {
                self.overlay = Overlay::None
            }
            (KeyCode::Char('?'), _) => self.overlay = Overlay::Help,
            (KeyCode::Up | KeyCode::Char('k'), Overlay::Details { scroll }) => {
                self.overlay = Overlay::Details {
                    scroll: scroll.saturating_sub(1),
                }
            }
            (KeyCode::Down | KeyCode::Char('j'), Overlay::Details { scroll }) => {
                self.overlay = Overlay::Details {
                    scroll: scroll.saturating_add(1).min(500),
                }
            }
            (KeyCode::Char(' '), _) => self.toggle_pause(),
            _ => {}
        }
    }

    fn edit_key(&mut self, k: KeyEvent) {
        let Some(e) = &mut self.edit else { return };
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let len = e.text.chars().count();
        let byte = |s: &str, c: usize| s.char_indices().nth(c).map(|(b, _)| b).unwrap_or(s.len());
        match k.code {
            KeyCode::Esc => {
                self.edit = None;
                return;
            }
            KeyCode::Enter => return self.apply_filter(),
            KeyCode::Char('u') if ctrl => {
                e.text.clear();
                e.cursor = 0;
            }
            KeyCode::Char('a') if ctrl => e.cursor = 0,
            KeyCode::Char('e') if ctrl => e.cursor = len,
            KeyCode::Char(c) if !ctrl => {
                let at = byte(&e.text, e.cursor);
                e.text.insert(at, c);
                e.cursor += 1;
            }
            KeyCode::Backspace if e.cursor > 0 => {
                let at = byte(&e.text, e.cursor - 1);
                e.text.remove(at);
                e.cursor -= 1;
            }
            KeyCode::Delete if e.cursor < len => {
                let at = byte(&e.text, e.cursor);
                e.text.remove(at);
            }
            KeyCode::Left => e.cursor = e.cursor.saturating_sub(1),
            KeyCode::Right => e.cursor = (e.cursor + 1).min(len),
            KeyCode::Home => e.cursor = 0,
            KeyCode::End => e.cursor = len,
            _ => return,
        }
        // The error stays until the next Enter, but it no longer points at
        // the text once that changed.
        if !matches!(
            k.code,
            KeyCode::Left | KeyCode::Right | KeyCode::Home | KeyCode::End
        ) {
            e.error = None;
        }
    }

    fn apply_filter(&mut self) {
        let Some(e) = &mut self.edit else { return };
        match Filter::parse(&e.text).and_then(|f| f.compile().map(|_| f)) {
            Ok(f) => {
                let shown = if f.is_match_all() {
                    "none (everything)".to_string()
                } else {
                    f.to_string()
                };
                self.outbox.push(Control::SetFilter(f));
                self.edit = None;
                self.info_message(format!("filter set: {shown}"));
            }
            Err(err) => e.error = Some((err.pos, err.msg)),
        }
    }

    fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if self.is_replay() {
            self.outbox.push(Control::Pause(self.paused));
        } else if self.paused {
            self.frozen = Some(self.model.clone());
        } else {
            self.frozen = None;
        }
    }

    fn toggle_recording(&mut self) {
        if self.is_replay() {
            return self.info_message("recording is only available when tracing live");
        }
        match self.status.recording.clone() {
            Some(p) => {
                self.outbox.push(Control::StopRecording);
                self.info_message(format!("recording stopped: {}", p.display()));
            }
            None => {
                let p = self.recording_path();
                self.info_message(format!("recording to {}", p.display()));
                self.outbox.push(Control::StartRecording(p));
            }
        }
    }

    fn clear(&mut self) {
        self.model.clear();
        if let Some(f) = &mut self.frozen {
            f.clear();
        }
        self.selected_flow = None;
        self.selected_drop = 0;
        self.selected_diag = 0;
        self.info_message("counters cleared");
    }

    fn move_by(&mut self, delta: i64) {
        let step = |i: usize, n: usize| -> usize {
            if n == 0 {
                return 0;
            }
            (i as i64).saturating_add(delta).clamp(0, n as i64 - 1) as usize
        };
        match self.focus {
            Focus::Flows => {
                let rows = self.flow_rows();
                let Some(i) = self.flow_index(&rows) else {
                    return;
                };
                let key = rows[step(i, rows.len())].key.clone();
                self.selected_flow = Some(key);
            }
            Focus::DropPoints => {
                let n = self.drop_rows().len();
                self.selected_drop = step(self.drop_index().unwrap_or(0), n);
            }
            Focus::Diagnoses => {
                let n = self.shown().diagnoses.len();
                self.selected_diag = step(self.diag_index().unwrap_or(0), n);
            }
        }
    }
}
