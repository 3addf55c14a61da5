//! One node's share of the merge: its pipeline (its facts, journeys,
//! diagnoses), which needs nothing from the other nodes, so it runs where
//! the node's stream is read (a thread per agent), or inside the merge
//! itself (replays). What it hands the merge is compact: a packet is its
//! identity and where it was seen, not a record of strings.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex};

use super::gate::Seat;
use super::sightings::Identity;
use crate::events::Input;
use crate::facts::{Environment, Fact};
use crate::model::{Dir, Outer, PacketRecord, Record};
use crate::pipeline::{Options, Pipeline};
use crate::recording::format::{End, Header};
use crate::recording::reader::Item;
use crate::recording::stream::{self, Streamed};

/// A packet seen by tc on the node (its own clock), for the merge to
/// follow across nodes and keep for journeys.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: Identity,
    pub ts_ns: u64,
    pub netns: u32,
    pub dir: Dir,
    pub ttl: Option<u8>,
    /// Seen on one of the node's uplinks, in its own namespace.
    pub uplink: bool,
    /// The interface's name by its number ([`Staged::IfName`]).
    pub ifname: Option<u32>,
    pub outer: Option<Box<Outer>>,
    /// The record itself, where packets are shown.
    pub record: Option<Box<PacketRecord>>,
}

/// What one item of a node's stream became, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Staged {
    Packet(Seen),
    /// An interface's name, the first time a packet is seen on it: later
    /// ones give its number.
    IfName {
        id: u32,
        name: Box<str>,
    },
    /// Any other record (drops, verdicts, diagnoses), on the node's clock.
    Record(Box<Record>),
    /// Events lost so far, at the node's time `ts_ns`.
    Lost {
        ts_ns: u64,
        lost: u64,
    },
    /// One input done; the node's time after it (its own clock).
    Step {
        now: u64,
    },
    End(Box<End>),
    /// The pipeline finished: its benign drops by reason, and the kernel
    /// events it took (those the filter lets through).
    Finished {
        benign: BTreeMap<String, u64>,
        events: u64,
    },
}

/// How every node's stage runs: given by the merge
/// ([`super::Cluster::stage_options`]).
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// The node pipelines' (which always make packet records: the merge
    /// follows every packet).
    pub pipeline: Options,
    /// Whether packet records are shown (else only their sightings go on).
    pub packets: bool,
}

pub struct NodeStage {
    pipeline: Pipeline,
    /// Whether packet records are shown (else only their sightings go on).
    packets: bool,
    /// Interface names by the number the merge knows them by.
    ifnames: HashMap<String, u32>,
    /// A pipeline's records of one input, reused.
    scratch: Vec<Record>,
    finished: bool,
}

impl NodeStage {
    /// The stage of a node whose stream began with `header`.
    pub fn new(header: &Header, opts: &StageOptions) -> NodeStage {
        NodeStage {
            pipeline: Pipeline::new(
                Environment::replay(header.facts.clone()),
                opts.pipeline.clone(),
            ),
            packets: opts.packets,
            ifnames: HashMap::new(),
            scratch: Vec::new(),
            finished: false,
        }
    }

    /// One item of the node's stream.
    pub fn item(&mut self, item: Item, out: &mut Vec<Staged>) {
        match item {
            Item::Fact(f) => {
                if let Fact::Lost { ts_ns, lost } = &f {
                    out.push(Staged::Lost {
                        ts_ns: *ts_ns,
                        lost: *lost,
                    });
                }
                self.pipeline.env.apply(&f);
            }
            Item::End(e) => out.push(Staged::End(Box::new(e))),
            Item::Input(input) => self.input(&input, out),
        }
    }

    fn input(&mut self, input: &Input, out: &mut Vec<Staged>) {
        let mut records = std::mem::take(&mut self.scratch);
        self.pipeline.process(input, &mut records);
        self.stage(&mut records, out);
        self.scratch = records;
        out.push(Staged::Step {
            now: self.pipeline.now(),
        });
    }

    /// The stream ended: what the pipeline still holds. Once.
    pub fn finish(&mut self, out: &mut Vec<Staged>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let mut records = Vec::new();
        self.pipeline.finish(&mut records);
        self.stage(&mut records, out);
        out.push(Staged::Finished {
            benign: self.pipeline.benign.clone(),
            events: self.pipeline.counts.events,
        });
    }

    fn stage(&mut self, records: &mut Vec<Record>, out: &mut Vec<Staged>) {
        for r in records.drain(..) {
            let staged = match r {
                Record::Packet(p) => Staged::Packet(self.seen(p, out)),
                r => Staged::Record(Box::new(r)),
            };
            out.push(staged);
        }
    }

    fn seen(&mut self, p: PacketRecord, out: &mut Vec<Staged>) -> Seen {
        let facts = &self.pipeline.env.facts;
        let uplink = p.netns == facts.netns
            && p.ifname
                .as_ref()
                .is_some_and(|i| facts.topology.uplinks.contains(i));
        let ifname = p.ifname.as_deref().map(|i| self.ifname_id(i, out));
        let mut seen = Seen {
            id: Identity::of(&p.flow, &p.detail),
            ts_ns: p.ts_ns,
            netns: p.netns,
            dir: p.dir,
            ttl: p.detail.ttl,
            uplink,
            ifname,
            outer: None,
            record: None,
        };
        if self.packets {
            seen.outer = p.outer.clone().map(Box::new);
            seen.record = Some(Box::new(p));
        } else {
            seen.outer = p.outer.map(Box::new);
        }
        seen
    }

    fn ifname_id(&mut self, name: &str, out: &mut Vec<Staged>) -> u32 {
        if let Some(id) = self.ifnames.get(name) {
            return *id;
        }
        let id = self.ifnames.len() as u32;
        self.ifnames.insert(name.to_string(), id);
        out.push(Staged::IfName {
            id,
            name: name.into(),
        });
        id
    }
}

/// What a thread reading one node's stream hands the merge.
#[derive(Debug)]
pub enum FromNode {
    Start(Box<Header>),
    Staged(Vec<Staged>),
    /// The stream ended: why, where it was not a clean end.
    Ended(Option<String>),
}

/// Staged items handed on together, about: a hand-over wakes the merging
/// thread (or a reader waiting for room), so it carries several of the
/// stream's batches from a busy agent.
const BATCH: usize = 512;
/// Batches a client lets wait for its merge, all agents together: each
/// carries about twice the stream's, so half as many as
/// [`stream::QUEUE`] (the agents' streams wait, not the client's memory).
pub const QUEUE: usize = stream::QUEUE / 2;
/// Emptied batches kept for the readers to fill again.
const SPARE_BATCHES: usize = 16;

/// Batches the merge has emptied, for the readers to fill again: no
/// allocation, nor a large free on the merging thread, per batch.
#[derive(Debug, Clone, Default)]
pub struct Batches(Arc<Mutex<Vec<Vec<Staged>>>>);

impl Batches {
    fn get(&self) -> Vec<Staged> {
        let spare = self.0.lock().ok().and_then(|mut b| b.pop());
        spare.unwrap_or_else(|| Vec::with_capacity(BATCH + 64))
    }

    /// A batch the merge is done with.
    pub fn put(&self, mut batch: Vec<Staged>) {
        batch.clear();
        if let Ok(mut b) = self.0.lock()
            && b.len() < SPARE_BATCHES
        {
            b.push(batch);
        }
    }
}

/// The node's time after a batch: its last step's.
fn batch_time(items: &[Staged]) -> Option<u64> {
    items.iter().rev().find_map(|s| match s {
        Staged::Step { now } => Some(*now),
        _ => None,
    })
}

/// Reads one node's stream to its end ([`stream::read_stream`]) and runs
/// its stage on it, until `on` returns false. `Ended` comes last, after the
/// stage's last items. Batches come from `batches`, where the merge puts
/// them back. Before each batch goes, the reader waits at the `seat` while
/// its node is too far ahead of the others ([`super::gate`]).
pub fn read_staged(
    r: impl Read,
    opts: &StageOptions,
    batches: &Batches,
    mut seat: Seat,
    mut on: impl FnMut(FromNode) -> bool,
) {
    let mut stage: Option<NodeStage> = None;
    let mut batch = Vec::new();
    let mut emit = |s: FromNode, seat: &Seat| {
        if let FromNode::Staged(items) = &s
            && let Some(now) = batch_time(items)
        {
            seat.pass(now);
        }
        on(s)
    };
    stream::read_stream(r, |s| match s {
        Streamed::Start(h) => {
            stage = Some(NodeStage::new(&h, opts));
            seat.start(&h);
            emit(FromNode::Start(h), &seat)
        }
        Streamed::Items(items) => {
            let Some(st) = stage.as_mut() else {
                return true;
            };
            // A full batch of the stream: more follows at once.
            let busy = items.len() == stream::BATCH;
            if batch.capacity() == 0 {
                batch = batches.get();
            }
            for item in items {
                st.item(item, &mut batch);
            }
            if busy && batch.len() < BATCH {
                return true;
            }
            emit(FromNode::Staged(std::mem::take(&mut batch)), &seat)
        }
        Streamed::Ended(why) => {
            if let Some(st) = stage.as_mut() {
                st.finish(&mut batch);
            }
            if !batch.is_empty() && !emit(FromNode::Staged(std::mem::take(&mut batch)), &seat) {
                return false;
            }
            seat.leave();
            emit(FromNode::Ended(why), &seat)
        }
    });
}
