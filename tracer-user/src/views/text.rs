//! `--output text`: one readable line per record.

use std::io::Write;

use super::View;
use crate::events::records::{Detail, Record};

pub struct TextView<W: Write> {
    out: W,
    first_ts: Option<u64>,
}

impl<W: Write> TextView<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            first_ts: None,
        }
    }

    fn clock(&mut self, ts: u64) -> String {
        let first = *self.first_ts.get_or_insert(ts);
        let d = ts.saturating_sub(first);
        format!("[{:4}.{:06}]", d / 1_000_000_000, (d / 1000) % 1_000_000)
    }
}

fn detail(d: &Detail) -> String {
    let mut parts = Vec::new();
    if let Some(a) = d.arp {
        parts.push(format!("arp {a}"));
    }
    if let Some(i) = &d.icmp {
        parts.push(i.clone());
    }
    if let Some(t) = d.ttl {
        parts.push(format!("ttl {t}"));
    }
    parts.push(format!("len {}", d.len));
    parts.join(" ")
}

/// One line per record (diagnoses add an indented hint line).
pub fn format(r: &Record, clock: &str) -> String {
    match r {
        Record::Start(s) => format!(
            "calitrace on {} (kernel {}), netns {}: {} interface(s) [{}], filter: {}",
            s.node,
            s.kernel,
            s.netns,
            s.interfaces.len(),
            s.interfaces.join(" "),
            if s.filter.is_empty() {
                "none"
            } else {
                &s.filter
            }
        ),
        Record::Packet(p) => format!(
            "{clock} {:<14} {:<7} {} {}",
            p.ifname.as_deref().unwrap_or("?"),
            p.dir,
            p.flow.describe(),
            detail(&p.detail)
        ),
        Record::Drop(d) => {
            let mut s = format!(
                "{clock} DROP {} {}: {} in {} (stage {})",
                d.flow.describe(),
                detail(&d.detail),
                d.reason,
                d.location.as_deref().unwrap_or("?"),
                d.stage.as_str()
            );
            if let Some(nf) = &d.netfilter {
                let known: Vec<String> = [
                    ("backend", &nf.backend),
                    ("table", &nf.table),
                    ("chain", &nf.chain),
                    ("hook", &nf.hook),
                    ("rule", &nf.rule),
                ]
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
                .collect();
                s.push_str(&format!(" [{}; {}]", known.join(", "), nf.attribution));
            }
            if let Some(i) = &d.ifname {
                s.push_str(&format!(" dev {i}"));
            }
            if let Some(p) = &d.pod {
                s.push_str(&format!(" in pod {p}"));
            }
            if !d.journey.is_empty() {
                let path: Vec<String> = d
                    .journey
                    .iter()
                    .map(|h| match (&h.netfilter, &h.verdict) {
                        _ if h.point.is_some() => h.point_label().unwrap_or_default(),
                        (Some(nf), Some(v)) => format!(
                            "{} {} {}: {v}",
                            nf.hook.as_deref().unwrap_or("?"),
                            nf.backend.as_deref().unwrap_or("?"),
                            nf.table.as_deref().unwrap_or("?")
                        ),
                        _ => format!("{} {}", h.ifname.as_deref().unwrap_or("?"), h.dir),
                    })
                    .collect();
                s.push_str(&format!(" after {}", path.join(" -> ")));
            }
            s
        }
        Record::Verdict(v) => format!(
            "{clock} VERDICT {} {}: {} {} {} {}: {}",
            v.flow.describe(),
            detail(&v.detail),
            v.netfilter.backend.as_deref().unwrap_or("?"),
            v.netfilter.table.as_deref().unwrap_or("?"),
            v.netfilter.chain.as_deref().unwrap_or(""),
            v.netfilter.hook.as_deref().unwrap_or("?"),
            v.verdict
        ),
        Record::Diagnosis(d) => format!(
            "DIAGNOSIS {} (x{}): {}\n    hint: {}",
            d.code, d.count, d.summary, d.hint
        ),
        Record::Stats(s) => {
            let ev: Vec<String> = s.events.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let un: Vec<String> = s
                .probes_unavailable
                .iter()
                .map(|u| format!("{} ({})", u.name, u.reason))
                .collect();
            format!(
                "stats: {:.1}s, events {}, lost {}, {} probe(s) attached, unavailable: {}",
                s.duration_s,
                ev.join(" "),
                s.lost,
                s.probes_attached.len(),
                if un.is_empty() {
                    "none".into()
                } else {
                    un.join("; ")
                }
            )
        }
    }
}

impl<W: Write> View for TextView<W> {
    fn record(&mut self, r: &Record) -> std::io::Result<()> {
        let clock = match r {
            Record::Packet(p) => self.clock(p.ts_ns),
            Record::Drop(d) => self.clock(d.ts_ns),
            Record::Verdict(v) => self.clock(v.ts_ns),
            _ => String::new(),
        };
        writeln!(self.out, "{}", format(r, &clock))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
