//! MTU_EXCEEDED, and OTHER for every drop reason without a diagnosis of its own.

use super::problem::{Finding, Problem, of_flow, pair, pair_text};
use crate::model::{Code, DropRecord};

/// A packet too big for the path with DF set.
pub fn mtu_exceeded(d: &DropRecord) -> Finding {
    Finding {
        problem: Problem::MtuExceeded { flow: pair(d) },
        diagnosis: of_flow(
            d,
            Code::MtuExceeded,
            crate::model::Stage::Mtu,
            format!(
                "{}: packet of {} bytes too big for the path (DF set)",
                pair_text(d),
                d.detail.len
            ),
            "check the MTU of the pod interface, cali*, and the tunnel (vxlan.calico needs 50 bytes less than the uplink, tunl0 20); Calico's veth MTU setting must fit the encapsulation".into(),
        ),
    }
}

/// Any other drop reason, named with where the kernel freed the packet.
pub fn other(d: &DropRecord) -> Finding {
    let loc = d.location.as_deref().unwrap_or("?");
    let reason = &d.reason;
    Finding {
        problem: Problem::Other {
            reason: d.reason.to_string(),
            location: d.location.clone(),
            flow: pair(d),
        },
        diagnosis: of_flow(
            d,
            Code::Other,
            d.stage,
            format!("{} dropped: {reason} in {loc}", pair_text(d)),
            format!(
                "the kernel's drop reason is {reason}; see where {loc} frees packets for this reason"
            ),
        ),
    }
}
