//! The BPF programs attached at an interface's tc hooks, by name: TCX links
//! (kernel 6.6+) and clsact filters alike, as another program (Calico's
//! Felix) attached them.

use std::io;

use aya::programs::tc::{SchedClassifier, TcAttachType};

/// The names of the programs at `iface`'s tc ingress and egress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcPrograms {
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

pub fn attached(iface: &str, ifindex: u32) -> io::Result<TcPrograms> {
    let mut p = TcPrograms {
        ingress: super::tc_filters::names(ifindex, true)?,
        egress: super::tc_filters::names(ifindex, false)?,
    };
    for (hook, names) in [
        (TcAttachType::Ingress, &mut p.ingress),
        (TcAttachType::Egress, &mut p.egress),
    ] {
        // Kernels without TCX answer EINVAL: their programs are filters.
        if let Ok((_, infos)) = SchedClassifier::query_tcx(iface, hook) {
            names.extend(
                infos
                    .iter()
                    .filter_map(|i| i.name_as_str().map(str::to_string)),
            );
        }
    }
    Ok(p)
}
