//! Packets of pod flows that leave one node's uplink are looked for on the
//! receiving node's uplink; those that never arrive, while the receiving
//! node could have seen them, are underlay losses.

use std::collections::HashMap;

use super::sightings::Identity;
use crate::diagnosis::Loss;
use crate::model::{Encap, Underlay};

/// How long a packet may take between two nodes' uplinks (clock offsets
/// included) before it counts as lost.
pub const WINDOW_NS: u64 = 1_000_000_000;
/// Sends waiting at most; beyond, the oldest go undecided.
const MAX_PENDING: usize = 65_536;

/// A pod packet that left a node's uplink towards another node.
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    pub id: Identity,
    pub from: usize,
    pub to: usize,
    /// On the common clock, and on the sender's own.
    pub ts: u64,
    pub raw_ts: u64,
    /// Bytes on the wire (the outer packet's, when encapsulated).
    pub wire_len: u32,
    /// The path as `UNDERLAY_*` reports it (node names, encapsulation, outer header).
    pub path: Underlay,
}

/// What the receiving node can say about a time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Witness {
    /// Its agent ran, traced its uplink and lost no events then.
    Able,
    AgentNotRunning,
    NotTracingUplink,
    LostEvents,
}

impl Witness {
    pub fn why_not(self) -> &'static str {
        match self {
            Witness::Able => "",
            Witness::AgentNotRunning => "its agent was not running",
            Witness::NotTracingUplink => "its agent did not trace its uplink",
            Witness::LostEvents => "its agent lost events then",
        }
    }
}

/// A send judged: lost, or why it could not be judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Lost, sent at this time (common clock).
    Lost(Loss, u64),
    Undecided(Witness),
}

/// Bytes on the wire that got through and that did not, per flow path.
#[derive(Debug, Clone, Copy, Default)]
struct Sizes {
    largest_delivered: Option<u32>,
    smallest_lost: Option<u32>,
}

type PathKey = (String, String, usize, usize);

#[derive(Default)]
pub struct Tracker {
    pending: Vec<Send>,
    sizes: HashMap<PathKey, Sizes>,
}

fn path_key(s: &Send) -> PathKey {
    (
        s.id.0.src.clone().unwrap_or_default(),
        s.id.0.dst.clone().unwrap_or_default(),
        s.from,
        s.to,
    )
}

impl Tracker {
    pub fn send(&mut self, s: Send) -> Option<Outcome> {
        self.pending.push(s);
        (self.pending.len() > MAX_PENDING).then(|| {
            self.pending.remove(0);
            Outcome::Undecided(Witness::LostEvents)
        })
    }

    /// The packet reached `node`'s uplink: the send it answers, if any.
    pub fn arrive(&mut self, node: usize, id: &Identity) -> Option<Send> {
        let i = self
            .pending
            .iter()
            .position(|s| s.to == node && s.id == *id)?;
        let s = self.pending.remove(i);
        let sizes = self.sizes.entry(path_key(&s)).or_default();
        sizes.largest_delivered = Some(sizes.largest_delivered.unwrap_or(0).max(s.wire_len));
        Some(s)
    }

    /// Judges the sends whose window has passed on their receiver's clock
    /// (`now[to]`, common clock); `witness` says whether the receiver could
    /// have seen them.
    pub fn expire(
        &mut self,
        now: &[u64],
        mut witness: impl FnMut(&Send) -> Witness,
    ) -> Vec<Outcome> {
        let (due, waiting): (Vec<Send>, Vec<Send>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|s| now[s.to] >= s.ts + WINDOW_NS);
        self.pending = waiting;
        due.into_iter()
            .map(|s| match witness(&s) {
                Witness::Able => {
                    let ts = s.ts;
                    Outcome::Lost(self.lost(s), ts)
                }
                w => Outcome::Undecided(w),
            })
            .collect()
    }

    /// Forgets what still waits, when no more will come; how many.
    pub fn drain(&mut self) -> usize {
        std::mem::take(&mut self.pending).len()
    }

    fn lost(&mut self, s: Send) -> Loss {
        let sizes = self.sizes.entry(path_key(&s)).or_default();
        sizes.smallest_lost = Some(
            sizes
                .smallest_lost
                .map_or(s.wire_len, |m| m.min(s.wire_len)),
        );
        Loss {
            src: s.id.0.src.clone().unwrap_or_else(|| "?".into()),
            dst: s.id.0.dst.clone().unwrap_or_else(|| "?".into()),
            path: Underlay {
                largest_delivered: sizes.largest_delivered,
                smallest_lost: sizes.smallest_lost,
                ..s.path
            },
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The path of a packet between two nodes, before the outer header is known.
pub fn path(src_node: &str, dst_node: &str, encap: Encap) -> Underlay {
    Underlay {
        src_node: src_node.to_string(),
        dst_node: dst_node.to_string(),
        encap,
        outer_src: None,
        outer_dst: None,
        outer_proto: None,
        outer_dport: None,
        largest_delivered: None,
        smallest_lost: None,
    }
}
