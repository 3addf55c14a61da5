//! The recording format (version 4, and 5 for compressed agent streams;
//! versions 1 to 3 are read too). See
//! `docs/recording-format.md`.
//!
//! ```text
//! file   := magic version:u16le header_len:u32le header_json frame*
//! magic  := "CALITRC\0"
//! frame  := kind:u8 len:u32le crc32:u32le payload[len]
//! ```
//! `crc32` covers kind, len and payload. Frame kinds: EVENT (the kernel's raw
//! `Event`, `tracer_common::EVENT_SIZE` bytes), TICK (u64le monotonic ns),
//! FACT (JSON of one `Fact`; the `pod` fact since version 4), END (JSON:
//! final kernel counters and the number of traced interfaces), VERDICT (the
//! raw `NfEvent`, `tracer_common::NF_EVENT_SIZE` bytes: a table's verdict, or
//! since version 2 also a netfilter link point), ENCAP (since version 3: the
//! raw `EncapEvent`, `tracer_common::ENCAP_EVENT_SIZE` bytes: an encapsulated
//! packet seen by tc, its inner packet and its outer headers).

use serde::{Deserialize, Serialize};

use crate::facts::NodeFacts;

pub const MAGIC: &[u8; 8] = b"CALITRC\0";
/// Version 2 added netfilter link points (`NfEvent` of kind HOOK, with
/// `point` and `priority` where version 1 had zero padding) to VERDICT frames:
/// a version 1 reader would take them for DROP verdicts, so it must refuse
/// them; version 1 files read as they always did. Version 3 added ENCAP
/// frames, which a version 2 reader would call corrupt. Version 4 added the
/// `pod` fact (a pod found while tracing), which a version 3 reader would
/// call a corrupt FACT frame.
pub const VERSION: u16 = 4;
/// Version 4 compressed, for agent streams: after the header, one zstd
/// stream carrying version 4's frames with their crc32 fields zero (zstd's
/// content checksum covers them, and a zero compresses to nothing where a
/// checksum costs 4 incompressible bytes per event). Files stay version 4,
/// which older readers still read.
pub const VERSION_ZSTD: u16 = 5;
/// zstd level of agent streams: the fastest, which already gets an event's
/// 105 bytes to well under 20.
pub const ZSTD_LEVEL: i32 = 1;
/// zstd window of agent streams (log2 bytes): what a client holds per agent
/// to decompress. 128 KiB is some thousand events back, where the repeats
/// of a node's flows are.
pub const ZSTD_WINDOW_LOG: u32 = 17;
/// The largest window a reader accepts (1 MiB): a stream asking for more
/// is refused rather than let make the client allocate it.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 20;
/// The oldest version this calitrace reads.
pub const MIN_VERSION: u16 = 1;
/// Largest frame payload accepted on read: above any real frame (a big node's
/// netfilter inventory is a few MiB), low enough that a corrupt length cannot
/// make replay allocate gigabytes.
pub const MAX_FRAME: u32 = 64 << 20;
/// Largest header accepted on read.
pub const MAX_HEADER: u32 = 64 << 20;
pub const FRAME_OVERHEAD: usize = 9;

pub mod frame {
    pub const EVENT: u8 = 1;
    pub const TICK: u8 = 2;
    pub const FACT: u8 = 3;
    pub const END: u8 = 4;
    /// A netfilter verdict or link point (`tracer_common::NfEvent`).
    pub const VERDICT: u8 = 5;
    /// An encapsulated packet seen by tc (`tracer_common::EncapEvent`).
    pub const ENCAP: u8 = 6;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub calitrace_version: String,
    pub kernel: String,
    pub node: String,
    /// Wall clock at capture start (ns since the Unix epoch) and the monotonic
    /// clock at the same moment, to turn event timestamps into wall time.
    pub start_realtime_ns: u64,
    pub start_monotonic_ns: u64,
    /// Size of one EVENT payload.
    pub event_size: u32,
    /// FILTER applied in the kernel while recording.
    pub filter: String,
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub probes_attached: Vec<crate::model::ProbeStatus>,
    #[serde(default)]
    pub probes_unavailable: Vec<crate::model::Unavailable>,
    /// Everything known at the start: interface names per netns, pods, drop
    /// reason names, local addresses; later knowledge arrives in FACT frames.
    pub facts: NodeFacts,
}

impl Header {
    /// The start record of the recorded session.
    pub fn start(&self) -> crate::model::Start {
        crate::model::Start {
            node: self.node.clone(),
            kernel: self.kernel.clone(),
            netns: self.facts.netns,
            filter: self.filter.clone(),
            interfaces: self.interfaces.clone(),
            probes_attached: self.probes_attached.clone(),
            probes_unavailable: self.probes_unavailable.clone(),
            iptables: self.facts.iptables_binary,
            calico_chains: self
                .facts
                .netfilter
                .as_ref()
                .and_then(crate::netfilter::Inventory::calico_chains),
            checks: self.facts.checks.clone(),
        }
    }
}

/// Kernel-side counters at the end of the capture.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub events: std::collections::BTreeMap<String, u64>,
    pub lost: u64,
    /// Interfaces with tc programs at the end (absent in older recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<usize>,
}

pub fn crc(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize()
}

pub fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    encode_frame_with(out, kind, payload, true);
}

/// A frame with its crc32, or with zero there (`checked` false: inside a
/// compressed stream, whose own checksum covers it).
pub fn encode_frame_with(out: &mut Vec<u8>, kind: u8, payload: &[u8], checked: bool) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let sum = if checked { crc(kind, payload) } else { 0 };
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(payload);
}
