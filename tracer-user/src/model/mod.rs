//! What calitrace reports: the typed records behind every view (JSON lines,
//! text, TUI), the names of the kernel codes they carry, and one way of
//! writing each. Imports nothing else of calitrace.

pub mod check;
pub mod diagnosis;
pub mod drop_place;
#[cfg(test)]
pub mod fixtures;
pub mod journey;
pub mod names;
pub mod packet;
pub mod reason;
pub mod records;
pub mod steps;

pub use check::{Check, CheckId, Status as CheckStatus};
pub use diagnosis::{Code, Diagnosis, Underlay, WireguardRefusal};
pub use drop_place::DropPlace;
pub use journey::{
    At, CalicoEbpfDrop, Hop, HopLabel, LinkAt, NetfilterInfo, Point, PolicyRef, Refusal,
};
pub use names::{
    ArpOp, Attribution, Backend, Benign, CalicoPlacement, Dir, Encap, Family, Hook, Icmp,
    LinkPoint, NfVerdict, Owner, Proto, RuleVerdict, Stage,
};
pub use packet::{
    Addr, Detail, Endpoint, Flow, Headers, Outer, PacketId, PacketRecord, PodRef, TcpSegment,
};
pub use reason::{DropReason, ReasonKind};
pub use records::{DropRecord, ProbeStatus, Record, Start, Stats, Unavailable, VerdictRecord};
pub use steps::{Journey, Step, StepKind, path_line};

/// Maps looked up for every event (journeys, the merge's tables): a fast
/// hash, seeded per process so that crafted traffic cannot aim at one
/// bucket.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
