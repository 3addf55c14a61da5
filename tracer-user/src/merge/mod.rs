//! Several nodes in one view. Each node's stream runs through its own
//! pipeline (its facts, its journeys, its diagnoses); its records are marked
//! with the node and put on one clock ([`clock`]). Pod packets that leave a
//! node's uplink are looked for on the receiving node's uplink
//! ([`underlay`]): those that never arrive, while the receiving node could
//! have seen them, become UNDERLAY_DROP or UNDERLAY_MTU. A drop's journey
//! gains the points its packet passed on the other nodes ([`sightings`]).
//!
//! The same engine serves a live cluster, the replay of a cluster
//! recording, and several single-node recordings replayed together.

pub mod clock;
mod directory;
pub mod interleave;
mod node;
pub mod sightings;
#[cfg(test)]
mod tests;
pub mod underlay;

use std::collections::BTreeMap;
use std::net::IpAddr;

use clock::Clocks;
use directory::Directory;
use node::Node;
pub use node::{AgentState, NodeView};
use sightings::{Identity, Sightings};
use underlay::{Outcome, Send, Sent, Tracker};

use crate::diagnosis::Diagnoser;
use crate::events::Input;
use crate::facts::Fact;
use crate::model::{Dir, DropRecord, Encap, PacketRecord, PodRef, Proto, Record};
use crate::pipeline::Options;
use crate::recording::format::Header;
use crate::recording::reader::Item;

const SEC: u64 = 1_000_000_000;
/// WireGuard's usual UDP port (Calico's wireguard.cali listens on it).
const WIREGUARD_PORT: u16 = 51820;

pub struct Cluster {
    nodes: Vec<Node>,
    directory: Directory,
    clocks: Clocks,
    sightings: Sightings,
    tracker: Tracker,
    diagnoser: Diagnoser,
    opts: Options,
    /// Sends that could not be judged, by why.
    undecided: std::collections::BTreeMap<String, u64>,
    last_flush: u64,
    /// Each node's watermark when sends were last judged.
    judged_at: Vec<u64>,
    /// A node pipeline's records of one input, before they are absorbed.
    scratch: Vec<Record>,
}

/// Sends are judged each time a node's stream has moved on by this much:
/// often enough for a 1 s window, not for every event.
const JUDGE_EVERY_NS: u64 = 10_000_000;

impl Cluster {
    /// A cluster of nodes by name; `opts` as for a single node's pipeline
    /// (`packets: false` only hides packet records: the merge needs them).
    pub fn new(names: &[String], opts: Options) -> Cluster {
        Cluster {
            nodes: names.iter().map(|n| Node::new(n)).collect(),
            directory: Directory::default(),
            clocks: Clocks::new(names.len()),
            sightings: Sightings::default(),
            tracker: Tracker::default(),
            diagnoser: Diagnoser::new(opts.diagnosis_interval_ns),
            opts,
            undecided: Default::default(),
            last_flush: 0,
            judged_at: vec![0; names.len()],
            scratch: Vec::new(),
        }
    }

    /// Pod names by address known from elsewhere (the Kubernetes API
    /// server); the nodes' own facts come first.
    pub fn add_pod_names(&mut self, names: BTreeMap<IpAddr, PodRef>) {
        self.directory.add_api_names(names);
    }

    /// A node's stream began: its header (facts, clock anchor, interfaces).
    pub fn start(&mut self, n: usize, header: Header, out: &mut Vec<Record>) {
        self.clocks
            .anchor(n, header.start_monotonic_ns, header.start_realtime_ns);
        let mut start = header.start();
        let opts = Options {
            packets: true,
            max_journeys: journeys_per_node(self.opts.max_journeys, self.nodes.len()),
            ..self.opts.clone()
        };
        let node = &mut self.nodes[n];
        node.begin(header, opts);
        if let Some(f) = node.facts() {
            self.directory.add(n, f);
        }
        start.node = node.name.clone();
        out.push(Record::Start(start));
    }

    /// One item of node `n`'s stream.
    pub fn item(&mut self, n: usize, item: Item, out: &mut Vec<Record>) {
        match item {
            Item::Fact(f) => {
                if let Fact::Lost { ts_ns, lost } = &f {
                    let at = self.clocks.to_common(n, *ts_ns);
                    self.nodes[n].losses.push((at, *lost));
                }
                if let Some(p) = &mut self.nodes[n].pipeline {
                    p.env.apply(&f);
                }
            }
            Item::End(e) => self.nodes[n].end = Some(e),
            Item::Input(input) => {
                let from = out.len();
                self.input(n, &input, out);
                self.name_diagnosis_pods(&mut out[from..]);
            }
        }
    }

    /// One event of node `n`, through its pipeline and the merge.
    fn input(&mut self, n: usize, input: &Input, out: &mut Vec<Record>) {
        let Some(p) = &mut self.nodes[n].pipeline else {
            return;
        };
        // Reused: most inputs make one record.
        let mut records = std::mem::take(&mut self.scratch);
        p.process(input, &mut records);
        let now = self.clocks.to_common(n, p.now());
        let node = &mut self.nodes[n];
        node.events += 1;
        node.first_ts.get_or_insert(now);
        node.watermark = node.watermark.max(now);
        let moved = node.watermark >= self.judged_at[n] + JUDGE_EVERY_NS;
        for r in records.drain(..) {
            self.absorb(n, r, out);
        }
        self.scratch = records;
        if moved {
            self.judge(out);
        }
    }

    /// Node `n`'s stream ended (its agent exited, or its file is read).
    pub fn ended(&mut self, n: usize, why: Option<String>, out: &mut Vec<Record>) {
        let from = out.len();
        self.end_node(n, why, out);
        self.name_diagnosis_pods(&mut out[from..]);
    }

    fn end_node(&mut self, n: usize, why: Option<String>, out: &mut Vec<Record>) {
        let node = &mut self.nodes[n];
        if let Some(p) = &mut node.pipeline {
            let mut records = Vec::new();
            p.finish(&mut records);
            for r in records {
                self.absorb(n, r, out);
            }
        }
        let node = &mut self.nodes[n];
        node.state = AgentState::Ended(why);
        out.push(Record::Stats(node.stats()));
    }

    /// No more input from anyone: what waits is reported or given up.
    pub fn finish(&mut self, out: &mut Vec<Record>) {
        let from = out.len();
        self.finish_all(out);
        self.name_diagnosis_pods(&mut out[from..]);
    }

    fn finish_all(&mut self, out: &mut Vec<Record>) {
        for n in 0..self.nodes.len() {
            if !matches!(self.nodes[n].state, AgentState::Ended(_)) {
                self.ended(n, None, out);
            }
        }
        self.judge(out);
        let left = self.tracker.drain();
        if left > 0 {
            *self
                .undecided
                .entry("the stream ended before their window did".into())
                .or_default() += left as u64;
        }
        let now = self.nodes.iter().map(|n| n.watermark).max().unwrap_or(0);
        self.diagnoser.flush(now, true, out);
    }

    /// The nodes for a view's header.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| n.view(self.clocks.offset(i)))
            .collect()
    }

    /// Node `n`'s time `ts` on the common clock.
    pub fn to_common(&self, n: usize, ts: u64) -> u64 {
        self.clocks.to_common(n, ts)
    }

    /// Sends that could not be judged, and why.
    pub fn undecided(&self) -> &std::collections::BTreeMap<String, u64> {
        &self.undecided
    }

    /// A record of node `n`: on the common clock, marked with the node, its
    /// packets followed across nodes.
    fn absorb(&mut self, n: usize, mut r: Record, out: &mut Vec<Record>) {
        let offset = self.clocks.offset(n);
        shift(&mut r, offset);
        r.set_node(&self.nodes[n].name);
        // Packets that are not shown (--drops-only) are only followed: their
        // pods need no names.
        if self.opts.packets || !matches!(r, Record::Packet(_)) {
            self.name_pods(&mut r);
        }
        if let Record::Packet(p) = r {
            let id = Identity::of(&p.flow, &p.detail);
            self.follow(n, &p, id, offset);
            if self.opts.packets {
                self.sightings.add(id, p.hop());
                out.push(Record::Packet(p));
            } else {
                self.sightings.add(id, p.into_hop());
            }
            return;
        }
        match &mut r {
            Record::Drop(d) => self.merge_journey(d),
            Record::Verdict(v) => {
                self.sightings
                    .add(Identity::of(&v.flow, &v.detail), v.hop());
            }
            _ => {}
        }
        out.push(r);
    }

    /// Pods of other nodes are named by the node they run on.
    fn name_pods(&self, r: &mut Record) {
        let flow = match r {
            Record::Packet(p) => &mut p.flow,
            Record::Drop(d) => &mut d.flow,
            Record::Verdict(v) => &mut v.flow,
            _ => return,
        };
        self.directory.name_pods(flow);
    }

    /// Flow diagnoses made by the merge (the underlay's) name their pods too.
    fn name_diagnosis_pods(&self, records: &mut [Record]) {
        if !self.directory.has_api_names() {
            return;
        }
        for r in records {
            if let Record::Diagnosis(d) = r {
                d.src_pod = d.src_pod.take().or_else(|| self.directory.api_name(&d.src));
                d.dst_pod = d.dst_pod.take().or_else(|| self.directory.api_name(&d.dst));
            }
        }
    }

    /// A packet seen on node `n` (the caller remembers it for journeys): on
    /// the uplink, a send to another node or an arrival from one.
    fn follow(&mut self, n: usize, p: &PacketRecord, id: Identity, offset: i64) {
        if !self.nodes[n].is_uplink(p) {
            return;
        }
        let raw_ts = (p.ts_ns as i64 + offset).max(0) as u64;
        match p.dir {
            Dir::Egress => {
                let Some(s) = self.send_of(n, p, id, raw_ts) else {
                    return;
                };
                let (to, sent) = (s.to, s.raw_ts);
                match self.tracker.send(s) {
                    (Sent::Arrived { raw_arrival }, _) => {
                        self.clocks.transit(n, to, sent, raw_arrival)
                    }
                    (Sent::Waiting, Some(o)) => self.count(&o),
                    (Sent::Waiting, None) => {}
                }
            }
            Dir::Ingress => {
                if let Some(s) = self.tracker.arrive(n, &id, p.ts_ns, raw_ts) {
                    self.clocks.transit(s.from, n, s.raw_ts, raw_ts);
                }
            }
            Dir::Netfilter => {}
        }
    }

    /// A pod packet leaving node `n` for the node its destination lives on
    /// (for an encapsulated one, the node its outer destination belongs to);
    /// or a WireGuard packet to another node, known by its outer headers only.
    fn send_of(&self, n: usize, p: &PacketRecord, id: Identity, raw_ts: u64) -> Option<Send> {
        let dst: IpAddr = p.flow.dst.as_deref()?.parse().ok()?;
        let node_of = |ip: IpAddr| self.directory.local_node(ip);
        let outer_dst: Option<IpAddr> = p
            .outer
            .as_ref()
            .and_then(|o| o.dst.as_deref()?.parse().ok());
        let wireguard = p.outer.is_none()
            && p.flow.proto == Some(Proto::Udp)
            && p.flow.dport == Some(WIREGUARD_PORT);
        let to = match (outer_dst, wireguard) {
            (Some(o), _) => node_of(o),
            (None, true) => node_of(dst),
            (None, false) => self.directory.pod_node(dst),
        }?;
        if to == n {
            return None;
        }
        let from = &self.nodes[n];
        let mut path = underlay::path(&from.name, &self.nodes[to].name, Encap::None);
        let wire_len = match &p.outer {
            Some(o) => {
                path.encap = o.encap;
                path.outer_src = o.src.clone();
                path.outer_dst = o.dst.clone();
                path.outer_proto = o.proto;
                path.outer_dport = o.dport;
                o.len
            }
            None if wireguard => {
                // Encrypted: the packet is its outer header; matched by that,
                // its IP ID, its size and the time it takes.
                path.encap = Encap::Wireguard;
                path.outer_src = p.flow.src.clone();
                path.outer_dst = p.flow.dst.clone();
                path.outer_proto = p.flow.proto;
                path.outer_dport = p.flow.dport;
                p.detail.len
            }
            None => {
                path.encap = from.encap_towards(dst);
                p.detail.len + encap_overhead(path.encap)
            }
        };
        Some(Send {
            id,
            from: n,
            to,
            ts: p.ts_ns,
            raw_ts,
            wire_len,
            path,
        })
    }

    /// The points a dropped packet passed on other nodes come first.
    fn merge_journey(&self, d: &mut DropRecord) {
        let node = d.node.clone().unwrap_or_default();
        let id = Identity::of(&d.flow, &d.detail);
        let mut before = self.sightings.elsewhere(&id, &node, d.ts_ns);
        if before.is_empty() {
            return;
        }
        before.sort_by_key(|h| h.ts_ns);
        before.append(&mut d.journey);
        d.journey = before;
    }

    /// Judges the sends whose window has passed on their receiver.
    fn judge(&mut self, out: &mut Vec<Record>) {
        let now: Vec<u64> = self.nodes.iter().map(|n| n.watermark).collect();
        self.judged_at.clone_from(&now);
        let nodes = &self.nodes;
        let outcomes = self.tracker.expire(&now, |s| nodes[s.to].witness(s.ts));
        for o in outcomes {
            if let Outcome::Lost(l, ts) = &o {
                self.diagnoser.on_underlay_loss(l, *ts, out);
            }
            self.count(&o);
        }
        let latest = now.iter().copied().max().unwrap_or(0);
        if latest.saturating_sub(self.last_flush) >= SEC / 10 {
            self.last_flush = latest;
            self.diagnoser.flush(latest, false, out);
        }
    }

    fn count(&mut self, o: &Outcome) {
        if let Outcome::Undecided(w) = o {
            *self.undecided.entry(w.why_not().to_string()).or_default() += 1;
        }
    }
}

/// Packets whose journey each node's pipeline keeps: a single node's bound
/// up to 8 nodes, then a share of 8 times that, at least 2,048 (some 80 ms
/// of a node at 100k events/s: a packet crosses a node in far less), so
/// that 64 nodes do not hold 64 full tables.
fn journeys_per_node(single: usize, nodes: usize) -> usize {
    (single * 8 / nodes.max(1)).clamp(2_048.min(single), single)
}

/// Bytes an encapsulation adds on the wire.
fn encap_overhead(e: Encap) -> u32 {
    match e {
        Encap::Vxlan => 50,
        Encap::Ipip => 20,
        Encap::Wireguard => 60,
        Encap::None => 0,
    }
}

/// Moves a record's times from its node's clock to the common one.
fn shift(r: &mut Record, offset: i64) {
    let s = |t: &mut u64| *t = (*t as i64 - offset).max(0) as u64;
    match r {
        Record::Packet(p) => s(&mut p.ts_ns),
        Record::Verdict(v) => s(&mut v.ts_ns),
        Record::Drop(d) => {
            s(&mut d.ts_ns);
            d.journey.iter_mut().for_each(|h| s(&mut h.ts_ns));
        }
        Record::Diagnosis(d) => {
            s(&mut d.first_ts_ns);
            s(&mut d.last_ts_ns);
        }
        Record::Start(_) | Record::Stats(_) => {}
    }
}
