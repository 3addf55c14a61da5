//! x_tables (`iptables-legacy`, `ip6tables-legacy`): the tables as the kernel
//! hands them to iptables, through `IPT_SO_GET_INFO` / `IPT_SO_GET_ENTRIES` on
//! a raw socket, decoded into [`Table`]s.
//!
//! The blob is a sequence of `ipt_entry` (or `ip6t_entry`): header, matches,
//! target, chained by `next_offset`. Built-in chains start at the table's hook
//! entries and end with their policy (the "underflow" entry); user chains start
//! with an `ERROR` target naming the chain and end with an implicit `RETURN`.
//! The layouts here are those of 64-bit architectures.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::inventory::{Backend, Chain, Counters, Family, Hook, Inventory, Rule, Table, Verdict};

const SO_GET_INFO: libc::c_int = 64;
const SO_GET_ENTRIES: libc::c_int = 65;
const TABLE_NAME_LEN: usize = 32;
/// `struct ipt_getinfo` / `ip6t_getinfo`.
const GETINFO_SIZE: usize = 84;
/// `struct ipt_get_entries` without its entries (36 bytes, aligned to 8).
const GET_ENTRIES_HEAD: usize = 40;
/// `struct xt_entry_match` / `xt_entry_target` before their data.
const XT_HEAD: usize = 32;
const NUM_HOOKS: usize = 5;

// ipt_ip.invflags (the same bits in ip6t_ip6).
const INV_VIA_IN: u8 = 0x01;
const INV_VIA_OUT: u8 = 0x02;
const INV_SRCIP: u8 = 0x08;
const INV_DSTIP: u8 = 0x10;
const INV_PROTO: u8 = 0x40;

/// Where the fields of an entry are, for IPv4 (`ipt_entry`) or IPv6 (`ip6t_entry`).
struct Layout {
    family: Family,
    entry_size: usize,
    addr_len: usize,
    iniface: usize,
    proto: usize,
    flags: usize,
    invflags: usize,
    goto_flag: u8,
    target_offset: usize,
    counters: usize,
}

const IPV4: Layout = Layout {
    family: Family::Ipv4,
    entry_size: 112,
    addr_len: 4,
    iniface: 16,
    proto: 80,
    flags: 82,
    invflags: 83,
    goto_flag: 0x02, // IPT_F_GOTO
    target_offset: 88,
    counters: 96,
};

const IPV6: Layout = Layout {
    family: Family::Ipv6,
    entry_size: 168,
    addr_len: 16,
    iniface: 64,
    proto: 128,
    flags: 131,
    invflags: 132,
    goto_flag: 0x04, // IP6T_F_GOTO
    target_offset: 140,
    counters: 152,
};

/// What `IPT_SO_GET_INFO` says about a table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct TableInfo {
    valid_hooks: u32,
    hook_entry: [u32; NUM_HOOKS],
    underflow: [u32; NUM_HOOKS],
    size: u32,
}

/// Adds every x_tables table of this thread's network namespace, IPv4 and IPv6.
pub(crate) fn read_into(inv: &mut Inventory) {
    let sources = [
        (
            &IPV4,
            "iptables",
            "ip_tables_names",
            libc::AF_INET,
            libc::SOL_IP,
        ),
        (
            &IPV6,
            "ip6tables",
            "ip6_tables_names",
            libc::AF_INET6,
            libc::SOL_IPV6,
        ),
    ];
    for (layout, what, names_file, af, level) in sources {
        match read_family(layout, names_file, af, level) {
            Ok((tables, errors)) => {
                inv.tables.extend(tables);
                inv.errors
                    .extend(errors.into_iter().map(|e| format!("x_tables: {what} {e}")));
            }
            Err(e) => inv.errors.push(format!("x_tables: {what}: {e}")),
        }
    }
}

/// The tables of one family. Only tables listed in `/proc/net/ip{,6}_tables_names`
/// are asked for: asking for any other would make the kernel create it in
/// this namespace, with hooks, which a read-only inventory must not do.
fn read_family(
    layout: &Layout,
    names_file: &str,
    af: libc::c_int,
    level: libc::c_int,
) -> io::Result<(Vec<Table>, Vec<String>)> {
    // thread-self: /proc/self/net is the namespace of the main thread.
    let names = match std::fs::read_to_string(format!("/proc/thread-self/net/{names_file}")) {
        Ok(s) => s,
        // No such file: ip{,6}_tables is not loaded, so there is no table.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((vec![], vec![])),
        Err(e) => return Err(e),
    };
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return Ok((vec![], vec![]));
    }
    let sock = raw_socket(af)?;
    let (mut tables, mut errors) = (Vec::new(), Vec::new());
    for name in names {
        match read_table(&sock, level, name) {
            Ok(Some((info, blob))) => match parse_table(layout, name, &info, &blob) {
                Ok(t) => tables.push(t),
                Err(e) => errors.push(format!("{name}: {e}")),
            },
            Ok(None) => {}
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Ok((tables, errors))
}

fn raw_socket(af: libc::c_int) -> io::Result<OwnedFd> {
    let fd = unsafe { libc::socket(af, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn getsockopt(
    sock: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut len = buf.len() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Info and entries of one table; `None` when it does not exist (any more).
fn read_table(
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
    // The table may change between the two calls: the kernel then says EAGAIN.
    for _ in 0..5 {
        let mut buf = [0u8; GETINFO_SIZE];
        buf[..name.len()].copy_from_slice(name.as_bytes());
        match getsockopt(sock, level, SO_GET_INFO, &mut buf) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            r => r?,
        }
        let info = parse_info(&buf).ok_or_else(|| io::Error::other("short getinfo"))?;
        let mut entries = vec![0u8; GET_ENTRIES_HEAD + info.size as usize];
        entries[..name.len()].copy_from_slice(name.as_bytes());
        entries[TABLE_NAME_LEN..TABLE_NAME_LEN + 4].copy_from_slice(&info.size.to_ne_bytes());
        match getsockopt(sock, level, SO_GET_ENTRIES, &mut entries) {
            Ok(()) => return Ok(Some((info, entries.split_off(GET_ENTRIES_HEAD)))),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("table kept changing while being read"))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn parse_info(b: &[u8]) -> Option<TableInfo> {
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

/// One entry of the blob, bounds already checked.
struct Entry<'a> {
    offset: usize,
    next: usize,
    header: &'a [u8],
    matches: Vec<(String, u8, &'a [u8])>,
    target: String,
    target_data: &'a [u8],
    counters: Counters,
}

impl Entry<'_> {
    fn standard_verdict(&self) -> Option<i32> {
        if !self.target.is_empty() {
            return None;
        }
        Some(i32::from_ne_bytes(
            self.target_data.get(..4)?.try_into().ok()?,
        ))
    }

    fn error_name(&self) -> Option<String> {
        (self.target == "ERROR").then(|| cstr(self.target_data))
    }
}

fn parse_entry<'a>(layout: &Layout, blob: &'a [u8], offset: usize) -> Result<Entry<'a>, String> {
    let bad = |what: &str| format!("entry at offset {offset}: {what}");
    let header = blob
        .get(offset..offset + layout.entry_size)
        .ok_or_else(|| bad("truncated header"))?;
    let target_offset = u16_at(header, layout.target_offset).unwrap_or(0) as usize;
    let next = u16_at(header, layout.target_offset + 2).unwrap_or(0) as usize;
    if target_offset < layout.entry_size
        || target_offset + XT_HEAD > next
        || offset + next > blob.len()
    {
        return Err(bad("bad target_offset/next_offset"));
    }
    let entry = &blob[offset..offset + next];
    let mut matches = Vec::new();
    let mut m = layout.entry_size;
    while m < target_offset {
        let size = u16_at(entry, m).unwrap_or(0) as usize;
        if size < XT_HEAD || m + size > target_offset {
            return Err(bad("bad match size"));
        }
        let name = cstr(&entry[m + 2..m + 31]);
        matches.push((name, entry[m + 31], &entry[m + XT_HEAD..m + size]));
        m += size;
    }
    let tsize = u16_at(entry, target_offset).unwrap_or(0) as usize;
    if tsize < XT_HEAD || target_offset + tsize > next {
        return Err(bad("bad target size"));
    }
    let c = layout.counters;
    Ok(Entry {
        offset,
        next,
        header,
        matches,
        target: cstr(&entry[target_offset + 2..target_offset + 31]),
        target_data: &entry[target_offset + XT_HEAD..target_offset + tsize],
        counters: Counters {
            packets: u64_at(header, c).unwrap_or(0),
            bytes: u64_at(header, c + 8).unwrap_or(0),
        },
    })
}

fn parse_entries<'a>(layout: &Layout, blob: &'a [u8]) -> Result<Vec<Entry<'a>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < blob.len() {
        let e = parse_entry(layout, blob, off)?;
        off += e.next;
        out.push(e);
    }
    Ok(out)
}

/// The priority x_tables registers a table's hooks with (`NF_IP_PRI_*`, the
/// same for IPv6).
fn table_priority(table: &str, hook: Hook) -> Option<i32> {
    Some(match table {
        "raw" => -300,
        "mangle" => -150,
        "nat" if matches!(hook, Hook::Prerouting | Hook::Output) => -100,
        "nat" => 100,
        "filter" => 0,
        "security" => 50,
        _ => return None,
    })
}

/// Decodes a table blob as returned by `IPT_SO_GET_ENTRIES`.
fn parse_table(
    layout: &Layout,
    name: &str,
    info: &TableInfo,
    blob: &[u8],
) -> Result<Table, String> {
    let entries = parse_entries(layout, blob)?;
    // Jumps point at the first entry after a user chain's ERROR head.
    let chain_at: HashMap<usize, String> = entries
        .windows(2)
        .filter_map(|w| Some((w[1].offset, w[0].error_name()?)))
        .collect();
    let hook_at = |off: usize| {
        (0..NUM_HOOKS)
            .find(|&h| info.valid_hooks & (1 << h) != 0 && info.hook_entry[h] as usize == off)
    };

    let mut chains: Vec<Chain> = Vec::new();
    let mut underflow: Option<usize> = None;
    for (i, e) in entries.iter().enumerate() {
        if let Some(h) = hook_at(e.offset) {
            let hook = Hook::from_inet(h as u32);
            chains.push(Chain {
                name: hook.map(|h| h.to_string()).unwrap_or_default(),
                hook,
                priority: hook.and_then(|h| table_priority(name, h)),
                policy: None,
                policy_counters: None,
                rules: vec![],
            });
            underflow = Some(info.underflow[h] as usize);
        }
        if let Some(chain_name) = e.error_name() {
            if chain_name == "ERROR" {
                break; // the end of the table
            }
            chains.push(Chain {
                name: chain_name,
                hook: None,
                priority: None,
                policy: None,
                policy_counters: None,
                rules: vec![],
            });
            underflow = None;
            continue;
        }
        let Some(chain) = chains.last_mut() else {
            continue; // not in any chain: a malformed table
        };
        if underflow == Some(e.offset) {
            chain.policy = Some(
                standard_verdict_of(e, layout, &chain_at)
                    .unwrap_or(Verdict::Other(e.target.clone())),
            );
            chain.policy_counters = Some(e.counters);
            continue;
        }
        let user_chain_end =
            chain.hook.is_none() && entries.get(i + 1).is_none_or(|n| n.error_name().is_some());
        if user_chain_end && e.standard_verdict() == Some(XT_RETURN) {
            continue; // the implicit RETURN iptables appends to every user chain
        }
        let id = (chain.rules.len() + 1).to_string();
        chain.rules.push(rule_of(layout, e, id, &chain_at));
    }
    Ok(Table {
        backend: Backend::Legacy,
        family: layout.family,
        name: name.to_string(),
        chains,
    })
}

const XT_RETURN: i32 = -5;

/// The verdict of a standard target; `None` for a fall-through (no `-j`).
fn standard_verdict_of(
    e: &Entry,
    layout: &Layout,
    chain_at: &HashMap<usize, String>,
) -> Option<Verdict> {
    let v = e.standard_verdict()?;
    if v < 0 {
        return Some(builtin_verdict(v));
    }
    let v = v as usize;
    if v == e.offset + e.next {
        return None;
    }
    let goto = e.header[layout.flags] & layout.goto_flag != 0;
    Some(match chain_at.get(&v) {
        Some(c) if goto => Verdict::Goto(c.clone()),
        Some(c) => Verdict::Jump(c.clone()),
        None => Verdict::Other(format!("jump to offset {v}")),
    })
}

/// A negative standard verdict: `-NF_x - 1`.
fn builtin_verdict(v: i32) -> Verdict {
    match -(v as i64) - 1 {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        3 => Verdict::Queue,
        4 => Verdict::Return, // NF_REPEAT stands for RETURN here
        n => Verdict::Other(format!("verdict {n}")),
    }
}

/// The verdict of a named xtables target (also used for `iptables-nft`'s
/// `target` expressions); `None` for targets that let the packet go on.
pub(crate) fn target_verdict(name: &str) -> Option<Verdict> {
    const NON_TERMINAL: &[&str] = &[
        "LOG",
        "NFLOG",
        "ULOG",
        "MARK",
        "CONNMARK",
        "CONNSECMARK",
        "SECMARK",
        "CT",
        "NOTRACK",
        "TRACE",
        "CHECKSUM",
        "CLASSIFY",
        "DSCP",
        "TOS",
        "TTL",
        "HL",
        "TCPMSS",
        "TCPOPTSTRIP",
        "TEE",
        "AUDIT",
        "SET",
        "IDLETIMER",
        "LED",
        "HMARK",
        "RATEEST",
        "ECN",
        "IPV4OPTSSTRIP",
    ];
    match name {
        "REJECT" => Some(Verdict::Reject),
        "NFQUEUE" | "QUEUE" => Some(Verdict::Queue),
        "DROP" => Some(Verdict::Drop),
        "ACCEPT" => Some(Verdict::Accept),
        "RETURN" => Some(Verdict::Return),
        n if NON_TERMINAL.contains(&n) => None,
        n => Some(Verdict::Other(n.to_string())),
    }
}

fn rule_of(layout: &Layout, e: &Entry, id: String, chain_at: &HashMap<usize, String>) -> Rule {
    let mut text = ip_part_text(layout, e.header);
    let mut comment = None;
    for (name, rev, data) in &e.matches {
        text.push(format!("-m {name}"));
        if name == "comment" {
            let c = cstr(&data[..data.len().min(256)]);
            text.push(format!("--comment {c:?}"));
            comment = Some(c);
        } else {
            text.extend(match_args(name, *rev, data));
        }
    }
    let verdict = if e.target.is_empty() {
        let v = standard_verdict_of(e, layout, chain_at);
        match &v {
            Some(Verdict::Jump(c)) => text.push(format!("-j {c}")),
            Some(Verdict::Goto(c)) => text.push(format!("-g {c}")),
            Some(v) => text.push(format!("-j {v}")),
            None => {}
        }
        v
    } else {
        text.push(format!("-j {}", e.target));
        target_verdict(&e.target)
    };
    Rule {
        id,
        text: text.join(" "),
        verdict,
        comment,
        counters: Some(e.counters),
    }
}

/// `-s`, `-d`, `-i`, `-o`, `-p` of the entry header, as `iptables -S` writes them.
fn ip_part_text(layout: &Layout, h: &[u8]) -> Vec<String> {
    let inv = h[layout.invflags];
    let not = |bit: u8| if inv & bit != 0 { "! " } else { "" };
    let mut out = Vec::new();
    let n = layout.addr_len;
    for (i, (opt, bit)) in [("-s", INV_SRCIP), ("-d", INV_DSTIP)]
        .into_iter()
        .enumerate()
    {
        let addr = &h[i * n..(i + 1) * n];
        let mask = &h[(2 + i) * n..(3 + i) * n];
        if mask.iter().any(|&b| b != 0) {
            out.push(format!("{}{opt} {}", not(bit), addr_text(addr, mask)));
        }
    }
    for (i, (opt, bit)) in [("-i", INV_VIA_IN), ("-o", INV_VIA_OUT)]
        .into_iter()
        .enumerate()
    {
        let name = &h[layout.iniface + 16 * i..layout.iniface + 16 * (i + 1)];
        let mask = &h[layout.iniface + 32 + 16 * i..layout.iniface + 32 + 16 * (i + 1)];
        if let Some(t) = iface_text(name, mask) {
            out.push(format!("{}{opt} {t}", not(bit)));
        }
    }
    let proto = u16_at(h, layout.proto).unwrap_or(0);
    if proto != 0 {
        out.push(format!("{}-p {}", not(INV_PROTO), proto_name(proto as u8)));
    }
    out
}

fn addr_text(addr: &[u8], mask: &[u8]) -> String {
    let ip = match addr.len() {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(addr).unwrap_or_default()).to_string(),
        _ => Ipv6Addr::from(<[u8; 16]>::try_from(addr).unwrap_or_default()).to_string(),
    };
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
        .skip(ones as usize)
        .all(|bit| bit == 0);
    if contiguous {
        format!("{ip}/{ones}")
    } else {
        format!("{ip}/{}", addr_text_plain(mask))
    }
}

fn addr_text_plain(b: &[u8]) -> String {
    match b.len() {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(b).unwrap_or_default()).to_string(),
        _ => Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default()).to_string(),
    }
}

/// `eth0`, or `cali+` when only a prefix is compared. iptables keeps the `+`
/// in the name; the mask is what the kernel goes by.
fn iface_text(name: &[u8], mask: &[u8]) -> Option<String> {
    let s = cstr(name);
    if s.is_empty() {
        return None;
    }
    let wildcard = mask.get(s.len()).is_some_and(|&m| m == 0);
    Some(if wildcard && !s.ends_with('+') {
        format!("{s}+")
    } else {
        s
    })
}

pub(crate) fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        2 => "igmp".into(),
        4 => "ipip".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        41 => "ipv6".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// The arguments of a few common matches; others show only as `-m NAME`.
fn match_args(name: &str, rev: u8, d: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let ports = |out: &mut Vec<String>, inv: u8, inv_src: u8, inv_dst: u8| {
        for (i, (opt, bit)) in [("--sport", inv_src), ("--dport", inv_dst)]
            .into_iter()
            .enumerate()
        {
            let (Some(lo), Some(hi)) = (u16_at(d, 4 * i), u16_at(d, 4 * i + 2)) else {
                return;
            };
            let not = if inv & bit != 0 { "! " } else { "" };
            match (lo, hi) {
                (0, 0xffff) => {}
                (lo, hi) if lo == hi => out.push(format!("{not}{opt} {lo}")),
                (lo, hi) => out.push(format!("{not}{opt} {lo}:{hi}")),
            }
        }
    };
    match name {
        "tcp" => ports(&mut out, d.get(11).copied().unwrap_or(0), 0x01, 0x02),
        "udp" => ports(&mut out, d.get(8).copied().unwrap_or(0), 0x01, 0x02),
        "mark" if rev == 1 => {
            if let (Some(mark), Some(mask), Some(&inv)) = (u32_at(d, 0), u32_at(d, 4), d.get(8)) {
                let not = if inv != 0 { "! " } else { "" };
                out.push(format!("{not}--mark {mark:#x}/{mask:#x}"));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds x_tables blobs the way libiptc lays them out.
    struct Builder {
        layout: &'static Layout,
        blob: Vec<u8>,
    }

    #[derive(Default)]
    struct EntrySpec<'a> {
        src: Option<(&'a [u8], &'a [u8])>,
        iniface: Option<(&'a str, bool)>,
        proto: u16,
        goto: bool,
        matches: Vec<(&'a str, Vec<u8>)>,
        target: &'a str,
        target_data: Vec<u8>,
        counters: (u64, u64),
    }

    fn xt_head(size: usize, name: &str) -> Vec<u8> {
        let mut h = vec![0u8; XT_HEAD];
        h[..2].copy_from_slice(&(size as u16).to_ne_bytes());
        h[2..2 + name.len()].copy_from_slice(name.as_bytes());
        h
    }

    fn align8(n: usize) -> usize {
        (n + 7) & !7
    }

    impl Builder {
        fn new(v6: bool) -> Self {
            Builder {
                layout: if v6 { &IPV6 } else { &IPV4 },
                blob: vec![],
            }
        }

        /// Appends an entry; returns its offset.
        fn entry(&mut self, s: EntrySpec) -> usize {
            let l = self.layout;
            let mut e = vec![0u8; l.entry_size];
            if let Some((addr, mask)) = s.src {
                e[..addr.len()].copy_from_slice(addr);
                e[2 * l.addr_len..2 * l.addr_len + mask.len()].copy_from_slice(mask);
            }
            if let Some((name, wildcard)) = s.iniface {
                e[l.iniface..l.iniface + name.len()].copy_from_slice(name.as_bytes());
                // Like iptables: "cali+" is stored with the "+", masked up to it.
                let n = if wildcard {
                    name.len() - 1
                } else {
                    name.len() + 1
                };
                e[l.iniface + 32..l.iniface + 32 + n].fill(0xff);
            }
            e[l.proto..l.proto + 2].copy_from_slice(&s.proto.to_ne_bytes());
            if s.goto {
                e[l.flags] = l.goto_flag;
            }
            e[l.counters..l.counters + 8].copy_from_slice(&s.counters.0.to_ne_bytes());
            e[l.counters + 8..l.counters + 16].copy_from_slice(&s.counters.1.to_ne_bytes());
            for (name, data) in &s.matches {
                let size = align8(XT_HEAD + data.len());
                let mut m = xt_head(size, name);
                m.extend_from_slice(data);
                m.resize(size, 0);
                e.extend(m);
            }
            let target_offset = e.len();
            let tsize = align8(XT_HEAD + s.target_data.len());
            let mut t = xt_head(tsize, s.target);
            t.extend_from_slice(&s.target_data);
            t.resize(tsize, 0);
            e.extend(t);
            let next = e.len();
            e[l.target_offset..l.target_offset + 2]
                .copy_from_slice(&(target_offset as u16).to_ne_bytes());
            e[l.target_offset + 2..l.target_offset + 4]
                .copy_from_slice(&(next as u16).to_ne_bytes());
            let off = self.blob.len();
            self.blob.extend(e);
            off
        }

        fn standard(&mut self, verdict: i32, counters: (u64, u64)) -> usize {
            self.entry(EntrySpec {
                target_data: verdict.to_ne_bytes().to_vec(),
                counters,
                ..Default::default()
            })
        }

        fn error(&mut self, name: &str) -> usize {
            let mut data = vec![0u8; 30];
            data[..name.len()].copy_from_slice(name.as_bytes());
            self.entry(EntrySpec {
                target: "ERROR",
                target_data: data,
                ..Default::default()
            })
        }

        /// The offset the next entry will have.
        fn here(&self) -> usize {
            self.blob.len()
        }
    }

    const DROP: i32 = -1;
    const ACCEPT: i32 = -2;

    fn comment(text: &str) -> (&'static str, Vec<u8>) {
        let mut c = vec![0u8; 256];
        c[..text.len()].copy_from_slice(text.as_bytes());
        ("comment", c)
    }

    /// filter table: INPUT (ACCEPT), FORWARD (policy DROP, 3 rules), OUTPUT, and
    /// user chain cali-from-wl-dispatch with one commented DROP rule.
    fn filter_table(v6: bool) -> (TableInfo, Vec<u8>) {
        let mut b = Builder::new(v6);
        let mut info = TableInfo {
            valid_hooks: 0b1110,
            ..Default::default()
        };
        info.hook_entry[1] = b.standard(ACCEPT, (1, 2)) as u32;
        info.underflow[1] = info.hook_entry[1];
        // FORWARD: the jump's target offset is only known later: patch it.
        info.hook_entry[2] = b.here() as u32;
        let addr: &[u8] = if v6 { &[0xfd; 8] } else { &[10, 0, 0, 0] };
        let mask: &[u8] = if v6 { &[0xff; 8] } else { &[255, 0, 0, 0] };
        let jump = b.entry(EntrySpec {
            src: Some((addr, mask)),
            iniface: Some(("cali+", true)),
            proto: 6,
            target_data: 0i32.to_ne_bytes().to_vec(),
            counters: (5, 500),
            ..Default::default()
        });
        b.entry(EntrySpec {
            iniface: Some(("eth0", false)),
            target_data: 0i32.to_ne_bytes().to_vec(),
            ..Default::default()
        });
        // Its verdict is the offset of the next entry: a rule without -j.
        let ft_next = b.here() as i32;
        let t = b.blob.len() - 8;
        b.blob[t..t + 4].copy_from_slice(&ft_next.to_ne_bytes());
        b.entry(EntrySpec {
            target: "REJECT",
            target_data: vec![0; 4],
            ..Default::default()
        });
        b.entry(EntrySpec {
            target: "LOG",
            target_data: vec![0; 40],
            ..Default::default()
        });
        info.underflow[2] = b.standard(DROP, (7, 700)) as u32;
        info.hook_entry[3] = b.standard(ACCEPT, (0, 0)) as u32;
        info.underflow[3] = info.hook_entry[3];
        b.error("cali-from-wl-dispatch");
        let first_rule = b.entry(EntrySpec {
            matches: vec![comment("Unknown interface")],
            target_data: DROP.to_ne_bytes().to_vec(),
            ..Default::default()
        });
        b.entry(EntrySpec {
            goto: true,
            target_data: (first_rule as i32).to_ne_bytes().to_vec(),
            ..Default::default()
        });
        b.standard(XT_RETURN, (0, 0));
        b.error("ERROR");
        // Patch the jump verdict, right after the standard target's header.
        let l = if v6 { &IPV6 } else { &IPV4 };
        let at = jump + l.entry_size + XT_HEAD;
        b.blob[at..at + 4].copy_from_slice(&(first_rule as i32).to_ne_bytes());
        info.size = b.blob.len() as u32;
        (info, b.blob)
    }

    fn check_filter(t: &Table, v6: bool) {
        let names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["INPUT", "FORWARD", "OUTPUT", "cali-from-wl-dispatch"]
        );
        let fwd = &t.chains[1];
        assert_eq!(fwd.hook, Some(Hook::Forward));
        assert_eq!(fwd.priority, Some(0));
        assert_eq!(fwd.policy, Some(Verdict::Drop));
        assert_eq!(
            fwd.policy_counters,
            Some(Counters {
                packets: 7,
                bytes: 700
            })
        );
        assert_eq!(fwd.rules.len(), 4);
        let r = &fwd.rules[0];
        assert_eq!(r.id, "1");
        assert_eq!(
            r.verdict,
            Some(Verdict::Jump("cali-from-wl-dispatch".into()))
        );
        assert_eq!(
            r.counters,
            Some(Counters {
                packets: 5,
                bytes: 500
            })
        );
        let src = if v6 {
            "fdfd:fdfd:fdfd:fdfd::/64"
        } else {
            "10.0.0.0/8"
        };
        assert_eq!(
            r.text,
            format!("-s {src} -i cali+ -p tcp -j cali-from-wl-dispatch")
        );
        assert_eq!(fwd.rules[1].verdict, None, "fall-through rule");
        assert_eq!(fwd.rules[1].text, "-i eth0");
        assert_eq!(fwd.rules[2].verdict, Some(Verdict::Reject));
        assert_eq!(fwd.rules[3].verdict, None, "LOG goes on");
        let user = &t.chains[3];
        assert_eq!((user.hook, user.policy.as_ref()), (None, None));
        assert_eq!(user.rules.len(), 2, "the implicit RETURN is not a rule");
        assert_eq!(user.rules[0].comment.as_deref(), Some("Unknown interface"));
        assert_eq!(user.rules[0].verdict, Some(Verdict::Drop));
        assert_eq!(
            user.rules[0].text,
            "-m comment --comment \"Unknown interface\" -j DROP"
        );
        assert_eq!(
            user.rules[1].verdict,
            Some(Verdict::Goto("cali-from-wl-dispatch".into()))
        );
    }

    #[test]
    fn decodes_an_ipv4_filter_table() {
        let (info, blob) = filter_table(false);
        let t = parse_table(&IPV4, "filter", &info, &blob).unwrap();
        assert_eq!((t.backend, t.family), (Backend::Legacy, Family::Ipv4));
        check_filter(&t, false);
    }

    #[test]
    fn decodes_an_ipv6_filter_table() {
        let (info, blob) = filter_table(true);
        let t = parse_table(&IPV6, "filter", &info, &blob).unwrap();
        assert_eq!(t.family, Family::Ipv6);
        check_filter(&t, true);
    }

    #[test]
    fn getinfo_layout() {
        let mut b = [0u8; GETINFO_SIZE];
        b[32..36].copy_from_slice(&0x1fu32.to_ne_bytes());
        b[36 + 8..36 + 12].copy_from_slice(&100u32.to_ne_bytes());
        b[56 + 8..56 + 12].copy_from_slice(&200u32.to_ne_bytes());
        b[80..84].copy_from_slice(&999u32.to_ne_bytes());
        let i = parse_info(&b).unwrap();
        assert_eq!(
            (i.valid_hooks, i.hook_entry[2], i.underflow[2], i.size),
            (0x1f, 100, 200, 999)
        );
        assert!(parse_info(&b[..83]).is_none());
    }

    #[test]
    fn nat_priorities() {
        assert_eq!(table_priority("nat", Hook::Prerouting), Some(-100));
        assert_eq!(table_priority("nat", Hook::Postrouting), Some(100));
        assert_eq!(table_priority("raw", Hook::Output), Some(-300));
        assert_eq!(table_priority("weird", Hook::Output), None);
    }

    #[test]
    fn match_arguments() {
        let mut tcp = vec![0u8; 12];
        tcp[2..4].copy_from_slice(&0xffffu16.to_ne_bytes());
        tcp[4..6].copy_from_slice(&80u16.to_ne_bytes());
        tcp[6..8].copy_from_slice(&80u16.to_ne_bytes());
        assert_eq!(match_args("tcp", 0, &tcp), ["--dport 80"]);
        let mut mark = vec![0u8; 12];
        mark[..4].copy_from_slice(&0x10000u32.to_ne_bytes());
        mark[4..8].copy_from_slice(&0x10000u32.to_ne_bytes());
        assert_eq!(match_args("mark", 1, &mark), ["--mark 0x10000/0x10000"]);
        assert!(match_args("tcp", 0, &tcp[..3]).is_empty());
    }

    #[test]
    fn non_contiguous_masks_and_targets() {
        assert_eq!(
            addr_text(&[10, 0, 0, 1], &[255, 0, 255, 0]),
            "10.0.0.1/255.0.255.0"
        );
        assert_eq!(addr_text(&[10, 0, 0, 1], &[255; 4]), "10.0.0.1/32");
        assert_eq!(target_verdict("MARK"), None);
        assert_eq!(target_verdict("DNAT"), Some(Verdict::Other("DNAT".into())));
        assert_eq!(builtin_verdict(-4), Verdict::Queue);
        assert_eq!(builtin_verdict(XT_RETURN), Verdict::Return);
    }

    #[test]
    fn truncated_and_garbage_blobs_do_not_panic() {
        let (info, blob) = filter_table(false);
        for len in 0..blob.len() {
            let _ = parse_table(&IPV4, "filter", &info, &blob[..len]);
        }
        let mut seed = 0x2545_f491_u32;
        for _ in 0..2000 {
            let mut b = blob.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let i = seed as usize % b.len();
                b[i] = (seed >> 24) as u8;
            }
            let _ = parse_table(&IPV4, "filter", &info, &b);
        }
        let junk = TableInfo {
            valid_hooks: u32::MAX,
            hook_entry: [u32::MAX; 5],
            underflow: [0; 5],
            size: 0,
        };
        let _ = parse_table(&IPV6, "filter", &junk, &blob);
        assert!(parse_table(&IPV4, "filter", &info, &[0u8; 200]).is_err());
    }
}
