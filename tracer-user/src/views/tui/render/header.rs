//! The header: what is traced where, then the live state.

use ratatui::text::{Line, Span};

use super::{Theme, si};
use crate::views::Status;
use crate::views::tui::app::{App, Info, Mode};

/// What the header shows: the session and its state.
pub(super) struct Header<'a> {
    pub info: &'a Info,
    pub status: &'a Status,
    pub mode: &'a Mode,
    pub paused: bool,
    /// Events lost so far.
    pub lost: u64,
    /// Batches the view skipped to keep up.
    pub ui_skipped: u64,
    /// The status is older than it should be (the source is stuck).
    pub status_stale: bool,
}

impl<'a> Header<'a> {
    pub fn of(app: &'a App) -> Self {
        Header {
            info: &app.info,
            status: &app.status,
            mode: &app.mode,
            paused: app.paused,
            lost: app.lost(),
            ui_skipped: app.ui_skipped,
            status_stale: app.status_stale,
        }
    }
}

/// A run of spans kept on one line; segments are joined by ` │ `.
type Segment = Vec<Span<'static>>;

/// What is traced where, then the live state; two lines, more when narrow.
pub(super) fn lines(app: &Header, t: &Theme, width: u16) -> Vec<Line<'static>> {
    let mut groups = vec![node_segments(app, t)];
    if !app.status.nodes.is_empty() {
        groups.push(cluster_segments(app, t));
    }
    groups.push(state_segments(app, t));
    pack(groups, width as usize, t)
}

/// Packs segments into lines of `width`, a new line for each group.
fn pack(groups: Vec<Vec<Segment>>, width: usize, t: &Theme) -> Vec<Line<'static>> {
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
                cur.push(Span::styled(" │ ", t.dim()));
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

/// Title, node, netns, kernel, probes and backends.
fn node_segments(app: &Header, t: &Theme) -> Vec<Segment> {
    let i = &app.info;
    let mut title = vec![Span::styled("calitrace", t.bold())];
    if let Mode::Replay { file } = app.mode {
        title.push(Span::raw(format!(" replay {file}")));
    }
    vec![
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
        probe_counts(app, t),
        vec![Span::raw(format!("backends: {}", backends(app.info)))],
    ]
    .into_iter()
    .chain(doctor_segment(app, t))
    .collect()
}

/// Cluster views: each node's agent, events/s, lost events and clock offset.
fn cluster_segments(app: &Header, t: &Theme) -> Vec<Segment> {
    use crate::merge::AgentState;
    app.status
        .nodes
        .iter()
        .map(|n| {
            let (mark, style) = match &n.state {
                AgentState::Running => ("✓", t.ok()),
                AgentState::Starting => ("…", t.warn()),
                AgentState::Ended(None) => ("■", t.dim()),
                AgentState::Ended(Some(_)) => ("✗", t.bad()),
            };
            let mut seg = vec![
                Span::styled(format!("{mark} "), style),
                Span::styled(n.name.clone(), t.bold()),
                Span::raw(format!(
                    " {} {}/s lost {} clock {:+.1} ms",
                    n.state.word(),
                    si(n.events_per_sec),
                    n.lost,
                    n.offset_ns as f64 / 1e6
                )),
            ];
            if !n.traces_uplink && n.state == AgentState::Running {
                seg.push(Span::styled(" (uplink not traced)", t.warn()));
            }
            seg
        })
        .collect()
}

/// `doctor ✗ proxy_arp ⚠ rp_filter`: the checks that did not pass at the start.
fn doctor_segment(app: &Header, t: &Theme) -> Option<Segment> {
    use crate::model::CheckStatus;
    let checks = &app.info.checks;
    (!checks.is_empty()).then(|| {
        let mut seg = vec![Span::raw("doctor")];
        for c in checks {
            let style = if c.status == CheckStatus::Fail {
                t.bad()
            } else {
                t.warn()
            };
            seg.push(Span::styled(
                format!(" {} {}", c.status.symbol(), c.id.as_str()),
                style,
            ));
        }
        seg
    })
}

/// `probes 5 ✓ 2 ✗ (p)`.
fn probe_counts(app: &Header, t: &Theme) -> Segment {
    let i = &app.info;
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
    probes
}

/// Alarms first (lost, paused, recording), then rate, lost and filter.
fn state_segments(app: &Header, t: &Theme) -> Vec<Segment> {
    let mut state: Vec<Segment> = Vec::new();
    let lost = app.lost;
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
    state.push(vec![Span::raw(match app.mode {
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
    if let Some(i) = app.status.interfaces {
        let mut seg = vec![Span::raw(format!("ifaces {}", i.traced))];
        if i.waiting > 0 {
            seg.push(Span::styled(
                format!(" (+{} attaching)", i.waiting),
                t.notice(),
            ));
        }
        state.push(seg);
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
    state
}

/// `iptables nft · cali-* in legacy ⚠ · drops in legacy`, or `unknown`.
pub fn backends(i: &Info) -> String {
    let mut parts = Vec::new();
    if let Some(b) = &i.iptables {
        parts.push(format!("iptables {b}"));
    }
    match (i.calico_backend, i.iptables) {
        (Some(c), Some(b)) if !c.only_in(b) => parts.push(format!("cali-* in {c} ⚠")),
        (Some(c), _) => parts.push(format!("cali-* in {c}")),
        (None, Some(_)) if i.start_seen => parts.push("no cali-* chains".into()),
        _ => {}
    }
    if !i.backends_seen.is_empty() {
        let v: Vec<&str> = i.backends_seen.iter().map(|b| b.as_str()).collect();
        parts.push(format!("drops in {}", v.join("+")));
    }
    if parts.is_empty() {
        "unknown".into()
    } else {
        parts.join(" · ")
    }
}
