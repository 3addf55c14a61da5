//! The tc programs' first look at a packet: where the filter names hosts or
//! nets ([`QuickNets`]), a packet with neither address in them is turned away
//! after reading its two addresses, before the parse, the scratch event and
//! the filter's evaluation.
//!
//! Plain Rust over [`Reader`]: `tracer-user/tests/ebpf_prefilter.rs` runs it
//! beside the full parse and filter on packets built in userspace.

use tracer_common::{
    IPPROTO_IPIP,
    filter::{QuickNets, quick_passes},
    proto,
};

use crate::parse::{ETH_P_IP, ETH_P_IPV6, Reader};

/// Whether `q` turns away the packet whose layer 3 header (of `ethertype`)
/// starts at `off`: an IPv4 or IPv6 packet carrying no tunnel that calitrace
/// decodes (VXLAN to `vxlan_port`, IPIP: the filter may pass those by their
/// inner packet), neither of whose addresses is in `q`. False where in doubt
/// (other protocols, extension headers, headers cut short): the packet then
/// gets the full parse and the filter.
#[inline(always)]
pub fn turned_away<R: Reader>(
    r: &R,
    off: usize,
    ethertype: u16,
    q: &QuickNets,
    vxlan_port: u16,
) -> bool {
    if q.len == 0 {
        return false;
    }
    let verdict = match ethertype {
        ETH_P_IP => ipv4_turned_away(r, off, q, vxlan_port),
        ETH_P_IPV6 => ipv6_turned_away(r, off, q, vxlan_port),
        _ => None,
    };
    verdict.unwrap_or(false)
}

#[inline(always)]
fn ipv4_turned_away<R: Reader>(r: &R, off: usize, q: &QuickNets, vxlan_port: u16) -> Option<bool> {
    let (h, src, dst) = if R::PLAIN_LOADS {
        let h = r.read::<[u8; 10]>(off)?;
        (h, r.word(off + 12)?, r.word(off + 16)?)
    } else {
        let h = r.read::<[u8; 20]>(off)?;
        let first = [h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]];
        (first, word(&h, 12), word(&h, 16))
    };
    if h[0] >> 4 != 4 || h[9] == IPPROTO_IPIP {
        return None;
    }
    if h[9] == proto::UDP && may_be_vxlan(r, off + (h[0] & 0x0f) as usize * 4, vxlan_port) {
        return None;
    }
    Some(!quick_passes(q, 4, &[src, 0, 0, 0], &[dst, 0, 0, 0]))
}

#[inline(always)]
fn ipv6_turned_away<R: Reader>(r: &R, off: usize, q: &QuickNets, vxlan_port: u16) -> Option<bool> {
    let (next, src, dst) = if R::PLAIN_LOADS {
        let h = r.read::<[u8; 7]>(off)?;
        let a = |at: usize| r.word(off + at);
        let src = [a(8)?, a(12)?, a(16)?, a(20)?];
        (h[0] >> 4 == 6).then_some((h[6], src, [a(24)?, a(28)?, a(32)?, a(36)?]))?
    } else {
        let h = r.read::<[u8; 40]>(off)?;
        let src = [word(&h, 8), word(&h, 12), word(&h, 16), word(&h, 20)];
        let dst = [word(&h, 24), word(&h, 28), word(&h, 32), word(&h, 36)];
        (h[0] >> 4 == 6).then_some((h[6], src, dst))?
    };
    match next {
        proto::TCP | proto::ICMPV6 => {}
        proto::UDP if !may_be_vxlan(r, off + 40, vxlan_port) => {}
        _ => return None,
    }
    Some(!quick_passes(q, 6, &src, &dst))
}

/// Whether the UDP header at `l4` may be VXLAN's (its destination port
/// unreadable counts as may).
#[inline(always)]
fn may_be_vxlan<R: Reader>(r: &R, l4: usize, vxlan_port: u16) -> bool {
    if vxlan_port == 0 {
        return false;
    }
    match r.read::<[u8; 4]>(l4) {
        Some(p) => u16::from_be_bytes([p[2], p[3]]) == vxlan_port,
        None => true,
    }
}

/// The address word at `at` of a header read whole, as the filter's
/// instructions hold it.
#[inline(always)]
fn word<const N: usize>(h: &[u8; N], at: usize) -> u32 {
    u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}
