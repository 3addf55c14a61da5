//! Reading one table from the kernel: `IPT_SO_GET_INFO` for its size and hook
//! entry points, then `IPT_SO_GET_ENTRIES` for the entries themselves.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::kernel::bytes::u32_at;
use crate::kernel::syscall;

const SO_GET_INFO: libc::c_int = 64;
const SO_GET_ENTRIES: libc::c_int = 65;
const TABLE_NAME_LEN: usize = 32;
/// `struct ipt_getinfo` / `ip6t_getinfo`.
pub(super) const GETINFO_SIZE: usize = 84;
/// `struct ipt_get_entries` without its entries (36 bytes, aligned to 8).
const GET_ENTRIES_HEAD: usize = 40;
pub(super) const NUM_HOOKS: usize = 5;

/// What `IPT_SO_GET_INFO` says about a table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct TableInfo {
    pub(super) valid_hooks: u32,
    pub(super) hook_entry: [u32; NUM_HOOKS],
    pub(super) underflow: [u32; NUM_HOOKS],
    pub(super) size: u32,
}

/// The raw socket the table options are asked on (`AF_INET` or `AF_INET6`).
pub(super) fn raw_socket(af: libc::c_int) -> io::Result<OwnedFd> {
    syscall::raw_socket(af, libc::IPPROTO_RAW)
}

/// Info and entries of one table; `None` when it does not exist (any more).
pub(super) fn read_table(
    sock: &OwnedFd,
    level: libc::c_int,
    name: &str,
) -> io::Result<Option<(TableInfo, Vec<u8>)>> {
    if name.len() >= TABLE_NAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "table name too long",
        ));
    }
    let getsockopt = |opt, buf: &mut [u8]| syscall::getsockopt(sock.as_fd(), level, opt, buf);
    // The table may change between the two calls: the kernel then says EAGAIN.
    for _ in 0..5 {
        let mut buf = [0u8; GETINFO_SIZE];
        buf[..name.len()].copy_from_slice(name.as_bytes());
        match getsockopt(SO_GET_INFO, &mut buf) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            r => r?,
        }
        let info = parse_info(&buf).ok_or_else(|| io::Error::other("short getinfo"))?;
        let mut entries = vec![0u8; GET_ENTRIES_HEAD + info.size as usize];
        entries[..name.len()].copy_from_slice(name.as_bytes());
        entries[TABLE_NAME_LEN..TABLE_NAME_LEN + 4].copy_from_slice(&info.size.to_ne_bytes());
        match getsockopt(SO_GET_ENTRIES, &mut entries) {
            Ok(()) => return Ok(Some((info, entries.split_off(GET_ENTRIES_HEAD)))),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("table kept changing while being read"))
}

pub(super) fn parse_info(b: &[u8]) -> Option<TableInfo> {
    let mut info = TableInfo {
        valid_hooks: u32_at(b, 32)?,
        size: u32_at(b, 80)?,
        ..Default::default()
    };
    for h in 0..NUM_HOOKS {
        info.hook_entry[h] = u32_at(b, 36 + 4 * h)?;
        info.underflow[h] = u32_at(b, 56 + 4 * h)?;
    }
    Some(info)
}
