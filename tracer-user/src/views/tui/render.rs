//! Drawing: a pure function of the [`App`] into a ratatui frame. Every state
//! shown in colour also has a symbol or a word, so `NO_COLOR` loses nothing.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, HighlightSpacing, List, ListItem, ListState, Paragraph, Row,
    Table, TableState, Wrap,
};

use super::app::{App, Focus, Mode, Overlay};
use super::model::{FlowStats, RECENT_NS, Step, StepKind};
use crate::events::records::Diagnosis;

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

    fn bad(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn ok(&self) -> Style {
        self.fg(Color::Green)
    }

    fn warn(&self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }

    fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn bold(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    fn alarm(&self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    fn notice(&self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    fn header_row(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per value: `·` for none, `▁`..`█` scaled to the largest.
pub fn sparkline(values: &[u64]) -> String {
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if v == 0 || max == 0 {
                '·'
            } else {
                let level = ((v * 8).div_ceil(max)).clamp(1, 8);
                SPARKS[level as usize - 1]
            }
        })
        .collect()
}

/// `1.2k`, `3.4M`.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `3.2s ago`, `4m ago`.
fn ago(now: u64, ts: u64) -> String {
    let s = now.saturating_sub(ts) as f64 / 1e9;
    if s < 60.0 {
        format!("{s:.1}s ago")
    } else if s < 3600.0 {
        format!("{:.0}m ago", s / 60.0)
    } else {
        format!("{:.1}h ago", s / 3600.0)
    }
}

fn flow_title(f: &FlowStats) -> String {
    format!("{} {}", f.key.endpoints(), f.key.proto)
}

pub fn render(frame: &mut Frame, app: &App) {
    let t = Theme::new(app.color);
    let area = frame.area();
    if area.width < 30 || area.height < 8 {
        frame.render_widget(
            Paragraph::new("calitrace: terminal too small (q quits)").wrap(Wrap { trim: true }),
            area,
        );
        return;
    }
    let footer_h = match &app.edit {
        None => 1,
        // Input, caret, and the message (wrapped, up to three lines).
        Some(e) => match &e.error {
            Some((_, msg)) => {
                2 + (msg.len() as u16 + 30)
                    .div_ceil(area.width.max(1))
                    .clamp(1, 3)
            }
            None => 3,
        },
    };
    let head_lines = header_lines(app, &t, area.width);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(head_lines.len() as u16),
        Constraint::Min(0),
        Constraint::Length(footer_h),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(head_lines), head);
    if body.width >= 140 && body.height >= 24 {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(56), Constraint::Percentage(44)])
                .areas(body);
        let [flows_a, journey_a] =
            Layout::vertical([Constraint::Min(6), Constraint::Length(8)]).areas(left);
        let [drops_a, diags_a] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(right);
        flows(frame, flows_a, app, &t);
        journey(frame, journey_a, app, &t);
        drop_points(frame, drops_a, app, &t);
        diagnoses(frame, diags_a, app, &t);
    } else {
        // As tall as the journey needs (title + lines), within reason.
        let need = journey_content(app, &t, body.width).len() as u16 + 1;
        let journey_h = need.clamp(3, if body.height >= 26 { 6 } else { 4 });
        let [flows_a, drops_a, journey_a, diags_a] = Layout::vertical([
            Constraint::Fill(3),
            Constraint::Fill(2),
            Constraint::Length(journey_h),
            Constraint::Fill(2),
        ])
        .areas(body);
        flows(frame, flows_a, app, &t);
        drop_points(frame, drops_a, app, &t);
        journey(frame, journey_a, app, &t);
        diagnoses(frame, diags_a, app, &t);
    }
    footer(frame, foot, app, &t);
    match app.overlay {
        Overlay::None => {}
        Overlay::Help => help(frame, area, app, &t),
        Overlay::Probes => probes(frame, area, app, &t),
        Overlay::Details { scroll } => details(frame, area, app, &t, scroll),
    }
}

fn sep(t: &Theme) -> Span<'static> {
    Span::styled(" │ ", t.dim())
}

/// Packs segments into lines of `width`, a new line for each group.
fn pack(groups: Vec<Vec<Vec<Span<'static>>>>, width: usize, t: &Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for group in groups {
        let mut cur: Vec<Span> = Vec::new();
        let mut used = 0;
        for seg in group {
            let w: usize = seg.iter().map(Span::width).sum();
            if !cur.is_empty() && used + 3 + w > width {
                lines.push(Line::from(std::mem::take(&mut cur)));
                used = 0;
            }
            if !cur.is_empty() {
                cur.push(sep(t));
                used += 3;
            }
            used += w;
            cur.extend(seg);
        }
        if !cur.is_empty() {
            lines.push(Line::from(cur));
        }
    }
    lines.truncate(4);
    lines
}

/// What is traced where, then the live state; two lines, more when narrow.
fn header_lines(app: &App, t: &Theme, width: u16) -> Vec<Line<'static>> {
    let i = &app.info;
    let mut title = vec![Span::styled("calitrace", t.bold())];
    if let Mode::Replay { file } = &app.mode {
        title.push(Span::raw(format!(" replay {file}")));
    }
    let mut probes = vec![
        Span::raw("probes "),
        Span::styled(format!("{} ✓", i.probes_attached.len()), t.ok()),
    ];
    if !i.probes_unavailable.is_empty() {
        probes.push(Span::raw(" "));
        probes.push(Span::styled(
            format!("{} ✗", i.probes_unavailable.len()),
            t.warn(),
        ));
        probes.push(Span::styled(" (p)", t.key()));
    }
    let node = vec![
        title,
        vec![Span::raw(i.node.clone().unwrap_or_else(|| "node ?".into()))],
        vec![Span::raw(format!(
            "netns {}",
            i.netns.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
        ))],
        vec![Span::raw(format!(
            "kernel {}",
            i.kernel.as_deref().unwrap_or("?")
        ))],
        probes,
        vec![Span::raw(format!("backends: {}", backends(app)))],
    ];

    let mut state: Vec<Vec<Span>> = Vec::new();
    let lost = app.lost();
    if lost > 0 {
        let at_least = if app.status_stale { "≥" } else { "" };
        state.push(vec![Span::styled(
            format!(" ⚠ LOST {at_least}{lost} "),
            t.alarm(),
        )]);
    }
    if app.paused {
        state.push(vec![Span::styled(" ⏸ PAUSED ", t.notice())]);
    }
    if let Some(p) = &app.status.recording {
        state.push(vec![
            Span::styled(" ● REC ", t.alarm()),
            Span::raw(format!(" {}", p.display())),
        ]);
    }
    state.push(vec![Span::raw(match &app.mode {
        Mode::Live => format!("{} ev/s", si(app.status.events_per_sec)),
        Mode::Replay { .. } if app.status.finished => "replay finished".into(),
        Mode::Replay { .. } => "replaying".into(),
    })]);
    if lost == 0 {
        state.push(vec![Span::raw(if app.status_stale {
            "lost ≥0"
        } else {
            "lost 0"
        })]);
    }
    if app.status_stale {
        state.push(vec![Span::styled(
            "⚠ status not updated (session busy)",
            t.warn(),
        )]);
    }
    let filter = if app.status.filter.trim().is_empty() {
        "none".to_string()
    } else {
        app.status.filter.clone()
    };
    state.push(vec![Span::raw("filter: "), Span::styled(filter, t.bold())]);
    if app.ui_skipped > 0 {
        state.push(vec![Span::styled(
            format!("view skipped {}", app.ui_skipped),
            t.warn(),
        )]);
    }
    pack(vec![node, state], width as usize, t)
}

/// `iptables nft · cali-* in legacy ⚠ · drops in legacy`, or `unknown`.
pub fn backends(app: &App) -> String {
    let i = &app.info;
    let mut parts = Vec::new();
    if let Some(b) = &i.iptables {
        parts.push(format!("iptables {b}"));
    }
    match (&i.calico_backend, &i.iptables) {
        (Some(c), Some(b)) if c != b => parts.push(format!("cali-* in {c} ⚠")),
        (Some(c), _) => parts.push(format!("cali-* in {c}")),
        (None, Some(_)) if i.start_seen => parts.push("no cali-* chains".into()),
        _ => {}
    }
    if !i.backends_seen.is_empty() {
        let v: Vec<&str> = i.backends_seen.iter().map(String::as_str).collect();
        parts.push(format!("drops in {}", v.join("+")));
    }
    if parts.is_empty() {
        "unknown".into()
    } else {
        parts.join(" · ")
    }
}

fn panel(title: String, focused: bool, t: &Theme) -> Block<'static> {
    let (mark, style) = if focused {
        ("▶ ", t.key())
    } else {
        ("  ", t.bold())
    };
    Block::new()
        .borders(Borders::TOP)
        .border_style(t.dim())
        .title(Span::styled(format!("{mark}{title} "), style))
}

fn flows(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let rows = app.flow_rows();
    let focused = app.focus == Focus::Flows;
    let block = panel(
        format!("Flows ({}) · sort: {} [s]", rows.len(), app.sort.label()),
        focused,
        t,
    );
    if rows.is_empty() {
        let msg = format!(
            "no packets yet (filter: {})",
            if app.status.filter.is_empty() {
                "none"
            } else {
                &app.status.filter
            }
        );
        frame.render_widget(
            Paragraph::new(Span::styled(msg, t.dim())).block(block),
            area,
        );
        return;
    }
    let flow_w = rows
        .iter()
        .map(|f| f.key.endpoints().chars().count())
        .max()
        .unwrap_or(20)
        .clamp(20, 50) as u16;
    // Room for the other columns and at least 16 of the verdict.
    let flow_w = flow_w.min(area.width.saturating_sub(41).max(16));
    let table_rows: Vec<Row> = rows
        .iter()
        .map(|f| {
            let (sym, verdict) = match &f.latest.drop {
                Some(d) => (
                    Span::styled("✗", t.bad()),
                    Span::styled(format!("DROP {}", d.short()), t.bad()),
                ),
                None => {
                    let at = f.last_iface(app.info.netns).unwrap_or_default();
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
                Cell::from(f.key.endpoints()),
                Cell::from(f.key.proto.clone()),
                Cell::from(Line::from(f.packets.to_string()).right_aligned()),
                Cell::from(Line::from(drops).right_aligned()),
                Cell::from(verdict),
            ])
        })
        .collect();
    let header =
        Row::new(["", "FLOW", "PROTO", "PKTS", "DROPS", "LAST VERDICT"]).style(t.header_row());
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(1),
            Constraint::Length(flow_w),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .block(block)
    .highlight_symbol("›")
    .highlight_spacing(HighlightSpacing::Always)
    .row_highlight_style(if focused { t.selected() } else { t.bold() });
    let mut state = TableState::default().with_selected(app.flow_index(&rows));
    frame.render_stateful_widget(table, area, &mut state);
}

fn drop_points(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let rows = app.drop_rows();
    let focused = app.focus == Focus::DropPoints;
    let total: u64 = rows.iter().map(|p| p.count).sum();
    let block = panel(format!("Drop points ({total} drops)"), focused, t);
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("no drops", t.dim())).block(block),
            area,
        );
        return;
    }
    let now = app.shown().now_ns;
    let spark_w = (area.width / 5).clamp(8, 30) as usize;
    let reason_w = rows
        .iter()
        .map(|p| p.key.reason.len())
        .max()
        .unwrap_or(8)
        .clamp(8, 24) as u16;
    let table_rows: Vec<Row> = rows
        .iter()
        .map(|p| {
            let active = now.saturating_sub(p.last_ts) < RECENT_NS;
            let sym = if active {
                Span::styled("✗", t.bad())
            } else {
                Span::styled("-", t.dim())
            };
            Row::new(vec![
                Cell::from(sym),
                Cell::from(Line::from(Span::styled(p.count.to_string(), t.bad())).right_aligned()),
                Cell::from(p.key.stage.as_str()),
                Cell::from(p.key.place()),
                Cell::from(p.key.reason.clone()),
                Cell::from(Span::styled(
                    sparkline(&p.history.series(now, spark_w)),
                    if active { t.bad() } else { t.dim() },
                )),
            ])
        })
        .collect();
    let header = Row::new(vec![
        Cell::from(""),
        Cell::from(Line::from("COUNT").right_aligned()),
        Cell::from("STAGE"),
        Cell::from("WHERE"),
        Cell::from("REASON"),
        Cell::from(format!("LAST {spark_w}s")),
    ])
    .style(t.header_row());
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(1),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Min(12),
            Constraint::Length(reason_w),
            Constraint::Length(spark_w as u16),
        ],
    )
    .header(header)
    .block(block)
    .highlight_symbol("›")
    .highlight_spacing(HighlightSpacing::Always)
    .row_highlight_style(if focused { t.selected() } else { Style::new() });
    let mut state =
        TableState::default().with_selected(if focused { app.drop_index() } else { None });
    frame.render_stateful_widget(table, area, &mut state);
}

fn step_span(s: &Step, t: &Theme) -> Span<'static> {
    match s.kind {
        StepKind::Seen => Span::raw(s.label.clone()),
        StepKind::Implied => Span::styled(s.label.clone(), t.dim()),
        StepKind::Failed => Span::styled(format!("✗ {}", s.label), t.bad()),
        StepKind::Missed => Span::styled(format!("never reached {}", s.label), t.dim()),
    }
}

/// The steps joined by arrows, wrapped between steps rather than inside one.
fn journey_lines(mut items: Vec<Span<'static>>, width: usize, t: &Theme) -> Vec<Line<'static>> {
    let mut lines: Vec<Line> = Vec::new();
    let mut cur: Vec<Span> = Vec::new();
    let mut used = 0;
    for (i, item) in items.drain(..).enumerate() {
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

/// The selected flow's journey in lines of `width` (empty without a flow).
fn journey_content(app: &App, t: &Theme, width: u16) -> Vec<Line<'static>> {
    let Some(f) = app.selected_flow() else {
        return Vec::new();
    };
    let steps = f.steps(app.info.netns, &app.shown().egress_to);
    let items: Vec<Span> = steps.iter().map(|s| step_span(s, t)).collect();
    let mut lines = journey_lines(items, width.saturating_sub(2) as usize, t);
    if f.latest.drop.is_none()
        && let Some(last) = lines.last_mut()
    {
        last.spans.push(Span::styled("  ✓ not dropped", t.ok()));
    }
    lines
}

fn journey(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let Some(f) = app.selected_flow() else {
        frame.render_widget(
            Paragraph::new(Span::styled("no flow selected", t.dim())).block(panel(
                "Journey".into(),
                false,
                t,
            )),
            area,
        );
        return;
    };
    let block = panel(
        format!("Journey · {} · latest packet", flow_title(f)),
        false,
        t,
    );
    let lines = journey_content(app, t, area.width);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
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

/// A diagnosis: code, count and summary, then the hint; wrapped to `width`
/// with at most `max` lines for each.
fn diag_lines(d: &Diagnosis, t: &Theme, width: usize, max: usize) -> Vec<Line<'static>> {
    let head = vec![
        Span::styled(format!("✗ {}", d.code), t.bad()),
        Span::styled(format!(" ×{} ", d.count), t.bold()),
    ];
    let head_w: usize = head.iter().map(Span::width).sum();
    let mut lines = Vec::new();
    for (i, part) in wrap_words(
        &d.summary,
        width.saturating_sub(head_w),
        width.saturating_sub(2),
        max,
    )
    .into_iter()
    .enumerate()
    {
        if i == 0 {
            let mut spans = head.clone();
            spans.push(Span::raw(part));
            lines.push(Line::from(spans));
        } else {
            lines.push(Line::raw(format!("  {part}")));
        }
    }
    for (i, part) in wrap_words(
        &d.hint,
        width.saturating_sub(8),
        width.saturating_sub(8),
        max,
    )
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

fn diagnoses(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let rows = app.diag_rows();
    let focused = app.focus == Focus::Diagnoses;
    let block = panel(format!("Diagnosis ({})", rows.len()), focused, t);
    if rows.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled("no problem found so far", t.dim())).block(block),
            area,
        );
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
        .highlight_symbol("›")
        .highlight_spacing(HighlightSpacing::Always)
        .highlight_style(if focused { t.selected() } else { Style::new() });
    let mut state =
        ListState::default().with_selected(if focused { app.diag_index() } else { Some(0) });
    frame.render_stateful_widget(list, area, &mut state);
}

fn footer(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    if let Some(e) = &app.edit {
        let prompt = "filter> ";
        let mut lines = vec![Line::from(vec![
            Span::styled(prompt, t.key()),
            Span::raw(e.text.clone()),
        ])];
        match &e.error {
            Some((pos, msg)) => {
                let col = 1 + *pos;
                lines.push(Line::from(Span::styled(
                    format!("{}^", " ".repeat(prompt.len() + pos)),
                    t.bad(),
                )));
                lines.push(Line::from(Span::styled(
                    format!("✗ bad filter at column {col}: {msg}"),
                    t.bad(),
                )));
            }
            None => {
                lines.push(Line::from(vec![
                    Span::styled("Enter", t.key()),
                    Span::raw(" apply  "),
                    Span::styled("Esc", t.key()),
                    Span::raw(" cancel  "),
                    Span::styled("Ctrl-U", t.key()),
                    Span::raw(" clear  (empty = everything)"),
                ]));
                lines.push(Line::from(Span::styled(
                    "host A · src|dst host A · net CIDR · [src|dst] port N · tcp udp icmp icmp6 arp ip ip6 · and or not ( )",
                    t.dim(),
                )));
            }
        }
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), area);
        let x = area.x + (prompt.len() + e.cursor) as u16;
        frame.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
        return;
    }
    if let Some(m) = &app.message {
        let line = if m.error {
            Line::from(Span::styled(format!("✗ {}", m.text), t.bad()))
        } else {
            Line::from(Span::styled(format!("• {}", m.text), t.bold()))
        };
        frame.render_widget(Paragraph::new(line), area);
        return;
    }
    let mut keys: Vec<(&str, &str)> = vec![
        ("q", "quit"),
        ("↑↓", "move"),
        ("⏎", "details"),
        ("/", "filter"),
        ("␣", "pause"),
    ];
    if app.is_replay() {
        keys.push(("n", "step"));
    } else {
        keys.push(("r", "record"));
    }
    keys.extend([("c", "clear"), ("s", "sort"), ("⇥", "panel"), ("?", "help")]);
    // Narrow terminals lose the least needed hints first (never `?`).
    let width = |keys: &[(&str, &str)]| -> usize {
        keys.iter()
            .map(|(k, w)| Span::raw(*k).width() + w.len() + 3)
            .sum()
    };
    for less in ["panel", "clear", "sort", "details"] {
        if width(&keys) <= area.width as usize + 2 {
            break;
        }
        keys.retain(|(_, w)| *w != less);
    }
    let mut spans = Vec::new();
    for (k, what) in keys {
        spans.push(Span::styled(k, t.key()));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A centred box of at most `w` x `h` inside `area`.
fn popup(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width.saturating_sub(2)).max(1);
    let h = h.min(area.height.saturating_sub(2)).max(1);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn show_popup(
    frame: &mut Frame,
    area: Rect,
    title: &str,
    lines: Vec<Line<'static>>,
    scroll: u16,
    t: &Theme,
) {
    let h = lines.len() as u16 + 2;
    let r = popup(area, 96, h);
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

fn help(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let k = |key: &str, what: &str| {
        Line::from(vec![
            Span::styled(format!("  {key:<16}"), t.key()),
            Span::raw(what.to_string()),
        ])
    };
    let mut lines = vec![
        k(
            "↑ ↓  j k",
            "move the selection (PgUp PgDn, g G: page, first, last)",
        ),
        k(
            "Tab  Shift-Tab",
            "next / previous panel: flows, drop points, diagnosis",
        ),
        k(
            "Enter",
            "details of the selected flow, drop point or diagnosis",
        ),
        k(
            "/",
            "edit the filter (command line syntax); Enter applies, Esc cancels",
        ),
        k(
            "space",
            "pause / resume the view (tracing and recording go on)",
        ),
    ];
    if app.is_replay() {
        lines.push(k("n", "while paused: replay one more event"));
    } else {
        lines.push(k(
            "r",
            "start / stop recording to calitrace-<node>-<time>.calitrace",
        ));
    }
    lines.extend([
        k(
            "s",
            "sort flows: recent drops, drops, packets, last seen, address",
        ),
        k("c", "clear counters (flows, drop points, diagnoses)"),
        k("p", "probes: attached, unavailable and why; interfaces"),
        k("?", "this help"),
        k("q  Esc  Ctrl-C", "quit and detach everything"),
        Line::raw(""),
        Line::from(vec![
            Span::styled("  ✗", t.bad()),
            Span::raw(" dropped   "),
            Span::styled("✓", t.ok()),
            Span::raw(" passed   "),
            Span::raw("- drop point quiet for 10 s   "),
            Span::raw("·▁▂▃▅▇█ drops per second"),
        ]),
        Line::from(vec![
            Span::styled("  ⚠ LOST", t.alarm()),
            Span::raw(" events the ring buffer had no room for   "),
            Span::styled("● REC", t.alarm()),
            Span::raw(" recording   "),
            Span::styled("⏸ PAUSED", t.notice()),
        ]),
        Line::raw(
            "  Journey: points seen in order, dim = passed by implication, ✗ = where it died.",
        ),
    ]);
    show_popup(frame, area, "calitrace keys", lines, 0, t);
}

fn probes(frame: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let i = &app.info;
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
    show_popup(frame, area, "probes", lines, 0, t);
}

fn kv(k: &str, v: String, t: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{k:<11}"), t.bold()),
        Span::raw(v),
    ])
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "?".into())
}

fn details(frame: &mut Frame, area: Rect, app: &App, t: &Theme, scroll: u16) {
    let now = app.shown().now_ns;
    let (title, lines) = match app.focus {
        Focus::Flows => match app.selected_flow() {
            None => ("flow".to_string(), vec![Line::raw("no flow selected")]),
            Some(f) => ("flow".to_string(), flow_details(f, app, now, t)),
        },
        Focus::DropPoints => match app.drop_index().map(|i| app.drop_rows()[i]) {
            None => (
                "drop point".into(),
                vec![Line::raw("no drop point selected")],
            ),
            Some(p) => {
                let k = &p.key;
                let series = p.history.series(now, 60);
                let mut lines = vec![
                    kv("stage", k.stage.as_str().into(), t),
                    kv("reason", k.reason.clone(), t),
                    kv("location", opt(&k.location), t),
                ];
                if k.backend.is_some() || k.table.is_some() || k.hook.is_some() {
                    lines.push(kv(
                        "netfilter",
                        format!(
                            "backend {}, table {}, chain {}, hook {}",
                            opt(&k.backend),
                            opt(&k.table),
                            opt(&k.chain),
                            opt(&k.hook)
                        ),
                        t,
                    ));
                }
                lines.extend([
                    kv("count", p.count.to_string(), t),
                    kv("first", ago(now, p.first_ts), t),
                    kv("last", ago(now, p.last_ts), t),
                    kv("last 60s", sparkline(&series), t),
                    kv(
                        "per second",
                        series
                            .iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(" "),
                        t,
                    ),
                ]);
                ("drop point".into(), lines)
            }
        },
        Focus::Diagnoses => match app.diag_index().map(|i| app.diag_rows()[i]) {
            None => ("diagnosis".into(), vec![Line::raw("no diagnosis selected")]),
            Some(d) => ("diagnosis".into(), diagnosis_details(d, now, t)),
        },
    };
    show_popup(frame, area, &title, lines, scroll, t);
}

fn flow_details(f: &FlowStats, app: &App, now: u64, t: &Theme) -> Vec<Line<'static>> {
    let mut lines = vec![
        kv("flow", flow_title(f), t),
        kv(
            "counts",
            format!("{} packet(s), {} drop(s)", f.packets, f.drops),
            t,
        ),
        kv(
            "seen",
            format!(
                "first {}, last {}",
                ago(now, f.first_ts),
                ago(now, f.last_ts)
            ),
            t,
        ),
    ];
    let id = &f.latest.id;
    let mut what = Vec::new();
    if let Some(i) = &id.icmp {
        what.push(i.clone());
    }
    if let Some(i) = id.ip_id {
        what.push(format!("ip id {i}"));
    }
    what.push(format!("{} bytes", id.len));
    lines.push(kv("latest", what.join(", "), t));
    let steps = f.steps(app.info.netns, &app.shown().egress_to);
    let t0 = steps.iter().find_map(|s| s.ts_ns);
    for s in &steps {
        let when = match (s.ts_ns, t0) {
            (Some(ts), Some(t0)) => format!("+{:.6}s", ts.saturating_sub(t0) as f64 / 1e9),
            _ => String::new(),
        };
        let ttl = s.ttl.map(|x| format!("  ttl {x}")).unwrap_or_default();
        let (mark, style, label) = match s.kind {
            StepKind::Seen => ("  ", Style::new(), s.label.clone()),
            StepKind::Implied => ("  ", t.dim(), format!("{} (implied)", s.label)),
            StepKind::Failed => ("✗ ", t.bad(), s.label.clone()),
            StepKind::Missed => ("  ", t.dim(), format!("never reached {}", s.label)),
        };
        lines.push(Line::from(vec![
            Span::styled(format!("  {mark}{when:>10}  "), style),
            Span::styled(label, style),
            Span::styled(ttl, t.dim()),
        ]));
    }
    if let Some(d) = &f.latest.drop {
        let mut s = format!(
            "{} in {} (stage {})",
            d.reason,
            d.location.as_deref().unwrap_or("?"),
            d.stage.as_str()
        );
        if let Some(i) = &d.ifname {
            s.push_str(&format!(", dev {i}"));
        }
        if let Some(p) = &d.pod {
            s.push_str(&format!(", in pod {p}"));
        }
        lines.push(kv("dropped", s, t));
        if let Some(nf) = &d.netfilter {
            lines.push(kv(
                "netfilter",
                format!(
                    "backend {}, table {}, chain {}, hook {}, rule {} ({})",
                    opt(&nf.backend),
                    opt(&nf.table),
                    opt(&nf.chain),
                    opt(&nf.hook),
                    opt(&nf.rule),
                    nf.attribution
                ),
                t,
            ));
        }
    }
    let related: Vec<&Diagnosis> = app
        .diag_rows()
        .into_iter()
        .filter(|d| d.src.as_deref() == Some(&f.key.src) && d.dst.as_deref() == Some(&f.key.dst))
        .collect();
    for d in related {
        lines.push(Line::raw(""));
        lines.extend(diag_lines(d, t, 92, 8));
    }
    lines
}

fn diagnosis_details(d: &Diagnosis, now: u64, t: &Theme) -> Vec<Line<'static>> {
    let mut lines = vec![
        kv("code", d.code.to_string(), t),
        kv("count", d.count.to_string(), t),
        kv(
            "stage",
            d.stage
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "?".into()),
            t,
        ),
        kv("summary", d.summary.clone(), t),
        kv("hint", d.hint.clone(), t),
    ];
    let fields = [
        ("src", &d.src),
        ("dst", &d.dst),
        ("backend", &d.backend),
        ("table", &d.table),
        ("chain", &d.chain),
        ("hook", &d.hook),
        ("rule", &d.rule),
        ("calico", &d.calico_backend),
        ("ifname", &d.ifname),
        ("target", &d.target),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            lines.push(kv(k, v.clone(), t));
        }
    }
    if let Some(a) = d.attribution {
        lines.push(kv("attribution", a.to_string(), t));
    }
    lines.push(kv(
        "seen",
        format!(
            "first {}, last {}",
            ago(now, d.first_ts_ns),
            ago(now, d.last_ts_ns)
        ),
        t,
    ));
    lines
}
