//! A minimal rtnetlink client: list links in the current network namespace and
//! delete a clsact qdisc. Small enough to not warrant a netlink crate.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const RTM_GETLINK: u16 = 18;
const RTM_DELQDISC: u16 = 37;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const TCA_KIND: u16 = 1;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `veth`, `vxlan`, `ipip`, ... (empty for physical devices and loopback).
    pub kind: String,
    /// ARPHRD_* link type: 1 = Ethernet; others have no Ethernet header.
    pub link_type: u16,
    /// For a veth: the peer's ifindex (in `link_netnsid`'s namespace).
    pub peer_index: Option<u32>,
    pub link_netnsid: Option<i32>,
    pub up: bool,
}

impl Link {
    pub fn has_ethernet_header(&self) -> bool {
        self.link_type == 1
    }
}

/// A netlink socket of any protocol (rtnetlink here, nfnetlink for nf_tables).
pub(crate) struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_ROUTE)
    }

    pub(crate) fn open_protocol(protocol: i32) -> io::Result<Self> {
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn send(&self, msg: &[u8]) -> io::Result<()> {
        let n = unsafe { libc::send(self.0.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// One datagram, however large: its size is peeked first and `buf` grown.
    pub(crate) fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let fd = self.0.as_raw_fd();
        let peek = libc::MSG_PEEK | libc::MSG_TRUNC;
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), peek) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize > buf.len() {
            buf.resize(n as usize, 0);
        }
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Sends a request and hands every reply message (type, payload) to `f`
    /// until DONE or the ACK. Netlink errors become `io::Error`s.
    fn request(&self, msg: &[u8], dump: bool, mut f: impl FnMut(u16, &[u8])) -> io::Result<()> {
        self.send(msg)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            let mut off = 0;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                if len < 16 || off + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed netlink reply",
                    ));
                }
                let payload = &buf[off + 16..off + len];
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = i32::from_ne_bytes(payload[..4].try_into().unwrap());
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        if !dump {
                            return Ok(());
                        }
                    }
                    _ => f(ty, payload),
                }
                off += (len + 3) & !3;
            }
        }
    }
}

fn header(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + body.len());
    m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Iterates (type, payload) over netlink attributes.
pub(crate) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, data))
    })
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

pub(crate) fn parse_link(payload: &[u8]) -> Option<Link> {
    // struct ifinfomsg { u8 family, u8 pad, u16 type, i32 index, u32 flags, u32 change }
    if payload.len() < 16 {
        return None;
    }
    let link_type = u16::from_ne_bytes([payload[2], payload[3]]);
    let index = i32::from_ne_bytes(payload[4..8].try_into().ok()?) as u32;
    let flags = u32::from_ne_bytes(payload[8..12].try_into().ok()?);
    let mut link = Link {
        index,
        name: String::new(),
        kind: String::new(),
        link_type,
        peer_index: None,
        link_netnsid: None,
        up: flags & libc::IFF_UP as u32 != 0,
    };
    for (ty, data) in attrs(&payload[16..]) {
        match ty {
            IFLA_IFNAME => link.name = cstr(data),
            IFLA_LINK if data.len() >= 4 => {
                link.peer_index = Some(u32::from_ne_bytes(data[..4].try_into().ok()?))
            }
            IFLA_LINK_NETNSID if data.len() >= 4 => {
                link.link_netnsid = Some(i32::from_ne_bytes(data[..4].try_into().ok()?))
            }
            IFLA_LINKINFO => {
                for (ity, idata) in attrs(data) {
                    if ity == IFLA_INFO_KIND {
                        link.kind = cstr(idata);
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// All links of the network namespace this thread is in.
pub fn links() -> io::Result<Vec<Link>> {
    let sock = Socket::open()?;
    let body = [0u8; 16]; // ifinfomsg, AF_UNSPEC
    let mut out = Vec::new();
    sock.request(
        &header(RTM_GETLINK, NLM_F_DUMP, &body),
        true,
        |ty, payload| {
            if ty == 16
                && let Some(l) = parse_link(payload)
            {
                out.push(l);
            }
        },
    )?;
    Ok(out)
}

/// Removes the clsact qdisc of an interface (and with it all its tc filters).
pub fn delete_clsact(ifindex: u32) -> io::Result<()> {
    let sock = Socket::open()?;
    // struct tcmsg { u8 family, u8 pad1, u16 pad2, i32 ifindex, u32 handle, u32 parent, u32 info }
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 0, 0, 0]);
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.extend_from_slice(&0xFFFF_0000u32.to_ne_bytes());
    body.extend_from_slice(&TC_H_CLSACT.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(&mut body, TCA_KIND, b"clsact\0");
    sock.request(&header(RTM_DELQDISC, NLM_F_ACK, &body), false, |_, _| {})
}

/// The id this namespace gives the namespace open at `fd` (what
/// `IFLA_LINK_NETNSID` of a veth refers to), if it has assigned one.
pub fn nsid_of(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let sock = Socket::open()?;
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    push_attr(&mut body, NETNSA_FD, &(fd.as_raw_fd() as u32).to_ne_bytes());
    let mut nsid = None;
    sock.request(
        &header(RTM_GETNSID, NLM_F_ACK, &body),
        false,
        |ty, payload| {
            if ty == RTM_NEWNSID && payload.len() >= 4 {
                nsid = attrs(&payload[4..])
                    .find(|(t, d)| *t == NETNSA_NSID && d.len() >= 4)
                    .map(|(_, d)| i32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
                    .filter(|id| *id >= 0);
            }
        },
    )?;
    Ok(nsid)
}

/// The result of a route lookup, like `ip route get DST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Forwarded (or delivered) out of this interface index.
    Via(u32),
    /// Delivered locally.
    Local,
    /// No route, or an unreachable / blackhole / prohibit route.
    None,
}

pub fn route_get(dst: std::net::IpAddr) -> io::Result<Route> {
    let sock = Socket::open()?;
    let (family, addr): (u8, Vec<u8>) = match dst {
        std::net::IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        std::net::IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
    let mut body = vec![family, (addr.len() * 8) as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    push_attr(&mut body, RTA_DST, &addr);
    let mut route = Route::None;
    let res = sock.request(
        &header(RTM_GETROUTE, NLM_F_ACK, &body),
        false,
        |ty, payload| {
            if ty != RTM_NEWROUTE || payload.len() < 12 {
                return;
            }
            route = match payload[7] {
                RTN_LOCAL => Route::Local,
                RTN_UNICAST => attrs(&payload[12..])
                    .find(|(t, d)| *t == RTA_OIF && d.len() >= 4)
                    .map(|(_, d)| Route::Via(u32::from_ne_bytes([d[0], d[1], d[2], d[3]])))
                    .unwrap_or(Route::None),
                _ => Route::None,
            };
        },
    );
    match res {
        Ok(()) => Ok(route),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EINVAL)
            ) =>
        {
            Ok(Route::None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_veth_link_message() {
        let mut p = vec![0u8; 16];
        p[2..4].copy_from_slice(&1u16.to_ne_bytes());
        p[4..8].copy_from_slice(&7i32.to_ne_bytes());
        p[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        push_attr(&mut p, IFLA_IFNAME, b"cali1234\0");
        push_attr(&mut p, IFLA_LINK, &3u32.to_ne_bytes());
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, b"veth\0");
        push_attr(&mut p, IFLA_LINKINFO, &info);
        let l = parse_link(&p).unwrap();
        assert_eq!(
            (l.index, l.name.as_str(), l.kind.as_str()),
            (7, "cali1234", "veth")
        );
        assert_eq!(l.peer_index, Some(3));
        assert!(l.up && l.has_ethernet_header());
    }

    #[test]
    fn truncated_messages_do_not_panic() {
        assert!(parse_link(&[0u8; 3]).is_none());
        let mut p = vec![0u8; 16];
        p.extend_from_slice(&[200, 0, 3, 0, b'x']);
        assert_eq!(parse_link(&p).unwrap().name, "");
    }

    #[test]
    fn route_lookup_of_loopback_is_local() {
        assert_eq!(
            route_get("127.0.0.1".parse().unwrap()).unwrap(),
            Route::Local
        );
    }

    #[test]
    fn lists_loopback_of_this_namespace() {
        let links = links().expect("netlink dump");
        assert!(links.iter().any(|l| l.name == "lo"));
    }
}
