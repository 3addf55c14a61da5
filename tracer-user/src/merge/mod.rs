//! Several nodes in one view. Each node's stream runs through its own
//! pipeline (its facts, its journeys, its diagnoses: [`stage`], on the
//! thread that reads the stream where there is one); its records are marked
//! with the node and put on one clock ([`clock`]). Pod packets that leave a
//! node's uplink are looked for on the receiving node's uplink
//! ([`underlay`]): those that never arrive, while the receiving node could
//! have seen them, become UNDERLAY_DROP or UNDERLAY_MTU. A drop's journey
//! gains the points its packet passed on the other nodes ([`sightings`]),
//! once their streams have passed its time (a drop waits up to 1 s for them).
//!
//! The same engine serves a live cluster, the replay of a cluster
//! recording, and several single-node recordings replayed together.

pub mod clock;
mod directory;
pub mod gate;
pub mod interleave;
mod node;
pub mod sightings;
pub mod stage;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_stream;
pub mod underlay;

use std::collections::BTreeMap;
use std::net::IpAddr;

use clock::Clocks;
use directory::Directory;
use node::Node;
pub use node::{AgentState, NodeView};
use sightings::{Identity, NO_IFACE, Names, Sightings};
use stage::{NodeStage, Seen, StageOptions, Staged};
use underlay::{Outcome, Send, Sent, Tracker, Wire};

use crate::diagnosis::Diagnoser;
use crate::facts::Fact;
use crate::model::{At, Dir, DropRecord, Encap, PodRef, Point, Proto, Record};
use crate::pipeline::Options;
use crate::recording::format::Header;
use crate::recording::reader::Item;

/// The merge's maps, looked up for every packet of every node.
pub(crate) use crate::model::FastMap;

const SEC: u64 = 1_000_000_000;
/// WireGuard's usual UDP port (Calico's wireguard.cali listens on it).
const WIREGUARD_PORT: u16 = 51820;

pub struct Cluster {
    nodes: Vec<Node>,
    /// The nodes' names, by their place, and their interfaces'.
    names: Names,
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
    /// A node stage's output for one item, before it is absorbed.
    scratch: Vec<Staged>,
    /// The sends' window passed for some node: judged once the records of
    /// the input that moved it are absorbed.
    judge_due: bool,
    /// Drops (with their node) waiting for the other nodes' streams to pass
    /// their time, so that the points the packet passed there are read
    /// before its journey is put together; in arrival order.
    held: std::collections::VecDeque<(usize, Box<DropRecord>)>,
}

/// A drop waits at most this long (the newest stream's time past its own)
/// for a slower node's stream.
const HOLD_MAX_NS: u64 = SEC;

/// Sends are judged each time a node's stream has moved on by this much:
/// often enough for a 1 s window, not for every event.
const JUDGE_EVERY_NS: u64 = 10_000_000;

impl Cluster {
    /// A cluster of nodes by name; `opts` as for a single node's pipeline
    /// (`packets: false` only hides packet records: the merge needs them).
    pub fn new(names: &[String], opts: Options) -> Cluster {
        Cluster {
            nodes: names.iter().map(|n| Node::new(n)).collect(),
            names: Names {
                nodes: names.to_vec(),
                ifnames: vec![Vec::new(); names.len()],
            },
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
            judge_due: false,
            held: Default::default(),
        }
    }

    /// Pod names by address known from elsewhere (the Kubernetes API
    /// server); the nodes' own facts come first.
    pub fn add_pod_names(&mut self, names: BTreeMap<IpAddr, PodRef>) {
        self.directory.add_api_names(names);
    }

    /// How each node's stage runs ([`stage::read_staged`]).
    /// How far back a drop's journey can reach into the other nodes'
    /// points (`None` before enough packets came to tell): readers are kept
    /// within a quarter of it of each other ([`gate`]).
    pub fn journey_span_ns(&self) -> Option<u64> {
        self.sightings.span_ns()
    }

    pub fn stage_options(&self) -> StageOptions {
        StageOptions {
            pipeline: Options {
                packets: true,
                max_journeys: journeys_per_node(self.opts.max_journeys, self.nodes.len()),
                ..self.opts.clone()
            },
            packets: self.opts.packets,
        }
    }

    /// A node's stream began: its header (facts, clock anchor, interfaces).
    /// Its stage runs here: its items come through [`Cluster::item`].
    pub fn start(&mut self, n: usize, header: Header, out: &mut Vec<Record>) {
        let stage = NodeStage::new(&header, &self.stage_options());
        self.begin(n, header, Some(stage), out);
    }

    /// A node's stream began, its stage running where the stream is read
    /// ([`stage::read_staged`]): what it makes comes through
    /// [`Cluster::staged`].
    pub fn start_staged(&mut self, n: usize, header: Header, out: &mut Vec<Record>) {
        self.begin(n, header, None, out);
    }

    fn begin(&mut self, n: usize, header: Header, stage: Option<NodeStage>, out: &mut Vec<Record>) {
        self.clocks
            .anchor(n, header.start_monotonic_ns, header.start_realtime_ns);
        let mut start = header.start();
        self.directory.add(n, &header.facts);
        let node = &mut self.nodes[n];
        node.begin(header, stage);
        start.node = node.name.clone();
        out.push(Record::Start(start));
    }

    /// One item of node `n`'s stream, for a node whose stage runs here.
    pub fn item(&mut self, n: usize, item: Item, out: &mut Vec<Record>) {
        let mut staged = std::mem::take(&mut self.scratch);
        match (&mut self.nodes[n].stage, item) {
            (Some(stage), item) => stage.item(item, &mut staged),
            // No stream began: only what the merge itself keeps.
            (None, Item::Fact(Fact::Lost { ts_ns, lost })) => {
                staged.push(Staged::Lost { ts_ns, lost })
            }
            (None, Item::End(e)) => staged.push(Staged::End(Box::new(e))),
            (None, _) => {}
        }
        self.staged(n, staged.drain(..), out);
        self.scratch = staged;
    }

    /// What node `n`'s stage made of its next items, in order.
    pub fn staged(
        &mut self,
        n: usize,
        items: impl IntoIterator<Item = Staged>,
        out: &mut Vec<Record>,
    ) {
        let from = out.len();
        for s in items {
            self.absorb_staged(n, s, out);
        }
        self.judge_if_due(out);
        self.name_diagnosis_pods(&mut out[from..]);
    }

    fn absorb_staged(&mut self, n: usize, s: Staged, out: &mut Vec<Record>) {
        match s {
            Staged::Packet(seen) => return self.packet(n, seen, out),
            Staged::Record(r) => return self.absorb(n, *r, out),
            Staged::IfName { id, name } => return self.names.add_ifname(n, id, &name),
            // An input's records are absorbed: judge what its time moved.
            _ => self.judge_if_due(out),
        }
        let node = &mut self.nodes[n];
        match s {
            Staged::Lost { ts_ns, lost } => {
                let at = self.clocks.to_common(n, ts_ns);
                node.losses.push((at, lost));
            }
            Staged::End(e) => node.end = Some(*e),
            Staged::Finished { benign, .. } => node.benign = benign,
            Staged::Step { now } => {
                let now = self.clocks.to_common(n, now);
                node.events += 1;
                node.first_ts.get_or_insert(now);
                node.watermark = node.watermark.max(now);
                // Judged after this input's records (they follow).
                if node.watermark >= self.judged_at[n] + JUDGE_EVERY_NS {
                    self.judge_due = true;
                }
            }
            Staged::Packet(_) | Staged::Record(_) | Staged::IfName { .. } => {}
        }
    }

    fn judge_if_due(&mut self, out: &mut Vec<Record>) {
        if std::mem::take(&mut self.judge_due) {
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
        if let Some(stage) = &mut self.nodes[n].stage {
            let mut staged = Vec::new();
            stage.finish(&mut staged);
            for s in staged {
                self.absorb_staged(n, s, out);
            }
        }
        self.judge_if_due(out);
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
        self.judge_if_due(out);
        for n in 0..self.nodes.len() {
            if !matches!(self.nodes[n].state, AgentState::Ended(_)) {
                self.ended(n, None, out);
            }
        }
        self.judge(out);
        self.release_held(true, out);
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

    /// A packet seen on node `n`: followed across nodes, kept for
    /// journeys, shown where packets are.
    fn packet(&mut self, n: usize, seen: Seen, out: &mut Vec<Record>) {
        let offset = self.clocks.offset(n);
        let ts = shifted(seen.ts_ns, offset);
        self.follow(n, &seen, ts, offset);
        let Seen {
            id,
            netns,
            dir,
            ttl,
            ifname,
            outer,
            record,
            ..
        } = seen;
        let point = Point {
            ts_ns: ts,
            netns,
            ttl,
            at: At::Iface {
                iface: ifname.unwrap_or(NO_IFACE),
                dir,
                outer,
            },
        };
        self.sightings.add(id, n, point);
        if let Some(mut p) = record {
            p.ts_ns = ts;
            p.node = Some(self.names.nodes[n].clone());
            self.directory.name_pods(&mut p.flow);
            out.push(Record::Packet(*p));
        }
    }

    /// A record of node `n` other than a packet's: on the common clock,
    /// marked with the node.
    fn absorb(&mut self, n: usize, mut r: Record, out: &mut Vec<Record>) {
        shift(&mut r, self.clocks.offset(n));
        r.set_node(&self.names.nodes[n]);
        self.name_pods(&mut r);
        match &mut r {
            Record::Drop(d) if !self.passed_elsewhere(n, d.ts_ns) => {
                let Record::Drop(d) = r else { unreachable!() };
                self.held.push_back((n, Box::new(d)));
                return;
            }
            Record::Drop(d) => self.merge_journey(d),
            Record::Verdict(v) => {
                self.sightings
                    .add(Identity::of(&v.flow, &v.detail), n, v.point());
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
                d.src_pod = d.src_pod.take().or_else(|| self.directory.api_name(d.src));
                d.dst_pod = d.dst_pod.take().or_else(|| self.directory.api_name(d.dst));
            }
        }
    }

    /// A packet seen on node `n` at `ts` (common clock; the caller
    /// remembers it for journeys): on the uplink, a send to another node or
    /// an arrival from one.
    fn follow(&mut self, n: usize, p: &Seen, ts: u64, offset: i64) {
        if !p.uplink {
            return;
        }
        let raw_ts = (ts as i64 + offset).max(0) as u64;
        match p.dir {
            Dir::Egress => {
                let Some(s) = self.send_of(n, p, ts, raw_ts) else {
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
                if let Some(s) = self.tracker.arrive(n, &p.id, ts, raw_ts) {
                    self.clocks.transit(s.from, n, s.raw_ts, raw_ts);
                }
            }
            Dir::Netfilter => {}
        }
    }

    /// A pod packet leaving node `n` for the node its destination lives on
    /// (for an encapsulated one, the node its outer destination belongs to);
    /// or a WireGuard packet to another node, known by its outer headers only.
    fn send_of(&self, n: usize, p: &Seen, ts: u64, raw_ts: u64) -> Option<Send> {
        let id = p.id;
        let dst = id.dst?;
        let node_of = |ip: IpAddr| self.directory.local_node(ip);
        let outer_dst = p.outer.as_ref().and_then(|o| o.dst);
        let wireguard =
            p.outer.is_none() && id.proto == Some(Proto::Udp) && id.dport == Some(WIREGUARD_PORT);
        let to = match (outer_dst, wireguard) {
            (Some(o), _) => node_of(o),
            (None, true) => node_of(dst),
            (None, false) => self.directory.pod_node(dst),
        }?;
        if to == n {
            return None;
        }
        let (wire, wire_len) = match &p.outer {
            Some(o) => (
                Wire {
                    encap: o.encap,
                    outer_src: o.src,
                    outer_dst: o.dst,
                    outer_proto: o.proto,
                    outer_dport: o.dport,
                },
                o.len,
            ),
            // Encrypted: the packet is its outer header; matched by that,
            // its IP ID, its size and the time it takes.
            None if wireguard => (
                Wire {
                    encap: Encap::Wireguard,
                    outer_src: id.src,
                    outer_dst: Some(dst),
                    outer_proto: id.proto,
                    outer_dport: id.dport,
                },
                id.len,
            ),
            None => {
                let encap = self.nodes[n].encap_towards(dst);
                (Wire::plain(encap), id.len + encap_overhead(encap))
            }
        };
        Some(Send {
            id,
            from: n,
            to,
            ts,
            raw_ts,
            wire_len,
            wire,
        })
    }

    /// Whether every other node's stream has passed `ts` (or ended).
    fn passed_elsewhere(&self, n: usize, ts: u64) -> bool {
        self.nodes.iter().enumerate().all(|(m, node)| {
            m == n || node.watermark >= ts || matches!(node.state, AgentState::Ended(_))
        })
    }

    /// Held drops whose time the other streams passed (`all`: every one),
    /// with their journeys, in the order they came.
    fn release_held(&mut self, all: bool, out: &mut Vec<Record>) {
        let newest = self.nodes.iter().map(|n| n.watermark).max().unwrap_or(0);
        while let Some((n, d)) = self.held.front() {
            let due = all
                || self.passed_elsewhere(*n, d.ts_ns)
                || newest.saturating_sub(d.ts_ns) > HOLD_MAX_NS;
            if !due {
                break;
            }
            let Some((_, mut d)) = self.held.pop_front() else {
                break;
            };
            self.merge_journey(&mut d);
            out.push(Record::Drop(*d));
        }
    }

    /// The points a dropped packet passed on other nodes come first.
    fn merge_journey(&self, d: &mut DropRecord) {
        let node = d.node.clone().unwrap_or_default();
        let id = Identity::of(&d.flow, &d.detail);
        let mut before = self.sightings.elsewhere(&id, &node, d.ts_ns, &self.names);
        if before.is_empty() {
            return;
        }
        before.sort_by_key(|h| h.ts_ns);
        before.append(&mut d.journey);
        d.journey = before;
    }

    /// Judges the sends whose window has passed on their receiver.
    fn judge(&mut self, out: &mut Vec<Record>) {
        self.release_held(false, out);
        for (at, node) in self.judged_at.iter_mut().zip(&self.nodes) {
            *at = node.watermark;
        }
        let (nodes, now) = (&self.nodes, &self.judged_at);
        let outcomes = self
            .tracker
            .expire(now, &self.names.nodes, |s| nodes[s.to].witness(s.ts));
        for o in outcomes {
            if let Outcome::Lost(l, ts) = &o {
                self.diagnoser.on_underlay_loss(l, *ts, out);
            }
            self.count(&o);
        }
        let latest = self.judged_at.iter().copied().max().unwrap_or(0);
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
/// up to 8 nodes, then a share of 8 times that, at least 512 (some 20 ms
/// of a node at 100k events/s: a packet crosses a node in far less), so
/// that up to 256 nodes hold no more than 8 full tables (256 tables of 2,048
/// packets, each index sized up front, were most of a 256-node client's
/// memory).
fn journeys_per_node(single: usize, nodes: usize) -> usize {
    (single * 8 / nodes.max(1)).clamp(512.min(single), single)
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

/// A time of a node's clock on the common one.
fn shifted(ts: u64, offset: i64) -> u64 {
    (ts as i64 - offset).max(0) as u64
}

/// Moves a record's times from its node's clock to the common one.
fn shift(r: &mut Record, offset: i64) {
    let s = |t: &mut u64| *t = shifted(*t, offset);
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
