//! WireGuard's devices as its generic netlink family (`wireguard`,
//! `WG_CMD_GET_DEVICE`) reports them: peers, their endpoints, allowed IPs,
//! last handshake and traffic. What `wg show` prints, without wireguard-tools
//! and without kprobes.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::kernel::bytes::{cstr, u16_at};
use crate::kernel::netlink::{NLM_F_DUMP, Socket, attrs, header, push_attr};

const GENL_ID_CTRL: u16 = 0x10;
const NLM_F_ACK: u16 = 4;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const WG_CMD_GET_DEVICE: u8 = 0;
const WG_GENL_VERSION: u8 = 1;
const WGDEVICE_A_IFNAME: u16 = 2;
const WGDEVICE_A_LISTEN_PORT: u16 = 6;
const WGDEVICE_A_PEERS: u16 = 8;
const WGPEER_A_PUBLIC_KEY: u16 = 1;
const WGPEER_A_ENDPOINT: u16 = 4;
const WGPEER_A_LAST_HANDSHAKE_TIME: u16 = 6;
const WGPEER_A_RX_BYTES: u16 = 7;
const WGPEER_A_TX_BYTES: u16 = 8;
const WGPEER_A_ALLOWEDIPS: u16 = 9;
const WGALLOWEDIP_A_FAMILY: u16 = 1;
const WGALLOWEDIP_A_IPADDR: u16 = 2;
const WGALLOWEDIP_A_CIDR_MASK: u16 = 3;

/// One WireGuard device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub listen_port: Option<u16>,
    pub peers: Vec<Peer>,
}

/// One peer of a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The public key, base64 as `wg` prints it.
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    /// Seconds since the epoch of the last handshake; `None`: never.
    pub last_handshake_s: Option<i64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

/// The device `name`. `Err(NotFound)`: the kernel has no WireGuard.
pub fn device(name: &str) -> io::Result<Device> {
    let sock = Socket::open_protocol(libc::NETLINK_GENERIC)?;
    let family = family_id(&sock, "wireguard")?;
    let mut body = genl_header(WG_CMD_GET_DEVICE, WG_GENL_VERSION);
    push_attr(&mut body, WGDEVICE_A_IFNAME, &cstring(name));
    let mut dev = Device::default();
    sock.request(&header(family, NLM_F_DUMP, &body), true, |m| {
        if m.ty == family
            && let Some(part) = m.payload.get(4..)
        {
            merge(&mut dev, parse_device(part));
        }
    })?;
    Ok(dev)
}

fn genl_header(cmd: u8, version: u8) -> Vec<u8> {
    vec![cmd, version, 0, 0]
}

fn cstring(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

/// The id of generic netlink family `name`; NotFound where the kernel has
/// none (the module is not there or not loaded).
fn family_id(sock: &Socket, name: &str) -> io::Result<u16> {
    let mut body = genl_header(CTRL_CMD_GETFAMILY, 1);
    push_attr(&mut body, CTRL_ATTR_FAMILY_NAME, &cstring(name));
    let mut id = None;
    let r = sock.request(&header(GENL_ID_CTRL, NLM_F_ACK, &body), false, |m| {
        if m.ty == GENL_ID_CTRL
            && let Some(a) = m.payload.get(4..)
        {
            id = attrs(a)
                .find(|(t, _)| *t == CTRL_ATTR_FAMILY_ID)
                .and_then(|(_, d)| u16_at(d, 0));
        }
    });
    match (r, id) {
        (_, Some(id)) => Ok(id),
        (Err(e), None) if e.raw_os_error() == Some(libc::ENOENT) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("the kernel has no generic netlink family {name:?} (no WireGuard module)"),
        )),
        (Err(e), None) => Err(e),
        (Ok(()), None) => Err(io::Error::other(format!("no id for family {name:?}"))),
    }
}

/// A large device comes in several messages, each with some of its peers.
fn merge(dev: &mut Device, part: Device) {
    if dev.name.is_empty() {
        dev.name = part.name;
    }
    dev.listen_port = dev.listen_port.or(part.listen_port);
    for p in part.peers {
        match dev.peers.iter_mut().find(|q| q.public_key == p.public_key) {
            Some(q) => q.allowed_ips.extend(p.allowed_ips),
            None => dev.peers.push(p),
        }
    }
}

/// The attributes of one `WG_CMD_GET_DEVICE` reply (after the genl header).
pub fn parse_device(b: &[u8]) -> Device {
    let mut d = Device::default();
    for (ty, data) in attrs(b) {
        match ty {
            WGDEVICE_A_IFNAME => d.name = cstr(data),
            WGDEVICE_A_LISTEN_PORT => d.listen_port = u16_at(data, 0),
            WGDEVICE_A_PEERS => d.peers = attrs(data).map(|(_, p)| parse_peer(p)).collect(),
            _ => {}
        }
    }
    d
}

fn parse_peer(b: &[u8]) -> Peer {
    let mut p = Peer::default();
    for (ty, data) in attrs(b) {
        match ty {
            WGPEER_A_PUBLIC_KEY => p.public_key = base64(data),
            WGPEER_A_ENDPOINT => p.endpoint = sockaddr(data),
            WGPEER_A_LAST_HANDSHAKE_TIME => {
                let s = data
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(i64::from_ne_bytes);
                p.last_handshake_s = s.filter(|s| *s > 0);
            }
            WGPEER_A_RX_BYTES => p.rx_bytes = u64_ne(data),
            WGPEER_A_TX_BYTES => p.tx_bytes = u64_ne(data),
            WGPEER_A_ALLOWEDIPS => {
                p.allowed_ips = attrs(data).filter_map(|(_, a)| allowed_ip(a)).collect()
            }
            _ => {}
        }
    }
    p
}

fn u64_ne(b: &[u8]) -> u64 {
    b.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

fn allowed_ip(b: &[u8]) -> Option<(IpAddr, u8)> {
    let (mut family, mut addr, mut mask) = (None, None, None);
    for (ty, data) in attrs(b) {
        match ty {
            WGALLOWEDIP_A_FAMILY => family = u16_at(data, 0),
            WGALLOWEDIP_A_IPADDR => addr = Some(data),
            WGALLOWEDIP_A_CIDR_MASK => mask = data.first().copied(),
            _ => {}
        }
    }
    let ip = match (i32::from(family?), addr?) {
        (libc::AF_INET, a) => IpAddr::from(<[u8; 4]>::try_from(a.get(..4)?).ok()?),
        (libc::AF_INET6, a) => IpAddr::from(<[u8; 16]>::try_from(a.get(..16)?).ok()?),
        _ => return None,
    };
    Some((ip, mask?))
}

/// `struct sockaddr_in` or `sockaddr_in6` (port in network order).
fn sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16_at(b, 0)?);
    let port = u16::from_be_bytes(b.get(2..4)?.try_into().ok()?);
    let ip = match family {
        libc::AF_INET => IpAddr::from(<[u8; 4]>::try_from(b.get(4..8)?).ok()?),
        libc::AF_INET6 => IpAddr::from(<[u8; 16]>::try_from(b.get(8..24)?).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        push_attr(&mut b, ty | 0x8000, body);
        b
    }

    /// A device reply as the kernel builds it (`wg_get_device_dump`): one
    /// peer with an IPv4 endpoint, a handshake, traffic and two allowed IPs.
    fn reply() -> Vec<u8> {
        let mut allowed = Vec::new();
        for (i, (a, m)) in [([10u8, 244, 2, 0], 26u8), ([192, 168, 1, 2], 32)]
            .iter()
            .enumerate()
        {
            let mut one = Vec::new();
            push_attr(
                &mut one,
                WGALLOWEDIP_A_FAMILY,
                &(libc::AF_INET as u16).to_ne_bytes(),
            );
            push_attr(&mut one, WGALLOWEDIP_A_IPADDR, a);
            push_attr(&mut one, WGALLOWEDIP_A_CIDR_MASK, &[*m]);
            allowed.extend(nested(i as u16, &one));
        }
        let mut peer = Vec::new();
        push_attr(&mut peer, WGPEER_A_PUBLIC_KEY, &[0u8; 32]);
        let mut sa = vec![0u8; 16];
        sa[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        sa[2..4].copy_from_slice(&51820u16.to_be_bytes());
        sa[4..8].copy_from_slice(&[192, 168, 1, 2]);
        push_attr(&mut peer, WGPEER_A_ENDPOINT, &sa);
        let mut ts = 1_700_000_000i64.to_ne_bytes().to_vec();
        ts.extend(5i64.to_ne_bytes());
        push_attr(&mut peer, WGPEER_A_LAST_HANDSHAKE_TIME, &ts);
        push_attr(&mut peer, WGPEER_A_RX_BYTES, &1234u64.to_ne_bytes());
        push_attr(&mut peer, WGPEER_A_TX_BYTES, &99u64.to_ne_bytes());
        peer.extend(nested(WGPEER_A_ALLOWEDIPS, &allowed));
        let mut b = Vec::new();
        push_attr(&mut b, WGDEVICE_A_IFNAME, b"wireguard.cali\0");
        push_attr(&mut b, WGDEVICE_A_LISTEN_PORT, &51820u16.to_ne_bytes());
        b.extend(nested(WGDEVICE_A_PEERS, &nested(0, &peer)));
        b
    }

    #[test]
    fn a_device_reply_reads_as_wg_show_prints_it() {
        let d = parse_device(&reply());
        assert_eq!(d.name, "wireguard.cali");
        assert_eq!(d.listen_port, Some(51820));
        assert_eq!(d.peers.len(), 1);
        let p = &d.peers[0];
        assert_eq!(p.public_key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(p.endpoint, Some("192.168.1.2:51820".parse().unwrap()));
        assert_eq!(p.last_handshake_s, Some(1_700_000_000));
        assert_eq!((p.rx_bytes, p.tx_bytes), (1234, 99));
        assert_eq!(
            p.allowed_ips,
            [
                ("10.244.2.0".parse().unwrap(), 26),
                ("192.168.1.2".parse().unwrap(), 32)
            ]
        );
    }

    #[test]
    fn base64_is_wgs() {
        assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
        assert_eq!(base64(b"any carnal pleasu"), "YW55IGNhcm5hbCBwbGVhc3U=");
        assert_eq!(base64(b"any carnal pleasur"), "YW55IGNhcm5hbCBwbGVhc3Vy");
    }

    #[test]
    fn peers_split_over_messages_are_one_device() {
        let mut d = Device::default();
        merge(&mut d, parse_device(&reply()));
        merge(&mut d, parse_device(&reply()));
        assert_eq!(d.peers.len(), 1);
        assert_eq!(d.peers[0].allowed_ips.len(), 4);
    }
}
