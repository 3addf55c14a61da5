//! The drop program: raw tracepoint `kfree_skb(skb, location, reason, ...)`.
//!
//! A raw tracepoint needs no tracefs. Rust eBPF has no CO-RE, so the skb is read
//! with `bpf_probe_read_kernel` at offsets userspace took from the running
//! kernel's BTF (`SKB_OFFSETS`).

use aya_ebpf::{
    Global,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use tracer_common::{SkbOffsets, counter, kind};

use crate::{
    maps::{NETNS, NETNS_FILTER, SKB_OFFSETS, count, emit, filter_matches, scratch_event},
    parse::{Reader, parse_l3},
};

/// Non-zero when the tracepoint has a `reason` argument (kernel >= 5.17).
#[unsafe(no_mangle)]
static HAS_REASON: Global<u8> = Global::new(1);

struct Kernel(u64);

impl Reader for Kernel {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        unsafe { bpf_probe_read_kernel((self.0 + off as u64) as *const T) }.ok()
    }
}

#[inline(always)]
fn field<T: Copy>(base: u64, off: u16) -> Option<T> {
    if base == 0 || off == SkbOffsets::ABSENT {
        return None;
    }
    Kernel(base).read::<T>(off as usize)
}

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb(ctx: RawTracePointContext) -> i32 {
    count(counter::DROP_SEEN);
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u64 = if HAS_REASON.load() != 0 {
        ctx.arg(2)
    } else {
        0
    };
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
    let netns: u32 = field(net, off.net_ns_inum).unwrap_or(0);
    if NETNS_FILTER.load() != 0 && unsafe { NETNS.get(netns) }.is_none() {
        return 0;
    }

    let Some(ev) = scratch_event() else { return 0 };
    let head: u64 = field(skb, off.skb_head).unwrap_or(0);
    let nh: u16 = field(skb, off.skb_network_header).unwrap_or(u16::MAX);
    let protocol: u16 = field(skb, off.skb_protocol).unwrap_or(0);
    if head != 0 && nh != u16::MAX {
        parse_l3(
            &Kernel(head),
            nh as usize,
            u16::from_be(protocol),
            &mut ev.pkt,
        );
    }
    if !filter_matches(&ev.pkt) {
        return 0;
    }
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.location = location;
    ev.kind = kind::DROP;
    ev.dir = tracer_common::dir::NONE;
    ev.ifindex = ifindex;
    ev.netns = netns;
    ev.reason = reason as u32;
    ev.skb_len = field(skb, off.skb_len).unwrap_or(0);
    ev.mark = field(skb, off.skb_mark).unwrap_or(0);
    emit(ev, counter::DROP_EMITTED);
    0
}
