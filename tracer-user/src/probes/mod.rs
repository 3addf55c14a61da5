//! Kernel side: loading and attaching the eBPF programs, reading their ring
//! buffer, and reporting what this kernel allows.
//!
//! One folder per probe (its programs are in `tracer-ebpf`): how it loads on
//! this kernel, what it says in the probe report, and how its ring records
//! decode. [`Topic`] lists them in the order they load; adding a probe is a
//! folder with a [`Probe`] and a decoder, and one variant here (its records
//! then need their pipeline input, `events::Input`).

pub mod capabilities;
pub mod drops;
pub mod exact;
pub mod leftovers;
pub mod loader;
pub mod nf_link;
pub mod raw;
pub mod tc;

use anyhow::Result;
use aya::Ebpf;
use tracer_common::Kind;

use crate::events::{DecodeError, Input};
use crate::kernel::btf::KernelBtf;
use capabilities::{Capabilities, ProbeReport};
use loader::LoadOptions;
use raw::Relocated;

/// The probes, in the order they load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// tc programs on interfaces: packets where they pass (`tc/`).
    Tc,
    /// The `kfree_skb` tracepoint: drops, why and where (`drops/`).
    Drops,
    /// fexit/kprobe on the table walkers: each table's verdict (`exact/`).
    Exact,
    /// BPF netfilter links around the hooks: the hook a packet passed
    /// (`nf_link/`).
    NfLinks,
}

/// How a probe's ring record becomes a pipeline input.
pub type Decoder = fn(&[u8]) -> Result<Input, DecodeError>;

impl Topic {
    pub const ALL: [Topic; 4] = [Topic::Tc, Topic::Drops, Topic::Exact, Topic::NfLinks];

    /// The ring record kinds the probe writes.
    pub fn records(self) -> &'static [Kind] {
        match self {
            Topic::Tc => &[Kind::Tc, Kind::TcEncap],
            Topic::Drops => &[Kind::Drop],
            Topic::Exact => &[Kind::Verdict],
            Topic::NfLinks => &[Kind::Hook],
        }
    }

    pub fn decoder(self) -> Decoder {
        match self {
            Topic::Tc => tc::decode,
            Topic::Drops => drops::decode,
            Topic::Exact => exact::decode,
            Topic::NfLinks => nf_link::decode,
        }
    }

    /// The probe that writes ring records of `kind`.
    pub fn of_record(kind: u8) -> Option<Topic> {
        let kind = Kind::from_u8(kind)?;
        Topic::ALL.into_iter().find(|t| t.records().contains(&kind))
    }
}

/// Decodes any ring record into a pipeline input, by the probe that wrote it.
pub fn decode_input(bytes: &[u8]) -> Result<Input, DecodeError> {
    let ev = crate::events::decode(bytes)?;
    match Topic::of_record(ev.kind) {
        Some(t) => (t.decoder())(bytes),
        None => Ok(Input::Event(ev)),
    }
}

/// What a probe loads with: the object's programs and maps, the object
/// relocated for programs loaded with raw bpf(2), what this kernel allows,
/// the options, and the report it says what it got in.
pub struct Loading<'a> {
    pub ebpf: &'a mut Ebpf,
    pub object: &'a Result<Relocated>,
    pub caps: &'a Capabilities,
    pub btf: Option<&'a KernelBtf>,
    pub opts: &'a LoadOptions<'a>,
    pub report: &'a mut ProbeReport,
}

/// A probe's loading: what this kernel allows of it, loaded (and attached
/// unless only checked), and said in the report. What it attached goes when
/// it is dropped. An error stops tracing (a choice the kernel cannot
/// honour); a probe the kernel refuses is only reported.
pub trait Probe {
    fn load(&mut self, l: &mut Loading<'_>) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_kind_has_one_probe() {
        for &k in Kind::ALL {
            let owners: Vec<Topic> = Topic::ALL
                .into_iter()
                .filter(|t| t.records().contains(&k))
                .collect();
            assert_eq!(owners.len(), 1, "{k:?} belongs to one probe: {owners:?}");
            assert_eq!(Topic::of_record(k as u8), Some(owners[0]));
        }
        assert_eq!(Topic::of_record(0), None);
    }
}
