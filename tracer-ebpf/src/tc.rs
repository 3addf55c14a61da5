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
use crate::maps::{ENCAP_SCRATCH, SCRATCH, TC_NETNS, VXLAN_PORT, count, filter_matches};
use crate::parse::{Reader, parse_l3};

/// Lets other programs on the hook run and the packet continue.
const TC_ACT_UNSPEC: i32 = -1;

struct Packet<'a>(&'a TcContext);

/// Headers further in than this are read with `bpf_skb_load_bytes`; the
/// bound also keeps the offset small enough for the verifier to add it to
/// a packet pointer.
const DIRECT_LIMIT: usize = 256;

impl Reader for Packet<'_> {
    /// Straight from the packet's linear data where the header is there
    /// (a load, not a helper call: most of the per-packet work when the
    /// filter then says no); else copied with `bpf_skb_load_bytes`.
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        let (start, end) = (self.0.data(), self.0.data_end());
        if off <= DIRECT_LIMIT && start + off + core::mem::size_of::<T>() <= end {
            // SAFETY: within [data, data_end), which the verifier checks too.
            return Some(unsafe { ((start + off) as *const T).read_unaligned() });
        }
        self.0.load::<T>(off).ok()
    }
}

#[inline(always)]
fn observe(ctx: &TcContext, direction: u8, has_l2: bool) {
    count(counter::TC_SEEN);
    let skb = unsafe { &*ctx.skb.skb };
    let Some(ev) = scratch(&SCRATCH) else { return };
    let reader = Packet(ctx);
    let l4 = if has_l2 {
        let Some(eth) = reader.read::<[u8; 14]>(0) else {
            return;
        };
        parse_l3(
            &reader,
            14,
            u16::from_be_bytes([eth[12], eth[13]]),
            &mut ev.pkt,
        )
    } else {
        // Devices without a link-layer header (tunl0, wireguard): skb->protocol
        // says what the data starts with.
        parse_l3(&reader, 0, u16::from_be(skb.protocol as u16), &mut ev.pkt)
    };
    if let Some(tunnel) = inner(&reader, &ev.pkt, l4, VXLAN_PORT.load())
        && let Some(enc) = decapsulated(&reader, ev, tunnel)
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
fn decapsulated(
    reader: &Packet<'_>,
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
        pub fn $name(ctx: TcContext) -> i32 {
            observe(&ctx, $direction, $has_l2);
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
