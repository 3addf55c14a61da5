//! Reading a kernel `struct sk_buff` (drop and netfilter programs): offsets
//! come from the running kernel's BTF via `SKB_OFFSETS`.

use aya_ebpf::{helpers::bpf_probe_read_kernel, maps::PerCpuArray};
use tracer_common::{Event, SkbOffsets};

use crate::event::{RingEvent, accept, scratch};
use crate::maps::{FILTER, NETNS, NETNS_FILTER, SKB_OFFSETS};
use crate::parse::{Reader, parse_l3};
use crate::prefilter::turned_away;

/// Kernel memory starting at an address.
pub struct Kernel(pub u64);

impl Reader for Kernel {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        // SAFETY: the helper checks the kernel address itself and fails on a
        // bad one; T is plain `Copy` data.
        unsafe { bpf_probe_read_kernel((self.0 + off as u64) as *const T) }.ok()
    }
}

/// A field at `off` of the kernel object at `base`; `None` for a null base or
/// an offset this kernel does not have.
#[inline(always)]
pub fn field<T: Copy>(base: u64, off: u16) -> Option<T> {
    if base == 0 || off == SkbOffsets::ABSENT {
        return None;
    }
    Kernel(base).read::<T>(off as usize)
}

/// (netns inode, ifindex) of an skb: from its device, else from its socket.
#[inline(always)]
fn netns_and_ifindex(skb: u64) -> (u32, u32) {
    let off = SKB_OFFSETS.load();
    let dev: u64 = field(skb, off.skb_dev).unwrap_or(0);
    let ifindex: u32 = field(dev, off.dev_ifindex).unwrap_or(0);
    let net: u64 = match field::<u64>(dev, off.dev_nd_net) {
        Some(net) if net != 0 => net,
        _ => {
            let sk: u64 = field(skb, off.skb_sk).unwrap_or(0);
            field(sk, off.sk_net).unwrap_or(0)
        }
    };
    (field(net, off.net_ns_inum).unwrap_or(0), ifindex)
}

/// Whether drops/verdicts in this namespace are reported.
#[inline(always)]
fn netns_wanted(netns: u32) -> bool {
    // SAFETY: only whether the entry exists is used, never the value, which
    // userspace may change meanwhile.
    NETNS_FILTER.load() == 0 || unsafe { NETNS.get(netns) }.is_some()
}

/// Where an skb's layer 3 header is, and its ethertype.
struct NetworkHeader {
    head: u64,
    off: usize,
    ethertype: u16,
}

#[inline(always)]
fn network_header(skb: u64) -> Option<NetworkHeader> {
    let off = SKB_OFFSETS.load();
    let head: u64 = field(skb, off.skb_head)?;
    let nh: u16 = field(skb, off.skb_network_header)?;
    let protocol: u16 = field(skb, off.skb_protocol).unwrap_or(0);
    (head != 0 && nh != u16::MAX).then_some(NetworkHeader {
        head,
        off: nh as usize,
        ethertype: u16::from_be(protocol),
    })
}

/// Whether the filter's quick nets turn the packet away by its addresses.
/// No tunnel is decoded here (the filter sees the packet as it is), so
/// VXLAN needs no exception (port 0).
#[inline(always)]
fn prefiltered(nh: &NetworkHeader) -> bool {
    let Some(prog) = FILTER.get(0) else {
        return false;
    };
    turned_away(&Kernel(nh.head), nh.off, nh.ethertype, &prog.quick, 0)
}

/// The event of `kind` to report for an skb, from the zeroed scratch of
/// `map`: its headers parsed, stamped with time, netns and ifindex. `None`
/// when the skb's namespace is not wanted or its packet fails the filter
/// (its addresses alone, where they can tell, before anything else is read).
#[inline(always)]
pub fn skb_event<T: RingEvent>(
    skb: u64,
    map: &'static PerCpuArray<T>,
    kind: u8,
) -> Option<&'static mut T> {
    let nh = network_header(skb);
    if let Some(nh) = &nh
        && prefiltered(nh)
    {
        return None;
    }
    let (netns, ifindex) = netns_and_ifindex(skb);
    if !netns_wanted(netns) {
        return None;
    }
    let out = scratch(map)?;
    let ev = out.event();
    if let Some(nh) = &nh {
        parse_l3(&Kernel(nh.head), nh.off, nh.ethertype, &mut ev.pkt);
    }
    accept(ev, kind, netns, ifindex).then_some(out)
}

/// `skb->len` and `skb->mark` into `ev`.
#[inline(always)]
pub fn len_and_mark(skb: u64, ev: &mut Event) {
    let off = SKB_OFFSETS.load();
    ev.skb_len = field(skb, off.skb_len).unwrap_or(0);
    ev.mark = field(skb, off.skb_mark).unwrap_or(0);
}
