//! `{"type":"packet",...}` lines written field by field: the same bytes
//! serde writes for [`Record::Packet`](crate::model::Record), at a fraction
//! of the cost. Packet lines are nearly all of a busy stream; serde_json
//! escapes every key of every line, and the flattened flow and detail make
//! the record a map serialized through serde's buffering of flattened
//! fields. Here the keys are literals and only the values go through
//! serde_json. The tests hold the two to the same output.

use std::io::{self, Write};
use std::net::IpAddr;

use serde::Serialize;

use crate::model::{Detail, Flow, PacketRecord};

/// Writes `p` as its JSON object (no newline).
pub fn write_packet<W: Write>(out: &mut W, p: &PacketRecord) -> io::Result<()> {
    // Destructured without `..`: a field added to these types fails to
    // compile here until it is written too.
    let PacketRecord {
        node,
        ts_ns,
        netns,
        ifname,
        dir,
        flow,
        detail,
        outer,
    } = p;
    let Flow {
        src,
        dst,
        proto,
        sport,
        dport,
        src_pod,
        dst_pod,
    } = flow;
    let Detail {
        ttl,
        ip_id,
        len,
        icmp,
        arp,
    } = detail;
    out.write_all(br#"{"type":"packet""#)?;
    if let Some(node) = node {
        field_str(out, b"node", Some(node))?;
    }
    field(out, b"ts_ns", ts_ns)?;
    field(out, b"netns", netns)?;
    field_str(out, b"ifname", ifname.as_deref())?;
    field(out, b"dir", dir)?;
    field_ip(out, b"src", *src)?;
    field_ip(out, b"dst", *dst)?;
    field(out, b"proto", proto)?;
    field(out, b"sport", sport)?;
    field(out, b"dport", dport)?;
    field(out, b"src_pod", src_pod)?;
    field(out, b"dst_pod", dst_pod)?;
    field(out, b"ttl", ttl)?;
    field(out, b"ip_id", ip_id)?;
    field(out, b"len", len)?;
    if let Some(icmp) = icmp {
        field(out, b"icmp", icmp)?;
    }
    if let Some(arp) = arp {
        field(out, b"arp", arp)?;
    }
    if let Some(outer) = outer {
        field(out, b"outer", outer)?;
    }
    out.write_all(b"}")
}

/// `,"key":value`; `key` is plain ASCII that needs no escaping.
fn field<W: Write, T: Serialize + ?Sized>(out: &mut W, key: &[u8], value: &T) -> io::Result<()> {
    out.write_all(b",\"")?;
    out.write_all(key)?;
    out.write_all(b"\":")?;
    serde_json::to_writer(&mut *out, value).map_err(io::Error::from)
}

/// `,"key":"value"` or `,"key":null`. A string of characters JSON takes as
/// they are (addresses and interface names nearly always) is copied in one
/// piece; any other goes through serde_json, which escapes exactly the
/// control characters, `"` and `\`.
fn field_str<W: Write>(out: &mut W, key: &[u8], value: Option<&str>) -> io::Result<()> {
    match value {
        Some(s) if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') => {
            out.write_all(b",\"")?;
            out.write_all(key)?;
            out.write_all(b"\":\"")?;
            out.write_all(s.as_bytes())?;
            out.write_all(b"\"")
        }
        _ => field(out, key, &value),
    }
}

/// `,"key":"address"` or `,"key":null`; an IPv4 address (the common case,
/// twice on every line) written digit by digit, without the formatting
/// machinery.
fn field_ip<W: Write>(out: &mut W, key: &[u8], value: Option<IpAddr>) -> io::Result<()> {
    match value {
        Some(IpAddr::V4(v4)) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            out.write_all(b",\"")?;
            out.write_all(key)?;
            out.write_all(b"\":\"")?;
            out.write_all(&buf[..n])?;
            out.write_all(b"\"")
        }
        other => field(out, key, &other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{POD_A, POD_B, icmp_flow, ip, ping_detail, vxlan_outer};
    use crate::model::{ArpOp, Dir, Icmp, PodRef, Proto, Record};

    fn serde_line(p: &PacketRecord) -> String {
        serde_json::to_string(&Record::Packet(p.clone())).unwrap()
    }

    fn fast_line(p: &PacketRecord) -> String {
        let mut buf = Vec::new();
        write_packet(&mut buf, p).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn base() -> PacketRecord {
        PacketRecord {
            node: None,
            ts_ns: 1_700_000_000_123_456_789,
            netns: 4026531840,
            ifname: Some("cali1234abcd".into()),
            dir: Dir::Ingress,
            flow: icmp_flow(POD_A, POD_B),
            detail: ping_detail(),
            outer: None,
        }
    }

    /// Every optional part present and absent, odd names that need escaping.
    fn variants() -> Vec<PacketRecord> {
        let mut all = vec![base()];
        let mut p = base();
        p.node = Some("node-\"a\"\\\n".into());
        p.outer = Some(vxlan_outer());
        p.flow.src_pod = Some(PodRef {
            namespace: "default".into(),
            name: "frontend-ü".into(),
        });
        p.flow.dst_pod = p.flow.src_pod.clone();
        p.detail.icmp = Some(Icmp::EchoRequest { id: 77, seq: 3 });
        all.push(p);
        let mut p = base();
        p.dir = Dir::Egress;
        p.ifname = None;
        p.node = Some("\u{7f}\u{1f}tab\there".into());
        p.flow = Flow {
            src: Some(ip("fd00::1")),
            dst: Some(ip("fd00::2")),
            proto: Some(Proto::Udp),
            sport: Some(40000),
            dport: Some(53),
            src_pod: None,
            dst_pod: None,
        };
        p.detail = Detail {
            ttl: Some(64),
            ip_id: None,
            len: 80,
            icmp: None,
            arp: None,
        };
        all.push(p);
        let mut p = base();
        p.flow = Flow {
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            src_pod: None,
            dst_pod: None,
        };
        p.detail = Detail {
            ttl: None,
            ip_id: None,
            len: 42,
            icmp: None,
            arp: Some(ArpOp::Request),
        };
        all.push(p);
        for (a, b) in [
            ("0.0.0.0", "255.255.255.255"),
            ("1.20.100.9", "99.9.10.200"),
        ] {
            let mut p = base();
            p.flow.src = Some(ip(a));
            p.flow.dst = Some(ip(b));
            all.push(p);
        }
        all
    }

    #[test]
    fn packet_lines_are_the_bytes_serde_writes() {
        for p in variants() {
            assert_eq!(fast_line(&p), serde_line(&p));
        }
    }

    #[test]
    fn every_field_reaches_the_line() {
        let line = fast_line(&variants()[1]);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for f in [
            "type", "node", "ts_ns", "netns", "ifname", "dir", "src", "dst", "proto", "sport",
            "dport", "src_pod", "dst_pod", "ttl", "ip_id", "len", "icmp", "outer",
        ] {
            assert!(v.get(f).is_some(), "missing {f} in {line}");
        }
    }
}
