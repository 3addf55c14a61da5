//! The details overlay (Enter): everything known about the selected flow,
//! drop point or diagnosis, as `key  value` lines.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use super::{Theme, ago, flow_details, popup, sparkline};
use crate::model::Diagnosis;
use crate::views::tui::model::DropPoint;

/// What the details overlay is about: the selection of the focused panel.
pub(super) enum Selected<'a> {
    Flow(Option<flow_details::FlowDetails<'a>>),
    DropPoint(Option<&'a DropPoint>),
    Diagnosis(Option<&'a Diagnosis>),
}

pub(super) fn draw(frame: &mut Frame, area: Rect, s: &Selected, now: u64, t: &Theme, scroll: u16) {
    let (title, lines) = match s {
        Selected::Flow(f) => (
            "flow",
            match f {
                None => vec![Line::raw("no flow selected")],
                Some(f) => flow_details::lines(f, now, t),
            },
        ),
        Selected::DropPoint(p) => (
            "drop point",
            match p {
                None => vec![Line::raw("no drop point selected")],
                Some(p) => drop_point_lines(p, now, t),
            },
        ),
        Selected::Diagnosis(d) => (
            "diagnosis",
            match d {
                None => vec![Line::raw("no diagnosis selected")],
                Some(d) => diagnosis_lines(d, now, t),
            },
        ),
    };
    popup::show(frame, area, title, lines, scroll, t);
}

/// The key in bold, padded to line the values up.
pub(super) fn kv(k: &str, v: String, t: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{k:<11}"), t.bold()),
        Span::raw(v),
    ])
}

pub(super) fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "?".into(), T::to_string)
}

/// `seen  first 3.2s ago, last 0.1s ago`.
pub(super) fn seen(now: u64, first: u64, last: u64, t: &Theme) -> Line<'static> {
    kv(
        "seen",
        format!("first {}, last {}", ago(now, first), ago(now, last)),
        t,
    )
}

fn drop_point_lines(p: &DropPoint, now: u64, t: &Theme) -> Vec<Line<'static>> {
    let k = &p.key;
    let series = p.history.series(now, 60);
    let mut lines = vec![
        kv("stage", k.stage.to_string(), t),
        kv("reason", k.reason.clone(), t),
        kv("location", opt(&k.location), t),
    ];
    if let Some(b) = k.benign {
        lines.push(kv(
            "benign",
            format!("{b}: {}, no fault of pod traffic", b.what()),
            t,
        ));
    }
    if let Some(nf) = k.netfilter() {
        lines.push(kv("netfilter", nf.facts(), t));
    }
    lines.extend([
        kv("count", p.count.to_string(), t),
        kv("first", ago(now, p.first_ts), t),
        kv("last", ago(now, p.last_ts), t),
        kv("last 60s", sparkline(&series), t),
        kv("per second", per_second(&series), t),
    ]);
    lines
}

/// The counts of `series` (oldest first, as the sparkline above them), runs
/// of quiet seconds written `0×N`, so that the newest seconds fit the line.
pub(in crate::views::tui) fn per_second(series: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut zeros = 0;
    let flush = |out: &mut Vec<String>, zeros: &mut usize| {
        match *zeros {
            0 => {}
            1 | 2 => out.extend(std::iter::repeat_n("0".to_string(), *zeros)),
            n => out.push(format!("0×{n}")),
        }
        *zeros = 0;
    };
    for &v in series {
        if v == 0 {
            zeros += 1;
        } else {
            flush(&mut out, &mut zeros);
            out.push(v.to_string());
        }
    }
    flush(&mut out, &mut zeros);
    out.join(" ")
}

fn diagnosis_lines(d: &Diagnosis, now: u64, t: &Theme) -> Vec<Line<'static>> {
    let stage = d
        .stage
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "?".into());
    let mut lines = vec![
        kv("code", d.code.to_string(), t),
        kv("count", d.count.to_string(), t),
        kv("stage", stage, t),
        kv("summary", d.summary.clone(), t),
        kv("hint", d.hint.clone(), t),
    ];
    let fields = [
        ("src", d.src.map(|a| a.to_string())),
        ("dst", d.dst.map(|a| a.to_string())),
        ("backend", d.backend.map(|b| b.to_string())),
        ("table", d.table.clone()),
        ("chain", d.chain.clone()),
        ("hook", d.hook.map(|h| h.to_string())),
        ("rule", d.rule.clone()),
        ("calico", d.calico_backend.map(|c| c.to_string())),
        ("ifname", d.ifname.clone()),
        ("target", d.target.clone()),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            lines.push(kv(k, v, t));
        }
    }
    if let Some(a) = d.attribution {
        lines.push(kv("attribution", a.to_string(), t));
    }
    lines.push(seen(now, d.first_ts_ns, d.last_ts_ns, t));
    lines
}
