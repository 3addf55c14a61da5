//! The TUI's state: fed with records, status and key events, it answers with
//! [`Control`]s for the session. No terminal here; rendering reads it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::model::{DropPoint, FlowKey, FlowStats, Model};
use crate::model::{Backend, CalicoPlacement};
use crate::model::{Diagnosis, ProbeStatus, Record, Start, Unavailable};

mod keys;
use crate::views::{Control, Status};

/// Live tracing or a replayed file.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Live,
    Replay { file: String },
}

/// What the Start record (and later records) told about the node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Info {
    pub node: Option<String>,
    pub kernel: Option<String>,
    pub netns: Option<u32>,
    pub interfaces: Vec<String>,
    pub probes_attached: Vec<ProbeStatus>,
    pub probes_unavailable: Vec<Unavailable>,
    /// The backend of the node's `iptables` command.
    pub iptables: Option<Backend>,
    /// A Start record has been seen.
    pub start_seen: bool,
    /// iptables backends seen dropping packets.
    pub backends_seen: BTreeSet<Backend>,
    /// Where Calico's chains are (`legacy`, `nft`, `both`), when known.
    pub calico_backend: Option<CalicoPlacement>,
    /// Lost events reported by the final stats.
    pub final_lost: Option<u64>,
    /// `calitrace doctor`'s checks that warned or failed at the start.
    pub checks: Vec<crate::model::Check>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Flows,
    DropPoints,
    Diagnoses,
}

impl Focus {
    fn next(self) -> Self {
        match self {
            Focus::Flows => Focus::DropPoints,
            Focus::DropPoints => Focus::Diagnoses,
            Focus::Diagnoses => Focus::Flows,
        }
    }

    fn prev(self) -> Self {
        self.next().next()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Flows with recent drops first, then the most recently seen.
    RecentDrops,
    Drops,
    Packets,
    LastSeen,
    Address,
}

impl Sort {
    pub fn label(self) -> &'static str {
        match self {
            Sort::RecentDrops => "recent drops",
            Sort::Drops => "drops",
            Sort::Packets => "packets",
            Sort::LastSeen => "last seen",
            Sort::Address => "address",
        }
    }

    fn next(self) -> Self {
        match self {
            Sort::RecentDrops => Sort::Drops,
            Sort::Drops => Sort::Packets,
            Sort::Packets => Sort::LastSeen,
            Sort::LastSeen => Sort::Address,
            Sort::Address => Sort::RecentDrops,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    Details { scroll: u16 },
    Probes,
}

/// The filter being typed after `/`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FilterEdit {
    pub text: String,
    /// Cursor, in characters.
    pub cursor: usize,
    /// Character position and message of the last error.
    pub error: Option<(usize, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub text: String,
    pub error: bool,
}

/// Makes the time part of a recording's default file name.
pub type Stamp = fn() -> String;

pub struct App {
    pub mode: Mode,
    pub info: Info,
    model: Model,
    /// What the view shows while paused (live); the model goes on counting.
    frozen: Option<Model>,
    pub status: Status,
    /// Records the view had no time for (dropped, oldest first, under a flood).
    pub ui_skipped: u64,
    /// Live: the session has sent no status for a while (busy); the numbers
    /// shown are older than they look.
    pub status_stale: bool,
    pub focus: Focus,
    pub sort: Sort,
    /// Benign drops are shown (dimmed): `b`, or `--all-drops`.
    pub show_benign: bool,
    /// Link-local control flows (MLD, neighbour discovery to `ff02::/16`)
    /// are in the flow list (`m`); hidden by default.
    pub show_control: bool,
    selected_flow: Option<FlowKey>,
    selected_drop: usize,
    selected_diag: usize,
    pub overlay: Overlay,
    pub edit: Option<FilterEdit>,
    pub paused: bool,
    pub message: Option<Message>,
    pub color: bool,
    pub stamp: Stamp,
    /// Something changed since the last frame.
    pub dirty: bool,
    pub quit: bool,
    outbox: Vec<Control>,
}

/// Whether the environment asks for no colour (<https://no-color.org>).
pub fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl App {
    pub fn new(mode: Mode) -> Self {
        App {
            mode,
            info: Info::default(),
            model: Model::default(),
            frozen: None,
            status: Status::default(),
            ui_skipped: 0,
            status_stale: false,
            focus: Focus::Flows,
            sort: Sort::RecentDrops,
            show_benign: false,
            show_control: false,
            selected_flow: None,
            selected_drop: 0,
            selected_diag: 0,
            overlay: Overlay::None,
            edit: None,
            paused: false,
            message: None,
            color: !no_color_env(),
            stamp: crate::time::utc_stamp,
            dirty: true,
            quit: false,
            outbox: Vec::new(),
        }
    }

    pub fn is_replay(&self) -> bool {
        matches!(self.mode, Mode::Replay { .. })
    }

    /// What the view shows: the frozen copy while paused, else the live model.
    pub fn shown(&self) -> &Model {
        self.frozen.as_ref().unwrap_or(&self.model)
    }

    pub fn take_controls(&mut self) -> Vec<Control> {
        std::mem::take(&mut self.outbox)
    }

    // ------------------------------------------------------------ input: records

    pub fn ingest(&mut self, records: &[Record]) {
        for r in records {
            self.ingest_one(r);
        }
        if !records.is_empty() && self.frozen.is_none() {
            self.dirty = true;
        }
    }

    fn ingest_one(&mut self, r: &Record) {
        match r {
            Record::Start(s) => {
                self.on_start(s);
                self.dirty = true;
            }
            Record::Packet(p) => self.model.on_packet(p, self.info.netns),
            Record::Verdict(v) => self.model.on_verdict(v),
            Record::Drop(d) => {
                if let Some(b) = d.netfilter.as_ref().and_then(|n| n.backend) {
                    self.info.backends_seen.insert(b);
                }
                self.model.on_drop(d);
            }
            Record::Diagnosis(d) => {
                if let Some(c) = d.calico_backend {
                    self.info.calico_backend = Some(c);
                }
                if let Some(b) = d.backend {
                    self.info.backends_seen.insert(b);
                }
                self.model.on_diagnosis(d);
                self.dirty = true;
            }
            // Stats, and whatever kinds of record come later.
            other => {
                if let Record::Stats(s) = other {
                    self.info.final_lost = Some(s.lost);
                    self.dirty = true;
                }
            }
        }
    }

    fn on_start(&mut self, s: &Start) {
        self.info.node = Some(s.node.clone());
        self.info.kernel = Some(s.kernel.clone());
        self.info.netns = Some(s.netns);
        self.info.interfaces = s.interfaces.clone();
        self.info.probes_attached = s.probes_attached.clone();
        self.info.probes_unavailable = s.probes_unavailable.clone();
        self.info.iptables = s.iptables;
        self.info.checks = s.checks.clone();
        if s.calico_chains.is_some() {
            self.info.calico_backend = s.calico_chains;
        }
        self.info.start_seen = true;
        if self.status.filter.is_empty() {
            self.status.filter = s.filter.clone();
        }
    }

    pub fn set_status(&mut self, s: Status) {
        if s == self.status {
            return;
        }
        if s.error.is_some() && s.error != self.status.error {
            self.message = Some(Message {
                text: s.error.clone().unwrap_or_default(),
                error: true,
            });
        }
        self.status = s;
        self.dirty = true;
    }

    /// The clock moves on without records (sparklines scroll, drops age).
    pub fn tick(&mut self, now_ns: u64) {
        let before = self.model.now_ns / super::model::SEC;
        self.model.now_ns = self.model.now_ns.max(now_ns);
        if self.frozen.is_none() && self.model.now_ns / super::model::SEC != before {
            self.dirty = true;
        }
    }

    /// Link-local control flows left out of the flow list.
    pub fn hidden_control_flows(&self) -> usize {
        if self.show_control {
            return 0;
        }
        self.shown()
            .flows
            .values()
            .map(|f| &**f)
            .filter(|f| f.packets > 0 || f.drops > 0 || self.show_benign)
            .filter(|f| f.link_local_control)
            .count()
    }

    pub fn lost(&self) -> u64 {
        self.status.lost.max(self.info.final_lost.unwrap_or(0))
    }

    // ------------------------------------------------------------ rows

    pub fn flow_rows(&self) -> Vec<&FlowStats> {
        let m = self.shown();
        let now = m.now_ns;
        // A flow known only from benign drops is shown with them.
        let mut rows: Vec<&FlowStats> = m
            .flows
            .values()
            .map(|f| &**f)
            .filter(|f| f.packets > 0 || f.drops > 0 || self.show_benign)
            .filter(|f| self.show_control || !f.link_local_control)
            .collect();
        match self.sort {
            Sort::RecentDrops => rows.sort_by(|a, b| {
                let ra = a.recently_dropped(now);
                let rb = b.recently_dropped(now);
                rb.cmp(&ra)
                    .then_with(|| {
                        if ra && rb {
                            b.last_drop_ts.cmp(&a.last_drop_ts)
                        } else {
                            std::cmp::Ordering::Equal
                        }
                    })
                    .then(b.last_ts.cmp(&a.last_ts))
                    .then_with(|| a.key.cmp(&b.key))
            }),
            Sort::Drops => rows.sort_by(|a, b| {
                b.drops
                    .cmp(&a.drops)
                    .then(b.last_ts.cmp(&a.last_ts))
                    .then_with(|| a.key.cmp(&b.key))
            }),
            Sort::Packets => rows.sort_by(|a, b| {
                b.packets
                    .cmp(&a.packets)
                    .then(b.last_ts.cmp(&a.last_ts))
                    .then_with(|| a.key.cmp(&b.key))
            }),
            Sort::LastSeen => {
                rows.sort_by(|a, b| b.last_ts.cmp(&a.last_ts).then_with(|| a.key.cmp(&b.key)))
            }
            Sort::Address => rows.sort_by(|a, b| a.key.cmp(&b.key)),
        }
        rows
    }

    pub fn drop_rows(&self) -> Vec<&DropPoint> {
        let mut rows: Vec<&DropPoint> = self
            .shown()
            .drop_points
            .values()
            .filter(|p| p.key.benign.is_none() || self.show_benign)
            .collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        rows
    }

    pub fn diag_rows(&self) -> Vec<&Diagnosis> {
        let mut rows: Vec<&Diagnosis> = self.shown().diagnoses.iter().collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.first_ts_ns.cmp(&b.first_ts_ns))
        });
        rows
    }

    /// Index of the selected flow in [`App::flow_rows`] (the first when none).
    pub fn flow_index(&self, rows: &[&FlowStats]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        let i = self
            .selected_flow
            .as_ref()
            .and_then(|k| rows.iter().position(|f| &f.key == k));
        Some(i.unwrap_or(0))
    }

    pub fn selected_flow(&self) -> Option<&FlowStats> {
        let rows = self.flow_rows();
        let i = self.flow_index(&rows)?;
        Some(rows[i])
    }

    pub fn drop_index(&self) -> Option<usize> {
        let n = self.drop_rows().len();
        (n > 0).then(|| self.selected_drop.min(n - 1))
    }

    pub fn diag_index(&self) -> Option<usize> {
        let n = self.shown().diagnoses.len();
        (n > 0).then(|| self.selected_diag.min(n - 1))
    }

    /// The default file for `r`: `calitrace-<node>-<time>.calitrace` here.
    pub fn recording_path(&self) -> PathBuf {
        let node: String = self
            .info
            .node
            .as_deref()
            .unwrap_or("node")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from(format!("calitrace-{node}-{}.calitrace", (self.stamp)()))
    }
}
