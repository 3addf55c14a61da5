//! Kernel events in, records out: naming, per-packet journeys, diagnoses.
//! Live tracing and replay feed the same pipeline.
//!
//! - [`packets`]: tc sightings, netfilter verdicts and link points become
//!   journey points (and `packet`/`verdict` records).
//! - [`drops`]: a drop gets its reason, stage, netfilter place and journey,
//!   waits for the rule counters where they can name the rule, and goes to
//!   the diagnoser unless it is benign (no fault of pod traffic: marked,
//!   counted by reason, and left for the views to show or not).

mod drops;
mod packets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use tracer_common::{Kind, filter::FilterProg};

use crate::correlation::{Journeys, PacketKey, arp::ArpWatch};
use crate::diagnosis::Diagnoser;
use crate::events::Input;
use crate::facts::Environment;
use crate::model::{DropRecord, Family, Record};
use crate::netfilter::Inventory;

pub use drops::hook_from_points;

const MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct Options {
    /// Emit a `packet` record for every tc observation.
    pub packets: bool,
    /// Emit a `verdict` record for every netfilter verdict.
    pub verdicts: bool,
    /// Applied in userspace (replay; live filtering happens in the kernel).
    pub filter: Option<FilterProg>,
    /// How long an ARP request may wait for its reply.
    pub arp_window_ns: u64,
    /// Minimum time between two updates of the same diagnosis.
    pub diagnosis_interval_ns: u64,
    pub max_journeys: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            packets: true,
            verdicts: false,
            filter: None,
            arp_window_ns: 1000 * MS,
            diagnosis_interval_ns: 1000 * MS,
            max_journeys: 16_384,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub packets: u64,
    pub drops: u64,
}

pub struct Pipeline {
    pub env: Environment,
    opts: Options,
    journeys: Journeys,
    arp: ArpWatch,
    pub diagnoser: Diagnoser,
    now: u64,
    last_housekeeping: u64,
    pub counts: Counts,
    /// Benign drops (no fault of pod traffic) by the kernel's reason.
    pub benign: BTreeMap<String, u64>,
    /// Netfilter drops waiting for the rule counters (and for the verdict of
    /// a table walk that freed the packet itself).
    pending_nf: Vec<PendingDrop>,
    /// Netfilter drops in this node's namespace that no table walk saw
    /// (their hook is a netfilter link point's, or a guess): the links
    /// attach while this grows (see `run::nf_demand`).
    pub nf_drops_inferred: u64,
    /// The counter reading the next one is compared with, and the one before.
    nf_baseline: Option<Inventory>,
    nf_previous: Option<Inventory>,
}

/// A netfilter drop waiting for the rule counters, with its packet's key
/// and the family of the tables that may have dropped it.
struct PendingDrop {
    record: DropRecord,
    key: Option<PacketKey>,
    family: Family,
}

/// How long a netfilter drop may wait for the rule counters to be read.
const NF_ATTRIBUTION_DELAY_NS: u64 = 200 * MS;

impl Pipeline {
    pub fn new(env: Environment, opts: Options) -> Self {
        let nf_baseline = env.facts.netfilter.clone();
        let mut diagnoser = Diagnoser::new(opts.diagnosis_interval_ns);
        diagnoser.cite_checks(&env.facts.checks);
        Self {
            pending_nf: Vec::new(),
            nf_drops_inferred: 0,
            nf_baseline,
            nf_previous: None,
            env,
            journeys: Journeys::new(opts.max_journeys, 2000 * MS),
            arp: ArpWatch::new(opts.arp_window_ns),
            diagnoser,
            opts,
            now: 0,
            last_housekeeping: 0,
            counts: Counts::default(),
            benign: BTreeMap::new(),
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn set_filter(&mut self, filter: Option<FilterProg>) {
        self.opts.filter = filter;
    }

    /// Whether the userspace filter (replay) lets a packet through.
    fn wanted(&self, pkt: &tracer_common::PacketMeta) -> bool {
        self.opts
            .filter
            .as_ref()
            .is_none_or(|f| tracer_common::filter::matches(f, pkt))
    }

    pub fn process(&mut self, input: &Input, out: &mut Vec<Record>) {
        match input {
            Input::Event(ev) => {
                self.now = self.now.max(ev.ts_ns);
                if self.wanted(&ev.pkt) {
                    self.counts.events += 1;
                    match Kind::from_u8(ev.kind) {
                        Some(Kind::Tc) => self.on_tc(ev, None, out),
                        Some(Kind::Drop) => self.on_drop(ev, out),
                        // Decoded as the other inputs, or not a kind at all.
                        Some(Kind::Verdict | Kind::Hook | Kind::TcEncap) | None => {}
                    }
                }
            }
            Input::Verdict(nf) => {
                self.now = self.now.max(nf.ev.ts_ns);
                if self.wanted(&nf.ev.pkt) {
                    self.counts.events += 1;
                    if Kind::from_u8(nf.ev.kind) == Some(Kind::Hook) {
                        self.on_hook(nf);
                    } else {
                        self.on_verdict(nf, out);
                    }
                }
            }
            Input::Encap(enc) => {
                self.now = self.now.max(enc.ev.ts_ns);
                // As in the kernel: the inner or the outer packet may match.
                if self.wanted(&enc.ev.pkt) || self.wanted(&enc.outer.packet()) {
                    self.counts.events += 1;
                    self.on_tc(&enc.ev, Some(&enc.outer), out);
                }
            }
            Input::Tick(t) => self.now = self.now.max(*t),
        }
        if self.now.saturating_sub(self.last_housekeeping) >= 100 * MS {
            self.housekeeping(out);
        }
    }

    /// End of input: report everything still pending.
    pub fn finish(&mut self, out: &mut Vec<Record>) {
        self.housekeeping(out);
        self.attribute_pending(out);
        self.diagnoser.flush(self.now, true, out);
    }

    fn housekeeping(&mut self, out: &mut Vec<Record>) {
        self.last_housekeeping = self.now;
        if self
            .pending_nf
            .first()
            .is_some_and(|p| self.now.saturating_sub(p.record.ts_ns) >= NF_ATTRIBUTION_DELAY_NS)
        {
            self.attribute_pending(out);
        }
        for u in self.arp.expired(self.now) {
            let ifname = self
                .ifname(self.env.facts.netns, u.ifindex)
                .unwrap_or_else(|| format!("if{}", u.ifindex));
            self.diagnoser
                .on_unanswered_arp(&u, &ifname, &mut self.env, out);
        }
        self.journeys.expire(self.now);
        for r in self.env.wireguard_refusals(self.now) {
            self.diagnoser.on_wireguard_refused(&r, self.now, out);
        }
        self.env.expire_trace();
        self.diagnoser.flush(self.now, false, out);
    }

    fn ifname(&self, netns: u32, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        self.env.facts.ifname(netns, ifindex).map(str::to_string)
    }
}
