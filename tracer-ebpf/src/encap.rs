//! Tunnels on the uplink: where the inner packet of a VXLAN or IPIP packet
//! starts, so that the tc programs can report it by its inner headers.
//! WireGuard encrypts its payload: nothing to decode.
//!
//! Plain Rust over [`Reader`]: `tracer-common/tests/ebpf_parse.rs` runs it
//! (and `parse.rs`) on packets built in userspace.

use tracer_common::{IPPROTO_IPIP, PacketMeta, encap, l3, pkt_flags, proto};

use crate::parse::{ETH_P_IP, Reader};

/// The inner packet of an encapsulated one.
pub struct Inner {
    /// Offset of the inner layer 3 header.
    pub off: usize,
    pub ethertype: u16,
    /// [`encap`].
    pub encap: u8,
    pub vni: u32,
}

/// VXLAN header flags: the VNI is valid (RFC 7348).
const VXLAN_FLAG_VNI: u8 = 0x08;
const UDP_HEADER: usize = 8;
const VXLAN_HEADER: usize = 8;
const ETH_HEADER: usize = 14;

/// The inner packet of `outer` (as parsed, its layer 4 header at `l4`):
/// UDP to `vxlan_port` (0: none) with a valid VXLAN header, or IPv4
/// protocol 4. `None` for any other packet.
#[inline(always)]
pub fn inner<R: Reader>(
    r: &R,
    outer: &PacketMeta,
    l4: Option<usize>,
    vxlan_port: u16,
) -> Option<Inner> {
    let l4 = l4?;
    if outer.proto == proto::UDP && outer.flags & pkt_flags::L4 != 0 {
        if vxlan_port == 0 || outer.dport != vxlan_port {
            return None;
        }
        let vx = r.read::<[u8; VXLAN_HEADER]>(l4 + UDP_HEADER)?;
        if vx[0] & VXLAN_FLAG_VNI == 0 {
            return None;
        }
        let eth_off = l4 + UDP_HEADER + VXLAN_HEADER;
        let eth = r.read::<[u8; ETH_HEADER]>(eth_off)?;
        return Some(Inner {
            off: eth_off + ETH_HEADER,
            ethertype: u16::from_be_bytes([eth[12], eth[13]]),
            encap: encap::VXLAN,
            vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
        });
    }
    if outer.l3 == l3::IPV4 && outer.proto == IPPROTO_IPIP {
        return Some(Inner {
            off: l4,
            ethertype: ETH_P_IP,
            encap: encap::IPIP,
            vni: 0,
        });
    }
    None
}
