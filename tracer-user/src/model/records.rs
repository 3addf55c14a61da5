//! The records behind every view: one JSON line each with `--output json`.
//! Field names follow the JSON contract in the README.

use serde::{Deserialize, Serialize};

use super::diagnosis::Diagnosis;
use super::journey::{Hop, NetfilterInfo};
use super::names::{Backend, CalicoPlacement, Dir, NfVerdict, Stage};
use super::packet::{Detail, Flow, PacketRecord};

/// A netfilter table's verdict on a packet (`--verdicts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictRecord {
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
    pub fn hop(&self) -> Hop {
        Hop {
            ts_ns: self.ts_ns,
            netns: self.netns,
            ifname: None,
            dir: Dir::Netfilter,
            ttl: self.detail.ttl,
            netfilter: Some(self.netfilter.clone()),
            verdict: Some(self.verdict),
            point: None,
            priority: None,
            outer: None,
        }
    }
}

impl PacketRecord {
    /// The sighting as a point of the packet's journey.
    pub fn hop(&self) -> Hop {
        Hop {
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
    pub ts_ns: u64,
    pub netns: u32,
    pub ifname: Option<String>,
    #[serde(flatten)]
    pub flow: Flow,
    pub reason: String,
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
    /// Events seen (before filtering) and emitted, per probe.
    pub events: std::collections::BTreeMap<String, u64>,
    pub lost: u64,
    pub probes_attached: Vec<ProbeStatus>,
    pub probes_unavailable: Vec<Unavailable>,
    pub duration_s: f64,
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
