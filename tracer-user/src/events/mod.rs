//! Kernel events: the ring buffer's bytes decoded into pipeline inputs, and
//! the kernel's numbers in them named ([`names`]).

mod key;
pub mod names;

pub use key::PacketKey;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{
    ENCAP_EVENT_SIZE, EVENT_SIZE, EncapEvent, Event, NF_EVENT_SIZE, NfEvent, PacketMeta, l3,
};

/// What flows into the pipeline, live or from a recording.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Event(Event),
    /// A netfilter event: a table's verdict (`ev.kind` VERDICT, exact
    /// probes) or a packet passing a netfilter link point (`ev.kind` HOOK).
    Verdict(NfEvent),
    /// An encapsulated packet seen by tc (`ev.kind` TC_ENCAP): `ev.pkt` is
    /// the inner packet, `outer` the headers it travelled in.
    Encap(EncapEvent),
    /// The clock advanced to this monotonic time without events: time-based
    /// rules (unanswered ARP) may fire.
    Tick(u64),
}

#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError(pub usize);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event of {} bytes, expected {EVENT_SIZE}", self.0)
    }
}

/// Decodes one ring buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < EVENT_SIZE {
        return Err(DecodeError(bytes.len()));
    }
    // SAFETY: Event is plain old data, valid for any bit pattern, and the length
    // was checked; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// Decodes a netfilter record (a verdict or a link point).
pub fn decode_verdict(bytes: &[u8]) -> Result<NfEvent, DecodeError> {
    if bytes.len() < NF_EVENT_SIZE {
        return Err(DecodeError(bytes.len()));
    }
    // SAFETY: as in `decode`.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<NfEvent>()) })
}

/// Decodes an encapsulated packet's record.
pub fn decode_encap(bytes: &[u8]) -> Result<EncapEvent, DecodeError> {
    if bytes.len() < ENCAP_EVENT_SIZE {
        return Err(DecodeError(bytes.len()));
    }
    // SAFETY: as in `decode`.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<EncapEvent>()) })
}

/// The raw bytes of an event, as the kernel wrote them.
pub fn encode(ev: &Event) -> &[u8] {
    // SAFETY: Event is repr(C) without padding (checked in tracer-common).
    unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), EVENT_SIZE) }
}

pub fn encode_verdict(ev: &NfEvent) -> &[u8] {
    // SAFETY: NfEvent is repr(C) without padding (checked in tracer-common).
    unsafe { std::slice::from_raw_parts((ev as *const NfEvent).cast::<u8>(), NF_EVENT_SIZE) }
}

pub fn encode_encap(ev: &EncapEvent) -> &[u8] {
    // SAFETY: EncapEvent is repr(C) without padding (checked in tracer-common).
    unsafe { std::slice::from_raw_parts((ev as *const EncapEvent).cast::<u8>(), ENCAP_EVENT_SIZE) }
}

/// A NUL-padded kernel name as a string.
pub fn kernel_name(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

pub fn src_ip(p: &PacketMeta) -> Option<IpAddr> {
    ip(p, &p.src)
}

pub fn dst_ip(p: &PacketMeta) -> Option<IpAddr> {
    ip(p, &p.dst)
}

fn ip(p: &PacketMeta, a: &[u8; 16]) -> Option<IpAddr> {
    match p.l3 {
        l3::IPV4 | l3::ARP => Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
        l3::IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*a))),
        _ => None,
    }
}

/// Fills a [`PacketMeta`] address from an [`IpAddr`] (tests and synthetic sources).
pub fn set_ip(a: &mut [u8; 16], ip: IpAddr) {
    *a = [0; 16];
    match ip {
        IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => *a = v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::kind;

    use super::*;

    #[test]
    fn decode_roundtrips_and_rejects_short_records() {
        let mut ev = Event {
            ts_ns: 42,
            kind: kind::DROP,
            reason: 7,
            ..Default::default()
        };
        ev.pkt.l3 = l3::IPV4;
        set_ip(&mut ev.pkt.src, "10.244.1.10".parse().unwrap());
        let bytes = encode(&ev).to_vec();
        assert_eq!(decode(&bytes), Ok(ev));
        assert_eq!(decode(&bytes[..10]), Err(DecodeError(10)));
        assert_eq!(src_ip(&ev.pkt), Some("10.244.1.10".parse().unwrap()));
        assert_eq!(dst_ip(&ev.pkt), Some("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn encapsulated_packets_decode_with_their_outer_headers() {
        let mut enc = EncapEvent::default();
        enc.ev.kind = kind::TC_ENCAP;
        enc.ev.pkt.l3 = l3::IPV4;
        set_ip(&mut enc.ev.pkt.src, "10.244.1.10".parse().unwrap());
        enc.outer = tracer_common::OuterMeta {
            l3: l3::IPV4,
            proto: tracer_common::proto::UDP,
            encap: tracer_common::encap::VXLAN,
            dport: 4789,
            vni: 4096,
            len: 134,
            ..Default::default()
        };
        set_ip(&mut enc.outer.src, "192.168.7.1".parse().unwrap());
        let bytes = encode_encap(&enc).to_vec();
        assert_eq!(bytes.len(), ENCAP_EVENT_SIZE);
        assert_eq!(decode_encap(&bytes), Ok(enc));
        assert_eq!(
            decode_encap(&bytes[..ENCAP_EVENT_SIZE - 1]),
            Err(DecodeError(ENCAP_EVENT_SIZE - 1))
        );
    }
}
