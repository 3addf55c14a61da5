//! The drop program: raw tracepoint `kfree_skb(skb, location, reason, ...)`.
//!
//! A raw tracepoint needs no tracefs. Rust eBPF has no CO-RE, so the skb is read
//! with `bpf_probe_read_kernel` at offsets userspace took from the running
//! kernel's BTF (`SKB_OFFSETS`).

use aya_ebpf::{
    Global, helpers::bpf_ktime_get_ns, macros::raw_tracepoint, programs::RawTracePointContext,
};
use tracer_common::{counter, kind};

use crate::maps::{SKB_OFFSETS, count, emit, filter_matches, scratch_event};
use crate::skb::{field, netns_and_ifindex, netns_wanted, parse};

/// Non-zero when the tracepoint has a `reason` argument (kernel >= 5.17).
#[unsafe(no_mangle)]
static HAS_REASON: Global<u8> = Global::new(1);

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
    let (netns, ifindex) = netns_and_ifindex(skb);
    if !netns_wanted(netns) {
        return 0;
    }
    let Some(ev) = scratch_event() else { return 0 };
    parse(skb, &mut ev.pkt);
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
