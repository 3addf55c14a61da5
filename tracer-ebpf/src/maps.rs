//! Maps and load-time globals shared by all programs.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    EncapEvent, Event, SkbOffsets, counter,
    filter::{EvalState, FilterProg},
};

/// Events to userspace. Userspace resizes it at load time (`--ring-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Slot 0 holds the compiled FILTER; userspace may replace it while tracing.
#[map]
pub static FILTER: Array<FilterProg> = Array::with_max_entries(1, 0);

/// Network namespaces (inode numbers) whose drops are reported.
#[map]
pub static NETNS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Per-CPU scratch space for the event being built (the BPF stack is 512 bytes).
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch space for an encapsulated packet's event (the tc programs
/// keep the outer packet in [`SCRATCH`] meanwhile).
#[map]
pub static ENCAP_SCRATCH: PerCpuArray<EncapEvent> = PerCpuArray::with_max_entries(1, 0);

/// The filter evaluator's stack (see `tracer_common::filter::EvalState`).
#[map]
pub static FILTER_STATE: PerCpuArray<EvalState> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Struct offsets of the running kernel, from its BTF.
#[unsafe(no_mangle)]
pub static SKB_OFFSETS: Global<SkbOffsets> = Global::new(SkbOffsets::UNSET);

/// Non-zero: report drops only from namespaces in [`NETNS`].
#[unsafe(no_mangle)]
pub static NETNS_FILTER: Global<u8> = Global::new(0);

/// Inode of the network namespace the tc programs are attached in.
#[unsafe(no_mangle)]
pub static TC_NETNS: Global<u32> = Global::new(0);

/// UDP destination port of VXLAN on this node (the port of `vxlan.calico`);
/// 0: VXLAN is not decoded.
#[unsafe(no_mangle)]
pub static VXLAN_PORT: Global<u16> = Global::new(4789);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a valid pointer to this CPU's counter; a program does not
        // migrate while it runs, so nothing else writes it meanwhile.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn filter_matches(pkt: &tracer_common::PacketMeta) -> bool {
    match (FILTER.get(0), FILTER_STATE.get_ptr_mut(0)) {
        (Some(prog), Some(st)) => {
            // SAFETY: this CPU's slot of a per-CPU map, valid and used by
            // nothing else while this program runs.
            tracer_common::filter::matches_with(prog, pkt, unsafe { &mut *st })
        }
        _ => true,
    }
}
