//! tc classifiers: observe packets on `cali*`, tunnel and uplink interfaces.
//! They never change the packet or its fate (always TC_ACT_UNSPEC / TCX_NEXT).

use aya_ebpf::{macros::classifier, programs::TcContext};
use tracer_common::{counter, dir, kind};

use crate::event::{accept, emit, scratch};
use crate::maps::{SCRATCH, TC_NETNS, count};
use crate::parse::{Reader, parse_l3};

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
    let Some(ev) = scratch(&SCRATCH) else { return };
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
    if !accept(ev, kind::TC, TC_NETNS.load(), skb.ifindex) {
        return;
    }
    ev.dir = direction;
    ev.skb_len = skb.len;
    ev.mark = skb.mark;
    emit(ev, counter::TC_EMITTED);
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
