//! Header parsing shared by the tc programs (packet data) and the drop program
//! (kernel memory behind an skb).

use tracer_common::{PacketMeta, l3, pkt_flags, proto};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;

/// Reads `T` at a byte offset of some packet.
pub trait Reader {
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
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
    let l4 = off + ((h[0] & 0x0f) as usize) * 4;
    parse_l4(r, l4, pkt);
    Some(l4)
}

/// `h`: the fixed IPv6 header at `off`.
#[inline(always)]
fn parse_ipv6<R: Reader>(r: &R, off: usize, h: &[u8; 40], pkt: &mut PacketMeta) -> Option<usize> {
    pkt.l3 = l3::IPV6;
    pkt.len = be16([h[4], h[5]]) as u32 + 40;
    pkt.proto = h[6];
    pkt.ttl = h[7];
    pkt.src.copy_from_slice(&h[8..24]);
    pkt.dst.copy_from_slice(&h[24..40]);
    parse_l4(r, off + 40, pkt);
    Some(off + 40)
}

#[inline(always)]
fn parse_l4<R: Reader>(r: &R, off: usize, pkt: &mut PacketMeta) {
    match pkt.proto {
        proto::TCP => {
            if let Some(h) = r.read::<[u8; 14]>(off) {
                pkt.sport = be16([h[0], h[1]]);
                pkt.dport = be16([h[2], h[3]]);
                pkt.tcp_flags = h[13];
                pkt.flags |= pkt_flags::L4;
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
