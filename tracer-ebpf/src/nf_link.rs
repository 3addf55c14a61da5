//! Netfilter hook observation points: a `BPF_PROG_TYPE_NETFILTER` program
//! (kernel >= 6.4) that userspace attaches with BPF netfilter links at chosen
//! (family, hook, priority) points: the entry and exit of each IPv4/IPv6 hook
//! and just after the priority of each table or base chain. It observes only:
//! every packet continues (NF_ACCEPT).
//!
//! aya 0.14 has no netfilter program type and fails on an unknown `netfilter`
//! section, so the function lives in a `classifier/...` section: aya parses it
//! as a classifier it is never asked to load, and userspace loads it itself as
//! a netfilter program (`tracer-user/src/probes/nf_link.rs`).
//!
//! The context, `struct bpf_nf_ctx { const struct nf_hook_state *state;
//! struct sk_buff *skb; }`, does not say at which priority the program runs,
//! so every priority gets its own loaded copy whose `NF_POINT` map userspace
//! replaces with one holding that copy's point.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use tracer_common::{NfEvent, NfPoint, counter, kind, nf_point};

use crate::event::emit;
use crate::maps::count;
use crate::netfilter::hook_and_pf;
use crate::skb::{len_and_mark, skb_event};

/// The packet goes on to the next hook entry.
const NF_ACCEPT: i32 = 1;

/// This copy's observation point. Userspace points each loaded copy at a
/// one-entry map of its own; this one (created by aya) is never read.
#[map]
static NF_POINT: Array<NfPoint> = Array::with_max_entries(1, 0);

/// The event being built (the BPF stack is 512 bytes).
#[map]
static HOOK_SCRATCH: PerCpuArray<NfEvent> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub struct BpfNfCtx {
    state: u64,
    skb: u64,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier/nf_hook")]
fn nf_hook(ctx: *mut BpfNfCtx) -> i32 {
    // SAFETY: the kernel passes a valid bpf_nf_ctx. The verifier allows only
    // whole 8-byte loads of the two pointers (hence volatile).
    let state = unsafe { core::ptr::read_volatile(&(*ctx).state) };
    let skb = unsafe { core::ptr::read_volatile(&(*ctx).skb) };
    observe(state, skb);
    NF_ACCEPT
}

/// The last decision of the link programs on this CPU: the points of one
/// hook run back to back for a packet (the state is on the stack of the
/// hook's caller), so the points after the hook's entry reuse the entry's
/// "not wanted" instead of reading the packet again. Entry points always
/// decide afresh: a freed skb's address may carry the next packet.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastDecision {
    skb: u64,
    state: u64,
    wanted: u64,
}

#[map]
static LAST_DECISION: PerCpuArray<LastDecision> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn observe(state: u64, skb: u64) {
    count(counter::HOOK_SEEN);
    let point = NF_POINT.get(0).copied().unwrap_or_default();
    let Some(last) = LAST_DECISION.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU map, valid and used by nothing
    // else while this program runs.
    let last = unsafe { &mut *last };
    if point.point != nf_point::ENTRY && last.skb == skb && last.state == state && last.wanted == 0
    {
        return;
    }
    last.skb = skb;
    last.state = state;
    last.wanted = 0;
    let Some(nf) = skb_event(skb, &HOOK_SCRATCH, kind::HOOK) else {
        return;
    };
    last.wanted = 1;
    nf.ev.dir = tracer_common::dir::NONE;
    len_and_mark(skb, &mut nf.ev);
    hook_and_pf(state, nf);
    nf.point = point.point;
    nf.priority = point.priority;
    emit(nf, counter::HOOK_EMITTED);
}
