//! tc classifiers: observe packets on `cali*`, tunnel and uplink interfaces.
//! They never change the packet or its fate (always TC_ACT_UNSPEC / TCX_NEXT).
//!
//! A VXLAN or IPIP packet (on the uplink) is reported by its inner packet,
//! with its outer headers beside it ([`EncapEvent`]), so that the same packet
//! has the same key on both nodes; the FILTER passes it when either matches.

use aya_ebpf::{macros::classifier, programs::TcContext};
use tracer_common::{EncapEvent, Event, OuterMeta, counter, dir, kind, l3};

use crate::encap::{Inner, inner};
use crate::event::{emit, scratch, stamp};
use crate::maps::{ENCAP_SCRATCH, FILTER, SCRATCH, TC_NETNS, VXLAN_PORT, count, filter_matches};
use crate::parse::{Reader, parse_l3};
use crate::prefilter::turned_away;

/// Lets other programs on the hook run and the packet continue.
const TC_ACT_UNSPEC: i32 = -1;

/// A packet whose data is not all linear (GSO payload in page fragments):
/// headers are copied out with `bpf_skb_load_bytes`.
struct Packet<'a>(&'a TcContext);

impl Reader for Packet<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.load::<T>(off).ok()
    }
}

/// The linear data of a packet (`data` to `data_end`): headers are plain
/// loads, where a helper call per header was most of the work when the
/// filter then says no. Reads fail past `data_end`: for a packet that is all
/// linear data (`data_end - data == skb->len`, as most small packets are),
/// exactly where `bpf_skb_load_bytes` would.
struct Linear {
    start: usize,
    end: usize,
}

/// Offsets above this cannot be inside a linear packet (at most 64 KiB);
/// the bound lets the verifier add an offset to a packet pointer.
const MAX_OFFSET: usize = 0xffff;

impl Reader for Linear {
    const PLAIN_LOADS: bool = true;

    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        if off > MAX_OFFSET || self.start + off + core::mem::size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: within [data, data_end), which the verifier checks too.
        Some(unsafe { ((self.start + off) as *const T).read_unaligned() })
    }

    /// One 4-byte load, where an unaligned read is four byte loads and the
    /// shifts joining them (LLVM's BPF target assumes no unaligned access;
    /// the kernel allows it from packet data where the CPU does, as x86-64
    /// and arm64 do).
    #[inline(always)]
    fn word(&self, off: usize) -> Option<u32> {
        if off > MAX_OFFSET || self.start + off + 4 > self.end {
            return None;
        }
        let w: u32;
        // SAFETY: the four bytes are within [data, data_end) (checked above,
        // and by the verifier); the load writes nothing.
        unsafe {
            core::arch::asm!(
                "{w} = *(u32 *)({p} + 0)",
                w = lateout(reg) w,
                p = in(reg) self.start + off,
                options(pure, readonly, nostack, preserves_flags),
            )
        };
        Some(w)
    }
}

/// The filter's quick nets first, in the program itself: most packets end
/// there where a filter names hosts or nets. The rest are observed by a
/// function of its own, one per program.
#[inline(always)]
fn observe<const DIRECTION: u8, const HAS_L2: bool>(ctx: &TcContext) {
    if prefiltered(ctx, HAS_L2) {
        count(counter::TC_PREFILTERED);
        return;
    }
    count(counter::TC_SEEN);
    observe_passed::<DIRECTION, HAS_L2>(ctx);
}

/// Chooses the reader once per packet, so that the verifier walks each
/// parser once per kind of reader rather than every mix of the two.
#[inline(never)]
fn observe_passed<const DIRECTION: u8, const HAS_L2: bool>(ctx: &TcContext) {
    // SAFETY: the kernel passes a valid __sk_buff for the program's whole run.
    let skb = unsafe { &*ctx.skb.skb };
    let head = linear(ctx);
    if head.end - head.start == skb.len as usize {
        observe_with(ctx, &head, DIRECTION, HAS_L2);
    } else {
        observe_with(ctx, &Packet(ctx), DIRECTION, HAS_L2);
    }
}

#[inline(always)]
fn linear(ctx: &TcContext) -> Linear {
    Linear {
        start: ctx.data(),
        end: ctx.data_end(),
    }
}

/// Whether the filter's quick nets turn the packet away from the headers in
/// its linear data (where they are not all there, the full parse decides).
/// The filter's slot is looked up before the packet's pointers are read, so
/// that they stay in registers across the lookup.
#[inline(always)]
fn prefiltered(ctx: &TcContext, has_l2: bool) -> bool {
    let Some(prog) = FILTER.get(0) else {
        return false;
    };
    let head = linear(ctx);
    let (off, ethertype) = if has_l2 {
        match head.read::<[u8; 2]>(12) {
            Some(t) => (14, u16::from_be_bytes(t)),
            None => return false,
        }
    } else {
        // SAFETY: the kernel passes a valid __sk_buff for the program's whole run.
        let skb = unsafe { &*ctx.skb.skb };
        (0, u16::from_be(skb.protocol as u16))
    };
    turned_away(&head, off, ethertype, &prog.quick, VXLAN_PORT.load())
}

#[inline(always)]
fn observe_with<R: Reader>(ctx: &TcContext, reader: &R, direction: u8, has_l2: bool) {
    // SAFETY: the kernel passes a valid __sk_buff for the program's whole run.
    let skb = unsafe { &*ctx.skb.skb };
    let Some(ev) = scratch(&SCRATCH) else { return };
    let l4 = if has_l2 {
        let Some(eth) = reader.read::<[u8; 14]>(0) else {
            return;
        };
        parse_l3(
            reader,
            14,
            u16::from_be_bytes([eth[12], eth[13]]),
            &mut ev.pkt,
        )
    } else {
        // Devices without a link-layer header (tunl0, wireguard): skb->protocol
        // says what the data starts with.
        parse_l3(reader, 0, u16::from_be(skb.protocol as u16), &mut ev.pkt)
    };
    if let Some(tunnel) = inner(reader, &ev.pkt, l4, VXLAN_PORT.load())
        && let Some(enc) = decapsulated(reader, ev, tunnel)
    {
        if filter_matches(&enc.ev.pkt) || filter_matches(&ev.pkt) {
            finish(ctx, &mut enc.ev, kind::TC_ENCAP, direction);
            emit(enc, counter::TC_EMITTED);
        }
        return;
    }
    if filter_matches(&ev.pkt) {
        finish(ctx, ev, kind::TC, direction);
        emit(ev, counter::TC_EMITTED);
    }
}

/// The event of an encapsulated packet: its inner packet parsed, `outer`'s
/// headers beside it. `None` where the inner packet is none calitrace reads
/// (then the outer one is reported as it is).
#[inline(always)]
fn decapsulated<R: Reader>(
    reader: &R,
    outer: &Event,
    tunnel: Inner,
) -> Option<&'static mut EncapEvent> {
    let enc = scratch(&ENCAP_SCRATCH)?;
    parse_l3(reader, tunnel.off, tunnel.ethertype, &mut enc.ev.pkt);
    if enc.ev.pkt.l3 == l3::NONE {
        return None;
    }
    enc.outer = OuterMeta::of(&outer.pkt, tunnel.encap, tunnel.vni);
    Some(enc)
}

/// Time, kind, place and what tc knows of the skb.
#[inline(always)]
fn finish(ctx: &TcContext, ev: &mut Event, kind: u8, direction: u8) {
    // SAFETY: the kernel passes a valid __sk_buff for the program's whole run.
    let skb = unsafe { &*ctx.skb.skb };
    stamp(ev, kind, TC_NETNS.load(), skb.ifindex);
    ev.dir = direction;
    ev.skb_len = skb.len;
    ev.mark = skb.mark;
}

/// One classifier per direction and link-layer kind; each only observes.
macro_rules! classifiers {
    ($($name:ident: $direction:expr, $has_l2:expr;)*) => {$(
        #[classifier]
        #[inline(always)]
        pub fn $name(ctx: TcContext) -> i32 {
            observe::<{ $direction }, { $has_l2 }>(&ctx);
            TC_ACT_UNSPEC
        }
    )*};
}

classifiers! {
    tc_ingress: dir::INGRESS, true;
    tc_egress: dir::EGRESS, true;
    tc_ingress_l3: dir::INGRESS, false;
    tc_egress_l3: dir::EGRESS, false;
}
