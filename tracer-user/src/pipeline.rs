//! Kernel events in, records out: naming, per-packet journeys, diagnoses.
//! Live tracing and replay feed the same pipeline.

use std::net::{IpAddr, Ipv4Addr};

use tracer_common::{Event, dir, filter::FilterProg, kind, l3};

use crate::correlation::{Journeys, PacketKey, arp::ArpWatch};
use crate::diagnosis::{Diagnoser, classify};
use crate::events::facts::Environment;
use crate::events::records::{
    Detail, DropRecord, Flow, Hop, NetfilterInfo, PacketRecord, Record, Stage,
};
use crate::events::{Input, dst_ip, src_ip};

const MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
pub struct Options {
    /// Emit a `packet` record for every tc observation.
    pub packets: bool,
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
            filter: None,
            arp_window_ns: 1000 * MS,
            diagnosis_interval_ns: 1000 * MS,
            max_journeys: 65_536,
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
}

impl Pipeline {
    pub fn new(env: Environment, opts: Options) -> Self {
        Self {
            env,
            journeys: Journeys::new(opts.max_journeys, 2000 * MS),
            arp: ArpWatch::new(opts.arp_window_ns),
            diagnoser: Diagnoser::new(opts.diagnosis_interval_ns),
            opts,
            now: 0,
            last_housekeeping: 0,
            counts: Counts::default(),
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn set_filter(&mut self, filter: Option<FilterProg>) {
        self.opts.filter = filter;
    }

    pub fn process(&mut self, input: &Input, out: &mut Vec<Record>) {
        match input {
            Input::Event(ev) => {
                self.now = self.now.max(ev.ts_ns);
                if self
                    .opts
                    .filter
                    .as_ref()
                    .is_none_or(|f| tracer_common::filter::matches(f, &ev.pkt))
                {
                    self.counts.events += 1;
                    match ev.kind {
                        kind::TC => self.on_tc(ev, out),
                        kind::DROP => self.on_drop(ev, out),
                        _ => {}
                    }
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
        self.diagnoser.flush(self.now, true, out);
    }

    fn housekeeping(&mut self, out: &mut Vec<Record>) {
        self.last_housekeeping = self.now;
        for u in self.arp.expired(self.now) {
            let ifname = self
                .ifname(self.env.facts.netns, u.ifindex)
                .unwrap_or_else(|| format!("if{}", u.ifindex));
            self.diagnoser
                .on_unanswered_arp(&u, &ifname, &mut self.env, out);
        }
        self.journeys.expire(self.now);
        self.diagnoser.flush(self.now, false, out);
    }

    fn ifname(&self, netns: u32, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        self.env.facts.ifname(netns, ifindex).map(str::to_string)
    }

    fn on_tc(&mut self, ev: &Event, out: &mut Vec<Record>) {
        self.counts.packets += 1;
        let p = &ev.pkt;
        let ifname = self.ifname(ev.netns, ev.ifindex);
        let direction = if ev.dir == dir::INGRESS {
            "ingress"
        } else {
            "egress"
        };
        if p.l3 == l3::ARP {
            let (s, t) = (
                Ipv4Addr::new(p.src[0], p.src[1], p.src[2], p.src[3]),
                Ipv4Addr::new(p.dst[0], p.dst[1], p.dst[2], p.dst[3]),
            );
            let is_cali = ifname.as_deref().is_some_and(|n| n.starts_with("cali"));
            match (p.arp_op, ev.dir) {
                (1, dir::INGRESS) if is_cali => self.arp.request(ev.ts_ns, ev.ifindex, s, t),
                (2, dir::EGRESS) => self.arp.reply(ev.ifindex, s),
                _ => {}
            }
        }
        if let Some(key) = PacketKey::of(p) {
            let hop = Hop {
                ts_ns: ev.ts_ns,
                netns: ev.netns,
                ifname: ifname.clone(),
                dir: direction,
                ttl: Some(p.ttl),
            };
            self.journeys.observe(key, hop);
        }
        if self.opts.packets {
            out.push(Record::Packet(PacketRecord {
                ts_ns: ev.ts_ns,
                netns: ev.netns,
                ifname,
                dir: direction,
                flow: Flow::of(p),
                detail: Detail::of(p),
            }));
        }
    }

    fn on_drop(&mut self, ev: &Event, out: &mut Vec<Record>) {
        let location = self.env.symbol(ev.location);
        if classify::is_not_a_drop(location.as_deref()) {
            return;
        }
        self.counts.drops += 1;
        let reason = self.env.facts.reason_name(ev.reason);
        let stage = classify::stage(&reason, location.as_deref());
        let journey = PacketKey::of(&ev.pkt)
            .map(|k| self.journeys.get(&k).to_vec())
            .unwrap_or_default();
        let netfilter = (stage == Stage::Netfilter).then(|| NetfilterInfo {
            backend: classify::netfilter_backend(location.as_deref()).map(str::to_string),
            table: None,
            chain: None,
            hook: self.infer_hook(ev, &journey),
            rule: None,
            attribution: "inferred",
        });
        let pod = self.env.facts.pods.get(&ev.netns).map(|p| p.name.clone());
        let record = DropRecord {
            ts_ns: ev.ts_ns,
            netns: ev.netns,
            ifname: self.ifname(ev.netns, ev.ifindex),
            flow: Flow::of(&ev.pkt),
            reason,
            location,
            stage,
            netfilter,
            detail: Detail::of(&ev.pkt),
            pod,
            journey,
        };
        // The drop goes out before the diagnosis it may give rise to.
        let mut diagnoses = Vec::new();
        self.diagnoser
            .on_drop(&record, &mut self.env, &mut diagnoses);
        out.push(Record::Drop(record));
        out.append(&mut diagnoses);
    }

    /// Netfilter hook of a drop in this node's namespace, from addresses:
    /// to a local address is INPUT, from one is OUTPUT, otherwise FORWARD.
    fn infer_hook(&self, ev: &Event, journey: &[Hop]) -> Option<String> {
        if ev.netns != self.env.facts.netns {
            return None;
        }
        let local =
            |ip: Option<IpAddr>| ip.is_some_and(|a| self.env.facts.local_addrs.contains(&a));
        let hook = if local(dst_ip(&ev.pkt)) {
            "INPUT"
        } else if local(src_ip(&ev.pkt)) && journey.iter().all(|h| h.dir != "ingress") {
            "OUTPUT"
        } else {
            "FORWARD"
        };
        Some(hook.into())
    }
}
