//! The details overlay for a flow: counts, the latest packet's steps with
//! their times, where it was dropped, and the diagnoses about the flow.

use ratatui::text::{Line, Span};

use super::details::{kv, seen};
use super::diagnoses::diag_lines;
use super::{Theme, flow_title, step_style};
use crate::model::{Diagnosis, DropPlace};
use crate::views::tui::model::{FlowStats, Step, StepKind};

/// A flow, its latest packet's steps and the diagnoses about it.
pub(super) struct FlowDetails<'a> {
    pub flow: &'a FlowStats,
    pub steps: Vec<Step>,
    pub diagnoses: Vec<&'a Diagnosis>,
}

pub(super) fn lines(d: &FlowDetails, now: u64, t: &Theme) -> Vec<Line<'static>> {
    let f = d.flow;
    let mut lines = vec![
        kv("flow", flow_title(f), t),
        kv("counts", counts(f), t),
        seen(now, f.first_ts, f.last_ts, t),
        kv("latest", latest_packet(f), t),
    ];
    let t0 = d.steps.iter().find_map(|s| s.ts_ns);
    lines.extend(d.steps.iter().map(|s| step_line(s, t0, t)));
    if let Some(place) = &f.latest.drop {
        lines.extend(drop_lines(place, t));
    }
    for d in &d.diagnoses {
        lines.push(Line::raw(""));
        lines.extend(diag_lines(d, t, 92, 8));
    }
    lines
}

/// `3 packet(s), 1 drop(s)`, and the benign drops when there are any.
fn counts(f: &FlowStats) -> String {
    let mut s = format!("{} packet(s), {} drop(s)", f.packets, f.drops);
    if f.benign > 0 {
        let reason = f.last_benign.as_deref().unwrap_or("?");
        s.push_str(&format!(", {} benign ({reason})", f.benign));
    }
    s
}

/// The latest packet: its ICMP type if any, IP id and length.
fn latest_packet(f: &FlowStats) -> String {
    let id = &f.latest.id;
    let mut what = Vec::new();
    if let Some(i) = &id.icmp {
        what.push(i.to_string());
    }
    if let Some(i) = id.ip_id {
        what.push(format!("ip id {i}"));
    }
    what.push(format!("{} bytes", id.len));
    what.join(", ")
}

/// A step with its time after the first timed one and its TTL.
fn step_line(s: &Step, t0: Option<u64>, t: &Theme) -> Line<'static> {
    let when = match (s.ts_ns, t0) {
        (Some(ts), Some(t0)) => format!("+{:.6}s", ts.saturating_sub(t0) as f64 / 1e9),
        _ => String::new(),
    };
    let ttl = s.ttl.map(|x| format!("  ttl {x}")).unwrap_or_default();
    let (mark, label) = match s.kind {
        StepKind::Seen => ("  ", s.label.clone()),
        StepKind::Implied => ("  ", format!("{} (implied)", s.label)),
        StepKind::Failed => ("✗ ", s.label.clone()),
        StepKind::Missed => ("  ", format!("never reached {}", s.label)),
    };
    let style = step_style(s.kind, t);
    Line::from(vec![
        Span::styled(format!("  {mark}{when:>10}  "), style),
        Span::styled(label, style),
        Span::styled(ttl, t.dim()),
    ])
}

/// Where and why it was dropped, and the netfilter rule if known.
fn drop_lines(d: &DropPlace, t: &Theme) -> Vec<Line<'static>> {
    let mut lines = vec![kv("dropped", d.kernel(), t)];
    if let Some(nf) = &d.netfilter {
        let facts = format!("{} ({})", nf.facts(), nf.attribution);
        lines.push(kv("netfilter", facts, t));
    }
    lines
}
