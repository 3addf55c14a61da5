//! The few system calls std has no wrapper for (netlink and raw sockets,
//! socket options, `setns`), each behind a safe function. They are the only
//! `unsafe` code of the kernel and netfilter readers.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `-1` and `errno` from a system call become the `io::Error`.
fn check(rc: isize) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// A new close-on-exec `SOCK_RAW` socket.
pub(crate) fn raw_socket(domain: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes only integers and touches no memory of ours.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    check(fd as isize)?;
    // SAFETY: socket() succeeded, so `fd` is an open descriptor that nothing
    // else owns; the OwnedFd becomes its only owner and closes it on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new close-on-exec, non-blocking netlink socket of `protocol`, bound to
/// the multicast `groups` (e.g. `RTMGRP_LINK`): it receives the kernel's
/// notifications for this thread's network namespace.
pub(crate) fn netlink_subscriber(protocol: libc::c_int, groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes only integers and touches no memory of ours.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            protocol,
        )
    };
    check(fd as isize)?;
    // SAFETY: as in `raw_socket`: an open descriptor nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid (port 0: the kernel picks one).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    // SAFETY: the kernel reads `size_of::<sockaddr_nl>()` bytes from `addr`, a
    // local that lives for the whole call; the fd is open.
    let rc = unsafe {
        libc::bind(
            owned.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    check(rc as isize)?;
    Ok(owned)
}

pub(crate) fn send(fd: BorrowedFd<'_>, msg: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `msg.len()` bytes from `msg`, a live
    // slice borrowed for the whole call; `fd` is open while borrowed.
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    check(n)
}

/// Receives into `buf`; with `MSG_TRUNC` the result is the datagram's full
/// length, which may exceed `buf.len()`.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, a live
    // slice mutably borrowed for the whole call (MSG_TRUNC only changes the
    // returned length, not how much is written); `fd` is open while borrowed.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    check(n)
}

/// `getsockopt` with `buf` as both request and answer (what x_tables'
/// `IPT_SO_GET_*` options expect).
pub(crate) fn getsockopt(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `len` tells the kernel `buf`'s true size, so it reads and writes
    // only inside that live, mutably borrowed slice; `len` itself is a local
    // it may overwrite. `fd` is open while borrowed.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    check(rc as isize).map(drop)
}

/// Moves the calling thread (only it) into the network namespace open at `ns`.
pub(crate) fn enter_netns(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns() takes only integers and touches no memory of ours; it
    // changes the namespace of this thread alone, which Rust's memory safety
    // does not depend on. `ns` is open while borrowed.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    check(rc as isize).map(drop)
}
