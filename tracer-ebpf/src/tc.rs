//! tc classifiers: observe packets on `cali*`, tunnel and uplink interfaces.
//! They never change the packet or its fate (always TC_ACT_UNSPEC / TCX_NEXT).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::classifier, programs::TcContext};
use tracer_common::{counter, dir, kind};

use crate::{
    maps::{TC_NETNS, count, emit, filter_matches, scratch_event},
    parse::{Reader, parse_l3},
};

/// Lets other programs on the hook run and the packet continue.
const TC_ACT_UNSPEC: i32 = -1;

struct Packet<'a>(&'a TcContext);

impl Reader for Packet<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.load::<T>(off).ok()
    }
}

#[inline(always)]
fn observe(ctx: &TcContext, direction: u8, has_l2: bool) {
    count(counter::TC_SEEN);
    let skb = unsafe { &*ctx.skb.skb };
    let Some(ev) = scratch_event() else { return };
    let pkt = &mut ev.pkt;
    let reader = Packet(ctx);
    if has_l2 {
        let Some(eth) = reader.read::<[u8; 14]>(0) else {
            return;
        };
        parse_l3(&reader, 14, u16::from_be_bytes([eth[12], eth[13]]), pkt);
    } else {
        // Devices without a link-layer header (tunl0, wireguard): skb->protocol
        // says what the data starts with.
        parse_l3(&reader, 0, u16::from_be(skb.protocol as u16), pkt);
    }
    if !filter_matches(pkt) {
        return;
    }
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.kind = kind::TC;
    ev.dir = direction;
    ev.ifindex = skb.ifindex;
    ev.netns = TC_NETNS.load();
    ev.skb_len = skb.len;
    ev.mark = skb.mark;
    emit(ev, counter::TC_EMITTED);
}

#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, dir::INGRESS, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    observe(&ctx, dir::EGRESS, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tc_ingress_l3(ctx: TcContext) -> i32 {
    observe(&ctx, dir::INGRESS, false);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn tc_egress_l3(ctx: TcContext) -> i32 {
    observe(&ctx, dir::EGRESS, false);
    TC_ACT_UNSPEC
}
