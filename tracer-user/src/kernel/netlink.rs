//! A minimal netlink client: the request/reply exchange (also used for
//! nf_tables over nfnetlink) and the rtnetlink queries calitrace needs: links,
//! addresses, a route lookup, namespace ids, a VXLAN device's port,
//! deleting a clsact qdisc, and the link announcements (`monitor`).
//! Small enough to not warrant a netlink crate.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use super::bytes::{cstr, i32_at, u16_at, u32_at};
use super::syscall;

mod monitor;
pub use monitor::{LinkChange, LinkMonitor, LinkNews, link_changes};

const RTM_GETLINK: u16 = 18;
const RTM_DELQDISC: u16 = 37;
const NLM_F_REQUEST: u16 = 1;
pub(crate) const NLM_F_ACK: u16 = 4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
/// The sequence number of every request: each socket serves one request.
const SEQ: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_LINK_NETNSID: u16 = 37;
pub(crate) const TCA_KIND: u16 = 1;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTN_UNICAST: u8 = 1;
const RTN_LOCAL: u8 = 2;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NDA_DST: u16 = 1;
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

    /// An Ethernet device that is up, of no particular kind (for tests).
    #[cfg(test)]
    pub fn ethernet(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            kind: String::new(),
            link_type: 1,
            peer_index: None,
            link_netnsid: None,
            up: true,
        }
    }
}

/// A netlink socket of any protocol (rtnetlink here, nfnetlink for nf_tables).
pub(crate) struct Socket(OwnedFd);

impl Socket {
    pub(crate) fn open() -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_ROUTE)
    }

    pub(crate) fn open_protocol(protocol: i32) -> io::Result<Self> {
        syscall::raw_socket(libc::AF_NETLINK, protocol).map(Self)
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        syscall::send(self.0.as_fd(), msg).map(drop)
    }

    /// One datagram, however large: its size is peeked first and `buf` grown.
    fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let fd = self.0.as_fd();
        let n = syscall::recv(fd, buf, libc::MSG_PEEK | libc::MSG_TRUNC)?;
        if n > buf.len() {
            buf.resize(n, 0);
        }
        syscall::recv(fd, buf, 0)
    }

    /// Sends a request made by [`header`] and hands every reply message to
    /// `f` (the final DONE and ACK too: a dump's DONE may carry
    /// `NLM_F_DUMP_INTR`) until DONE, or until the ACK unless `dump`.
    /// Netlink errors become `io::Error`s.
    pub(crate) fn request(
        &self,
        msg: &[u8],
        dump: bool,
        mut f: impl FnMut(&Message<'_>),
    ) -> io::Result<()> {
        self.send(msg)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            for msg in messages(&buf[..n]) {
                let msg = msg?;
                if msg.seq != SEQ {
                    continue;
                }
                f(&msg);
                match msg.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => match error_code(msg.payload) {
                        0 if dump => {}
                        0 => return Ok(()),
                        code => return Err(io::Error::from_raw_os_error(-code)),
                    },
                    _ => {}
                }
            }
        }
    }
}

/// One message of a netlink datagram.
pub(crate) struct Message<'a> {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) payload: &'a [u8],
}

/// The netlink messages of one datagram.
pub(crate) fn messages(mut b: &[u8]) -> impl Iterator<Item = io::Result<Message<'_>>> {
    std::iter::from_fn(move || {
        if b.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32_at(b, 0)? as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            b = &[];
            return Some(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed netlink reply",
            )));
        }
        let msg = Message {
            ty: u16_at(b, 4)?,
            flags: u16_at(b, 6)?,
            seq: u32_at(b, 8)?,
            payload: &b[NLMSG_HDRLEN..len],
        };
        b = &b[((len + 3) & !3).min(b.len())..];
        Some(Ok(msg))
    })
}

/// The (negative errno) code of an `NLMSG_ERROR` message; 0 is an ACK.
pub(crate) fn error_code(payload: &[u8]) -> i32 {
    i32_at(payload, 0).unwrap_or(-libc::EBADMSG)
}

/// A request: `nlmsghdr` and `body`, with the sequence number replies must echo.
pub(crate) fn header(ty: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    header_seq(ty, flags, SEQ, body)
}

/// A message with sequence number `seq`, e.g. one of an nf_tables batch.
pub(crate) fn header_seq(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + body.len());
    m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

pub(crate) fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
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
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)? & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, data))
    })
}

pub(crate) fn parse_link(payload: &[u8]) -> Option<Link> {
    // struct ifinfomsg { u8 family, u8 pad, u16 type, i32 index, u32 flags, u32 change }
    let mut link = Link {
        index: i32_at(payload, 4)? as u32,
        name: String::new(),
        kind: String::new(),
        link_type: u16_at(payload, 2)?,
        peer_index: None,
        link_netnsid: None,
        up: u32_at(payload, 8)? & libc::IFF_UP as u32 != 0,
    };
    for (ty, data) in attrs(payload.get(16..)?) {
        match ty {
            IFLA_IFNAME => link.name = cstr(data),
            IFLA_LINK => link.peer_index = u32_at(data, 0).or(link.peer_index),
            IFLA_LINK_NETNSID => link.link_netnsid = i32_at(data, 0).or(link.link_netnsid),
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
    let body = [0u8; 16]; // ifinfomsg, AF_UNSPEC
    dump(RTM_GETLINK, &body, RTM_NEWLINK, parse_link)
}

/// The UDP destination port of the VXLAN device `name` in this thread's
/// namespace; `None` when there is no such device or it is not VXLAN.
pub fn vxlan_port(name: &str) -> io::Result<Option<u16>> {
    let body = [0u8; 16]; // ifinfomsg, AF_UNSPEC
    let ports = dump(RTM_GETLINK, &body, RTM_NEWLINK, parse_vxlan_port)?;
    Ok(ports.into_iter().find(|(n, _)| n == name).map(|(_, p)| p))
}

/// The name and UDP port of a VXLAN link message (`IFLA_VXLAN_PORT` in
/// `IFLA_INFO_DATA`, big-endian); `None` for other links.
fn parse_vxlan_port(payload: &[u8]) -> Option<(String, u16)> {
    let (mut name, mut port) = (None, None);
    for (ty, data) in attrs(payload.get(16..)?) {
        match ty {
            IFLA_IFNAME => name = Some(cstr(data)),
            IFLA_LINKINFO => {
                let (mut vxlan, mut p) = (false, None);
                for (ity, idata) in attrs(data) {
                    match ity {
                        IFLA_INFO_KIND => vxlan = cstr(idata) == "vxlan",
                        IFLA_INFO_DATA => {
                            p = attrs(idata)
                                .find(|(t, d)| *t == IFLA_VXLAN_PORT && d.len() >= 2)
                                .map(|(_, d)| u16::from_be_bytes([d[0], d[1]]))
                        }
                        _ => {}
                    }
                }
                port = p.filter(|_| vxlan);
            }
            _ => {}
        }
    }
    Some((name?, port?))
}

/// The remote endpoints in the forwarding database of the device
/// `ifindex` (a VXLAN device's peers, as `bridge fdb show dev` lists them).
pub fn fdb_remotes(ifindex: u32) -> io::Result<Vec<IpAddr>> {
    // struct ndmsg { u8 family, u8 pad1, u16 pad2, i32 ifindex, u16 state, u8 flags, u8 type }
    let mut body = [0u8; 12];
    body[0] = libc::AF_BRIDGE as u8;
    let all = dump(RTM_GETNEIGH, &body, RTM_NEWNEIGH, parse_fdb_remote)?;
    let mut out: Vec<IpAddr> = all
        .into_iter()
        .filter(|(i, _)| *i == ifindex)
        .map(|(_, a)| a)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The device and remote address of an fdb entry that has one.
fn parse_fdb_remote(payload: &[u8]) -> Option<(u32, IpAddr)> {
    let ifindex = i32_at(payload, 4)? as u32;
    let dst = attrs(payload.get(12..)?).find(|(t, _)| *t == NDA_DST)?.1;
    let addr = match dst.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(dst).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(dst).ok()?),
        _ => return None,
    };
    Some((ifindex, addr))
}

/// The MTU of every link of this thread's namespace, by name.
pub fn link_mtus() -> io::Result<Vec<(String, u32)>> {
    let body = [0u8; 16]; // ifinfomsg, AF_UNSPEC
    dump(RTM_GETLINK, &body, RTM_NEWLINK, parse_mtu)
}

/// The name and `IFLA_MTU` of a link message.
fn parse_mtu(payload: &[u8]) -> Option<(String, u32)> {
    let (mut name, mut mtu) = (None, None);
    for (ty, data) in attrs(payload.get(16..)?) {
        match ty {
            IFLA_IFNAME => name = Some(cstr(data)),
            IFLA_MTU => mtu = u32_at(data, 0),
            _ => {}
        }
    }
    Some((name?, mtu?))
}

/// Every reply of type `want` to the dump request `ty`, read by `parse`.
pub(crate) fn dump<T>(
    ty: u16,
    body: &[u8],
    want: u16,
    parse: impl Fn(&[u8]) -> Option<T>,
) -> io::Result<Vec<T>> {
    let sock = Socket::open()?;
    let mut out = Vec::new();
    sock.request(&header(ty, NLM_F_DUMP, body), true, |m| {
        if m.ty == want
            && let Some(v) = parse(m.payload)
        {
            out.push(v);
        }
    })?;
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
    sock.request(&header(RTM_DELQDISC, NLM_F_ACK, &body), false, |_| {})
}

/// The id this namespace gives the namespace open at `fd` (what
/// `IFLA_LINK_NETNSID` of a veth refers to), if it has assigned one.
pub fn nsid_of(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let sock = Socket::open()?;
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    push_attr(&mut body, NETNSA_FD, &(fd.as_raw_fd() as u32).to_ne_bytes());
    let mut nsid = None;
    sock.request(&header(RTM_GETNSID, NLM_F_ACK, &body), false, |m| {
        if m.ty == RTM_NEWNSID
            && let Some(a) = m.payload.get(4..)
        {
            nsid = attrs(a)
                .find(|(t, d)| *t == NETNSA_NSID && d.len() >= 4)
                .and_then(|(_, d)| i32_at(d, 0))
                .filter(|id| *id >= 0);
        }
    })?;
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
    let res = sock.request(&header(RTM_GETROUTE, NLM_F_ACK, &body), false, |m| {
        if m.ty != RTM_NEWROUTE || m.payload.len() < 12 {
            return;
        }
        route = match m.payload[7] {
            RTN_LOCAL => Route::Local,
            RTN_UNICAST => attrs(&m.payload[12..])
                .find(|(t, d)| *t == RTA_OIF && d.len() >= 4)
                .and_then(|(_, d)| u32_at(d, 0))
                .map_or(Route::None, Route::Via),
            _ => Route::None,
        };
    });
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

/// The addresses of this thread's network namespace, as `getifaddrs` gives
/// them: an address's local end (`IFA_LOCAL`, which differs on point-to-point
/// links), else `IFA_ADDRESS`.
pub fn addresses() -> io::Result<Vec<IpAddr>> {
    let body = [0u8; 8]; // ifaddrmsg, AF_UNSPEC
    dump(RTM_GETADDR, &body, RTM_NEWADDR, parse_address)
}

/// Every address with the index of its link.
pub fn link_addresses() -> io::Result<Vec<(u32, IpAddr)>> {
    let body = [0u8; 8]; // ifaddrmsg, AF_UNSPEC
    dump(RTM_GETADDR, &body, RTM_NEWADDR, |p| {
        Some((u32_at(p, 4)?, parse_address(p)?))
    })
}

fn parse_address(payload: &[u8]) -> Option<IpAddr> {
    // struct ifaddrmsg { u8 family, u8 prefixlen, u8 flags, u8 scope, u32 index }
    let (mut address, mut local) = (None, None);
    for (ty, data) in attrs(payload.get(8..)?) {
        match ty {
            IFA_ADDRESS => address = Some(data),
            IFA_LOCAL => local = Some(data),
            _ => {}
        }
    }
    let a = local.or(address)?;
    match i32::from(payload[0]) {
        libc::AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(a).ok()?)),
        libc::AF_INET6 => Some(IpAddr::from(<[u8; 16]>::try_from(a).ok()?)),
        _ => None,
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

    fn vxlan_link(kind: &[u8], port: Option<u16>) -> Vec<u8> {
        let mut p = vec![0u8; 16];
        push_attr(&mut p, IFLA_IFNAME, b"vxlan.calico\0");
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, kind);
        let mut data = Vec::new();
        push_attr(&mut data, 1, &4096u32.to_ne_bytes()); // IFLA_VXLAN_ID
        if let Some(port) = port {
            push_attr(&mut data, IFLA_VXLAN_PORT, &port.to_be_bytes());
        }
        push_attr(&mut info, IFLA_INFO_DATA, &data);
        push_attr(&mut p, IFLA_LINKINFO, &info);
        p
    }

    #[test]
    fn fdb_entries_name_their_device_and_remote() {
        let mut m = vec![7u8, 0, 0, 0];
        m.extend_from_slice(&9i32.to_ne_bytes());
        m.extend_from_slice(&[0x80, 0, 2, 0]); // state, flags, type
        push_attr(&mut m, NDA_DST, &[192, 168, 5, 2]);
        assert_eq!(
            parse_fdb_remote(&m),
            Some((9, "192.168.5.2".parse().unwrap()))
        );
        assert_eq!(parse_fdb_remote(&m[..12]), None, "no remote: a local entry");
        for cut in 0..m.len() {
            let _ = parse_fdb_remote(&m[..cut]);
        }
    }

    #[test]
    fn reads_the_port_of_a_vxlan_link() {
        assert_eq!(
            parse_vxlan_port(&vxlan_link(b"vxlan\0", Some(8472))),
            Some(("vxlan.calico".into(), 8472))
        );
        assert_eq!(parse_vxlan_port(&vxlan_link(b"vxlan\0", None)), None);
        assert_eq!(
            parse_vxlan_port(&vxlan_link(b"geneve\0", Some(6081))),
            None,
            "only VXLAN links"
        );
        let full = vxlan_link(b"vxlan\0", Some(4789));
        for cut in 0..full.len() {
            let _ = parse_vxlan_port(&full[..cut]);
        }
        assert_eq!(
            vxlan_port("lo").unwrap(),
            None,
            "loopback is no VXLAN device"
        );
    }

    #[test]
    fn reads_the_mtu_of_a_link() {
        let mut p = vec![0u8; 16];
        push_attr(&mut p, IFLA_IFNAME, b"cali1234\0");
        push_attr(&mut p, IFLA_MTU, &1450u32.to_ne_bytes());
        assert_eq!(parse_mtu(&p), Some(("cali1234".into(), 1450)));
        assert_eq!(parse_mtu(&p[..p.len() - 8]), None, "no MTU attribute");
        let lo = link_mtus().unwrap();
        assert!(lo.iter().any(|(n, m)| n == "lo" && *m > 0), "{lo:?}");
    }

    #[test]
    fn truncated_messages_do_not_panic() {
        assert!(parse_link(&[0u8; 3]).is_none());
        let mut p = vec![0u8; 16];
        p.extend_from_slice(&[200, 0, 3, 0, b'x']);
        assert_eq!(parse_link(&p).unwrap().name, "");
    }

    #[test]
    fn splits_datagrams_into_messages() {
        let mut d = header(7, NLM_F_DUMP, &[0; 4]);
        let mut second = header(16, 0x10, &[]);
        second[8..12].copy_from_slice(&7u32.to_ne_bytes());
        d.extend(second);
        let m: Vec<_> = messages(&d).collect::<io::Result<_>>().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].ty, m[0].seq, m[0].payload.len()), (7, SEQ, 4));
        assert_eq!(m[0].flags, NLM_F_DUMP | NLM_F_REQUEST);
        assert_eq!(
            (m[1].ty, m[1].flags, m[1].seq),
            (16, 0x10 | NLM_F_REQUEST, 7)
        );
        d[20] = 200;
        assert!(messages(&d).any(|m| m.is_err()));
        let _ = messages(&[0xff; 40]).count();
        assert_eq!(error_code(&[1, 0]), -libc::EBADMSG);
    }

    #[test]
    fn address_messages_prefer_the_local_end() {
        let mut p = vec![libc::AF_INET as u8, 32, 0, 0, 5, 0, 0, 0];
        push_attr(&mut p, IFA_ADDRESS, &[10, 8, 8, 2]);
        assert_eq!(parse_address(&p), Some(IpAddr::from([10, 8, 8, 2])));
        push_attr(&mut p, IFA_LOCAL, &[10, 8, 8, 1]);
        assert_eq!(parse_address(&p), Some(IpAddr::from([10, 8, 8, 1])));
        let mut p = vec![libc::AF_INET6 as u8, 128, 0, 0, 1, 0, 0, 0];
        push_attr(&mut p, IFA_ADDRESS, &[0xfd; 16]);
        assert_eq!(parse_address(&p), Some(IpAddr::from([0xfd; 16])));
        assert_eq!(parse_address(&p[..5]), None);
        p[0] = libc::AF_PACKET as u8;
        assert_eq!(parse_address(&p), None);
    }

    #[test]
    fn addresses_of_this_namespace_include_loopback() {
        let addrs = addresses().expect("netlink dump");
        assert!(addrs.contains(&IpAddr::from([127, 0, 0, 1])));
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
