//! Link notifications: the kernel announces every interface that appears,
//! changes or goes in this namespace to the members of rtnetlink's
//! `RTMGRP_LINK` group. Read without blocking, from an event loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use super::{Link, RTM_NEWLINK, Socket, messages, parse_link};
use crate::kernel::syscall;

const RTM_DELLINK: u16 = 17;
const RTMGRP_LINK: u32 = 1;

/// One announced change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// An interface appeared or changed (state, name, ...): how it is now.
    Present(Link),
    /// An interface was deleted, or moved to another namespace.
    Gone { index: u32, name: String },
}

/// What one read of a [`LinkMonitor`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LinkNews {
    pub changes: Vec<LinkChange>,
    /// The kernel dropped announcements (the socket's buffer was full): list
    /// the interfaces again to know how things are.
    pub overrun: bool,
}

/// Subscribed to the link announcements of the namespace it was opened in.
pub struct LinkMonitor {
    sock: Socket,
    buf: Vec<u8>,
}

impl LinkMonitor {
    pub fn open() -> io::Result<LinkMonitor> {
        let fd = syscall::netlink_subscriber(libc::NETLINK_ROUTE, RTMGRP_LINK)?;
        Ok(LinkMonitor {
            sock: Socket(fd),
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Every announcement waiting on the socket; none when there are none
    /// (it never blocks).
    pub fn read(&mut self) -> io::Result<LinkNews> {
        let mut news = LinkNews::default();
        loop {
            match self.sock.recv(&mut self.buf) {
                Ok(n) => news.changes.extend(link_changes(&self.buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(news),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => news.overrun = true,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for LinkMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.0.as_fd().as_raw_fd()
    }
}

/// The link announcements of one datagram; other messages, and malformed
/// ones, are skipped.
pub fn link_changes(datagram: &[u8]) -> Vec<LinkChange> {
    messages(datagram)
        .map_while(Result::ok)
        .filter_map(|m| match m.ty {
            RTM_NEWLINK => parse_link(m.payload).map(LinkChange::Present),
            RTM_DELLINK => parse_link(m.payload).map(|l| LinkChange::Gone {
                index: l.index,
                name: l.name,
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINK, IFLA_LINKINFO, push_attr};
    use super::*;

    /// An announcement as the kernel sends it: nlmsghdr, ifinfomsg, attributes.
    fn announcement(ty: u16, index: i32, name: &str, kind: &str) -> Vec<u8> {
        let mut body = vec![0u8; 16];
        body[2..4].copy_from_slice(&1u16.to_ne_bytes());
        body[4..8].copy_from_slice(&index.to_ne_bytes());
        push_attr(&mut body, IFLA_IFNAME, format!("{name}\0").as_bytes());
        push_attr(&mut body, IFLA_LINK, &2u32.to_ne_bytes());
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, format!("{kind}\0").as_bytes());
        push_attr(&mut body, IFLA_LINKINFO, &info);
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&[0u8; 8]); // seq 0 and port 0: a notification
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn new_and_deleted_links_are_told_apart() {
        let mut d = announcement(RTM_NEWLINK, 12, "cali0123456789a", "veth");
        d.extend(announcement(RTM_DELLINK, 9, "cali00000000001", "veth"));
        d.extend(announcement(20, 3, "eth0", "")); // RTM_NEWADDR: not a link
        let changes = link_changes(&d);
        assert_eq!(changes.len(), 2, "{changes:?}");
        match &changes[0] {
            LinkChange::Present(l) => {
                assert_eq!((l.index, l.name.as_str()), (12, "cali0123456789a"));
                assert_eq!((l.kind.as_str(), l.peer_index), ("veth", Some(2)));
            }
            other => panic!("expected a present link: {other:?}"),
        }
        assert_eq!(
            changes[1],
            LinkChange::Gone {
                index: 9,
                name: "cali00000000001".into()
            }
        );
    }

    #[test]
    fn truncated_datagrams_give_what_is_whole() {
        let mut d = announcement(RTM_NEWLINK, 12, "cali1", "veth");
        let whole = d.len();
        d.extend(announcement(RTM_DELLINK, 13, "cali2", "veth"));
        for cut in 0..d.len() {
            let n = link_changes(&d[..cut]).len();
            assert_eq!(n, usize::from(cut >= whole), "cut at {cut}");
        }
        assert!(link_changes(&[0xff; 64]).is_empty());
    }

    #[test]
    fn a_quiet_monitor_reads_nothing_without_blocking() {
        let mut m = LinkMonitor::open().expect("netlink needs no privileges");
        assert!(m.as_raw_fd() >= 0);
        let news = m.read().unwrap();
        assert!(!news.overrun);
    }
}
