//! The records behind every view: one JSON line each with `--output json`.
//! Field names follow the JSON contract in the README.

use serde::{Deserialize, Serialize};

use super::diagnosis::Diagnosis;
use super::journey::{At, CalicoEbpfDrop, Hop, NetfilterInfo, Point};
use super::names::{Backend, Benign, CalicoPlacement, NfVerdict, Stage};
use super::packet::{Detail, Flow, PacketRecord};
use super::reason::DropReason;

/// A netfilter table's verdict on a packet (`--verdicts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictRecord {
    /// The node the record comes from (cluster views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub ts_ns: u64,
    pub netns: u32,
    #[serde(flatten)]
    pub flow: Flow,
    pub verdict: NfVerdict,
    pub netfilter: NetfilterInfo,
    #[serde(flatten)]
    pub detail: Detail,
}

impl VerdictRecord {
    /// The verdict as a point of the packet's journey.
    pub fn point(&self) -> Point {
        Point {
            ts_ns: self.ts_ns,
            netns: self.netns,
            ttl: self.detail.ttl,
            at: At::Verdict(Box::new((self.netfilter.clone(), self.verdict))),
        }
    }

    /// The verdict as a hop of the packet's journey.
    pub fn hop(&self) -> Hop {
        self.point().hop(self.node.clone(), |_, _| None)
    }
}

impl PacketRecord {
    /// The same as [`PacketRecord::hop`], for a record no longer needed.
    pub fn into_hop(self) -> Hop {
        Hop {
            node: self.node,
            ts_ns: self.ts_ns,
            netns: self.netns,
            ifname: self.ifname,
            dir: self.dir,
            ttl: self.detail.ttl,
            netfilter: None,
            verdict: None,
            point: None,
            priority: None,
            outer: self.outer,
        }
    }

    /// The sighting as a point of the packet's journey.
    pub fn hop(&self) -> Hop {
        Hop {
            node: self.node.clone(),
            ts_ns: self.ts_ns,
            netns: self.netns,
            ifname: self.ifname.clone(),
            dir: self.dir,
            ttl: self.detail.ttl,
            netfilter: None,
            verdict: None,
            point: None,
            priority: None,
            outer: self.outer.clone(),
        }
    }
}

/// A packet the kernel freed as a drop, where, why, and where it had been.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DropRecord {
    /// The node the record comes from (cluster views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub ts_ns: u64,
    pub netns: u32,
    pub ifname: Option<String>,
    #[serde(flatten)]
    pub flow: Flow,
    pub reason: DropReason,
    /// The kernel gives no drop reasons (before 5.17): `reason` is what a newer
    /// kernel reports at `location`, or NOT_SPECIFIED where the location does
    /// not tell.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reason_from_location: bool,
    pub location: Option<String>,
    pub stage: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<NetfilterInfo>,
    #[serde(flatten)]
    pub detail: Detail,
    /// Pod whose namespace the drop happened in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Where this packet was seen before it died, oldest first.
    pub journey: Vec<Hop>,
    /// Set when the free is no fault of pod traffic: such a drop gives no
    /// diagnosis and is shown only on request (`--all-drops`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benign: Option<Benign>,
    /// A drop by Calico's eBPF programs, named from Felix's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calico_ebpf: Option<Box<CalicoEbpfDrop>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unavailable {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Stats {
    /// The node the record comes from (cluster views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Events seen (before filtering) and emitted, per probe.
    pub events: std::collections::BTreeMap<String, u64>,
    pub lost: u64,
    pub probes_attached: Vec<ProbeStatus>,
    pub probes_unavailable: Vec<Unavailable>,
    pub duration_s: f64,
    /// Interfaces with tc programs at the end (live tracing, and recordings
    /// that say so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<usize>,
    /// Benign frees (see [`Benign`]) by the kernel's drop reason: counted,
    /// not reported as drops.
    pub benign: std::collections::BTreeMap<String, u64>,
    /// How a cluster node's agent ended, where it did not end normally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Start {
    pub node: String,
    pub kernel: String,
    pub netns: u32,
    pub filter: String,
    pub interfaces: Vec<String>,
    pub probes_attached: Vec<ProbeStatus>,
    pub probes_unavailable: Vec<Unavailable>,
    /// Backend of the node's `iptables` command (`legacy`/`nft`).
    pub iptables: Option<Backend>,
    /// Where Calico's cali-* chains are: `legacy`, `nft`, `both` or null.
    pub calico_chains: Option<CalicoPlacement>,
    /// `calitrace doctor`'s checks that warned or failed at the start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<super::Check>,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Start(Start),
    Packet(PacketRecord),
    Drop(DropRecord),
    Verdict(VerdictRecord),
    Diagnosis(Diagnosis),
    Stats(Stats),
}

impl Record {
    /// Marks the record, and the points of a drop's journey, as `node`'s.
    pub fn set_node(&mut self, node: &str) {
        let slot = match self {
            Record::Start(s) => {
                s.node = node.to_string();
                return;
            }
            Record::Packet(p) => &mut p.node,
            Record::Drop(d) => {
                for h in &mut d.journey {
                    h.node.get_or_insert_with(|| node.to_string());
                }
                &mut d.node
            }
            Record::Verdict(v) => &mut v.node,
            Record::Diagnosis(d) => &mut d.node,
            Record::Stats(s) => &mut s.node,
        };
        *slot = Some(node.to_string());
    }

    /// The node a record comes from, in a cluster view.
    pub fn node(&self) -> Option<&str> {
        match self {
            Record::Start(s) => Some(&s.node),
            Record::Packet(p) => p.node.as_deref(),
            Record::Drop(d) => d.node.as_deref(),
            Record::Verdict(v) => v.node.as_deref(),
            Record::Diagnosis(d) => d.node.as_deref(),
            Record::Stats(s) => s.node.as_deref(),
        }
    }

    /// Kernel time of a packet-bearing record.
    pub fn ts_ns(&self) -> Option<u64> {
        match self {
            Record::Packet(p) => Some(p.ts_ns),
            Record::Drop(d) => Some(d.ts_ns),
            Record::Verdict(v) => Some(v.ts_ns),
            _ => None,
        }
    }
}
