//! The tc programs on interfaces: attached one interface at a time (TCX
//! links, or netlink clsact filters), detached one at a time when an
//! interface goes, and all at once when tracing ends.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};
use aya::Ebpf;
use aya::programs::tc::SchedClassifierLinkId;
use aya::programs::{SchedClassifier, TcAttachType, tc};

use crate::kernel::netlink::{self, Link};

/// The programs for interfaces with an Ethernet header, and for L3 devices
/// (`tunl0`, WireGuard): (ingress, egress).
const ETHERNET: (&str, &str) = ("tc_ingress", "tc_egress");
const L3: (&str, &str) = ("tc_ingress_l3", "tc_egress_l3");
/// The tc programs loaded at start; the L3 ones are loaded when the first
/// interface without an Ethernet header comes (most nodes have none, and
/// the verifier takes a good part of the start-up for each program).
pub(crate) const LOADED_AT_START: [&str; 2] = [ETHERNET.0, ETHERNET.1];

/// What calitrace attached to one interface.
struct OnInterface {
    name: String,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
    /// calitrace added the interface's clsact qdisc (netlink attach): it
    /// goes again when calitrace is done with the interface.
    clsact: bool,
}

/// The interfaces with tc programs, by index.
pub(crate) struct TcAttachments {
    tcx: bool,
    by_index: BTreeMap<u32, OnInterface>,
    /// Names in the order they were attached.
    order: Vec<u32>,
}

impl TcAttachments {
    pub(crate) fn new(tcx: bool) -> TcAttachments {
        TcAttachments {
            tcx,
            by_index: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    pub(crate) fn mechanism(&self) -> &'static str {
        if self.tcx { "TCX" } else { "netlink clsact" }
    }

    /// Attaches ingress and egress programs to `link`; on an error nothing
    /// of calitrace's stays on it.
    pub(crate) fn attach(&mut self, ebpf: &mut Ebpf, link: &Link) -> Result<()> {
        if self.by_index.contains_key(&link.index) {
            return Ok(());
        }
        let (ingress, egress) = if link.has_ethernet_header() {
            ETHERNET
        } else {
            load_once(ebpf, L3.0)?;
            load_once(ebpf, L3.1)?;
            L3
        };
        // An error means the qdisc is already there (someone else's): it
        // stays in place afterwards.
        let clsact = !self.tcx && tc::qdisc_add_clsact(&link.name).is_ok();
        let mut on = OnInterface {
            name: link.name.clone(),
            links: Vec::new(),
            clsact,
        };
        for (prog, ty) in [
            (ingress, TcAttachType::Ingress),
            (egress, TcAttachType::Egress),
        ] {
            match self.attach_one(ebpf, prog, &link.name, ty) {
                Ok(id) => on.links.push((prog, id)),
                Err(e) => {
                    undo(ebpf, link.index, on);
                    return Err(e);
                }
            }
        }
        self.by_index.insert(link.index, on);
        self.order.push(link.index);
        Ok(())
    }

    fn attach_one(
        &self,
        ebpf: &mut Ebpf,
        prog_name: &'static str,
        ifname: &str,
        ty: TcAttachType,
    ) -> Result<SchedClassifierLinkId> {
        let prog: &mut SchedClassifier =
            ebpf.program_mut(prog_name).context("program")?.try_into()?;
        let how = if self.tcx {
            tc::TcAttachOptions::TcxOrder(Default::default())
        } else {
            tc::TcAttachOptions::Netlink(Default::default())
        };
        prog.attach_with_options(ifname, ty, how)
            .map_err(|e| anyhow!(e))
    }

    /// Detaches what is on interface `index` (errors are the interface's
    /// being gone already, and with it the programs); its name, if it had any.
    pub(crate) fn detach(&mut self, ebpf: &mut Ebpf, index: u32) -> Option<String> {
        let on = self.by_index.remove(&index)?;
        self.order.retain(|i| *i != index);
        let name = on.name.clone();
        undo(ebpf, index, on);
        Some(name)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_index.len()
    }

    /// The interfaces with programs, in the order they got them.
    pub(crate) fn names(&self) -> Vec<String> {
        self.order
            .iter()
            .filter_map(|i| self.by_index.get(i))
            .map(|on| on.name.clone())
            .collect()
    }

    /// The interfaces whose clsact qdisc calitrace added, forgotten here:
    /// the caller removes them once the programs are gone.
    pub(crate) fn take_clsact(&mut self) -> Vec<u32> {
        self.by_index
            .iter_mut()
            .filter_map(|(i, on)| std::mem::take(&mut on.clsact).then_some(*i))
            .collect()
    }
}

/// Loads the program `name` unless it is loaded already.
fn load_once(ebpf: &mut Ebpf, name: &'static str) -> Result<()> {
    let prog: &mut SchedClassifier = ebpf.program_mut(name).context(name)?.try_into()?;
    if prog.fd().is_err() {
        prog.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(())
}

/// Detaches `on`'s links from interface `index` and removes the qdisc
/// calitrace added there.
fn undo(ebpf: &mut Ebpf, index: u32, on: OnInterface) {
    for (prog_name, id) in on.links {
        let prog: Option<&mut SchedClassifier> =
            ebpf.program_mut(prog_name).and_then(|p| p.try_into().ok());
        if let Some(prog) = prog {
            let _ = prog.detach(id);
        }
    }
    if on.clsact {
        let _ = netlink::delete_clsact(index);
    }
}
