//! The tc programs on interfaces: every packet where it passes a traced
//! interface (an encapsulated one with its outer headers). Which interfaces
//! are traced ([`ifaces`]), attaching to them ([`attach`]), and the probe.

pub mod attach;
pub mod ifaces;

use anyhow::{Context, Result, bail};
use aya::programs::SchedClassifier;
use tracer_common::Kind;

use super::loader::{TcAttach, why};
use super::{Loading, Probe};
use crate::events::{self, DecodeError, Input, decode_encap};
use crate::kernel::netlink::Link;
use attach::TcAttachments;

/// The tc programs, once loaded: the interfaces they are attached to.
#[derive(Default)]
pub struct TcProbe {
    /// `None` until the programs loaded (and attached).
    attachments: Option<TcAttachments>,
}

/// A packet seen by tc, plain or encapsulated.
pub fn decode(bytes: &[u8]) -> Result<Input, DecodeError> {
    let ev = events::decode(bytes)?;
    if Kind::from_u8(ev.kind) == Some(Kind::TcEncap) {
        decode_encap(bytes).map(Input::Encap)
    } else {
        Ok(Input::Event(ev))
    }
}

impl Probe for TcProbe {
    fn load(&mut self, l: &mut Loading<'_>) -> Result<()> {
        let tcx = match l.opts.tc_attach {
            TcAttach::Auto => l.caps.tcx(),
            TcAttach::Tcx if !l.caps.tcx() => bail!(
                "--tc-attach tcx needs kernel 6.6 or later (this is {}): use --tc-attach netlink",
                l.caps.kernel
            ),
            TcAttach::Tcx => true,
            TcAttach::Netlink => false,
        };
        let mut attachments = TcAttachments::new(tcx);
        for name in attach::LOADED_AT_START {
            let prog: &mut SchedClassifier = l.ebpf.program_mut(name).context(name)?.try_into()?;
            if let Err(e) = prog.load() {
                l.report.missing(format!("tc ({name})"), why(&e.into()));
                return Ok(());
            }
        }
        if !l.opts.attach {
            l.report.ok(
                format!("tc classifier ({})", attachments.mechanism()),
                Some("loadable".into()),
            );
            return Ok(());
        }
        for link in l.opts.interfaces {
            if let Err(e) = attachments.attach(l.ebpf, link) {
                l.report.missing(format!("tc on {}", link.name), why(&e));
            }
        }
        self.attachments = Some(attachments);
        self.refresh_report(l.report);
        Ok(())
    }
}

impl TcProbe {
    /// The report's tc line, naming the interfaces with programs now.
    pub fn refresh_report(&self, report: &mut super::capabilities::ProbeReport) {
        let Some(tc) = &self.attachments else { return };
        let name = format!("tc classifier ({})", tc.mechanism());
        let names = tc.names();
        let detail = Some(format!("ingress+egress on {}", names.join(", ")));
        let line = report.attached.iter().position(|p| p.name == name);
        match (line, names.is_empty()) {
            (Some(i), true) => drop(report.attached.remove(i)),
            (Some(i), false) => report.attached[i].detail = detail,
            (None, true) => {}
            (None, false) => report.ok(name, detail),
        }
    }

    /// Whether the programs loaded, so that interfaces can get them.
    pub fn loaded(&self) -> bool {
        self.attachments.is_some()
    }

    /// Attaches the programs to one more interface.
    pub fn attach(&mut self, ebpf: &mut aya::Ebpf, link: &Link) -> Result<()> {
        match self.attachments.as_mut() {
            Some(tc) => tc.attach(ebpf, link),
            None => bail!("the tc programs are not loaded"),
        }
    }

    /// Detaches the programs from interface `index`; its name when it had them.
    pub fn detach(&mut self, ebpf: &mut aya::Ebpf, index: u32) -> Option<String> {
        self.attachments.as_mut()?.detach(ebpf, index)
    }

    /// The interfaces with programs, in the order they got them.
    pub fn interfaces(&self) -> Vec<String> {
        self.attachments
            .as_ref()
            .map(TcAttachments::names)
            .unwrap_or_default()
    }

    pub fn interface_count(&self) -> usize {
        self.attachments.as_ref().map_or(0, TcAttachments::len)
    }

    /// The clsact qdiscs calitrace added, to delete once the programs are
    /// gone.
    pub fn take_clsact(&mut self) -> Vec<u32> {
        self.attachments
            .as_mut()
            .map(TcAttachments::take_clsact)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{EncapEvent, Event, kind, l3};

    use super::*;
    use crate::events::{encode, encode_encap, set_ip};
    use crate::probes::decode_input;

    #[test]
    fn tc_records_decode_plain_or_encapsulated() {
        let mut ev = Event {
            kind: kind::TC,
            ..Default::default()
        };
        ev.pkt.l3 = l3::IPV4;
        set_ip(&mut ev.pkt.src, "10.244.1.10".parse().unwrap());
        assert_eq!(decode_input(encode(&ev)), Ok(Input::Event(ev)));
        let mut enc = EncapEvent {
            ev,
            ..Default::default()
        };
        enc.ev.kind = kind::TC_ENCAP;
        enc.outer.vni = 4096;
        let bytes = encode_encap(&enc).to_vec();
        assert_eq!(decode_input(&bytes), Ok(Input::Encap(enc)));
        let cut = tracer_common::EVENT_SIZE;
        assert_eq!(
            decode_input(&bytes[..cut]),
            Err(DecodeError(cut)),
            "a cut encapsulated event is refused, not read as a plain event"
        );
    }
}
