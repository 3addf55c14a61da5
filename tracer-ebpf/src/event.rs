//! Building an event in per-CPU scratch memory and handing it to userspace:
//! the same steps for the plain [`Event`] (tc, drops) and the types that
//! start with one: [`NfEvent`] (netfilter verdicts and hook observations)
//! and [`EncapEvent`] (encapsulated packets seen by tc).

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    maps::PerCpuArray,
};
use tracer_common::{EncapEvent, Event, NfEvent, counter};

use crate::maps::{EVENTS, count, filter_matches};

/// What the programs put in the ring buffer: an [`Event`] or a type that
/// starts with one.
pub trait RingEvent: Default + 'static {
    fn event(&mut self) -> &mut Event;
}

impl RingEvent for Event {
    #[inline(always)]
    fn event(&mut self) -> &mut Event {
        self
    }
}

impl RingEvent for NfEvent {
    #[inline(always)]
    fn event(&mut self) -> &mut Event {
        &mut self.ev
    }
}

impl RingEvent for EncapEvent {
    #[inline(always)]
    fn event(&mut self) -> &mut Event {
        &mut self.ev
    }
}

/// The zeroed per-CPU event of `map` to fill in: the parser and the filter
/// evaluator leave no room for it on the 512-byte BPF stack.
// `&mut` from `&map`: the value is this CPU's, and a program does not
// migrate while it runs.
#[allow(clippy::mut_from_ref)]
#[inline(always)]
pub fn scratch<T: RingEvent>(map: &'static PerCpuArray<T>) -> Option<&'static mut T> {
    let ev = map.get_ptr_mut(0)?;
    zero(ev);
    // SAFETY: a valid pointer to this CPU's value, the only reference to it
    // while the program runs (see above).
    Some(unsafe { &mut *ev })
}

/// Sets `*p` to all zero bytes (what `T::default()` is for the event types)
/// eight bytes at a time: `*p = T::default()` compiled to a call to a
/// byte-at-a-time `memset` loop, some 400 instructions per event. The stores
/// are volatile so that LLVM does not turn them back into that call.
#[inline(always)]
fn zero<T: RingEvent>(p: *mut T) {
    const { assert!(core::mem::size_of::<T>() % 8 == 0) };
    let words = p.cast::<u64>();
    let mut i = 0;
    while i < core::mem::size_of::<T>() / 8 {
        // SAFETY: within `*p`, which is 8-byte aligned (it holds a u64).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

/// Whether the parsed packet of `ev` passes the filter; if so, stamps the
/// event with the time, its kind and where the packet was.
#[inline(always)]
pub fn accept(ev: &mut Event, kind: u8, netns: u32, ifindex: u32) -> bool {
    if !filter_matches(&ev.pkt) {
        return false;
    }
    stamp(ev, kind, netns, ifindex);
    true
}

/// Stamps an accepted event with the time, its kind and where the packet was.
#[inline(always)]
pub fn stamp(ev: &mut Event, kind: u8, netns: u32, ifindex: u32) {
    // SAFETY: a helper without arguments or preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.kind = kind;
    // SAFETY: a helper without arguments or preconditions.
    ev.cpu = unsafe { bpf_get_smp_processor_id() } as u16;
    ev.netns = netns;
    ev.ifindex = ifindex;
}

/// Copies `ev` into the ring buffer and counts it under `emitted`, or under
/// `LOST` when the ring is full.
#[inline(always)]
pub fn emit<T: RingEvent>(ev: &T, emitted: u32) {
    if EVENTS.output::<T>(ev, 0).is_ok() {
        count(emitted);
    } else {
        count(counter::LOST);
    }
}
