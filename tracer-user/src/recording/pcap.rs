//! pcapng export of recorded packets. The kernel events carry parsed header
//! fields, not packet bytes, so each packet is rebuilt from them (Ethernet,
//! IPv4/IPv6 or ARP, and the TCP/UDP/ICMP header, without payload); the
//! calitrace record is attached as the packet's comment. An encapsulated
//! packet (VXLAN, IPIP) is rebuilt as its inner packet only: its outer
//! headers are in the record (`outer`) in the comment.

use std::io::Write;

use tracer_common::{PacketMeta, l3, proto};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
const LINKTYPE_ETHERNET: u16 = 1;
const OPT_COMMENT: u16 = 1;
const OPT_IF_NAME: u16 = 2;

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
}

fn option(v: &mut Vec<u8>, code: u16, data: &[u8]) {
    v.extend_from_slice(&code.to_le_bytes());
    v.extend_from_slice(&(data.len() as u16).to_le_bytes());
    v.extend_from_slice(data);
    pad4(v);
}

fn block(out: &mut impl Write, ty: u32, body: &[u8]) -> std::io::Result<()> {
    let len = (12 + body.len()) as u32;
    out.write_all(&ty.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(&len.to_le_bytes())
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The L4 header of a packet (no payload).
fn l4(p: &PacketMeta) -> Vec<u8> {
    let mut h = Vec::new();
    match p.proto {
        proto::TCP => {
            h.extend_from_slice(&p.sport.to_be_bytes());
            h.extend_from_slice(&p.dport.to_be_bytes());
            h.extend_from_slice(&[0; 8]); // seq, ack: not recorded
            h.push(5 << 4);
            h.push(p.tcp_flags);
            h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        }
        proto::UDP => {
            h.extend_from_slice(&p.sport.to_be_bytes());
            h.extend_from_slice(&p.dport.to_be_bytes());
            h.extend_from_slice(&8u16.to_be_bytes());
            h.extend_from_slice(&[0, 0]);
        }
        proto::ICMP | proto::ICMPV6 => {
            h.extend_from_slice(&[p.icmp_type, p.icmp_code, 0, 0]);
            h.extend_from_slice(&p.sport.to_be_bytes());
            h.extend_from_slice(&p.dport.to_be_bytes());
            if p.proto == proto::ICMP {
                let c = checksum(&h);
                h[2..4].copy_from_slice(&c.to_be_bytes());
            }
        }
        _ => {}
    }
    h
}

/// An Ethernet frame rebuilt from the recorded header fields; `None` for
/// events whose packet could not be parsed.
pub fn frame(p: &PacketMeta) -> Option<Vec<u8>> {
    let mut f = vec![0u8; 12];
    match p.l3 {
        l3::IPV4 => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let l4 = l4(p);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&p.ip_id.to_be_bytes());
            ip.extend_from_slice(
                &(if p.flags & tracer_common::pkt_flags::DF != 0 {
                    0x4000u16
                } else {
                    0
                })
                .to_be_bytes(),
            );
            ip.extend_from_slice(&[p.ttl, p.proto, 0, 0]);
            ip.extend_from_slice(&p.src[..4]);
            ip.extend_from_slice(&p.dst[..4]);
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
            f.extend_from_slice(&l4);
        }
        l3::IPV6 => {
            f.extend_from_slice(&0x86DDu16.to_be_bytes());
            let l4 = l4(p);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            f.extend_from_slice(&[p.proto, p.ttl]);
            f.extend_from_slice(&p.src);
            f.extend_from_slice(&p.dst);
            f.extend_from_slice(&l4);
        }
        l3::ARP => {
            f.extend_from_slice(&0x0806u16.to_be_bytes());
            f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
            f.extend_from_slice(&p.arp_op.to_be_bytes());
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&p.src[..4]);
            f.extend_from_slice(&[0; 6]);
            f.extend_from_slice(&p.dst[..4]);
        }
        _ => return None,
    }
    Some(f)
}

pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> std::io::Result<Self> {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        option(&mut shb, 0, &[]);
        block(&mut out, SHB, &shb)?;
        let mut idb = Vec::new();
        idb.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        option(&mut idb, OPT_IF_NAME, b"calitrace");
        option(&mut idb, 0, &[]);
        block(&mut out, IDB, &idb)?;
        Ok(Self { out })
    }

    /// One packet at wall-clock `ts_ns` (ns since the epoch); `orig_len` is the
    /// length the packet had on the wire.
    pub fn packet(
        &mut self,
        ts_ns: u64,
        frame: &[u8],
        orig_len: u32,
        comment: &str,
    ) -> std::io::Result<()> {
        let us = ts_ns / 1000;
        let mut b = Vec::with_capacity(64 + frame.len() + comment.len());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&((us >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(us as u32).to_le_bytes());
        b.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        b.extend_from_slice(&orig_len.max(frame.len() as u32).to_le_bytes());
        b.extend_from_slice(frame);
        pad4(&mut b);
        let comment = &comment.as_bytes()[..comment.len().min(60_000)];
        option(&mut b, OPT_COMMENT, comment);
        option(&mut b, 0, &[]);
        block(&mut self.out, EPB, &b)
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::set_ip;

    #[test]
    fn ipv4_icmp_frame_has_valid_checksums() {
        let mut p = PacketMeta {
            l3: l3::IPV4,
            proto: proto::ICMP,
            ttl: 64,
            ip_id: 7,
            icmp_type: 8,
            sport: 1,
            dport: 2,
            ..Default::default()
        };
        set_ip(&mut p.src, "10.244.1.10".parse().unwrap());
        set_ip(&mut p.dst, "10.244.2.10".parse().unwrap());
        let f = frame(&p).unwrap();
        assert_eq!(f.len(), 14 + 20 + 8);
        assert_eq!(checksum(&f[14..34]), 0, "IP header checksum verifies");
        assert_eq!(checksum(&f[34..]), 0, "ICMP checksum verifies");
        assert_eq!(&f[26..30], &[10, 244, 1, 10]);
    }

    #[test]
    fn blocks_are_length_framed() {
        let mut buf = Vec::new();
        let mut w = PcapWriter::new(&mut buf).unwrap();
        w.packet(1_000_000_000, &[0u8; 42], 98, "a comment")
            .unwrap();
        let mut off = 0;
        let mut types = Vec::new();
        while off < buf.len() {
            let ty = u32::from_le_bytes(buf[off..off + 4].try_into().unwrap());
            let len = u32::from_le_bytes(buf[off + 4..off + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            assert_eq!(&buf[off + 4..off + 8], &buf[off + len - 4..off + len]);
            types.push(ty);
            off += len;
        }
        assert_eq!(types, [SHB, IDB, EPB]);
    }
}
