//! Header parsing shared by the tc programs (packet data) and the drop program
//! (kernel memory behind an skb).

use tracer_common::{PacketMeta, l3, pkt_flags, proto};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;

/// Reads `T` at a byte offset of some packet.
pub trait Reader {
    /// Whether a few words read apart cost less than one read of the whole
    /// header (plain loads from packet data; not where each read is a
    /// helper call, as from kernel memory).
    const PLAIN_LOADS: bool = false;

    fn read<T: Copy>(&self, off: usize) -> Option<T>;

    /// The four bytes at `off` as one native-endian word (as the filter's
    /// instructions hold an address word).
    #[inline(always)]
    fn word(&self, off: usize) -> Option<u32> {
        self.read::<[u8; 4]>(off).map(u32::from_ne_bytes)
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Fills `pkt` from the layer 3 header at `off`, given the ethertype.
/// Returns where the layer 4 header starts (IPv4 and IPv6, not for a
/// fragment after the first), for the decapsulation of tunnels.
#[inline(always)]
pub fn parse_l3<R: Reader>(
    r: &R,
    off: usize,
    ethertype: u16,
    pkt: &mut PacketMeta,
) -> Option<usize> {
    match ethertype {
        ETH_P_IP => {
            let h = r.read::<[u8; 20]>(off)?;
            if h[0] >> 4 != 4 {
                return None;
            }
            parse_ipv4(r, off, &h, pkt)
        }
        ETH_P_IPV6 => {
            let h = r.read::<[u8; 40]>(off)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            parse_ipv6(r, off, &h, pkt)
        }
        ETH_P_ARP => {
            parse_arp(r, off, pkt);
            None
        }
        _ => None,
    }
}

/// `h`: the fixed IPv4 header at `off`.
#[inline(always)]
fn parse_ipv4<R: Reader>(r: &R, off: usize, h: &[u8; 20], pkt: &mut PacketMeta) -> Option<usize> {
    pkt.l3 = l3::IPV4;
    pkt.len = be16([h[2], h[3]]) as u32;
    pkt.ip_id = be16([h[4], h[5]]);
    if h[6] & 0x40 != 0 {
        pkt.flags |= pkt_flags::DF;
    }
    pkt.ttl = h[8];
    pkt.proto = h[9];
    pkt.src[..4].copy_from_slice(&h[12..16]);
    pkt.dst[..4].copy_from_slice(&h[16..20]);
    let frag_off = be16([h[6], h[7]]) & 0x1fff;
    if frag_off != 0 {
        return None;
    }
    let header = ((h[0] & 0x0f) as u32) * 4;
    let l4 = off + header as usize;
    parse_l4(r, l4, pkt.len.saturating_sub(header), pkt);
    Some(l4)
}

/// `h`: the fixed IPv6 header at `off`. `proto` is the protocol after the
/// extension headers (an MLD report behind its hop-by-hop header is ICMPv6).
#[inline(always)]
fn parse_ipv6<R: Reader>(r: &R, off: usize, h: &[u8; 40], pkt: &mut PacketMeta) -> Option<usize> {
    pkt.l3 = l3::IPV6;
    pkt.len = be16([h[4], h[5]]) as u32 + 40;
    pkt.ttl = h[7];
    copy_addr(&mut pkt.src, h, 8);
    copy_addr(&mut pkt.dst, h, 24);
    let upper = ipv6_upper_layer(r, off + 40, h[6]);
    pkt.proto = upper.next;
    if !upper.first_fragment {
        return None;
    }
    let headers = (upper.off - off) as u32;
    parse_l4(r, upper.off, pkt.len.saturating_sub(headers), pkt);
    Some(upper.off)
}

/// The 16-byte address at `at` of `h`, four bytes at a time: a plain
/// `copy_from_slice` compiled to a call to a byte-at-a-time `memmove` loop.
#[inline(always)]
fn copy_addr(to: &mut [u8; 16], h: &[u8; 40], at: usize) {
    for i in 0..4 {
        let o = at + i * 4;
        let w = [h[o], h[o + 1], h[o + 2], h[o + 3]];
        to[i * 4..i * 4 + 4].copy_from_slice(&w);
    }
}

// IPv6 extension headers (next header values) that the parser walks past.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTIONS: u8 = 60;
/// Extension headers walked at most: hop-by-hop, destination options,
/// routing and fragment, the order RFC 8200 recommends. A bounded, unrolled
/// walk keeps the verifier's work small.
const IPV6_MAX_EXT_HEADERS: usize = 4;

/// Where the upper-layer header of an IPv6 packet starts.
struct Upper {
    /// Protocol of the header at `off` (an extension header's number when
    /// more than [`IPV6_MAX_EXT_HEADERS`] came first or one was cut short).
    next: u8,
    off: usize,
    /// Not a fragment, or the first one: the upper-layer header is there.
    first_fragment: bool,
}

/// Walks the extension headers from `off`, where a header of type `next`
/// starts.
#[inline(always)]
fn ipv6_upper_layer<R: Reader>(r: &R, mut off: usize, mut next: u8) -> Upper {
    let mut first_fragment = true;
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTIONS => {
                // Next header, then the length in 8-byte units after the first 8.
                let Some(e) = r.read::<[u8; 2]>(off) else {
                    break;
                };
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            IPV6_FRAGMENT => {
                let Some(e) = r.read::<[u8; 4]>(off) else {
                    break;
                };
                next = e[0];
                off += 8;
                // Fragment offset: the upper 13 bits of bytes 2 and 3.
                if be16([e[2], e[3]]) & 0xfff8 != 0 {
                    first_fragment = false;
                }
            }
            _ => break,
        }
    }
    Upper {
        next,
        off,
        first_fragment,
    }
}

/// `len`: the bytes from `off` to the end of the IP packet.
#[inline(always)]
fn parse_l4<R: Reader>(r: &R, off: usize, len: u32, pkt: &mut PacketMeta) {
    match pkt.proto {
        proto::TCP => {
            if let Some(h) = r.read::<[u8; 14]>(off) {
                pkt.sport = be16([h[0], h[1]]);
                pkt.dport = be16([h[2], h[3]]);
                pkt.tcp_flags = h[13];
                pkt.flags |= pkt_flags::L4;
                let header = ((h[12] >> 4) as u32) * 4;
                if header >= 20 && len == header {
                    pkt.flags |= pkt_flags::TCP_NO_DATA;
                }
            }
        }
        proto::UDP => {
            if let Some(h) = r.read::<[u8; 4]>(off) {
                pkt.sport = be16([h[0], h[1]]);
                pkt.dport = be16([h[2], h[3]]);
                pkt.flags |= pkt_flags::L4;
            }
        }
        proto::ICMP | proto::ICMPV6 => {
            if let Some(h) = r.read::<[u8; 8]>(off) {
                pkt.icmp_type = h[0];
                pkt.icmp_code = h[1];
                pkt.sport = be16([h[4], h[5]]);
                pkt.dport = be16([h[6], h[7]]);
                pkt.flags |= pkt_flags::L4;
            }
        }
        _ => {}
    }
}

#[inline(always)]
fn parse_arp<R: Reader>(r: &R, off: usize, pkt: &mut PacketMeta) {
    // Ethernet/IPv4 ARP only: htype 1, ptype 0x0800, hlen 6, plen 4.
    let Some(h) = r.read::<[u8; 28]>(off) else {
        return;
    };
    if h[4] != 6 || h[5] != 4 || be16([h[2], h[3]]) != ETH_P_IP {
        return;
    }
    pkt.l3 = l3::ARP;
    pkt.arp_op = be16([h[6], h[7]]);
    pkt.src[..4].copy_from_slice(&h[14..18]);
    pkt.dst[..4].copy_from_slice(&h[24..28]);
    pkt.len = 28;
}
