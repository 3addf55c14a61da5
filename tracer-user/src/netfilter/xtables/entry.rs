//! The entries of a table blob: `ipt_entry` (or `ip6t_entry`) header,
//! matches, target, chained by `next_offset`. The layouts are those of 64-bit
//! architectures.

use crate::kernel::bytes::{cstr, i32_at, u16_at, u64_at};
use crate::netfilter::inventory::{Counters, Family};

/// `struct xt_entry_match` / `xt_entry_target` before their data.
pub(super) const XT_HEAD: usize = 32;

/// Where the fields of an entry are, for IPv4 (`ipt_entry`) or IPv6 (`ip6t_entry`).
pub(super) struct Layout {
    pub(super) family: Family,
    pub(super) entry_size: usize,
    pub(super) addr_len: usize,
    pub(super) iniface: usize,
    pub(super) proto: usize,
    pub(super) flags: usize,
    pub(super) invflags: usize,
    pub(super) goto_flag: u8,
    pub(super) target_offset: usize,
    pub(super) counters: usize,
}

pub(super) const IPV4: Layout = Layout {
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

pub(super) const IPV6: Layout = Layout {
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

/// One entry of the blob, bounds already checked.
pub(super) struct Entry<'a> {
    pub(super) offset: usize,
    pub(super) next: usize,
    pub(super) header: &'a [u8],
    /// (name, revision, data) of each match.
    pub(super) matches: Vec<(String, u8, &'a [u8])>,
    /// Empty for the standard target (a verdict or a jump).
    pub(super) target: String,
    pub(super) target_rev: u8,
    pub(super) target_data: &'a [u8],
    pub(super) counters: Counters,
}

impl Entry<'_> {
    pub(super) fn standard_verdict(&self) -> Option<i32> {
        if !self.target.is_empty() {
            return None;
        }
        i32_at(self.target_data, 0)
    }

    /// The chain name an `ERROR` target carries (`ERROR` itself at the end).
    pub(super) fn error_name(&self) -> Option<String> {
        (self.target == "ERROR").then(|| cstr(self.target_data))
    }
}

pub(super) fn parse_entries<'a>(layout: &Layout, blob: &'a [u8]) -> Result<Vec<Entry<'a>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < blob.len() {
        let e = parse_entry(layout, blob, off)?;
        off += e.next;
        out.push(e);
    }
    Ok(out)
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
    let matches = parse_matches(&entry[..target_offset], layout.entry_size)
        .ok_or_else(|| bad("bad match size"))?;
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
        target_rev: entry[target_offset + 31],
        target_data: &entry[target_offset + XT_HEAD..target_offset + tsize],
        counters: Counters {
            packets: u64_at(header, c).unwrap_or(0),
            bytes: u64_at(header, c + 8).unwrap_or(0),
        },
    })
}

/// The `xt_entry_match`es between the header (`start`) and the target: all
/// of `b`; `None` when their sizes do not add up.
fn parse_matches(b: &[u8], start: usize) -> Option<Vec<(String, u8, &[u8])>> {
    let mut matches = Vec::new();
    let mut m = start;
    while m < b.len() {
        let size = u16_at(b, m).unwrap_or(0) as usize;
        if size < XT_HEAD || m + size > b.len() {
            return None;
        }
        let name = cstr(&b[m + 2..m + 31]);
        matches.push((name, b[m + 31], &b[m + XT_HEAD..m + size]));
        m += size;
    }
    Some(matches)
}
