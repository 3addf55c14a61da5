//! The key a packet is known by across its observation points, taken from
//! the kernel's record once.

use std::hash::{Hash, Hasher};

use tracer_common::{PacketMeta, l3};

/// Identifies one packet across observation points. IPv4 packets carry an IP
/// ID; ICMP echo adds identifier and sequence (stored in the port fields).
/// IPv6 has no ID, so its key is the 5-tuple and journeys may merge packets
/// that follow each other closely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketKey {
    src: [u8; 16],
    dst: [u8; 16],
    l3: u8,
    proto: u8,
    sport: u16,
    dport: u16,
    ip_id: u16,
}

/// Hashes what identifies the packet in as few words as possible (one
/// journey lookup per event: a hash costs per word); equal keys have
/// equal `l3`, so they hash alike.
impl Hash for PacketKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let meta = u64::from(self.l3)
            | u64::from(self.proto) << 8
            | u64::from(self.ip_id) << 16
            | u64::from(self.sport) << 32
            | u64::from(self.dport) << 48;
        let word = |a: &[u8; 16], i: usize| u64::from_ne_bytes(a[i..i + 8].try_into().unwrap());
        if self.l3 == l3::IPV4 {
            let v4 = |a: &[u8; 16]| u64::from(u32::from_ne_bytes([a[0], a[1], a[2], a[3]]));
            h.write_u64((v4(&self.src) << 32) | v4(&self.dst));
            h.write_u64(meta);
        } else {
            h.write_u64(word(&self.src, 0));
            h.write_u64(word(&self.src, 8));
            h.write_u64(word(&self.dst, 0));
            h.write_u64(word(&self.dst, 8));
            h.write_u64(meta);
        }
    }
}

impl PacketKey {
    /// The key of a packet nftables' trace reported.
    pub fn of_traced(t: &crate::netfilter::trace::TracedPacket) -> Self {
        let bytes = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(v4) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                b
            }
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        PacketKey {
            src: bytes(t.src),
            dst: bytes(t.dst),
            l3: if t.src.is_ipv4() { l3::IPV4 } else { l3::IPV6 },
            proto: t.proto,
            sport: t.sport,
            dport: t.dport,
            ip_id: t.ip_id,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.l3 == l3::IPV6
    }

    /// Source and destination address.
    pub fn addrs(&self) -> (std::net::IpAddr, std::net::IpAddr) {
        let ip = |b: &[u8; 16]| -> std::net::IpAddr {
            if self.l3 == l3::IPV4 {
                std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
            } else {
                std::net::Ipv6Addr::from(*b).into()
            }
        };
        (ip(&self.src), ip(&self.dst))
    }

    pub fn of(p: &PacketMeta) -> Option<Self> {
        matches!(p.l3, l3::IPV4 | l3::IPV6).then_some(PacketKey {
            src: p.src,
            dst: p.dst,
            l3: p.l3,
            proto: p.proto,
            sport: p.sport,
            dport: p.dport,
            ip_id: p.ip_id,
        })
    }
}
