//! WIREGUARD_REFUSED: WireGuard decrypted packets and threw them away
//! because their source is outside the allowed IPs of the peer that sent
//! them (the device's `rx_frame_errors`: WireGuard frees them without a drop
//! reason the drop tracepoint reports).

use super::problem::{Finding, Problem};
use crate::model::{Code, Diagnosis, Stage, WireguardRefusal};

pub fn wireguard_refused(r: &WireguardRefusal) -> Finding {
    let peers = r
        .peers
        .as_deref()
        .map_or_else(String::new, |p| format!(" (peers: {p})"));
    Finding {
        problem: Problem::WireguardRefused {
            ifname: r.ifname.clone(),
        },
        diagnosis: Diagnosis {
            code: Code::WireguardRefused,
            stage: Some(Stage::Other),
            ifname: Some(r.ifname.clone()),
            summary: format!(
                "WireGuard on {} refused decrypted packets whose source is outside the sending peer's allowed IPs{peers}",
                r.ifname
            ),
            hint: format!(
                "Felix sets each peer's allowed IPs to its node's pod blocks and tunnel address: a pod whose address comes from a block the sending node does not own (a borrowed IPAM block, calico#9751) or a stale peer is refused; compare `wg show {} allowed-ips` with `calicoctl ipam show --show-blocks`",
                r.ifname
            ),
            ..Default::default()
        },
    }
}
