//! The drop program: raw tracepoint `kfree_skb(skb, location, reason, ...)`.
//!
//! A raw tracepoint needs no tracefs. Rust eBPF has no CO-RE, so the skb is read
//! with `bpf_probe_read_kernel` at offsets userspace took from the running
//! kernel's BTF (`SKB_OFFSETS`).

use aya_ebpf::{Global, macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::{counter, kind};

use crate::event::emit;
use crate::maps::{SCRATCH, count};
use crate::skb::{len_and_mark, skb_event};

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
    let Some(ev) = skb_event(skb, &SCRATCH, kind::DROP) else {
        return 0;
    };
    ev.location = location;
    ev.dir = tracer_common::dir::NONE;
    ev.reason = reason as u32;
    len_and_mark(skb, ev);
    emit(ev, counter::DROP_EMITTED);
    0
}
